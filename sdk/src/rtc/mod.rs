//! WebRTC peer connections for LiveKit's v0 protocol (a publisher PC the client offers, a
//! subscriber PC the server offers), carrying data channels only, through str0m (sans-IO).
//!
//! A [`PeerConnection`] is a handle over a driver task (see `driver`) that owns the str0m
//! `Rtc`, one UDP socket from the [`Network`] seam, for ICE over TCP the connections to
//! the server's passive TCP candidates (see `ice_tcp`) and, where the ICE servers list a
//! usable TURN relay, an allocation on it over the same socket (see `turn`). The task feeds packets and
//! `tokio::time` into str0m and carries out what it asks for, so the same code runs on real
//! sockets and inside turmoil. Everything the engine learns comes as a [`PcEvent`], but for
//! when the last datagram arrived, which it reads when it needs it (`hearing`).
//!
//! Determinism: this module's only randomness is the TURN transaction ids, drawn from a
//! seeded generator ([`PcConfig::seed`]); str0m has its own (ICE credentials,
//! DTLS certificate, SCTP initial values, through `fastrand` and the crypto provider), which
//! is outside our control. Those values never steer timing, so a simulation stays
//! reproducible in what the client does and when.

mod driver;
mod ice_tcp;
pub(crate) mod msid;
mod state;
mod trickle;
mod turn;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use str0m::channel::{ChannelConfig, Reliability};
use str0m::Candidate;
use tokio::sync::{mpsc, oneshot};

use crate::media::{LocalTrack, Received};
use crate::net::{DatagramSocket, Network};
use driver::{Command, Driver};

/// Which of LiveKit's two peer connections this is. (Public because [`RtcError`] names it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcRole {
    /// The client offers (and sends its data here).
    Publisher,
    /// The server offers (and opens the channels the client receives on).
    Subscriber,
}

/// The two LiveKit data channels, by label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataChannelKind {
    /// `"_reliable"`: ordered, reliable.
    Reliable,
    /// `"_lossy"`: unordered, no retransmissions.
    Lossy,
}

impl DataChannelKind {
    /// The channel's label on the wire.
    pub fn label(self) -> &'static str {
        match self {
            DataChannelKind::Reliable => "_reliable",
            DataChannelKind::Lossy => "_lossy",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [DataChannelKind::Reliable, DataChannelKind::Lossy]
            .into_iter()
            .find(|kind| kind.label() == label)
    }

    fn channel_config(self) -> ChannelConfig {
        let (ordered, reliability) = match self {
            DataChannelKind::Reliable => (true, Reliability::Reliable),
            DataChannelKind::Lossy => (false, Reliability::MaxRetransmits { retransmits: 0 }),
        };
        ChannelConfig { label: self.label().to_owned(), ordered, reliability, ..Default::default() }
    }
}

/// The connection state of a peer connection, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PcState {
    /// Created; nothing negotiated yet.
    New,
    /// ICE is checking (first connection, or after an ICE restart).
    Connecting,
    /// ICE has a working path and DTLS is up: data channels can carry data.
    Connected,
    /// ICE lost its path (str0m's timers decide when); may come back by itself.
    Disconnected,
    /// Disconnected for longer than [`PcConfig::failed_after`], or failed beyond repair
    /// (str0m or the socket gave up). The former can still recover through an ICE restart;
    /// after the latter every operation returns [`RtcError::Failed`].
    Failed,
    /// Closed locally. No event follows.
    Closed,
}

/// What a peer connection tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PcEvent {
    /// A local ICE candidate to trickle to the server, already as the JSON of an
    /// RTCIceCandidateInit: `{"candidate":"candidate:…","sdpMid":"0","sdpMLineIndex":0,
    /// "usernameFragment":"…"}`. Emitted right after each local description that carries new
    /// ICE credentials (the first one, and each ICE restart), so send the description first.
    LocalCandidate {
        /// The RTCIceCandidateInit JSON.
        candidate_init: String,
    },
    /// The connection state changed.
    StateChanged(PcState),
    /// A data channel of this PC opened (whichever side created it).
    ChannelOpen(DataChannelKind),
    /// A data channel of this PC closed.
    ChannelClosed(DataChannelKind),
    /// The remote SCTP acknowledged every message written so far on this PC's `_reliable`
    /// channel: all of the first `messages` messages given to [`PeerConnection::send_data`]
    /// for [`DataChannelKind::Reliable`] (counted from the PC's creation, across ICE restarts)
    /// have reached the remote peer. Emitted when the channel's buffered amount drops to zero
    /// (SCTP counts a message as buffered until it is SACKed); never after a reliable message
    /// had to be dropped (a closed channel), since the count would no longer match.
    ReliableAcked {
        /// How many reliable messages, from the first, the remote has.
        messages: u64,
    },
    /// A message received on a data channel of this PC (binary payload, a protobuf DataPacket).
    Data {
        /// The channel it came on.
        kind: DataChannelKind,
        /// The message.
        payload: Vec<u8>,
    },
}

