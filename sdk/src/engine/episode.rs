//! The rules of one reconnect episode, without any I/O: what started it, whether the next
//! attempt is a resume or a full reconnect, how long to wait before it, and when to give up.
//!
//! An episode begins with a trigger and ends in `Reconnected` or in one `Disconnected`.
//! Attempt 1 is a resume unless a full reconnect was asked for; any failed resume makes
//! every later attempt a full reconnect (sticky); attempts are spaced by the
//! [`ReconnectPolicy`] — except that an attempt the server answered with a `Leave` asking
//! for a full reconnect is followed by one at once (the server said what will work: upstream's
//! `retry_now`), still counted against the policy's attempts; a terminal failure (the server
//! refused our token, or told us to leave) ends the episode at once with that reason, and
//! exhaustion ends it with the reason that began it.
//!
//! A 401/403 on a resume's signalling upgrade is terminal, on purpose. The upstream SDK asks
//! `/rtc/validate` why and may escalate to a full reconnect; faultline-sdk asks too (the
//! answer goes into the error), but a full reconnect presents the same credentials — the
//! latest token, including any `RefreshToken` the server sent — and would be refused the same
//! way, so retrying only delays the `Disconnected{JOIN_FAILURE}` the app needs to see to get a
//! new token.

use std::time::Duration;

use livekit_protocol::DisconnectReason;
use rand::rngs::SmallRng;

use crate::options::ReconnectPolicy;

/// What started an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The signalling socket closed or went silent past the ping timeout, or the whole link
    /// (signalling and media) went silent (see `signal::liveness`).
    SignalLost,
    /// A peer connection failed.
    PcFailed,
    /// The server sent `Leave{RESUME}` with this reason.
    ServerResume(DisconnectReason),
    /// The server sent `Leave{RECONNECT}` with this reason.
    ServerReconnect(DisconnectReason),
    /// The user asked for a full reconnect (`SimulateScenario::FullReconnect`).
    LocalFull,
}

impl Trigger {
    /// The reason a `Disconnected` carries if the episode runs out of attempts.
    pub(crate) fn reason(self) -> DisconnectReason {
        match self {
            Trigger::SignalLost => DisconnectReason::SignalClose,
            Trigger::PcFailed => DisconnectReason::MediaFailure,
            Trigger::ServerResume(reason) | Trigger::ServerReconnect(reason) => reason,
            Trigger::LocalFull => DisconnectReason::UnknownReason,
        }
    }

    fn wants_full(self) -> bool {
        matches!(self, Trigger::ServerReconnect(_) | Trigger::LocalFull)
    }
}

/// The kind of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptKind {
    /// Keep the session: new signalling socket with `reconnect=1`, ICE restarts.
    Resume,
    /// New session: new join, new peer connections.
    Full,
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Worth another attempt.
    Retryable,
    /// The server answered with a `Leave` asking for a full reconnect (it does not know the
    /// session): go full, at once.
    NeedsFull,
    /// Retrying cannot help; end with this reason.
    Terminal(DisconnectReason),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Make another attempt.
    Retry,
    /// End the room with this reason.
    GiveUp(DisconnectReason),
}

/// One episode's bookkeeping.
#[derive(Debug)]
pub(crate) struct Episode {
    trigger: Trigger,
    policy: ReconnectPolicy,
    full: bool,
    attempts_made: u32,
    /// The next attempt goes without waiting (the server asked for it).
    retry_now: bool,
}

impl Episode {
    pub(crate) fn new(trigger: Trigger, policy: ReconnectPolicy) -> Self {
        Self { trigger, full: trigger.wants_full(), policy, attempts_made: 0, retry_now: false }
    }

    /// The next attempt's kind and the delay before it, or `None` if all are used up. The
    /// delay is drawn for every attempt, so the jitter sequence does not depend on which
    /// attempts went at once.
    pub(crate) fn next_attempt(&mut self, rng: &mut SmallRng) -> Option<(AttemptKind, Duration)> {
        if self.attempts_made >= self.policy.attempts {
            return None;
        }
        self.attempts_made += 1;
        let kind = if self.full { AttemptKind::Full } else { AttemptKind::Resume };
        let drawn = self.policy.delay(self.attempts_made, rng);
        let delay = if std::mem::take(&mut self.retry_now) { Duration::ZERO } else { drawn };
        Some((kind, delay))
    }

    /// Records a failed attempt of `kind`.
    pub(crate) fn failed(&mut self, kind: AttemptKind, failure: Failure) -> Next {
        if kind == AttemptKind::Resume {
            self.full = true;
        }
        match failure {
            Failure::Terminal(reason) => Next::GiveUp(reason),
            Failure::NeedsFull => {
                self.full = true;
                self.retry_now = true;
                self.retry_or_give_up()
            }
            Failure::Retryable => self.retry_or_give_up(),
        }
    }

