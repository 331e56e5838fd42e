//! Judging a run: each expectation of the scenario, and DESIGN.md's invariants 1–3 for each
//! participant, become a [`Verdict`] saying what a correct client does and what this one did.
//! Pure functions of the scenario and the [`RunRecord`], so any lane's record can be judged.

use std::time::Duration;

use faultline_sdk::{ConnectionState, RoomEvent};

use crate::check::check_invariants;
use crate::record::{EventRecord, FaultRecord, RunRecord, Verdict};
use crate::scenario::format::{Expectation, FinalState, Scenario};

/// The topic the runner publishes scenario data on; payloads are big-endian `u32` sequence
/// numbers from 0.
pub const DATA_TOPIC: &str = "faultline-seq";

/// Every verdict of a finished run: the expectations in file order, then the invariants of
/// each participant.
pub fn judge(scenario: &Scenario, record: &RunRecord) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> =
        scenario.expectations.iter().map(|e| expectation(scenario, record, e.get_ref())).collect();
    for p in &record.participants {
        let state = record.final_state(p).unwrap_or(ConnectionState::Disconnected);
        let what = format!("invariants of {p} (DESIGN.md 1–3)");
        let expected = "one Reconnecting per episode, Reconnected only after it, at most one \
                        Disconnected and nothing after it, never left Reconnecting"
            .to_owned();
        verdicts.push(match check_invariants(&record.events_of(p), state) {
            Ok(()) => Verdict { what, expected, seen: "all hold".into(), passed: true },
            Err(e) => Verdict { what, expected, seen: e.violation.to_string(), passed: false },
        });
    }
    verdicts
}

/// Whether the run can stop watching early: every expectation that waits for something has
/// seen it, and nobody is in the middle of reconnecting.
pub fn settled(scenario: &Scenario, record: &RunRecord) -> bool {
    let nobody_reconnecting = record.participants.iter().all(|p| {
        record
            .events
            .iter()
            .rev()
            .find(|e| e.participant == *p && e.event.is_lifecycle())
            .is_none_or(|e| e.event != RoomEvent::Reconnecting)
    });
    nobody_reconnecting
        && scenario.expectations.iter().all(|e| expectation(scenario, record, e.get_ref()).passed)
}

/// How long after the timeline's zero the expectations may still change their verdict: the
/// latest bound any of them names.
pub fn latest_bound(scenario: &Scenario) -> Duration {
    let first_hit = |p: &str| {
        scenario
            .faults
            .iter()
            .filter(|f| f.target.as_ref().is_none_or(|t| t.get_ref() == p))
            .map(|f| f.at)
            .min()
            .unwrap_or_default()
    };
    let last_heal = |p: &str| {
        scenario
            .faults
            .iter()
            .filter(|f| f.target.as_ref().is_none_or(|t| t.get_ref() == p))
            .map(|f| f.at + f.duration.unwrap_or_default())
            .max()
            .unwrap_or_default()
    };
    scenario
        .expectations
        .iter()
        .map(|e| match e.get_ref() {
            Expectation::Reconnected { participant, within } => last_heal(participant) + *within,
            Expectation::Disconnected { participant, within, .. } => {
                first_hit(participant) + *within
            }
            _ => Duration::ZERO,
        })
        .max()
        .unwrap_or_default()
}

