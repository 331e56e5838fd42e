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
use faultline::net::{Direction, FaultyNetwork};
use faultline::netns::{self, Topology};
use faultline::server::{LiveKitServer, ServerOptions};
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{ConnectionState, DataPacket, Room, RoomEvent, RoomOptions, SimulateScenario};

mod real_lane;
use real_lane::{join_at, unique_room, WAIT};

/// How many packets each way prove that data flows.
const PACKETS: u32 = 10;

/// Publishes `PACKETS` reliable packets on `topic` from `from`.
async fn publish(from: &Room, topic: &str) -> Result<()> {
    for n in 0..PACKETS {
        let packet = DataPacket {
            payload: n.to_be_bytes().to_vec(),
            topic: Some(topic.into()),
            ..Default::default()
        };
        tokio::time::timeout(WAIT, from.local_participant().publish_data(packet))
            .await
            .with_context(|| format!("publishing {topic} #{n} took over {WAIT:?}"))?
            .with_context(|| format!("publishing {topic} #{n}"))?;
    }
    Ok(())
}

/// Waits until `log` has all `PACKETS` packets on `topic`, each once and in order.
async fn receives(log: &mut EventLog, topic: &str) -> Result<()> {
    let mut got = Vec::new();
    while got.len() < PACKETS as usize {
        let event = log
            .wait_for(
                &format!("{topic} packet {}", got.len()),
                WAIT,
                |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == topic),
            )
            .await?;
        if let RoomEvent::DataReceived { payload, .. } = event {
            let bytes: [u8; 4] = payload.as_slice().try_into().context("a 4-byte payload")?;
            got.push(u32::from_be_bytes(bytes));
        }
    }
    let expected: Vec<u32> = (0..PACKETS).collect();
    ensure!(got == expected, "{topic}: expected {expected:?} once each in order, got {got:?}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn forcing_tcp_moves_the_client_onto_ice_tcp_in_the_same_session() -> Result<()> {
    if !netns::usable_in_tests()? {
        return Ok(());
    }
    let topology = Topology::create(0).await?;
    let options = ServerOptions {
        netns: Some(topology.server().clone()),
        name: Some("ice-tcp".into()),
        ..ServerOptions::default()
    };
    let server = LiveKitServer::start(options).await?;
    ensure!(
        server.ports().and_then(|p| p.ice_tcp).is_some(),
        "expected ICE/TCP on in the server's namespace: {server:?}"
    );
    let room_name = unique_room("ice-tcp");
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 1);
    let faults = network.faults();
    let options = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    let (alice, mut alice_log) =
        join_at(&server, &server.ws_url(), &room_name, "alice", options).await?;
    let (bob, mut bob_log) =
        join_at(&server, &server.ws_url(), &room_name, "bob", RoomOptions::default()).await?;
    alice_log
        .wait_for(
            "bob joining",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == "bob"),
        )
        .await?;
    let session = alice.local_participant().sid();

    alice.simulate_scenario(SimulateScenario::ForceTcp).await?;
    // Nothing arrives at alice over UDP any more: bob's packets can reach her only over TCP,
    // once her subscriber connection has followed the server's ICE restart onto it.
    faults.partition_media(Direction::Inbound);
    publish(&bob, "bob").await?;
    receives(&mut alice_log, "bob").await?;
    let stats = faults.stats();
    ensure!(stats.ice_tcp_opened > 0, "no ICE/TCP connection was opened: {stats:?}");
    faults.heal();
    publish(&alice, "alice").await?;
    receives(&mut bob_log, "alice").await?;

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
    if !netns::usable_in_tests()? {
        return Ok(());
    }
    let topology = Topology::create(0).await?;
    let options = ServerOptions {
        netns: Some(topology.server().clone()),
        name: Some("ice-tcp-only".into()),
        ..ServerOptions::default()
    };
    let server = LiveKitServer::start(options).await?;
    let room_name = unique_room("tcp-only");
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 1);
    let faults = network.faults();
    faults.partition_media(Direction::Both);
    let options = RoomOptions {
        network: Arc::new(network),
        pc_connect_timeout: Duration::from_secs(20),
        ..RoomOptions::default()
    };
    let (alice, mut alice_log) =
        join_at(&server, &server.ws_url(), &room_name, "alice", options).await?;
    let (bob, mut bob_log) =
        join_at(&server, &server.ws_url(), &room_name, "bob", RoomOptions::default()).await?;
    alice_log
        .wait_for(
            "bob joining",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == "bob"),
        )
        .await?;
    publish(&alice, "alice").await?;
    receives(&mut bob_log, "alice").await?;
    publish(&bob, "bob").await?;
    receives(&mut alice_log, "bob").await?;
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
