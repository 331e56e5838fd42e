//! The one judge: applies a scenario's expectations (`judge/expectations.rs`) and DESIGN.md's
//! invariants 1–5 (`judge/invariants.rs`) to any [`RunRecord`] — whichever lane wrote it, whichever
//! client it recorded — and says, per expectation and per participant, what a correct client
//! does and what this one did ([`Verdict`]). The explorer takes the [`Violation`]s directly;
//! a live [`crate::event_log::EventLog`] asks [`lifecycle`] about one room.
//!
//! Pure functions of the scenario and the record, plus what the runners need to know when to
//! stop watching ([`settled`], [`latest_bound`], [`reconnecting_since`]).

mod expectations;
mod invariants;
mod media;

use std::time::Duration;

pub use expectations::{expectation, short_list};
pub use invariants::{lifecycle, reconnecting_since, violations, Violation};
pub use media::{pending_until as media_pending_until, MEDIA_BOUND, RECEIVING_WINDOW};

use crate::record::{RunRecord, Verdict};
use crate::scenario::format::{Expectation, Scenario};

/// Every verdict of a finished run: the expectations in file order, then the invariants of
/// each participant (5 only when the run published sequenced data).
pub fn judge(scenario: &Scenario, record: &RunRecord) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> =
        scenario.expectations.iter().map(|e| expectation(scenario, record, e.get_ref())).collect();
    let broken = violations(record);
    let data = record.participants.iter().any(|p| !p.published.is_empty());
    let media = record.participants.iter().any(|p| !p.tracks.is_empty());
    let judged = match (data, media) {
        (true, true) => "1–6",
        (true, false) => "1–5",
        (false, true) => "1–4, 6",
        (false, false) => "1–4",
    };
    for p in &record.participants {
        let mut expected = format!(
            "one Reconnecting per episode, Reconnected only after it; at most one Disconnected, \
             nothing after it; every episode over within {:?} (all attempts at their delay caps \
             and timeouts)",
            p.reconnect_bound
        );
        if data {
            expected.push_str("; others' reliable data once each, in order");
        }
        if media {
            expected.push_str(&format!(
                "; every track received before an episode delivers frames again within \
                 {MEDIA_BOUND:?} of the later Reconnected, and one live subscription per \
                 publisher and source at the end"
            ));
        }
        let mine: Vec<String> = broken
            .iter()
            .filter(|v| v.participant == p.identity)
            .map(|v| format!("invariant {}: {}", v.invariant, v.what))
            .collect();
        verdicts.push(Verdict {
            what: format!("invariants of {} (DESIGN.md {judged})", p.identity),
            expected,
            passed: mine.is_empty(),
            seen: if mine.is_empty() { "all hold".into() } else { mine.join("; ") },
        });
    }
    verdicts
}

