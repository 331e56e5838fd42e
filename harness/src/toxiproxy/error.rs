//! The error of every toxiproxy operation: starting toxiproxy-server, and calling its API.

use crate::provision::ProvisionError;
use crate::startup::{NeverReady, SpawnFailed};
use crate::supervise::ProcessDied;

/// A toxiproxy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    /// No binary or container could be had.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The process could not be spawned.
    #[error(transparent)]
    Spawn(#[from] SpawnFailed),
    /// The process runs but never answered `GET /version`; it was killed.
    #[error(transparent)]
    NotReady(#[from] NeverReady),
    /// The toxiproxy process is not running.
    #[error(transparent)]
    Died(#[from] ProcessDied),
    /// The API answered with an error (404 not found, 409 already exists, 400 bad request).
    #[error("toxiproxy {method} {path}: HTTP {status}: {message}")]
    Api {
        /// The HTTP method.
        method: &'static str,
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Toxiproxy's message.
        message: String,
    },
    /// The request could not be sent, or the answer not read.
    #[error("toxiproxy {method} {url}: {reason}")]
    Transport {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl ToxiproxyError {
    /// The HTTP status of an API error (e.g. 404, 409), if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ToxiproxyError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
