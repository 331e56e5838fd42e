//! The simulation lane: faultline-sdk, unchanged, inside a deterministic turmoil
//! simulation against a simulated LiveKit server.
//!
//! - [`network`]: the SDK's network seam over turmoil's TCP and UDP.
//! - [`server`]: the simulated LiveKit server (a test double for this lane).
//! - [`schedule`]: fault schedules — what goes wrong, where, when — as replayable values.
//! - [`explore`]: runs schedules against the invariants, generates random ones, shrinks
//!   failures, and replays them.
//! - [`Sim`]: a builder that puts a server host and client hosts into one seeded
//!   simulation and records what each room reports, with the simulated time.

pub mod explore;
pub mod network;
pub mod schedule;
pub mod server;
mod world;

pub use network::TurmoilNetwork;
pub(crate) use world::wall_clock;
pub use world::{ClientContext, Sim, SimError, Trace, SERVER_HOST};
