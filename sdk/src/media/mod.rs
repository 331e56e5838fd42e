//! Media tracks: what a participant publishes (synthetic audio and video that need no
//! codec library) and what it receives (frames counted per subscribed track).
//!
//! The names follow the upstream `livekit` crate where they overlap (`TrackKind`,
//! `TrackSource`, `LocalTrackPublication`, `RemoteTrackPublication`, `RemoteTrack`).
//! A track is identified across reconnects by its publisher's identity and its source:
//! a full reconnect gives it a new sid.

pub(crate) mod source;
pub(crate) mod vp8;
mod vp8_tables;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use livekit_protocol as proto;

/// The synthetic camera's frames as bytes, for a publisher in another process (the Go
/// driver) to send what faultline-sdk sends: a VP8 key frame and an inter frame of a flat
/// grey `width` × `height` picture.
pub fn synthetic_vp8_frames(width: u16, height: u16) -> (Vec<u8>, Vec<u8>) {
    (vp8::key_frame(width, height), vp8::delta_frame(width, height))
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

/// Where a track comes from, as LiveKit names it. With the publisher's identity it names a
/// track for good (a sid changes on a full reconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackSource {
    /// A microphone (audio).
    Microphone,
    /// A camera (video).
    Camera,
}

impl TrackSource {
    /// The kind of media this source gives.
    pub fn kind(self) -> TrackKind {
        match self {
            TrackSource::Microphone => TrackKind::Audio,
            TrackSource::Camera => TrackKind::Video,
        }
    }

    /// The source's name in faultline's vocabulary (`microphone`, `camera`).
    pub fn name(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
        }
    }

    pub(crate) fn to_proto(self) -> proto::TrackSource {
        match self {
            TrackSource::Microphone => proto::TrackSource::Microphone,
            TrackSource::Camera => proto::TrackSource::Camera,
        }
    }

    /// The source a server's track info names, if it is one faultline knows.
    pub(crate) fn from_info(info: &proto::TrackInfo) -> Option<Self> {
        match info.source() {
            proto::TrackSource::Microphone => Some(TrackSource::Microphone),
            proto::TrackSource::Camera => Some(TrackSource::Camera),
            // An older client may leave the source unset: its kind still tells.
            proto::TrackSource::Unknown => match info.r#type() {
                proto::TrackType::Audio => Some(TrackSource::Microphone),
                proto::TrackType::Video => Some(TrackSource::Camera),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A local track fed by a synthetic source, ready to publish with
/// [`crate::LocalParticipant::publish_track`].
///
/// Audio: a 3-byte Opus frame every 20 ms (valid silence at 48 kHz). Video: VP8 at a set
/// frame rate, a key frame first and then only when the server asks for one (a PLI or FIR),
/// as a real encoder does — so a receiver's gap after a reconnect includes the key-frame
/// round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTrack {
    pub(crate) name: String,
    pub(crate) source: TrackSource,
    /// Frames per second (video); 50 for audio (20 ms frames).
    pub(crate) fps: u32,
    pub(crate) width: u16,
    pub(crate) height: u16,
}

impl LocalTrack {
    /// A synthetic microphone track.
    pub fn audio(name: &str) -> Self {
        LocalTrack {
            name: name.to_owned(),
            source: TrackSource::Microphone,
            fps: 50,
            width: 0,
            height: 0,
        }
    }

    /// A synthetic camera track at `fps` frames per second (at least 1), 320 × 180.
    pub fn video(name: &str, fps: u32) -> Self {
        LocalTrack {
            name: name.to_owned(),
            source: TrackSource::Camera,
            fps: fps.max(1),
            width: 320,
            height: 180,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its source.
    pub fn source(&self) -> TrackSource {
        self.source
    }

    /// Its kind.
    pub fn kind(&self) -> TrackKind {
        self.source.kind()
    }

    /// The time between two frames.
    pub(crate) fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.fps
    }
}

/// A track this participant published, as the server accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTrackPublication {
    pub(crate) sid: String,
    pub(crate) source: TrackSource,
    pub(crate) muted: bool,
}

impl LocalTrackPublication {
    /// The server's track sid (new after a full reconnect).
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Its source.
    pub fn source(&self) -> TrackSource {
        self.source
    }

    /// Whether it is muted.
    pub fn is_muted(&self) -> bool {
        self.muted
    }
}

/// A track another participant published, as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrackPublication {
    pub(crate) sid: String,
    pub(crate) name: String,
    pub(crate) source: TrackSource,
    pub(crate) muted: bool,
}

impl RemoteTrackPublication {
    pub(crate) fn from_info(info: &proto::TrackInfo) -> Option<Self> {
        Some(RemoteTrackPublication {
            sid: info.sid.clone(),
            name: info.name.clone(),
            source: TrackSource::from_info(info)?,
            muted: info.muted,
        })
    }

    /// The server's track sid.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The publisher's name for it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its source.
    pub fn source(&self) -> TrackSource {
        self.source
    }

    /// Its kind.
    pub fn kind(&self) -> TrackKind {
        self.source.kind()
    }

    /// Whether the publisher has muted it.
    pub fn is_muted(&self) -> bool {
        self.muted
    }
}

/// What one receiving media line has delivered, counted by the peer connection's task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MidCounter {
    pub frames: u64,
    pub key_frames: u64,
    pub last_at: Option<tokio::time::Instant>,
}

/// Counters of the subscriber connection's receiving media lines, by mid.
pub(crate) type Received = Arc<Mutex<std::collections::HashMap<String, MidCounter>>>;

/// What a subscribed track has delivered since it was subscribed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Frames received: whole video frames, or 20 ms audio frames.
    pub frames: u64,
    /// Video key frames among them.
    pub key_frames: u64,
    /// When the last one arrived (`tokio::time`, so simulated time in a simulation).
    pub last_frame_at: Option<tokio::time::Instant>,
}

/// A remote track this participant is subscribed to: a handle to read what it delivers.
#[derive(Debug, Clone)]
pub struct RemoteTrack {
    pub(crate) publication: RemoteTrackPublication,
    pub(crate) mid: String,
    pub(crate) received: Received,
    /// The mid's counter when this subscription began (LiveKit reuses media lines).
    pub(crate) baseline: MidCounter,
}

impl PartialEq for RemoteTrack {
    fn eq(&self, other: &Self) -> bool {
        self.publication == other.publication && self.mid == other.mid
    }
}

impl RemoteTrack {
    /// The server's track sid.
    pub fn sid(&self) -> &str {
        &self.publication.sid
    }

    /// Its source.
    pub fn source(&self) -> TrackSource {
        self.publication.source
    }

    /// Its kind.
    pub fn kind(&self) -> TrackKind {
        self.publication.source.kind()
    }

    /// What it has delivered since it was subscribed.
    pub fn stats(&self) -> MediaStats {
        let now = self
            .received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&self.mid)
            .copied()
            .unwrap_or_default();
        MediaStats {
            frames: now.frames.saturating_sub(self.baseline.frames),
            key_frames: now.key_frames.saturating_sub(self.baseline.key_frames),
            last_frame_at: if now.frames > self.baseline.frames { now.last_at } else { None },
        }
    }
}