/// How to set up a [`PeerConnection`].
#[derive(Debug, Clone)]
pub(crate) struct PcConfig {
    /// Which LiveKit peer connection this is.
    pub role: PcRole,
    /// ICE servers from the JoinResponse (may be empty): the first usable TURN relay among
    /// them gives a relayed candidate beside the host ones ([`turn`]).
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    /// Relayed candidates only (the JoinResponse's `force_relay`), if a relay is usable.
    pub relay_only: bool,
    /// How long the transport may stay Disconnected before it is Failed.
    pub failed_after: Duration,
    /// Seeds the TURN client's transaction ids.
    pub seed: u64,
}

impl PcConfig {
    /// The default for [`PcConfig::failed_after`].
    pub(crate) const DEFAULT_FAILED_AFTER: Duration = Duration::from_secs(5);

    /// A configuration for `role` with the default [`PcConfig::failed_after`].
    pub(crate) fn new(role: PcRole, ice_servers: Vec<livekit_protocol::IceServer>) -> Self {
        PcConfig {
            role,
            ice_servers,
            relay_only: false,
            failed_after: Self::DEFAULT_FAILED_AFTER,
            seed: 0,
        }
    }
}

/// The type of a session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// Why a peer connection operation failed.
#[derive(thiserror::Error, Debug)]
pub enum RtcError {
    /// No UDP socket could be bound for the media path.
    #[error(
        "could not bind a UDP socket on {ip} for WebRTC: {source}; \
         expected {ip} to be an address of this host (it is the local address of the \
         signalling connection)"
    )]
    Bind {
        /// The address we tried to bind.
        ip: IpAddr,
        /// What the network layer said.
        #[source]
        source: std::io::Error,
    },
    /// The socket's own address (or an active TCP candidate on its IP) could not serve as a
    /// local ICE candidate.
    #[error("the address {addr} cannot be a local ICE candidate: {reason}")]
    LocalCandidate {
        /// The socket address.
        addr: String,
        /// Why not.
        reason: String,
    },
    /// A session description was malformed or could not be applied.
    #[error("session description rejected: {0}")]
    Sdp(String),
    /// A trickled candidate was malformed.
    #[error("ICE candidate rejected: {0}")]
    Candidate(String),
    /// The operation belongs to the other LiveKit peer connection.
    #[error("{operation} is for the {expected:?} peer connection, this one is the {actual:?}")]
    WrongRole {
        /// The operation called.
        operation: &'static str,
        /// The role that may call it.
        expected: PcRole,
        /// This peer connection's role.
        actual: PcRole,
    },
    /// `create_offer(false)` on an established session that has nothing to change.
    #[error(
        "nothing to offer: the data channels are negotiated already; \
         use create_offer(true) for an ICE restart"
    )]
    NothingToNegotiate,
    /// An offer is outstanding: a new one (but a resume's) waits for its answer.
    #[error("an offer is already waiting for its answer; offer again once it is applied")]
    OfferPending,
    /// An answer arrived with no offer of ours outstanding.
    #[error("expected an offer of ours to be outstanding when an answer arrives, there is none")]
    NoPendingOffer,
    /// `send_data` on a channel that is not open.
    #[error("the {} data channel is not open (wait for PcEvent::ChannelOpen)", .0.label())]
    ChannelNotOpen(DataChannelKind),
    /// The transport failed beyond repair; make a new peer connection.
    #[error("the peer connection failed and cannot be used any more: {0}")]
    Failed(String),
    /// The peer connection was closed.
    #[error("the peer connection is closed")]
    Closed,
}

/// What the handle and the driver task share: the answers to the synchronous questions.
#[derive(Debug)]
struct Shared {
    state: PcState,
    /// Why the transport failed beyond repair, once it did.
    fatal: Option<String>,
    /// Open data channels: label, SCTP stream id.
    open_channels: Vec<(String, u16)>,
    local_description: Option<(SdpKind, String)>,
    /// When the last datagram from the remote arrived (STUN, DTLS, SCTP: any).
    last_heard: Option<tokio::time::Instant>,
    /// What each receiving media line has delivered.
    received: Received,
    /// The `cid`s of the tracks this connection sends (their media lines exist).
    sending: Vec<String>,
}

