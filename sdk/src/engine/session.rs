//! One signalling session and its two peer connections: setting them up (join), bringing
//! them back (resume), and the negotiation traffic between them (offers, answers, trickle),
//! which never reaches the room. What does concern the room comes out as an [`Output`].
//!
//! Setup functions take and return owned values, so the engine can run one as a plain
//! future next to its command channel and simply drop it on `close()`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol::{self as proto, signal_request, signal_response};
use url::Url;

use super::episode::Failure;
use crate::media::{LocalTrack, Received};
use crate::net::Network;
use crate::rtc::msid::{offered_tracks, OfferedTrack};
use crate::rtc::{DataChannelKind, PcConfig, PcEvent, PcRole, PcState, PeerConnection, SdpKind};
use crate::signal::{
    self, ConnectParams, JoinParams, Keepalive, ResumeParams, SignalConn, SignalEvent,
};
use crate::{DisconnectReason, RoomError, RoomOptions};

/// What a setup attempt needs; cheap to clone into a `'static` future.
#[derive(Clone)]
pub(crate) struct Setup {
    pub network: Arc<dyn Network>,
    pub base: Url,
    pub token: String,
    pub options: RoomOptions,
}

/// A failed setup attempt: how the episode should treat it, and the error for the user.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub failure: Failure,
    pub error: RoomError,
}

impl AttemptError {
    fn retryable(error: RoomError) -> Self {
        Self { failure: Failure::Retryable, error }
    }
}

impl From<signal::SignalError> for AttemptError {
    fn from(error: signal::SignalError) -> Self {
        let failure = match &error {
            e if e.is_terminal() => Failure::Terminal(match e {
                signal::SignalError::Leave { reason, .. } => *reason,
                _ => DisconnectReason::JoinFailure,
            }),
            signal::SignalError::Leave { .. } => Failure::NeedsFull,
            _ => Failure::Retryable,
        };
        Self { failure, error: RoomError::Signal(error) }
    }
}

/// One of the two peer connections with its negotiation bookkeeping.
struct Pc {
    pc: PeerConnection,
    events: tokio::sync::mpsc::UnboundedReceiver<PcEvent>,
    state: PcState,
    /// Whether a remote description has been applied (candidates wait until it has).
    described: bool,
    pending_candidates: Vec<String>,
    /// The LiveKit data channels open on this connection.
    open: Vec<DataChannelKind>,
}

impl Pc {
    async fn new(
        role: PcRole,
        setup: &Setup,
        join: &proto::JoinResponse,
        local: std::net::IpAddr,
    ) -> Result<Self, AttemptError> {
        let config = PcConfig {
            failed_after: setup.options.pc_failed_after,
            relay_only: force_relay(join.client_configuration.as_ref()),
            seed: setup.options.seed() ^ role as u64,
            ..PcConfig::new(role, join.ice_servers.clone())
        };
        let (pc, events) = PeerConnection::new(config, setup.network.clone(), local)
            .await
            .map_err(|e| AttemptError::retryable(RoomError::Rtc(e.to_string())))?;
        let state = pc.state();
        Ok(Self {
            pc,
            events,
            state,
            described: false,
            pending_candidates: Vec::new(),
            open: Vec::new(),
        })
    }

    fn described(&mut self) {
        self.described = true;
        for candidate in self.pending_candidates.drain(..) {
            if let Err(e) = self.pc.add_remote_candidate(candidate) {
                tracing::warn!("ignoring a remote ICE candidate: {e}");
            }
        }
    }

    fn add_candidate(&mut self, candidate: String) {
        if !self.described {
            self.pending_candidates.push(candidate);
        } else if let Err(e) = self.pc.add_remote_candidate(candidate) {
            tracing::warn!("ignoring a remote ICE candidate: {e}");
        }
    }
}

/// Whether the server asks for relayed candidates only (livekit-server sets it after a
/// `ForceTls`, for that identity's next sessions and resumes).
fn force_relay(config: Option<&proto::ClientConfiguration>) -> bool {
    config.is_some_and(|c| c.force_relay() == proto::ClientConfigSetting::Enabled)
}

/// Something received by the session, before it is processed (receiving is cancel-safe,
/// processing is not: the engine selects on [`Session::recv`] and then calls
/// [`Session::process`] outside the `select!`).
pub(crate) enum Raw {
    Signal(SignalEvent),
    Publisher(Option<PcEvent>),
    Subscriber(Option<PcEvent>),
}

