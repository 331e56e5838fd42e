//! faultline-sdk's media on the real server: tracks published with synthetic sources reach a
//! subscriber, a resume keeps them (same sids, frames back after a key frame), a full
//! reconnect republishes them (new sids, `LocalTrackRepublished`) and leaves every receiver
//! exactly one live track per source, and a mute stops frames and survives a full reconnect.

mod media_flow;
mod real_lane;

use anyhow::{ensure, Result};
use faultline::event_log::EventLog;
use faultline_sdk::{LocalTrack, Room, RoomEvent, RoomOptions, SimulateScenario, TrackSource};
use media_flow::{advances, frames_from, subscriptions};
use real_lane::{assert_recovers, join_at, server, unique_room, WAIT};

const SOURCES: [TrackSource; 2] = [TrackSource::Microphone, TrackSource::Camera];

/// alice and bob in a fresh room, alice publishing audio and 30 fps video; returns once bob
/// receives frames of both.
async fn alice_publishes(test: &str) -> Result<((Room, EventLog), (Room, EventLog))> {
    let server = server().await?;
    let room = unique_room(test);
    let url = server.ws_url();
    let alice = join_at(&server, &url, &room, "alice", RoomOptions::default()).await?;
    let bob = join_at(&server, &url, &room, "bob", RoomOptions::default()).await?;
    let local = alice.0.local_participant();
    for track in [LocalTrack::audio("mic"), LocalTrack::video("cam", 30)] {
        let publication = tokio::time::timeout(WAIT, local.publish_track(track)).await??;
        ensure!(publication.sid().starts_with("TR_"), "a server track sid: {publication:?}");
    }
    for source in SOURCES {
        frames_from(&bob.0, "alice", source, 5, None).await?;
    }
    Ok((alice, bob))
}

/// Every local track's sid at `room`, by source.
fn local_sids(room: &Room) -> Vec<(TrackSource, String)> {
    let mut sids: Vec<_> = room
        .local_participant()
        .track_publications()
        .into_iter()
        .map(|p| (p.source(), p.sid().to_owned()))
        .collect();
    sids.sort();
    sids
}

