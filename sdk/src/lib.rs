//! faultline-sdk: a pure-Rust LiveKit client — signalling over WebSocket, WebRTC through
//! str0m, and a reconnect engine — whose API follows the upstream `livekit` crate.
//!
//! It never touches `tokio::net`, `std::time::Instant`, `SystemTime` or unseeded randomness
//! outside its seams ([`net`] for sockets, `tokio::time` for time, a seeded RNG for jitter),
//! so the same code runs on real sockets and inside a turmoil simulation.

pub mod net;
pub(crate) mod rtc;

mod engine;
mod error;
mod events;
mod options;
mod room;
pub mod signal;

pub use error::RoomError;
pub use events::{
    ConnectionState, DataPacket, DataPacketKind, DisconnectReason, RemoteParticipant, RoomEvent,
    SimulateScenario,
};
pub use options::{Jitter, ReconnectPolicy, RoomOptions};
pub use room::{LocalParticipant, Room};
