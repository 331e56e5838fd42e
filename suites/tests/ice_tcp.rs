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

use std::time::Duration;

use anyhow::{ensure, Result};
use faultline::net::Direction;
use faultline::netns::{self, Topology};
use faultline::server::{LiveKitServer, ServerOptions};
use faultline_sdk::{RoomEvent, RoomOptions, SimulateScenario};

mod numbered;
mod real_lane;
mod two_peers;
use numbered::receives;
use real_lane::{unique_room, WAIT};
use two_peers::{alice_then_bob, faulty_options, kept_the_session, publish, PACKETS};

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
    kept_the_session((&alice, &mut alice_log), (&bob, &mut bob_log), &session)?;
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
