//! Views of a [`RunRecord`], whichever lane wrote it and whichever SDK each participant ran:
//! [`write_trace`] gives JSON lines (one per fault start, heal, event and verdict, with
//! timestamps) for tools, [`html`] one self-contained HTML page (inline CSS and SVG, nothing
//! fetched) for people — faults as bands, each participant's connection state as a lane
//! labelled with its SDK, events as marks, the verdicts listed. A cluster run adds its
//! node, Redis and placement changes (`cluster` lines; a row of marks, and each participant's
//! node over time beside its lane). A run with media adds a flow lane per received track
//! ([`crate::flow`]): where frames arrived and the stops between them. Media samples come ten
//! a second, so the page draws them only as flow lanes (never as marks or table rows); the
//! trace, the full record, keeps every one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use faultline_sdk::ConnectionState;
use serde_json::json;

use crate::client::{ClientEvent, Observed};
use crate::cluster::NodeChange;
use crate::flow::{flows, Flow, TrackKey};
use crate::record::{sequenced, EventRecord, ParticipantRecord, RunRecord};
use crate::scenario::format::Lane;

/// The record as JSON lines: a `run` header (with each participant's identity, SDK and
/// reconnect bound), then `fault-start`, `fault-heal` and `event` lines in time order, then
/// one `verdict` line per verdict. `t` is seconds from everyone
/// connected (negative while joining), `at` seconds from the start of the run.
pub fn trace_lines(record: &RunRecord) -> Vec<String> {
    let t = |at: std::time::Duration| round3(record.timeline_secs(at));
    let at = |at: std::time::Duration| round3(at.as_secs_f64());
    let mut timed: Vec<(std::time::Duration, serde_json::Value)> = Vec::new();
    for f in &record.faults {
        let base = json!({"fault": f.index, "kind": f.kind, "label": f.label, "target": f.target});
        let mut start = base.clone();
        start["type"] = json!("fault-start");
        start["t"] = json!(t(f.started));
        start["at"] = json!(at(f.started));
        timed.push((f.started, start));
        if let Some(h) = f.healed.filter(|h| *h != f.started) {
            let mut heal = base;
            heal["type"] = json!("fault-heal");
            heal["t"] = json!(t(h));
            heal["at"] = json!(at(h));
            timed.push((h, heal));
        }
    }
    for e in &record.events {
        let (name, detail) = describe(&e.event);
        timed.push((
            e.at,
            json!({"type": "event", "t": t(e.at), "at": at(e.at), "participant": e.participant,
                   "event": name, "detail": detail}),
        ));
    }
    for c in &record.cluster {
        let mut line = json!({"type": "cluster", "t": t(c.at), "at": at(c.at),
                              "change": c.change.kind(), "node": c.change.node(),
                              "detail": c.change.to_string()});
        if let NodeChange::Routed { route, .. } = &c.change {
            line["participant"] = json!(route);
        }
        timed.push((c.at, line));
    }
    timed.sort_by_key(|(when, _)| *when);
    let mut lines = vec![json!({
        "type": "run", "scenario": record.scenario, "description": record.description,
        "file": record.file.display().to_string(), "lane": record.lane.to_string(),
        "seed": record.seed, "room": record.room,
        "participants": record.participants.iter().map(|p| json!({
            "identity": p.identity, "sdk": p.sdk, "build": p.build,
            "reconnect_bound": round3(p.reconnect_bound.as_secs_f64()),
        })).collect::<Vec<_>>(),
        "timeline_zero": at(record.timeline_zero), "ended": at(record.ended),
        "passed": record.passed(),
    })
    .to_string()];
    lines.extend(timed.into_iter().map(|(_, v)| v.to_string()));
    for (p, s) in &record.final_states {
        lines.push(
            json!({"type": "final-state", "participant": p, "state": format!("{s:?}")}).to_string(),
        );
    }
    for v in &record.verdicts {
        lines.push(
            json!({"type": "verdict", "what": v.what, "expected": v.expected, "seen": v.seen,
                   "passed": v.passed})
            .to_string(),
        );
    }
    lines
}

/// Writes [`trace_lines`] to `path`.
pub fn write_trace(record: &RunRecord, path: &Path) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for line in trace_lines(record) {
        writeln!(file, "{line}")?;
    }
    file.flush()
}