fn expectation(scenario: &Scenario, record: &RunRecord, exp: &Expectation) -> Verdict {
    let rel = |at: Duration| format!("{:+.3}s", record.timeline_secs(at));
    let events = |p: &str| -> Vec<&EventRecord> {
        record.events.iter().filter(|e| e.participant == p).collect()
    };
    let hitting =
        |p: &str| -> Vec<&FaultRecord> { record.faults.iter().filter(|f| f.hits(p)).collect() };
    match exp {
        Expectation::Reconnected { participant, within } => {
            let first_hit = hitting(participant).into_iter().map(|f| f.started).min();
            let heal = hitting(participant)
                .into_iter()
                .map(|f| f.healed.unwrap_or(f.started))
                .max()
                .unwrap_or(record.timeline_zero);
            let from = first_hit.unwrap_or(record.timeline_zero);
            let deadline = heal + *within;
            let what = format!("reconnected: {participant} within {within:?} of the heal");
            let expected = format!(
                "Reconnecting, then Reconnected by {} ({} heal + {within:?})",
                rel(deadline),
                rel(heal)
            );
            let evs = events(participant);
            let reconnecting =
                evs.iter().find(|e| e.at >= from && e.event == RoomEvent::Reconnecting);
            let seen;
            let passed;
            match reconnecting {
                None => {
                    passed = false;
                    seen = format!(
                        "no Reconnecting after the first fault ({})",
                        lifecycle(record, participant)
                    );
                }
                Some(r) => {
                    match evs.iter().find(|e| e.at >= r.at && e.event == RoomEvent::Reconnected) {
                        Some(done) => {
                            passed = done.at <= deadline;
                            seen = format!(
                                "Reconnecting at {}, Reconnected at {} ({:.3}s after the heal)",
                                rel(r.at),
                                rel(done.at),
                                done.at.as_secs_f64() - heal.as_secs_f64()
                            );
                        }
                        None => {
                            passed = false;
                            seen = format!(
                                "Reconnecting at {}, never Reconnected ({})",
                                rel(r.at),
                                lifecycle(record, participant)
                            );
                        }
                    }
                }
            }
            Verdict { what, expected, seen, passed }
        }
        Expectation::NoReconnect { participant } => {
            let found =
                events(participant).into_iter().find(|e| e.event == RoomEvent::Reconnecting);
            Verdict {
                what: format!("no-reconnect: {participant}"),
                expected: "never Reconnecting (the faults go unnoticed)".into(),
                seen: found.map_or(
                    format!("never Reconnecting ({})", lifecycle(record, participant)),
                    |e| {
                        format!(
                            "Reconnecting at {} ({})",
                            rel(e.at),
                            lifecycle(record, participant)
                        )
                    },
                ),
                passed: found.is_none(),
            }
        }
        Expectation::NoDisconnect { participant } => {
            let what = format!("no-disconnect: {participant}");
            let found = events(participant)
                .into_iter()
                .find(|e| matches!(e.event, RoomEvent::Disconnected { .. }));
            let (seen, passed) = match found {
                Some(e) => (format!("{:?} at {}", e.event, rel(e.at)), false),
                None => (format!("never Disconnected ({})", lifecycle(record, participant)), true),
            };
            Verdict { what, expected: "never Disconnected".into(), seen, passed }
        }
        Expectation::Disconnected { participant, reason, within } => {
            let from = hitting(participant)
                .into_iter()
                .map(|f| f.started)
                .min()
                .unwrap_or(record.timeline_zero);
            let deadline = from + *within;
            let what = format!("disconnected: {participant} within {within:?} of the first fault");
            let expected = format!(
                "exactly one Disconnected{} by {}",
                reason.as_ref().map_or(String::new(), |r| format!(" with reason {r}")),
                rel(deadline)
            );
            let ends: Vec<&EventRecord> = events(participant)
                .into_iter()
                .filter(|e| matches!(e.event, RoomEvent::Disconnected { .. }))
                .collect();
            let (seen, passed) = match ends.as_slice() {
                [] => (format!("no Disconnected ({})", lifecycle(record, participant)), false),
                [one] => {
                    let RoomEvent::Disconnected { reason: got } = &one.event else {
                        unreachable!("filtered on Disconnected")
                    };
                    let reason_ok =
                        reason.as_ref().is_none_or(|r| r.eq_ignore_ascii_case(got.as_str_name()));
                    (
                        format!(
                            "Disconnected with reason {} at {} ({:.3}s after the first fault)",
                            got.as_str_name(),
                            rel(one.at),
                            one.at.as_secs_f64() - from.as_secs_f64()
                        ),
                        reason_ok && one.at <= deadline,
                    )
                }
                many => (format!("{} Disconnected events", many.len()), false),
            };
            Verdict { what, expected, seen, passed }
        }
        Expectation::PeerSawNoLeave { peer, of } => {
            let left = events(peer).into_iter().find(
                |e| matches!(&e.event, RoomEvent::ParticipantDisconnected(p) if record.scenario_identity(p.identity()) == of),
            );
            Verdict {
                what: format!("peer-saw-no-leave: {peer} never sees {of} leave"),
                expected: format!("no ParticipantDisconnected({of}) at {peer}"),
                seen: left.map_or(format!("{peer} never saw {of} leave"), |e| {
                    format!("{peer} saw {of} leave at {}", rel(e.at))
                }),
                passed: left.is_none(),
            }
        }
        Expectation::PeerSawRejoin { peer, of } => {
            let evs = events(peer);
            let left = evs.iter().find(
                |e| matches!(&e.event, RoomEvent::ParticipantDisconnected(p) if record.scenario_identity(p.identity()) == of),
            );
            let back = left.and_then(|l| {
                evs.iter().find(|e| {
                    e.at >= l.at
                        && matches!(&e.event, RoomEvent::ParticipantConnected(p) if record.scenario_identity(p.identity()) == of)
                })
            });
            let (seen, passed) = match (left, back) {
                (None, _) => (format!("{peer} never saw {of} leave"), false),
                (Some(l), None) => (format!("{of} left at {}, never came back", rel(l.at)), false),
                (Some(l), Some(b)) => {
                    (format!("{of} left at {} and joined again at {}", rel(l.at), rel(b.at)), true)
                }
            };
            Verdict {
                what: format!("peer-saw-rejoin: {peer} sees {of} leave and join again"),
                expected: format!("ParticipantDisconnected({of}), then ParticipantConnected({of})"),
                seen,
                passed,
            }
        }
        Expectation::DataDelivered { from, to } => {
            let count =
                scenario.participant(from).and_then(|p| p.publish.as_ref()).map_or(0, |p| p.count);
            let received: Vec<u32> = events(to)
                .into_iter()
                .filter_map(|e| match &e.event {
                    RoomEvent::DataReceived {
                        payload, topic: Some(topic), participant, ..
                    } if topic == DATA_TOPIC
                        && participant
                            .as_ref()
                            .is_some_and(|p| record.scenario_identity(p.identity()) == from) =>
                    {
                        <[u8; 4]>::try_from(payload.as_slice()).ok().map(u32::from_be_bytes)
                    }
                    _ => None,
                })
                .collect();
            let expected_seq: Vec<u32> = (0..count).collect();
            Verdict {
                what: format!("data-delivered: {from} → {to}"),
                expected: format!("messages 0..{count} from {from}, each exactly once, in order"),
                seen: describe_sequence(&received, count),
                passed: received == expected_seq,
            }
        }
        Expectation::FinalState { participant, state } => {
            let want = match state {
                FinalState::Connected => ConnectionState::Connected,
                FinalState::Disconnected => ConnectionState::Disconnected,
            };
            let got = record.final_state(participant);
            Verdict {
                what: format!("final-state: {participant}"),
                expected: format!("{want:?} at the end of the run"),
                seen: got.map_or("no state recorded".into(), |s| format!("{s:?}")),
                passed: got == Some(want),
            }
        }
    }
}

