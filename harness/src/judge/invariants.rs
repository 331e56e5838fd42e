//! DESIGN.md's invariants over a [`RunRecord`], as far as each is observable from the record,
//! whatever lane wrote it and whatever client it recorded.
//!
//! 1–2. [`lifecycle`], per participant, on its events and its final state: `Reconnected`
//!    only after a `Reconnecting` of the same episode, one `Reconnecting` per episode, at
//!    most one `Disconnected` and nothing after it, `connection_state()` agreeing with the
//!    last lifecycle event.
//! 3. Liveness: every episode ends within the participant's
//!    [`ParticipantRecord::reconnect_bound`] of its `Reconnecting`. A participant still
//!    `Reconnecting` when the record ends broke it — the lanes keep watching while an episode
//!    may still end within its bound, so by then the bound has passed — and so did an episode
//!    that came back (`Reconnected`) later than its bound.
//! 4. Exhaustion: an episode that ends in `Disconnected` lasts at most the bound. When the
//!    participant's backoff is replayable ([`ParticipantRecord::backoff`]) and its first
//!    episode runs entirely under a fault that refuses its connections
//!    ([`FaultRecord::refuses_connections`]: every attempt must fail, and fails at once), the
//!    episode lasts the policy's drawn delays plus at most [`EPISODE_SLACK`]: fewer attempts
//!    would end sooner, more would end later.
//! 5. Reliable data, for the sequenced data the harness published
//!    ([`crate::record::sequenced`]): every receiver gets each sender's packets at most once
//!    and in order; and a packet published by a sender that ended `Connected` (any outage it
//!    had ended in `Reconnected`) arrives if the receiver ended connected and the packet was
//!    published while the receiver's final session already existed — after it joined, if its
//!    sid never changed (its outages, if any, ended in resumes), or else after its last
//!    `Reconnected`. A receiver that reconnected fully is a new session and cannot get what
//!    was sent while it was away; what is sent to it while its new data channels are still
//!    opening, the server keeps and delivers once they are open (pkg/rtc/participant.go
//!    `replayJoiningReliableMessages`, which the simulated server models too). A *sender* is
//!    held to it whether its outage ended in a resume or a full reconnect.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_sdk::ConnectionState;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::client::{Lifecycle, Observed};
use crate::record::{
    sequenced, EventRecord, FaultRecord, ParticipantRecord, Published, RunRecord, EPISODE_SLACK,
};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// DESIGN.md's number for it (1–5).
    pub invariant: u8,
    /// The participant whose client broke it (empty in a live log of one room).
    pub participant: String,
    /// What happened, against what was expected.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.participant.is_empty() {
            write!(f, "invariant {}: {}", self.invariant, self.what)
        } else {
            write!(f, "invariant {} ({}): {}", self.invariant, self.participant, self.what)
        }
    }
}

/// Every invariant `record` breaks (empty: it passed). Participants that never joined (no
/// final state) are not judged.
pub fn violations(record: &RunRecord) -> Vec<Violation> {
    let mut found = Vec::new();
    for p in &record.participants {
        let Some(final_state) = record.final_state(&p.identity) else { continue };
        let mut add = |invariant, what: String| {
            found.push(Violation { invariant, participant: p.identity.clone(), what })
        };
        if let Some((invariant, what)) = order(record.events_of(&p.identity), final_state) {
            add(invariant, what);
        }
        let episodes = episodes(record.events_of(&p.identity));
        bounds(record, p, &episodes, final_state, &mut add);
        drawn_delays(record, p, &episodes, &mut add);
    }
    data(record, &mut found);
    super::media::violations(record, &mut found);
    found
}

/// Invariants 1–2 for one room's events, given its `connection_state()` now, and 3 as far
/// as a log without a bound can tell (it must not be left `Reconnecting`): the first broken.
pub fn lifecycle<'a>(
    participant: &str,
    events: impl IntoIterator<Item = &'a EventRecord>,
    final_state: ConnectionState,
) -> Option<Violation> {
    let (invariant, what) = order(events, final_state).or_else(|| {
        (final_state == ConnectionState::Reconnecting)
            .then(|| (3, "the room is still Reconnecting: an episode never ended".to_owned()))
    })?;
    Some(Violation { invariant, participant: participant.to_owned(), what })
}