/// Writes [`html`] to `path`.
pub fn write_html(record: &RunRecord, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, html(record))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// An event's name and its detail (reason, who, data sequence number).
fn describe(event: &ClientEvent) -> (String, String) {
    match event {
        ClientEvent::Disconnected { reason } => {
            ("Disconnected".into(), reason.as_str_name().into())
        }
        ClientEvent::ParticipantConnected { identity, .. } => {
            ("ParticipantConnected".into(), identity.clone())
        }
        ClientEvent::ParticipantDisconnected { identity, .. } => {
            ("ParticipantDisconnected".into(), identity.clone())
        }
        ClientEvent::DataReceived { payload, reliable, from, .. } => {
            let (what, from) = match sequenced(event) {
                Some((sender, seq)) => (format!("#{seq}"), sender),
                None => (format!("{} bytes", payload.len()), from.as_deref().unwrap_or("?")),
            };
            let kind = match reliable {
                Some(true) => " (reliable)",
                Some(false) => " (lossy)",
                None => "",
            };
            ("DataReceived".into(), format!("{what} from {from}{kind}"))
        }
        ClientEvent::ActiveSpeakersChanged { speakers } => {
            ("ActiveSpeakersChanged".into(), speakers.join(", "))
        }
        ClientEvent::Media { tracks } => {
            let counts: Vec<String> = tracks
                .iter()
                .map(|t| format!("{} {} {} ({})", t.from, t.source.name(), t.frames, t.sid))
                .collect();
            ("Media".into(), counts.join(", "))
        }
        other => (format!("{other:?}"), String::new()),
    }
}

/// Whether `e` is a media sample: ten a second, so the page draws them only as flow lanes.
fn is_sample(e: &EventRecord) -> bool {
    matches!(e.event, ClientEvent::Media { .. })
}

/// `s` with the characters HTML gives meaning to escaped (for text and quoted attributes).
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn esc(s: &str) -> String {
    escape_html(s)
}

/// Colours of the connection states and fault kinds.
const CONNECTED: &str = "#3fa34d";
const RECONNECTING: &str = "#f0a020";
const DISCONNECTED: &str = "#c43c3c";
const JOINING: &str = "#b8bec6";
/// Frames arriving, in a flow lane.
const FLOWING: &str = "#3b7fc4";

/// A flow lane shades a time without new frames longer than this (three media samples) as a
/// stop.
const STOP: Duration = Duration::from_millis(300);

fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "partition" => "#7b5ea7",
        "signal-proxy" => "#2f6fb0",
        "toxic" => "#b0562f",
        "media" => "#2f9aa0",
        "server-kill" => "#a02f5a",
        _ => "#555d66",
    }
}

/// The SVG timeline.
struct Plot {
    t_min: f64,
    t_max: f64,
    x0: f64,
    x1: f64,
}

impl Plot {
    fn x(&self, t: f64) -> f64 {
        self.x0 + (t - self.t_min) / (self.t_max - self.t_min) * (self.x1 - self.x0)
    }
}

/// A tick step giving about `target` ticks over `span` seconds.
fn tick_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0)
}

/// Where the timeline's rows go.
struct Layout {
    width: f64,
    axis_y: f64,
    fault_row: f64,
    faults_top: f64,
    lane_h: f64,
    cluster_top: f64,
    lanes_top: f64,
    flows_top: f64,
    flow_h: f64,
    height: f64,
}

impl Layout {
    /// The layout of `record`'s timeline with `flows` flow lanes.
    fn of(record: &RunRecord, flows: usize) -> Self {
        let width = 1360.0;
        let axis_y = 28.0;
        let fault_row = 26.0;
        let faults_top = axis_y + 14.0;
        let lane_h = if record.cluster.is_empty() { 64.0 } else { 78.0 };
        let cluster_top = faults_top + fault_row * record.faults.len().max(1) as f64 + 8.0;
        let cluster_h = if record.cluster.is_empty() { 0.0 } else { 56.0 };
        let lanes_top = cluster_top + cluster_h + 10.0;
        let flows_top = lanes_top + lane_h * record.participants.len() as f64;
        let flow_h = 20.0;
        let flows_h = if flows == 0 { 0.0 } else { 24.0 + flow_h * flows as f64 };
        let height = flows_top + flows_h + 14.0;
        Self {
            width,
            axis_y,
            fault_row,
            faults_top,
            lane_h,
            cluster_top,
            lanes_top,
            flows_top,
            flow_h,
            height,
        }
    }
}

/// The timeline as SVG: axis, fault rows, the cluster row, a lane per participant, a flow
/// lane per received track.
fn timeline(record: &RunRecord) -> String {
    let flows = flows(record);
    let layout = Layout::of(record, flows.len());
    let plot = Plot {
        t_min: record
            .events
            .iter()
            .map(|e| record.timeline_secs(e.at))
            .fold(0.0f64, f64::min)
            .min(0.0)
            - 0.4,
        t_max: record.timeline_secs(record.ended).max(1.0) * 1.03 + 0.3,
        x0: 190.0,
        x1: layout.width - 30.0,
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="timeline">"#,
        layout.width, layout.height
    );
    axis(&mut svg, &plot, &layout);
    fault_rows(&mut svg, record, &plot, &layout);
    cluster_row(&mut svg, record, &plot, layout.cluster_top);
    for (lane, p) in record.participants.iter().enumerate() {
        participant_lane(&mut svg, record, &plot, &layout, lane, p);
    }
    flow_lanes(&mut svg, record, &plot, &layout, &flows);
    svg.push_str("</svg>");
    svg
}

