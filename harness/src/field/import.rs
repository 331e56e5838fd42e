//! `faultline import`: a scenario written from one field client's evidence — a
//! webrtc-internals dump, its SDK's log, or both.
//!
//! What becomes what:
//! - an outage (the selected pair's `bytesReceived` flat; with only a log, a `Reconnecting`
//!   until the client was back) becomes a `partition` of the field client; when the log shows
//!   the signalling closed as the media stopped, a `server-kill` (the server, or the path to
//!   it, went away at once), held down until between the client's last refused attempt and
//!   the one the server answered; when the selected pair's local candidate changed address or
//!   network type as it ended, a `network-change`; when the log shows no reconnect through
//!   it, a `media` fault (the signalling kept working, and a replayed partition could make
//!   the replay's signalling time out where the field's did not);
//! - a reconnect of the log with media flowing (no outage) that began with the WebSocket
//!   closing becomes a `signal-proxy` kill;
//! - the RTT and loss per second outside the outages, where they matter (an RTT of 30 ms or
//!   more, or 1 % loss or more), become `media` faults in segments of equal values (delay half
//!   the RTT each way);
//! - ICE restarts, new peer connections and server leaves are comments beside the faults;
//! - the log's lifecycle becomes the expectations (`reconnected` within what the field client
//!   took plus slack, or `no-reconnect`, and the final state), and with the outages the
//!   scenario's `[field]` table, which a run's report sets beside what it reproduced.
//!
//! Every fault carries its evidence as a comment; nothing written holds an address, SDP or
//! token ([`super::redact`]). Times count from the dump's first media bytes (a replay's
//! timeline starts once everyone is connected), or with only a log from its first
//! `connected`.

use std::fmt::Write as _;

use super::derive::{derive, ChangeKind, Derived};
use super::redact::redact;
use super::{FieldError, LifecycleEvent, LifecycleKind, PeerConnection, Source, Timeline};

/// How long an imported scenario watches after its last heal.
pub const SETTLE: &str = "8s";

/// The field client's identity in an imported scenario.
pub const FIELD: &str = "field";
/// The other participant an imported scenario puts in the room, so that media flows both ways.
pub const PEER: &str = "peer";

/// An RTT from this (milliseconds) is replayed as delay.
pub const RTT_WORTH_REPLAYING_MS: f64 = 30.0;
/// Loss from this (percent) is replayed.
pub const LOSS_WORTH_REPLAYING_PERCENT: f64 = 1.0;
/// How long after an outage the loss counted is the outage's own (its packets reported lost
/// once stats flow again), seconds.
const AFTER_AN_OUTAGE_S: f64 = 3.0;
/// livekit-server's ping timeout (its JoinResponse's `ping_timeout`), seconds: a client whose
/// signalling carried nothing for this long reconnects.
const PING_TIMEOUT_S: f64 = 15.0;
/// How far from an outage's start a signalling close or a server's leave counts as its cause.
const CAUSE_WINDOW_MS: f64 = 2_000.0;

/// One fault of the imported scenario, with the evidence it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedFault {
    /// Seconds from the timeline's zero.
    pub at_s: f64,
    /// How long it lasts, seconds; `None` for a one-off (a network change).
    pub for_s: Option<f64>,
    /// The `[[fault]]` table's other lines (`type = "partition"`, …).
    pub body: String,
    /// Where it came from, for the comment above it.
    pub evidence: Vec<String>,
}

/// One step of the field client's lifecycle, as its log showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    /// Seconds from the timeline's zero.
    pub at_s: f64,
    /// `Reconnecting`, `Reconnected` or `Disconnected`.
    pub state: &'static str,
    /// The log line it was read from.
    pub evidence: String,
}

/// An outage the evidence showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutageSpan {
    /// When the media stopped, seconds from the timeline's zero.
    pub at_s: f64,
    /// How long it stayed stopped, seconds.
    pub for_s: f64,
    /// How far the true start and end can be from these (half the time between the dump's
    /// samples around each; a log alone: 0, it says when the client noticed).
    pub uncertainty_s: (f64, f64),
}

