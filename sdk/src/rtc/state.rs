//! The connection state of one peer connection, derived from what str0m reports (ICE state
//! changes, DTLS up) plus one timer of our own: how long a Disconnected transport may stay
//! that way before it is declared Failed.
//!
//! Pure bookkeeping, no I/O: the driver feeds it and turns each returned change into a
//! [`PcEvent::StateChanged`](super::PcEvent::StateChanged).

use std::time::Duration;

use str0m::IceConnectionState;
use tokio::time::Instant;

use super::PcState;

/// Tracks [`PcState`]; every method returns the new state when (and only when) it changed.
#[derive(Debug)]
pub(super) struct StateTracker {
    state: PcState,
    ice_connected: bool,
    dtls_up: bool,
    failed_after: Duration,
    fail_at: Option<Instant>,
}

impl StateTracker {
    /// A tracker in [`PcState::New`].
    pub(super) fn new(failed_after: Duration) -> Self {
        StateTracker {
            state: PcState::New,
            ice_connected: false,
            dtls_up: false,
            failed_after,
            fail_at: None,
        }
    }

    /// The current state.
    #[cfg(test)]
    pub(super) fn state(&self) -> PcState {
        self.state
    }

    /// When a Disconnected transport becomes Failed, if it is Disconnected now.
    pub(super) fn fail_deadline(&self) -> Option<Instant> {
        self.fail_at
    }

    /// str0m's ICE agent changed state.
    pub(super) fn on_ice(&mut self, ice: IceConnectionState, now: Instant) -> Option<PcState> {
        match ice {
            IceConnectionState::New => None,
            IceConnectionState::Checking => {
                self.ice_connected = false;
                match self.state {
                    PcState::New | PcState::Connected => self.set(PcState::Connecting),
                    // Checking again after losing the path is no recovery yet; only Connected
                    // (or an explicit ICE restart) ends the Disconnected countdown.
                    _ => None,
                }
            }
            IceConnectionState::Connected | IceConnectionState::Completed => {
                self.ice_connected = true;
                self.connected_if_ready()
            }
            IceConnectionState::Disconnected => {
                self.ice_connected = false;
                match self.state {
                    PcState::New | PcState::Connecting | PcState::Connected => {
                        self.fail_at = Some(now + self.failed_after);
                        self.set(PcState::Disconnected)
                    }
                    _ => None,
                }
            }
        }
    }

    /// DTLS completed its handshake (str0m's `Event::Connected`).
    pub(super) fn on_dtls_connected(&mut self) -> Option<PcState> {
        self.dtls_up = true;
        self.connected_if_ready()
    }

    /// An ICE restart was applied (ours or the remote's): a fresh attempt to connect, which
    /// also ends any Disconnected countdown.
    pub(super) fn on_ice_restart(&mut self) -> Option<PcState> {
        if self.state == PcState::Closed {
            return None;
        }
        self.ice_connected = false;
        self.fail_at = None;
        self.set(PcState::Connecting)
    }

    /// The timer from [`Self::fail_deadline`] fired at `now`.
    pub(super) fn on_fail_deadline(&mut self, now: Instant) -> Option<PcState> {
        match self.fail_at {
            Some(at) if now >= at && self.state == PcState::Disconnected => {
                self.fail_at = None;
                self.set(PcState::Failed)
            }
            _ => None,
        }
    }

    /// The transport failed beyond recovery (str0m or the socket gave up).
    pub(super) fn on_fatal(&mut self) -> Option<PcState> {
        self.fail_at = None;
        match self.state {
            PcState::Closed => None,
            _ => self.set(PcState::Failed),
        }
    }

    /// The peer connection was closed locally; nothing changes after this.
    pub(super) fn on_close(&mut self) -> Option<PcState> {
        self.fail_at = None;
        self.set(PcState::Closed)
    }

    fn connected_if_ready(&mut self) -> Option<PcState> {
        if self.ice_connected && self.dtls_up && self.state != PcState::Closed {
            self.fail_at = None;
            self.set(PcState::Connected)
        } else {
            None
        }
    }

    fn set(&mut self, state: PcState) -> Option<PcState> {
        if self.state == state || self.state == PcState::Closed {
            return None;
        }
        self.state = state;
        Some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED_AFTER: Duration = Duration::from_secs(5);

    fn connected(now: Instant) -> StateTracker {
        let mut t = StateTracker::new(FAILED_AFTER);
        assert_eq!(t.on_ice(IceConnectionState::Checking, now), Some(PcState::Connecting));
        assert_eq!(t.on_ice(IceConnectionState::Connected, now), None, "DTLS is not up yet");
        assert_eq!(t.on_dtls_connected(), Some(PcState::Connected));
        t
    }

    #[test]
    fn connected_needs_ice_and_dtls() {
        let now = Instant::now();
        let mut t = StateTracker::new(FAILED_AFTER);
        assert_eq!(t.on_dtls_connected(), None);
        assert_eq!(t.on_ice(IceConnectionState::Completed, now), Some(PcState::Connected));
    }

    #[test]
    fn disconnected_turns_failed_only_after_the_bound() {
        let now = Instant::now();
        let mut t = connected(now);
        assert_eq!(t.on_ice(IceConnectionState::Disconnected, now), Some(PcState::Disconnected));
        assert_eq!(t.fail_deadline(), Some(now + FAILED_AFTER));
        assert_eq!(t.on_fail_deadline(now + FAILED_AFTER / 2), None);
        assert_eq!(t.on_ice(IceConnectionState::Checking, now), None);
        assert_eq!(t.on_fail_deadline(now + FAILED_AFTER), Some(PcState::Failed));
        assert_eq!(t.fail_deadline(), None);
    }

    #[test]
    fn recovery_cancels_the_countdown() {
        let now = Instant::now();
        let mut t = connected(now);
        t.on_ice(IceConnectionState::Disconnected, now);
        assert_eq!(t.on_ice(IceConnectionState::Connected, now), Some(PcState::Connected));
        assert_eq!(t.fail_deadline(), None);
        assert_eq!(t.on_fail_deadline(now + FAILED_AFTER * 2), None);
    }

    #[test]
    fn ice_restart_revives_a_failed_transport() {
        let now = Instant::now();
        let mut t = connected(now);
        t.on_ice(IceConnectionState::Disconnected, now);
        t.on_fail_deadline(now + FAILED_AFTER);
        assert_eq!(t.on_ice_restart(), Some(PcState::Connecting));
        assert_eq!(t.on_ice(IceConnectionState::Connected, now), Some(PcState::Connected));
    }

    #[test]
    fn nothing_changes_after_closed() {
        let now = Instant::now();
        let mut t = connected(now);
        assert_eq!(t.on_close(), Some(PcState::Closed));
        assert_eq!(t.on_ice(IceConnectionState::Disconnected, now), None);
        assert_eq!(t.on_ice_restart(), None);
        assert_eq!(t.on_fatal(), None);
        assert_eq!(t.on_close(), None);
        assert_eq!(t.state(), PcState::Closed);
    }
}
