//! Live event recording for tests: an [`EventLog`] wraps a room's event stream, timestamps
//! each event (`tokio::time`, so it works with paused or simulated time too) and lets a test
//! wait for the event it expects, failing with the whole trace when it does not come.
//!
//! It works on any event type that can be put in the shared vocabulary ([`Observed`]):
//! faultline-sdk's `RoomEvent` in process, and the [`ClientEvent`]s every client under test
//! reports. Its records are [`EventRecord`]s, the run record's own type; [`EventLog::judge`]
//! hands them to the one judge ([`crate::judge::lifecycle`]: DESIGN.md's invariants 1–2, and
//! 3 as far as one room's log can tell — never left `Reconnecting`).

use std::time::Duration;

use faultline_sdk::{ConnectionState, RoomEvent};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

pub use crate::client::event::{ClientEvent, Lifecycle, Observed};
use crate::judge::{self, Violation};
use crate::record::{format_trace, EventRecord};

/// A recorded event stream.
#[derive(Debug)]
pub struct EventLog<E = RoomEvent> {
    events: UnboundedReceiver<E>,
    started: Instant,
    seen: Vec<EventRecord<E>>,
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

    /// Everything recorded so far (a log of one room leaves `participant` empty).
    pub fn events(&self) -> &[EventRecord<E>] {
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
        self.seen.push(EventRecord {
            participant: String::new(),
            at: self.started.elapsed(),
            event,
        });
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

    /// Records what has arrived, then has the judge ([`judge::lifecycle`]) hold the log to the
    /// invariants, with `final_state` (the room's `connection_state()` now).
    pub fn judge(&mut self, final_state: ConnectionState) -> Result<(), Broken> {
        self.poll();
        let judged: Vec<EventRecord> = self
            .seen
            .iter()
            .filter_map(|r| {
                let event = r.event.client_event()?;
                Some(EventRecord { participant: r.participant.clone(), at: r.at, event })
            })
            .collect();
        match judge::lifecycle("", &judged, final_state) {
            None => Ok(()),
            Some(violation) => Err(Broken { violation, trace: self.trace() }),
        }
    }
}

/// A log that broke an invariant, with its trace.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{violation}\ntrace:\n{trace}")]
pub struct Broken {
    /// What was broken.
    pub violation: Violation,
    /// The timestamped trace.
    pub trace: String,
}

#[cfg(test)]
mod tests {
    use faultline_sdk::DisconnectReason;

    use super::*;

    #[test_log::test(tokio::test)]
    async fn a_broken_invariant_is_reported_with_the_trace() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut log = EventLog::new(rx);
        tx.send(RoomEvent::Connected).expect("open");
        tx.send(RoomEvent::ConnectionStateChanged(ConnectionState::Reconnecting)).expect("open");
        tx.send(RoomEvent::Reconnecting).expect("open");
        tx.send(RoomEvent::Disconnected { reason: DisconnectReason::SignalClose }).expect("open");
        assert!(log.judge(ConnectionState::Disconnected).is_ok());
        let error = log.judge(ConnectionState::Connected).expect_err("state disagrees");
        assert_eq!(error.violation.invariant, 2);
        let text = error.to_string();
        assert!(text.contains("#3") && text.contains("Disconnected"), "the trace: {text}");
    }

    #[test_log::test(tokio::test)]
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