impl OutageSpan {
    /// When the media came back.
    pub fn end_s(&self) -> f64 {
        self.at_s + self.for_s
    }
}

/// What an import found, before it is written as a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// What the evidence was (`webrtc-internals dump`, `livekit-client log`, …).
    pub sources: Vec<Source>,
    /// The faults, in time order.
    pub faults: Vec<ImportedFault>,
    /// The outages the evidence showed.
    pub outages: Vec<OutageSpan>,
    /// Whether a log was among the evidence (without one, the client's states are unknown).
    pub has_log: bool,
    /// The field client's lifecycle (empty without a log).
    pub lifecycle: Vec<Moment>,
    /// Comments for the reader: ICE restarts, new peer connections, server leaves, what the
    /// evidence could not say.
    pub notes: Vec<String>,
}

/// Imports one field client's evidence: at most one dump and at most one log.
pub fn import(evidence: &[Timeline]) -> Result<Imported, FieldError> {
    let dumps: Vec<&Timeline> =
        evidence.iter().filter(|t| t.source == Source::WebrtcInternals).collect();
    let logs: Vec<&Timeline> =
        evidence.iter().filter(|t| t.source != Source::WebrtcInternals).collect();
    if dumps.len() > 1 || logs.len() > 1 {
        return Err(FieldError::SeveralOfAKind { dumps: dumps.len(), logs: logs.len() });
    }
    let (dump, log) = (dumps.first().copied(), logs.first().copied());
    let derived = dump.map(derive);
    let zero = match (dump, log) {
        (Some(d), _) => zero_ms(d).or(derived.as_ref().map(|d| d.origin_ms)),
        (None, Some(l)) => log_zero_ms(l),
        (None, None) => None,
    }
    .ok_or(FieldError::NoEvidence)?;
    let lifecycle = log.map(|l| lifecycle(&l.lifecycle, zero)).unwrap_or_default();
    let mut out = Imported {
        sources: evidence.iter().map(|t| t.source).collect(),
        faults: Vec::new(),
        outages: Vec::new(),
        has_log: log.is_some(),
        lifecycle,
        notes: Vec::new(),
    };
    match (dump, &derived) {
        (Some(dump), Some(derived)) => {
            from_dump(&mut out, dump, derived, log, zero);
        }
        _ => from_log_alone(&mut out, log),
    }
    if let Some(log) = log {
        for e in &log.lifecycle {
            if let LifecycleKind::SessionClosed { reason } = &e.kind {
                out.notes.push(format!(
                    "the server closed the session at {} ({}): {}",
                    secs_text((e.t_ms - zero) / 1000.0),
                    redact(reason),
                    redact(&e.evidence)
                ));
            }
        }
    }
    out.faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(out)
}

/// The time (ms since the epoch) a replay's timeline zero stands for in a dump: the first
/// sample at which a peer connection's selected pair received more bytes than at the one
/// before.
pub fn zero_ms(dump: &Timeline) -> Option<f64> {
    dump.peer_connections.iter().filter_map(first_bytes_ms).reduce(f64::min)
}

/// The first sample at which `pc`'s selected pair had received more bytes than at the one
/// before.
fn first_bytes_ms(pc: &PeerConnection) -> Option<f64> {
    pc.bytes_received.windows(2).find(|w| w[1].value > w[0].value).map(|w| w[1].t_ms)
}

/// A log's zero: its first `connected`, else its first event.
fn log_zero_ms(log: &Timeline) -> Option<f64> {
    log.lifecycle
        .iter()
        .find(|e| matches!(&e.kind, LifecycleKind::State { to, .. } if to == "connected"))
        .or(log.lifecycle.first())
        .map(|e| e.t_ms)
}

