//! Media across SDKs on the real livekit-server: faultline-sdk's synthetic VP8 video is
//! decoded by the SDKs people ship (the upstream Rust SDK's libwebrtc and livekit-client in
//! Chromium count frames decoded as they count frames received; the Go SDK has no decoder, and
//! its driver counts the frames a decoder could decode: a key frame, then an unbroken chain),
//! and what those SDKs publish reaches a faultline-sdk receiver frame by frame.

mod real_lane;

use anyhow::{ensure, Context, Result};
use faultline::client::{Client, ClientOptions, MediaCount, Sdk};
use faultline::event_log::{ClientEvent, EventLog};
use faultline::provision::ProvisionEnv;
use faultline::vocab::TrackSource;
use real_lane::{server, server_sees_active, unique_room, WAIT};
use rstest::rstest;

/// Joins `room` as `identity` with `sdk`; returns the client and its events once Connected.
async fn join(sdk: Sdk, room: &str, identity: &str) -> Result<(Client, EventLog<ClientEvent>)> {
    let server = server().await?;
    let token = server.token(room, identity)?;
    let (client, events) = Client::connect(
        sdk,
        &server.ws_url(),
        &token,
        ClientOptions::default(),
        &ProvisionEnv::from_env(),
    )
    .await
    .with_context(|| format!("{sdk} joining {room} as {identity}"))?;
    let mut log = EventLog::new(events);
    log.wait_for("Connected", WAIT, |e| *e == ClientEvent::Connected).await?;
    server_sees_active(&server, room, identity).await?;
    Ok((client, log))
}

/// The count of `from`'s `source` track in a media sample, if the sample has one.
fn count(event: &ClientEvent, from: &str, source: TrackSource) -> Option<MediaCount> {
    let ClientEvent::Media { tracks } = event else { return None };
    tracks.iter().find(|t| t.from == from && t.source == source).cloned()
}

/// Waits for a media sample in which `from`'s `source` track has delivered at least `frames`.
async fn delivered(
    log: &mut EventLog<ClientEvent>,
    from: &str,
    source: TrackSource,
    frames: u64,
) -> Result<MediaCount> {
    let what = format!("{frames} frames of {from}'s {}", source.name());
    let event = log
        .wait_for(&what, WAIT, |e| count(e, from, source).is_some_and(|c| c.frames >= frames))
        .await?;
    count(&event, from, source).context("the matching sample has the count")
}

#[rstest]
#[case::upstream_rust(Sdk::UpstreamRust)]
#[case::js(Sdk::Js)]
#[case::go(Sdk::Go)]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn faultline_video_is_decoded_by_another_sdk(#[case] sdk: Sdk) -> Result<()> {
    let room = unique_room(&format!("decode-{sdk}"));
    let (alice, _alice_log) = join(Sdk::Faultline, &room, "alice").await?;
    let (bob, mut bob_log) = join(sdk, &room, "bob").await?;
    alice.publish_track(TrackSource::Camera).await?;
    alice.publish_track(TrackSource::Microphone).await?;
    let first = delivered(&mut bob_log, "alice", TrackSource::Camera, 30).await?;
    let later = delivered(&mut bob_log, "alice", TrackSource::Camera, first.frames + 60).await?;
    let (Some(d0), Some(d1)) = (first.decoded, later.decoded) else {
        anyhow::bail!("the {sdk} driver reports no frames decoded: {first:?}, {later:?}");
    };
    // Decoded frames keep pace with received ones (a few may sit in the decoder).
    ensure!(
        d1 > d0 && d1 - d0 + 5 >= later.frames - first.frames,
        "{sdk} received {} frames of faultline-sdk's video but decoded only {}",
        later.frames - first.frames,
        d1.saturating_sub(d0)
    );
    delivered(&mut bob_log, "alice", TrackSource::Microphone, 50).await?;
    alice.close().await?;
    bob.close().await?;
    Ok(())
}

#[rstest]
#[case::upstream_rust(Sdk::UpstreamRust)]
#[case::js(Sdk::Js)]
#[case::go(Sdk::Go)]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn another_sdks_tracks_reach_a_faultline_receiver(#[case] sdk: Sdk) -> Result<()> {
    let room = unique_room(&format!("receive-{sdk}"));
    let (alice, mut alice_log) = join(Sdk::Faultline, &room, "alice").await?;
    let (bob, _bob_log) = join(sdk, &room, "bob").await?;
    bob.publish_track(TrackSource::Camera).await?;
    bob.publish_track(TrackSource::Microphone).await?;
    delivered(&mut alice_log, "bob", TrackSource::Camera, 60).await?;
    delivered(&mut alice_log, "bob", TrackSource::Microphone, 50).await?;
    let state = alice.state().await?;
    ensure!(
        state.subscriptions.iter().filter(|(from, _, _)| from == "bob").count() == 2,
        "alice holds one subscription per source of bob's: {:?}",
        state.subscriptions
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}