/// Locks the shared state, shrugging off poisoning: every writer leaves it consistent.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One LiveKit peer connection: a handle over the driver task that runs it.
///
/// Dropping the handle stops the task and closes the socket without telling the remote (as
/// a crash would); [`PeerConnection::close`] closes DTLS/SCTP first.
/// Binds a UDP socket on `local_ip` and makes its address a host candidate.
async fn bind_host(
    net: &Arc<dyn Network>,
    local_ip: IpAddr,
) -> Result<(Arc<dyn DatagramSocket>, Candidate), RtcError> {
    let socket =
        net.bind_udp(local_ip).await.map_err(|source| RtcError::Bind { ip: local_ip, source })?;
    let local_addr =
        socket.local_addr().map_err(|source| RtcError::Bind { ip: local_ip, source })?;
    let host = Candidate::host(local_addr, "udp").map_err(|e| RtcError::LocalCandidate {
        addr: local_addr.to_string(),
        reason: e.to_string(),
    })?;
    Ok((socket, host))
}

#[derive(Debug)]
pub(crate) struct PeerConnection {
    role: PcRole,
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
}

impl PeerConnection {
    /// Binds a UDP socket with `net.bind_udp(local_ip)`, creates the str0m `Rtc`, announces the
    /// socket's address as a host candidate, and spawns the driver task. Returns the handle and
    /// the event stream.
    pub(crate) async fn new(
        config: PcConfig,
        net: Arc<dyn Network>,
        local_ip: IpAddr,
    ) -> Result<(PeerConnection, mpsc::UnboundedReceiver<PcEvent>), RtcError> {
        let (socket, host) = bind_host(&net, local_ip).await?;
        let local_addr = host.addr();
        tracing::debug!(
            role = ?config.role,
            %local_addr,
            ice_servers = config.ice_servers.len(),
            relay_only = config.relay_only,
            "new peer connection (host candidates, UDP and active TCP; a relayed one if a TURN relay is usable)"
        );
        let shared = Arc::new(Mutex::new(Shared {
            state: PcState::New,
            fatal: None,
            open_channels: Vec::new(),
            local_description: None,
            last_heard: None,
            received: Received::default(),
            sending: Vec::new(),
        }));
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (driver, tcp_inbound) =
            Driver::new(&config, net, socket, host, event_tx, shared.clone())?;
        tokio::spawn(driver.run(command_rx, tcp_inbound));
        let pc = PeerConnection { role: config.role, local_addr, commands: command_tx, shared };
        Ok((pc, event_rx))
    }

    /// After a network change, moves the connection to a new UDP socket: binds one on
    /// `local_ip` (the address the new signalling connection went out from) and, if it is
    /// on another address than the current socket — the old address is gone — switches to
    /// it and makes it a host candidate, so the next ICE restart (a resume's) pairs it with
    /// the server's candidates. Returns whether it moved; on the same network the new socket
    /// is simply dropped.
    pub(crate) async fn move_if_network_changed(
        &mut self,
        net: &Arc<dyn Network>,
        local_ip: IpAddr,
    ) -> Result<bool, RtcError> {
        let (socket, host) = bind_host(net, local_ip).await?;
        let local_addr = host.addr();
        if local_addr.ip() == self.local_addr.ip() {
            return Ok(false);
        }
        self.request(|reply| Command::Rebind { socket, host, reply }).await??;
        tracing::info!(from = %self.local_addr, to = %local_addr, "network changed: peer connection moved to a new socket");
        self.local_addr = local_addr;
        Ok(true)
    }

    /// Takes a resume's word on relays: allocates on the first usable TURN relay of
    /// `ice_servers` unless it is the one in use, and uses relayed candidates only from now
    /// on if `relay_only` (the server's `force_relay`) and a relay is at hand. Takes effect
    /// with the next ICE restart.
    pub(crate) fn use_relay(
        &self,
        ice_servers: &[livekit_protocol::IceServer],
        relay_only: bool,
    ) -> Result<(), RtcError> {
        let server = turn::TurnServer::first_usable(ice_servers);
        self.send(Command::UseRelay { server, relay_only })
    }

    /// Publisher: creates an offer carrying the "_reliable" and "_lossy" data channels (created
    /// on the first call). `ice_restart` = new ICE credentials (resume); it is ignored until a
    /// first answer was applied, since there is no ICE session to restart before that.
    pub(crate) async fn create_offer(&self, ice_restart: bool) -> Result<String, RtcError> {
        self.expect_role("create_offer", PcRole::Publisher)?;
        self.request(|reply| Command::CreateOffer { ice_restart, reply }).await?
    }

    /// Publisher: adds a sending media line for each `(cid, track)` — its msid track id is
    /// the `cid` of the track's AddTrackRequest — and offers them. Frames start once ICE
    /// connects. Fails with [`RtcError::OfferPending`] while an offer awaits its answer.
    pub(crate) async fn offer_tracks(
        &self,
        tracks: Vec<(String, LocalTrack)>,
    ) -> Result<String, RtcError> {
        self.expect_role("offer_tracks", PcRole::Publisher)?;
        self.request(|reply| Command::OfferTracks { tracks, reply }).await?
    }

