//! The media words that clients, drivers, scenario files, the record and the judge share:
//! a track's source as every SDK names it (`microphone`, `camera`), and the kinds a scenario
//! asks a participant to publish (`audio`, `video`). Below every other module: it imports
//! nothing of the harness.
//!
//! A track is keyed by its publisher's identity and its source, never by its sid alone: a
//! full reconnect republishes it with a new sid.

use serde::Deserialize;

pub use faultline_sdk::TrackSource;

/// The source named `name` in the driver protocol (`microphone`, `camera`).
pub fn parse_source(name: &str) -> Option<TrackSource> {
    [TrackSource::Microphone, TrackSource::Camera].into_iter().find(|s| s.name() == name)
}

/// What a scenario participant publishes: `tracks = ["audio", "video"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackSpec {
    /// A microphone track (Opus).
    Audio,
    /// A camera track (VP8, 30 fps).
    Video,
}

impl TrackSpec {
    /// The source it publishes from.
    pub fn source(self) -> TrackSource {
        match self {
            TrackSpec::Audio => TrackSource::Microphone,
            TrackSpec::Video => TrackSource::Camera,
        }
    }
}

/// The frame rate of the video every client publishes for a scenario.
pub const VIDEO_FPS: u32 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_read_as_the_driver_protocol_spells_them() {
        assert_eq!(parse_source("camera"), Some(TrackSource::Camera));
        assert_eq!(parse_source("microphone"), Some(TrackSource::Microphone));
        assert_eq!(parse_source("screen_share"), None);
        assert_eq!(TrackSpec::Audio.source(), TrackSource::Microphone);
    }
}
