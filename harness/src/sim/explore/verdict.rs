//! [`judge`]: DESIGN.md's invariants on a recorded [`Run`], as far as each is observable
//! from the events, the schedule and the workload.
//!
//! 1–2. Per room, [`crate::check::check_invariants`] on its events up to its final state.
//! 3. Liveness: no room still `Reconnecting` at the bound after the faults stopped.
//! 4. Exhaustion: an episode that ends in `Disconnected` lasts at most the policy's
//!    [`RoomOptions::reconnect_bound`]. When the room's first episode runs entirely under a
//!    two-way partition from the server (every attempt must fail, and fails at once), it lasts
//!    the policy's drawn delays — replayed from the room's seed — plus at most
//!    [`EXHAUSTION_SLACK`]: fewer attempts would end sooner, more would end later.
//! 5. Reliable data: every receiver gets each sender's packets at most once and in order;
//!    and a packet published after the receiver joined, by a sender that ended `Connected`
//!    (any outage it had ended in `Reconnected`), arrives if the receiver kept its session
//!    to the end (its own outages, if any, ended in resumes). A receiver that reconnected
//!    fully is a new session: it cannot get what was sent while it was away, and — as
//!    exploration showed — may miss packets sent just after its `Reconnected`, before the
//!    server's side of its new data channel is open. A *sender* is held to it whether its
//!    outage ended in a resume or a full reconnect.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_sdk::{ConnectionState, RoomEvent, RoomOptions};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{Published, Run};
use crate::check::{self, Recorded};
use crate::sim::schedule::Fault;
use crate::sim::SERVER_HOST;

/// How much longer than its drawn delays an exhausted episode under a partition may last:
/// the first (resume) attempt lets go of the dead signalling socket first.
pub const EXHAUSTION_SLACK: Duration = Duration::from_secs(2);

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// DESIGN.md's number for it (1–5).
    pub invariant: u8,
    /// The participant whose room broke it.
    pub participant: String,
    /// What happened, against what was expected.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invariant {} ({}): {}", self.invariant, self.participant, self.what)
    }
}

/// One reconnect episode of a room.
struct Episode {
    began: Duration,
    /// When and how it ended: `Some(true)` Reconnected, `Some(false)` Disconnected.
    ended: Option<(Duration, bool)>,
}

/// Every invariant `run` breaks (empty: it passed).
pub fn judge(run: &Run) -> Vec<Violation> {
    let options = RoomOptions::default();
    let mut violations = Vec::new();
    let mut add = |invariant, participant: &str, what: String| {
        violations.push(Violation { invariant, participant: participant.to_owned(), what })
    };
    for identity in &run.stuck {
        add(
            3,
            identity,
            format!(
                "still Reconnecting {:?} after the faults stopped (+{:.3}s); the bound is {:?}",
                run.bound,
                run.faults_stopped.as_secs_f64(),
                run.bound
            ),
        );
    }
    for p in &run.participants {
        let Some(final_state) = p.final_state else { continue };
        let events = run.events_of(&p.identity);
        let recorded: Vec<Recorded> =
            events.iter().map(|e| Recorded { at: e.at, event: e.event.clone() }).collect();
        if let Err(e) = check::check_invariants(&recorded, final_state) {
            let invariant = match e.violation {
                check::Violation::ReconnectedWithoutReconnecting { .. }
                | check::Violation::ReconnectingTwice { .. } => 1,
                check::Violation::EventAfterDisconnected { .. }
                | check::Violation::StateMismatch { .. } => 2,
                check::Violation::StuckReconnecting => 3,
            };
            add(invariant, &p.identity, e.violation.to_string());
        }
        let episodes = episodes(&recorded);
        for episode in &episodes {
            if let Some((end, false)) = episode.ended {
                let lasted = end - episode.began;
                let cap = options.reconnect_bound() + EXHAUSTION_SLACK;
                if lasted > cap {
                    add(4, &p.identity, format!(
                        "the episode from +{:.3}s ran {lasted:?} before Disconnected; every attempt at its caps and timeouts allows {cap:?}",
                        episode.began.as_secs_f64()
                    ));
                }
            }
        }
        if let Some(first) = episodes.first() {
            if let Some((end, false)) = first.ended {
                if partitioned_throughout(run, &p.identity, first.began, end) {
                    let mut rng = SmallRng::seed_from_u64(p.rng_seed);
                    let policy = &options.reconnect;
                    let delays: Duration =
                        (1..=policy.attempts).map(|a| policy.delay(a, &mut rng)).sum();
                    let lasted = end - first.began;
                    if lasted < delays || lasted > delays + EXHAUSTION_SLACK {
                        add(4, &p.identity, format!(
                            "under a partition every one of the {} attempts fails at once, so the episode should last the drawn delays {delays:?} (+ at most {EXHAUSTION_SLACK:?}); it lasted {lasted:?}",
                            policy.attempts
                        ));
                    }
                }
            }
        }
    }
    data(run, &mut add);
    violations
}

