//! The scenario file format: a field disconnect written down as TOML.
//!
//! A scenario names its participants, a timeline of faults and what the client must do about
//! them. This module only reads and checks files; running them is the runner's job. Every error
//! names the file, the line and the field, and says what is allowed there.
//!
//! ```toml
//! name = "wifi-drop"
//! description = "A short Wi-Fi drop: both paths go dark for 3 s, then come back."
//! lanes = ["real", "sim"]
//!
//! [[participant]]
//! identity = "alice"
//! sdk = "faultline"      # or "upstream-rust", "js"; `faultline run --sdk` sets everyone's
//!
//! [[fault]]
//! at = "2s"
//! for = "3s"
//! target = "alice"
//! type = "partition"
//!
//! [[expect]]
//! type = "reconnected"
//! participant = "alice"
//! within = "8s"
//! ```
//!
//! A scenario with a `[cluster]` table runs on several livekit-server nodes sharing Redis
//! (real lane only): each participant's signalling goes to its `node` (while that node is up,
//! else the next one that is), and the faults `node-kill`, `node-restart`, `node-drain` and
//! `redis-kill` act on the cluster:
//!
//! ```toml
//! [cluster]
//! nodes = 2
//! room_node = 0          # the room is created there; livekit-server picks when unset
//!
//! [[participant]]
//! identity = "alice"
//! node = 1               # default: the participant's position, modulo `nodes`
//!
//! [[fault]]
//! at = "2s"
//! type = "node-kill"
//! node = "room"          # or an index: 0, 1, …
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::client::Sdk;
use crate::vocab::TrackSpec;

/// A scenario, read and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, used in reports.
    pub name: String,
    /// What field disconnect this models, for the person reading the report.
    #[serde(default)]
    pub description: String,
    /// Which lanes can run it; both by default.
    #[serde(default = "all_lanes")]
    pub lanes: Vec<Lane>,
    /// How long to keep watching after the last fault has healed before judging (the run
    /// watches longer while a participant's reconnect episode may still end within its bound).
    #[serde(default = "default_settle", deserialize_with = "duration")]
    pub settle: Duration,
    /// Several livekit-server nodes sharing Redis instead of one server (real lane only).
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// The participants, each a client of its own.
    #[serde(rename = "participant")]
    pub participants: Vec<ParticipantSpec>,
    /// The timeline of faults.
    #[serde(rename = "fault", default)]
    pub faults: Vec<FaultStep>,
    /// What must be true of the run.
    #[serde(rename = "expect", default)]
    pub expectations: Vec<Spanned<Expectation>>,
}

/// The spans of the `[[fault]]` tables (every other field is ignored here).
#[derive(Deserialize)]
struct FaultSpans {
    #[serde(rename = "fault", default)]
    faults: Vec<Spanned<toml::Table>>,
}

/// Where a scenario runs: against the real livekit-server or in the turmoil simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// The real livekit-server, wall-clock time.
    Real,
    /// The simulated server in turmoil, simulated time.
    Sim,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Real => "real",
            Lane::Sim => "sim",
        })
    }
}

/// The cluster a scenario runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// How many livekit-server nodes, 1 to [`MAX_NODES`].
    pub nodes: Spanned<usize>,
    /// The node the room is created on before anyone joins; unset, livekit-server places
    /// it when the first participant joins.
    #[serde(default)]
    pub room_node: Option<Spanned<usize>>,
}

/// The most nodes a `[cluster]` may have (each is a livekit-server process).
pub const MAX_NODES: usize = 8;

/// A cluster node a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// The node with this index.
    Index(usize),
    /// Whichever node hosts the room when the fault starts.
    Room,
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(usize),
            Name(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Index(i)) => Ok(NodeRef::Index(i)),
            Ok(Raw::Name(name)) if name == "room" => Ok(NodeRef::Room),
            _ => Err(serde::de::Error::custom(
                "`node` is a node index (0, 1, …) or \"room\" (the node hosting the room)",
            )),
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Index(i) => write!(f, "node {i}"),
            NodeRef::Room => f.write_str("the room's node"),
        }
    }
}

/// One participant of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantSpec {
    /// The participant's identity; faults and expectations refer to it.
    pub identity: Spanned<String>,
    /// The SDK it runs: `faultline` (default), `upstream-rust` or `js`.
    #[serde(default)]
    pub sdk: Sdk,
    /// Reconnect policy overrides; unset fields keep the SDK's defaults (upstream's).
    #[serde(default)]
    pub reconnect: PolicySpec,
    /// Lifetime of the participant's access token; one hour when unset.
    #[serde(default, deserialize_with = "opt_duration")]
    pub token_ttl: Option<Duration>,
    /// Reliable data this participant publishes during the run, for delivery checks.
    #[serde(default)]
    pub publish: Option<PublishSpec>,
    /// The media tracks it publishes from its join on (`["audio", "video"]`); none by
    /// default. Everyone subscribes to everyone's tracks, and the timeline starts once
    /// every subscriber receives frames of every track.
    #[serde(default)]
    pub tracks: Vec<TrackSpec>,
    /// In a `[cluster]` scenario: the node its signalling goes to while that node is up
    /// (else the next one that is); by default its position in the file, modulo the nodes.
    #[serde(default)]
    pub node: Option<Spanned<usize>>,
}

