//! The user-facing handle: [`Room`] and its [`LocalParticipant`].
//!
//! A `Room` is a thin handle over the engine task: reads come from the shared state, actions
//! go to the engine as commands. Dropping the `Room` closes it like [`Room::close`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::engine::episode::Failure;
use crate::engine::session::{Session, Setup};
use crate::engine::shared::Shared;
use crate::engine::{Command, Engine};
use crate::media::{LocalTrack, LocalTrackPublication, RemoteTrack, TrackSource};
use crate::{
    ConnectionState, DataPacket, RemoteParticipant, RoomError, RoomEvent, RoomOptions,
    SimulateScenario,
};

/// How long [`Room::close`] waits for the engine to confirm.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Joins with `setup`, trying again at once after a failure that another attempt may fix.
async fn join_with_retries(setup: &Setup) -> Result<Session, RoomError> {
    let attempts = setup.options.join_retries.saturating_add(1);
    let mut made = 0;
    loop {
        made += 1;
        match Session::join(setup.clone()).await {
            Ok(session) => return Ok(session),
            Err(failed) if matches!(failed.failure, Failure::Terminal(_)) => {
                return Err(failed.error)
            }
            Err(failed) if made >= attempts => {
                return Err(if attempts == 1 {
                    failed.error
                } else {
                    RoomError::JoinFailed { attempts: made, last: Box::new(failed.error) }
                })
            }
            Err(failed) => {
                tracing::warn!(
                    attempt = made,
                    of = attempts,
                    "join failed, trying again: {}",
                    failed.error
                );
            }
        }
    }
}

/// A connection to a LiveKit room.
#[derive(Debug)]
pub struct Room {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Room {
    /// Joins the room at `url` (ws, wss, http or https) with `token`. Returns once signalling
    /// and the primary peer connection are up, with the room's event stream (whose first
    /// events are `ConnectionStateChanged(Connected)` and `Connected`).
    ///
    /// Every step is bounded by the option timeouts. A failed join is tried again at once,
    /// [`RoomOptions::join_retries`] times (like upstream), then ends in
    /// [`RoomError::JoinFailed`] naming the last attempt's error; a refused token (reported
    /// with the server's explanation, [`RoomError::is_unauthorized`]) or a malformed URL
    /// ends it at once.
    pub async fn connect(
        url: &str,
        token: &str,
        options: RoomOptions,
    ) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>), RoomError> {
        let base = crate::signal::url::parse_base(url)?;
        let setup =
            Setup { network: options.network.clone(), base, token: token.to_owned(), options };
        let session = join_with_retries(&setup).await?;
        let shared = Arc::new(Shared::new(&session.join));
        let events = shared.subscribe();
        shared.emit(RoomEvent::Connected);
        let (commands, command_rx) = mpsc::unbounded_channel();
        tokio::spawn(Engine::new(shared.clone(), command_rx, setup).run(session));
        Ok((Room { shared, commands }, events))
    }

    /// The current connection state (agrees with the last lifecycle event sent).
    pub fn connection_state(&self) -> ConnectionState {
        self.shared.connection_state()
    }

    /// Another event stream, starting now (already ended if the room is disconnected).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<RoomEvent> {
        self.shared.subscribe()
    }

    /// The room's name.
    pub fn name(&self) -> String {
        self.shared.room_name()
    }

    /// The room's server-assigned sid.
    pub fn sid(&self) -> String {
        self.shared.room_sid()
    }

    /// The local participant.
    pub fn local_participant(&self) -> LocalParticipant {
        LocalParticipant { shared: self.shared.clone(), commands: self.commands.clone() }
    }

    /// The other participants, by identity.
    pub fn remote_participants(&self) -> HashMap<String, RemoteParticipant> {
        self.shared.remotes()
    }

    /// The remote tracks this participant is subscribed to, with their publishers'
    /// identities.
    pub fn subscribed_tracks(&self) -> Vec<(String, RemoteTrack)> {
        self.shared.subscribed()
    }

    /// Makes a failure happen (see [`SimulateScenario`]). Returns once it is under way;
    /// what follows arrives as events. Fails if the room is not connected.
    pub async fn simulate_scenario(&self, scenario: SimulateScenario) -> Result<(), RoomError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Simulate(scenario, reply)).map_err(|_| RoomError::Closed)?;
        answer.await.map_err(|_| RoomError::Closed)?
    }

    /// Leaves the room: tells the server, emits `Disconnected { ClientInitiated }` (unless
    /// the room had already ended) and ends the event streams. Idempotent.
    pub async fn close(&self) -> Result<(), RoomError> {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close(Some(reply))).is_err() {
            return Ok(());
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, done).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RoomError::Timeout { during: "closing the room", after: CLOSE_TIMEOUT }),
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Close(None));
    }
}

