//! What other participants see of a reconnecting peer, against the real livekit-server: a
//! resume is invisible to them; a full reconnect is a leave and a join of a new session.

mod real_lane;

use anyhow::{ensure, Result};
use faultline::check::EventLog;
use faultline_sdk::{DataPacket, Room, RoomEvent, SimulateScenario};
use real_lane::{assert_recovers, join, server, unique_room, WAIT};

/// `watcher` and `peer` in one room, with the watcher having seen the peer arrive.
async fn two_in_a_room(test: &str) -> Result<((Room, EventLog), (Room, EventLog))> {
    let server = server().await?;
    let room = unique_room(test);
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    watcher_log.check(watcher.connection_state())?;
    peer.close().await?;
    watcher.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    watcher_log.check(watcher.connection_state())?;
    peer.close().await?;
    watcher.close().await?;
    Ok(())
}
