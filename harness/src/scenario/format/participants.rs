//! Who takes part in a scenario: its participants (SDK, reconnect policy, token, data and
//! tracks they publish) and, for the cluster lane, the nodes they reach.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::durations::{duration, opt_duration};
use crate::vocab::{Sdk, TrackSpec};

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

/// The `[server]` table: what the one livekit-server of the run offers clients.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// ICE over TCP (port 7881). `true` runs the server in a network namespace of its own
    /// (its ICE/TCP listener binds every address); `false` turns it off even there; unset,
    /// a server in a namespace has it and one on loopback does not.
    #[serde(default)]
    pub ice_tcp: Option<bool>,
    /// The embedded TURN relay (UDP 3478 in a namespace), listed in every join response.
    #[serde(default)]
    pub turn: bool,
}

/// A firewall on a participant's network: what it lets through. Signalling (a WebSocket
/// over TCP) always passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firewall {
    /// Every UDP datagram is dropped, both ways: media can only use ICE over TCP (a hotel
    /// or corporate network).
    UdpBlocked,
    /// UDP is dropped but to and from the server's TURN relay: media can only be relayed
    /// (or use ICE over TCP).
    RelayOnly,
}

impl Firewall {
    /// Its name as files write it.
    pub fn name(self) -> &'static str {
        match self {
            Firewall::UdpBlocked => "udp-blocked",
            Firewall::RelayOnly => "relay-only",
        }
    }
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
    /// A firewall on its network from before it joins (one in mid-call is a `firewall`
    /// fault).
    #[serde(default)]
    pub firewall: Option<Firewall>,
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
