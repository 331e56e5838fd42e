//! When a signalling link counts as dead though its socket is open: the two rules the I/O
//! task applies, over `tokio::time` (so they run the same inside turmoil).
//!
//! 1. The ping timeout: nothing heard on signalling for [`Keepalive::timeout`] (15 s, from
//!    the JoinResponse). It cannot be fooled, but it is slow.
//! 2. A dark link: nothing heard from the server on signalling *or* on the media path for
//!    [`QUIET`] plus a ping interval, with a ping unanswered all that while. A healthy
//!    session hears from the server every few seconds on one path or the other (a pong per
//!    ping interval on signalling; on the media path the answers to ICE's consent checks,
//!    which str0m makes every 3 s on a working pair, and whatever media and data flow), and a
//!    link that went dark (a tunnel, a dead Wi-Fi) is silent on both at once. So once the
//!    whole link has been quiet for [`QUIET`] a probe ping goes out, unless a ping is already
//!    awaiting its answer; if still nothing at all is heard a ping interval later, the link
//!    is lost. Only both paths quiet counts: media alone going quiet (the server still
//!    answering pings) is the peer connections' business (ICE disconnected, then failed), and
//!    signalling alone going quiet (media still flowing) is left to rule 1. An outage shorter
//!    than a ping interval never trips it: a ping sent as the link went dark is answered once
//!    it returns, within the interval.
//!
//! Rule 2 starts once the media path is watched ([`Liveness::watch`]) and has heard from the
//! server at least once. Both rules also bound a write that waits on the socket: a stalled
//! socket must not keep the link from being declared dead.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Keepalive;

/// When the media path last heard from the server (any datagram on either peer connection),
/// or `None` if it never has.
pub(crate) type MediaHeard = Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

/// How long the whole link may be quiet before a probe ping goes out.
const QUIET: Duration = Duration::from_secs(2);

/// What the I/O task knows of a link's life.
pub(crate) struct Liveness {
    keepalive: Keepalive,
    /// When signalling last heard from the server.
    signal_heard: Instant,
    media: Option<MediaHeard>,
    /// When the first ping since the server last spoke on signalling went out.
    pinged: Option<Instant>,
}

impl Liveness {
    /// A link that has just heard from the server (its first answer), at `now`.
    pub(crate) fn new(keepalive: Keepalive, now: Instant) -> Self {
        Liveness { keepalive, signal_heard: now, media: None, pinged: None }
    }

    /// How long the whole link must be quiet to count as lost by rule 2: [`QUIET`], then a
    /// ping left unanswered for a ping interval.
    fn dark_after(&self) -> Duration {
        QUIET + self.keepalive.interval
    }

    /// From now on, judge the media path by `media` too (the peer connections exist).
    pub(crate) fn watch(&mut self, media: MediaHeard) {
        self.media = Some(media);
    }

    /// Something arrived on signalling at `now`: any ping is answered.
    pub(crate) fn heard_signal(&mut self, now: Instant) {
        self.signal_heard = now;
        self.pinged = None;
    }

    /// A ping (keepalive, probe or barrier) went out at `now`.
    pub(crate) fn pinged(&mut self, now: Instant) {
        self.pinged.get_or_insert(now);
    }

    /// When the last thing was heard on either path, once rule 2 applies.
    fn link_heard(&self) -> Option<Instant> {
        let media = self.media.as_ref()?();
        Some(media?.max(self.signal_heard))
    }

    /// When the link will count as dead if nothing more is heard.
    pub(crate) fn deadline(&self) -> Instant {
        let timeout = self.signal_heard + self.keepalive.timeout;
        match (self.link_heard(), self.pinged) {
            (Some(heard), Some(_)) => timeout.min(heard + self.dark_after()),
            _ => timeout,
        }
    }

    /// When a probe ping is due, if rule 2 applies and no ping awaits its answer.
    fn probe_due(&self) -> Option<Instant> {
        match self.pinged {
            None => Some(self.link_heard()? + QUIET),
            Some(_) => None,
        }
    }

    /// When something may next be due: the deadline, or a probe.
    pub(crate) fn next_check(&self) -> Instant {
        let deadline = self.deadline();
        self.probe_due().map_or(deadline, |probe| probe.min(deadline))
    }

    /// Whether a probe ping should go out at `now`.
    pub(crate) fn wants_probe(&self, now: Instant) -> bool {
        self.probe_due().is_some_and(|due| now >= due)
    }

