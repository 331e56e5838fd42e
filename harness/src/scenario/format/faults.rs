//! The fault timeline of a scenario: each step's time, duration and target, and what the
//! fault does.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::durations::{duration, opt_duration};
use super::participants::NodeRef;
use crate::vocab::{TrackSource, TrackSpec};

pub use super::media::MediaFault;
use super::participants::Firewall;

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
    /// The target's media path degrades: see [`MediaFault`].
    Media(MediaFault),
    /// A firewall goes up on the target's network (it moved to a hotel's Wi-Fi, or a VPN
    /// came up); with `for`, it comes down when the fault ends.
    Firewall {
        /// What it lets through.
        rule: Firewall,
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

/// The modes of the killable signalling proxy a fault asks for: the shared vocabulary's.
pub use crate::vocab::ProxyMode;

/// A toxic and its settings: toxiproxy's own type, read as files write it.
pub use crate::toxiproxy::ToxicKind;

/// A toxic's direction: toxiproxy's own type.
pub use crate::toxiproxy::Stream;

/// Which way a media fault acts: the socket wrapper's own type.
pub use crate::net::Direction;

/// The SimulateScenario requests a scenario may make: the same set, spelled the same way, as
/// in simulation schedules.
pub use crate::vocab::SimulateKind;

impl Fault {
    /// The `type` name of this fault, as written in files.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition {} => "partition",
            Fault::SignalProxy { .. } => "signal-proxy",
            Fault::Toxic { .. } => "toxic",
            Fault::Media { .. } => "media",
            Fault::Firewall { .. } => "firewall",
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

    /// The track this fault mutes while it lasts (a `mute`), if any.
    pub fn mutes(&self) -> Option<TrackSource> {
        match self {
            Fault::Mute { track } => Some(track.source()),
            _ => None,
        }
    }

    /// Whether this fault acts on one participant (rather than the server or the room).
    pub fn needs_target(&self) -> bool {
        !matches!(self, Fault::ServerKill {} | Fault::DeleteRoom {}) && !self.needs_cluster()
    }

    pub(super) fn check(&self) -> Result<(), String> {
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
            Fault::Media(media) => media.check(),
            _ => Ok(()),
        }
    }
}

fn one() -> f32 {
    1.0
}