/// The lifecycle a log shows, as the harness names it.
pub fn lifecycle(events: &[LifecycleEvent], zero: f64) -> Vec<Moment> {
    let mut out = Vec::new();
    let mut reconnecting = false;
    let mut closed_at: Option<f64> = None;
    for e in events {
        if e.kind == LifecycleKind::Closed {
            closed_at = Some(e.t_ms);
            continue;
        }
        let state = match &e.kind {
            LifecycleKind::State { from, to }
                if from == "connected" && to.to_lowercase().contains("reconnecting") =>
            {
                (!reconnecting).then_some("Reconnecting")
            }
            LifecycleKind::State { from, to }
                if to == "connected" && from.to_lowercase().contains("reconnecting") =>
            {
                reconnecting.then_some("Reconnected")
            }
            LifecycleKind::State { to, .. } if to == "disconnected" => Some("Disconnected"),
            LifecycleKind::Resume { .. } | LifecycleKind::FullReconnect { .. } => {
                (!reconnecting).then_some("Reconnecting")
            }
            LifecycleKind::Recovered => reconnecting.then_some("Reconnected"),
            LifecycleKind::GaveUp { .. } | LifecycleKind::Disconnected => Some("Disconnected"),
            _ => None,
        };
        let Some(state) = state else { continue };
        // The room closed by the client itself (the end of the session) is not an ending.
        let asked = closed_at.is_some_and(|c| e.t_ms - c <= 2_000.0);
        if state == "Disconnected"
            && (asked || out.last().is_some_and(|m: &Moment| m.state == state))
        {
            continue;
        }
        reconnecting = state == "Reconnecting";
        out.push(Moment { at_s: (e.t_ms - zero) / 1000.0, state, evidence: redact(&e.evidence) });
    }
    out
}

/// An outage being merged across peer connections: start and end (ms since the epoch), the
/// uncertainty of each (ms), and the evidence.
type Span = (f64, f64, (f64, f64), Vec<String>);

/// Outages, network changes and the link profile from a dump (and the log beside it).
fn from_dump(
    out: &mut Imported,
    dump: &Timeline,
    derived: &Derived,
    log: Option<&Timeline>,
    zero: f64,
) {
    let at = |t_ms: f64| (t_ms - zero) / 1000.0;
    // Outages on several peer connections at once are one outage of the client's link.
    let mut spans: Vec<Span> = Vec::new();
    for o in &derived.outages {
        let end = o.end_ms.or_else(|| first_bytes_after(dump, o.start_ms));
        let Some(end) = end else {
            out.notes
                .push(format!("left out (the dump does not see it end): {}", redact(&o.evidence)));
            continue;
        };
        let mut evidence = vec![redact(&o.evidence)];
        if o.end_ms.is_none() {
            evidence.push("it ends at a new peer connection's first bytes".into());
        }
        if o.start_uncertainty_ms.max(o.end_uncertainty_ms) > 1_000.0 {
            evidence.push(format!(
                "Chrome skipped samples here: the start is good to ±{:.1} s, the end to ±{:.1} s",
                o.start_uncertainty_ms / 1000.0,
                o.end_uncertainty_ms / 1000.0
            ));
        }
        let uncertainty = (o.start_uncertainty_ms, o.end_uncertainty_ms);
        match spans.last_mut() {
            Some(last) if o.start_ms <= last.1 => {
                if end > last.1 {
                    last.1 = end;
                    last.2 .1 = uncertainty.1;
                }
                last.3.extend(evidence);
            }
            _ => spans.push((o.start_ms, end, uncertainty, evidence)),
        }
    }
    for (start, end, (start_unc, end_unc), mut evidence) in spans {
        out.outages.push(OutageSpan {
            at_s: at(start),
            for_s: (end - start) / 1000.0,
            uncertainty_s: (start_unc / 1000.0, end_unc / 1000.0),
        });
        let moved = derived.network_changes.iter().find(|c| {
            c.kind == ChangeKind::LocalCandidate && c.t_ms >= start && c.t_ms <= end + 2_000.0
        });
        let cause = log.and_then(|l| signal_closed_near(l, start));
        let (for_s, body) = if let Some(change) = moved {
            evidence.push(redact(&change.evidence));
            evidence.push(
                "the client came back from another local address: replayed as a network \
                 change (old sockets dead, a new address) at the outage's start"
                    .into(),
            );
            (None, format!("target = \"{FIELD}\"\ntype = \"network-change\""))
        } else if let Some(closed) = cause {
            evidence.push(format!(
                "{} as the media stopped: the server (or the path to it) went away at once, \
                 replayed as a server kill (the peer feels it too)",
                redact(&closed.evidence)
            ));
            let back = log.and_then(|l| server_back_ms(l, start, end)).unwrap_or(end);
            evidence.push(format!(
                "held down to {} (between the client's last refused attempt and the one the \
                 server answered, or the outage's end)",
                secs_text(at(back))
            ));
            (Some((back - start) / 1000.0), "type = \"server-kill\"".to_owned())
        } else if log.is_some()
            && !out.lifecycle.iter().any(|m| {
                let t = zero + m.at_s * 1000.0;
                t >= start && t <= end + CAUSE_WINDOW_MS
            })
        {
            evidence.push(format!(
                "the log shows no reconnect through it: the client's signalling never failed, so \
                 only the media is lost (a partition would let the replay's signalling notice: \
                 after a drop of several seconds TCP's retransmission backoff can hold a ping \
                 past livekit-server's {PING_TIMEOUT_S} s ping timeout)"
            ));
            (
                Some((end - start) / 1000.0),
                format!("target = \"{FIELD}\"\ntype = \"media\"\nloss_percent = 100.0"),
            )
        } else {
            if log.is_none() {
                evidence.push(
                    "without the client's log, whether its signalling died too is unknown: \
                     replayed as a partition (nothing passes either way)"
                        .into(),
                );
            }
            (Some((end - start) / 1000.0), format!("target = \"{FIELD}\"\ntype = \"partition\""))
        };
        out.faults.push(ImportedFault { at_s: at(start), for_s, body, evidence });
    }
    if let Some(log) = log {
        signalling_only(out, log, zero);
    }
    for c in &derived.ice_restarts {
        out.notes.push(format!(
            "ICE restart at {}: {}",
            secs_text(at(c.t_ms)),
            redact(&c.evidence)
        ));
    }
    for c in &derived.new_peer_connections {
        out.notes.push(format!(
            "new peer connection (a full reconnect) at {}: {}",
            secs_text(at(c.t_ms)),
            redact(&c.evidence)
        ));
    }
    link_profile(out, derived, zero);
}