/// The time axis: a tick line with its label every `step`, and the timeline's zero.
fn axis(svg: &mut String, plot: &Plot, layout: &Layout) {
    let (axis_y, height) = (layout.axis_y, layout.height);
    let step = tick_step(plot.t_max - plot.t_min, 14.0);
    let mut tick = (plot.t_min / step).ceil() * step;
    while tick <= plot.t_max {
        let x = plot.x(tick);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{axis_y}" x2="{x:.1}" y2="{height}" stroke="#e4e7eb"/><text x="{x:.1}" y="{}" class="tick">{}</text>"##,
            axis_y - 8.0,
            format_tick(tick, step)
        );
        tick += step;
    }
    let zx = plot.x(0.0);
    let _ = write!(
        svg,
        r##"<line x1="{zx:.1}" y1="{}" x2="{zx:.1}" y2="{height}" stroke="#333" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" class="zero">all connected</text>"##,
        axis_y - 4.0,
        zx + 4.0,
        axis_y + 10.0
    );
}

/// The fault rows: a bar (or a diamond, for an instant fault) per fault, with guides
/// through the participant lanes at its start and heal.
fn fault_rows(svg: &mut String, record: &RunRecord, plot: &Plot, layout: &Layout) {
    let (faults_top, fault_row, height) = (layout.faults_top, layout.fault_row, layout.height);
    let _ = write!(svg, r#"<text x="12" y="{}" class="head">faults</text>"#, faults_top + 16.0);
    if record.faults.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" class="muted">none</text>"#,
            plot.x0,
            faults_top + 16.0
        );
    }
    for (row, f) in record.faults.iter().enumerate() {
        let y = faults_top + fault_row * row as f64;
        let colour = fault_colour(f.kind);
        let start = record.timeline_secs(f.started);
        let title = esc(&format!(
            "fault #{}: {} — from {:+.3}s{}",
            f.index,
            f.label,
            start,
            f.healed
                .map_or(" to the end".into(), |h| format!(" to {:+.3}s", record.timeline_secs(h)))
        ));
        let xs = plot.x(start);
        match f.healed {
            Some(h) if h == f.started => {
                let _ = write!(
                    svg,
                    r#"<g><title>{title}</title><path d="M{xs:.1} {} l7 9 l-7 9 l-7 -9 z" fill="{colour}"/><text x="{:.1}" y="{}" class="flabel" fill="{colour}">{}</text></g>"#,
                    y + 2.0,
                    xs + 10.0,
                    y + 15.0,
                    esc(&f.label)
                );
            }
            healed => {
                let end = healed.map_or(plot.t_max, |h| record.timeline_secs(h));
                let xe = plot.x(end).max(xs + 2.0);
                let open = if healed.is_none() { " (to the end)" } else { "" };
                let _ = write!(
                    svg,
                    r#"<g><title>{title}</title><rect x="{xs:.1}" y="{}" width="{:.1}" height="18" rx="3" fill="{colour}" opacity="0.85"/><text x="{:.1}" y="{}" class="flabel" fill="{}">{}{open}</text></g>"#,
                    y + 2.0,
                    xe - xs,
                    if xe - xs > 200.0 { xs + 6.0 } else { xe + 6.0 },
                    y + 15.0,
                    if xe - xs > 200.0 { "#fff" } else { colour },
                    esc(&f.label)
                );
            }
        }
        // Guides through the participant lanes.
        for edge in [Some(f.started), f.healed.filter(|h| *h != f.started)].into_iter().flatten() {
            let x = plot.x(record.timeline_secs(edge));
            let _ = write!(
                svg,
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{height}" stroke="{colour}" stroke-dasharray="2 3" opacity="0.7"/>"#,
                y + 20.0
            );
        }
    }
}

