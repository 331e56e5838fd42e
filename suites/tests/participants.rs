//! What other participants see of a reconnecting peer, against the real livekit-server: a
//! resume is invisible to them; a full reconnect is a leave and a join of a new session; and
//! a peer that left while a client's signalling was down is gone once that client resumes.

mod real_lane;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use faultline::event_log::EventLog;
use faultline::net::FaultyNetwork;
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{DataPacket, Room, RoomEvent, RoomOptions, SimulateScenario};
use real_lane::{assert_recovers, join, join_at, server, unique_room, WAIT};

/// `watcher` and `peer` in one room, with the watcher having seen the peer arrive.
async fn two_in_a_room(test: &str) -> Result<((Room, EventLog), (Room, EventLog))> {
    two_in_a_room_with(test, RoomOptions::default()).await
}

/// [`two_in_a_room`], the watcher joining with `options`.
async fn two_in_a_room_with(
    test: &str,
    options: RoomOptions,
) -> Result<((Room, EventLog), (Room, EventLog))> {
    let server = server().await?;
    let room = unique_room(test);
    let (watcher, mut watcher_log) =
        join_at(&server, &server.ws_url(), &room, "watcher", options).await?;
    let peer = join(&server, &room, "peer").await?;
    watcher_log
        .wait_for(
            "the peer joining",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == "peer"),
        )
        .await?;
    Ok(((watcher, watcher_log), peer))
}

/// Whether `event` is the peer joining or leaving.
fn peer_membership(event: &RoomEvent) -> bool {
    matches!(event,
        RoomEvent::ParticipantConnected(p) | RoomEvent::ParticipantDisconnected(p)
            if p.identity() == "peer")
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_resumed_peer_neither_leaves_nor_joins() -> Result<()> {
    let ((watcher, mut watcher_log), (peer, mut peer_log)) = two_in_a_room("resume-seen").await?;
    let before = watcher_log.count(peer_membership);
    assert_recovers(&peer, &mut peer_log, SimulateScenario::SignalReconnect).await?;

    // A marker sent after the resume: once the watcher has it, it has seen everything the
    // server told it about the resume.
    let marker = DataPacket { payload: b"after-resume".to_vec(), ..Default::default() };
    peer.local_participant().publish_data(marker).await?;
    watcher_log
        .wait_for("the peer's marker", WAIT, |e| {
            matches!(e, RoomEvent::DataReceived { payload, .. } if payload.as_slice() == b"after-resume")
        })
        .await?;
    ensure!(
        watcher_log.count(peer_membership) == before,
        "a resume must not look like a leave or a join to others:\n{}",
        watcher_log.trace()
    );
    let seen = watcher.remote_participants();
    ensure!(
        seen.get("peer").map(|p| p.sid().to_owned()) == Some(peer.local_participant().sid()),
        "the watcher still knows the peer under the same sid: {seen:?}"
    );
    watcher_log.judge(watcher.connection_state())?;
    peer.close().await?;
    watcher.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_fully_reconnected_peer_leaves_and_joins_again() -> Result<()> {
    let ((watcher, mut watcher_log), (peer, mut peer_log)) = two_in_a_room("full-seen").await?;
    let old_sid = peer.local_participant().sid();
    assert_recovers(&peer, &mut peer_log, SimulateScenario::FullReconnect).await?;
    let new_sid = peer.local_participant().sid();

    watcher_log
        .wait_for(
            "the peer's old session leaving",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.sid() == old_sid),
        )
        .await?;
    // The new session may have been announced before or after the old one left.
    let joined = watcher_log
        .events()
        .iter()
        .any(|r| matches!(&r.event, RoomEvent::ParticipantConnected(p) if p.sid() == new_sid));
    if !joined {
        watcher_log
            .wait_for(
                "the peer's new session joining",
                WAIT,
                |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.sid() == new_sid),
            )
            .await?;
    }
    ensure!(
        watcher.remote_participants().get("peer").map(|p| p.sid().to_owned()) == Some(new_sid),
        "the watcher knows the peer by its new sid"
    );
    watcher_log.judge(watcher.connection_state())?;
    peer.close().await?;
    watcher.close().await?;
    Ok(())
}

/// A peer leaves while the watcher hears nothing from the server but the server still hears
/// the watcher (a one-way cut). The server, having heard the watcher since the departure,
/// sends no departure after the watcher's resume (pkg/rtc/participant_signal.go
/// `sendDisconnectUpdatesForReconnect`), only the room's roster, which no longer names the
/// peer: the watcher must report the peer gone and stop listing it.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_peer_that_left_while_the_watcher_heard_nothing_is_gone_after_the_resume() -> Result<()> {
    let server = server().await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 19);
    let faults = network.faults();
    let options = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    let ((watcher, mut watcher_log), (peer, _)) =
        two_in_a_room_with("left-unheard", options).await?;
    let room = watcher.name();

    faults.deafen_signalling();
    peer.close().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.room_service().list_participants(&room).await?.iter().any(|p| p.identity == "peer")
    {
        ensure!(tokio::time::Instant::now() < deadline, "the server never removed the peer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A keepalive from the watcher after the departure: from now on the server counts the
    // watcher as having heard of it.
    let before = faults.stats().signalling_writes;
    let deadline = tokio::time::Instant::now() + WAIT;
    while faults.stats().signalling_writes == before {
        ensure!(tokio::time::Instant::now() < deadline, "the watcher sent no keepalive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        watcher_log.count(peer_membership) == 1,
        "the watcher cannot have heard the peer leave while deaf:\n{}",
        watcher_log.trace()
    );

    // The cut ends by resetting the watcher's signalling: it resumes.
    faults.heal_signalling();
    watcher_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    watcher_log
        .wait_for(
            "the peer's departure, from the roster",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == "peer"),
        )
        .await?;
    ensure!(
        !watcher.remote_participants().contains_key("peer"),
        "the peer is still listed: {:?}",
        watcher.remote_participants()
    );
    ensure!(
        watcher.local_participant().sid()
            == server
                .room_service()
                .list_participants(&room)
                .await?
                .iter()
                .find(|p| p.identity == "watcher")
                .map(|p| p.sid.clone())
                .unwrap_or_default(),
        "the watcher resumed its session (a full reconnect would list the room afresh)"
    );
    watcher_log.judge(watcher.connection_state())?;
    watcher.close().await?;
    Ok(())
}