fn episodes(events: &[Recorded]) -> Vec<Episode> {
    let mut out: Vec<Episode> = Vec::new();
    for r in events {
        match r.event {
            RoomEvent::Reconnecting => out.push(Episode { began: r.at, ended: None }),
            RoomEvent::Reconnected | RoomEvent::Disconnected { .. } => {
                if let Some(open) = out.last_mut().filter(|e| e.ended.is_none()) {
                    open.ended = Some((r.at, r.event == RoomEvent::Reconnected));
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether the link between `identity` and the server was partitioned both ways from before
/// `from` until after `to`, by the schedule.
fn partitioned_throughout(run: &Run, identity: &str, from: Duration, to: Duration) -> bool {
    let is_link = |a: &str, b: &str| {
        (a == identity && b == SERVER_HOST) || (a == SERVER_HOST && b == identity)
    };
    let mut cut_since = None;
    for step in &run.case.schedule.steps {
        match &step.fault {
            Fault::Partition { a, b, oneway: false } if is_link(a, b) => {
                cut_since = cut_since.or(Some(step.at()))
            }
            Fault::Repair { a, b, .. } if is_link(a, b) => {
                if cut_since.is_some_and(|since| since < from) && step.at() > to {
                    return true;
                }
                cut_since = None;
            }
            _ => {}
        }
    }
    cut_since.is_some_and(|since| since < from)
}

/// Invariant 5 over every (receiver, sender) pair.
fn data(run: &Run, add: &mut impl FnMut(u8, &str, String)) {
    let finals: BTreeMap<&str, Option<ConnectionState>> =
        run.participants.iter().map(|p| (p.identity.as_str(), p.final_state)).collect();
    for receiver in &run.participants {
        if receiver.final_state.is_none() {
            continue;
        }
        let events = run.events_of(&receiver.identity);
        // When the receiver joined, if it ended Connected in the session it joined with
        // (its sid at every publish is its final one).
        let lifecycle: Vec<_> = events.iter().filter(|e| e.event.is_lifecycle()).collect();
        let same_session = receiver.published.iter().all(|p| p.sid == receiver.final_sid);
        let stable_from = match (lifecycle.first(), lifecycle.last()) {
            (Some(joined), Some(last))
                if joined.event == RoomEvent::Connected
                    && matches!(last.event, RoomEvent::Connected | RoomEvent::Reconnected)
                    && same_session =>
            {
                Some(joined.at)
            }
            _ => None,
        };
        let mut received: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for entry in &events {
            let RoomEvent::DataReceived { payload, .. } = &entry.event else { continue };
            let text = std::str::from_utf8(payload).unwrap_or_default();
            let Some((sender, n)) = text.split_once(':') else { continue };
            let Ok(n) = n.parse::<u32>() else { continue };
            let Some((sender, _)) = finals.get_key_value(sender) else { continue };
            received.entry(sender).or_default().push(n);
        }
        for sender in &run.participants {
            if sender.identity == receiver.identity {
                continue;
            }
            let got = received.get(sender.identity.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(pair) = got.windows(2).find(|w| w[1] <= w[0]) {
                add(5, &receiver.identity, format!(
                    "received {}'s packet #{} after #{}: reliable data must arrive exactly once, in order; received {got:?}",
                    sender.identity, pair[1], pair[0]
                ));
                continue;
            }
            let (Some(since), Some(ConnectionState::Connected)) = (stable_from, sender.final_state)
            else {
                continue;
            };
            let missing: Vec<&Published> = sender
                .published
                .iter()
                .filter(|p| p.at > since && got.binary_search(&p.counter).is_err())
                .collect();
            if let Some(first) = missing.first() {
                let how = if first.sid == sender.final_sid {
                    "in the session it ended in (resumes only)"
                } else {
                    "in an earlier session (its outage ended in a full reconnect)"
                };
                add(5, &receiver.identity, format!(
                    "never received {}'s reliable packet #{} published at +{:.3}s {how} (and {} more), though it kept the session it joined at +{:.3}s to the end and {} ended Connected",
                    sender.identity,
                    first.counter,
                    first.at.as_secs_f64(),
                    missing.len() - 1,
                    since.as_secs_f64(),
                    sender.identity
                ));
            }
        }
    }
}