/// What the session hands to the room.
#[derive(Debug)]
pub(crate) enum Output {
    /// A server message for the room (participants, room info, token refresh, speakers…).
    Server(Box<signal_response::Message>),
    /// The server told us to leave, resume or reconnect.
    Leave(proto::LeaveRequest),
    /// The signalling link died.
    SignalLost(String),
    /// A peer connection failed (or negotiation broke); the session needs recovery.
    PcFailed(String),
    /// A publisher data channel opened: queued data can go.
    PublisherChannelOpen,
    /// A data packet arrived (on the subscriber, or the publisher, PC).
    Data(DataChannelKind, Vec<u8>),
    /// The server's SCTP acknowledged the first `n` reliable messages sent on this session's
    /// publisher PC (see [`PcEvent::ReliableAcked`]).
    ReliableAcked(u64),
    /// A subscriber offer was answered: the tracks its media lines carry now.
    SubscriberTracks(Vec<OfferedTrack>),
}

/// A local track's media line to offer: its `cid`, the track, whether it starts muted.
pub(crate) type Line = (String, LocalTrack, bool);

/// A joined session.
pub(crate) struct Session {
    signal: SignalConn,
    publisher: Pc,
    subscriber: Pc,
    /// The JoinResponse of this session.
    pub join: proto::JoinResponse,
    keepalive: Keepalive,
    last_subscriber_offer: Option<proto::SessionDescription>,
    publisher_answered: bool,
    subscriber_offers_answered: u32,
    /// Whether a publisher offer awaits its answer (a new one must wait).
    offer_outstanding: bool,
    /// Media lines to offer once the outstanding offer is answered.
    queued_lines: Vec<Line>,
    /// Server messages, data and acknowledgements for the room that arrived during setup, in
    /// order ([`Output::Server`], [`Output::Data`] and [`Output::ReliableAcked`] only).
    pub stash: VecDeque<Output>,
}

impl Session {
    /// Our participant sid.
    pub(crate) fn sid(&self) -> &str {
        self.join.participant.as_ref().map(|p| p.sid.as_str()).unwrap_or_default()
    }

    fn primary(&self) -> &Pc {
        if self.join.subscriber_primary {
            &self.subscriber
        } else {
            &self.publisher
        }
    }

    /// Whether the session is up for the room: its primary peer connection is connected and,
    /// when that is the subscriber, the server's `_reliable` and `_lossy` channels on it are
    /// open. The server holds reliable data for a new participant until its side of those
    /// channels is open and then replays what it kept of the last ~2 s (livekit-server
    /// pkg/rtc/participant.go `replayJoiningReliableMessages`); waiting for them keeps that
    /// moment within a one-way delay of `Connected`/`Reconnected`, so data sent to the
    /// participant from then on reaches it even on a slow link.
    fn up(&self) -> bool {
        let primary = self.primary();
        primary.state == PcState::Connected
            && (!self.join.subscriber_primary
                || [DataChannelKind::Reliable, DataChannelKind::Lossy]
                    .iter()
                    .all(|kind| primary.open.contains(kind)))
    }

    /// Lets the signalling link judge itself by the media path too: whichever peer
    /// connection heard from the server last (see `signal::liveness`).
    fn watch_media(&self) {
        let publisher = self.publisher.pc.hearing();
        let subscriber = self.subscriber.pc.hearing();
        self.signal.watch_media(Arc::new(move || publisher().max(subscriber())));
    }

    /// Sends a request to the server.
    pub(crate) fn send(&self, message: signal_request::Message) {
        self.signal.send(message);
    }

    /// Waits until the server has read what was sent before (see [`SignalConn::barrier`]).
    pub(crate) async fn barrier(&self, bound: std::time::Duration) -> bool {
        self.signal.barrier(bound).await
    }

    /// Sends a data packet on the publisher's channel of `kind`.
    pub(crate) fn send_data(
        &self,
        kind: DataChannelKind,
        payload: Vec<u8>,
    ) -> Result<(), crate::rtc::RtcError> {
        self.publisher.pc.send_data(kind, payload)
    }

