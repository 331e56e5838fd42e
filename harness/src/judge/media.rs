//! Invariant 6, media comes back, and the media expectations, over a run's
//! [`crate::flow`]s.
//!
//! Invariant 6: every track a participant was receiving before an episode — its own episode
//! or the publisher's — that ends `Reconnected` delivers frames again within
//! [`MEDIA_BOUND`] of the later of the two `Reconnected`s (when both had an episode at the
//! time), unless the publisher muted or unpublished it meanwhile; and when the run ends each
//! connected subscriber holds exactly one live subscription per (connected publisher,
//! source). A track counts as received before an episode if it delivered frames within
//! [`RECEIVING_WINDOW`] of the episode's start.

use std::time::Duration;

use faultline_sdk::ConnectionState;

use super::invariants::{episodes, Episode, Violation};
use crate::client::ClientEvent;
use crate::flow::{flows, Flow, TrackKey};
use crate::record::RunRecord;

/// How soon after the later `Reconnected` a track must deliver frames again: generous on
/// purpose (a resume's key-frame round trip, a full reconnect's republish and new
/// subscription take well under a second on loopback).
pub const MEDIA_BOUND: Duration = Duration::from_secs(10);

/// A track delivering frames this close to an episode's start (or to the start of the fault it
/// followed) was being received.
pub const RECEIVING_WINDOW: Duration = Duration::from_secs(2);

/// One track that must deliver frames again after an episode.
struct Obligation<'a> {
    key: &'a TrackKey,
    flow: &'a Flow,
    /// The participant whose episode it follows, and when that episode began.
    episode_of: &'a str,
    began: Duration,
    /// The later `Reconnected`: frames are due within [`MEDIA_BOUND`] of it.
    reconnected: Duration,
}

/// The episodes that ended `Reconnected` of `identity`.
fn recovered(record: &RunRecord, identity: &str) -> Vec<Episode> {
    episodes(record.events_of(identity))
        .into_iter()
        .filter(|e| matches!(e.ended, Some((_, true))))
        .collect()
}

/// Whether `key`'s publisher muted or unpublished the track (as the subscriber saw it, or
/// as the publisher did it) at or after `since`.
fn withdrawn(record: &RunRecord, key: &TrackKey, since: Duration) -> bool {
    let seen_muted = record.events_of(&key.subscriber).any(|e| {
        e.at + RECEIVING_WINDOW >= since
            && matches!(&e.event, ClientEvent::TrackMuted { from, source, muted: true }
                if *from == key.publisher && *source == key.source)
    });
    let muted_by_fault = record.faults.iter().any(|f| {
        f.mutes == Some(key.source)
            && f.target.as_deref() == Some(key.publisher.as_str())
            && f.healed.is_none_or(|healed| healed + RECEIVING_WINDOW >= since)
    });
    let mut unpublished = false;
    for e in record.events_of(&key.publisher).filter(|e| e.at >= since) {
        match &e.event {
            ClientEvent::LocalTrackUnpublished { source, .. } if *source == key.source => {
                unpublished = true
            }
            ClientEvent::LocalTrackPublished { source, .. } if *source == key.source => {
                unpublished = false
            }
            _ => {}
        }
    }
    seen_muted || muted_by_fault || unpublished
}

