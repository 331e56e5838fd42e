//! Event recording and the invariants every run is judged by.
//!
//! Both work on any event type that says which lifecycle step it is ([`Observed`]):
//! faultline-sdk's `RoomEvent` in process, and the shared [`ClientEvent`] vocabulary every
//! client under test reports in.
//!
//! An [`EventLog`] wraps a room's event stream, timestamps each event (`tokio::time`, so it
//! works with paused or simulated time too) and lets a test wait for the event it expects,
//! failing with the whole trace when it does not come. [`check_invariants`] judges a trace
//! against DESIGN.md's invariants 1–3:
//!
//! 1. `Reconnected` only after a `Reconnecting` of the same episode; one `Reconnecting` per
//!    episode. (The JavaScript SDK may open an episode with `SignalReconnecting` instead: see
//!    [`Lifecycle`].)
//! 2. At most one `Disconnected` and no event after it; the room's `connection_state()`
//!    agrees with the last lifecycle event.
//! 3. Liveness: once faults stop, the room is `Connected` or `Disconnected` within the
//!    policy's bound — never left `Reconnecting`.

use std::fmt::{self, Write as _};
use std::time::Duration;

use faultline_sdk::{ConnectionState, RoomEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

pub use crate::client::event::{ClientEvent, Lifecycle, Observed};

/// One recorded event and when it arrived, relative to the start of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<E = RoomEvent> {
    /// Time since the log was created.
    pub at: Duration,
    /// The event.
    pub event: E,
}

/// A recorded event stream.
#[derive(Debug)]
pub struct EventLog<E = RoomEvent> {
    events: UnboundedReceiver<E>,
    started: Instant,
    seen: Vec<Recorded<E>>,
    /// Index of the first event not yet returned by a wait.
    cursor: usize,
    ended: bool,
}

/// A wait that did not get what it expected.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Nothing matching arrived in time.
    #[error("expected {what} within {timeout:?}, it did not come; events so far:\n{trace}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound.
        timeout: Duration,
        /// Every event seen, timestamped.
        trace: String,
    },
    /// The stream ended (the room disconnected) first.
    #[error("expected {what}, but the event stream ended; events so far:\n{trace}")]
    Ended {
        /// What was awaited.
        what: String,
        /// Every event seen, timestamped.
        trace: String,
    },
}

impl<E: Observed> EventLog<E> {
    /// Starts recording `events`.
    pub fn new(events: UnboundedReceiver<E>) -> Self {
        Self::starting_at(events, Instant::now())
    }

    /// Starts recording `events`, timing them from `started` (so that several logs share one
    /// clock).
    pub fn starting_at(events: UnboundedReceiver<E>, started: Instant) -> Self {
        Self { events, started, seen: Vec::new(), cursor: 0, ended: false }
    }

    /// Everything recorded so far.
    pub fn events(&self) -> &[Recorded<E>] {
        &self.seen
    }

    /// Whether the stream has ended (it does after `Disconnected`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The recorded trace, one timestamped event per line.
    pub fn trace(&self) -> String {
        format_trace(&self.seen)
    }

    /// Records whatever has already arrived, without waiting.
    pub fn poll(&mut self) {
        while !self.ended {
            match self.events.try_recv() {
                Ok(event) => self.record(event),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => self.ended = true,
            }
        }
    }

    fn record(&mut self, event: E) {
        self.seen.push(Recorded { at: self.started.elapsed(), event });
    }

    /// Waits for the next event (after those already returned by earlier waits) matching
    /// `matches`, for at most `timeout`; `what` describes it for the error.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&E) -> bool,
    ) -> Result<E, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            while self.cursor < self.seen.len() {
                let event = &self.seen[self.cursor].event;
                self.cursor += 1;
                if matches(event) {
                    return Ok(event.clone());
                }
            }
            if self.ended {
                return Err(WaitError::Ended { what: what.to_owned(), trace: self.trace() });
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => self.ended = true,
                Err(_) => {
                    return Err(WaitError::Timeout {
                        what: what.to_owned(),
                        timeout,
                        trace: self.trace(),
                    })
                }
            }
        }
    }

    /// Waits until the stream ends (the room disconnected), for at most `timeout`.
    pub async fn wait_ended(&mut self, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => self.ended = true,
                Err(_) => {
                    return Err(WaitError::Timeout {
                        what: "the event stream to end".into(),
                        timeout,
                        trace: self.trace(),
                    })
                }
            }
        }
        Ok(())
    }

    /// When the first recorded event matching `matches` arrived (time since the log began).
    pub fn first_at(&self, matches: impl Fn(&E) -> bool) -> Option<Duration> {
        self.seen.iter().find(|r| matches(&r.event)).map(|r| r.at)
    }

    /// How many recorded events match `matches`.
    pub fn count(&self, matches: impl Fn(&E) -> bool) -> usize {
        self.seen.iter().filter(|r| matches(&r.event)).count()
    }

    /// Records what has arrived, then checks the invariants against `final_state` (the
    /// room's `connection_state()` now).
    pub fn check(&mut self, final_state: ConnectionState) -> Result<(), InvariantViolation> {
        self.poll();
        check_invariants(&self.seen, final_state)
    }
}

