//! A real toxiproxy (pinned v2.12.0) for tests, and a typed async client for its REST API.
//!
//! [`Toxiproxy`] provisions and runs `toxiproxy-server` (`process.rs`); [`ToxiproxyClient`]
//! creates proxies and adds toxics, and [`ToxicGuard`] and [`DisabledGuard`] undo a toxic or
//! a disabled proxy when dropped (`client.rs`); [`Toxic`] says what a toxic does
//! (`toxic.rs`); [`ToxiproxyError`] is what any of them reports (`error.rs`).

mod client;
mod error;
mod process;
mod toxic;

pub use client::{DisabledGuard, Proxy, ProxyInfo, ToxicGuard, ToxiproxyClient};
pub use error::ToxiproxyError;
pub use process::{Toxiproxy, ToxiproxyOptions};
pub use toxic::{Stream, Toxic, ToxicInfo, ToxicKind};
