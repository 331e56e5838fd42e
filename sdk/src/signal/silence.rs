//! Early notice of a dead link: the server silent on signalling *and* on the media path.
//!
//! The ping timeout (15 s of signalling silence) is the only detector that cannot be fooled,
//! but it is slow, and a link that went dark (a tunnel, a dead Wi-Fi) is silent on both paths
//! at once. A healthy session hears from the server at least every few seconds on one path
//! or the other: a pong per ping interval on signalling, and on the media path the answers to
//! ICE's consent checks (str0m checks a working pair every 3 s) and whatever media and data
//! flow. So once the whole link has been quiet for [`QUIET`], the signalling task sends a
//! probe ping, and if still nothing at all has been heard a full ping interval after that
//! ([`Silence::lost_after`]), the link is declared lost.
//!
//! Only both paths quiet counts. Media alone going quiet (the server still answering pings)
//! is the peer connections' business (ICE disconnected, then failed); signalling alone going
//! quiet (media still flowing) is left to the ping timeout. An outage shorter than a ping
//! interval never trips it: the probe, sent at most [`QUIET`] plus a round trip after the
//! last thing heard, is answered once the link returns, within the interval.
//!
//! Pure bookkeeping over `tokio::time`, so it runs the same inside turmoil.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// When the media path last heard from the server (any datagram on either peer connection),
/// or `None` if it never has.
pub(crate) type MediaHeard = Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

/// How long the whole link may be quiet before a probe ping goes out.
pub(crate) const QUIET: Duration = Duration::from_secs(2);

/// What the signalling task should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing yet.
    Wait,
    /// Send a probe ping.
    Probe,
    /// The link is lost; the text says why.
    Lost(String),
}

/// The rule above, for one signalling link.
pub(crate) struct Silence {
    media: Option<MediaHeard>,
    /// How long nothing may be heard at all before the link is lost.
    lost_after: Duration,
    /// When the unanswered probe went out (cleared by anything heard on signalling).
    probe_sent: Option<Instant>,
}

impl Silence {
    /// A rule for a link pinged every `ping_interval`; inactive until [`Silence::watch`].
    pub(crate) fn new(ping_interval: Duration) -> Self {
        Silence { media: None, lost_after: Self::lost_after(ping_interval), probe_sent: None }
    }

    /// How long the whole link must be silent to count as lost: [`QUIET`], then a probe ping
    /// left unanswered for a ping interval.
    pub(crate) fn lost_after(ping_interval: Duration) -> Duration {
        QUIET + ping_interval
    }

    /// From now on, judge the media path by `media` too (the peer connections exist).
    pub(crate) fn watch(&mut self, media: MediaHeard) {
        self.media = Some(media);
    }

    /// Something arrived on signalling: any probe is answered.
    pub(crate) fn heard_signal(&mut self) {
        self.probe_sent = None;
    }

    /// A probe ping was sent at `now`.
    pub(crate) fn probed(&mut self, now: Instant) {
        self.probe_sent = Some(now);
    }

    /// When the last thing was heard on either path, if the rule is active: it is once the
    /// media path is watched and has heard from the server at least once.
    fn last_heard(&self, signal: Instant) -> Option<Instant> {
        let media = self.media.as_ref()?();
        Some(media?.max(signal))
    }

    /// When [`Silence::step`] may next have something to do; `None` while inactive.
    /// `signal` is when signalling last heard from the server.
    pub(crate) fn next_check(&self, signal: Instant) -> Option<Instant> {
        let last = self.last_heard(signal)?;
        Some(match self.probe_sent {
            None => last + QUIET,
            Some(_) => last + self.lost_after,
        })
    }

    /// What to do at `now`, given when signalling last heard from the server.
    pub(crate) fn step(&self, signal: Instant, now: Instant) -> Step {
        let Some(last) = self.last_heard(signal) else { return Step::Wait };
        let quiet = now.saturating_duration_since(last);
        match self.probe_sent {
            None if quiet >= QUIET => Step::Probe,
            Some(sent) if quiet >= self.lost_after => Step::Lost(format!(
                "nothing heard from the server for {quiet:?}, on signalling or on the media \
                 path, and no answer to a ping sent {:?} ago",
                now.saturating_duration_since(sent)
            )),
            _ => Step::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    /// A media path whose last datagram the test sets.
    fn media() -> (Arc<Mutex<Option<Instant>>>, MediaHeard) {
        let heard = Arc::new(Mutex::new(None));
        let read = heard.clone();
        (heard, Arc::new(move || *read.lock().expect("not poisoned")))
    }

    /// A rule watching a media path that last heard from the server at `t0`.
    fn watched_since(t0: Instant) -> (Arc<Mutex<Option<Instant>>>, Silence) {
        let (heard, reader) = media();
        *heard.lock().expect("not poisoned") = Some(t0);
        let mut silence = Silence::new(INTERVAL);
        silence.watch(reader);
        (heard, silence)
    }

    #[tokio::test(start_paused = true)]
    async fn inactive_until_the_media_path_is_watched_and_has_heard_something() {
        let t0 = Instant::now();
        let mut silence = Silence::new(INTERVAL);
        assert_eq!(silence.next_check(t0), None);
        assert_eq!(silence.step(t0, t0 + Duration::from_secs(60)), Step::Wait);
        let (heard, reader) = media();
        silence.watch(reader);
        assert_eq!(silence.step(t0, t0 + Duration::from_secs(60)), Step::Wait, "never heard");
        *heard.lock().expect("not poisoned") = Some(t0);
        assert_eq!(silence.next_check(t0), Some(t0 + QUIET));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dark_link_is_probed_then_lost_a_ping_interval_later() {
        let t0 = Instant::now();
        let (_heard, mut silence) = watched_since(t0);
        assert_eq!(silence.step(t0, t0 + Duration::from_millis(1999)), Step::Wait);
        assert_eq!(silence.step(t0, t0 + QUIET), Step::Probe);
        silence.probed(t0 + QUIET);
        let lost_at = t0 + QUIET + INTERVAL;
        assert_eq!(silence.next_check(t0), Some(lost_at));
        assert_eq!(silence.step(t0, lost_at - Duration::from_millis(1)), Step::Wait);
        let Step::Lost(why) = silence.step(t0, lost_at) else { panic!("expected Lost") };
        assert!(why.contains("7s") && why.contains("5s ago"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn either_path_speaking_keeps_the_link() {
        let t0 = Instant::now();
        let (heard, mut silence) = watched_since(t0);
        silence.probed(t0 + QUIET);
        // Media comes back (signalling still held): not lost at the old deadline.
        let later = t0 + Duration::from_secs(4);
        *heard.lock().expect("not poisoned") = Some(later);
        assert_eq!(silence.step(t0, t0 + QUIET + INTERVAL), Step::Wait);
        // The probe's answer arrives: nothing outstanding, next probe after QUIET.
        let answered = t0 + Duration::from_secs(5);
        silence.heard_signal();
        assert_eq!(silence.step(answered, answered + Duration::from_secs(1)), Step::Wait);
        assert_eq!(silence.next_check(answered), Some(answered + QUIET));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_a_ping_interval_is_survived() {
        // The worst case: the probe goes out just as the link goes dark, 3 s of dark, and
        // the answer comes a round trip after it returns.
        let t0 = Instant::now();
        let (_heard, mut silence) = watched_since(t0);
        silence.probed(t0 + QUIET);
        let answer = t0 + QUIET + Duration::from_secs(3) + Duration::from_millis(200);
        assert_eq!(silence.step(t0, answer), Step::Wait);
    }
}
