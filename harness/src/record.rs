//! The one record of a run: who took part (identity, which SDK, the bound within which each
//! of its reconnect episodes must end), every fault with when it started and healed, and every
//! client-visible event with its time, in faultline's shared vocabulary ([`ClientEvent`]).
//!
//! Every lane writes one — the real lane, the sim lane and the explorer — whatever client is
//! under test; [`crate::judge`] judges it and [`crate::report`] writes it out as a trace or an
//! HTML timeline. [`EventRecord`] is the one timestamped event type: records hold
//! `EventRecord<ClientEvent>`, and a live [`crate::event_log::EventLog`] keeps its SDK's own
//! events in the same shape until it is judged.
//!
//! All times are measured from the start of the run (before anyone joined);
//! [`RunRecord::timeline_zero`] is the moment everyone was connected, from which a scenario's
//! `at` values count.
//!
//! Reliable data the harness publishes for invariant 5 is *sequenced*: topic [`DATA_TOPIC`],
//! payload `<identity>:<n>` ([`data_payload`]), so a receiver's [`sequenced`] events say who
//! sent which packet even when the receiving client does not know the sender yet.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use faultline_sdk::{ConnectionState, ReconnectPolicy, RoomOptions, TrackSource};

use crate::client::{ClientEvent, ClientOptions, Sdk};
use crate::cluster::NodeChange;
use crate::scenario::format::Lane;

/// The topic of the harness's sequenced reliable data.
pub const DATA_TOPIC: &str = "faultline-seq";

/// What a faultline-sdk reconnect episode may take beyond
/// [`RoomOptions::reconnect_bound`] (every delay at its cap, every attempt using all of its
/// connect, join and peer-connection timeouts): its first attempt lets go of the old session's
/// signalling socket first (up to 1 s), plus scheduling margin.
pub const EPISODE_SLACK: Duration = Duration::from_secs(2);

/// Everything a run saw.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The scenario's name (for the explorer: its case).
    pub scenario: String,
    /// What it models.
    pub description: String,
    /// The scenario file.
    pub file: PathBuf,
    /// Where it ran.
    pub lane: Lane,
    /// The seed of the run's randomness (media loss, backoff jitter).
    pub seed: u64,
    /// The room the participants joined.
    pub room: String,
    /// The participants, in the order of the file.
    pub participants: Vec<ParticipantRecord>,
    /// When every participant was connected: the zero of the fault timeline.
    pub timeline_zero: Duration,
    /// When recording stopped.
    pub ended: Duration,
    /// The faults, in the order they started.
    pub faults: Vec<FaultRecord>,
    /// Every event of every participant, in the order they arrived.
    pub events: Vec<EventRecord>,
    /// Each participant's `connection_state()` when recording stopped (none for one that
    /// never joined).
    pub final_states: Vec<(String, ConnectionState)>,
    /// The verdict on each expectation and on the invariants, in that order.
    pub verdicts: Vec<Verdict>,
    /// Where the logs of the programs the run used are (name, path).
    pub logs: Vec<(String, PathBuf)>,
    /// What happened to the cluster's nodes, Redis, routes and the room's placement, in
    /// order (empty for a run on one server).
    pub cluster: Vec<ClusterRecord>,
}

/// One change in a cluster run, and when (from the start of the run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    /// When it happened.
    pub at: Duration,
    /// What changed.
    pub change: NodeChange,
}

/// One participant: who, on which SDK, and what the judge needs to know about its client.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantRecord {
    /// Its identity.
    pub identity: String,
    /// The SDK under test (`faultline` for faultline-sdk).
    pub sdk: String,
    /// The exact build that ran ([`crate::client::Client::build`]); the SDK's name until the
    /// client has joined.
    pub build: String,
    /// The longest one of its reconnect episodes may legitimately last: a room still
    /// `Reconnecting` this long after its episode began is stuck (invariant 3), and one that
    /// gives up later broke exhaustion (invariant 4). Lanes keep watching until it passes.
    pub reconnect_bound: Duration,
    /// Its backoff, when the harness can replay the delays it draws.
    pub backoff: Option<Backoff>,
    /// Its session id (sid) when it joined; empty if unknown.
    pub joined_sid: String,
    /// Its session id when recording stopped (a full reconnect changes it); empty if unknown.
    pub final_sid: String,
    /// The sequenced reliable data it published successfully, in order.
    pub published: Vec<Published>,
    /// The sources of the media tracks it publishes (none unless the scenario says).
    pub tracks: Vec<crate::vocab::TrackSource>,
}