    /// Offers media lines for local tracks the server accepted (now, or once the offer
    /// outstanding is answered), and mutes those that start muted.
    pub(crate) async fn offer_lines(
        &mut self,
        lines: Vec<Line>,
    ) -> Result<(), crate::rtc::RtcError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.offer_outstanding {
            self.queued_lines.extend(lines);
            return Ok(());
        }
        let muted: Vec<String> =
            lines.iter().filter(|(_, _, muted)| *muted).map(|(cid, _, _)| cid.clone()).collect();
        let tracks = lines.into_iter().map(|(cid, track, _)| (cid, track)).collect();
        let sdp = self.publisher.pc.offer_tracks(tracks).await?;
        for cid in muted {
            self.publisher.pc.set_muted(&cid, true)?;
        }
        self.offer_outstanding = true;
        self.send(signal_request::Message::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp,
            ..Default::default()
        }));
        Ok(())
    }

    /// Stops (or resumes) the frames of the local track with this `cid`.
    pub(crate) fn set_muted(&self, cid: &str, muted: bool) {
        if let Err(e) = self.publisher.pc.set_muted(cid, muted) {
            tracing::debug!("cannot change a track's mute state on a stopped connection: {e}");
        }
    }

    /// The `cid`s of the local tracks whose media lines the publisher has.
    pub(crate) fn sending(&self) -> Vec<String> {
        self.publisher.pc.sending()
    }

    /// The subscriber connection's counters of received media, by mid.
    pub(crate) fn received(&self) -> Received {
        self.subscriber.pc.received()
    }

    /// Whether the publisher peer connection is connected (its channels can carry data).
    pub(crate) fn publisher_connected(&self) -> bool {
        self.publisher.state == PcState::Connected
    }

    /// Waits for the next thing to process. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Raw {
        tokio::select! {
            biased;
            event = self.signal.recv() => Raw::Signal(event),
            event = self.publisher.events.recv() => Raw::Publisher(event),
            event = self.subscriber.events.recv() => Raw::Subscriber(event),
        }
    }

    /// Handles negotiation; returns what concerns the room.
    pub(crate) async fn process(&mut self, raw: Raw) -> Option<Output> {
        match raw {
            Raw::Signal(SignalEvent::Closed(why)) => Some(Output::SignalLost(why)),
            Raw::Signal(SignalEvent::Message(message)) => self.on_server(*message).await,
            Raw::Publisher(event) => self.on_pc(PcRole::Publisher, event),
            Raw::Subscriber(event) => self.on_pc(PcRole::Subscriber, event),
        }
    }

    async fn on_server(&mut self, message: signal_response::Message) -> Option<Output> {
        match message {
            signal_response::Message::Offer(offer) => {
                self.last_subscriber_offer = Some(offer.clone());
                match self.subscriber.pc.answer_offer(offer.sdp).await {
                    Ok(sdp) => {
                        // An ICE restart moves the state synchronously; events follow.
                        self.subscriber.state = self.subscriber.pc.state();
                        self.subscriber.described();
                        self.subscriber_offers_answered += 1;
                        self.send(signal_request::Message::Answer(proto::SessionDescription {
                            r#type: "answer".into(),
                            sdp,
                            id: offer.id,
                            ..Default::default()
                        }));
                        let offered =
                            self.last_subscriber_offer.as_ref().map(|o| offered_tracks(&o.sdp));
                        Some(Output::SubscriberTracks(offered.unwrap_or_default()))
                    }
                    Err(e) => {
                        Some(Output::PcFailed(format!("cannot answer the subscriber offer: {e}")))
                    }
                }
            }
            signal_response::Message::Answer(answer) => {
                match self.publisher.pc.set_remote_answer(answer.sdp).await {
                    Ok(()) => {
                        self.publisher.state = self.publisher.pc.state();
                        self.publisher.described();
                        self.publisher_answered = true;
                        self.offer_outstanding = false;
                        let queued = std::mem::take(&mut self.queued_lines);
                        match self.offer_lines(queued).await {
                            Ok(()) => None,
                            Err(e) => Some(Output::PcFailed(format!("cannot offer tracks: {e}"))),
                        }
                    }
                    Err(e) => {
                        Some(Output::PcFailed(format!("cannot apply the publisher answer: {e}")))
                    }
                }
            }
            signal_response::Message::Trickle(trickle) => {
                if trickle.target == proto::SignalTarget::Subscriber as i32 {
                    self.subscriber.add_candidate(trickle.candidate_init);
                } else {
                    self.publisher.add_candidate(trickle.candidate_init);
                }
                None
            }
            signal_response::Message::Leave(leave) => Some(Output::Leave(leave)),
            other => Some(Output::Server(Box::new(other))),
        }
    }

    fn on_pc(&mut self, role: PcRole, event: Option<PcEvent>) -> Option<Output> {
        let pc = match role {
            PcRole::Publisher => &mut self.publisher,
            PcRole::Subscriber => &mut self.subscriber,
        };
        let Some(event) = event else {
            return Some(Output::PcFailed(format!("the {role:?} peer connection stopped")));
        };
        match event {
            PcEvent::LocalCandidate { candidate_init } => {
                let target = match role {
                    PcRole::Publisher => proto::SignalTarget::Publisher,
                    PcRole::Subscriber => proto::SignalTarget::Subscriber,
                };
                self.signal.send(signal_request::Message::Trickle(proto::TrickleRequest {
                    candidate_init,
                    target: target as i32,
                    r#final: false,
                }));
                None
            }
            PcEvent::StateChanged(state) => {
                tracing::debug!("{role:?} peer connection: {state:?}");
                pc.state = state;
                (state == PcState::Failed)
                    .then(|| Output::PcFailed(format!("the {role:?} peer connection failed")))
            }
            PcEvent::ChannelOpen(kind) => {
                if !pc.open.contains(&kind) {
                    pc.open.push(kind);
                }
                (role == PcRole::Publisher).then_some(Output::PublisherChannelOpen)
            }
            PcEvent::ReliableAcked { messages } if role == PcRole::Publisher => {
                Some(Output::ReliableAcked(messages))
            }
            PcEvent::ChannelClosed(kind) => {
                pc.open.retain(|open| *open != kind);
                None
            }
            PcEvent::ReliableAcked { .. } => None,
            PcEvent::Data { kind, payload } => Some(Output::Data(kind, payload)),
        }
    }

    /// Runs the session until `done` holds, stashing room messages, bounded by `limit`.
    async fn settle(
        &mut self,
        limit: Duration,
        what: &'static str,
        done: fn(&Session) -> bool,
    ) -> Result<(), AttemptError> {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            let raw = match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(raw) => raw,
                Err(_) => {
                    return Err(AttemptError::retryable(RoomError::Timeout {
                        during: what,
                        after: limit,
                    }))
                }
            };
            match self.process(raw).await {
                None | Some(Output::PublisherChannelOpen) => {}
                Some(
                    stashed @ (Output::Server(_)
                    | Output::Data(..)
                    | Output::ReliableAcked(_)
                    | Output::SubscriberTracks(_)),
                ) => self.stash.push_back(stashed),
                Some(Output::Leave(leave)) => return Err(leave_error(&leave, what)),
                Some(Output::SignalLost(why)) => {
                    return Err(AttemptError::retryable(RoomError::ConnectionLost(format!(
                        "{what}: {why}"
                    ))))
                }
                Some(Output::PcFailed(why)) => {
                    return Err(AttemptError::retryable(RoomError::Rtc(format!("{what}: {why}"))))
                }
            }
        }
        Ok(())
    }

    /// Joins: signalling, both peer connections, publisher negotiation; returns once the
    /// primary peer connection is connected.
    pub(crate) async fn join(setup: Setup) -> Result<Session, AttemptError> {
        let params = JoinParams {
            auto_subscribe: setup.options.auto_subscribe,
            adaptive_stream: setup.options.adaptive_stream,
            resume: None,
        };
        let (signal, first) = signal::connect(&connect_params(&setup, &params), None).await?;
        let signal_response::Message::Join(join) = first else {
            return Err(AttemptError::retryable(RoomError::Protocol(
                "the join was not answered with a JoinResponse".into(),
            )));
        };
        let local_ip = signal.local_addr().ip();
        let publisher = Pc::new(PcRole::Publisher, &setup, &join, local_ip).await?;
        let subscriber = Pc::new(PcRole::Subscriber, &setup, &join, local_ip).await?;
        let keepalive = Keepalive::from_join(&join);
        let mut session = Session {
            signal,
            publisher,
            subscriber,
            join,
            keepalive,
            last_subscriber_offer: None,
            publisher_answered: false,
            subscriber_offers_answered: 0,
            offer_outstanding: true,
            queued_lines: Vec::new(),
            stash: VecDeque::new(),
        };
        session.watch_media();
        let offer = session
            .publisher
            .pc
            .create_offer(false)
            .await
            .map_err(|e| AttemptError::retryable(RoomError::Rtc(e.to_string())))?;
        session.send(signal_request::Message::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer,
            ..Default::default()
        }));
        session
            .settle(
                setup.options.pc_connect_timeout,
                "connecting the primary peer connection and its data channels",
                Session::up,
            )
            .await?;
        Ok(session)
    }

    /// Resumes this session over a new signalling socket; returns it with the server's
    /// `last_message_seq` once both peer connections are connected again after ICE restarts.
    pub(crate) async fn resume(
        mut self,
        setup: Setup,
        reason: proto::ReconnectReason,
        receive_states: Vec<proto::DataChannelReceiveState>,
    ) -> Result<(Session, u32), AttemptError> {
        let params = JoinParams {
            auto_subscribe: setup.options.auto_subscribe,
            adaptive_stream: setup.options.adaptive_stream,
            resume: Some(ResumeParams { sid: self.sid().to_owned(), reason: reason as i32 }),
        };
        // Let the old socket deliver what was queued (e.g. a Simulate request) and close.
        self.signal.close().await;
        let (signal, first) =
            signal::connect(&connect_params(&setup, &params), Some(self.keepalive)).await?;
        let signal_response::Message::Reconnect(response) = first else {
            return Err(AttemptError::retryable(RoomError::Protocol(
                "the resume was not answered with a ReconnectResponse".into(),
            )));
        };
        // After a network change the peer connections' sockets belong to the old network:
        // move them to the new one before the ICE restarts.
        let local_ip = signal.local_addr().ip();
        self.signal = signal;
        self.watch_media();
        // The relay and whether to use it alone may have changed (the server's force_relay
        // after ForceTls): both apply to the ICE restarts below.
        let relay_only = force_relay(response.client_configuration.as_ref());
        for pc in [&mut self.publisher, &mut self.subscriber] {
            pc.pc
                .move_if_network_changed(&setup.network, local_ip)
                .await
                .and_then(|_| pc.pc.use_relay(&response.ice_servers, relay_only))
                .map_err(|e| AttemptError::retryable(RoomError::Rtc(e.to_string())))?;
        }
        self.publisher_answered = false;
        self.subscriber_offers_answered = 0;

        let answer = match self.subscriber.pc.local_description().await {
            Some((SdpKind::Answer, sdp)) => Some(proto::SessionDescription {
                r#type: "answer".into(),
                sdp,
                ..Default::default()
            }),
            _ => None,
        };
        let mut data_channels = Vec::new();
        for (pc, target) in [
            (&self.publisher, proto::SignalTarget::Publisher),
            (&self.subscriber, proto::SignalTarget::Subscriber),
        ] {
            for (label, id) in pc.pc.data_channels().await {
                data_channels.push(proto::DataChannelInfo {
                    label,
                    id: u32::from(id),
                    target: target as i32,
                });
            }
        }
        self.send(signal_request::Message::SyncState(proto::SyncState {
            answer,
            offer: self.last_subscriber_offer.clone(),
            subscription: Some(proto::UpdateSubscription {
                subscribe: !setup.options.auto_subscribe,
                ..Default::default()
            }),
            data_channels,
            datachannel_receive_states: receive_states,
            ..Default::default()
        }));

        let offer = self
            .publisher
            .pc
            .create_offer(true)
            .await
            .map_err(|e| AttemptError::retryable(RoomError::Rtc(e.to_string())))?;
        self.offer_outstanding = true;
        self.send(signal_request::Message::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer,
            ..Default::default()
        }));
        self.settle(setup.options.pc_connect_timeout, "resuming the peer connections", |s| {
            s.publisher_answered
                && s.subscriber_offers_answered > 0
                && s.publisher.state == PcState::Connected
                && s.primary().state == PcState::Connected
        })
        .await?;
        Ok((self, response.last_message_seq))
    }

    /// Ends the session: tells the server we leave (if the socket still works), waits (at
    /// most a second, see [`SignalConn::close`]) until the Leave is written and the socket
    /// closed — so a process that exits right after `Room::close` still leaves cleanly — and
    /// closes both peer connections.
    pub(crate) async fn leave(mut self) {
        self.send(signal_request::Message::Leave(proto::LeaveRequest {
            reason: DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        }));
        self.signal.close().await;
        self.publisher.pc.close();
        self.subscriber.pc.close();
    }
}

fn connect_params<'a>(setup: &'a Setup, join: &'a JoinParams) -> ConnectParams<'a> {
    ConnectParams {
        network: &setup.network,
        base: &setup.base,
        token: &setup.token,
        join,
        connect_timeout: setup.options.connect_timeout,
        join_timeout: setup.options.join_timeout,
    }
}

/// A Leave received while setting up a session.
fn leave_error(leave: &proto::LeaveRequest, what: &'static str) -> AttemptError {
    let error = signal::SignalError::Leave {
        action: leave.action(),
        reason: leave.reason(),
        expected: what,
    };
    AttemptError::from(error)
}
