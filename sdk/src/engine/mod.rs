//! The engine: one task that owns a room's session and its state machine
//! (connected → reconnecting → connected | disconnected).
//!
//! While connected it turns server messages and peer-connection events into room state and
//! [`RoomEvent`]s, and carries out the room's commands. When the session breaks it runs one
//! reconnect episode (rules in [`episode`]): `Reconnecting` once, resume or full-reconnect
//! attempts spaced by the policy, then `Reconnected` or exactly one `Disconnected`, after
//! which the event streams end and the task stops. The room is never `Connected` again after
//! that, nor after `close()`.

pub(crate) mod data;
pub(crate) mod episode;
pub(crate) mod session;
pub(crate) mod shared;
pub(crate) mod tracks;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use livekit_protocol::{self as proto, signal_request, signal_response, simulate_scenario};
use prost::Message as _;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, oneshot};

use crate::media::{LocalTrack, TrackSource};
use crate::rtc::DataChannelKind;
use crate::{
    DataPacket, DataPacketKind, DisconnectReason, RemoteParticipant, RoomError, RoomEvent,
    SimulateScenario,
};
use data::{Incoming, Outgoing, Sender, REPLAY_BUFFER_BYTES};
use episode::{AttemptKind, Episode, Next, Trigger};
use session::{AttemptError, Output, Session, Setup};
use shared::Shared;
use tracks::{PublishReply, Tracks};

/// What the room asks the engine to do.
pub(crate) enum Command {
    /// Publish a data packet.
    PublishData(DataPacket, oneshot::Sender<Result<(), RoomError>>),
    /// Publish a local track.
    PublishTrack(LocalTrack, PublishReply),
    /// Mute or unmute the local track of a source.
    MuteTrack(TrackSource, bool, oneshot::Sender<Result<(), RoomError>>),
    /// Simulate a failure.
    Simulate(SimulateScenario, oneshot::Sender<Result<(), RoomError>>),
    /// Leave the room for good (the reply comes once `Disconnected` was emitted).
    Close(Option<oneshot::Sender<()>>),
}

/// How the connected phase ended.
enum Step {
    Recover(Trigger),
    End(DisconnectReason),
}

/// The most payload bytes that may wait to be sent, as much again as the replay buffer
/// holds; past it `publish_data` fails with [`RoomError::SendQueueFull`] instead of growing
/// memory.
const QUEUE_BYTES: usize = REPLAY_BUFFER_BYTES;

/// A packet waiting to be handed to the publisher's channel, and who to tell when it is.
struct Queued {
    packet: DataPacket,
    reply: oneshot::Sender<Result<(), RoomError>>,
}

/// What a setup attempt produced.
enum Attempted {
    Resumed(Session, u32),
    Joined(Session),
}

/// The engine task's state.
pub(crate) struct Engine {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    setup: Setup,
    rng: SmallRng,
    outgoing: Outgoing,
    incoming: Incoming,
    /// Data waiting for the publisher's channel, for room in the replay buffer, or for the
    /// end of an episode; each caller hears once its packet is sent (or never will be).
    queued: VecDeque<Queued>,
    /// Sids of the participants currently speaking.
    speakers: Vec<String>,
    /// Who to tell once the room is closed.
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Local tracks, remote publications, subscriptions.
    tracks: Tracks,
}