/// Every track that must come back after an episode, per DESIGN.md's invariant 6.
fn obligations<'a>(
    record: &'a RunRecord,
    flows: &'a std::collections::BTreeMap<TrackKey, Flow>,
) -> Vec<Obligation<'a>> {
    let mut out = Vec::new();
    for (key, flow) in flows {
        if key.subscriber == key.publisher {
            continue;
        }
        for (who, other) in [(&key.subscriber, &key.publisher), (&key.publisher, &key.subscriber)] {
            for episode in recovered(record, who) {
                let Some((reconnected, _)) = episode.ended else { continue };
                // The trouble may begin long before the client notices it (a dark link is
                // found by ping timeout): frames count as received before the episode if they
                // arrived shortly before it began, or before the earliest fault on either
                // party's path (or the server) still in effect when it began.
                let trouble = record
                    .faults
                    .iter()
                    .filter(|f| {
                        f.mutes.is_none()
                            && f.started <= episode.began
                            && f.healed.is_none_or(|healed| healed >= episode.began)
                            && f.target
                                .as_deref()
                                .is_none_or(|t| t == who.as_str() || t == other.as_str())
                    })
                    .map(|f| f.started)
                    .min()
                    .map_or(episode.began, |started| started.min(episode.began));
                let received = flow
                    .advances
                    .iter()
                    .any(|t| *t <= episode.began && *t + RECEIVING_WINDOW >= trouble);
                if !received || withdrawn(record, key, episode.began) {
                    continue;
                }
                // Episodes the frames had to wait for: the other party's at the same time,
                // and either party's that began after this one ended but before the frames
                // came back and were due (a publisher that lost its session too but noticed
                // later, a path that broke again). The frames are due after the last of them
                // ends Reconnected; none are due if one ended Disconnected or is still going
                // (invariant 3's business).
                let back = flow.first_after(reconnected);
                let waited_for = |e: &Episode, own: bool| {
                    let during = !own
                        && e.began <= reconnected
                        && e.ended.is_none_or(|(t, _)| t >= episode.began);
                    let later = e.began > reconnected
                        && e.began <= reconnected + MEDIA_BOUND
                        && back.is_none_or(|t| t > e.began);
                    during || later
                };
                let mut due_after = Some(reconnected);
                for (party, own) in [(who, true), (other, false)] {
                    for e in episodes(record.events_of(party)) {
                        if !waited_for(&e, own) {
                            continue;
                        }
                        due_after = match e.ended {
                            Some((t, true)) => due_after.map(|d| d.max(t)),
                            _ => None,
                        };
                    }
                }
                let Some(reconnected) = due_after else { continue };
                // A fault on either party's path (or the server) that begins after the
                // episode, before the frames came back and were due: what it breaks is the
                // next episode's business, not this one's.
                let disturbed = record.faults.iter().any(|f| {
                    f.started > episode.ended.map_or(reconnected, |(t, _)| t)
                        && f.started <= reconnected + MEDIA_BOUND
                        && back.is_none_or(|t| t > f.started)
                        && f.target
                            .as_deref()
                            .is_none_or(|t| t == who.as_str() || t == other.as_str())
                });
                // A fault on the other party's path at any time from the trouble's start to
                // this Reconnected: what it left behind — a signalling link dead after a
                // partition healed, a candidate switch it was asked for — waits for that
                // party's own recovery (its episode, if it notices), which this episode's
                // owner cannot hasten. A fault on the owner's own path is no excuse: its
                // Reconnected must mean media flows.
                let other_cut_off = record.faults.iter().any(|f| {
                    f.target.as_deref() == Some(other.as_str())
                        && f.started <= reconnected
                        && f.healed.is_none_or(|healed| healed >= trouble)
                });
                if disturbed || other_cut_off {
                    continue;
                }
                out.push(Obligation {
                    key,
                    flow,
                    episode_of: who,
                    began: episode.began,
                    reconnected,
                });
            }
        }
    }
    out
}

/// Whether `identity` was gone for good (Disconnected) by `at`.
fn gone_by(record: &RunRecord, identity: &str, at: Duration) -> bool {
    record
        .events_of(identity)
        .any(|e| e.at <= at && matches!(e.event, ClientEvent::Disconnected { .. }))
}