/// Invariants 1–2: the first broken, as (invariant, what).
fn order<'a>(
    events: impl IntoIterator<Item = &'a EventRecord>,
    final_state: ConnectionState,
) -> Option<(u8, String)> {
    let mut in_episode = false;
    let mut said_reconnecting = false;
    let mut disconnected = false;
    let mut last_state = None;
    for recorded in events {
        let at = recorded.at.as_secs_f64();
        if disconnected {
            return Some((2, format!("{:?} at +{at:.3}s, after Disconnected", recorded.event)));
        }
        let Some(step) = recorded.event.lifecycle() else { continue };
        match step {
            Lifecycle::Reconnecting if said_reconnecting => {
                return Some((1, format!("a second Reconnecting at +{at:.3}s within one episode")))
            }
            Lifecycle::Reconnecting => {
                in_episode = true;
                said_reconnecting = true;
            }
            // Opens an episode (livekit-client's signalling-only resume); inside one it is a
            // later resume attempt, nothing more.
            Lifecycle::SignalReconnecting => in_episode = true,
            Lifecycle::Reconnected if !in_episode => {
                return Some((
                    1,
                    format!("Reconnected at +{at:.3}s without a Reconnecting in the same episode"),
                ))
            }
            Lifecycle::Reconnected => {
                in_episode = false;
                said_reconnecting = false;
            }
            Lifecycle::Disconnected => disconnected = true,
            Lifecycle::Connected => {}
        }
        last_state = Some(step.resulting_state());
    }
    match last_state {
        Some(expected) if expected != final_state => Some((
            2,
            format!(
                "connection_state() is {final_state:?} but the last lifecycle event implies {expected:?}"
            ),
        )),
        _ => None,
    }
}

/// When `participant`'s open episode began, if an episode is open at the end of `events`.
pub fn reconnecting_since(events: &[EventRecord], participant: &str) -> Option<Duration> {
    episodes(events.iter().filter(|e| e.participant == participant))
        .last()
        .filter(|episode| episode.ended.is_none())
        .map(|episode| episode.began)
}

/// One reconnect episode of a room.
pub(super) struct Episode {
    pub(super) began: Duration,
    /// When and how it ended: `true` Reconnected, `false` Disconnected.
    pub(super) ended: Option<(Duration, bool)>,
}

pub(super) fn episodes<'a>(events: impl IntoIterator<Item = &'a EventRecord>) -> Vec<Episode> {
    let mut out: Vec<Episode> = Vec::new();
    for r in events {
        let open = out.last_mut().filter(|e| e.ended.is_none());
        match (r.event.lifecycle(), open) {
            (Some(step), None) if step.opens_episode() => {
                out.push(Episode { began: r.at, ended: None });
            }
            (Some(step @ (Lifecycle::Reconnected | Lifecycle::Disconnected)), Some(open)) => {
                open.ended = Some((r.at, step == Lifecycle::Reconnected));
            }
            _ => {}
        }
    }
    out
}

/// Invariants 3 and 4 against the participant's bound.
fn bounds(
    record: &RunRecord,
    p: &ParticipantRecord,
    episodes: &[Episode],
    final_state: ConnectionState,
    add: &mut impl FnMut(u8, String),
) {
    let bound = p.reconnect_bound;
    for episode in episodes {
        let began = episode.began.as_secs_f64();
        match episode.ended {
            None if final_state == ConnectionState::Reconnecting => {
                let lasted = record.ended.saturating_sub(episode.began);
                let early = if lasted < bound {
                    "; the run stopped before the bound passed, so it may yet have ended: the \
                     lane must watch longer"
                } else {
                    ""
                };
                add(3, format!(
                    "still Reconnecting when the run ended, {lasted:?} after the episode began at +{began:.3}s; its bound is {bound:?}{early}"
                ));
            }
            None => {}
            Some((end, true)) if end - episode.began > bound => add(3, format!(
                "the episode from +{began:.3}s ran {:?} before Reconnected; its bound is {bound:?}",
                end - episode.began
            )),
            Some((end, false)) if end - episode.began > bound => add(4, format!(
                "the episode from +{began:.3}s ran {:?} before Disconnected; every attempt at its caps and timeouts allows {bound:?}",
                end - episode.began
            )),
            Some(_) => {}
        }
    }
}