/// Which invariant a trace broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Invariant 1: `Reconnected` with no `Reconnecting` open.
    ReconnectedWithoutReconnecting {
        /// Index of the offending event.
        index: usize,
    },
    /// Invariant 1: a second `Reconnecting` in one episode.
    ReconnectingTwice {
        /// Index of the offending event.
        index: usize,
    },
    /// Invariant 2: an event after `Disconnected`.
    EventAfterDisconnected {
        /// Index of the offending event.
        index: usize,
    },
    /// Invariant 2: `connection_state()` disagrees with the last lifecycle event.
    StateMismatch {
        /// What the last lifecycle event implies.
        expected: ConnectionState,
        /// What the room reports.
        actual: ConnectionState,
    },
    /// Invariant 3: still `Reconnecting` when the run is judged.
    StuckReconnecting,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::ReconnectedWithoutReconnecting { index } => {
                write!(f, "event #{index}: Reconnected without a Reconnecting in the same episode")
            }
            Violation::ReconnectingTwice { index } => {
                write!(f, "event #{index}: a second Reconnecting within one episode")
            }
            Violation::EventAfterDisconnected { index } => {
                write!(f, "event #{index}: an event after Disconnected")
            }
            Violation::StateMismatch { expected, actual } => write!(
                f,
                "connection_state() is {actual:?} but the last lifecycle event implies {expected:?}"
            ),
            Violation::StuckReconnecting => {
                write!(f, "the room is still Reconnecting: an episode never ended")
            }
        }
    }
}

/// A broken invariant, with the trace that broke it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invariant violated: {violation}\ntrace:\n{trace}")]
pub struct InvariantViolation {
    /// What was broken.
    pub violation: Violation,
    /// The timestamped trace.
    pub trace: String,
}

/// Checks `events` against invariants 1–3, given the room's state now.
pub fn check_invariants<E: Observed>(
    events: &[Recorded<E>],
    final_state: ConnectionState,
) -> Result<(), InvariantViolation> {
    let fail = |violation| Err(InvariantViolation { violation, trace: format_trace(events) });
    let mut in_episode = false;
    let mut said_reconnecting = false;
    let mut disconnected = false;
    let mut last_state = None;
    for (index, recorded) in events.iter().enumerate() {
        if disconnected {
            return fail(Violation::EventAfterDisconnected { index });
        }
        let Some(step) = recorded.event.lifecycle() else { continue };
        match step {
            Lifecycle::Reconnecting if said_reconnecting => {
                return fail(Violation::ReconnectingTwice { index })
            }
            Lifecycle::Reconnecting => {
                in_episode = true;
                said_reconnecting = true;
            }
            // Opens an episode; inside one it is a later resume attempt, nothing more.
            Lifecycle::SignalReconnecting => in_episode = true,
            Lifecycle::Reconnected if !in_episode => {
                return fail(Violation::ReconnectedWithoutReconnecting { index })
            }
            Lifecycle::Reconnected => {
                in_episode = false;
                said_reconnecting = false;
            }
            Lifecycle::Disconnected => disconnected = true,
            Lifecycle::Connected => {}
        }
        last_state = Some(step.resulting_state());
    }
    if final_state == ConnectionState::Reconnecting {
        return fail(Violation::StuckReconnecting);
    }
    match last_state {
        Some(expected) if expected != final_state => {
            fail(Violation::StateMismatch { expected, actual: final_state })
        }
        _ => Ok(()),
    }
}