/// Invariant 6's violations in `record`, each charged to the subscriber.
pub fn violations(record: &RunRecord, found: &mut Vec<Violation>) {
    let flows = flows(record);
    for o in obligations(record, &flows) {
        let due = o.reconnected + MEDIA_BOUND;
        if gone_by(record, &o.key.subscriber, due) || gone_by(record, &o.key.publisher, due) {
            continue;
        }
        let back = o.flow.first_after(o.reconnected);
        let late = match back {
            Some(t) if t <= due => continue,
            Some(t) => format!("only {:.3}s after it", (t - o.reconnected).as_secs_f64()),
            None if record.ended < due => continue,
            None => "never".to_owned(),
        };
        found.push(Violation {
            invariant: 6,
            participant: o.key.subscriber.clone(),
            what: format!(
                "{}: frames arrived until {}'s episode began ({:.3}s) and were due within \
                 {MEDIA_BOUND:?} of the later Reconnected ({:.3}s), but came back {late}",
                o.key,
                o.episode_of,
                o.began.as_secs_f64(),
                o.reconnected.as_secs_f64(),
            ),
        });
    }
    for (key, flow) in &flows {
        let connected = |who: &str| record.final_state(who) == Some(ConnectionState::Connected);
        let publishes =
            record.participant(&key.publisher).is_some_and(|p| p.tracks.contains(&key.source));
        if key.subscriber == key.publisher
            || !publishes
            || !connected(&key.subscriber)
            || !connected(&key.publisher)
            || withdrawn(record, key, record.timeline_zero)
            || flow.live.len() == 1
        {
            continue;
        }
        found.push(Violation {
            invariant: 6,
            participant: key.subscriber.clone(),
            what: format!(
                "{key}: expected exactly one live subscription at the end, held {} ({:?})",
                flow.live.len(),
                flow.live
            ),
        });
    }
}