/// Overrides of the SDK's reconnect policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Reconnect attempts before giving up.
    pub attempts: Option<u32>,
    /// The backoff's base delay.
    #[serde(default, deserialize_with = "opt_duration")]
    pub base_delay: Option<Duration>,
    /// The backoff's cap.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_delay: Option<Duration>,
}

impl PolicySpec {
    /// Whether the file overrides anything of the SDK's policy.
    pub fn is_set(&self) -> bool {
        self.attempts.is_some() || self.base_delay.is_some() || self.max_delay.is_some()
    }

    /// faultline-sdk's default policy with these overrides.
    pub fn policy(&self) -> faultline_sdk::ReconnectPolicy {
        let mut policy = faultline_sdk::ReconnectPolicy::default();
        if let Some(attempts) = self.attempts {
            policy.attempts = attempts;
        }
        if let Some(base) = self.base_delay {
            policy.base_delay = base;
        }
        if let Some(max) = self.max_delay {
            policy.max_delay = max;
        }
        policy
    }
}

/// Reliable messages a participant sends at a steady rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// The interval between messages.
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// How many messages in all.
    pub count: u32,
}

/// One fault on the timeline.
///
/// (No `deny_unknown_fields` here: serde cannot combine it with `flatten`. Unknown fields are
/// still rejected, by [`Fault`], which receives every field this struct does not know.)
#[derive(Debug, Clone, Deserialize)]
pub struct FaultStep {
    /// When the fault starts, from the moment every participant is connected.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// How long it lasts; a fault without `for` lasts to the end of the run.
    #[serde(rename = "for", default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// The participant it hits; faults of the server or the room leave it out.
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// What a fault does.
///
/// Variants without settings are written `Name {}` so that serde rejects unknown fields on
/// them too (it ignores them on unit variants of an internally tagged enum).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Nothing passes between the target and the server while it lasts: signalling bytes are
    /// held (and delivered when it ends, as TCP retransmission would), media datagrams are
    /// dropped, new connections fail. A link that goes dark without anyone closing it.
    Partition {},
    /// The killable proxy in front of the target's signalling switches mode.
    SignalProxy {
        /// The proxy's mode while the fault lasts.
        mode: ProxyMode,
        /// Bytes per second, for `mode = "throttle"`.
        #[serde(default)]
        rate: Option<u64>,
    },
    /// A toxiproxy toxic on the target's signalling connection, written as an inline table:
    /// `toxic = { kind = "latency", latency = "300ms" }`.
    Toxic {
        /// The toxic and its settings.
        toxic: ToxicKind,
        /// Which direction it acts on.
        #[serde(default)]
        stream: Stream,
        /// The share of connections it hits, 0.0 to 1.0.
        #[serde(default = "one")]
        toxicity: f32,
    },
    /// The target's media (UDP) path degrades.
    Media {
        /// Which way.
        #[serde(default)]
        direction: Direction,
        /// Share of datagrams dropped, 0 to 100; 100 drops everything.
        #[serde(default)]
        loss_percent: Option<f64>,
        /// Delay added to every datagram.
        #[serde(default, deserialize_with = "opt_duration")]
        delay: Option<Duration>,
    },
    /// The target changes network (Wi-Fi to cellular): old sockets die, new ones come from a
    /// new local address.
    NetworkChange {},
    /// The server process is killed (SIGKILL); with `for`, it is restarted on the same ports
    /// when the fault ends.
    ServerKill {},
    /// RoomService RemoveParticipant on the target.
    RemoveParticipant {},
    /// RoomService DeleteRoom.
    DeleteRoom {},
    /// The target asks for a SimulateScenario.
    Simulate {
        /// Which one.
        scenario: SimulateKind,
    },
    /// The target closes its room.
    Close {},
    /// The target mutes its track (its frames stop; the server and the others are told);
    /// with `for`, it unmutes it when the fault ends. The user's action, not a failure: what
    /// the SDK must carry across an episode (client-sdk-android#109).
    Mute {
        /// Which of its tracks.
        track: TrackSpec,
    },
    /// The target publishes a track it did not publish before — possibly in the middle of a
    /// reconnect, where the SDK must publish it once the room is back (client-sdk-js#507).
    PublishTrack {
        /// Which track.
        track: TrackSpec,
    },
    /// A `[cluster]` node is killed (SIGKILL: a crash); with `for`, it is restarted on its
    /// ports when the fault ends.
    NodeKill {
        /// Which node.
        node: NodeRef,
    },
    /// A `[cluster]` node is killed and started again at once on its ports (a crash loop's
    /// restart, or a deploy that replaces the process without draining it).
    NodeRestart {
        /// Which node.
        node: NodeRef,
    },
    /// A `[cluster]` node is sent SIGTERM and drains: it keeps its participants and exits
    /// once they have left; new connections go to other nodes. With `for`, it is killed
    /// when the fault ends if it is still running (a deploy's grace period running out).
    NodeDrain {
        /// Which node.
        node: NodeRef,
    },
    /// The `[cluster]`'s Redis is killed; with `for`, it is restarted (empty) when the
    /// fault ends.
    RedisKill {},
}