/// Participant `lane`'s row: its name, SDK and final state, its state bands, and a mark per
/// event.
fn participant_lane(
    svg: &mut String,
    record: &RunRecord,
    plot: &Plot,
    layout: &Layout,
    lane: usize,
    p: &ParticipantRecord,
) {
    let top = layout.lanes_top + layout.lane_h * lane as f64;
    let band_y = top + 20.0;
    let state = record.final_state(&p.identity).map_or(String::new(), |s| format!("{s:?}"));
    let _ = write!(
        svg,
        r##"<line x1="8" y1="{}" x2="{}" y2="{}" stroke="#d5d9de"/><text x="12" y="{}" class="head">{}</text><text x="12" y="{}" class="muted">{} · ends {}</text>"##,
        top + 2.0,
        layout.width - 8.0,
        top + 2.0,
        band_y + 12.0,
        esc(&p.identity),
        band_y + 28.0,
        esc(&p.sdk),
        state
    );
    let nodes = nodes_of(record, &p.identity);
    if !nodes.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="12" y="{}" class="muted">via node {}</text>"#,
            band_y + 54.0,
            esc(&nodes)
        );
    }
    let events: Vec<&EventRecord> =
        record.events_of(&p.identity).filter(|e| !is_sample(e)).collect();
    // State bands.
    let mut segments: Vec<(f64, &str, &str)> = vec![(plot.t_min, JOINING, "joining")];
    for e in &events {
        let colour = match e.event.lifecycle().map(|step| step.resulting_state()) {
            Some(ConnectionState::Connected) => (CONNECTED, "Connected"),
            Some(ConnectionState::Reconnecting) => (RECONNECTING, "Reconnecting"),
            Some(ConnectionState::Disconnected) => (DISCONNECTED, "Disconnected"),
            None => continue,
        };
        segments.push((record.timeline_secs(e.at), colour.0, colour.1));
    }
    for (i, (from, colour, name)) in segments.iter().enumerate() {
        let to = segments.get(i + 1).map_or(plot.t_max, |s| s.0);
        let (xa, xb) = (plot.x(*from), plot.x(to));
        let _ = write!(
            svg,
            r#"<rect x="{xa:.1}" y="{band_y}" width="{:.1}" height="16" fill="{colour}"><title>{name} from {from:+.3}s to {to:+.3}s</title></rect>"#,
            // A resume can take milliseconds: keep every state visible.
            (xb - xa).max(if *name == "joining" { 0.5 } else { 2.5 })
        );
    }
    // Event marks: lifecycle labelled under the band, others as ticks above it.
    // Two rows of lifecycle labels under the band; each label takes the first row whose
    // last label is far enough to its left (else the one whose last label is furthest).
    let mut row_ends = [f64::NEG_INFINITY; 2];
    let mut data = 0usize;
    for e in &events {
        let t = record.timeline_secs(e.at);
        let x = plot.x(t);
        let (name, detail) = describe(&e.event);
        let title = esc(&format!("{} {t:+.3}s {name} {detail}", p.identity));
        match &e.event {
            ev if ev.lifecycle().is_some() => {
                let _ = write!(
                    svg,
                    r##"<g><title>{title}</title><path d="M{x:.1} {} l-5 -8 h10 z" fill="#222"/></g>"##,
                    band_y - 1.0
                );
                let short = match ev {
                    ClientEvent::Disconnected { reason } => {
                        format!("Disconnected {}", reason.as_str_name())
                    }
                    other => format!("{other:?}"),
                };
                let row = row_ends
                    .iter()
                    .position(|end| x - end >= 140.0)
                    .unwrap_or(if row_ends[0] <= row_ends[1] { 0 } else { 1 });
                let y = band_y + 29.0 + 11.0 * row as f64;
                {
                    // Keep labels inside the plot: anchor them to the side they would overflow.
                    let anchor = if x > plot.x1 - 70.0 {
                        "end"
                    } else if x < plot.x0 + 70.0 {
                        "start"
                    } else {
                        "middle"
                    };
                    let _ = write!(
                        svg,
                        r#"<text x="{x:.1}" y="{y}" class="elabel" text-anchor="{anchor}"><title>{title}</title>{} {t:+.2}s</text>"#,
                        esc(&short)
                    );
                    row_ends[row] = x;
                }
            }
            ClientEvent::DataReceived { .. } => {
                data += 1;
                let _ = write!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#6b7a8a"><title>{title}</title></line>"##,
                    band_y - 6.0,
                    band_y - 1.0
                );
            }
            ClientEvent::ParticipantConnected { identity: other, .. }
            | ClientEvent::ParticipantDisconnected { identity: other, .. } => {
                // Joins filled, leaves hollow, each with who it was.
                let (fill, sign) = match &e.event {
                    ClientEvent::ParticipantConnected { .. } => ("#2f6fb0", "+"),
                    _ => ("#fff", "−"),
                };
                let _ = write!(
                    svg,
                    r##"<g><title>{title}</title><circle cx="{x:.1}" cy="{}" r="4" fill="{fill}" stroke="#2f6fb0" stroke-width="1.5"/><text x="{:.1}" y="{}" class="who">{sign}{}</text></g>"##,
                    band_y - 6.0,
                    x + 6.0,
                    band_y - 3.0,
                    esc(other)
                );
            }
            _ => {
                let _ = write!(
                    svg,
                    r##"<g><title>{title}</title><circle cx="{x:.1}" cy="{}" r="3" fill="#8a94a0"/></g>"##,
                    band_y - 6.0
                );
            }
        }
    }
    if data > 0 {
        let _ = write!(
            svg,
            r#"<text x="12" y="{}" class="muted">{data} data received</text>"#,
            band_y + 42.0
        );
    }
}