/// When the run may stop watching for media: the latest moment a track that must come
/// back (and has not yet) is still due, or a subscription count that is not yet one may
/// still settle (from the start of the run); `None` when nothing is pending.
pub fn pending_until(record: &RunRecord) -> Option<Duration> {
    let flows = flows(record);
    let due = obligations(record, &flows)
        .into_iter()
        .filter(|o| o.flow.first_after(o.reconnected).is_none())
        .map(|o| o.reconnected + MEDIA_BOUND);
    let last_reconnected =
        |who: &str| recovered(record, who).last().and_then(|e| e.ended).map(|(t, _)| t);
    let unsettled = flows
        .iter()
        .filter(|(key, flow)| {
            key.subscriber != key.publisher
                && flow.live.len() != 1
                && record
                    .participant(&key.publisher)
                    .is_some_and(|p| p.tracks.contains(&key.source))
        })
        .filter_map(|(key, _)| {
            last_reconnected(&key.subscriber)
                .max(last_reconnected(&key.publisher))
                .or(Some(record.timeline_zero))
        })
        .map(|t| t + MEDIA_BOUND);
    due.chain(unsettled).filter(|t| *t > record.ended).max()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use faultline_sdk::DisconnectReason;

    use super::*;
    use crate::client::MediaCount;
    use crate::record::{EventRecord, FaultRecord, ParticipantRecord};
    use crate::scenario::format::Lane;
    use crate::vocab::TrackSource;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn participant(identity: &str, tracks: Vec<TrackSource>) -> ParticipantRecord {
        ParticipantRecord {
            identity: identity.into(),
            sdk: "faultline".into(),
            build: "faultline-sdk".into(),
            reconnect_bound: Duration::from_secs(30),
            backoff: None,
            joined_sid: String::new(),
            final_sid: String::new(),
            published: Vec::new(),
            tracks,
        }
    }

    /// alice publishes her camera to bob; `events` are (who, at, event); bob's camera
    /// counts come as (at, sid, frames).
    fn record(
        events: Vec<(&str, f64, ClientEvent)>,
        counts: &[(f64, &str, u64)],
        faults: Vec<FaultRecord>,
        ended: f64,
    ) -> RunRecord {
        let mut all: Vec<EventRecord> = events
            .into_iter()
            .map(|(who, at, event)| EventRecord { participant: who.into(), at: secs(at), event })
            .collect();
        all.extend(counts.iter().map(|(at, sid, frames)| EventRecord {
            participant: "bob".into(),
            at: secs(*at),
            event: ClientEvent::Media {
                tracks: vec![MediaCount {
                    from: "alice".into(),
                    source: TrackSource::Camera,
                    sid: (*sid).into(),
                    frames: *frames,
                    decoded: None,
                }],
            },
        }));
        all.sort_by_key(|e| e.at);
        RunRecord {
            scenario: "t".into(),
            description: String::new(),
            file: PathBuf::from("t.toml"),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            participants: vec![
                participant("alice", vec![TrackSource::Camera]),
                participant("bob", Vec::new()),
            ],
            timeline_zero: Duration::ZERO,
            ended: secs(ended),
            faults,
            events: all,
            final_states: vec![
                ("alice".into(), ConnectionState::Connected),
                ("bob".into(), ConnectionState::Connected),
            ],
            verdicts: Vec::new(),
            logs: Vec::new(),
            cluster: Vec::new(),
        }
    }

    fn subscribed(sid: &str) -> ClientEvent {
        ClientEvent::TrackSubscribed {
            from: "alice".into(),
            source: TrackSource::Camera,
            sid: sid.into(),
        }
    }

    /// alice's full reconnect from 1 s to 2 s; bob subscribed to TR_1, then TR_2.
    fn episode() -> Vec<(&'static str, f64, ClientEvent)> {
        vec![
            ("bob", 0.0, subscribed("TR_1")),
            ("alice", 1.0, ClientEvent::Reconnecting),
            ("alice", 2.0, ClientEvent::Reconnected),
            (
                "bob",
                1.1,
                ClientEvent::TrackUnsubscribed {
                    from: "alice".into(),
                    source: TrackSource::Camera,
                    sid: "TR_1".into(),
                },
            ),
            ("bob", 2.2, subscribed("TR_2")),
        ]
    }

    fn broken(record: &RunRecord) -> Vec<String> {
        let mut found = Vec::new();
        violations(record, &mut found);
        found.into_iter().map(|v| format!("{} {}", v.participant, v.what)).collect()
    }

    #[test]
    fn frames_back_within_the_bound_after_the_publishers_episode_hold() {
        let r = record(
            episode(),
            &[(0.5, "TR_1", 10), (0.9, "TR_1", 20), (2.5, "TR_2", 3)],
            vec![],
            20.0,
        );
        assert_eq!(broken(&r), Vec::<String>::new());
        assert_eq!(pending_until(&r), None);
    }

    #[test]
    fn frames_that_never_come_back_break_invariant_6_and_keep_the_run_watching() {
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20), (2.5, "TR_2", 0), (19.0, "TR_2", 0)];
        let r = record(episode(), &counts, vec![], 20.0);
        let found = broken(&r);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("bob bob ← alice's camera") && found[0].contains("never"),
            "{found:?}"
        );
        // Before the bound has passed the verdict is still open: the run keeps watching.
        let early = record(episode(), &counts[..3], vec![], 5.0);
        assert_eq!(broken(&early), Vec::<String>::new());
        assert_eq!(pending_until(&early), Some(secs(12.0)));
    }

    /// A fault record on `target` from `started` to `healed` (seconds), labelled by kind.
    fn fault(kind: &'static str, target: &str, started: f64, healed: Option<f64>) -> FaultRecord {
        FaultRecord {
            index: 0,
            kind,
            label: format!("{kind} → {target}"),
            target: Some(target.into()),
            started: secs(started),
            healed: healed.map(secs),
            refuses_connections: false,
            mutes: None,
        }
    }

    #[test]
    fn a_track_muted_meanwhile_owes_nothing() {
        let mute =
            FaultRecord { mutes: Some(TrackSource::Camera), ..fault("mute", "alice", 1.5, None) };
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20)];
        let r = record(episode(), &counts, vec![mute.clone()], 20.0);
        assert_eq!(broken(&r), Vec::<String>::new());
        // Muting the other track excuses nothing.
        let other = FaultRecord { mutes: Some(TrackSource::Microphone), ..mute };
        let r = record(episode(), &counts, vec![other], 20.0);
        assert_eq!(broken(&r).len(), 1, "{:?}", broken(&r));
    }

    #[test]
    fn a_ghost_subscription_left_at_the_end_breaks_invariant_6() {
        let mut events = episode();
        events.retain(|(_, _, e)| !matches!(e, ClientEvent::TrackUnsubscribed { .. }));
        let r =
            record(events, &[(0.5, "TR_1", 10), (0.9, "TR_1", 20), (2.5, "TR_2", 3)], vec![], 20.0);
        let found = broken(&r);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("exactly one live subscription") && found[0].contains("held 2"),
            "{found:?}"
        );
    }
    #[test]
    fn a_publisher_that_loses_its_session_later_and_never_returns_owes_nothing() {
        // bob's own episode ends at 2 s; alice (whose session the same outage ended) notices
        // only at 4 s, before her frames were due, and never comes back.
        let events = vec![
            ("bob", 0.0, subscribed("TR_1")),
            ("bob", 1.0, ClientEvent::Reconnecting),
            ("bob", 2.0, ClientEvent::Reconnected),
            ("alice", 4.0, ClientEvent::Reconnecting),
            ("alice", 30.0, ClientEvent::Disconnected { reason: DisconnectReason::SignalClose }),
        ];
        let r = record(events, &[(0.5, "TR_1", 10), (0.9, "TR_1", 20)], vec![], 40.0);
        assert_eq!(broken(&r), Vec::<String>::new());
    }

    #[test]
    fn a_fault_cutting_the_other_partys_path_owes_nothing_but_ones_own_does() {
        // alice's path is cut from 0.95 s to 30 s; bob's episode ends at 2 s meanwhile.
        let cut = |target: &str| fault("partition", target, 0.95, Some(30.0));
        let events = vec![
            ("bob", 0.0, subscribed("TR_1")),
            ("bob", 1.0, ClientEvent::Reconnecting),
            ("bob", 2.0, ClientEvent::Reconnected),
        ];
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20), (31.0, "TR_1", 30)];
        let r = record(events.clone(), &counts, vec![cut("alice")], 40.0);
        assert_eq!(broken(&r), Vec::<String>::new());
        // The same cut on bob's own path: his Reconnected came while his media was dead.
        let r = record(events, &counts, vec![cut("bob")], 40.0);
        assert_eq!(broken(&r).len(), 1, "{:?}", broken(&r));
    }

    #[test]
    fn an_outage_noticed_late_still_owes_the_frames_it_stopped() {
        // alice's path goes dark at 0.95 s; she notices at 9 s and is back at 12 s, but the
        // frames she was sending before the dark never come back to bob.
        let dark = FaultRecord {
            refuses_connections: true,
            ..fault("partition", "alice", 0.95, Some(11.5))
        };
        let events = vec![
            ("bob", 0.0, subscribed("TR_1")),
            ("alice", 9.0, ClientEvent::Reconnecting),
            ("alice", 12.0, ClientEvent::Reconnected),
        ];
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20), (30.0, "TR_1", 20)];
        let r = record(events.clone(), &counts, vec![dark.clone()], 30.0);
        assert_eq!(broken(&r).len(), 1, "{:?}", broken(&r));
        // Without the fault in the record the frames stopped too long before the episode
        // to count as received.
        let r = record(events, &counts, vec![], 30.0);
        assert_eq!(broken(&r), Vec::<String>::new());
    }

    #[test]
    fn a_fault_that_hit_the_other_party_during_the_episode_owes_nothing() {
        // bob (the subscriber) is moved to TCP candidates at 1.5 s, during alice's episode:
        // his media path is his own recovery's business.
        let force_tcp = fault("simulate", "bob", 1.5, Some(1.5));
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20), (19.0, "TR_1", 20)];
        let r = record(episode(), &counts, vec![force_tcp.clone()], 20.0);
        assert_eq!(broken(&r), Vec::<String>::new());
        // The same instant fault before the episode began excuses nothing.
        let before = FaultRecord { started: secs(0.95), healed: Some(secs(0.95)), ..force_tcp };
        let r = record(episode(), &counts, vec![before], 20.0);
        assert_eq!(broken(&r).len(), 1, "{:?}", broken(&r));
    }

    #[test]
    fn a_fault_after_the_episode_before_the_frames_came_back_owes_nothing() {
        let partition = fault("partition", "bob", 2.1, None);
        let counts = [(0.5, "TR_1", 10), (0.9, "TR_1", 20), (2.5, "TR_2", 0), (19.0, "TR_2", 0)];
        let r = record(episode(), &counts, vec![partition.clone()], 20.0);
        assert_eq!(broken(&r), Vec::<String>::new());
        // A fault after the frames were due excuses nothing.
        let late = FaultRecord { started: secs(15.0), ..partition };
        let r = record(episode(), &counts, vec![late], 20.0);
        assert_eq!(broken(&r).len(), 1, "{:?}", broken(&r));
    }
}