/// The first bytes a peer connection created after `t_ms` received.
fn first_bytes_after(dump: &Timeline, t_ms: f64) -> Option<f64> {
    dump.peer_connections
        .iter()
        .filter(|pc| pc.created_ms.is_some_and(|c| c > t_ms))
        .filter_map(first_bytes_ms)
        .reduce(f64::min)
}

/// A `websocket closed` (not a leave the server asked for) within the cause window of an
/// outage's start.
fn signal_closed_near(log: &Timeline, start_ms: f64) -> Option<&LifecycleEvent> {
    let near = |e: &&LifecycleEvent| (e.t_ms - start_ms).abs() <= CAUSE_WINDOW_MS;
    let asked = log
        .lifecycle
        .iter()
        .filter(near)
        .any(|e| matches!(e.kind, LifecycleKind::SessionClosed { .. }));
    if asked {
        return None;
    }
    log.lifecycle.iter().filter(near).find(|e| e.kind == LifecycleKind::SignalClosed)
}

/// When the server was back, as the client's attempts bound it: the first thing the server
/// said after `start_ms` (a leave, or the client connected again) answered the attempt just
/// before it, so the server came back between the attempt before that one (which failed) and
/// it — halfway, or halfway from `start_ms` when the first attempt was answered.
fn server_back_ms(log: &Timeline, start_ms: f64, end_ms: f64) -> Option<f64> {
    let answered = log.lifecycle.iter().find(|e| {
        e.t_ms >= start_ms
            && e.t_ms <= end_ms + CAUSE_WINDOW_MS
            && match &e.kind {
                LifecycleKind::SessionClosed { .. } | LifecycleKind::Recovered => true,
                LifecycleKind::State { to, .. } => to == "connected",
                _ => false,
            }
    })?;
    let attempts: Vec<f64> = log
        .lifecycle
        .iter()
        .filter(|e| e.t_ms >= start_ms && e.t_ms <= answered.t_ms)
        .filter(|e| {
            matches!(
                e.kind,
                LifecycleKind::Resume { .. }
                    | LifecycleKind::ReconnectAttempt { .. }
                    | LifecycleKind::FullReconnect { .. }
            )
        })
        .map(|e| e.t_ms)
        .collect();
    match attempts.as_slice() {
        [] => None,
        [only] => Some((start_ms + only) / 2.0),
        [.., failed, answering] => Some((failed + answering) / 2.0),
    }
}