/// The participant's lifecycle events, briefly, for a verdict's "seen".
fn lifecycle(record: &RunRecord, participant: &str) -> String {
    let parts: Vec<String> = record
        .events
        .iter()
        .filter(|e| e.participant == participant && e.event.is_lifecycle())
        .map(|e| {
            let name = match &e.event {
                RoomEvent::Disconnected { reason } => {
                    format!("Disconnected({})", reason.as_str_name())
                }
                other => format!("{other:?}"),
            };
            format!("{name} {:+.3}s", record.timeline_secs(e.at))
        })
        .collect();
    format!("lifecycle: {}", parts.join(", "))
}

/// What a receiver got, compared with 0..count: missing, duplicated or reordered numbers.
fn describe_sequence(received: &[u32], count: u32) -> String {
    let mut problems = Vec::new();
    let missing: Vec<u32> = (0..count).filter(|n| !received.contains(n)).collect();
    if !missing.is_empty() {
        problems.push(format!("missing {}", short_list(&missing)));
    }
    let mut seen = std::collections::BTreeSet::new();
    let dups: Vec<u32> = received.iter().copied().filter(|n| !seen.insert(*n)).collect();
    if !dups.is_empty() {
        problems.push(format!("duplicated {}", short_list(&dups)));
    }
    if received.windows(2).any(|w| w[0] >= w[1]) && dups.is_empty() {
        problems.push("out of order".into());
    }
    if problems.is_empty() {
        format!("all {} in order, once each", received.len())
    } else {
        format!("{} received: {}", received.len(), problems.join("; "))
    }
}