/// The flow lanes, under the participant lanes: a row per received track, with a bar where
/// frames kept arriving and a shaded stop wherever none arrived for longer than [`STOP`]
/// (its length in the tooltip, and beside it when there is room).
fn flow_lanes(
    svg: &mut String,
    record: &RunRecord,
    plot: &Plot,
    layout: &Layout,
    flows: &BTreeMap<TrackKey, Flow>,
) {
    if flows.is_empty() {
        return;
    }
    let top = layout.flows_top;
    let _ = write!(
        svg,
        r##"<line x1="8" y1="{}" x2="{}" y2="{}" stroke="#d5d9de"/><text x="12" y="{}" class="head">media received</text>"##,
        top + 2.0,
        layout.width - 8.0,
        top + 2.0,
        top + 18.0
    );
    let secs = |at: Duration| record.timeline_secs(at);
    for (row, (key, flow)) in flows.iter().enumerate() {
        let y = top + 24.0 + layout.flow_h * row as f64;
        let _ = write!(
            svg,
            r##"<text x="12" y="{}" class="flow">{}</text><line x1="{:.1}" y1="{}" x2="{:.1}" y2="{}" stroke="#e4e7eb"/>"##,
            y + 12.0,
            esc(&key.to_string()),
            plot.x0,
            y + 8.0,
            plot.x1,
            y + 8.0
        );
        for (from, length) in stops(flow, record.timeline_zero, record.ended) {
            let (xa, xb) = (plot.x(secs(from)), plot.x(secs(from + length)));
            let open =
                if from + length == record.ended { " (still stopped at the end)" } else { "" };
            let title = esc(&format!(
                "{key}: no frames for {:.3}s, from {:+.3}s to {:+.3}s{open}",
                length.as_secs_f64(),
                secs(from),
                secs(from + length)
            ));
            let _ = write!(
                svg,
                r#"<g class="stop"><title>{title}</title><rect x="{xa:.1}" y="{}" width="{:.1}" height="16" fill="{DISCONNECTED}" fill-opacity="0.22" stroke="{DISCONNECTED}" stroke-opacity="0.6"/>"#,
                y,
                (xb - xa).max(1.0)
            );
            if xb - xa > 44.0 {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{}" class="elabel" text-anchor="middle">{:.1} s</text>"#,
                    (xa + xb) / 2.0,
                    y + 12.0,
                    length.as_secs_f64()
                );
            }
            svg.push_str("</g>");
        }
        for (first, last, samples) in runs(flow) {
            let (xa, xb) = (plot.x(secs(first)), plot.x(secs(last)));
            let _ = write!(
                svg,
                r#"<rect x="{xa:.1}" y="{}" width="{:.1}" height="8" fill="{FLOWING}"><title>{}</title></rect>"#,
                y + 4.0,
                (xb - xa).max(2.0),
                esc(&format!(
                    "{key}: frames arriving from {:+.3}s to {:+.3}s ({samples} samples)",
                    secs(first),
                    secs(last)
                ))
            );
        }
    }
}

/// The stretches of `flow`'s arrivals no longer than [`STOP`] apart: (first, last, how many
/// samples).
fn runs(flow: &Flow) -> Vec<(Duration, Duration, usize)> {
    let mut runs: Vec<(Duration, Duration, usize)> = Vec::new();
    for t in flow.advances.iter().copied() {
        match runs.last_mut() {
            Some((_, last, samples)) if t.saturating_sub(*last) <= STOP => {
                *last = t;
                *samples += 1;
            }
            _ => runs.push((t, t, 1)),
        }
    }
    runs
}

/// `flow`'s stops longer than [`STOP`] up to `ended`, as (start, length): between arrivals,
/// from the timeline's `zero` to the first arrival after it when none came before, and a stop
/// still open at `ended` (as [`Flow::longest_gap`] counts them).
fn stops(flow: &Flow, zero: Duration, ended: Duration) -> Vec<(Duration, Duration)> {
    let start = flow.advances.first().map_or(zero, |first| zero.min(*first));
    let edges: Vec<Duration> = std::iter::once(start)
        .chain(flow.advances.iter().copied().filter(|t| *t > start && *t <= ended))
        .chain(std::iter::once(ended))
        .collect();
    edges
        .windows(2)
        .filter(|w| w[1].saturating_sub(w[0]) > STOP)
        .map(|w| (w[0], w[1] - w[0]))
        .collect()
}

