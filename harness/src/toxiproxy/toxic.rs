//! What toxiproxy does to a proxied connection: the toxics (type, attributes, direction,
//! toxicity) faultline adds, and the toxics toxiproxy reports.

use serde::{Deserialize, Serialize};

/// Which direction of a proxied connection a toxic acts on (in files and toxiproxy's API:
/// `upstream`, `downstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → server.
    Upstream,
    /// Server → client.
    #[default]
    Downstream,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        })
    }
}

/// A toxic type and its attributes, in toxiproxy's units.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Delays all data by `latency` ± `jitter` milliseconds.
    Latency {
        /// Milliseconds added.
        latency: u64,
        /// Random ± milliseconds.
        jitter: u64,
    },
    /// Limits throughput to `rate` KB/s.
    Bandwidth {
        /// KB per second.
        rate: u64,
    },
    /// Delays the close of the connection by `delay` milliseconds.
    SlowClose {
        /// Milliseconds.
        delay: u64,
    },
    /// Stops all data and closes the connection after `timeout` ms (0: never closes: a
    /// black hole).
    Timeout {
        /// Milliseconds; 0 keeps it open and silent forever.
        timeout: u64,
    },
    /// Resets the connection (TCP RST) after `timeout` ms. Only connections opened after the
    /// toxic was added get a real RST.
    ResetPeer {
        /// Milliseconds.
        timeout: u64,
    },
    /// Slices data into pieces of `average_size` ± `size_variation` bytes, `delay` µs apart.
    Slicer {
        /// Average slice size in bytes.
        average_size: u64,
        /// Variation of the slice size in bytes.
        size_variation: u64,
        /// Microseconds between slices.
        delay: u64,
    },
    /// Closes the connection once `bytes` bytes have passed.
    LimitData {
        /// Bytes allowed through.
        bytes: u64,
    },
}

impl ToxicKind {
    /// The toxiproxy type name (`latency`, `reset_peer`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
        }
    }
}

/// A toxic to add to a proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Toxic {
    /// Its name, unique within the proxy.
    pub name: String,
    /// The direction it acts on.
    pub stream: Stream,
    /// The probability (0.0–1.0) that it applies to a given connection.
    pub toxicity: f32,
    /// Its type and attributes.
    #[serde(flatten)]
    pub kind: ToxicKind,
}

impl Toxic {
    /// A toxic on `stream` that applies to every connection, named `<type>_<stream>`.
    pub fn new(kind: ToxicKind, stream: Stream) -> Self {
        let direction = match stream {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        };
        Self { name: format!("{}_{direction}", kind.type_name()), stream, toxicity: 1.0, kind }
    }

    /// Sets the name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Sets the toxicity (probability per connection).
    pub fn with_toxicity(mut self, toxicity: f32) -> Self {
        self.toxicity = toxicity;
        self
    }
}

/// A toxic as toxiproxy reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToxicInfo {
    /// Its name.
    pub name: String,
    /// Its type name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its direction.
    pub stream: Stream,
    /// Its toxicity.
    pub toxicity: f32,
    /// Its attributes.
    pub attributes: serde_json::Value,
}