    /// Publisher: stops (or resumes) the frames of the track with this `cid`.
    pub(crate) fn set_muted(&self, cid: &str, muted: bool) -> Result<(), RtcError> {
        self.send(Command::SetMuted { cid: cid.to_owned(), muted })
    }

    /// The `cid`s of the tracks this connection sends.
    pub(crate) fn sending(&self) -> Vec<String> {
        lock(&self.shared).sending.clone()
    }

    /// What each receiving media line has delivered, by mid (live: it keeps counting).
    pub(crate) fn received(&self) -> Received {
        lock(&self.shared).received.clone()
    }

    /// Publisher: applies the server's answer to our last offer.
    pub(crate) async fn set_remote_answer(&self, sdp: String) -> Result<(), RtcError> {
        self.expect_role("set_remote_answer", PcRole::Publisher)?;
        self.request(|reply| Command::SetRemoteAnswer { sdp, reply }).await?
    }

    /// Subscriber: applies the server's offer (initial or ICE-restart) and returns our answer.
    pub(crate) async fn answer_offer(&self, sdp: String) -> Result<String, RtcError> {
        self.expect_role("answer_offer", PcRole::Subscriber)?;
        self.request(|reply| Command::AnswerOffer { sdp, reply }).await?
    }

    /// The last local description (type + SDP), for SyncState on resume.
    pub(crate) async fn local_description(&self) -> Option<(SdpKind, String)> {
        lock(&self.shared).local_description.clone()
    }

    /// The data channels of this PC that are open: (label, SCTP stream id), for SyncState.
    pub(crate) async fn data_channels(&self) -> Vec<(String, u16)> {
        lock(&self.shared).open_channels.clone()
    }

    /// A remote trickled candidate: the server's `candidateInit` JSON string verbatim.
    ///
    /// Candidates this client cannot use (TCP other than passive, mDNS, another IP family)
    /// are skipped with a debug log; malformed ones are an error.
    pub(crate) fn add_remote_candidate(&self, candidate_init: String) -> Result<(), RtcError> {
        match trickle::parse_candidate_init(&candidate_init, self.local_addr)? {
            Some(candidate) => self.send(Command::AddRemoteCandidate(candidate)),
            None => Ok(()),
        }
    }

    /// Sends one binary message on this PC's channel of `kind`; error if it is not open.
    ///
    /// Messages are queued in order while SCTP's send buffer is full.
    pub(crate) fn send_data(
        &self,
        kind: DataChannelKind,
        payload: Vec<u8>,
    ) -> Result<(), RtcError> {
        let open = lock(&self.shared).open_channels.iter().any(|(label, _)| label == kind.label());
        if !open {
            return Err(self.stopped_error().unwrap_or(RtcError::ChannelNotOpen(kind)));
        }
        self.send(Command::Send { kind, payload })
    }

    /// A reader of when this PC last received a datagram from the remote (`None` before the
    /// first), for judging whether the media path is alive; it outlives socket moves.
    pub(crate) fn hearing(&self) -> impl Fn() -> Option<tokio::time::Instant> + Send + Sync {
        let shared = self.shared.clone();
        move || lock(&shared).last_heard
    }

    /// The current connection state.
    pub(crate) fn state(&self) -> PcState {
        lock(&self.shared).state
    }

    /// Closes DTLS/SCTP (telling the remote), then stops the task. Ends with
    /// `StateChanged(Closed)`; no event follows.
    pub(crate) fn close(&self) {
        // A stopped driver has nothing left to close.
        let _ = self.commands.send(Command::Close);
    }

    fn expect_role(&self, operation: &'static str, expected: PcRole) -> Result<(), RtcError> {
        if self.role == expected {
            Ok(())
        } else {
            Err(RtcError::WrongRole { operation, expected, actual: self.role })
        }
    }

    fn send(&self, command: Command) -> Result<(), RtcError> {
        self.commands.send(command).map_err(|_| self.gone_error())
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RtcError> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply))?;
        answer.await.map_err(|_| self.gone_error())
    }

    /// The error for a PC whose driver has stopped, if it has.
    fn stopped_error(&self) -> Option<RtcError> {
        let shared = lock(&self.shared);
        match (&shared.state, &shared.fatal) {
            (PcState::Closed, _) => Some(RtcError::Closed),
            (_, Some(reason)) => Some(RtcError::Failed(reason.clone())),
            _ => None,
        }
    }

    fn gone_error(&self) -> RtcError {
        self.stopped_error()
            .unwrap_or_else(|| RtcError::Failed("the peer connection task stopped".to_owned()))
    }
}
