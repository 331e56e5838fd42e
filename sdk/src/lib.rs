//! faultline-sdk: a pure-Rust LiveKit client — signalling over WebSocket, WebRTC through
//! str0m, and a reconnect engine — whose API follows the upstream `livekit` crate.
//!
//! It never touches `tokio::net`, `std::time::Instant`, `SystemTime` or unseeded randomness
//! outside its seams ([`net`] for sockets, `tokio::time` for time, a seeded RNG for jitter),
//! so the same code runs on real sockets and inside a turmoil simulation.
//!
//! # Reliable data across reconnects
//!
//! [`LocalParticipant::publish_data`] says what it promises a sender. To receivers: every
//! reliable packet carries a 16-byte message id, which livekit-server uses to drop a repeat
//! of any of the room's last 100 user packets. A packet sent again after a resume or a full
//! reconnect therefore reaches each receiver once — on any SDK — while it is within that
//! window. Past it, a faultline-sdk receiver still delivers it once (it remembers the highest
//! sequence per sender), while a receiver on another SDK, which keys senders by session,
//! may get it twice.

pub mod media;
pub mod net;
pub(crate) mod rtc;

mod engine;
mod error;
mod events;
mod options;
mod room;
pub mod signal;
pub mod stun;

pub use error::RoomError;
pub use events::{
    ConnectionState, DataPacket, DataPacketKind, DisconnectReason, RemoteParticipant, RoomEvent,
    SimulateScenario,
};
pub use media::{
    LocalTrack, LocalTrackPublication, MediaStats, RemoteTrack, RemoteTrackPublication, TrackKind,
    TrackSource,
};
pub use options::{Jitter, ReconnectPolicy, RoomOptions};
pub use room::{LocalParticipant, Room};
