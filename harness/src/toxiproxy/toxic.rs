//! What toxiproxy does to a proxied connection: the toxics (type, attributes, direction,
//! toxicity) faultline adds — as code builds them or scenario files write them — and the
//! toxics toxiproxy reports.

use std::fmt;
use std::time::Duration;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::scenario::format::duration;

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
///
/// Scenario files write it as an inline table tagged by `kind`, with durations where
/// toxiproxy takes milliseconds or microseconds, and the bandwidth as `rate_kbps`:
/// `{ kind = "latency", latency = "300ms", jitter = "100ms" }`. toxiproxy's API takes it as
/// `type` and `attributes` (see the [`Serialize`] impl).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToxicKind {
    /// Delays all data by `latency` ± `jitter` milliseconds.
    Latency {
        /// Milliseconds added.
        #[serde(deserialize_with = "millis")]
        latency: u64,
        /// Random ± milliseconds.
        #[serde(default, deserialize_with = "millis")]
        jitter: u64,
    },
    /// Limits throughput to `rate` KB/s.
    Bandwidth {
        /// KB per second.
        #[serde(rename = "rate_kbps")]
        rate: u64,
    },
    /// Delays the close of the connection by `delay` milliseconds.
    SlowClose {
        /// Milliseconds.
        #[serde(deserialize_with = "millis")]
        delay: u64,
    },
    /// Stops all data and closes the connection after `timeout` ms (0: never closes: a
    /// black hole).
    Timeout {
        /// Milliseconds; 0 keeps it open and silent forever.
        #[serde(default, deserialize_with = "millis")]
        timeout: u64,
    },
    /// Resets the connection (TCP RST) after `timeout` ms. Only connections opened after the
    /// toxic was added get a real RST.
    ResetPeer {
        /// Milliseconds.
        #[serde(default, deserialize_with = "millis")]
        timeout: u64,
    },
    /// Slices data into pieces of `average_size` ± `size_variation` bytes, `delay` µs apart.
    Slicer {
        /// Average slice size in bytes.
        average_size: u64,
        /// Variation of the slice size in bytes.
        #[serde(default)]
        size_variation: u64,
        /// Microseconds between slices.
        #[serde(default, deserialize_with = "micros")]
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

impl Serialize for ToxicKind {
    /// As toxiproxy's API takes it: `{"type": "latency", "attributes": {"latency": 300, …}}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let attributes = match *self {
            ToxicKind::Latency { latency, jitter } => {
                json!({ "latency": latency, "jitter": jitter })
            }
            ToxicKind::Bandwidth { rate } => json!({ "rate": rate }),
            ToxicKind::SlowClose { delay } => json!({ "delay": delay }),
            ToxicKind::Timeout { timeout } | ToxicKind::ResetPeer { timeout } => {
                json!({ "timeout": timeout })
            }
            ToxicKind::Slicer { average_size, size_variation, delay } => json!({
                "average_size": average_size, "size_variation": size_variation, "delay": delay,
            }),
            ToxicKind::LimitData { bytes } => json!({ "bytes": bytes }),
        };
        let mut fields = serializer.serialize_struct("ToxicKind", 2)?;
        fields.serialize_field("type", self.type_name())?;
        fields.serialize_field("attributes", &attributes)?;
        fields.end()
    }
}

impl fmt::Display for ToxicKind {
    /// Briefly: `latency 300ms ±100ms`, `timeout (black hole)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = Duration::from_millis;
        match *self {
            ToxicKind::Latency { latency, jitter: 0 } => write!(f, "latency {:?}", ms(latency)),
            ToxicKind::Latency { latency, jitter } => {
                write!(f, "latency {:?} ±{:?}", ms(latency), ms(jitter))
            }
            ToxicKind::Bandwidth { rate } => write!(f, "bandwidth {rate} KB/s"),
            ToxicKind::SlowClose { delay } => write!(f, "slow_close {:?}", ms(delay)),
            ToxicKind::Timeout { timeout: 0 } => f.write_str("timeout (black hole)"),
            ToxicKind::Timeout { timeout } => write!(f, "timeout {:?}", ms(timeout)),
            ToxicKind::ResetPeer { timeout: 0 } => f.write_str("reset_peer"),
            ToxicKind::ResetPeer { timeout } => write!(f, "reset_peer after {:?}", ms(timeout)),
            ToxicKind::Slicer { average_size, size_variation, delay } => write!(
                f,
                "slicer {average_size}±{size_variation} B every {:?}",
                Duration::from_micros(delay)
            ),
            ToxicKind::LimitData { bytes } => write!(f, "limit_data {bytes} B"),
        }
    }
}

/// A duration as scenario files write it (`300ms`), in whole milliseconds.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    duration(d).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration as scenario files write it (`2ms`), in whole microseconds.
fn micros<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    duration(d).map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toxic_is_sent_as_toxiproxy_takes_it() -> Result<(), serde_json::Error> {
        let latency =
            Toxic::new(ToxicKind::Latency { latency: 300, jitter: 100 }, Stream::Upstream)
                .named("fault-0")
                .with_toxicity(0.5);
        assert_eq!(
            serde_json::to_value(&latency)?,
            json!({
                "name": "fault-0", "stream": "upstream", "toxicity": 0.5,
                "type": "latency", "attributes": { "latency": 300, "jitter": 100 },
            })
        );
        let bandwidth = Toxic::new(ToxicKind::Bandwidth { rate: 4 }, Stream::Downstream);
        assert_eq!(
            serde_json::to_value(&bandwidth)?,
            json!({
                "name": "bandwidth_downstream", "stream": "downstream", "toxicity": 1.0,
                "type": "bandwidth", "attributes": { "rate": 4 },
            })
        );
        Ok(())
    }

    #[test]
    fn a_toxic_is_read_as_files_write_it() -> Result<(), toml::de::Error> {
        let read = |text: &str| toml::from_str::<ToxicKind>(text);
        assert_eq!(
            read("kind = \"latency\"\nlatency = \"1.5s\"\njitter = \"100ms\"")?,
            ToxicKind::Latency { latency: 1500, jitter: 100 }
        );
        assert_eq!(read("kind = \"bandwidth\"\nrate_kbps = 4")?, ToxicKind::Bandwidth { rate: 4 });
        assert_eq!(
            read("kind = \"slicer\"\naverage_size = 16\ndelay = \"2ms\"")?,
            ToxicKind::Slicer { average_size: 16, size_variation: 0, delay: 2000 }
        );
        assert_eq!(read("kind = \"reset_peer\"")?, ToxicKind::ResetPeer { timeout: 0 });
        Ok(())
    }
}
