//! The words that clients, drivers, scenario files, simulation schedules, the record and the
//! judge share: the SDKs under test ([`Sdk`]), the SimulateScenario requests
//! ([`SimulateKind`]), the signalling proxy's fault modes ([`ProxyMode`]), a track's source as
//! every SDK names it (`microphone`, `camera`) and the kinds a scenario asks a participant to
//! publish (`audio`, `video`). Below every other module: it imports nothing of the harness,
//! so `client`, `scenario` and `sim` each import it and never one another for a word.
//!
//! A track is keyed by its publisher's identity and its source, never by its sid alone: a
//! full reconnect republishes it with a new sid.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use faultline_sdk::SimulateScenario;
use serde::{Deserialize, Serialize};

pub use faultline_sdk::TrackSource;

/// An SDK faultline can put under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sdk {
    /// faultline-sdk, in process.
    Faultline,
    /// The upstream Rust SDK as shipped in `liblivekit_ffi.so` (PyPI `livekit`).
    UpstreamRust,
    /// `livekit-client` in headless Chromium.
    Js,
    /// The LiveKit Go SDK (`server-sdk-go` v2, on pion), built by the harness.
    Go,
    /// A program of the user's that speaks the driver protocol (`docs/driver-protocol.md`):
    /// another SDK (Swift, Android, Go, an in-house client) without changing faultline. Its
    /// command comes from `FAULTLINE_DRIVER` or `--sdk driver:COMMAND`.
    Driver,
}

impl Sdk {
    /// Every SDK faultline provisions, faultline's first (a matrix's default columns).
    pub const ALL: [Sdk; 4] = [Sdk::Faultline, Sdk::UpstreamRust, Sdk::Js, Sdk::Go];

    /// The name scenario files and the command use.
    pub fn name(self) -> &'static str {
        match self {
            Sdk::Faultline => "faultline",
            Sdk::UpstreamRust => "upstream-rust",
            Sdk::Js => "js",
            Sdk::Go => "go",
            Sdk::Driver => "driver",
        }
    }

    /// Whether its sockets are faultline's own (so media faults can wrap them).
    pub fn in_process(self) -> bool {
        self == Sdk::Faultline
    }
}

impl fmt::Display for Sdk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Default for Sdk {
    /// faultline-sdk, the client this project builds.
    fn default() -> Self {
        Sdk::Faultline
    }
}

impl<'de> serde::Deserialize<'de> for Sdk {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Sdk {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sdk::ALL.into_iter().chain([Sdk::Driver]).find(|sdk| sdk.name() == s).ok_or_else(|| {
            format!(
                "unknown SDK {s:?}; the SDKs are faultline, upstream-rust, js, go and driver (a \
                 program of yours that speaks docs/driver-protocol.md, named by FAULTLINE_DRIVER)"
            )
        })
    }
}

/// The `SimulateScenario`s a schedule or a scenario file can ask for (faultline-sdk's, in a
/// writable form: `"signal-reconnect"`, …, `{ speaker = { secs = 2 } }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimulateKind {
    /// [`SimulateScenario::SignalReconnect`].
    SignalReconnect,
    /// [`SimulateScenario::FullReconnect`].
    FullReconnect,
    /// [`SimulateScenario::DisconnectSignalOnResume`].
    DisconnectSignalOnResume,
    /// [`SimulateScenario::DisconnectSignalOnResumeNoMessages`].
    DisconnectSignalOnResumeNoMessages,
    /// [`SimulateScenario::NodeFailure`].
    NodeFailure,
    /// [`SimulateScenario::Migration`].
    Migration,
    /// [`SimulateScenario::ServerLeave`].
    ServerLeave,
    /// [`SimulateScenario::ForceTcp`].
    ForceTcp,
    /// [`SimulateScenario::ForceTls`].
    ForceTls,
    /// [`SimulateScenario::Speaker`], for `secs` seconds.
    Speaker {
        /// Whole seconds.
        secs: u64,
    },
}

impl std::fmt::Display for SimulateKind {
    /// As files write it: `signal-reconnect`, `speaker (3 s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            SimulateKind::SignalReconnect => "signal-reconnect",
            SimulateKind::FullReconnect => "full-reconnect",
            SimulateKind::DisconnectSignalOnResume => "disconnect-signal-on-resume",
            SimulateKind::DisconnectSignalOnResumeNoMessages => {
                "disconnect-signal-on-resume-no-messages"
            }
            SimulateKind::NodeFailure => "node-failure",
            SimulateKind::Migration => "migration",
            SimulateKind::ServerLeave => "server-leave",
            SimulateKind::ForceTcp => "force-tcp",
            SimulateKind::ForceTls => "force-tls",
            SimulateKind::Speaker { secs } => return write!(f, "speaker ({secs} s)"),
        };
        f.write_str(name)
    }
}

impl From<SimulateKind> for SimulateScenario {
    fn from(scenario: SimulateKind) -> Self {
        match scenario {
            SimulateKind::SignalReconnect => SimulateScenario::SignalReconnect,
            SimulateKind::FullReconnect => SimulateScenario::FullReconnect,
            SimulateKind::DisconnectSignalOnResume => SimulateScenario::DisconnectSignalOnResume,
            SimulateKind::DisconnectSignalOnResumeNoMessages => {
                SimulateScenario::DisconnectSignalOnResumeNoMessages
            }
            SimulateKind::NodeFailure => SimulateScenario::NodeFailure,
            SimulateKind::Migration => SimulateScenario::Migration,
            SimulateKind::ServerLeave => SimulateScenario::ServerLeave,
            SimulateKind::ForceTcp => SimulateScenario::ForceTcp,
            SimulateKind::ForceTls => SimulateScenario::ForceTls,
            SimulateKind::Speaker { secs } => SimulateScenario::Speaker(Duration::from_secs(secs)),
        }
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

/// The source named `name` in the driver protocol (`microphone`, `camera`).
pub fn parse_source(name: &str) -> Option<TrackSource> {
    [TrackSource::Microphone, TrackSource::Camera].into_iter().find(|s| s.name() == name)
}

/// What a scenario participant publishes: `tracks = ["audio", "video"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackSpec {
    /// A microphone track (Opus).
    Audio,
    /// A camera track (VP8, 30 fps).
    Video,
}

impl TrackSpec {
    /// The source it publishes from.
    pub fn source(self) -> TrackSource {
        match self {
            TrackSpec::Audio => TrackSource::Microphone,
            TrackSpec::Video => TrackSource::Camera,
        }
    }
}

/// The frame rate of the video every client publishes for a scenario.
pub const VIDEO_FPS: u32 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_as_the_driver_protocol_spells_them() {
        assert_eq!(parse_source("camera"), Some(TrackSource::Camera));
        assert_eq!(parse_source("microphone"), Some(TrackSource::Microphone));
        assert_eq!(parse_source("screen_share"), None);
        assert_eq!(TrackSpec::Audio.source(), TrackSource::Microphone);
    }
}