/// The log's episodes as (its `Reconnecting`, what ended it).
fn episodes(lifecycle: &[Moment]) -> Vec<(Moment, Moment)> {
    let mut began: Option<&Moment> = None;
    let mut out = Vec::new();
    for m in lifecycle {
        if m.state == "Reconnecting" {
            began = Some(m);
        } else if let Some(b) = began.take() {
            out.push((b.clone(), m.clone()));
        }
    }
    out
}

/// Episodes of the log that no outage of the dump explains: the signalling went while the
/// media flowed. One that began with the WebSocket closing is replayed as the signalling
/// proxy killing the connection (and refusing new ones until between the client's last
/// refused attempt and the one answered); any other cause is noted, not guessed.
fn signalling_only(out: &mut Imported, log: &Timeline, zero: f64) {
    for (began, ended) in episodes(&out.lifecycle) {
        let explained =
            out.outages.iter().any(|o| o.at_s <= ended.at_s + 2.0 && o.end_s() + 2.0 >= began.at_s);
        if explained {
            continue;
        }
        let began_ms = zero + began.at_s * 1000.0;
        let ended_ms = zero + ended.at_s * 1000.0;
        let closed = log.lifecycle.iter().find(|e| {
            e.kind == LifecycleKind::SignalClosed
                && e.t_ms <= began_ms + 500.0
                && e.t_ms >= began_ms - CAUSE_WINDOW_MS
        });
        let Some(closed) = closed else {
            out.notes.push(format!(
                "{} at {} with media flowing, and no cause in the log to replay ({})",
                began.state,
                secs_text(began.at_s),
                began.evidence
            ));
            continue;
        };
        let back = server_back_ms(log, closed.t_ms, ended_ms).unwrap_or(ended_ms);
        out.faults.push(ImportedFault {
            at_s: (closed.t_ms - zero) / 1000.0,
            for_s: Some(((back - closed.t_ms) / 1000.0).max(0.5)),
            body: format!("target = \"{FIELD}\"\ntype = \"signal-proxy\"\nmode = \"kill\""),
            evidence: vec![
                format!(
                    "{} then {} at {} while the media flowed (no outage in the dump): the \
                     signalling connection was lost alone",
                    redact(&closed.evidence),
                    began.state,
                    secs_text(began.at_s)
                ),
                format!("{} at {} ({})", ended.state, secs_text(ended.at_s), ended.evidence),
            ],
        });
    }
}

/// With only a log: each episode, from its `Reconnecting` to its end, as a partition.
fn from_log_alone(out: &mut Imported, log: Option<&Timeline>) {
    let episodes = episodes(&out.lifecycle);
    for (b, e) in episodes {
        out.outages.push(OutageSpan {
            at_s: b.at_s,
            for_s: e.at_s - b.at_s,
            uncertainty_s: (0.0, 0.0),
        });
        out.faults.push(ImportedFault {
            at_s: b.at_s,
            for_s: Some(e.at_s - b.at_s),
            body: format!("target = \"{FIELD}\"\ntype = \"partition\""),
            evidence: vec![
                format!("{} ({}) to {} ({})", b.state, b.evidence, e.state, e.evidence),
                "a log alone says when the client noticed, not when the link failed: the \
                 partition starts at its Reconnecting, so a replay notices later than the field \
                 client did"
                    .into(),
            ],
        });
    }
    if log.is_some() && out.faults.is_empty() {
        out.notes.push("the log shows no reconnect episode".into());
    }
}