impl ParticipantRecord {
    /// A faultline-sdk participant joining with `options`: its bound is the policy's
    /// [`RoomOptions::reconnect_bound`] plus [`EPISODE_SLACK`], and its backoff replays from
    /// its seed when the options fix one.
    pub fn faultline(identity: &str, options: &RoomOptions) -> Self {
        Self {
            identity: identity.to_owned(),
            sdk: "faultline".into(),
            build: crate::client::FAULTLINE_BUILD.to_owned(),
            reconnect_bound: options.reconnect_bound() + EPISODE_SLACK,
            backoff: options
                .rng_seed
                .map(|rng_seed| Backoff { policy: options.reconnect.clone(), rng_seed }),
            joined_sid: String::new(),
            final_sid: String::new(),
            published: Vec::new(),
            tracks: Vec::new(),
        }
    }
}

impl ParticipantRecord {
    /// A participant of another SDK, connected with `options`: its bound is the SDK's
    /// ([`Sdk::reconnect_bound`]) plus [`EPISODE_SLACK`]; its backoff cannot be replayed.
    pub fn external(identity: &str, sdk: Sdk, options: &ClientOptions) -> Self {
        Self {
            identity: identity.to_owned(),
            sdk: sdk.name().into(),
            build: sdk.name().into(),
            reconnect_bound: sdk.reconnect_bound(options) + EPISODE_SLACK,
            backoff: None,
            joined_sid: String::new(),
            final_sid: String::new(),
            published: Vec::new(),
            tracks: Vec::new(),
        }
    }
}

/// A backoff the judge can replay: faultline-sdk draws an episode's delays from a `SmallRng`
/// seeded with the room's seed, in attempt order, with [`ReconnectPolicy::delay`].
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The reconnect policy.
    pub policy: ReconnectPolicy,
    /// The room's RNG seed.
    pub rng_seed: u64,
}

/// One sequenced reliable packet a participant published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its sequence number.
    pub seq: u32,
    /// When `publish_data` was called.
    pub at: Duration,
    /// The publisher's session (sid) then.
    pub sid: String,
}

/// One fault as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRecord {
    /// Its position in the scenario file's `[[fault]]` list or the case's schedule (0-based).
    pub index: usize,
    /// Its `type`.
    pub kind: &'static str,
    /// A one-line description with its settings.
    pub label: String,
    /// The participant it hit; `None` for the server or the room.
    pub target: Option<String>,
    /// When it took effect.
    pub started: Duration,
    /// When it was healed; `None` if it lasted to the end.
    pub healed: Option<Duration>,
    /// While it lasts, every connection its target opens to the server fails at once (a
    /// two-way cut that refuses connections), so an episode under it fails every attempt.
    pub refuses_connections: bool,
    /// The track of its target's that it mutes while it lasts (a `mute`), if any: the media
    /// invariant owes no frames of that track meanwhile.
    pub mutes: Option<TrackSource>,
}

impl FaultRecord {
    /// Whether it hit `identity` (faults of the server or room hit everyone).
    pub fn hits(&self, identity: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == identity)
    }
}

/// One event one participant's client reported, and when. Records hold the shared
/// vocabulary; a live log holds its SDK's own events (`E`) until it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord<E = ClientEvent> {
    /// Whose client (empty in a live log of one room).
    pub participant: String,
    /// When it arrived.
    pub at: Duration,
    /// The event.
    pub event: E,
}

/// The verdict on one expectation or invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was judged (`reconnected alice within 8s`, `invariants of alice`).
    pub what: String,
    /// What a correct client does.
    pub expected: String,
    /// What this one did.
    pub seen: String,
    /// Whether the two agree.
    pub passed: bool,
}

/// The payload of sequenced packet `seq` from `identity`.
pub fn data_payload(identity: &str, seq: u32) -> Vec<u8> {
    format!("{identity}:{seq}").into_bytes()
}

/// The sender (as the lane named it) and sequence number of a sequenced packet; `None` for
/// any other event.
pub fn sequenced(event: &ClientEvent) -> Option<(&str, u32)> {
    let ClientEvent::DataReceived { payload, topic: Some(topic), .. } = event else {
        return None;
    };
    if topic != DATA_TOPIC {
        return None;
    }
    let (sender, seq) = std::str::from_utf8(payload).ok()?.rsplit_once(':')?;
    Some((sender, seq.parse().ok()?))
}

impl RunRecord {
    /// Whether every verdict passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// The participant named `identity`.
    pub fn participant(&self, identity: &str) -> Option<&ParticipantRecord> {
        self.participants.iter().find(|p| p.identity == identity)
    }

    /// `identity`'s events, in order.
    pub fn events_of<'a>(&'a self, identity: &'a str) -> impl Iterator<Item = &'a EventRecord> {
        self.events.iter().filter(move |e| e.participant == identity)
    }

    /// `identity`'s state when recording stopped.
    pub fn final_state(&self, identity: &str) -> Option<ConnectionState> {
        self.final_states.iter().find(|(p, _)| p == identity).map(|(_, s)| *s)
    }

    /// A time of the run as the report shows it: seconds from the timeline's zero (negative
    /// while the participants were joining).
    pub fn timeline_secs(&self, at: Duration) -> f64 {
        at.as_secs_f64() - self.timeline_zero.as_secs_f64()
    }

