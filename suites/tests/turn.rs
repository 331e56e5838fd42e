//! TURN against a real livekit-server whose embedded relay is on (UDP, bound to 127.0.0.1,
//! allowed to relay towards 127.0.0.1 only). faultline-sdk allocates on the relay the join
//! response lists and offers a relayed candidate beside its host ones.
//!
//! A client behind a firewall that lets only the relay through joins through it. After a
//! `ForceTls`, livekit-server asks that identity's later sessions and resumes to use
//! relayed candidates only (`force_relay`): its next join uses the relay alone, so cutting
//! every other UDP path costs it nothing, and a network change then re-allocates.
//!
//! The switch to the relay in mid-session (a resume right after `ForceTls`) is tested in
//! the simulation (`sim_server.rs`): on the real server a resume asked at once can cross
//! the server's ICE-restart offer, and livekit-server then fails the negotiation and forces
//! a full reconnect (for any client), so it is no test of this client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline::net::NetFaults;
use faultline::server::{LiveKitServer, ServerOptions};
use faultline_sdk::{Room, RoomEvent, RoomOptions, SimulateScenario};

mod numbered;
mod real_lane;
mod two_peers;
use numbered::receives;
use real_lane::{join_at, unique_room, WAIT};
use two_peers::{alice_then_bob, faulty_options, kept_the_session, publish, PACKETS};

/// A livekit-server on loopback with its TURN relay on, and the relay's address.
async fn server_with_turn(name: &str) -> Result<(LiveKitServer, SocketAddr)> {
    let options = ServerOptions { name: Some(name.into()), turn: true, ..ServerOptions::default() };
    let server = LiveKitServer::start(options).await?;
    let port = server.ports().and_then(|p| p.turn).context("expected the TURN relay's port")?;
    Ok((server, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

/// Data flows both ways between alice and bob, alice kept `session`, and she reported
/// `Reconnecting` exactly `episodes` times.
async fn data_flows_in_the_same_session(
    (alice, alice_log): (&Room, &mut EventLog),
    (bob, bob_log): (&Room, &mut EventLog),
    session: &str,
    episodes: usize,
) -> Result<()> {
    publish(bob, "bob").await?;
    receives(alice_log, "bob", PACKETS, WAIT).await?;
    publish(alice, "alice").await?;
    receives(bob_log, "alice", PACKETS, WAIT).await?;
    let reconnecting = alice_log.count(|e| *e == RoomEvent::Reconnecting);
    ensure!(
        reconnecting == episodes,
        "expected alice to report Reconnecting {episodes} time(s), she did {reconnecting}:\n{}",
        alice_log.trace()
    );
    kept_the_session((alice, alice_log), (bob, bob_log), session)
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_client_that_can_reach_only_the_relay_joins_through_it() -> Result<()> {
    let (server, relay) = server_with_turn("turn-only").await?;
    let room_name = unique_room("turn-only");
    let (options, faults) = faulty_options();
    faults.block_udp_except(relay);
    let options = RoomOptions { pc_connect_timeout: Duration::from_secs(20), ..options };
    let ((alice, mut alice_log), (bob, mut bob_log)) =
        alice_then_bob(&server, &room_name, options).await?;
    let session = alice.local_participant().sid();
    data_flows_in_the_same_session((&alice, &mut alice_log), (&bob, &mut bob_log), &session, 0)
        .await?;
    let stats = faults.stats();
    ensure!(
        stats.datagrams_sent_dropped > 0,
        "alice's direct checks towards the server were all dropped, so something must have \
         been: {stats:?}"
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

/// Has the server take a `ForceTls` from `identity` in `room` (a session of its own, closed
/// after), so that the identity's next sessions there are told to force relay. The speaker
/// update asked after it can only come back once the server has handled the ForceTls
/// request before it on the same connection.
async fn force_tls_for(server: &LiveKitServer, room: &str, identity: &str) -> Result<()> {
    let (first, mut log) =
        join_at(server, &server.ws_url(), room, identity, RoomOptions::default()).await?;
    first.simulate_scenario(SimulateScenario::ForceTls).await?;
    first.simulate_scenario(SimulateScenario::Speaker(Duration::from_secs(1))).await?;
    log.wait_for(
        "the speaker update asked after ForceTls",
        WAIT,
        |e| matches!(e, RoomEvent::ActiveSpeakersChanged { speakers } if speakers.iter().any(|s| s == identity)),
    )
    .await?;
    first.close().await?;
    Ok(())
}

/// A server with its TURN relay and a room (both named `name`) where alice, told to force
/// relay ([`force_tls_for`]), joins with faults at hand, then bob.
async fn relay_only_alice_then_bob(
    name: &str,
) -> Result<(LiveKitServer, SocketAddr, NetFaults, (Room, EventLog), (Room, EventLog))> {
    let (server, relay) = server_with_turn(name).await?;
    let room_name = unique_room(name);
    force_tls_for(&server, &room_name, "alice").await?;
    let (options, faults) = faulty_options();
    let (alice, bob) = alice_then_bob(&server, &room_name, options).await?;
    Ok((server, relay, faults, alice, bob))
}

/// After a ForceTls, the identity's next join is told to force relay: alice uses her relayed
/// candidates only from the start, so cutting every other UDP path costs her nothing.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn after_force_tls_the_next_join_uses_the_relay_alone() -> Result<()> {
    let (_server, relay, faults, (alice, mut alice_log), (bob, mut bob_log)) =
        relay_only_alice_then_bob("turn-force-tls").await?;
    let session = alice.local_participant().sid();
    // Only the relay is reachable from now on: a client on its host path would lose both
    // peer connections here.
    faults.block_udp_except(relay);
    data_flows_in_the_same_session((&alice, &mut alice_log), (&bob, &mut bob_log), &session, 0)
        .await?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

/// A network change while the client uses the relay alone: its old socket's allocation is
/// gone with the old network, so the resume allocates anew from the new socket, with the
/// response's fresh credentials, and the session goes on through the relay.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_network_change_on_the_relay_allocates_anew_in_the_same_session() -> Result<()> {
    let (_server, relay, faults, (alice, mut alice_log), (bob, mut bob_log)) =
        relay_only_alice_then_bob("turn-handover").await?;
    let session = alice.local_participant().sid();
    faults.block_udp_except(relay);
    faults.change_network(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    alice_log
        .wait_for("Reconnected after the change", WAIT, |e| *e == RoomEvent::Reconnected)
        .await?;
    data_flows_in_the_same_session((&alice, &mut alice_log), (&bob, &mut bob_log), &session, 1)
        .await?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}
