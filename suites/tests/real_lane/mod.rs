//! What the real-lane suites share: joining a room on the shared livekit-server with a fresh
//! identity, fast reconnect policies, and the "recovers from a scenario" check.

#![allow(dead_code)] // each test binary uses a different part of it

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::check::EventLog;
use faultline::server::LiveKitServer;
use faultline_sdk::{
    ConnectionState, Jitter, ReconnectPolicy, Room, RoomEvent, RoomOptions, SimulateScenario,
};

/// Generous bound on one wait for an event in these suites.
pub const WAIT: Duration = Duration::from_secs(30);

/// A room name no other test (in any process) uses.
pub fn unique_room(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The shared server, with the reason in the error if it cannot be had.
pub async fn server() -> Result<Arc<LiveKitServer>> {
    LiveKitServer::shared().await.context("starting the shared livekit-server")
}

/// A reconnect policy that runs out in about a second.
pub fn fast_options() -> RoomOptions {
    RoomOptions {
        reconnect: ReconnectPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_millis(400),
            jitter: Jitter::Full,
        },
        connect_timeout: Duration::from_secs(2),
        join_timeout: Duration::from_secs(2),
        ..RoomOptions::default()
    }
}

/// Joins `room` on `url` as `identity`; returns the room and its recorded events, after
/// checking it reports `Connected`.
pub async fn join_at(
    server: &LiveKitServer,
    url: &str,
    room: &str,
    identity: &str,
    options: RoomOptions,
) -> Result<(Room, EventLog)> {
    let token = server.token(room, identity)?;
    let (joined, events) = Room::connect(url, &token, options).await.with_context(|| {
        format!("{identity} joining {room} at {url}; server log: {:?}", server.log_path())
    })?;
    let mut log = EventLog::new(events);
    log.wait_for("Connected", WAIT, |e| *e == RoomEvent::Connected).await?;
    ensure!(joined.connection_state() == ConnectionState::Connected, "a joined room is Connected");
    Ok((joined, log))
}

/// Joins `room` on the server directly.
pub async fn join(server: &LiveKitServer, room: &str, identity: &str) -> Result<(Room, EventLog)> {
    join_at(server, &server.ws_url(), room, identity, RoomOptions::default()).await
}

/// Makes `scenario` happen and checks the room goes `Reconnecting` → `Reconnected` and ends
/// `Connected`, with the invariants holding.
pub async fn assert_recovers(
    room: &Room,
    log: &mut EventLog,
    scenario: SimulateScenario,
) -> Result<()> {
    room.simulate_scenario(scenario).await.with_context(|| format!("simulating {scenario:?}"))?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(
        room.connection_state() == ConnectionState::Connected,
        "after Reconnected the room must be Connected, it is {:?}\n{}",
        room.connection_state(),
        log.trace()
    );
    log.check(room.connection_state())?;
    Ok(())
}