/// Whether the run can stop watching early: every expectation that waits for something has
/// seen it, and nobody is in the middle of reconnecting.
pub fn settled(scenario: &Scenario, record: &RunRecord) -> bool {
    record.participants.iter().all(|p| reconnecting_since(&record.events, &p.identity).is_none())
        && media_pending_until(record).is_none()
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
            Expectation::Disconnected { participant, within, .. }
            | Expectation::Reconnecting { participant, within } => first_hit(participant) + *within,
            _ => Duration::ZERO,
        })
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use faultline_sdk::{ConnectionState, DisconnectReason, ReconnectPolicy};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;
    use crate::client::ClientEvent;
    use crate::record::{
        data_payload, Backoff, EventRecord, FaultRecord, ParticipantRecord, Published, DATA_TOPIC,
    };
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

    const BOUND: Duration = Duration::from_secs(20);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn participant(identity: &str) -> ParticipantRecord {
        ParticipantRecord {
            identity: identity.into(),
            sdk: "faultline".into(),
            build: "faultline-sdk".into(),
            reconnect_bound: BOUND,
            backoff: None,
            joined_sid: format!("PA_{identity}"),
            final_sid: format!("PA_{identity}"),
            published: Vec::new(),
            tracks: Vec::new(),
        }
    }

    fn record(events: Vec<(&str, f64, ClientEvent)>) -> RunRecord {
        RunRecord {
            scenario: "t".into(),
            description: String::new(),
            file: PathBuf::from("t.toml"),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            participants: vec![participant("a"), participant("b")],
            timeline_zero: Duration::ZERO,
            ended: secs(10.0),
            faults: vec![FaultRecord {
                index: 0,
                kind: "partition",
                label: "partition → a".into(),
                target: Some("a".into()),
                started: secs(1.0),
                healed: Some(secs(3.0)),
                refuses_connections: false,
                mutes: None,
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
            cluster: Vec::new(),
        }
    }

    fn scenario() -> Scenario {
        Scenario::parse(SCENARIO, Path::new("t.toml")).expect("valid")
    }

    fn disconnected(reason: DisconnectReason) -> ClientEvent {
        ClientEvent::Disconnected { reason }
    }

    fn data(from: &str, seq: u32) -> ClientEvent {
        ClientEvent::DataReceived {
            payload: Arc::new(data_payload(from, seq)),
            topic: Some(DATA_TOPIC.into()),
            reliable: Some(true),
            from: Some(from.into()),
        }
    }

    /// The violations of `record`, as (invariant, participant).
    fn broken(record: &RunRecord) -> Vec<(u8, String)> {
        violations(record).into_iter().map(|v| (v.invariant, v.participant)).collect()
    }

    #[test]
    fn each_expectation_says_expected_and_seen() {
        let s = scenario();
        let r = record(vec![
            ("a", 0.0, ClientEvent::Connected),
            ("b", 0.0, ClientEvent::Connected),
            ("a", 1.5, ClientEvent::Reconnecting),
            ("a", 4.5, ClientEvent::Reconnected),
            ("b", 2.0, disconnected(DisconnectReason::SignalClose)),
        ]);
        let verdicts = judge(&s, &r);
        // Reconnected 1.5 s after the heal, bound 1 s.
        assert!(!verdicts[0].passed, "{:?}", verdicts[0]);
        assert!(verdicts[0].seen.contains("1.500s after the heal"), "{:?}", verdicts[0]);
        // Wrong reason.
        assert!(!verdicts[1].passed);
        assert!(verdicts[1].seen.contains("SIGNAL_CLOSE"), "{:?}", verdicts[1]);
        assert!(verdicts[1].expected.contains("SERVER_SHUTDOWN"), "{:?}", verdicts[1]);
        // Invariants hold for both; no data was published, so 5 is not judged.
        assert!(verdicts[2].passed && verdicts[3].passed, "{verdicts:?}");
        assert_eq!(verdicts[2].what, "invariants of a (DESIGN.md 1–4)");
    }

    #[test]
    fn a_run_that_does_what_is_expected_passes_and_is_settled() {
        let s = scenario();
        let r = record(vec![
            ("a", 0.0, ClientEvent::Connected),
            ("b", 0.0, ClientEvent::Connected),
            ("a", 1.5, ClientEvent::Reconnecting),
            ("a", 3.5, ClientEvent::Reconnected),
            ("b", 2.0, disconnected(DisconnectReason::ServerShutdown)),
        ]);
        let verdicts = judge(&s, &r);
        assert!(verdicts.iter().all(|v| v.passed), "{verdicts:?}");
        assert!(settled(&s, &r));
        assert_eq!(latest_bound(&s), secs(5.0), "b's disconnect bound counts from t=0");
    }

    #[test]
    fn reconnecting_is_judged_from_the_start_of_the_first_fault() {
        let text = format!(
            "{SCENARIO}[[expect]]\ntype = \"reconnecting\"\nparticipant = \"a\"\nwithin = \"2s\"\n"
        );
        let s = Scenario::parse(&text, Path::new("t.toml")).expect("valid");
        assert_eq!(latest_bound(&s), secs(5.0), "fault at 1 s + 2 s < b's 5 s");
        let verdict = |at: Option<f64>| {
            let mut events = vec![("a", 0.0, ClientEvent::Connected)];
            events.extend(at.map(|at| ("a", at, ClientEvent::Reconnecting)));
            judge(&s, &record(events)).remove(2)
        };
        let on_time = verdict(Some(2.9));
        assert!(on_time.passed, "{on_time:?}");
        assert!(on_time.seen.contains("1.900s after the fault"), "{on_time:?}");
        assert_eq!(on_time.what, "reconnecting: a within 2s of the first fault");
        let late = verdict(Some(3.1));
        assert!(!late.passed && late.expected.contains("+3.000s"), "{late:?}");
        let never = verdict(None);
        assert!(!never.passed && never.seen.starts_with("no Reconnecting"), "{never:?}");
    }

    #[test]
    fn a_signalling_only_resume_opens_an_episode_of_its_own() {
        let records = |list: Vec<ClientEvent>| -> Vec<EventRecord> {
            list.into_iter()
                .enumerate()
                .map(|(i, event)| EventRecord {
                    participant: "a".into(),
                    at: Duration::from_millis(i as u64),
                    event,
                })
                .collect()
        };
        use ClientEvent::{Connected, Reconnected, Reconnecting, SignalReconnecting};
        let gone = || disconnected(DisconnectReason::UnknownReason);
        // livekit-client: a resume; an escalation with a later resume attempt that runs out.
        let resume = records(vec![Connected, SignalReconnecting, Reconnected]);
        assert_eq!(lifecycle("a", &resume, ConnectionState::Connected), None);
        let escalated =
            records(vec![Connected, SignalReconnecting, Reconnecting, SignalReconnecting, gone()]);
        assert_eq!(lifecycle("a", &escalated, ConnectionState::Disconnected), None);
        let twice = records(vec![Connected, SignalReconnecting, Reconnecting, Reconnecting]);
        let v = lifecycle("a", &twice, ConnectionState::Reconnecting).expect("caught");
        assert!(v.invariant == 1 && v.what.contains("second Reconnecting"), "{v}");
        let stuck = records(vec![Connected, SignalReconnecting]);
        let v = lifecycle("a", &stuck, ConnectionState::Reconnecting).expect("caught");
        assert_eq!(v.invariant, 3, "{v}");
        assert_eq!(reconnecting_since(&stuck, "a"), Some(Duration::from_millis(1)));
        let v = lifecycle("a", &stuck, ConnectionState::Connected).expect("caught");
        assert_eq!(v.invariant, 2, "the state must agree: {v}");
    }

    #[test]
    fn each_broken_lifecycle_invariant_is_named() {
        let cases = [
            (vec![ClientEvent::Connected, ClientEvent::Reconnected], ConnectionState::Connected, 1),
            (
                vec![ClientEvent::Reconnecting, ClientEvent::Reconnecting],
                ConnectionState::Disconnected,
                1,
            ),
            (
                vec![disconnected(DisconnectReason::SignalClose), ClientEvent::Connected],
                ConnectionState::Connected,
                2,
            ),
            (
                vec![ClientEvent::Connected, disconnected(DisconnectReason::SignalClose)],
                ConnectionState::Connected,
                2,
            ),
            (
                vec![ClientEvent::Connected, ClientEvent::Reconnecting],
                ConnectionState::Reconnecting,
                3,
            ),
        ];
        for (events, state, invariant) in cases {
            let events: Vec<EventRecord> = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| EventRecord {
                    participant: "a".into(),
                    at: Duration::from_millis(i as u64),
                    event,
                })
                .collect();
            let v = lifecycle("a", &events, state).expect("must be caught");
            assert_eq!(v.invariant, invariant, "{v}");
            assert_eq!(v.participant, "a");
        }
        let clean = [
            ClientEvent::Connected,
            ClientEvent::Reconnecting,
            ClientEvent::Reconnected,
            ClientEvent::Reconnecting,
            disconnected(DisconnectReason::SignalClose),
        ]
        .map(|event| EventRecord { participant: "a".into(), at: Duration::ZERO, event });
        assert_eq!(lifecycle("a", &clean, ConnectionState::Disconnected), None);
    }

    #[test]
    fn a_participant_left_reconnecting_past_its_bound_is_stuck() {
        let s = scenario();
        let mut r = record(vec![
            ("a", 0.0, ClientEvent::Connected),
            ("b", 0.0, ClientEvent::Connected),
            ("a", 1.5, ClientEvent::Reconnecting),
        ]);
        r.final_states = vec![
            ("a".into(), ConnectionState::Reconnecting),
            ("b".into(), ConnectionState::Connected),
        ];
        r.ended = secs(1.5) + BOUND + secs(0.5);
        assert!(!settled(&s, &r));
        assert_eq!(reconnecting_since(&r.events, "a"), Some(secs(1.5)));
        assert_eq!(reconnecting_since(&r.events, "b"), None);
        let verdicts = judge(&s, &r);
        let a = verdicts.iter().find(|v| v.what.starts_with("invariants of a")).expect("judged");
        assert!(!a.passed && a.seen.contains("still Reconnecting"), "{a:?}");
        assert!(a.seen.contains(&format!("its bound is {BOUND:?}")), "{a:?}");
        assert!(!a.seen.contains("may yet have ended"), "the bound had passed: {a:?}");
        // A run that stopped inside the bound says so: the lane, not the client, is at fault.
        r.ended = secs(10.0);
        let early = violations(&r);
        assert!(early[0].what.contains("may yet have ended"), "{early:?}");
    }

    #[test]
    fn episodes_longer_than_the_bound_break_liveness_or_exhaustion() {
        let long = 1.0 + BOUND.as_secs_f64() + 1.0;
        let r = record(vec![
            ("a", 0.0, ClientEvent::Connected),
            ("b", 0.0, ClientEvent::Connected),
            ("a", 1.0, ClientEvent::Reconnecting),
            ("a", long, ClientEvent::Reconnected),
            ("b", 1.0, ClientEvent::Reconnecting),
            ("b", long, disconnected(DisconnectReason::SignalClose)),
        ]);
        assert_eq!(broken(&r), [(3, "a".to_owned()), (4, "b".to_owned())]);
    }

    #[test]
    fn an_exhausted_episode_under_refused_connections_lasts_its_drawn_delays() {
        let policy = ReconnectPolicy { attempts: 4, ..ReconnectPolicy::default() };
        let mut rng = SmallRng::seed_from_u64(3);
        let delays: Duration = (1..=4).map(|a| policy.delay(a, &mut rng)).sum();
        let run = |lasted: Duration| {
            let mut r = record(vec![
                ("a", 0.0, ClientEvent::Connected),
                ("b", 0.0, ClientEvent::Connected),
                ("b", 2.0, ClientEvent::Reconnecting),
            ]);
            r.events.push(EventRecord {
                participant: "b".into(),
                at: secs(2.0) + lasted,
                event: disconnected(DisconnectReason::SignalClose),
            });
            r.participants[1].backoff = Some(Backoff { policy: policy.clone(), rng_seed: 3 });
            r.faults[0].target = Some("b".into());
            r.faults[0].healed = None;
            r.faults[0].refuses_connections = true;
            broken(&r)
        };
        assert_eq!(run(delays + secs(0.5)), []);
        assert_eq!(run(delays + secs(5.0)), [(4, "b".to_owned())], "an extra attempt");
        assert_eq!(run(delays / 2), [(4, "b".to_owned())], "too few attempts");
    }

    #[test]
    fn reliable_data_arrives_once_in_order_unless_the_receiver_changed_session() {
        let published = |seqs: std::ops::Range<u32>| -> Vec<Published> {
            seqs.map(|seq| Published { seq, at: secs(1.0 + f64::from(seq)), sid: "PA_a".into() })
                .collect()
        };
        let run = |received: &[u32], receiver_final_sid: &str| {
            let mut events =
                vec![("a", 0.0, ClientEvent::Connected), ("b", 0.0, ClientEvent::Connected)];
            events.extend(received.iter().map(|&n| ("b", 5.0, data("a", n))));
            let mut r = record(events);
            r.final_states[1].1 = ConnectionState::Connected;
            r.participants[0].published = published(0..3);
            r.participants[1].final_sid = receiver_final_sid.into();
            let verdicts = judge(&scenario(), &r);
            assert_eq!(verdicts[3].what, "invariants of b (DESIGN.md 1–5)");
            broken(&r)
        };
        assert_eq!(run(&[0, 1, 2], "PA_b"), []);
        assert_eq!(run(&[0, 2, 1], "PA_b"), [(5, "b".to_owned())], "out of order");
        assert_eq!(run(&[0, 1, 1, 2], "PA_b"), [(5, "b".to_owned())], "twice");
        assert_eq!(run(&[0, 2], "PA_b"), [(5, "b".to_owned())], "missing");
        assert_eq!(run(&[0, 2], "PA_b2"), [], "a new session cannot get what it missed");
    }

    #[test]
    fn a_receiver_back_in_a_new_session_gets_what_was_sent_after_it_was_back() {
        let run = |received: &[u32]| {
            let mut events = vec![
                ("a", 0.0, ClientEvent::Connected),
                ("b", 0.0, ClientEvent::Connected),
                ("b", 1.2, ClientEvent::Reconnecting),
                ("b", 1.8, ClientEvent::Reconnected),
            ];
            events.extend(received.iter().map(|&n| ("b", 5.0, data("a", n))));
            let mut r = record(events);
            r.final_states[1].1 = ConnectionState::Connected;
            // Published at 1 s (while b was away), 2 s and 3 s (after it was back).
            r.participants[0].published = (0..3)
                .map(|seq| Published { seq, at: secs(1.0 + f64::from(seq)), sid: "PA_a".into() })
                .collect();
            r.participants[1].final_sid = "PA_b2".into();
            broken(&r)
        };
        assert_eq!(run(&[1, 2]), [], "what was sent while away may be lost");
        assert_eq!(run(&[0, 1, 2]), []);
        assert_eq!(run(&[1]), [(5, "b".to_owned())], "sent after Reconnected, never received");
    }

    /// A track unmuted between the `Reconnecting` that began a full reconnect and the server's
    /// acceptance of its republish is named as the reason it stopped; one unmuted after the
    /// acceptance, or before any reconnect, is not.
    #[test]
    fn an_unmute_during_a_republish_is_named() {
        use crate::vocab::TrackSource::Camera;
        let published = |sid: &str| ClientEvent::LocalTrackPublished {
            source: Camera,
            sid: sid.into(),
            previous_sid: None,
        };
        let with_unmute_at = |at: f64| {
            let mut r = record(vec![
                ("a", 0.5, published("TR_1")),
                ("a", 2.0, ClientEvent::Reconnecting),
                ("a", 6.0, published("TR_2")),
                ("a", 6.1, ClientEvent::Reconnected),
            ]);
            r.faults = vec![FaultRecord {
                index: 0,
                kind: "mute",
                label: "mute camera → a".into(),
                target: Some("a".into()),
                started: secs(1.0),
                healed: Some(secs(at)),
                refuses_connections: false,
                mutes: Some(Camera),
            }];
            expectations::unmuted_while_republishing(&r, "a", Camera)
        };
        assert_eq!(
            with_unmute_at(5.0).as_deref(),
            Some(
                "a unmuted it at +5.000s while publishing it again: after the Reconnecting at \
                 +2.000s and before the server accepted it at +6.000s"
            )
        );
        assert_eq!(with_unmute_at(7.0), None, "unmuted after the republish");
        assert_eq!(with_unmute_at(1.5), None, "unmuted before the reconnect began");
    }
}