impl std::fmt::Display for ProxyMode {
    /// As files write it: `black-hole`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProxyMode::Kill => "kill",
            ProxyMode::BlackHole => "black-hole",
            ProxyMode::Pause => "pause",
            ProxyMode::RefuseNew => "refuse-new",
            ProxyMode::Throttle => "throttle",
        })
    }
}

/// Modes of the killable signalling proxy (and of the sim lane's signalling faults): the fault
/// a scenario asks for. It is not [`crate::proxy::Mode`], the proxy's state, which also has
/// `Pass` and keeps throttling as a rate beside the mode rather than as a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// Sever every connection and refuse new ones.
    Kill,
    /// Keep connections open but pass nothing (a half-open link).
    BlackHole,
    /// Hold bytes and deliver them when the fault ends.
    Pause,
    /// Existing connections work; new ones are refused.
    RefuseNew,
    /// Limit the rate (`rate`, bytes per second).
    Throttle,
}

/// A toxic and its settings: toxiproxy's own type, read as files write it.
pub use crate::toxiproxy::ToxicKind;

/// A toxic's direction: toxiproxy's own type.
pub use crate::toxiproxy::Stream;

/// Which way a media fault acts: the socket wrapper's own type.
pub use crate::net::Direction;

/// The SimulateScenario requests a scenario may make: the same set, spelled the same way, as
/// in simulation schedules.
pub use crate::sim::schedule::SimulateKind;

/// What must be true of a run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Expectation {
    /// The participant reports `Reconnected` (after a `Reconnecting`) within `within` of the
    /// last fault that hit it ending.
    Reconnected {
        /// Whose events.
        participant: String,
        /// The bound, counted from the heal.
        #[serde(deserialize_with = "duration")]
        within: Duration,
    },
    /// The participant reports `Reconnecting` within `within` of the start of the first fault
    /// that hit it: the outage was noticed that soon.
    Reconnecting {
        /// Whose events.
        participant: String,
        /// The bound, counted from the start of the fault.
        #[serde(deserialize_with = "duration")]
        within: Duration,
    },
    /// The participant never reports `Reconnecting` (with `until`: not before that time on
    /// the timeline): the faults went unnoticed.
    NoReconnect {
        /// Whose events.
        participant: String,
        /// Only until this time (from everyone connected); to the end of the run when unset.
        #[serde(default, deserialize_with = "opt_duration")]
        until: Option<Duration>,
    },
    /// The participant never reports `Disconnected`.
    NoDisconnect {
        /// Whose events.
        participant: String,
    },
    /// The participant reports exactly one `Disconnected`, with this reason, within `within`
    /// of the first fault that hit it.
    Disconnected {
        /// Whose events.
        participant: String,
        /// The expected reason, as livekit-protocol names it (e.g. "JOIN_FAILURE").
        #[serde(default)]
        reason: Option<String>,
        /// The bound, counted from the start of the fault.
        #[serde(deserialize_with = "duration")]
        within: Duration,
    },
    /// `peer` never sees `of` leave (a resume, not a new session).
    PeerSawNoLeave {
        /// The observer.
        peer: String,
        /// The participant being watched.
        of: String,
    },
    /// `peer` sees `of` leave and, by the end of the run, not come back.
    PeerSawLeave {
        /// The observer.
        peer: String,
        /// The participant being watched.
        of: String,
    },
    /// `peer` sees `of` leave and join again (a full reconnect).
    PeerSawRejoin {
        /// The observer.
        peer: String,
        /// The participant being watched.
        of: String,
    },
    /// Every reliable message published by `from` arrives at `to` exactly once, in order.
    DataDelivered {
        /// The publisher (it needs a `publish` block).
        from: String,
        /// The receiver.
        to: String,
    },
    /// The participant's connection state at the end of the run.
    FinalState {
        /// Whose state.
        participant: String,
        /// "connected" or "disconnected".
        state: FinalState,
    },
    /// The longest stop of `from`'s tracks (or its `track` alone) at `to`, from the
    /// timeline's zero to the end of the run (a stop still open at the end counts), is at
    /// most `max`.
    MediaGap {
        /// The publisher.
        from: String,
        /// The subscriber.
        to: String,
        /// Only this track (`audio` or `video`); every track `from` publishes when unset.
        #[serde(default)]
        track: Option<TrackSpec>,
        /// The bound.
        #[serde(deserialize_with = "duration")]
        max: Duration,
    },
    /// Frames of `from`'s tracks (or its `track` alone) arrive at `to` at the end of the run
    /// (within the last second).
    MediaFlowing {
        /// The publisher.
        from: String,
        /// The subscriber.
        to: String,
        /// Only this track; every track `from` publishes when unset.
        #[serde(default)]
        track: Option<TrackSpec>,
    },
    /// The participant published its tracks (or its `track` alone) again with a new sid: a
    /// full reconnect's republish.
    TrackRepublished {
        /// Whose tracks.
        participant: String,
        /// Only this track; every track it publishes when unset.
        #[serde(default)]
        track: Option<TrackSpec>,
    },
}

