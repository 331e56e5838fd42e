//! What a scenario expects of a run: its `[[expect]]` tables.

use std::time::Duration;

use serde::Deserialize;

use super::durations::{duration, opt_duration};
use crate::vocab::TrackSpec;

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