/// One line per event: `+1.234s Reconnecting`.
pub fn format_trace<E: std::fmt::Debug>(events: &[Recorded<E>]) -> String {
    let mut out = String::new();
    for (index, recorded) in events.iter().enumerate() {
        let _ = writeln!(out, "  #{index} +{:.3}s {:?}", recorded.at.as_secs_f64(), recorded.event);
    }
    if out.is_empty() {
        out.push_str("  (no events)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use faultline_sdk::DisconnectReason;

    use super::*;

    fn trace(events: &[RoomEvent]) -> Vec<Recorded> {
        events
            .iter()
            .enumerate()
            .map(|(i, event)| Recorded {
                at: Duration::from_millis(i as u64),
                event: event.clone(),
            })
            .collect()
    }

    fn disconnected() -> RoomEvent {
        RoomEvent::Disconnected { reason: DisconnectReason::SignalClose }
    }

    #[test]
    fn a_clean_recovery_and_end_pass() {
        let events = trace(&[
            RoomEvent::Connected,
            RoomEvent::Reconnecting,
            RoomEvent::Reconnected,
            RoomEvent::Reconnecting,
            disconnected(),
        ]);
        let result = check_invariants(&events, ConnectionState::Disconnected);
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn a_signalling_only_resume_opens_an_episode_of_its_own() {
        let events = |list: &[ClientEvent]| -> Vec<Recorded<ClientEvent>> {
            list.iter()
                .enumerate()
                .map(|(i, event)| Recorded {
                    at: Duration::from_millis(i as u64),
                    event: event.clone(),
                })
                .collect()
        };
        let gone = ClientEvent::Disconnected { reason: DisconnectReason::UnknownReason };
        use ClientEvent::{Connected, Reconnected, Reconnecting, SignalReconnecting};
        // livekit-client: a resume; an escalation with a later resume attempt that runs out.
        let resume = events(&[Connected, SignalReconnecting, Reconnected]);
        assert!(check_invariants(&resume, ConnectionState::Connected).is_ok());
        let escalated =
            events(&[Connected, SignalReconnecting, Reconnecting, SignalReconnecting, gone]);
        assert!(check_invariants(&escalated, ConnectionState::Disconnected).is_ok());
        let twice = events(&[Connected, SignalReconnecting, Reconnecting, Reconnecting]);
        let error = check_invariants(&twice, ConnectionState::Reconnecting).expect_err("caught");
        assert_eq!(error.violation, Violation::ReconnectingTwice { index: 3 });
        let stuck = events(&[Connected, SignalReconnecting]);
        let error = check_invariants(&stuck, ConnectionState::Reconnecting).expect_err("caught");
        assert_eq!(error.violation, Violation::StuckReconnecting);
        let mismatch = events(&[Connected, SignalReconnecting]);
        let error = check_invariants(&mismatch, ConnectionState::Connected).expect_err("caught");
        assert!(matches!(error.violation, Violation::StateMismatch { .. }));
    }

    #[test]
    fn each_broken_invariant_is_named() {
        let cases = [
            (
                vec![RoomEvent::Connected, RoomEvent::Reconnected],
                ConnectionState::Connected,
                Violation::ReconnectedWithoutReconnecting { index: 1 },
            ),
            (
                vec![RoomEvent::Reconnecting, RoomEvent::Reconnecting],
                ConnectionState::Disconnected,
                Violation::ReconnectingTwice { index: 1 },
            ),
            (
                vec![disconnected(), RoomEvent::Connected],
                ConnectionState::Connected,
                Violation::EventAfterDisconnected { index: 1 },
            ),
            (
                vec![RoomEvent::Connected, disconnected()],
                ConnectionState::Connected,
                Violation::StateMismatch {
                    expected: ConnectionState::Disconnected,
                    actual: ConnectionState::Connected,
                },
            ),
            (
                vec![RoomEvent::Connected, RoomEvent::Reconnecting],
                ConnectionState::Reconnecting,
                Violation::StuckReconnecting,
            ),
        ];
        for (events, state, expected) in cases {
            let error = check_invariants(&trace(&events), state).expect_err("must be caught");
            assert_eq!(error.violation, expected);
            assert!(error.to_string().contains("#0"), "the trace is printed: {error}");
        }
    }

    #[tokio::test]
    async fn waits_return_the_match_or_the_trace() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut log = EventLog::new(rx);
        tx.send(RoomEvent::Connected).expect("open");
        tx.send(RoomEvent::Reconnecting).expect("open");
        let got = log
            .wait_for("Reconnecting", Duration::from_secs(1), |e| *e == RoomEvent::Reconnecting)
            .await
            .expect("it was sent");
        assert_eq!(got, RoomEvent::Reconnecting);
        let missing = log
            .wait_for("Reconnected", Duration::from_millis(10), |e| *e == RoomEvent::Reconnected)
            .await
            .expect_err("never sent");
        assert!(missing.to_string().contains("Reconnecting"), "{missing}");
        drop(tx);
        let ended = log
            .wait_for("Reconnected", Duration::from_secs(1), |e| *e == RoomEvent::Reconnected)
            .await
            .expect_err("the stream ended");
        assert!(matches!(ended, WaitError::Ended { .. }));
    }
}
