//! Waiting on media in faultline-sdk rooms: the subscribed track of a publisher's source, and
//! its frames advancing.

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use anyhow::{bail, Result};
use faultline_sdk::{RemoteTrack, Room, TrackSource};

use crate::real_lane::WAIT;

/// How often a wait looks at the counters.
const POLL: Duration = Duration::from_millis(20);

/// `room`'s subscriptions to `from`'s track of `source` (one, when all is well).
pub fn subscriptions(room: &Room, from: &str, source: TrackSource) -> Vec<RemoteTrack> {
    room.subscribed_tracks()
        .into_iter()
        .filter(|(identity, track)| identity == from && track.source() == source)
        .map(|(_, track)| track)
        .collect()
}

/// Waits (up to [`WAIT`]) until `room` is subscribed to `from`'s `source` track with sid
/// other than `not` and that track has delivered more than `frames` frames; returns it.
pub async fn frames_from(
    room: &Room,
    from: &str,
    source: TrackSource,
    frames: u64,
    not: Option<&str>,
) -> Result<RemoteTrack> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = subscriptions(room, from, source)
            .into_iter()
            .find(|t| Some(t.sid()) != not && t.stats().frames > frames);
        if let Some(track) = found {
            return Ok(track);
        }
        if tokio::time::Instant::now() >= deadline {
            let seen: Vec<String> = room
                .subscribed_tracks()
                .iter()
                .map(|(who, t)| format!("{who} {:?} {} {:?}", t.source(), t.sid(), t.stats()))
                .collect();
            bail!(
                "expected more than {frames} frames of {from}'s {source:?} (sid not {not:?}) \
                 within {WAIT:?}; subscriptions: {seen:?}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `track` has delivered `more` frames beyond what it has now.
pub async fn advances(track: &RemoteTrack, more: u64) -> Result<()> {
    let start = track.stats().frames;
    let deadline = tokio::time::Instant::now() + WAIT;
    while track.stats().frames < start + more {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "expected {more} more frames of track {} ({:?}) within {WAIT:?}, got {}",
                track.sid(),
                track.source(),
                track.stats().frames - start
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
