//! A scenario's expectations (`[[expect]]`), each judged on a [`RunRecord`] into a [`Verdict`]
//! saying what a correct client does and what this one did.

use std::time::Duration;

use faultline_sdk::ConnectionState;

use crate::client::{ClientEvent, Lifecycle, Observed};
use crate::record::{sequenced, EventRecord, FaultRecord, RunRecord, Verdict};
use crate::scenario::format::{Expectation, FinalState, Scenario};

/// The verdict on `exp`, one of `scenario`'s expectations.
pub fn expectation(scenario: &Scenario, record: &RunRecord, exp: &Expectation) -> Verdict {
    let rel = |at: Duration| format!("{:+.3}s", record.timeline_secs(at));
    let events = |p: &str| -> Vec<&EventRecord> {
        record.events.iter().filter(|e| e.participant == p).collect()
    };
    let hitting =
        |p: &str| -> Vec<&FaultRecord> { record.faults.iter().filter(|f| f.hits(p)).collect() };
    // When the first fault that hit `p` started (the timeline's zero if none did).
    let first_hit =
        |p: &str| hitting(p).into_iter().map(|f| f.started).min().unwrap_or(record.timeline_zero);
    match exp {
        Expectation::Reconnected { participant, within } => {
            let heal = hitting(participant)
                .into_iter()
                .map(|f| f.healed.unwrap_or(f.started))
                .max()
                .unwrap_or(record.timeline_zero);
            let from = first_hit(participant);
            let deadline = heal + *within;
            let what = format!("reconnected: {participant} within {within:?} of the heal");
            let expected = format!(
                "Reconnecting, then Reconnected by {} ({} heal + {within:?})",
                rel(deadline),
                rel(heal)
            );
            let evs = events(participant);
            let reconnecting = evs.iter().find(|e| e.at >= from && opens_episode(&e.event));
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
                    match evs.iter().find(|e| e.at >= r.at && e.event == ClientEvent::Reconnected) {
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
        Expectation::Reconnecting { participant, within } => {
            let from = first_hit(participant);
            let deadline = from + *within;
            let found =
                events(participant).into_iter().find(|e| e.at >= from && opens_episode(&e.event));
            Verdict {
                what: format!("reconnecting: {participant} within {within:?} of the first fault"),
                expected: format!(
                    "Reconnecting by {} ({} fault + {within:?})",
                    rel(deadline),
                    rel(from)
                ),
                seen: match found {
                    Some(e) => format!(
                        "Reconnecting at {} ({:.3}s after the fault)",
                        rel(e.at),
                        e.at.as_secs_f64() - from.as_secs_f64()
                    ),
                    None => format!(
                        "no Reconnecting after the first fault ({})",
                        lifecycle(record, participant)
                    ),
                },
                passed: found.is_some_and(|e| e.at <= deadline),
            }
        }
        Expectation::NoReconnect { participant, until } => {
            let before = until.map(|u| record.timeline_zero + u);
            let found = events(participant)
                .into_iter()
                .find(|e| opens_episode(&e.event) && before.is_none_or(|b| e.at < b));
            Verdict {
                what: format!("no-reconnect: {participant}"),
                expected: match before {
                    Some(b) => {
                        format!("no Reconnecting before {} (the faults go unnoticed)", rel(b))
                    }
                    None => "never Reconnecting (the faults go unnoticed)".into(),
                },
                seen: found.map_or(
                    match before {
                        Some(b) => format!(
                            "no Reconnecting before {} ({})",
                            rel(b),
                            lifecycle(record, participant)
                        ),
                        None => format!("never Reconnecting ({})", lifecycle(record, participant)),
                    },
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
                .find(|e| matches!(e.event, ClientEvent::Disconnected { .. }));
            let (seen, passed) = match found {
                Some(e) => (format!("{:?} at {}", e.event, rel(e.at)), false),
                None => (format!("never Disconnected ({})", lifecycle(record, participant)), true),
            };
            Verdict { what, expected: "never Disconnected".into(), seen, passed }
        }
        Expectation::Disconnected { participant, reason, within } => {
            let from = first_hit(participant);
            let deadline = from + *within;
            let what = format!("disconnected: {participant} within {within:?} of the first fault");
            let expected = format!(
                "exactly one Disconnected{} by {}",
                reason.as_ref().map_or(String::new(), |r| format!(" with reason {r}")),
                rel(deadline)
            );
            let ends: Vec<&EventRecord> = events(participant)
                .into_iter()
                .filter(|e| matches!(e.event, ClientEvent::Disconnected { .. }))
                .collect();
            let (seen, passed) = match ends.as_slice() {
                [] => (format!("no Disconnected ({})", lifecycle(record, participant)), false),
                [one] => {
                    let ClientEvent::Disconnected { reason: got } = &one.event else {
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
                |e| matches!(&e.event, ClientEvent::ParticipantDisconnected { identity, .. } if identity == of),
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
        Expectation::PeerSawLeave { peer, of } => {
            let membership: Vec<&EventRecord> = events(peer)
                .into_iter()
                .filter(|e| match &e.event {
                    ClientEvent::ParticipantConnected { identity, .. }
                    | ClientEvent::ParticipantDisconnected { identity, .. } => identity == of,
                    _ => false,
                })
                .collect();
            let last = membership.last();
            let (seen, passed) = match last.map(|e| (&e.event, e.at)) {
                Some((ClientEvent::ParticipantDisconnected { .. }, at)) => {
                    (format!("{of} left at {}", rel(at)), true)
                }
                Some((_, at)) => (format!("{of} (re)joined at {} and stayed", rel(at)), false),
                None => (format!("{peer} never saw {of} leave"), false),
            };
            Verdict {
                what: format!("peer-saw-leave: {peer} sees {of} leave"),
                expected: format!("ParticipantDisconnected({of}), and no join after it"),
                seen,
                passed,
            }
        }
        Expectation::PeerSawRejoin { peer, of } => {
            let evs = events(peer);
            let left = evs.iter().find(
                |e| matches!(&e.event, ClientEvent::ParticipantDisconnected { identity, .. } if identity == of),
            );
            let back = left.and_then(|l| {
                evs.iter().find(|e| {
                    e.at >= l.at
                        && matches!(&e.event, ClientEvent::ParticipantConnected { identity, .. } if identity == of)
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
                .filter_map(|e| sequenced(&e.event))
                .filter(|(sender, _)| *sender == from)
                .map(|(_, seq)| seq)
                .collect();
            let expected_seq: Vec<u32> = (0..count).collect();
            Verdict {
                what: format!("data-delivered: {from} → {to}"),
                expected: format!("messages 0..{count} from {from}, each exactly once, in order"),
                seen: describe_sequence(&received, count),
                passed: received == expected_seq,
            }
        }
        Expectation::MediaGap { from, to, track, max } => {
            let flows = crate::flow::flows(record);
            let mut worst: Option<(Duration, Duration, &'static str)> = None;
            let mut judged = Vec::new();
            for source in tracks_of(scenario, from, *track) {
                let flow = flows.get(&crate::flow::TrackKey {
                    subscriber: to.clone(),
                    publisher: from.clone(),
                    source,
                });
                let (gap, at) = flow
                    .map_or((record.ended - record.timeline_zero, record.timeline_zero), |f| {
                        f.longest_gap(record.timeline_zero, record.ended)
                    });
                judged.push(source.name());
                if worst.is_none_or(|(g, _, _)| gap > g) {
                    worst = Some((gap, at, source.name()));
                }
            }
            let (gap, at, name) = worst.unwrap_or((Duration::ZERO, record.timeline_zero, "none"));
            Verdict {
                what: format!(
                    "media-gap: {from}'s {} at {to} at most {max:?}",
                    judged.join(" and ")
                ),
                expected: format!("no stop of frames longer than {max:?}"),
                seen: format!(
                    "the longest stop: {:.3}s of the {name} track, from {}",
                    gap.as_secs_f64(),
                    rel(at)
                ),
                passed: gap <= *max,
            }
        }
        Expectation::MediaFlowing { from, to, track } => {
            let flows = crate::flow::flows(record);
            let window = Duration::from_secs(1);
            let mut stopped = Vec::new();
            let mut judged = Vec::new();
            for source in tracks_of(scenario, from, *track) {
                judged.push(source.name());
                let flowing = flows
                    .get(&crate::flow::TrackKey {
                        subscriber: to.clone(),
                        publisher: from.clone(),
                        source,
                    })
                    .is_some_and(|f| f.flowing_at(record.ended, window));
                if !flowing {
                    let last = flows
                        .get(&crate::flow::TrackKey {
                            subscriber: to.clone(),
                            publisher: from.clone(),
                            source,
                        })
                        .and_then(|f| f.advances.last().copied());
                    let why = unmuted_while_republishing(record, from, source)
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default();
                    stopped.push(format!(
                        "{}: last frames at {}{why}",
                        source.name(),
                        last.map_or("never".to_owned(), rel)
                    ));
                }
            }
            Verdict {
                what: format!("media-flowing: {from}'s {} at {to}", judged.join(" and ")),
                expected: format!("frames arriving within the last {window:?} of the run"),
                seen: if stopped.is_empty() { "flowing".into() } else { stopped.join("; ") },
                passed: stopped.is_empty(),
            }
        }
        Expectation::TrackRepublished { participant, track } => {
            let sids = crate::flow::published_sids(record, participant);
            let mut missing = Vec::new();
            let mut seen = Vec::new();
            for source in tracks_of(scenario, participant, *track) {
                let list = sids.get(&source).cloned().unwrap_or_default();
                seen.push(format!("{}: {}", source.name(), list.join(" → ")));
                if list.len() < 2 {
                    missing.push(source.name());
                }
            }
            Verdict {
                what: format!("track-republished: {participant}"),
                expected: "each track published again with a new sid".into(),
                seen: seen.join("; "),
                passed: missing.is_empty(),
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

/// The sources of `who`'s tracks an expectation is about: `track` alone, or all it publishes.
fn tracks_of(
    scenario: &Scenario,
    who: &str,
    track: Option<crate::vocab::TrackSpec>,
) -> Vec<crate::vocab::TrackSource> {
    match track {
        Some(t) => vec![t.source()],
        None => scenario.tracks_of(who).iter().map(|t| t.source()).collect(),
    }
}

/// Whether `event` starts a reconnect episode (`Reconnecting`, or livekit-client's
/// `SignalReconnecting`).
fn opens_episode(event: &ClientEvent) -> bool {
    event.lifecycle().is_some_and(Lifecycle::opens_episode)
}

/// Why a track of `publisher`'s may have stopped for good, when the record shows it: the
/// scenario unmuted it while the SDK was publishing it again — after the `Reconnecting` that
/// began the reconnect and before the server accepted the track in the new session. An SDK
/// that sent the AddTrackRequest muted and does not tell the server of the unmute once it
/// has the new sid leaves the track muted on the server, and its peers never see it again.
pub(super) fn unmuted_while_republishing(
    record: &RunRecord,
    publisher: &str,
    source: crate::vocab::TrackSource,
) -> Option<String> {
    let rel = |at: Duration| format!("{:+.3}s", record.timeline_secs(at));
    let unmuted = record
        .faults
        .iter()
        .filter(|f| f.mutes == Some(source) && f.target.as_deref() == Some(publisher))
        .filter_map(|f| f.healed)
        .max()?;
    let events: Vec<&EventRecord> = record.events_of(publisher).collect();
    let published: Vec<Duration> = events
        .iter()
        .filter(|e| {
            matches!(&e.event, ClientEvent::LocalTrackPublished { source: s, .. } if *s == source)
        })
        .map(|e| e.at)
        .collect();
    let accepted = published.last().copied().filter(|at| *at > unmuted)?;
    let began = events
        .iter()
        .filter(|e| e.at < unmuted && opens_episode(&e.event))
        .map(|e| e.at)
        .next_back()
        .filter(|began| published.first().is_some_and(|first| first < began))?;
    Some(format!(
        "{publisher} unmuted it at {} while publishing it again: after the Reconnecting at {} \
         and before the server accepted it at {}",
        rel(unmuted),
        rel(began),
        rel(accepted)
    ))
}

/// The participant's lifecycle events, briefly, for a verdict's "seen".
fn lifecycle(record: &RunRecord, participant: &str) -> String {
    let parts: Vec<String> = record
        .events
        .iter()
        .filter(|e| e.participant == participant && e.event.lifecycle().is_some())
        .map(|e| {
            let name = match &e.event {
                ClientEvent::Disconnected { reason } => {
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

/// The first ten of `numbers`, then how many more: `1, 2, 3 (+4 more)`.
pub fn short_list<T: std::fmt::Display>(numbers: &[T]) -> String {
    let shown: Vec<String> = numbers.iter().take(10).map(ToString::to_string).collect();
    let more = numbers.len().saturating_sub(10);
    if more > 0 {
        format!("{} (+{more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::describe_sequence;

    #[test]
    fn a_sequence_is_described_by_what_is_wrong_with_it() {
        assert_eq!(describe_sequence(&[0, 1, 2], 3), "all 3 in order, once each");
        assert_eq!(describe_sequence(&[0, 2, 2], 3), "3 received: missing 1; duplicated 2");
        assert_eq!(describe_sequence(&[1, 0], 2), "2 received: out of order");
    }
}