/// The page: header, timeline, verdicts and the full event table.
pub fn html(record: &RunRecord) -> String {
    let svg = timeline(record);
    let passed = record.passed();
    let verdicts = verdict_rows(record);
    let (rows, count) = event_rows(record);
    let samples = match record.events.iter().filter(|e| is_sample(e)).count() {
        0 => String::new(),
        n => format!(" (and {n} media samples: the flow lanes draw them, the trace lists them)"),
    };
    let logs: String = record
        .logs
        .iter()
        .map(|(n, p)| {
            format!("<li>{}: <code>{}</code></li>", esc(n), esc(&p.display().to_string()))
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>faultline: {name}</title>
<style>
body {{ font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 20px 28px; color: #1d232a; }}
h1 {{ font-size: 22px; margin: 0 0 4px; }}
.badge {{ display: inline-block; padding: 2px 10px; border-radius: 4px; color: #fff; font-weight: 600; margin-left: 8px; font-size: 14px; vertical-align: middle; }}
.badge.pass {{ background: {CONNECTED}; }} .badge.fail {{ background: {DISCONNECTED}; }}
.meta {{ color: #58616b; margin: 4px 0 12px; }}
.desc {{ max-width: 1100px; margin: 0 0 12px; }}
svg text {{ font: 12px system-ui, sans-serif; }}
svg .tick {{ fill: #68717b; text-anchor: middle; }} svg .zero {{ fill: #333; font-weight: 600; }}
svg .head {{ font-weight: 600; font-size: 13px; fill: #1d232a; }} svg .muted {{ fill: #7a838d; }}
svg .flow {{ font-size: 11px; fill: #1d232a; }} svg .flabel {{ font-weight: 600; }} svg .elabel {{ fill: #222; font-size: 11px; }} svg .who {{ fill: #2f6fb0; font-size: 10px; }}
.legend span {{ display: inline-block; margin-right: 16px; color: #444; }}
.legend i {{ display: inline-block; width: 14px; height: 10px; margin-right: 5px; vertical-align: middle; }}
table {{ border-collapse: collapse; margin-top: 8px; }}
td, th {{ border-bottom: 1px solid #e4e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }}
tr.pass td.mark {{ color: {CONNECTED}; font-weight: 700; }} tr.fail td.mark {{ color: {DISCONNECTED}; font-weight: 700; }}
tr.fail {{ background: #fbeaea; }}
details {{ margin-top: 16px; }} code {{ font-size: 12px; }}
</style></head><body>
<h1>{name}<span class="badge {badge_class}">{badge}</span></h1>
<div class="meta">{file} · {lane} lane · seed {seed} · room {room} · {secs:.1} s{clock}</div>
<p class="desc">{description}</p>
<div class="meta">{builds}</div>
<div class="legend"><span><i style="background:{JOINING}"></i>joining</span><span><i style="background:{CONNECTED}"></i>Connected</span><span><i style="background:{RECONNECTING}"></i>Reconnecting</span><span><i style="background:{DISCONNECTED}"></i>Disconnected</span><span>▼ lifecycle event</span><span><b style="color:#2f6fb0">●</b> / ○ another participant joined / left</span><span>│ data received</span><span>◆ instant fault or cluster change</span><span><i style="background:{FLOWING}"></i>frames arriving</span><span><i style="background:#f3d3d3;border:1px solid {DISCONNECTED}"></i>no frames for over {stop_ms} ms</span><span>times in seconds from everyone connected; hover a mark for details</span></div>
{svg}
<h2>Verdicts</h2>
<table><tr><th></th><th>expectation</th><th>expected</th><th>seen</th></tr>{verdicts}</table>
<details><summary>All {count} events{samples}</summary><table><tr><th>t (s)</th><th>participant</th><th>event</th><th>detail</th></tr>{rows}</table></details>
<details><summary>Logs</summary><ul>{logs}</ul></details>
</body></html>
"#,
        name = esc(&record.scenario),
        badge_class = if passed { "pass" } else { "fail" },
        badge = if passed { "PASS" } else { "FAIL" },
        file = esc(&record.file.display().to_string()),
        lane = record.lane,
        seed = record.seed,
        room = esc(&record.room),
        secs = record.ended.as_secs_f64(),
        clock = if record.lane == Lane::Sim { " simulated" } else { "" },
        description = esc(&record.description),
        builds = record
            .builds()
            .iter()
            .map(|(build, who)| format!("{} ({})", esc(build), esc(&who.join(", "))))
            .collect::<Vec<_>>()
            .join("<br>"),
        stop_ms = STOP.as_millis(),
    )
}

/// A table row per verdict, marked pass or fail.
fn verdict_rows(record: &RunRecord) -> String {
    let mut verdicts = String::new();
    for v in &record.verdicts {
        let (class, mark) = if v.passed { ("pass", "✓") } else { ("fail", "✗") };
        let _ = write!(
            verdicts,
            "<tr class=\"{class}\"><td class=\"mark\">{mark}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.what),
            esc(&v.expected),
            esc(&v.seen)
        );
    }
    verdicts
}

/// A table row per event (but media samples, which the flow lanes show) and cluster change,
/// in time order; and how many.
fn event_rows(record: &RunRecord) -> (String, usize) {
    let mut table: Vec<(std::time::Duration, String, String, String)> = record
        .events
        .iter()
        .filter(|e| !is_sample(e))
        .map(|e| {
            let (name, detail) = describe(&e.event);
            (e.at, e.participant.clone(), name, detail)
        })
        .collect();
    table.extend(
        record.cluster.iter().map(|c| {
            (c.at, "cluster".to_owned(), c.change.kind().to_owned(), c.change.to_string())
        }),
    );
    table.sort_by_key(|row| row.0);
    let mut rows = String::new();
    for (at, who, name, detail) in &table {
        let _ = write!(
            rows,
            "<tr><td>{:+.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            record.timeline_secs(*at),
            esc(who),
            esc(name),
            esc(detail)
        );
    }
    (rows, table.len())
}

/// The cluster row of the timeline: a mark per change of a node, Redis or the room's node,
/// labelled; routes are shown beside each participant's lane instead.
fn cluster_row(svg: &mut String, record: &RunRecord, plot: &Plot, top: f64) {
    if record.cluster.is_empty() {
        return;
    }
    let _ = write!(svg, r#"<text x="12" y="{}" class="head">cluster</text>"#, top + 16.0);
    // Three rows of labels; each takes the first row with room, else the emptiest.
    let mut row_ends = [f64::NEG_INFINITY; 3];
    for c in &record.cluster {
        let colour = match &c.change {
            NodeChange::NodeKilled { .. } | NodeChange::RedisKilled => DISCONNECTED,
            NodeChange::NodeDraining { .. } | NodeChange::NodeExited { .. } => RECONNECTING,
            NodeChange::NodeUp { .. } | NodeChange::RedisRestarted => CONNECTED,
            NodeChange::RoomHosted { .. } => "#7b5ea7",
            NodeChange::Routed { .. } => continue,
        };
        let t = record.timeline_secs(c.at);
        let x = plot.x(t.max(plot.t_min));
        let detail = c.change.to_string();
        let title = esc(&format!("{t:+.3}s {detail}"));
        let short = match &c.change {
            NodeChange::RoomHosted { node: Some(n), .. } => format!("room on node {n}"),
            NodeChange::RoomHosted { node: None, .. } => "room on no node".to_owned(),
            NodeChange::NodeUp { node, .. } => format!("node {node} up"),
            other => other.kind().replace('-', " "),
        };
        let row = row_ends.iter().position(|end| x - end >= 120.0).unwrap_or_else(|| {
            (0..row_ends.len()).min_by(|a, b| row_ends[*a].total_cmp(&row_ends[*b])).unwrap_or(0)
        });
        row_ends[row] = x;
        let _ = write!(
            svg,
            r#"<g><title>{title}</title><path d="M{x:.1} {} l5 6 l-5 6 l-5 -6 z" fill="{colour}"/><text x="{:.1}" y="{}" class="elabel">{}</text></g>"#,
            top + 4.0,
            x + 7.0,
            top + 14.0 + 13.0 * row as f64,
            esc(&short)
        );
    }
}

/// The nodes a participant's signalling was routed to, in order: `0 → 1 (+4.2s)`.
fn nodes_of(record: &RunRecord, identity: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in &record.cluster {
        if let NodeChange::Routed { route, node } = &c.change {
            if route == identity {
                let t = record.timeline_secs(c.at);
                parts.push(if parts.is_empty() {
                    node.to_string()
                } else {
                    format!("{node} ({t:+.1}s)")
                });
            }
        }
    }
    parts.join(" → ")
}

fn format_tick(t: f64, step: f64) -> String {
    // Ticks are multiples of the step; snap away the rounding error (and -0).
    let t = (t / step).round() * step + 0.0;
    if step >= 1.0 {
        format!("{t:.0}s")
    } else {
        format!("{t:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use faultline_sdk::DisconnectReason;

    use super::*;
    use crate::client::MediaCount;
    use crate::record::{FaultRecord, ParticipantRecord, Verdict};
    use crate::vocab::TrackSource;

    fn record() -> RunRecord {
        let at = Duration::from_millis;
        let event = |ms, event| EventRecord { participant: "a<b>".into(), at: at(ms), event };
        RunRecord {
            scenario: "s".into(),
            description: "a <drop> & more".into(),
            file: PathBuf::from("s.toml"),
            lane: Lane::Real,
            seed: 7,
            room: "r".into(),
            participants: vec![ParticipantRecord {
                identity: "a<b>".into(),
                sdk: "js".into(),
                build: "livekit-client 2.23.0: pinned".into(),
                reconnect_bound: Duration::from_secs(40),
                backoff: None,
                joined_sid: String::new(),
                final_sid: String::new(),
                published: Vec::new(),
                tracks: Vec::new(),
            }],
            timeline_zero: at(1000),
            ended: at(9000),
            faults: vec![FaultRecord {
                index: 0,
                kind: "partition",
                label: "partition → a<b>".into(),
                target: Some("a<b>".into()),
                started: at(2000),
                healed: Some(at(5000)),
                refuses_connections: true,
                mutes: None,
            }],
            events: vec![
                event(500, ClientEvent::Connected),
                event(3000, ClientEvent::Reconnecting),
                event(8000, ClientEvent::Disconnected { reason: DisconnectReason::SignalClose }),
            ],
            final_states: vec![("a<b>".into(), ConnectionState::Disconnected)],
            verdicts: vec![Verdict {
                what: "no-disconnect: a<b>".into(),
                expected: "never Disconnected".into(),
                seen: "Disconnected".into(),
                passed: false,
            }],
            logs: vec![("livekit-server".into(), PathBuf::from("/tmp/x.log"))],
            cluster: Vec::new(),
        }
    }

    #[test]
    fn the_trace_is_one_json_object_per_line_in_time_order() {
        let lines = trace_lines(&record());
        let values: Vec<serde_json::Value> =
            lines.iter().map(|l| serde_json::from_str(l).expect("JSON")).collect();
        let types: Vec<&str> = values.iter().map(|v| v["type"].as_str().unwrap_or("")).collect();
        assert_eq!(
            types,
            [
                "run",
                "event",
                "fault-start",
                "event",
                "fault-heal",
                "event",
                "final-state",
                "verdict"
            ]
        );
        assert_eq!(values[0]["passed"], false);
        let who = &values[0]["participants"][0];
        assert_eq!((&who["identity"], &who["sdk"]), (&json!("a<b>"), &json!("js")));
        assert_eq!(values[1]["t"], -0.5, "times count from everyone connected");
        assert_eq!(values[5]["detail"], "SIGNAL_CLOSE");
    }

    #[test]
    fn the_page_is_self_contained_escaped_and_shows_the_verdict() {
        let page = html(&record());
        assert!(page.contains("<svg") && page.contains("FAIL"), "timeline and verdict");
        assert!(!page.contains("a<b>") && page.contains("a&lt;b&gt;"), "names are escaped");
        assert!(page.contains("js · ends Disconnected"), "the lane says which SDK it shows");
        let outside: Vec<&str> = page
            .match_indices("http")
            .map(|(i, _)| &page[i..(i + 40).min(page.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(outside.is_empty(), "nothing is fetched: {outside:?}");
        assert!(!page.contains("<script src") && !page.contains("<link"), "no external assets");
    }

    /// [`record`] with a media sample of c&d's camera at a<b> every 100 ms from 0.5 s to the
    /// end, the frames stopping from 2.5 s to 4 s (+1.5 s to +3 s on the timeline).
    fn record_with_media() -> RunRecord {
        let mut record = record();
        let mut frames = 0;
        for ms in (500..=8900).step_by(100) {
            if !(2600..4000).contains(&ms) {
                frames += 3;
            }
            record.events.push(EventRecord {
                participant: "a<b>".into(),
                at: Duration::from_millis(ms),
                event: ClientEvent::Media {
                    tracks: vec![MediaCount {
                        from: "c&d".into(),
                        source: TrackSource::Camera,
                        sid: "TR_1".into(),
                        frames,
                        decoded: None,
                    }],
                },
            });
        }
        record.events.sort_by_key(|e| e.at);
        record
    }

    #[test]
    fn media_samples_make_a_flow_lane_with_its_stops_not_marks_or_rows() {
        let record = record_with_media();
        let page = html(&record);
        assert!(
            page.contains(r#"class="flow">a&lt;b&gt; ← c&amp;d's camera</text>"#),
            "a flow lane per received track, labelled and escaped"
        );
        let stops: Vec<&str> =
            page.match_indices(r#"<g class="stop">"#).map(|(i, _)| &page[i..]).collect();
        assert_eq!(stops.len(), 1, "one stop longer than 300 ms");
        assert!(
            stops[0].starts_with(
                r#"<g class="stop"><title>a&lt;b&gt; ← c&amp;d's camera: no frames for 1.500s, from +1.500s to +3.000s</title>"#
            ),
            "the stop says how long: {}",
            &stops[0][..200]
        );
        assert!(!page.contains("Media"), "no sample as a mark on the lane or a row in the table");
        assert!(page.contains("All 3 events (and 85 media samples"), "the table counts the rest");
        let trace = trace_lines(&record);
        let samples: Vec<&String> =
            trace.iter().filter(|l| l.contains(r#""event":"Media""#)).collect();
        assert_eq!(samples.len(), 85, "the trace keeps every sample");
        assert!(samples[0].contains(r#""detail":"c&d camera 3 (TR_1)""#), "{}", samples[0]);
    }

    #[test]
    fn a_stop_may_start_at_the_timeline_zero_or_stay_open_to_the_end() {
        let at = Duration::from_millis;
        let flow = |advances: &[u64]| Flow {
            advances: advances.iter().copied().map(at).collect(),
            ..Flow::default()
        };
        let (zero, ended) = (at(1000), at(5000));
        assert_eq!(stops(&flow(&[]), zero, ended), [(zero, at(4000))], "nothing ever came");
        assert_eq!(
            stops(&flow(&[1500, 1600, 1900, 2300]), zero, ended),
            [(zero, at(500)), (at(1900), at(400)), (at(2300), at(2700))],
            "late, then 300 ms is not a stop, 400 ms is, and the last one is still open"
        );
        assert_eq!(
            runs(&flow(&[900, 1000, 1300, 1700, 1800])),
            [(at(900), at(1300), 3), (at(1700), at(1800), 2)]
        );
    }
}