impl Engine {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        setup: Setup,
    ) -> Self {
        let rng = setup.options.rng();
        Self {
            shared,
            commands,
            setup,
            rng,
            outgoing: Outgoing::default(),
            incoming: Incoming::default(),
            queued: VecDeque::new(),
            speakers: Vec::new(),
            close_waiters: Vec::new(),
            tracks: Tracks::default(),
        }
    }

    /// Runs the room until it is disconnected.
    pub(crate) async fn run(mut self, mut session: Session) {
        self.tracks.set_received(session.received());
        self.emit_all(Vec::new());
        self.drain_stash(&mut session).await;
        loop {
            match self.connected(&mut session).await {
                Step::End(reason) => {
                    if reason == DisconnectReason::ClientInitiated {
                        session.leave().await;
                    }
                    self.end(reason);
                    return;
                }
                Step::Recover(trigger) => match self.recover(session, trigger).await {
                    Some(recovered) => session = recovered,
                    None => return,
                },
            }
        }
    }

    /// The connected phase: runs until the session breaks or the room ends.
    async fn connected(&mut self, session: &mut Session) -> Step {
        enum Input {
            Command(Option<Command>),
            Session(session::Raw),
        }
        loop {
            let input = tokio::select! {
                biased;
                command = self.commands.recv() => Input::Command(command),
                raw = session.recv() => Input::Session(raw),
            };
            let output = match input {
                Input::Command(None) | Input::Command(Some(Command::Close(None))) => {
                    return Step::End(DisconnectReason::ClientInitiated)
                }
                Input::Command(Some(Command::Close(Some(waiter)))) => {
                    self.close_waiters.push(waiter);
                    return Step::End(DisconnectReason::ClientInitiated);
                }
                Input::Command(Some(Command::PublishData(packet, reply))) => {
                    self.enqueue(packet, reply);
                    self.flush_data(session);
                    continue;
                }
                Input::Command(Some(Command::PublishTrack(track, reply))) => {
                    self.tracks.publish(track, reply);
                    self.request_tracks(session);
                    continue;
                }
                Input::Command(Some(Command::MuteTrack(source, muted, reply))) => {
                    let _ = reply.send(self.mute(Some(session), source, muted));
                    continue;
                }
                Input::Command(Some(Command::Simulate(scenario, reply))) => {
                    let step = simulate(session, scenario).await;
                    let _ = reply.send(Ok(()));
                    match step {
                        Some(trigger) => return Step::Recover(trigger),
                        None => continue,
                    }
                }
                Input::Session(raw) => session.process(raw).await,
            };
            match output {
                None => {}
                Some(Output::Server(message)) => self.on_server_in(session, *message).await,
                Some(Output::SubscriberTracks(offered)) => self.on_offered(offered),
                Some(Output::Leave(leave)) => return obey(&leave),
                Some(Output::SignalLost(why)) => {
                    tracing::info!("signalling lost: {why}");
                    return Step::Recover(Trigger::SignalLost);
                }
                Some(Output::PcFailed(why)) => {
                    tracing::info!("media path failed: {why}");
                    return match self.leave_grace(session).await {
                        Some(step) => step,
                        None => Step::Recover(Trigger::PcFailed),
                    };
                }
                Some(Output::PublisherChannelOpen) => self.flush_data(session),
                Some(Output::Data(kind, payload)) => self.on_data(kind, &payload),
                Some(Output::ReliableAcked(messages)) => {
                    self.outgoing.acked(messages);
                    // Room in the replay buffer: packets waiting for it may go now.
                    self.flush_data(session);
                }
            }
        }
    }

    /// Queues `packet` for sending (its caller hears when it is sent), or refuses it at
    /// once when too much is waiting already.
    fn enqueue(&mut self, packet: DataPacket, reply: oneshot::Sender<Result<(), RoomError>>) {
        let queued: usize = self.queued.iter().map(|q| q.packet.payload.len()).sum();
        if !self.queued.is_empty() && queued + packet.payload.len() > QUEUE_BYTES {
            let _ = reply.send(Err(RoomError::SendQueueFull { queued, limit: QUEUE_BYTES }));
            return;
        }
        self.queued.push_back(Queued { packet, reply });
    }

    /// At the start of an episode: lossy packets still waiting are not carried across it
    /// (they would arrive stale); their callers hear so.
    fn fail_lossy(&mut self) {
        let (lossy, reliable): (VecDeque<Queued>, VecDeque<Queued>) =
            std::mem::take(&mut self.queued).into_iter().partition(|q| !q.packet.reliable);
        self.queued = reliable;
        for q in lossy {
            let _ = q.reply.send(Err(RoomError::NotConnected));
        }
    }

    /// After a peer connection failed: the server closes peer connections right after
    /// sending a Leave, so signalling gets [`LEAVE_GRACE`] to deliver one before the engine
    /// treats the failure as a media fault.
    async fn leave_grace(&mut self, session: &mut Session) -> Option<Step> {
        let deadline = tokio::time::Instant::now() + LEAVE_GRACE;
        while let Ok(raw) = tokio::time::timeout_at(deadline, session.recv()).await {
            match session.process(raw).await {
                Some(Output::Leave(leave)) => return Some(obey(&leave)),
                Some(Output::SignalLost(_)) => return None,
                Some(Output::Server(message)) => self.on_server_in(session, *message).await,
                Some(Output::SubscriberTracks(offered)) => self.on_offered(offered),
                Some(Output::Data(kind, payload)) => self.on_data(kind, &payload),
                Some(Output::ReliableAcked(messages)) => self.outgoing.acked(messages),
                None | Some(Output::PcFailed(_)) | Some(Output::PublisherChannelOpen) => {}
            }
        }
        None
    }

    /// One reconnect episode. Returns the recovered session, or `None` once the room ended.
    async fn recover(&mut self, session: Session, trigger: Trigger) -> Option<Session> {
        self.shared.emit(RoomEvent::Reconnecting);
        self.fail_lossy();
        let mut episode = Episode::new(trigger, self.setup.options.reconnect.clone());
        let mut old = Some(session);
        // Whether the last attempt could not reach the server at all.
        let mut path_down = false;
        while let Some((kind, delay)) = episode.next_attempt(&mut self.rng) {
            tracing::info!(attempt = episode.attempts_made(), ?kind, ?delay, "reconnect attempt");
            let setup = self.setup.clone();
            if self.drive(backoff(&setup, delay, path_down)).await.is_none() {
                if let Some(old) = old {
                    old.leave().await;
                }
                self.end(DisconnectReason::ClientInitiated);
                return None;
            }
            let setup = self.setup.clone();
            let attempt: BoxFuture<'static, Result<Attempted, AttemptError>> =
                match (kind, old.take()) {
                    (AttemptKind::Resume, Some(previous)) => {
                        let reason = match trigger {
                            Trigger::SignalLost => proto::ReconnectReason::RrSignalDisconnected,
                            Trigger::PcFailed => proto::ReconnectReason::RrSubscriberFailed,
                            _ => proto::ReconnectReason::RrUnknown,
                        };
                        let states = self
                            .incoming
                            .states()
                            .map(|(sid, seq)| proto::DataChannelReceiveState {
                                publisher_sid: sid.to_owned(),
                                last_seq: seq,
                            })
                            .collect();
                        Box::pin(async move {
                            previous
                                .resume(setup, reason, states)
                                .await
                                .map(|(s, seq)| Attempted::Resumed(s, seq))
                        })
                    }
                    (_, previous) => Box::pin(async move {
                        if let Some(previous) = previous {
                            previous.leave().await;
                        }
                        Session::join(setup).await.map(Attempted::Joined)
                    }),
                };
            match self.drive(attempt).await {
                None => {
                    self.end(DisconnectReason::ClientInitiated);
                    return None;
                }
                Some(Ok(Attempted::Resumed(mut session, last_seq))) => {
                    self.resumed(&mut session, last_seq).await;
                    return Some(session);
                }
                Some(Ok(Attempted::Joined(mut session))) => {
                    self.rejoined(&mut session).await;
                    return Some(session);
                }
                Some(Err(failed)) => {
                    tracing::info!(
                        attempt = episode.attempts_made(),
                        "reconnect attempt failed: {}",
                        failed.error
                    );
                    path_down = unreachable(&failed.error);
                    if let Next::GiveUp(reason) = episode.failed(kind, failed.failure) {
                        self.end(reason);
                        return None;
                    }
                }
            }
        }
        self.end(trigger.reason());
        None
    }

    /// Runs `work` while serving commands the way a reconnecting room does. `None` if the
    /// room was closed meanwhile (`work` is dropped).
    async fn drive<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    None | Some(Command::Close(None)) => return None,
                    Some(Command::Close(Some(waiter))) => {
                        self.close_waiters.push(waiter);
                        return None;
                    }
                    // Reliable data waits for the episode's outcome: sent once the room is
                    // back (the caller hears then), refused if it ends. Lossy data is not
                    // kept across a reconnect.
                    Some(Command::PublishData(packet, reply)) => {
                        if packet.reliable {
                            self.enqueue(packet, reply);
                        } else {
                            let _ = reply.send(Err(RoomError::NotConnected));
                        }
                    }
                    Some(Command::Simulate(_, reply)) => {
                        let _ = reply.send(Err(RoomError::NotConnected));
                    }
                    // Tracks published or muted while reconnecting take effect once the room
                    // is back: sent in the resumed session, or in the new one.
                    Some(Command::PublishTrack(track, reply)) => self.tracks.publish(track, reply),
                    Some(Command::MuteTrack(source, muted, reply)) => {
                        let _ = reply.send(self.mute(None, source, muted));
                    }
                },
                done = &mut work => return Some(done),
            }
        }
    }

    /// After a resume: reliable data the server lacks is to be sent again, then
    /// `Reconnected`; then what the server said meanwhile, the room's roster among it
    /// (see [`Self::reconcile`]).
    async fn resumed(&mut self, session: &mut Session, last_seq: u32) {
        self.outgoing.resumed(last_seq);
        self.shared.emit(RoomEvent::Reconnected);
        let (mutes, lines) = self.tracks.resumed(&session.sending());
        for (cid, muted) in self.tracks.mute_states() {
            session.set_muted(&cid, muted);
        }
        for mute in mutes {
            session.send(signal_request::Message::Mute(mute));
        }
        if let Err(e) = session.offer_lines(lines).await {
            tracing::warn!("could not offer the tracks again after the resume: {e}");
        }
        self.request_tracks(session);
        let roster = self.roster_position(session);
        let mut position = 0;
        while let Some(stashed) = session.stash.pop_front() {
            let is_roster = roster == Some(position);
            position += 1;
            match stashed {
                Output::Server(message) if is_roster => self.reconcile(*message),
                other => self.on_stashed(session, other).await,
            }
        }
        self.flush_data(session);
    }

    /// Where in what the server said during the resume the room's roster is: after a
    /// resume livekit-server sends everyone's info, the resumed participant's own included
    /// (pkg/rtc/room.go `ResumeParticipant`) — the first update that names us.
    fn roster_position(&self, session: &Session) -> Option<usize> {
        let (_, sid) = self.shared.local_identity_and_sid();
        session.stash.iter().position(|stashed| {
            matches!(stashed, Output::Server(message) if matches!(&**message,
                signal_response::Message::Update(update)
                    if update.participants.iter().any(|p| p.sid == sid)))
        })
    }

    /// Applies the roster sent after a resume and reports as gone every remote participant
    /// it does not name (upstream's reconcile): one that left while our signalling was down
    /// must not stay listed, whether or not the server also sent its departure (it does
    /// only for departures after it last heard us, pkg/rtc/participant_signal.go).
    fn reconcile(&mut self, message: signal_response::Message) {
        let signal_response::Message::Update(update) = message else { return };
        let before = self.shared.remotes_by_identity();
        let mut events = self.shared.apply_participants(&update.participants);
        events.extend(self.shared.keep_only(&update.participants));
        self.participants_changed(&before, events);
    }

    /// Emits participant events, then what the change did to tracks and subscriptions.
    fn participants_changed(
        &mut self,
        before: &std::collections::BTreeMap<String, RemoteParticipant>,
        mut events: Vec<RoomEvent>,
    ) {
        let after = self.shared.remotes_by_identity();
        events.extend(self.tracks.remotes_changed(before, &after));
        self.emit_all(events);
    }

    /// Emits `events` once the room's media state reads as they say.
    fn emit_all(&mut self, events: Vec<RoomEvent>) {
        let subscribed =
            self.tracks.subscriptions().into_iter().map(|s| (s.identity, s.track)).collect();
        self.shared.set_media(self.tracks.local_publications(), subscribed);
        for event in events {
            self.shared.emit(event);
        }
    }

    /// A subscriber offer was answered: which tracks its lines carry now.
    fn on_offered(&mut self, offered: Vec<crate::rtc::msid::OfferedTrack>) {
        let remotes = self.shared.remotes_by_identity();
        let events = self.tracks.offered(offered, &remotes);
        self.emit_all(events);
    }

    /// Asks the server to accept the local tracks not yet requested in this session.
    fn request_tracks(&mut self, session: &Session) {
        let (identity, _) = self.shared.local_identity_and_sid();
        for request in self.tracks.requests(&identity) {
            session.send(signal_request::Message::AddTrack(request));
        }
    }

    /// Mutes or unmutes a local track: its frames stop or resume now if a session is at
    /// hand, and the server is told (now, or after the episode).
    fn mute(
        &mut self,
        session: Option<&Session>,
        source: TrackSource,
        muted: bool,
    ) -> Result<(), RoomError> {
        let (cid, request) = self.tracks.set_muted(source, muted)?;
        if let Some(session) = session {
            if let Some(cid) = cid {
                session.set_muted(&cid, muted);
            }
            if let Some(request) = request {
                session.send(signal_request::Message::Mute(request));
            }
        }
        self.emit_all(Vec::new());
        Ok(())
    }

    /// A server message, with the session at hand for those that need it (a track the
    /// server accepted is offered on the publisher connection).
    async fn on_server_in(&mut self, session: &mut Session, message: signal_response::Message) {
        let signal_response::Message::TrackPublished(response) = message else {
            self.on_server(message);
            return;
        };
        let Some(tracks::Accepted { line, event, mute }) = self.tracks.published(&response) else {
            tracing::debug!(cid = response.cid, "a track accepted that is not ours (any more)");
            return;
        };
        if let Err(e) = session.offer_lines(vec![line]).await {
            tracing::warn!("could not offer a published track: {e}");
        }
        if let Some(mute) = mute {
            session.send(signal_request::Message::Mute(mute));
        }
        self.emit_all(vec![event]);
    }

    /// After a full reconnect: a new participant session on the server, which accepts our
    /// sequences where they left off, so reliable data not known to have reached the server
    /// is sent again, first; remote participants that changed meanwhile are reported; then
    /// `Reconnected`.
    async fn rejoined(&mut self, session: &mut Session) {
        self.outgoing.rejoined();
        self.shared.reset_from_join(&session.join);
        let present: Vec<RemoteParticipant> =
            session.join.other_participants.iter().map(RemoteParticipant::from_info).collect();
        let before = self.shared.remotes_by_identity();
        let mut events = self.tracks.restarted(session.received(), &before);
        events.extend(self.shared.replace_remotes(present));
        self.participants_changed(&before, events);
        self.shared.emit(RoomEvent::Reconnected);
        self.drain_stash(session).await;
        // Every local track is published again in the new session (a new sid each).
        self.request_tracks(session);
        self.flush_data(session);
    }

    async fn drain_stash(&mut self, session: &mut Session) {
        while let Some(stashed) = session.stash.pop_front() {
            self.on_stashed(session, stashed).await;
        }
    }

    /// Handles what arrived while a session was being set up.
    async fn on_stashed(&mut self, session: &mut Session, stashed: Output) {
        match stashed {
            Output::Server(message) => self.on_server_in(session, *message).await,
            Output::SubscriberTracks(offered) => self.on_offered(offered),
            Output::Data(kind, payload) => self.on_data(kind, &payload),
            Output::ReliableAcked(messages) => self.outgoing.acked(messages),
            other => tracing::debug!("not stashed: {other:?}"),
        }
    }

    /// Emits `Disconnected` (once; the shared state guards it) and answers `close()` callers.
    fn end(&mut self, reason: DisconnectReason) {
        for q in self.queued.drain(..) {
            let _ = q.reply.send(Err(RoomError::NotSent { reason }));
        }
        self.tracks.fail_waiters(|| RoomError::Closed);
        self.shared.emit(RoomEvent::Disconnected { reason });
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// A server message for the room.
    fn on_server(&mut self, message: signal_response::Message) {
        match message {
            signal_response::Message::Update(update) => {
                let before = self.shared.remotes_by_identity();
                let events = self.shared.apply_participants(&update.participants);
                self.participants_changed(&before, events);
            }
            signal_response::Message::RoomUpdate(update) => {
                if let Some(room) = update.room {
                    self.shared.set_room(&room);
                }
            }
            signal_response::Message::RefreshToken(token) => self.setup.token = token,
            signal_response::Message::SpeakersChanged(changed) => {
                for speaker in changed.speakers {
                    self.speakers.retain(|sid| *sid != speaker.sid);
                    if speaker.active {
                        self.speakers.push(speaker.sid);
                    }
                }
                let speakers = self.shared.identities_of(&self.speakers);
                self.shared.emit(RoomEvent::ActiveSpeakersChanged { speakers });
            }
            other => tracing::trace!("ignoring {}", crate::signal::message_name(&other)),
        }
    }

    /// A data-channel message: user packets become `DataReceived`, once each.
    fn on_data(&mut self, channel: DataChannelKind, payload: &[u8]) {
        let packet = match proto::DataPacket::decode(payload) {
            Ok(packet) => packet,
            Err(e) => {
                tracing::warn!("ignoring an undecodable data packet: {e}");
                return;
            }
        };
        let Some(proto::data_packet::Value::User(user)) = packet.value else {
            return;
        };
        #[allow(deprecated)]
        let (sender_sid, sender_identity) = (
            if user.participant_sid.is_empty() {
                packet.participant_sid
            } else {
                user.participant_sid
            },
            if user.participant_identity.is_empty() {
                packet.participant_identity
            } else {
                user.participant_identity
            },
        );
        let kind = match channel {
            DataChannelKind::Reliable => DataPacketKind::Reliable,
            DataChannelKind::Lossy => DataPacketKind::Lossy,
        };
        let sender = Sender { identity: &sender_identity, sid: &sender_sid, nonce: &user.nonce };
        if kind == DataPacketKind::Reliable && !self.incoming.accept(sender, packet.sequence) {
            tracing::debug!(
                sender_identity,
                sequence = packet.sequence,
                "dropping a duplicate data packet"
            );
            return;
        }
        let participant = self.shared.remote(&sender_identity);
        self.shared.emit(RoomEvent::DataReceived {
            payload: Arc::new(user.payload),
            topic: user.topic,
            kind,
            participant,
        });
    }

    /// Sends reliable data to replay, then queued data, while the publisher's channels take
    /// it.
    fn flush_data(&mut self, session: &mut Session) {
        if !session.publisher_connected() {
            return;
        }
        while let Some((sequence, encoded)) = self.outgoing.next_replay() {
            if let Err(e) = session.send_data(DataChannelKind::Reliable, encoded.to_vec()) {
                tracing::debug!(sequence, "reliable data to replay waits for the channel: {e}");
                return;
            }
            self.outgoing.replayed(sequence);
        }
        let (identity, sid) = self.shared.local_identity_and_sid();
        while let Some(Queued { packet, .. }) = self.queued.front() {
            let (channel, kind, sequence) = if packet.reliable {
                (
                    DataChannelKind::Reliable,
                    proto::data_packet::Kind::Reliable,
                    self.outgoing.next_sequence(),
                )
            } else {
                (DataChannelKind::Lossy, proto::data_packet::Kind::Lossy, 0)
            };
            #[allow(deprecated)]
            let encoded = proto::DataPacket {
                kind: kind as i32,
                participant_identity: identity.clone(),
                participant_sid: sid.clone(),
                destination_identities: packet.destination_identities.clone(),
                sequence,
                value: Some(proto::data_packet::Value::User(proto::UserPacket {
                    payload: packet.payload.clone(),
                    topic: packet.topic.clone(),
                    nonce: if packet.reliable {
                        self.outgoing.message_id(&sid, sequence)
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })),
            }
            .encode_to_vec();
            if packet.reliable && !self.outgoing.has_room_for(encoded.len()) {
                tracing::debug!(sequence, "reliable data waits for room in the replay buffer");
                return;
            }
            match session.send_data(channel, encoded.clone()) {
                Ok(()) => {
                    if packet.reliable {
                        self.outgoing.sent(sequence, encoded);
                    }
                    if let Some(sent) = self.queued.pop_front() {
                        let _ = sent.reply.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::debug!("data waits for the publisher channel: {e}");
                    return;
                }
            }
        }
    }
}

/// While the server could not be reached, how often the backoff wait checks whether it can
/// be again (a TCP connect through the `Network` seam).
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Waits `delay` — or, when the last attempt could not reach the server, until a probe finds
/// the path back, whichever comes first: a link that heals during a long backoff wait is
/// used within [`PROBE_EVERY`] instead of after the drawn delay. The attempt that follows
/// still counts against the policy; an attempt that reached the server and failed there
/// (an HTTP error, a refused resume) waits out its delay, so a struggling server is not
/// pressed harder.
async fn backoff(setup: &Setup, delay: Duration, path_down: bool) {
    let deadline = tokio::time::Instant::now() + delay;
    let target = match (&setup.base.host_str(), setup.base.port_or_known_default()) {
        (Some(host), Some(port)) if path_down => Some((host.to_string(), port)),
        _ => None,
    };
    let Some((host, port)) = target else {
        tokio::time::sleep_until(deadline).await;
        return;
    };
    loop {
        let probe_at = tokio::time::Instant::now() + PROBE_EVERY;
        if probe_at >= deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        tokio::time::sleep_until(probe_at).await;
        let probe = setup.network.connect_tcp(&host, port);
        if let Ok(Ok(_connection)) = tokio::time::timeout(PROBE_EVERY, probe).await {
            tracing::info!("the server can be reached again: the next attempt goes now");
            return;
        }
    }
}

/// Whether `error` says the server could not be reached at all (the path is down), as
/// opposed to the server answering and refusing.
fn unreachable(error: &RoomError) -> bool {
    matches!(
        error,
        RoomError::Signal(crate::signal::SignalError::Connect { .. })
            | RoomError::Signal(crate::signal::SignalError::Timeout { .. })
    )
}

/// How long signalling may take to explain a peer-connection failure with a Leave.
const LEAVE_GRACE: Duration = Duration::from_secs(1);

/// What a server Leave asks for.
fn obey(leave: &proto::LeaveRequest) -> Step {
    tracing::info!("server sent Leave: action {:?}, reason {:?}", leave.action(), leave.reason());
    match leave.action() {
        proto::leave_request::Action::Disconnect => Step::End(leave.reason()),
        proto::leave_request::Action::Resume => {
            Step::Recover(Trigger::ServerResume(leave.reason()))
        }
        proto::leave_request::Action::Reconnect => {
            Step::Recover(Trigger::ServerReconnect(leave.reason()))
        }
    }
}

/// How long a simulate request that breaks the next resume may take to reach the server.
const SIMULATE_READ_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

/// Carries out a simulation while connected; returns the episode it starts locally, if any.
async fn simulate(session: &Session, scenario: SimulateScenario) -> Option<Trigger> {
    let ask = |scenario: simulate_scenario::Scenario| {
        session.send(signal_request::Message::Simulate(proto::SimulateScenario {
            scenario: Some(scenario),
        }));
    };
    // The resume-breaking scenarios only work if the server has the request before our
    // resume arrives: wait for it to be read before dropping the link ourselves.
    let ask_then_resume = |scenario: simulate_scenario::Scenario| async move {
        ask(scenario);
        if !session.barrier(SIMULATE_READ_BOUND).await {
            tracing::warn!(
                "could not confirm the server read the simulate request; resuming anyway"
            );
        }
        Some(Trigger::SignalLost)
    };
    match scenario {
        SimulateScenario::SignalReconnect => return Some(Trigger::SignalLost),
        SimulateScenario::FullReconnect => return Some(Trigger::LocalFull),
        SimulateScenario::DisconnectSignalOnResume => {
            return ask_then_resume(simulate_scenario::Scenario::DisconnectSignalOnResume(true))
                .await;
        }
        SimulateScenario::DisconnectSignalOnResumeNoMessages => {
            return ask_then_resume(
                simulate_scenario::Scenario::DisconnectSignalOnResumeNoMessages(true),
            )
            .await;
        }
        SimulateScenario::NodeFailure => ask(simulate_scenario::Scenario::NodeFailure(true)),
        SimulateScenario::Migration => ask(simulate_scenario::Scenario::Migration(true)),
        SimulateScenario::ServerLeave => ask(simulate_scenario::Scenario::ServerLeave(true)),
        SimulateScenario::ForceTcp => ask(simulate_scenario::Scenario::SwitchCandidateProtocol(
            proto::CandidateProtocol::Tcp as i32,
        )),
        SimulateScenario::ForceTls => ask(simulate_scenario::Scenario::SwitchCandidateProtocol(
            proto::CandidateProtocol::Tls as i32,
        )),
        SimulateScenario::Speaker(duration) => ask(simulate_scenario::Scenario::SpeakerUpdate(
            i32::try_from(duration.as_secs()).unwrap_or(i32::MAX),
        )),
    }
    None
}