/// Invariant 4's replay: the first episode, ended in `Disconnected` under a fault that
/// refused every connection, lasts the drawn delays (+ at most [`EPISODE_SLACK`]).
fn drawn_delays(
    record: &RunRecord,
    p: &ParticipantRecord,
    episodes: &[Episode],
    add: &mut impl FnMut(u8, String),
) {
    let (Some(backoff), Some(first)) = (&p.backoff, episodes.first()) else { return };
    let Some((end, false)) = first.ended else { return };
    let refused_throughout = |f: &FaultRecord| {
        f.refuses_connections
            && f.hits(&p.identity)
            && f.started < first.began
            && f.healed.is_none_or(|h| h > end)
    };
    if !record.faults.iter().any(refused_throughout) {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(backoff.rng_seed);
    let policy = &backoff.policy;
    let delays: Duration = (1..=policy.attempts).map(|a| policy.delay(a, &mut rng)).sum();
    let lasted = end - first.began;
    if lasted < delays || lasted > delays + EPISODE_SLACK {
        add(4, format!(
            "with every connection refused, each of the {} attempts fails at once, so the episode should last the drawn delays {delays:?} (+ at most {EPISODE_SLACK:?}); it lasted {lasted:?}",
            policy.attempts
        ));
    }
}

/// Invariant 5 over every (receiver, sender) pair.
fn data(record: &RunRecord, found: &mut Vec<Violation>) {
    for receiver in &record.participants {
        if record.final_state(&receiver.identity).is_none() {
            continue;
        }
        let mut add = |what: String| {
            found.push(Violation { invariant: 5, participant: receiver.identity.clone(), what })
        };
        let events: Vec<&EventRecord> = record.events_of(&receiver.identity).collect();
        // Since when the receiver's final session existed, if it ended connected: since it
        // joined if that is the session it joined with, else since its last Reconnected.
        let lifecycle: Vec<(Lifecycle, Duration)> =
            events.iter().filter_map(|e| Some((e.event.lifecycle()?, e.at))).collect();
        let stable_from = match (lifecycle.first(), lifecycle.last()) {
            (Some((Lifecycle::Connected, joined)), Some((Lifecycle::Connected, _)))
            | (Some((Lifecycle::Connected, joined)), Some((Lifecycle::Reconnected, _)))
                if receiver.joined_sid == receiver.final_sid =>
            {
                Some(*joined)
            }
            (Some((Lifecycle::Connected, _)), Some((Lifecycle::Reconnected, back))) => Some(*back),
            _ => None,
        };
        let mut received: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for e in &events {
            if let Some((sender, seq)) = sequenced(&e.event) {
                received.entry(sender).or_default().push(seq);
            }
        }
        for sender in &record.participants {
            if sender.identity == receiver.identity {
                continue;
            }
            let got = received.get(sender.identity.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(pair) = got.windows(2).find(|w| w[1] <= w[0]) {
                add(format!(
                    "received {}'s packet #{} after #{}: reliable data must arrive exactly once, in order; received {got:?}",
                    sender.identity, pair[1], pair[0]
                ));
                continue;
            }
            let (Some(since), Some(ConnectionState::Connected)) =
                (stable_from, record.final_state(&sender.identity))
            else {
                continue;
            };
            let missing: Vec<&Published> = sender
                .published
                .iter()
                .filter(|p| p.at > since && got.binary_search(&p.seq).is_err())
                .collect();
            if let Some(first) = missing.first() {
                let how = if first.sid == sender.final_sid {
                    "in the session it ended in (resumes only)"
                } else {
                    "in an earlier session (its outage ended in a full reconnect)"
                };
                let session = if receiver.joined_sid == receiver.final_sid {
                    "it kept the session it joined at"
                } else {
                    "its final session was up (Reconnected) at"
                };
                add(format!(
                    "never received {}'s reliable packet #{} published at +{:.3}s {how} (and {} more), though {session} +{:.3}s to the end and {} ended Connected",
                    sender.identity,
                    first.seq,
                    first.at.as_secs_f64(),
                    missing.len() - 1,
                    since.as_secs_f64(),
                    sender.identity
                ));
            }
        }
    }
}