#[test_log::test(tokio::test)]
async fn published_audio_and_video_reach_a_subscriber_and_video_starts_with_a_key_frame(
) -> Result<()> {
    let ((alice, mut alice_log), (bob, mut bob_log)) = alice_publishes("media-basic").await?;
    alice_log.poll();
    bob_log.poll();
    ensure!(
        alice_log.count(|e| matches!(e, RoomEvent::LocalTrackPublished { .. })) == 2,
        "two LocalTrackPublished:\n{}",
        alice_log.trace()
    );
    for source in SOURCES {
        ensure!(
            bob_log
                .count(|e| matches!(e, RoomEvent::TrackSubscribed { publication, participant, .. }
                if publication.source() == source && participant.identity() == "alice"))
                == 1,
            "one TrackSubscribed for alice's {source:?}:\n{}",
            bob_log.trace()
        );
    }
    let video = frames_from(&bob, "alice", TrackSource::Camera, 0, None).await?;
    ensure!(
        video.stats().key_frames >= 1,
        "the first video frame is a key frame: {:?}",
        video.stats()
    );
    advances(&video, 30).await?;
    let audio = frames_from(&bob, "alice", TrackSource::Microphone, 0, None).await?;
    advances(&audio, 100).await?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_resume_keeps_the_tracks_and_their_frames_come_back() -> Result<()> {
    let ((alice, mut alice_log), (bob, mut bob_log)) = alice_publishes("media-resume").await?;
    let before = local_sids(&alice);
    assert_recovers(&alice, &mut alice_log, SimulateScenario::SignalReconnect).await?;
    ensure!(
        local_sids(&alice) == before,
        "a resume keeps the sids: {before:?} → {:?}",
        local_sids(&alice)
    );
    for source in SOURCES {
        let tracks = subscriptions(&bob, "alice", source);
        ensure!(tracks.len() == 1, "bob keeps one {source:?} track of alice's: {tracks:?}");
        advances(&tracks[0], 10).await?;
    }
    // The subscriber's own resume: its new ICE session gets video only after a key frame,
    // which alice sends when the server asks.
    let video = subscriptions(&bob, "alice", TrackSource::Camera).remove(0);
    let keys = video.stats().key_frames;
    assert_recovers(&bob, &mut bob_log, SimulateScenario::SignalReconnect).await?;
    advances(&video, 10).await?;
    ensure!(video.stats().key_frames >= keys, "{:?}", video.stats());
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_full_reconnect_republishes_every_track_and_receivers_keep_one_per_source() -> Result<()>
{
    let ((alice, mut alice_log), (bob, mut bob_log)) = alice_publishes("media-full").await?;
    let before = local_sids(&alice);
    assert_recovers(&alice, &mut alice_log, SimulateScenario::FullReconnect).await?;
    for (source, old) in &before {
        alice_log
            .wait_for("LocalTrackRepublished", WAIT, |e| {
                matches!(e, RoomEvent::LocalTrackRepublished { publication, previous_sid }
                    if publication.source() == *source && previous_sid == old
                        && publication.sid() != old)
            })
            .await?;
        frames_from(&bob, "alice", *source, 5, Some(old)).await?;
        let tracks = subscriptions(&bob, "alice", *source);
        ensure!(
            tracks.len() == 1 && tracks[0].sid() != old,
            "bob holds exactly one {source:?} track of alice's, the new one: {tracks:?}\n{}",
            bob_log.trace()
        );
    }
    bob_log.poll();
    ensure!(
        bob_log.count(|e| matches!(e, RoomEvent::TrackUnsubscribed { .. })) == 2,
        "bob's old subscriptions ended:\n{}",
        bob_log.trace()
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_muted_track_stops_and_stays_muted_across_a_full_reconnect() -> Result<()> {
    let ((alice, mut alice_log), (bob, mut bob_log)) = alice_publishes("media-mute").await?;
    let before = local_sids(&alice);
    alice.local_participant().set_track_muted(TrackSource::Camera, true).await?;
    bob_log
        .wait_for("TrackMuted", WAIT, |e| {
            matches!(e, RoomEvent::TrackMuted { publication, .. } if publication.source() == TrackSource::Camera)
        })
        .await?;
    assert_recovers(&alice, &mut alice_log, SimulateScenario::FullReconnect).await?;
    alice_log
        .wait_for("the camera republished", WAIT, |e| {
            matches!(e, RoomEvent::LocalTrackRepublished { publication, .. }
                if publication.source() == TrackSource::Camera)
        })
        .await?;
    let published = alice.local_participant().track_publications();
    ensure!(
        published.iter().any(|p| p.source() == TrackSource::Camera && p.is_muted()),
        "the republished camera is still muted: {published:?}"
    );
    // Audio comes back on the new track; the muted camera's new track delivers nothing.
    let old_mic = before.iter().find(|(s, _)| *s == TrackSource::Microphone).map(|(_, sid)| sid);
    let audio =
        frames_from(&bob, "alice", TrackSource::Microphone, 5, old_mic.map(String::as_str)).await?;
    let old_camera = before.iter().find(|(s, _)| *s == TrackSource::Camera).map(|(_, sid)| sid);
    advances(&audio, 50).await?;
    let camera: Vec<_> = subscriptions(&bob, "alice", TrackSource::Camera)
        .into_iter()
        .filter(|t| Some(&t.sid().to_owned()) != old_camera)
        .collect();
    ensure!(
        camera.iter().all(|t| t.stats().frames == 0),
        "while audio delivered 50 more frames, the muted camera delivered: {camera:?}"
    );
    alice.local_participant().set_track_muted(TrackSource::Camera, false).await?;
    frames_from(&bob, "alice", TrackSource::Camera, 5, None).await?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}