/// The local participant of a [`Room`].
#[derive(Debug, Clone)]
pub struct LocalParticipant {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl LocalParticipant {
    /// The identity from the token.
    pub fn identity(&self) -> String {
        self.shared.local().identity
    }

    /// The server-assigned sid of the current session (changes on a full reconnect).
    pub fn sid(&self) -> String {
        self.shared.local().sid
    }

    /// The display name.
    pub fn name(&self) -> String {
        self.shared.local().name
    }

    /// Application metadata.
    pub fn metadata(&self) -> String {
        self.shared.local().metadata
    }

    /// Publishes a data packet; returns once it has been handed to the room's live
    /// connection, in order with the others.
    ///
    /// - **Reliable** (the default): while the room reconnects, the call waits for the
    ///   episode's outcome — `Ok` once the packet is sent on the recovered connection,
    ///   [`RoomError::NotSent`] if the room disconnects instead; it never reports success for
    ///   a packet it dropped. A sent packet is kept until the server acknowledges it and sent
    ///   again after a resume or a full reconnect if need be; each receiver gets it once (see
    ///   the crate's data de-duplication notes). At most 4 MiB of unacknowledged packets are
    ///   kept: past that, calls wait for acknowledgements (backpressure); and at most 4 MiB
    ///   more may wait to be sent, past which a call fails at once with
    ///   [`RoomError::SendQueueFull`].
    /// - **Lossy**: sent at once if the room is connected, never kept or sent again; while
    ///   the room reconnects it fails at once with [`RoomError::NotConnected`] (lossy data
    ///   would arrive stale). Once sent it may still be lost on the way, by design.
    pub async fn publish_data(&self, packet: DataPacket) -> Result<(), RoomError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::PublishData(packet, reply)).map_err(|_| RoomError::Closed)?;
        answer.await.map_err(|_| RoomError::Closed)?
    }

    /// Publishes a local track (one per source) and returns once the server accepted it
    /// (`LocalTrackPublished` is emitted then); its frames flow once the publisher
    /// connection has negotiated its media line.
    ///
    /// While the room reconnects the call waits for the episode's outcome, and the track
    /// is published in the recovered session. After a full reconnect every published track
    /// is published again in the new session, with a new sid (`LocalTrackRepublished`),
    /// keeping its mute state.
    pub async fn publish_track(
        &self,
        track: LocalTrack,
    ) -> Result<LocalTrackPublication, RoomError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::PublishTrack(track, reply)).map_err(|_| RoomError::Closed)?;
        answer.await.map_err(|_| RoomError::Closed)?
    }

    /// Mutes (frames stop, the server and other participants are told) or unmutes the
    /// local track of `source`. While the room reconnects it takes effect at once locally
    /// and reaches the server when the room is back; it survives a full reconnect.
    pub async fn set_track_muted(&self, source: TrackSource, muted: bool) -> Result<(), RoomError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::MuteTrack(source, muted, reply))
            .map_err(|_| RoomError::Closed)?;
        answer.await.map_err(|_| RoomError::Closed)?
    }

    /// The local tracks the server has accepted in the current session.
    pub fn track_publications(&self) -> Vec<LocalTrackPublication> {
        self.shared.local_tracks()
    }
}