/// A connection state a run can end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalState {
    /// Connected.
    Connected,
    /// Disconnected.
    Disconnected,
}

/// A scenario file that could not be read or is not a valid scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: bad TOML, an unknown field, a value out of range, a reference to
    /// a participant that is not declared.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending field.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ScenarioError::Invalid { path: path.to_owned(), line, column, message }
        };
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| invalid(e.span(), e.message().trim_end().to_owned()))?;
        // Where each `[[fault]]` table is, for errors about a fault as a whole.
        let spans: FaultSpans = toml::from_str(text)
            .map_err(|e| invalid(e.span(), e.message().trim_end().to_owned()))?;
        let fault_spans: Vec<Range<usize>> = spans.faults.iter().map(Spanned::span).collect();
        scenario.check(&fault_spans).map_err(|(span, message)| invalid(Some(span), message))?;
        Ok(scenario)
    }

    /// The participant with this identity.
    pub fn participant(&self, identity: &str) -> Option<&ParticipantSpec> {
        self.participants.iter().find(|p| p.identity.get_ref() == identity)
    }

    /// The tracks `identity` publishes over the run: its `tracks`, then those its
    /// `publish-track` steps add.
    pub fn tracks_of(&self, identity: &str) -> Vec<TrackSpec> {
        let Some(p) = self.participant(identity) else { return Vec::new() };
        let mut tracks = p.tracks.clone();
        for step in &self.faults {
            let hits = match &step.target {
                Some(t) => t.get_ref() == identity,
                None => self.participants.len() == 1,
            };
            if let (Fault::PublishTrack { track }, true) = (&step.fault, hits) {
                tracks.push(*track);
            }
        }
        tracks
    }

    /// When the last fault heals (or starts, for one that lasts to the end).
    pub fn last_fault_end(&self) -> Duration {
        self.faults.iter().map(|f| f.at + f.duration.unwrap_or_default()).max().unwrap_or_default()
    }

    /// Checks what serde cannot: references, ranges, combinations. `fault_spans` locates
    /// each `[[fault]]` table.
    fn check(&self, fault_spans: &[Range<usize>]) -> Result<(), (Range<usize>, String)> {
        let mut identities = BTreeSet::new();
        for p in &self.participants {
            if p.identity.get_ref().is_empty() {
                return Err((p.identity.span(), "participant identity must not be empty".into()));
            }
            if !identities.insert(p.identity.get_ref().as_str()) {
                return Err((
                    p.identity.span(),
                    format!("participant `{}` is declared twice", p.identity.get_ref()),
                ));
            }
        }
        if identities.is_empty() {
            return Err((0..0, "a scenario needs at least one [[participant]]".into()));
        }
        let known = |name: &str| -> Result<(), String> {
            if identities.contains(name) {
                Ok(())
            } else {
                Err(format!(
                    "unknown participant `{name}`; declared participants are: {}",
                    identities.iter().copied().collect::<Vec<_>>().join(", ")
                ))
            }
        };
        for (index, step) in self.faults.iter().enumerate() {
            let table = fault_spans.get(index).cloned().unwrap_or(0..0);
            match (&step.target, step.fault.needs_target()) {
                (Some(t), _) => known(t.get_ref()).map_err(|m| (t.span(), m))?,
                (None, true) if identities.len() > 1 => {
                    return Err((
                        table,
                        format!(
                            "a `{}` fault needs `target = \"<identity>\"` when there are \
                             several participants",
                            step.fault.kind()
                        ),
                    ))
                }
                (None, _) => {}
            }
            if step.duration.is_some() && step.fault.is_instant() {
                return Err((
                    table.clone(),
                    format!(
                        "a `{}` fault happens at once, so `for` means nothing on it; remove `for` \
                         (faults that last: partition, signal-proxy, toxic, media, mute, \
                         server-kill, node-kill, node-drain, redis-kill)",
                        step.fault.kind()
                    ),
                ));
            }
            step.fault.check().map_err(|m| (table.clone(), m))?;
            self.check_track_fault(step).map_err(|m| (table.clone(), m))?;
            self.check_cluster_fault(&step.fault).map_err(|m| (table, m))?;
        }
        self.check_cluster()?;
        for exp in &self.expectations {
            let span = exp.span();
            for name in exp.get_ref().participants() {
                known(name).map_err(|m| (span.clone(), m))?;
            }
            let publishes = |who: &str, track: &Option<TrackSpec>| {
                let tracks = self.tracks_of(who);
                match track {
                    Some(t) => tracks.contains(t),
                    None => !tracks.is_empty(),
                }
            };
            match exp.get_ref() {
                Expectation::MediaGap { from: who, track, .. }
                | Expectation::MediaFlowing { from: who, track, .. }
                | Expectation::TrackRepublished { participant: who, track }
                    if !publishes(who, track) =>
                {
                    let what = track.map_or("any track".to_owned(), |t| format!("a {t:?} track"));
                    return Err((
                        span,
                        format!(
                            "this expectation is about {what} of `{who}`, who publishes none: \
                             give `{who}` `tracks = [\"audio\", \"video\"]`"
                        ),
                    ));
                }
                _ => {}
            }
            if let Expectation::DataDelivered { from, .. } = exp.get_ref() {
                if self.participant(from).is_some_and(|p| p.publish.is_none()) {
                    return Err((
                        span,
                        format!("`data-delivered` from `{from}` needs a `publish` block on that participant"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// Checks a `mute` or `publish-track` step against what its target publishes: a mute
    /// needs the track (from `tracks` or an earlier `publish-track`), a publish must be new.
    fn check_track_fault(&self, step: &FaultStep) -> Result<(), String> {
        let (track, publish) = match &step.fault {
            Fault::Mute { track } => (*track, false),
            Fault::PublishTrack { track } => (*track, true),
            _ => return Ok(()),
        };
        let target = match &step.target {
            Some(t) => self.participant(t.get_ref()),
            None => self.participants.first(),
        };
        let Some(target) = target else { return Ok(()) };
        let who = target.identity.get_ref();
        let published_before = self.faults.iter().any(|f| {
            f.at < step.at
                && f.fault == (Fault::PublishTrack { track })
                && f.target.as_ref().is_none_or(|t| t.get_ref() == who)
        });
        let has = target.tracks.contains(&track) || published_before;
        match (publish, has) {
            (false, false) => Err(format!(
                "`{who}` publishes no {track:?} track to mute: add it to its `tracks`, or \
                 publish it with an earlier `publish-track`"
            )),
            (true, true) => Err(format!(
                "`{who}` already publishes a {track:?} track (one per kind): remove it from its \
                 `tracks`, or drop this `publish-track`"
            )),
            _ => Ok(()),
        }
    }

    /// Checks the `[cluster]` table and the participants' `node`s.
    fn check_cluster(&self) -> Result<(), (Range<usize>, String)> {
        let Some(cluster) = &self.cluster else {
            return match self.participants.iter().find_map(|p| p.node.as_ref()) {
                Some(node) => Err((
                    node.span(),
                    "`node` only means something in a scenario with a `[cluster]` table".into(),
                )),
                None => Ok(()),
            };
        };
        let nodes = *cluster.nodes.get_ref();
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err((
                cluster.nodes.span(),
                format!("a cluster has 1 to {MAX_NODES} nodes, not {nodes}"),
            ));
        }
        let in_range = |n: &Spanned<usize>, what: &str| {
            if *n.get_ref() < nodes {
                Ok(())
            } else {
                Err((
                    n.span(),
                    format!(
                        "{what} {} does not exist: the cluster's nodes are 0 to {}",
                        n.get_ref(),
                        nodes - 1
                    ),
                ))
            }
        };
        if let Some(room_node) = &cluster.room_node {
            in_range(room_node, "`room_node`")?;
        }
        for node in self.participants.iter().filter_map(|p| p.node.as_ref()) {
            in_range(node, "node")?;
        }
        if self.lanes.contains(&Lane::Sim) {
            return Err((
                cluster.nodes.span(),
                "a `[cluster]` scenario runs on the real lane only (the simulation has one \
                 server): write `lanes = [\"real\"]`"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks that a cluster fault has a cluster and names one of its nodes, and that a
    /// cluster scenario does not use the single server's faults.
    fn check_cluster_fault(&self, fault: &Fault) -> Result<(), String> {
        match (&self.cluster, fault) {
            (None, f) if f.needs_cluster() => Err(format!(
                "a `{}` fault needs a `[cluster]` table (e.g. `[cluster]` with `nodes = 2`)",
                f.kind()
            )),
            (Some(_), Fault::ServerKill {}) => {
                Err("in a `[cluster]` scenario, kill a node instead: `type = \"node-kill\"` with \
                 `node = 0` (or `node = \"room\"`)"
                    .into())
            }
            (Some(cluster), f) => match f.node() {
                Some(NodeRef::Index(i)) if i >= *cluster.nodes.get_ref() => Err(format!(
                    "node {i} does not exist: the cluster's nodes are 0 to {}",
                    cluster.nodes.get_ref().saturating_sub(1)
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

impl Fault {
    /// The `type` name of this fault, as written in files.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition {} => "partition",
            Fault::SignalProxy { .. } => "signal-proxy",
            Fault::Toxic { .. } => "toxic",
            Fault::Media { .. } => "media",
            Fault::NetworkChange {} => "network-change",
            Fault::ServerKill {} => "server-kill",
            Fault::RemoveParticipant {} => "remove-participant",
            Fault::DeleteRoom {} => "delete-room",
            Fault::Simulate { .. } => "simulate",
            Fault::Close {} => "close",
            Fault::Mute { .. } => "mute",
            Fault::PublishTrack { .. } => "publish-track",
            Fault::NodeKill { .. } => "node-kill",
            Fault::NodeRestart { .. } => "node-restart",
            Fault::NodeDrain { .. } => "node-drain",
            Fault::RedisKill {} => "redis-kill",
        }
    }

    /// Whether this fault happens at once rather than lasting (a `for` makes no sense on it).
    pub fn is_instant(&self) -> bool {
        matches!(
            self,
            Fault::NetworkChange {}
                | Fault::RemoveParticipant {}
                | Fault::DeleteRoom {}
                | Fault::Simulate { .. }
                | Fault::Close {}
                | Fault::NodeRestart { .. }
                | Fault::PublishTrack { .. }
        )
    }

    /// The cluster node this fault acts on, for the faults of a `[cluster]`.
    pub fn node(&self) -> Option<NodeRef> {
        match self {
            Fault::NodeKill { node } | Fault::NodeRestart { node } | Fault::NodeDrain { node } => {
                Some(*node)
            }
            _ => None,
        }
    }

    /// Whether this fault needs a `[cluster]`.
    pub fn needs_cluster(&self) -> bool {
        self.node().is_some() || *self == Fault::RedisKill {}
    }

    /// Whether this fault acts on one participant (rather than the server or the room).
    pub fn needs_target(&self) -> bool {
        !matches!(self, Fault::ServerKill {} | Fault::DeleteRoom {}) && !self.needs_cluster()
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Fault::SignalProxy { mode: ProxyMode::Throttle, rate: None } => {
                Err("`mode = \"throttle\"` needs `rate` (bytes per second)".into())
            }
            Fault::SignalProxy { mode, rate: Some(_) } if *mode != ProxyMode::Throttle => {
                Err("`rate` only applies to `mode = \"throttle\"`".into())
            }
            Fault::Toxic { toxicity, .. } if !(0.0..=1.0).contains(toxicity) => {
                Err(format!("`toxicity` must be between 0.0 and 1.0, not {toxicity}"))
            }
            Fault::Media { loss_percent: Some(p), .. } if !(0.0..=100.0).contains(p) => {
                Err(format!("`loss_percent` must be between 0 and 100, not {p}"))
            }
            Fault::Media { loss_percent: None, delay: None, .. } => {
                Err("a `media` fault needs `loss_percent` and/or `delay`".into())
            }
            _ => Ok(()),
        }
    }
}

impl Expectation {
    /// The participants this expectation names.
    pub fn participants(&self) -> Vec<&str> {
        match self {
            Expectation::Reconnected { participant, .. }
            | Expectation::Reconnecting { participant, .. }
            | Expectation::NoDisconnect { participant }
            | Expectation::NoReconnect { participant, .. }
            | Expectation::Disconnected { participant, .. }
            | Expectation::FinalState { participant, .. }
            | Expectation::TrackRepublished { participant, .. } => vec![participant],
            Expectation::PeerSawNoLeave { peer, of }
            | Expectation::PeerSawLeave { peer, of }
            | Expectation::PeerSawRejoin { peer, of } => vec![peer, of],
            Expectation::DataDelivered { from, to }
            | Expectation::MediaGap { from, to, .. }
            | Expectation::MediaFlowing { from, to, .. } => vec![from, to],
        }
    }
}

fn all_lanes() -> Vec<Lane> {
    vec![Lane::Real, Lane::Sim]
}

fn default_settle() -> Duration {
    Duration::from_secs(2)
}

fn one() -> f32 {
    1.0
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a duration written as a number and a unit: `250ms`, `3s`, `1.5s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("`{s}` is not a duration; write a number and a unit: 250ms, 3s, 2m")
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`; use ms, s or m (e.g. 250ms, 3s, 2m)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{s}` is out of range"))
}

/// Reads a duration written as [`parse_duration`] reads it.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("s.toml"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(s) => panic!("expected an error, parsed {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = r#"
name = "t"
[[participant]]
identity = "alice"
[[participant]]
identity = "bob"
"#;

    #[test]
    fn parses_a_full_scenario() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{BASE}
[[fault]]
at = \"2s\"
for = \"500ms\"
target = \"alice\"
type = \"toxic\"
toxic = {{ kind = \"latency\", latency = \"300ms\" }}
stream = \"upstream\"

[[fault]]
at = \"3s\"
type = \"server-kill\"

[[expect]]
type = \"reconnected\"
participant = \"alice\"
within = \"8s\"
"
        ))?;
        assert_eq!(s.participants.len(), 2);
        assert_eq!(
            s.faults[0].fault,
            Fault::Toxic {
                toxic: ToxicKind::Latency { latency: 300, jitter: 0 },
                stream: Stream::Upstream,
                toxicity: 1.0
            }
        );
        assert_eq!(s.faults[0].duration, Some(Duration::from_millis(500)));
        assert_eq!(s.last_fault_end(), Duration::from_secs(3));
        assert_eq!(s.lanes, vec![Lane::Real, Lane::Sim]);
        Ok(())
    }

    #[test]
    fn unknown_field_names_file_line_and_allowed_fields() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\ntarget = \"bob\"\nduration = \"3s\"\n"));
        assert!(e.starts_with("s.toml:8:"), "{e}");
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn unknown_field_inside_a_fault_is_rejected() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"media\"\nlost = 5\n"
        ));
        assert!(e.starts_with("s.toml:8:") && e.contains("unknown field `lost`"), "{e}");
        assert!(e.contains("loss_percent"), "the allowed fields are listed: {e}");
    }

    #[test]
    fn unknown_fault_type_lists_the_allowed_ones() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"earthquake\"\n"
        ));
        assert!(
            e.contains("earthquake") && e.contains("partition") && e.contains("server-kill"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"soon\"\ntarget = \"bob\"\ntype = \"partition\"\n"
        ));
        assert!(e.contains("250ms, 3s, 2m"), "{e}");
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"3h\"\ntarget = \"bob\"\ntype = \"partition\"\n"
        ));
        assert!(e.contains("unknown unit `h`"), "{e}");
    }

    #[test]
    fn a_malformed_toxic_names_the_problem() {
        let toxic = |table: &str| {
            error(&format!(
                "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"toxic\"\ntoxic = {table}\n"
            ))
        };
        let e = toxic("{ kind = \"earthquake\" }");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
        assert!(e.contains("unknown variant `earthquake`") && e.contains("`reset_peer`"), "{e}");
        let e = toxic("{ kind = \"bandwidth\", rate = 4 }");
        assert!(e.contains("unknown field `rate`, expected `rate_kbps`"), "{e}");
        let e = toxic("{ kind = \"latency\", latency = \"soon\" }");
        assert!(e.contains("`soon` is not a duration") && e.contains("250ms, 3s, 2m"), "{e}");
        assert!(toxic("{ kind = \"slicer\" }").contains("missing field `average_size`"));
        assert!(toxic("{ latency = \"300ms\" }").contains("missing field `kind`"));
    }

    #[test]
    fn unknown_participant_is_located_and_lists_the_declared_ones() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\ntarget = \"carol\"\n"
        ));
        assert!(e.starts_with("s.toml:11:"), "{e}");
        assert!(e.contains("unknown participant `carol`") && e.contains("alice, bob"), "{e}");
    }

    #[test]
    fn a_targeted_fault_needs_a_target_among_several_participants() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\n"));
        assert!(e.contains("needs `target"), "{e}");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
        // The server is nobody's: no target needed.
        assert!(parse(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"server-kill\"\n")).is_ok());
    }

    #[test]
    fn ranges_and_combinations_are_checked() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"media\"\nloss_percent = 120.0\n"));
        assert!(e.contains("between 0 and 100") && e.starts_with("s.toml:8:"), "{e}");
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"signal-proxy\"\nmode = \"throttle\"\n"));
        assert!(e.contains("needs `rate`"), "{e}");
        let e = error(&format!(
            "{BASE}\n[[expect]]\ntype = \"data-delivered\"\nfrom = \"alice\"\nto = \"bob\"\n"
        ));
        assert!(e.contains("needs a `publish` block"), "{e}");
    }

    #[test]
    fn an_instant_fault_with_for_is_an_error() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\nfor = \"2s\"\ntarget = \"bob\"\ntype = \"network-change\"\n"
        ));
        assert!(e.contains("happens at once") && e.contains("remove `for`"), "{e}");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
    }

    #[test]
    fn no_reconnect_names_its_participant() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{BASE}\n[[expect]]\ntype = \"no-reconnect\"\nparticipant = \"bob\"\n"
        ))?;
        assert_eq!(s.expectations[0].get_ref().participants(), vec!["bob"]);
        let e =
            error(&format!("{BASE}\n[[expect]]\ntype = \"no-reconnect\"\nparticipant = \"eve\"\n"));
        assert!(e.contains("unknown participant `eve`"), "{e}");
        Ok(())
    }

    #[test]
    fn each_participant_names_its_sdk_and_an_unknown_one_is_located() -> Result<(), ScenarioError> {
        let s = parse(
            "name = \"t\"\n[[participant]]\nidentity = \"a\"\nsdk = \"js\"\n\
             [[participant]]\nidentity = \"b\"\n",
        )?;
        assert_eq!(s.participants[0].sdk, Sdk::Js);
        assert_eq!(s.participants[1].sdk, Sdk::Faultline, "faultline is the default");
        let e = error("name = \"t\"\n[[participant]]\nidentity = \"a\"\nsdk = \"swift\"\n");
        assert!(e.starts_with("s.toml:4:"), "{e}");
        assert!(e.contains("\"swift\"") && e.contains("faultline, upstream-rust and js"), "{e}");
        Ok(())
    }

    #[test]
    fn duplicate_and_missing_participants_are_errors() {
        let e = error(
            "name = \"t\"\n[[participant]]\nidentity = \"a\"\n[[participant]]\nidentity = \"a\"\n",
        );
        assert!(e.starts_with("s.toml:5:") && e.contains("declared twice"), "{e}");
        let e = error("name = \"t\"\nparticipant = []\n");
        assert!(e.contains("at least one [[participant]]"), "{e}");
    }

    #[test]
    fn malformed_toml_is_located() {
        let e = error("name = \"t\n");
        assert!(e.starts_with("s.toml:1:"), "{e}");
    }

    const CLUSTER: &str = r#"
