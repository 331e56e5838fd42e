//! The synthetic sources behind local tracks: what frame comes next and when, paced by
//! `tokio::time` so a simulation runs them on its own clock.

use tokio::time::Instant;

use super::{vp8, LocalTrack, TrackKind};

/// A valid Opus frame: TOC 0xF8 (CELT full band, 20 ms, mono, one frame) and two bytes
/// that decode to silence.
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// RTP clock rates: Opus 48 kHz, video 90 kHz.
const AUDIO_CLOCK: u64 = 48_000;
const VIDEO_CLOCK: u64 = 90_000;

/// One local track's frames, on its schedule.
#[derive(Debug)]
pub(crate) struct Generator {
    track: LocalTrack,
    next_at: Instant,
    /// Frames produced so far (gives the RTP time).
    produced: u64,
    key_wanted: bool,
    muted: bool,
}

/// One frame to write.
pub(crate) struct Frame {
    pub data: Vec<u8>,
    /// RTP time in the kind's clock rate.
    pub rtp_time: u64,
    pub clock_rate: u64,
}

impl Generator {
    /// A source for `track` whose first frame is due now (a key frame, for video).
    pub(crate) fn new(track: LocalTrack, now: Instant) -> Self {
        Generator { track, next_at: now, produced: 0, key_wanted: true, muted: false }
    }

    pub(crate) fn kind(&self) -> TrackKind {
        self.track.kind()
    }

    /// When the next frame is due.
    pub(crate) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// The server asked for a key frame (a PLI or FIR): the next video frame is one.
    pub(crate) fn request_key_frame(&mut self) {
        self.key_wanted = true;
    }

    /// Muted: frames stop (an unmute starts again with a key frame, as encoders do).
    pub(crate) fn set_muted(&mut self, muted: bool) {
        if self.muted && !muted {
            self.key_wanted = true;
        }
        self.muted = muted;
    }

    /// The frame due at `now`, if one is (and the source is not muted); the schedule moves
    /// on either way. Late ticks are not made up: after a stall the next frame is one
    /// interval away.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Frame> {
        if now < self.next_at {
            return None;
        }
        let interval = self.track.frame_interval();
        self.next_at += interval;
        if self.next_at <= now {
            self.next_at = now + interval;
        }
        let index = self.produced;
        self.produced += 1;
        if self.muted {
            return None;
        }
        let (data, clock_rate) = match self.track.kind() {
            TrackKind::Audio => (OPUS_SILENCE.to_vec(), AUDIO_CLOCK),
            TrackKind::Video if std::mem::take(&mut self.key_wanted) => {
                (vp8::key_frame(self.track.width, self.track.height), VIDEO_CLOCK)
            }
            TrackKind::Video => {
                (vp8::delta_frame(self.track.width, self.track.height), VIDEO_CLOCK)
            }
        };
        let rtp_time = index * clock_rate / u64::from(self.track.fps);
        Some(Frame { data, rtp_time, clock_rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn video_starts_with_a_key_frame_and_sends_another_only_when_asked() {
        let start = Instant::now();
        let mut g = Generator::new(LocalTrack::video("cam", 30), start);
        let first = g.due(start).expect("a frame is due at once");
        assert!(vp8::is_key_frame(&first.data));
        assert!(g.due(start).is_none(), "the next one is an interval away");
        let mut t = start;
        for _ in 0..5 {
            t = g.next_at();
            let frame = g.due(t).expect("due");
            assert!(!vp8::is_key_frame(&frame.data), "delta frames until asked");
        }
        g.request_key_frame();
        let frame = g.due(g.next_at()).expect("due");
        assert!(vp8::is_key_frame(&frame.data));
        assert_eq!(frame.rtp_time, 6 * 3000, "90 kHz at 30 fps");
        assert!(t > start);
    }

    #[tokio::test(start_paused = true)]
    async fn muted_sources_send_nothing_and_unmute_with_a_key_frame() {
        let start = Instant::now();
        let mut g = Generator::new(LocalTrack::video("cam", 10), start);
        g.due(start);
        g.due(g.next_at());
        g.set_muted(true);
        assert!(g.due(g.next_at()).is_none());
        g.set_muted(false);
        assert!(vp8::is_key_frame(&g.due(g.next_at()).expect("due").data));
    }

    #[tokio::test(start_paused = true)]
    async fn audio_is_opus_every_20_ms_and_a_stall_is_not_made_up() {
        let start = Instant::now();
        let mut g = Generator::new(LocalTrack::audio("mic"), start);
        assert_eq!(g.due(start).expect("due").data, OPUS_SILENCE);
        assert_eq!(g.next_at(), start + Duration::from_millis(20));
        let late = start + Duration::from_secs(1);
        let frame = g.due(late).expect("due");
        assert_eq!(frame.rtp_time, 960);
        assert_eq!(g.next_at(), late + Duration::from_millis(20));
    }
}
