//! What the real livekit-server does to a client, and that the client ends up where the
//! server meant: simulated node failure and migration (the session is gone: a full
//! reconnect), a server leave, RoomService's RemoveParticipant and DeleteRoom (disconnected,
//! with the server's reason), and a quiet minute (a client with real WebRTC stays in the
//! room past the server's 60 s join-failure deadline).

mod numbered;
mod real_lane;
mod two_peers;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::{EventLog, WaitError};
use faultline_sdk::{
    ConnectionState, DisconnectReason, Jitter, ReconnectPolicy, Room, RoomEvent, RoomOptions,
    SimulateScenario,
};
use livekit_protocol::participant_info::State;
use numbered::receives;
use real_lane::{assert_recovers, fast_options, join, join_at, server, unique_room, WAIT};
use two_peers::{alice_then_bob, kept_the_session, publish, PACKETS};

/// Waits for the room to end and checks it ended once, with `reason`, for good.
async fn expect_disconnected(
    room: &Room,
    log: &mut EventLog,
    reason: DisconnectReason,
) -> Result<()> {
    let ended =
        log.wait_for("Disconnected", WAIT, |e| matches!(e, RoomEvent::Disconnected { .. })).await?;
    ensure!(
        ended == RoomEvent::Disconnected { reason },
        "expected Disconnected {{ {reason:?} }}, got {ended:?}\n{}",
        log.trace()
    );
    log.wait_ended(WAIT).await?;
    ensure!(room.connection_state() == ConnectionState::Disconnected);
    ensure!(
        log.count(|e| *e == RoomEvent::Reconnecting) == 0,
        "a server decision to disconnect is obeyed, not fought with reconnects:\n{}",
        log.trace()
    );
    log.judge(room.connection_state())?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn node_failure_ends_in_a_full_reconnect() -> Result<()> {
    let server = server().await?;
    let (room, mut log) = join(&server, &unique_room("node-failure"), "p0").await?;
    let sid = room.local_participant().sid();
    assert_recovers(&room, &mut log, SimulateScenario::NodeFailure).await?;
    ensure!(
        room.local_participant().sid() != sid,
        "the server dropped the session, so only a new one (new sid) can recover"
    );
    room.close().await?;
    Ok(())
}

/// The server answers the resume after a node failure with `Leave{RECONNECT}`: it has said
/// what will work, so the full reconnect follows at once, not after the policy's delay (here
/// 10 s, which the whole episode must stay well under).
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_resume_refused_with_a_leave_is_followed_by_a_full_reconnect_at_once() -> Result<()> {
    let server = server().await?;
    let delay = Duration::from_secs(10);
    let options = RoomOptions {
        reconnect: ReconnectPolicy {
            attempts: 3,
            base_delay: delay,
            multiplier: 1.0,
            max_delay: delay,
            jitter: Jitter::None,
        },
        ..RoomOptions::default()
    };
    let (room, mut log) =
        join_at(&server, &server.ws_url(), &unique_room("leave-retry-now"), "p0", options).await?;
    let sid = room.local_participant().sid();
    room.simulate_scenario(SimulateScenario::NodeFailure).await?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    let began = log.first_at(|e| *e == RoomEvent::Reconnecting).context("no Reconnecting")?;
    let ended = log.first_at(|e| *e == RoomEvent::Reconnected).context("no Reconnected")?;
    ensure!(room.local_participant().sid() != sid, "a full reconnect: a new session");
    ensure!(
        ended - began < delay / 2,
        "the full reconnect must not wait out the {delay:?} delay: the episode took {:?}\n{}",
        ended - began,
        log.trace()
    );
    log.judge(room.connection_state())?;
    room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn migration_on_a_single_node_ends_in_a_full_reconnect() -> Result<()> {
    let server = server().await?;
    let (room, mut log) = join(&server, &unique_room("migration"), "p0").await?;
    let sid = room.local_participant().sid();
    assert_recovers(&room, &mut log, SimulateScenario::Migration).await?;
    ensure!(room.local_participant().sid() != sid, "a single node has nowhere to migrate to");
    room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_server_leave_disconnects_with_server_shutdown() -> Result<()> {
    let server = server().await?;
    let (room, mut log) = join(&server, &unique_room("server-leave"), "p0").await?;
    room.simulate_scenario(SimulateScenario::ServerLeave).await?;
    expect_disconnected(&room, &mut log, DisconnectReason::ServerShutdown).await
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn remove_participant_disconnects_with_participant_removed() -> Result<()> {
    let server = server().await?;
    let name = unique_room("remove");
    let (room, mut log) = join(&server, &name, "p0").await?;
    server.room_service().remove_participant(&name, "p0").await?;
    expect_disconnected(&room, &mut log, DisconnectReason::ParticipantRemoved).await
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn delete_room_disconnects_with_room_deleted() -> Result<()> {
    let server = server().await?;
    let name = unique_room("delete");
    let (room, mut log) = join(&server, &name, "p0").await?;
    server.room_service().delete_room(&name).await?;
    expect_disconnected(&room, &mut log, DisconnectReason::RoomDeleted).await
}

/// Slow by design: the server removes a participant whose peer connection never connected
/// 60 s after it joined, so staying past that proves the WebRTC path is real.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_joined_participant_stays_past_the_servers_join_deadline() -> Result<()> {
    let server = server().await?;
    let name = unique_room("stays");
    let (room, mut log) = join(&server, &name, "p0").await?;
    let quiet = Duration::from_secs(70);
    match log.wait_for("no lifecycle event for 70 s", quiet, RoomEvent::is_lifecycle).await {
        Err(WaitError::Timeout { .. }) => {}
        Ok(event) => anyhow::bail!("the room changed state while idle: {event:?}\n{}", log.trace()),
        Err(other) => return Err(other.into()),
    }
    ensure!(room.connection_state() == ConnectionState::Connected);
    let participants = server.room_service().list_participants(&name).await?;
    let me = participants
        .iter()
        .find(|p| p.identity == "p0")
        .with_context(|| format!("p0 is still in {name} after {quiet:?}: {participants:?}"))?;
    ensure!(me.state == State::Active as i32, "the server sees p0 as active: {me:?}");
    ensure!(me.sid == room.local_participant().sid(), "and as the same session");
    log.judge(room.connection_state())?;
    room.close().await?;
    Ok(())
}

/// ForceTcp makes the server restart this participant's ICE with TCP candidates only, and
/// remember that for the identity. This server has ICE/TCP off (it binds loopback only), so
/// there are no TCP candidates: neither the resume nor a full reconnect can connect, and the
/// room must not hang but end, once, within its policy's bound. (Where the server has
/// ICE/TCP the client moves onto it: `ice_tcp.rs`.)
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn forcing_tcp_on_a_server_without_ice_tcp_ends_in_one_disconnected() -> Result<()> {
    let server = server().await?;
    let options = RoomOptions { pc_connect_timeout: Duration::from_secs(3), ..fast_options() };
    let bound = options.reconnect_bound();
    let (room, mut log) =
        join_at(&server, &server.ws_url(), &unique_room("force-tcp"), "p0", options).await?;
    room.simulate_scenario(SimulateScenario::ForceTcp).await?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    let ended = log
        .wait_for("Disconnected", bound, |e| matches!(e, RoomEvent::Disconnected { .. }))
        .await?;
    ensure!(
        log.count(|e| *e == RoomEvent::Reconnected) == 0,
        "a server without ICE/TCP offers no TCP candidates to connect to; it did?\n{}",
        log.trace()
    );
    log.wait_ended(WAIT).await?;
    ensure!(room.connection_state() == ConnectionState::Disconnected, "{ended:?}");
    log.judge(room.connection_state())?;
    Ok(())
}

/// ForceTls makes the server restart this participant's subscriber ICE with a TLS preference,
/// which filters no candidate (`SetPreferTCP(false)`); the server only tells later sessions
/// and resumes of the identity to force relay. This server has no TURN, so the ICE restart
/// stays on UDP and the session goes on: past the server's ICE timeouts (15 s) alice has no
/// episode and keeps her session, data flows both ways, and bob never sees her leave.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn forcing_tls_on_a_server_without_turn_keeps_the_session() -> Result<()> {
    let server = server().await?;
    let room_name = unique_room("force-tls");
    let ((alice, mut alice_log), (bob, mut bob_log)) =
        alice_then_bob(&server, &room_name, RoomOptions::default()).await?;
    let session = alice.local_participant().sid();

    alice.simulate_scenario(SimulateScenario::ForceTls).await?;
    let quiet = Duration::from_secs(20);
    match alice_log.wait_for("no lifecycle event for 20 s", quiet, RoomEvent::is_lifecycle).await {
        Err(WaitError::Timeout { .. }) => {}
        Ok(event) => anyhow::bail!("alice changed state: {event:?}\n{}", alice_log.trace()),
        Err(other) => return Err(other.into()),
    }
    publish(&bob, "bob").await?;
    receives(&mut alice_log, "bob", PACKETS, WAIT).await?;
    publish(&alice, "alice").await?;
    receives(&mut bob_log, "alice", PACKETS, WAIT).await?;
    ensure!(
        alice_log.count(|e| *e == RoomEvent::Reconnecting) == 0,
        "alice reconnected:\n{}",
        alice_log.trace()
    );
    kept_the_session((&alice, &mut alice_log), (&bob, &mut bob_log), &session)?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_simulated_speaker_is_reported_speaking_then_silent() -> Result<()> {
    let server = server().await?;
    let (room, mut log) = join(&server, &unique_room("speaker"), "p0").await?;
    room.simulate_scenario(SimulateScenario::Speaker(Duration::from_secs(1))).await?;
    log.wait_for(
        "p0 speaking",
        WAIT,
        |e| matches!(e, RoomEvent::ActiveSpeakersChanged { speakers } if speakers == &["p0"]),
    )
    .await?;
    log.wait_for(
        "p0 silent again",
        WAIT,
        |e| matches!(e, RoomEvent::ActiveSpeakersChanged { speakers } if speakers.is_empty()),
    )
    .await?;
    ensure!(room.connection_state() == ConnectionState::Connected);
    room.close().await?;
    Ok(())
}