fn short_list(numbers: &[u32]) -> String {
    let shown: Vec<String> = numbers.iter().take(10).map(u32::to_string).collect();
    let more = numbers.len().saturating_sub(10);
    if more > 0 {
        format!("{} (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use faultline_sdk::DisconnectReason;

    use super::*;
    use crate::record::FaultRecord;
    use crate::scenario::format::Lane;

    const SCENARIO: &str = r#"
name = "t"
[[participant]]
identity = "a"
[[participant]]
identity = "b"
[[fault]]
at = "1s"
for = "2s"
target = "a"
type = "partition"
[[expect]]
type = "reconnected"
participant = "a"
within = "1s"
[[expect]]
type = "disconnected"
participant = "b"
reason = "SERVER_SHUTDOWN"
within = "5s"
"#;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn record(events: Vec<(&str, f64, RoomEvent)>) -> RunRecord {
        RunRecord {
            scenario: "t".into(),
            description: String::new(),
            file: PathBuf::from("t.toml"),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            participants: vec!["a".into(), "b".into()],
            timeline_zero: Duration::ZERO,
            ended: secs(10.0),
            faults: vec![FaultRecord {
                index: 0,
                kind: "partition",
                label: "partition → a".into(),
                target: Some("a".into()),
                started: secs(1.0),
                healed: Some(secs(3.0)),
            }],
            events: events
                .into_iter()
                .map(|(p, at, event)| EventRecord { participant: p.into(), at: secs(at), event })
                .collect(),
            final_states: vec![
                ("a".into(), ConnectionState::Connected),
                ("b".into(), ConnectionState::Disconnected),
            ],
            verdicts: Vec::new(),
            logs: Vec::new(),
            aliases: Vec::new(),
        }
    }

    fn scenario() -> Scenario {
        Scenario::parse(SCENARIO, Path::new("t.toml")).expect("valid")
    }

    #[test]
    fn each_expectation_says_expected_and_seen() {
        let s = scenario();
        let r = record(vec![
            ("a", 0.0, RoomEvent::Connected),
            ("b", 0.0, RoomEvent::Connected),
            ("a", 1.5, RoomEvent::Reconnecting),
            ("a", 4.5, RoomEvent::Reconnected),
            ("b", 2.0, RoomEvent::Disconnected { reason: DisconnectReason::SignalClose }),
        ]);
        let verdicts = judge(&s, &r);
        // Reconnected 1.5 s after the heal, bound 1 s.
        assert!(!verdicts[0].passed, "{:?}", verdicts[0]);
        assert!(verdicts[0].seen.contains("1.500s after the heal"), "{:?}", verdicts[0]);
        // Wrong reason.
        assert!(!verdicts[1].passed);
        assert!(verdicts[1].seen.contains("SIGNAL_CLOSE"), "{:?}", verdicts[1]);
        assert!(verdicts[1].expected.contains("SERVER_SHUTDOWN"), "{:?}", verdicts[1]);
        // Invariants hold for both.
        assert!(verdicts[2].passed && verdicts[3].passed, "{verdicts:?}");
    }

    #[test]
    fn a_run_that_does_what_is_expected_passes_and_is_settled() {
        let s = scenario();
        let r = record(vec![
            ("a", 0.0, RoomEvent::Connected),
            ("b", 0.0, RoomEvent::Connected),
            ("a", 1.5, RoomEvent::Reconnecting),
            ("a", 3.5, RoomEvent::Reconnected),
            ("b", 2.0, RoomEvent::Disconnected { reason: DisconnectReason::ServerShutdown }),
        ]);
        let verdicts = judge(&s, &r);
        assert!(verdicts.iter().all(|v| v.passed), "{verdicts:?}");
        assert!(settled(&s, &r));
        assert_eq!(latest_bound(&s), secs(5.0), "b's disconnect bound counts from t=0");
    }

    #[test]
    fn a_sequence_is_described_by_what_is_wrong_with_it() {
        assert_eq!(describe_sequence(&[0, 1, 2], 3), "all 3 in order, once each");
        assert_eq!(describe_sequence(&[0, 2, 2], 3), "3 received: missing 1; duplicated 2");
        assert_eq!(describe_sequence(&[1, 0], 2), "2 received: out of order");
    }

    #[test]
    fn a_participant_left_reconnecting_is_not_settled_and_breaks_an_invariant() {
        let s = scenario();
        let mut r =
            record(vec![("a", 0.0, RoomEvent::Connected), ("a", 1.5, RoomEvent::Reconnecting)]);
        r.final_states[0].1 = ConnectionState::Reconnecting;
        assert!(!settled(&s, &r));
        let verdicts = judge(&s, &r);
        let a = verdicts.iter().find(|v| v.what.starts_with("invariants of a")).expect("judged");
        assert!(!a.passed && a.seen.contains("still Reconnecting"), "{a:?}");
    }
}
