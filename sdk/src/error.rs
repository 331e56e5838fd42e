//! [`RoomError`]: everything a room operation can fail with.

use std::time::Duration;

use crate::signal::SignalError;
use crate::DisconnectReason;

/// Why a room operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// Signalling failed (bad URL, refused, rejected token, timeout, garbage from the server).
    #[error(transparent)]
    Signal(#[from] SignalError),
    /// The WebRTC transport failed.
    #[error("WebRTC: {0}")]
    Rtc(String),
    /// A step did not finish in time.
    #[error("timed out after {after:?} while {during}")]
    Timeout {
        /// The step.
        during: &'static str,
        /// The bound that ran out.
        after: Duration,
    },
    /// The connection broke while a step was under way.
    #[error("connection lost while {0}")]
    ConnectionLost(String),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The room is reconnecting; the operation needs a connected room.
    #[error("the room is reconnecting; try again after RoomEvent::Reconnected")]
    NotConnected,
    /// A track of this source is already published (one per source).
    #[error("a {} track is already published (one track per source)", .0.name())]
    TrackExists(crate::media::TrackSource),
    /// No local track of this source was published.
    #[error("no {} track was published", .0.name())]
    NoSuchTrack(crate::media::TrackSource),
    /// The room is disconnected for good.
    #[error("the room is closed (it was disconnected or close() was called)")]
    Closed,
    /// Every join attempt of [`crate::Room::connect`] failed ([`crate::RoomOptions::join_retries`]
    /// retries after the first); `last` is why the last one did.
    #[error("could not join after {attempts} attempts; the last one failed: {last}")]
    JoinFailed {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<RoomError>,
    },
    /// Data published while the room was reconnecting (or waiting for its channel) was not
    /// sent: the room disconnected first.
    #[error("the data was not sent: the room disconnected ({reason:?}) before it could be")]
    NotSent {
        /// Why the room disconnected.
        reason: DisconnectReason,
    },
    /// Too much data is waiting to be sent: the caller must wait for earlier
    /// `publish_data` calls (each completes once its packet is sent) before adding more.
    #[error(
        "{queued} bytes of data are already waiting to be sent (the limit is {limit}); await \
         the earlier publish_data calls before publishing more"
    )]
    SendQueueFull {
        /// Bytes waiting.
        queued: usize,
        /// The most that may wait.
        limit: usize,
    },
}

impl RoomError {
    /// Whether the server refused our credentials (HTTP 401/403): a new token is needed.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self.last_attempt(),
            RoomError::Signal(SignalError::Rejected { status: 401 | 403, .. })
        )
    }

    /// The error of the last attempt: for [`RoomError::JoinFailed`] the last join attempt's,
    /// otherwise this error itself.
    pub fn last_attempt(&self) -> &RoomError {
        match self {
            RoomError::JoinFailed { last, .. } => last.last_attempt(),
            other => other,
        }
    }
}