/// The RTT and loss outside the outages, as `media` faults over segments of equal values.
fn link_profile(out: &mut Imported, derived: &Derived, zero: f64) {
    let origin_s = (derived.origin_ms - zero) / 1000.0;
    // An outage's lost packets are counted once stats flow again: the seconds just after it
    // are its own, not the link's.
    let inside =
        |s: f64| out.outages.iter().any(|o| s + 1.0 > o.at_s && s < o.end_s() + AFTER_AN_OUTAGE_S);
    // (second from zero, delay each way ms, loss %), for the seconds worth replaying.
    let mut steps: Vec<(f64, u64, u64)> = Vec::new();
    for second in &derived.seconds {
        #[allow(clippy::cast_precision_loss)]
        let s = origin_s + second.second as f64;
        if s < 0.0 || inside(s) {
            continue;
        }
        let rtt = second.rtt_ms.filter(|r| *r >= RTT_WORTH_REPLAYING_MS).unwrap_or(0.0);
        let loss =
            second.loss_percent.filter(|l| *l >= LOSS_WORTH_REPLAYING_PERCENT).unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (delay, loss) = (((rtt / 2.0) / 5.0).round() as u64 * 5, loss.round() as u64);
        steps.push((s, delay, loss));
    }
    let mut segments: Vec<(f64, f64, u64, u64)> = Vec::new();
    for (s, delay, loss) in steps {
        match segments.last_mut() {
            Some(last) if last.2 == delay && last.3 == loss && (s - last.1).abs() < 1.5 => {
                last.1 = s + 1.0;
            }
            _ => segments.push((s, s + 1.0, delay, loss)),
        }
    }
    // A one-second step is noise of the sampling (a loss counted a second late): it joins the
    // segment before it.
    let mut merged: Vec<(f64, f64, u64, u64)> = Vec::new();
    for seg in segments {
        match merged.last_mut() {
            Some(last) if seg.1 - seg.0 < 2.0 && (seg.0 - last.1).abs() < 0.01 => last.1 = seg.1,
            _ => merged.push(seg),
        }
    }
    for (from, to, delay, loss) in merged.into_iter().filter(|s| s.2 > 0 || s.3 > 0) {
        let mut body = format!("target = \"{FIELD}\"\ntype = \"media\"");
        if delay > 0 {
            let _ = write!(body, "\ndelay = \"{delay}ms\"");
        }
        if loss > 0 {
            let _ = write!(body, "\nloss_percent = {loss}.0");
        }
        out.faults.push(ImportedFault {
            at_s: from,
            for_s: Some(to - from),
            body,
            evidence: vec![format!(
                "the selected pairs' currentRoundTripTime ({} ms each way) and the inbound-rtp \
                 packetsLost ({loss} %) per second from {} to {}",
                delay,
                secs_text(from),
                secs_text(to)
            )],
        });
    }
}

fn secs_text(s: f64) -> String {
    format!("{:.1}s", s.max(0.0))
}

