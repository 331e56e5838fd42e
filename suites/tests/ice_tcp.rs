//! ICE over TCP against a real livekit-server whose ICE/TCP listener is on. That listener
//! binds every interface, so the server runs in a network namespace of its own
//! (faultline::netns), where it reaches nothing else; faultline-sdk runs in the root
//! namespace and reaches it over the root link.
//!
//! `ForceTcp` has the server restart the participant's ICE with TCP candidates only: a
//! client that speaks ICE/TCP follows it onto TCP and keeps its session, the others never
//! see it leave, and data flows both ways. (On the loopback server, with ICE/TCP off, the
//! same scenario ends in one `Disconnected`: `server_actions.rs`.) A client whose UDP is
//! blocked from the start joins over TCP.
//!
//! These tests need Linux and root, as the kernel-fault suite does (`netns.rs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline::net::{Direction, FaultyNetwork, NetFaults};
use faultline::netns::{self, Topology};
use faultline::server::{LiveKitServer, ServerOptions};
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{ConnectionState, Room, RoomEvent, RoomOptions, SimulateScenario};

mod numbered;
mod real_lane;
use numbered::{numbered, receives};
use real_lane::{join_at, unique_room, WAIT};

/// How many packets each way prove that data flows.
const PACKETS: u32 = 10;

/// Publishes packets `0..PACKETS` on `topic` from `from`.
async fn publish(from: &Room, topic: &str) -> Result<()> {
    for n in 0..PACKETS {
        tokio::time::timeout(WAIT, from.local_participant().publish_data(numbered(topic, n)))
            .await
            .with_context(|| format!("publishing {topic} #{n} took over {WAIT:?}"))?
            .with_context(|| format!("publishing {topic} #{n}"))?;
    }
    Ok(())
}

/// A livekit-server with ICE/TCP on, in a network namespace of its own, or `None` (after
/// saying why) where namespaces cannot be had and are not required. The topology must live
/// as long as the server.
async fn server_with_ice_tcp(name: &str) -> Result<Option<(Topology, LiveKitServer)>> {
    if !netns::usable_in_tests()? {
        return Ok(None);
    }
    let topology = Topology::create(0).await?;
    let options = ServerOptions {
        netns: Some(topology.server().clone()),
        name: Some(name.into()),
        ..ServerOptions::default()
    };
    let server = LiveKitServer::start(options).await?;
    ensure!(
        server.ports().and_then(|p| p.ice_tcp).is_some(),
        "expected ICE/TCP on in the server's namespace: {server:?}"
    );
    Ok(Some((topology, server)))
}

/// alice (with `options`) and then bob join `room`; returns both once alice has seen bob.
async fn alice_then_bob(
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

/// Room options whose sockets go through a fault wrapper, and its switches.
fn faulty_options() -> (RoomOptions, NetFaults) {
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 1);
    let faults = network.faults();
    (RoomOptions { network: Arc::new(network), ..RoomOptions::default() }, faults)
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn forcing_tcp_moves_the_client_onto_ice_tcp_in_the_same_session() -> Result<()> {
    let Some((_topology, server)) = server_with_ice_tcp("ice-tcp").await? else { return Ok(()) };
    let room_name = unique_room("ice-tcp");
    let (options, faults) = faulty_options();
    let ((alice, mut alice_log), (bob, mut bob_log)) =
        alice_then_bob(&server, &room_name, options).await?;
    let session = alice.local_participant().sid();

    alice.simulate_scenario(SimulateScenario::ForceTcp).await?;
    // Nothing arrives at alice over UDP any more: bob's packets can reach her only over TCP,
    // once her subscriber connection has followed the server's ICE restart onto it.
    faults.block_udp(Direction::Inbound);
    publish(&bob, "bob").await?;
    receives(&mut alice_log, "bob", PACKETS, WAIT).await?;
    let stats = faults.stats();
    ensure!(stats.ice_tcp_opened > 0, "no ICE/TCP connection was opened: {stats:?}");
    faults.heal();
    publish(&alice, "alice").await?;
    receives(&mut bob_log, "alice", PACKETS, WAIT).await?;

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
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

/// A client that only has TCP from the start (UDP blocked by a firewall before it joins)
/// still joins and exchanges data: its first ICE checks on UDP go unanswered and the TCP
/// pair is chosen instead.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_client_without_udp_joins_over_ice_tcp() -> Result<()> {
    let Some((_topology, server)) = server_with_ice_tcp("ice-tcp-only").await? else {
        return Ok(());
    };
    let room_name = unique_room("tcp-only");
    let (options, faults) = faulty_options();
    faults.block_udp(Direction::Both);
    let options = RoomOptions { pc_connect_timeout: Duration::from_secs(20), ..options };
    let ((alice, mut alice_log), (bob, mut bob_log)) =
        alice_then_bob(&server, &room_name, options).await?;
    publish(&alice, "alice").await?;
    receives(&mut bob_log, "alice", PACKETS, WAIT).await?;
    publish(&bob, "bob").await?;
    receives(&mut alice_log, "bob", PACKETS, WAIT).await?;
    let stats = faults.stats();
    ensure!(
        stats.datagrams_sent > 0 && stats.datagrams_sent == stats.datagrams_sent_dropped,
        "every UDP datagram alice sent was dropped, yet data flowed: {stats:?}"
    );
    ensure!(
        alice_log.count(|e| *e == RoomEvent::Reconnecting) == 0,
        "alice never needed to reconnect:\n{}",
        alice_log.trace()
    );
    alice_log.judge(alice.connection_state())?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}