    /// Each SDK build that ran, with who ran it, in the participants' order.
    pub fn builds(&self) -> Vec<(&str, Vec<&str>)> {
        let mut builds: Vec<(&str, Vec<&str>)> = Vec::new();
        for p in &self.participants {
            match builds.iter_mut().find(|(build, _)| *build == p.build) {
                Some((_, who)) => who.push(&p.identity),
                None => builds.push((&p.build, vec![&p.identity])),
            }
        }
        builds
    }

    /// A plain-text account: the builds that ran, each verdict with expected and seen, the
    /// faults, each participant's trace and where the logs are. What a failing test prints.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let outcome = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "scenario `{}` ({}) on the {} lane, seed {}, room {}: {outcome}",
            self.scenario,
            self.file.display(),
            self.lane,
            self.seed,
            self.room
        );
        for (build, who) in self.builds() {
            let _ = writeln!(out, "  build: {build} ({})", who.join(", "));
        }
        for v in &self.verdicts {
            let mark = if v.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark} {}\n       expected: {}\n       seen:     {}",
                v.what, v.expected, v.seen
            );
        }
        let _ = writeln!(out, "faults (seconds from everyone connected):");
        for f in &self.faults {
            let healed = f.healed.map_or("never healed".to_owned(), |h| {
                format!("healed at {:+.3}s", self.timeline_secs(h))
            });
            let _ = writeln!(
                out,
                "  #{} {:+.3}s {} ({healed})",
                f.index,
                self.timeline_secs(f.started),
                f.label
            );
        }
        for p in &self.participants {
            let _ = writeln!(
                out,
                "trace of {} ({}; seconds from the start of the run; everyone connected at {:.3}s), final state {:?}:",
                p.identity,
                p.sdk,
                self.timeline_zero.as_secs_f64(),
                self.final_state(&p.identity)
            );
            // Media samples come every 100 ms: summed up per received track instead.
            let events = self.events_of(&p.identity);
            out.push_str(&format_trace(
                events.filter(|e| !matches!(e.event, ClientEvent::Media { .. })),
            ));
            for (key, flow) in crate::flow::flows(self) {
                if key.subscriber != p.identity {
                    continue;
                }
                let (gap, at) = flow.longest_gap(self.timeline_zero, self.ended);
                let _ = writeln!(
                    out,
                    "  media {key}: frames in {} samples, longest stop {:.3}s from {:+.3}s, live \
                     subscriptions {:?}",
                    flow.advances.len(),
                    gap.as_secs_f64(),
                    self.timeline_secs(at),
                    flow.live
                );
            }
        }
        for (name, path) in &self.logs {
            let _ = writeln!(out, "{name} log: {}", path.display());
        }
        out
    }
}

/// One line per event: `  #3 +1.234s Reconnecting`.
pub fn format_trace<'a, E: std::fmt::Debug + 'a>(
    events: impl IntoIterator<Item = &'a EventRecord<E>>,
) -> String {
    let mut out = String::new();
    for (index, recorded) in events.into_iter().enumerate() {
        let _ = writeln!(out, "  #{index} +{:.3}s {:?}", recorded.at.as_secs_f64(), recorded.event);
    }
    if out.is_empty() {
        out.push_str("  (no events)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_sequenced_packet_names_its_sender_and_number_and_nothing_else_does() {
        let packet = |payload: Vec<u8>, topic: Option<&str>| ClientEvent::DataReceived {
            payload: Arc::new(payload),
            topic: topic.map(str::to_owned),
            reliable: Some(true),
            from: None,
        };
        let sent = packet(data_payload("a:b", 7), Some(DATA_TOPIC));
        assert_eq!(sequenced(&sent), Some(("a:b", 7)), "identities may contain ':'");
        assert_eq!(sequenced(&packet(data_payload("a", 7), Some("chat"))), None);
        assert_eq!(sequenced(&packet(b"hello".to_vec(), Some(DATA_TOPIC))), None);
        assert_eq!(sequenced(&ClientEvent::Connected), None);
    }

    #[test]
    fn a_faultline_participants_bound_covers_every_attempts_timeouts() {
        let mut options = RoomOptions { rng_seed: Some(9), ..RoomOptions::default() };
        options.reconnect.attempts = 3;
        let p = ParticipantRecord::faultline("a", &options);
        // 3 × (5 s connect + 5 s join + 15 s peer connection) + delay caps 0 + 0.3 + 0.6 s.
        assert_eq!(p.reconnect_bound, Duration::from_millis(75_900) + EPISODE_SLACK);
        assert_eq!(p.backoff.map(|b| b.rng_seed), Some(9));
        let unseeded = ParticipantRecord::faultline("a", &RoomOptions::default());
        assert!(unseeded.backoff.is_none(), "no seed, nothing to replay");
    }
}
