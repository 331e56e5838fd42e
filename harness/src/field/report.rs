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
            return "no reconnect".to_owned();
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
    if !field.log {
        let _ = writeln!(out, "  lifecycle  field: unknown (no log was imported)");
    } else {
        let _ = writeln!(out, "  lifecycle  field: {}", moments(&field_moments));
    }
    let _ = writeln!(out, "             run:   {}", moments(&run_moments));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faultline_sdk::{ConnectionState, RoomOptions, TrackSource};

    use super::*;
    use crate::client::{ClientEvent, MediaCount};
    use crate::record::{EventRecord, ParticipantRecord};
    use crate::scenario::format::{FieldMoment, FieldOutage, Lane};

    /// `field` receives the peer's camera every 100 ms from 0 to 10 s but from 2.0 to 4.5 s,
    /// and goes Reconnecting at 2.5 s, Reconnected at 4.4 s.
    fn record() -> RunRecord {
        let mut events = Vec::new();
        let mut frames = 0;
        for tenth in 0..100u64 {
            let at = Duration::from_millis(tenth * 100);
            if !(20..45).contains(&tenth) {
                frames += 3;
            }
            let count = MediaCount {
                from: "peer".into(),
                source: TrackSource::Camera,
                sid: "TR_1".into(),
                frames,
                decoded: None,
            };
            events.push(EventRecord {
                participant: "field".into(),
                at,
                event: ClientEvent::Media { tracks: vec![count] },
            });
        }
        for (ms, event) in [(2_500, ClientEvent::Reconnecting), (4_400, ClientEvent::Reconnected)] {
            events.push(EventRecord {
                participant: "field".into(),
                at: Duration::from_millis(ms),
                event,
            });
        }
        events.sort_by_key(|e| e.at);
        RunRecord {
            participants: vec![ParticipantRecord::faultline("field", &RoomOptions::default())],
            events,
            final_states: vec![("field".into(), ConnectionState::Connected)],
            scenario: "imported".into(),
            description: String::new(),
            file: "imported.toml".into(),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            timeline_zero: Duration::from_secs(1),
            ended: Duration::from_secs(10),
            faults: Vec::new(),
            verdicts: Vec::new(),
            logs: Vec::new(),
            cluster: Vec::new(),
        }
    }

    #[test]
    fn the_runs_outages_and_lifecycle_stand_beside_the_fields() {
        let r = record();
        let outages = reproduced_outages(&r, "field");
        assert_eq!(outages.len(), 1, "{outages:?}");
        let (at, lasted) = outages[0];
        assert!((at - 0.9).abs() < 0.01 && (lasted - 2.6).abs() < 0.01, "{outages:?}");
        let lifecycle: Vec<(i64, &str)> = reproduced_lifecycle(&r, "field")
            .into_iter()
            .map(|(at, s)| ((at * 10.0).round() as i64, s))
            .collect();
        assert_eq!(lifecycle, [(15, "Reconnecting"), (34, "Reconnected")]);
        let field = FieldSpec {
            participant: "field".into(),
            outages: vec![FieldOutage {
                at: Duration::from_secs(1),
                lasted: Duration::from_secs(2),
            }],
            log: true,
            lifecycle: vec![FieldMoment {
                at: Duration::from_secs(2),
                state: "Reconnecting".into(),
            }],
        };
        let text = beside(&field, &r);
        assert!(text.contains("field: 1.0 s for 2.0 s"), "{text}");
        assert!(text.contains("run:   0.9 s for 2.6 s"), "{text}");
        assert!(text.contains("field: Reconnecting 2.0 s"), "{text}");
        assert!(text.contains("run:   Reconnecting 1.5 s, Reconnected 3.4 s"), "{text}");
        let unknown = beside(&FieldSpec { log: false, lifecycle: Vec::new(), ..field }, &r);
        assert!(unknown.contains("unknown (no log was imported)"), "{unknown}");
    }
}