    /// Why the link is dead at `now`, if it is.
    pub(crate) fn dead(&self, now: Instant) -> Option<String> {
        if now >= self.signal_heard + self.keepalive.timeout {
            return Some(format!(
                "nothing heard from the server for {:?} (ping timeout)",
                self.keepalive.timeout
            ));
        }
        let (heard, pinged) = (self.link_heard()?, self.pinged?);
        let quiet = now.saturating_duration_since(heard);
        (quiet >= self.dark_after()).then(|| {
            format!(
                "nothing heard from the server for {quiet:?}, on signalling or on the media \
                 path, and no answer to a ping sent {:?} ago",
                now.saturating_duration_since(pinged)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const KEEPALIVE: Keepalive =
        Keepalive { interval: Duration::from_secs(5), timeout: Duration::from_secs(15) };

    /// A media path whose last datagram the test sets, and a reader of it.
    fn media() -> (Arc<Mutex<Option<Instant>>>, MediaHeard) {
        let heard = Arc::new(Mutex::new(None));
        let read = heard.clone();
        (heard, Arc::new(move || *read.lock().expect("not poisoned")))
    }

    /// A link whose both paths last heard from the server at `t0`.
    fn watched_since(t0: Instant) -> (Arc<Mutex<Option<Instant>>>, Liveness) {
        let (heard, reader) = media();
        *heard.lock().expect("not poisoned") = Some(t0);
        let mut link = Liveness::new(KEEPALIVE, t0);
        link.watch(reader);
        (heard, link)
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_media_path_only_the_ping_timeout_applies() {
        let t0 = Instant::now();
        let mut link = Liveness::new(KEEPALIVE, t0);
        link.pinged(t0 + secs(1.0));
        assert_eq!(link.deadline(), t0 + secs(15.0));
        assert!(!link.wants_probe(t0 + secs(14.0)));
        assert_eq!(link.dead(t0 + secs(14.9)), None);
        let why = link.dead(t0 + secs(15.0)).expect("dead at the ping timeout");
        assert!(why.contains("ping timeout"), "{why}");
        // Watched but never heard: still only the ping timeout.
        let (_heard, reader) = media();
        link.watch(reader);
        assert_eq!(link.deadline(), t0 + secs(15.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dark_link_is_probed_then_lost_a_ping_interval_later() {
        let t0 = Instant::now();
        let (_heard, mut link) = watched_since(t0);
        assert_eq!(link.next_check(), t0 + QUIET);
        assert!(!link.wants_probe(t0 + secs(1.999)));
        assert!(link.wants_probe(t0 + QUIET));
        link.pinged(t0 + QUIET);
        assert_eq!(link.deadline(), t0 + secs(7.0));
        assert_eq!(link.next_check(), t0 + secs(7.0), "no second probe");
        assert_eq!(link.dead(t0 + secs(6.999)), None);
        let why = link.dead(t0 + secs(7.0)).expect("lost");
        assert!(why.contains("7s") && why.contains("5s ago"), "{why}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_keepalive_ping_already_waiting_serves_as_the_probe() {
        let t0 = Instant::now();
        let (_heard, mut link) = watched_since(t0);
        link.pinged(t0 + secs(0.5));
        link.pinged(t0 + QUIET);
        assert!(!link.wants_probe(t0 + secs(3.0)));
        let why = link.dead(t0 + secs(7.0)).expect("lost");
        assert!(why.contains("6.5s ago"), "the first unanswered ping counts: {why}");
    }

    #[tokio::test(start_paused = true)]
    async fn either_path_speaking_keeps_the_link() {
        let t0 = Instant::now();
        let (heard, mut link) = watched_since(t0);
        link.pinged(t0 + QUIET);
        // Media comes back (signalling still held): not lost at the old deadline.
        *heard.lock().expect("not poisoned") = Some(t0 + secs(4.0));
        assert_eq!(link.dead(t0 + secs(7.0)), None);
        assert_eq!(link.deadline(), t0 + secs(11.0));
        // The ping's answer arrives: nothing awaits an answer, the next probe is QUIET later.
        link.heard_signal(t0 + secs(5.0));
        assert_eq!(link.deadline(), t0 + secs(20.0), "only the ping timeout is armed");
        assert_eq!(link.next_check(), t0 + secs(7.0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_shorter_than_a_ping_interval_is_survived() {
        // The worst case: the probe goes out just as the link goes dark, 3 s of dark, and
        // the answer comes a round trip after it returns.
        let t0 = Instant::now();
        let (_heard, mut link) = watched_since(t0);
        link.pinged(t0 + QUIET);
        assert_eq!(link.dead(t0 + QUIET + secs(3.2)), None);
    }
}
