//! alice and bob in one room on a real server, for suites that check a transport change keeps
//! alice's session: joining them, numbered data both ways, and the checks that she kept it.

#![allow(dead_code)] // each test binary uses a different part of it

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline::net::{FaultyNetwork, NetFaults};
use faultline::server::LiveKitServer;
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{ConnectionState, Room, RoomEvent, RoomOptions};

use crate::numbered::numbered;
use crate::real_lane::{join_at, WAIT};

/// How many packets each way prove that data flows.
pub const PACKETS: u32 = 10;

/// Publishes packets `0..PACKETS` on `topic` from `from`.
pub async fn publish(from: &Room, topic: &str) -> Result<()> {
    for n in 0..PACKETS {
        tokio::time::timeout(WAIT, from.local_participant().publish_data(numbered(topic, n)))
            .await
            .with_context(|| format!("publishing {topic} #{n} took over {WAIT:?}"))?
            .with_context(|| format!("publishing {topic} #{n}"))?;
    }
    Ok(())
}

/// Room options whose sockets go through a fault wrapper, and its switches.
pub fn faulty_options() -> (RoomOptions, NetFaults) {
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 1);
    let faults = network.faults();
    (RoomOptions { network: Arc::new(network), ..RoomOptions::default() }, faults)
}

/// alice (with `options`) and then bob join `room`; returns both once alice has seen bob.
pub async fn alice_then_bob(
    server: &LiveKitServer,
    room: &str,
    options: RoomOptions,
) -> Result<((Room, EventLog), (Room, EventLog))> {
    let (alice, mut alice_log) = join_at(server, &server.ws_url(), room, "alice", options).await?;
    let bob = join_at(server, &server.ws_url(), room, "bob", RoomOptions::default()).await?;
    alice_log
        .wait_for(
            "bob joining",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == "bob"),
        )
        .await?;
    Ok(((alice, alice_log), bob))
}

/// alice is still in `session` and `Connected`, bob never saw her leave, and both logs hold
/// the invariants.
pub fn kept_the_session(
    (alice, alice_log): (&Room, &mut EventLog),
    (bob, bob_log): (&Room, &mut EventLog),
    session: &str,
) -> Result<()> {
    ensure!(
        alice.local_participant().sid() == session,
        "expected the session {session} kept, got a new session {}\n{}",
        alice.local_participant().sid(),
        alice_log.trace()
    );
    ensure!(
        alice.connection_state() == ConnectionState::Connected,
        "alice ends {:?}\n{}",
        alice.connection_state(),
        alice_log.trace()
    );
    ensure!(
        bob_log.count(
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == "alice")
        ) == 0,
        "bob saw alice leave:\n{}",
        bob_log.trace()
    );
    alice_log.judge(alice.connection_state())?;
    bob_log.judge(bob.connection_state())?;
    Ok(())
}