impl Imported {
    /// The scenario file's text, named `name`.
    pub fn scenario(&self, name: &str) -> String {
        let name: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let sources: Vec<&str> = self.sources.iter().map(|s| source_name(*s)).collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Imported by `faultline import` from field evidence: {}.",
            sources.join(", ")
        );
        let _ = writeln!(
            out,
            "# Times count from the field client's first media bytes (with only a log, its first"
        );
        let _ = writeln!(out, "# `connected`). Each fault says what it was read from.");
        for note in &self.notes {
            let _ = writeln!(out, "# - {}", redact(note));
        }
        let _ = writeln!(out, "name = {:?}", redact(&name));
        let _ = writeln!(
            out,
            "description = \"Imported from field evidence ({}): {} outage(s); the field client {}.\"",
            sources.join(", "),
            self.outages.len(),
            self.did()
        );
        let _ = writeln!(out, "lanes = [\"real\"]");
        // Long enough after the last heal (or a late `Reconnected`) for a js replay's own
        // dump to sample a reconnect's new peer connection: Chrome's webrtc-internals showed
        // no stats for one that lived 4 s before the close.
        let _ = writeln!(out, "settle = \"{SETTLE}\"");
        let _ = writeln!(
            out,
            "\n[[participant]]\nidentity = {FIELD:?}\ntracks = [\"audio\", \"video\"]"
        );
        let _ = writeln!(
            out,
            "\n[[participant]]\nidentity = {PEER:?}\ntracks = [\"audio\", \"video\"]"
        );
        for f in &self.faults {
            let _ = writeln!(out);
            for e in &f.evidence {
                let _ = writeln!(out, "# {}", redact(e));
            }
            let _ = writeln!(out, "[[fault]]\nat = \"{}\"", secs_text(f.at_s));
            if let Some(d) = f.for_s {
                let _ = writeln!(out, "for = \"{}\"", secs_text(d.max(0.1)));
            }
            let _ = writeln!(out, "{}", f.body);
        }
        self.expectations(&mut out);
        self.field_table(&mut out);
        out
    }

    /// What the field client did, in words.
    fn did(&self) -> String {
        let states: Vec<&str> = self.lifecycle.iter().map(|m| m.state).collect();
        if !self.has_log {
            return "left no log".into();
        }
        match states.last() {
            Some(&"Disconnected") => "ended Disconnected".into(),
            _ if states.contains(&"Reconnected") => format!(
                "reconnected {} time(s)",
                states.iter().filter(|s| **s == "Reconnected").count()
            ),
            _ => "did not reconnect".into(),
        }
    }

    fn expectations(&self, out: &mut String) {
        let _ = writeln!(out);
        if !self.has_log {
            let _ = writeln!(
                out,
                "# no client log: its own states are unknown; only the end is expected"
            );
            let _ = writeln!(
                out,
                "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = \"connected\""
            );
            return;
        }
        let reconnecting = self.lifecycle.iter().find(|m| m.state == "Reconnecting");
        let back = reconnecting.and_then(|r| {
            self.lifecycle.iter().find(|m| m.state == "Reconnected" && m.at_s >= r.at_s)
        });
        let ended = self.lifecycle.last().map(|m| m.state);
        match (reconnecting, back) {
            (None, _) => {
                let _ = writeln!(out, "# the log shows no reconnect");
                let _ =
                    writeln!(out, "[[expect]]\ntype = \"no-reconnect\"\nparticipant = {FIELD:?}\n");
            }
            (Some(r), Some(b)) => {
                // `reconnected` counts from the last fault's end: the field client's own time
                // from there, plus slack for the replay's machine.
                let healed = self
                    .faults
                    .iter()
                    .map(|f| f.at_s + f.for_s.unwrap_or(0.0))
                    .reduce(f64::max)
                    .unwrap_or(r.at_s);
                let within = (b.at_s - healed).max(0.0).ceil() + 5.0;
                let _ = writeln!(
                    out,
                    "# {} at {}, {} at {}: back {:.1} s after the last fault's end",
                    r.state,
                    secs_text(r.at_s),
                    b.state,
                    secs_text(b.at_s),
                    b.at_s - healed
                );
                let _ = writeln!(
                    out,
                    "[[expect]]\ntype = \"reconnected\"\nparticipant = {FIELD:?}\nwithin = \"{within}s\"\n"
                );
            }
            (Some(r), None) => {
                let _ = writeln!(out, "# {} at {} and never back", r.state, secs_text(r.at_s));
            }
        }
        let state = if ended == Some("Disconnected") { "disconnected" } else { "connected" };
        let _ = writeln!(
            out,
            "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = {state:?}"
        );
    }

    fn field_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "\n# What the field evidence showed, for the report to set beside the run."
        );
        let _ = writeln!(out, "[field]\nparticipant = {FIELD:?}\nlog = {}", self.has_log);
        let outages: Vec<String> = self
            .outages
            .iter()
            .map(|o| {
                format!("{{ at = \"{}\", for = \"{}\" }}", secs_text(o.at_s), secs_text(o.for_s))
            })
            .collect();
        let _ = writeln!(out, "outages = [{}]", outages.join(", "));
        let moments: Vec<String> = self
            .lifecycle
            .iter()
            .map(|m| format!("{{ at = \"{}\", state = {:?} }}", secs_text(m.at_s), m.state))
            .collect();
        let _ = writeln!(out, "lifecycle = [{}]", moments.join(", "));
    }
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::WebrtcInternals => "a webrtc-internals dump",
        Source::LivekitClientLog => "a livekit-client log",
        Source::RustSdkLog => "a LiveKit Rust SDK log",
    }
}