    fn retry_or_give_up(&self) -> Next {
        if self.attempts_made >= self.policy.attempts {
            Next::GiveUp(self.trigger.reason())
        } else {
            Next::Retry
        }
    }

    /// How many attempts have been made so far.
    pub(crate) fn attempts_made(&self) -> u32 {
        self.attempts_made
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(1)
    }

    fn policy(attempts: u32) -> ReconnectPolicy {
        ReconnectPolicy { attempts, ..Default::default() }
    }

    #[test]
    fn a_signal_loss_resumes_first_and_immediately() {
        let mut episode = Episode::new(Trigger::SignalLost, policy(3));
        assert_eq!(episode.next_attempt(&mut rng()), Some((AttemptKind::Resume, Duration::ZERO)));
    }

    #[test]
    fn a_failed_resume_escalates_for_good() {
        let mut rng = rng();
        let mut episode = Episode::new(Trigger::SignalLost, policy(4));
        let (kind, _) = episode.next_attempt(&mut rng).unwrap();
        assert_eq!(episode.failed(kind, Failure::Retryable), Next::Retry);
        for _ in 0..2 {
            let (kind, _) = episode.next_attempt(&mut rng).unwrap();
            assert_eq!(kind, AttemptKind::Full);
            assert_eq!(episode.failed(kind, Failure::Retryable), Next::Retry);
        }
    }

    #[test]
    fn server_and_local_reconnect_requests_start_full() {
        for trigger in
            [Trigger::ServerReconnect(DisconnectReason::StateMismatch), Trigger::LocalFull]
        {
            let mut episode = Episode::new(trigger, policy(2));
            assert_eq!(episode.next_attempt(&mut rng()).unwrap().0, AttemptKind::Full);
        }
        let mut resume =
            Episode::new(Trigger::ServerResume(DisconnectReason::Migration), policy(2));
        assert_eq!(resume.next_attempt(&mut rng()).unwrap().0, AttemptKind::Resume);
    }

    #[test]
    fn exhaustion_gives_up_with_the_reason_that_began_the_episode() {
        let mut rng = rng();
        let mut episode = Episode::new(Trigger::PcFailed, policy(3));
        let mut outcomes = Vec::new();
        while let Some((kind, _)) = episode.next_attempt(&mut rng) {
            outcomes.push(episode.failed(kind, Failure::Retryable));
        }
        assert_eq!(
            outcomes,
            [Next::Retry, Next::Retry, Next::GiveUp(DisconnectReason::MediaFailure)]
        );
        assert_eq!(episode.attempts_made(), 3);
    }

    #[test]
    fn a_terminal_failure_ends_at_once_with_its_own_reason() {
        let mut episode = Episode::new(Trigger::SignalLost, policy(10));
        let (kind, _) = episode.next_attempt(&mut rng()).unwrap();
        assert_eq!(
            episode.failed(kind, Failure::Terminal(DisconnectReason::JoinFailure)),
            Next::GiveUp(DisconnectReason::JoinFailure)
        );
    }

    #[test]
    fn a_server_leave_asking_for_a_full_reconnect_is_followed_by_one_at_once() {
        let mut rng = rng();
        let policy = ReconnectPolicy { jitter: crate::options::Jitter::None, ..policy(4) };
        let mut episode = Episode::new(Trigger::SignalLost, policy.clone());
        let (kind, _) = episode.next_attempt(&mut rng).unwrap();
        assert_eq!(episode.failed(kind, Failure::NeedsFull), Next::Retry);
        assert_eq!(
            episode.next_attempt(&mut rng),
            Some((AttemptKind::Full, Duration::ZERO)),
            "no backoff after the server said what to do"
        );
        assert_eq!(episode.failed(AttemptKind::Full, Failure::Retryable), Next::Retry);
        assert_eq!(
            episode.next_attempt(&mut rng),
            Some((AttemptKind::Full, policy.delay_cap(3))),
            "an ordinary failure waits again"
        );
        assert_eq!(episode.attempts_made(), 3, "the immediate attempt still counts");
    }

    #[test]
    fn later_attempts_wait_within_the_policy() {
        let mut rng = rng();
        let policy = policy(5);
        let mut episode = Episode::new(Trigger::SignalLost, policy.clone());
        let mut attempt = 0;
        while let Some((kind, delay)) = episode.next_attempt(&mut rng) {
            attempt += 1;
            assert!(delay <= policy.delay_cap(attempt), "attempt {attempt} waited {delay:?}");
            episode.failed(kind, Failure::NeedsFull);
        }
        assert_eq!(attempt, 5);
    }
}