name = "c"
lanes = ["real"]
[cluster]
nodes = 2
room_node = 0
[[participant]]
identity = "alice"
node = 1
"#;

    #[test]
    fn a_cluster_scenario_names_nodes_by_index_or_as_the_rooms() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{CLUSTER}\n[[fault]]\nat = \"1s\"\nfor = \"2s\"\ntype = \"node-kill\"\nnode = \"room\"\n\
             [[fault]]\nat = \"4s\"\ntype = \"node-restart\"\nnode = 1\n\
             [[fault]]\nat = \"5s\"\nfor = \"3s\"\ntype = \"redis-kill\"\n"
        ))?;
        assert_eq!(s.cluster.as_ref().map(|c| *c.nodes.get_ref()), Some(2));
        assert_eq!(s.participants[0].node.as_ref().map(|n| *n.get_ref()), Some(1));
        assert_eq!(s.faults[0].fault.node(), Some(NodeRef::Room));
        assert_eq!(s.faults[1].fault.node(), Some(NodeRef::Index(1)));
        assert!(s.faults[1].fault.is_instant() && !s.faults[0].fault.is_instant());
        assert!(s.faults.iter().all(|f| !f.fault.needs_target()), "cluster faults hit everyone");
        Ok(())
    }

    #[test]
    fn cluster_mistakes_are_located_and_say_what_is_allowed() {
        let fault = |body: &str| format!("{CLUSTER}\n[[fault]]\nat = \"1s\"\n{body}\n");
        let e = error(&fault("type = \"node-kill\"\nnode = 2"));
        assert!(e.starts_with("s.toml:11:") && e.contains("nodes are 0 to 1"), "{e}");
        let e = error(&fault("type = \"node-kill\"\nnode = \"leader\""));
        assert!(e.contains("a node index (0, 1, …) or \"room\""), "{e}");
        let e = error(&fault("type = \"server-kill\""));
        assert!(e.contains("kill a node instead"), "{e}");
        let e = error(&fault("type = \"node-restart\"\nnode = 0\nfor = \"1s\""));
        assert!(e.contains("happens at once"), "{e}");
        let e = error(&CLUSTER.replace("nodes = 2", "nodes = 9"));
        assert!(e.contains("1 to 8 nodes") && e.starts_with("s.toml:5:"), "{e}");
        let e = error(&CLUSTER.replace("room_node = 0", "room_node = 5"));
        assert!(e.contains("`room_node` 5 does not exist"), "{e}");
        let e = error(&CLUSTER.replace("lanes = [\"real\"]\n", ""));
        assert!(e.contains("real lane only") && e.contains("lanes = [\"real\"]"), "{e}");
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"redis-kill\"\n"));
        assert!(e.contains("needs a `[cluster]` table"), "{e}");
        let e = error("name = \"t\"\n[[participant]]\nidentity = \"a\"\nnode = 0\n");
        assert!(e.starts_with("s.toml:4:") && e.contains("[cluster]"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
