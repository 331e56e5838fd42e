//! An imported scenario's field evidence (its `[field]` table) set beside what a run of it
//! reproduced: the outages (the field client's received media stopped for a second or more)
//! and the field client's lifecycle, each with its times on the fault timeline.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::{Lifecycle, Observed};
use crate::flow::flows;
use crate::record::RunRecord;
use crate::scenario::format::FieldSpec;

/// The shortest stop of every received track counted as an outage (as the importer counts a
/// flat `bytesReceived`).
pub const MIN_OUTAGE: Duration = Duration::from_secs(1);

/// The outages `identity` lived through in `record`: stretches of a second or more, after the
/// timeline's zero and before its last frame, in which none of the tracks it received
/// delivered a frame. `(at, for)` in
/// seconds from the timeline's zero.
pub fn reproduced_outages(record: &RunRecord, identity: &str) -> Vec<(f64, f64)> {
    let mut arrivals: Vec<Duration> = flows(record)
        .into_iter()
        .filter(|(key, _)| key.subscriber == identity)
        .flat_map(|(_, flow)| flow.advances)
        .filter(|t| *t >= record.timeline_zero)
        .collect();
    arrivals.sort();
    let mut out = Vec::new();
    let mut previous = record.timeline_zero;
    // Between arrivals only: the run's end (its close) is not an outage.
    for t in arrivals.iter().copied() {
        if t.saturating_sub(previous) >= MIN_OUTAGE {
            out.push((record.timeline_secs(previous), (t - previous).as_secs_f64()));
        }
        previous = previous.max(t);
    }
    out
}

/// `identity`'s lifecycle in `record` as the importer names a log's: `Reconnecting` once per
/// episode (livekit-client's signal resume and its full reconnect alike), `Reconnected`,
/// `Disconnected`; `(seconds from the timeline's zero, state)`.
pub fn reproduced_lifecycle(record: &RunRecord, identity: &str) -> Vec<(f64, &'static str)> {
    let mut out = Vec::new();
    let mut reconnecting = false;
    for e in record.events_of(identity) {
        let state = match e.event.lifecycle() {
            Some(Lifecycle::Reconnecting | Lifecycle::SignalReconnecting) if !reconnecting => {
                "Reconnecting"
            }
            Some(Lifecycle::Reconnected) if reconnecting => "Reconnected",
            Some(Lifecycle::Disconnected) => "Disconnected",
            _ => continue,
        };
        reconnecting = state == "Reconnecting";
        out.push((record.timeline_secs(e.at), state));
    }
    out
}

/// The field evidence beside the run, for a person.
pub fn beside(field: &FieldSpec, record: &RunRecord) -> String {
    let who = &field.participant;
    let outages = |list: &[(f64, f64)]| {
        if list.is_empty() {
            return "none".to_owned();
        }
        list.iter().map(|(at, d)| format!("{at:.1} s for {d:.1} s")).collect::<Vec<_>>().join(", ")
    };
    let moments = |list: &[(f64, String)]| {
        if list.is_empty() {
            return "nothing".to_owned();
        }
        list.iter().map(|(at, s)| format!("{s} {at:.1} s")).collect::<Vec<_>>().join(", ")
    };
    let field_outages: Vec<(f64, f64)> =
        field.outages.iter().map(|o| (o.at.as_secs_f64(), o.lasted.as_secs_f64())).collect();
    let field_moments: Vec<(f64, String)> =
        field.lifecycle.iter().map(|m| (m.at.as_secs_f64(), m.state.clone())).collect();
    let run_moments: Vec<(f64, String)> =
        reproduced_lifecycle(record, who).into_iter().map(|(at, s)| (at, s.to_owned())).collect();
    let mut out = String::new();
    let _ = writeln!(out, "field evidence beside this run ({who}; seconds on the fault timeline):");
    let _ = writeln!(out, "  outages    field: {}", outages(&field_outages));
    let _ = writeln!(out, "             run:   {}", outages(&reproduced_outages(record, who)));
    if field.lifecycle.is_empty() {
        let _ = writeln!(out, "  lifecycle  field: unknown (no log was imported)");
    } else {
        let _ = writeln!(out, "  lifecycle  field: {}", moments(&field_moments));
    }
    let _ = writeln!(out, "             run:   {}", moments(&run_moments));
    out
}
