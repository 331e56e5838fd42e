//! The task behind a [`PeerConnection`](super::PeerConnection): it owns the str0m `Rtc`, the
//! UDP socket, the ICE/TCP connections and the TURN allocation, feeds str0m packets,
//! commands and `tokio::time`, and carries out its output (packets to send, events for the
//! engine).
//!
//! One loop: drain `poll_output` (transmit, translate events) until str0m names its next
//! timeout, then wait — `biased` for determinism — for a command, a datagram, a packet over
//! ICE/TCP, that timeout (or the TURN client's), or the Disconnected→Failed deadline. The
//! loop ends when the handle is dropped, on `close`, or when the transport fails beyond
//! repair.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::{Codec, CodecExtra};
use str0m::media::{Direction, Frequency, MediaData, MediaTime};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ice_tcp::{self, IceTcp, Inbound};
use super::state::StateTracker;
use super::trickle::{candidate_init_json, SdpFacts};
use super::turn::{TurnClient, TurnEvent, TurnServer};
use super::{lock, DataChannelKind, PcConfig, PcEvent, PcState, RtcError, SdpKind, Shared};
use crate::media::source::Generator;
use crate::media::{LocalTrack, MidCounter, Received, TrackKind};
use crate::net::{DatagramSocket, Network};

/// The largest datagram we accept (str0m keeps its own below the path MTU).
const RECV_BUFFER: usize = 2048;

/// This many socket receive errors in a row mean the socket is broken, not the network.
const MAX_RECV_ERRORS_IN_A_ROW: u32 = 64;

/// Remote candidates held until the remote description they belong to arrives.
const MAX_EARLY_CANDIDATES: usize = 32;

/// str0m's "no timeout" lies years ahead; waking up this often instead costs nothing.
const MAX_IDLE: Duration = Duration::from_secs(60);

/// What the handle asks of the driver.
pub(super) enum Command {
    CreateOffer {
        ice_restart: bool,
        reply: oneshot::Sender<Result<String, RtcError>>,
    },
    /// Add a sending media line per track (its msid track id is the track's `cid`) and
    /// offer them.
    OfferTracks {
        tracks: Vec<(String, LocalTrack)>,
        reply: oneshot::Sender<Result<String, RtcError>>,
    },
    /// Stop (or resume) sending the frames of the track with this `cid`.
    SetMuted {
        cid: String,
        muted: bool,
    },
    SetRemoteAnswer {
        sdp: String,
        reply: oneshot::Sender<Result<(), RtcError>>,
    },
    AnswerOffer {
        sdp: String,
        reply: oneshot::Sender<Result<String, RtcError>>,
    },
    AddRemoteCandidate(Candidate),
    Send {
        kind: DataChannelKind,
        payload: Vec<u8>,
    },
    /// Allocate on this relay (unless already on it), and whether to use relayed candidates
    /// only from now on (the server's `force_relay`).
    UseRelay {
        server: Option<TurnServer>,
        relay_only: bool,
    },
    /// Use this socket (and its host candidate) from now on: the network changed.
    Rebind {
        socket: Arc<dyn DatagramSocket>,
        host: Candidate,
        reply: oneshot::Sender<Result<(), RtcError>>,
    },
    Close,
}

/// The state of one peer connection, owned by its task.
pub(super) struct Driver {
    rtc: Rtc,
    socket: Arc<dyn DatagramSocket>,
    local_addr: SocketAddr,
    host: Candidate,
    /// ICE over TCP: the connections to the server's passive candidates.
    ice_tcp: IceTcp,
    /// Our active TCP candidate (str0m expects TCP packets to arrive at its address).
    tcp: Candidate,
    /// The allocation on a TURN relay, if the ICE servers name a usable one.
    turn: Option<TurnClient>,
    /// The relayed candidate, once allocated.
    relay: Option<Candidate>,
    /// Relayed candidates only (the server's `force_relay`): host ones are not used.
    relay_only: bool,
    /// Seeds each TURN client's transaction ids.
    seed: u64,
    events: mpsc::UnboundedSender<PcEvent>,
    shared: Arc<Mutex<Shared>>,
    tracker: StateTracker,
    /// Our offer awaiting the remote answer.
    pending_offer: Option<SdpPendingOffer>,
    /// Whether a remote answer was ever applied (before that there is no ICE to restart).
    negotiated: bool,
    /// Open data channels by str0m id: label, and kind if it is one of LiveKit's.
    channels: HashMap<ChannelId, (String, Option<DataChannelKind>)>,
    /// Messages waiting for room in SCTP's send buffer, in order.
    outbox: VecDeque<(DataChannelKind, Vec<u8>)>,
    /// Reliable messages written into SCTP, in the order they were given to `send_data`.
    reliable_written: u64,
    /// The count last reported in [`PcEvent::ReliableAcked`].
    reliable_acked: u64,
    /// Whether a reliable message was dropped: counts no longer match the engine's, so no
    /// acknowledgement is reported any more.
    reliable_dropped: bool,
    /// The remote ICE ufrag of the applied remote description.
    remote_ufrag: Option<String>,
    /// Remote candidates whose ufrag belongs to a remote description not applied yet.
    early_candidates: Vec<Candidate>,
    /// The ufrag our host candidate was last trickled with.
    trickled_ufrag: Option<String>,
    recv_errors_in_a_row: u32,
    /// Whether the socket still receives (a broken socket stops it; a new one restarts it).
    receiving: bool,
    /// Our sending media lines: the track's `cid`, its mid, its frames.
    senders: Vec<Sender>,
    /// What each receiving media line has delivered (shared with the handle).
    received: Received,
}

/// One sending media line and the synthetic source behind it.
struct Sender {
    cid: String,
    mid: str0m::media::Mid,
    source: Generator,
}

/// str0m's notion of "now", taken from tokio's clock so that paused/simulated time works.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The active TCP candidate that goes with `host` (a UDP socket's address).
fn tcp_candidate(host: &Candidate) -> Result<Candidate, RtcError> {
    ice_tcp::active_candidate(host.addr().ip())
        .map_err(|reason| RtcError::LocalCandidate { addr: host.addr().to_string(), reason })
}

/// Makes `host` and its active TCP candidate `tcp` local candidates of `rtc`.
fn add_local_candidates(rtc: &mut Rtc, host: &Candidate, tcp: &Candidate) -> Result<(), RtcError> {
    for (candidate, what) in [(host, "a local host candidate"), (tcp, "an active TCP candidate")] {
        if rtc.add_local_candidate(candidate.clone()).is_none() {
            return Err(RtcError::LocalCandidate {
                addr: candidate.addr().to_string(),
                reason: format!("str0m refused it as {what}"),
            });
        }
    }
    Ok(())
}

/// A TURN client allocating on `server`, if there is one.
fn turn_client(server: Option<TurnServer>, seed: u64) -> Option<TurnClient> {
    Some(TurnClient::new(server?, SmallRng::seed_from_u64(seed), Instant::now()))
}

/// Runs a str0m call that might panic on hostile input, turning a panic into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, str0m::RtcError>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: str0m panicked (see the log above)")),
    }
}

/// Socket errors that say something about one datagram or the path, not about the socket.
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | Interrupted
            | WouldBlock
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | AddrNotAvailable
    )
}

impl Driver {
    pub(super) fn new(
        config: &PcConfig,
        net: Arc<dyn Network>,
        socket: Arc<dyn DatagramSocket>,
        host: Candidate,
        events: mpsc::UnboundedSender<PcEvent>,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), RtcError> {
        let shared_for_media = shared.clone();
        // Opus and VP8 only: what the synthetic sources write, and every SDK's default.
        // No reordering hold-back: str0m 0.25 keeps a media line's depacketizer (and the
        // last sequence number it emitted) when the line's incoming stream ends, so a track
        // the server later sends on the same line — a publisher's republished track after
        // its old session left — is dropped as "before emitted" until its random sequence
        // numbers pass the old ones (a silent microphone or camera, about half the time).
        // With no hold-back str0m skips that check and emits what it can assemble.
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_reordering_size_audio(0)
            .set_reordering_size_video(0)
            .build(now());
        let local_addr = host.addr();
        let tcp = tcp_candidate(&host)?;
        add_local_candidates(&mut rtc, &host, &tcp)?;
        let turn = turn_client(TurnServer::first_usable(&config.ice_servers), config.seed);
        let (ice_tcp, ice_tcp_inbound) = IceTcp::new(net);
        let mut driver = Driver {
            rtc,
            socket,
            local_addr,
            host,
            ice_tcp,
            tcp,
            turn,
            relay: None,
            relay_only: false,
            seed: config.seed,
            events,
            shared,
            tracker: StateTracker::new(config.failed_after),
            pending_offer: None,
            negotiated: false,
            channels: HashMap::new(),
            outbox: VecDeque::new(),
            reliable_written: 0,
            reliable_acked: 0,
            reliable_dropped: false,
            remote_ufrag: None,
            early_candidates: Vec::new(),
            trickled_ufrag: None,
            recv_errors_in_a_row: 0,
            receiving: true,
            senders: Vec::new(),
            received: lock(&shared_for_media).received.clone(),
        };
        // Before any description: str0m has offered nothing yet, so discarding the host
        // candidates here means they are never offered nor paired.
        driver.set_relay_only(config.relay_only);
        Ok((driver, ice_tcp_inbound))
    }

    /// The task body: `tcp_inbound` is what [`Driver::new`] returned beside the driver.
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut tcp_inbound: mpsc::Receiver<Inbound>,
    ) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let Some(timeout) = self.drain().await else { break };
            // Taken afresh each time: a rebind replaces it.
            let socket = self.socket.clone();
            let mut wake_at = Instant::from_std(timeout).min(Instant::now() + MAX_IDLE);
            if let Some(turn_at) = self.turn.as_ref().and_then(TurnClient::poll_timeout) {
                wake_at = wake_at.min(turn_at);
            }
            let fail_at = self.tracker.fail_deadline();
            let media_at = self.senders.iter().map(|s| s.source.next_at()).min();
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None => {
                        tracing::debug!("peer connection handle dropped; stopping");
                        self.set_closed();
                        break;
                    }
                    Some(Command::Close) => {
                        self.close().await;
                        break;
                    }
                    Some(command) => self.on_command(command),
                },
                received = socket.recv_from(&mut buf), if self.receiving => match received {
                    Ok((n, source)) => {
                        self.recv_errors_in_a_row = 0;
                        self.on_datagram(source, &buf[..n]);
                    }
                    Err(e) => self.receiving = self.on_recv_error(e),
                },
                // Never `None`: the driver holds a sender (in `ice_tcp`).
                Some((source, packet)) = tcp_inbound.recv() => {
                    self.on_packet(Protocol::Tcp, source, self.tcp.addr(), &packet);
                }
                () = tokio::time::sleep_until(media_at.unwrap_or(wake_at)), if media_at.is_some() => {
                    self.write_media();
                }
                () = tokio::time::sleep_until(wake_at) => self.on_timeout(),
                () = tokio::time::sleep_until(fail_at.unwrap_or(wake_at)), if fail_at.is_some() => {
                    let change = self.tracker.on_fail_deadline(Instant::now());
                    self.publish(change);
                }
            }
            if self.lock_fatal() {
                break;
            }
        }
    }

    /// Polls str0m until it names its next timeout; `None` once the transport is dead.
    async fn drain(&mut self) -> Option<std::time::Instant> {
        self.flush_outbox();
        loop {
            match guarded("polling str0m", || self.rtc.poll_output()) {
                Ok(Output::Timeout(at)) => {
                    self.flush_turn().await;
                    return Some(at);
                }
                Ok(Output::Transmit(transmit)) => self.transmit(transmit).await,
                Ok(Output::Event(event)) => self.on_event(event),
                Err(reason) => {
                    self.fatal(reason);
                    return None;
                }
            }
            if self.lock_fatal() {
                return None;
            }
        }
    }

    async fn transmit(&mut self, transmit: Transmit) {
        let relayed = self.relay.as_ref().map(Candidate::addr);
        match transmit.proto {
            Protocol::Udp if Some(transmit.source) == relayed => {
                if let Some(turn) = &mut self.turn {
                    turn.send(transmit.destination, &transmit.contents, Instant::now());
                }
            }
            Protocol::Udp => {
                let sent = self.socket.send_to(&transmit.contents, transmit.destination).await;
                if let Err(e) = sent {
                    // Lost datagrams are ICE's business: persistent loss ends in Disconnected.
                    tracing::debug!(destination = %transmit.destination, error = %e, "UDP send failed");
                }
            }
            Protocol::Tcp => self.ice_tcp.send(transmit.destination, &transmit.contents),
            // We have no local candidate of another protocol, so str0m never asks.
            other => tracing::debug!(proto = ?other, "not sending over an unsupported protocol"),
        }
    }

    /// Sends what the TURN client has for the relay.
    async fn flush_turn(&mut self) {
        let Some(turn) = &mut self.turn else { return };
        let server = turn.server();
        while let Some(datagram) = turn.poll_transmit() {
            if let Err(e) = self.socket.send_to(&datagram, server).await {
                tracing::debug!(%server, error = %e, "sending to the TURN relay failed");
            }
        }
    }

    fn on_datagram(&mut self, source: SocketAddr, datagram: &[u8]) {
        match &mut self.turn {
            Some(turn) if turn.server() == source => {
                let event = turn.handle(datagram, Instant::now());
                self.on_turn_event(event);
            }
            _ => self.on_packet(Protocol::Udp, source, self.local_addr, datagram),
        }
    }

    fn on_turn_event(&mut self, event: Option<TurnEvent>) {
        match event {
            None => {}
            Some(TurnEvent::Allocated(relayed)) => self.add_relay(relayed),
            Some(TurnEvent::Failed(why)) => {
                tracing::warn!(%why, "no relayed candidate");
                self.drop_relay();
            }
            Some(TurnEvent::Data { peer, packet }) => {
                if let Some(relayed) = self.relay.as_ref().map(Candidate::addr) {
                    self.on_packet(Protocol::Udp, peer, relayed, &packet);
                }
            }
        }
    }

    /// Makes the relayed address a local candidate, and trickles it.
    fn add_relay(&mut self, relayed: SocketAddr) {
        let candidate = match Candidate::relayed(relayed, self.local_addr, "udp") {
            Ok(candidate) => candidate,
            Err(e) => {
                tracing::warn!(%relayed, error = %e, "the relayed address cannot be a candidate");
                return;
            }
        };
        if self.rtc.add_local_candidate(candidate.clone()).is_none() {
            tracing::warn!(%relayed, "str0m refused the relayed candidate");
            return;
        }
        tracing::debug!(%relayed, "relayed candidate added");
        self.relay = Some(candidate.clone());
        if let Some((_, sdp)) = lock(&self.shared).local_description.clone() {
            let candidate_init = candidate_init_json(&candidate, &SdpFacts::of(&sdp));
            self.emit(PcEvent::LocalCandidate { candidate_init });
        }
    }

    /// Forgets the relayed candidate (its allocation failed or belongs to a gone network).
    fn drop_relay(&mut self) {
        if let Some(relay) = self.relay.take() {
            self.rtc.direct_api().invalidate_candidate(&relay);
        }
    }

    /// A packet from the remote — a UDP datagram, one relayed by TURN, or one unframed from
    /// an ICE/TCP connection — that arrived at our local address `destination`.
    fn on_packet(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        packet: &[u8],
    ) {
        let receive = match Receive::new(proto, source, destination, packet) {
            Ok(receive) => receive,
            Err(e) => {
                tracing::debug!(%source, ?proto, error = %e, "ignoring a packet that is not WebRTC");
                return;
            }
        };
        lock(&self.shared).last_heard = Some(Instant::now());
        let result = guarded("handling a datagram", || {
            self.rtc.handle_input(Input::Receive(now(), receive))
        });
        self.after_input(result);
    }

    /// Returns whether to keep receiving.
    fn on_recv_error(&mut self, e: io::Error) -> bool {
        self.recv_errors_in_a_row += 1;
        if is_transient(&e) && self.recv_errors_in_a_row < MAX_RECV_ERRORS_IN_A_ROW {
            tracing::debug!(error = %e, "UDP receive error (transient)");
            return true;
        }
        self.fatal(format!("the UDP socket {} failed: {e}", self.local_addr));
        false
    }

    fn on_timeout(&mut self) {
        if let Some(turn) = &mut self.turn {
            let event = turn.on_timeout(Instant::now());
            self.on_turn_event(event);
        }
        let result = guarded("handling a timeout", || self.rtc.handle_input(Input::Timeout(now())));
        self.after_input(result);
    }

    /// Input errors that leave str0m alive concern one packet; the others end the transport.
    fn after_input(&mut self, result: Result<(), String>) {
        if let Err(reason) = result {
            if self.rtc.is_alive() {
                tracing::debug!(%reason, "str0m rejected input");
            } else {
                self.fatal(reason);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::CreateOffer { ice_restart, reply } => {
                let result = self.create_offer(ice_restart, Vec::new());
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.trickle_if_new_credentials();
                }
            }
            Command::OfferTracks { tracks, reply } => {
                let result = self.create_offer(false, tracks);
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.trickle_if_new_credentials();
                }
            }
            Command::SetRemoteAnswer { sdp, reply } => {
                let _ = reply.send(self.set_remote_answer(&sdp));
            }
            Command::AnswerOffer { sdp, reply } => {
                let result = self.answer_offer(&sdp);
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.trickle_if_new_credentials();
                }
            }
            Command::AddRemoteCandidate(candidate) => self.add_remote_candidate(candidate),
            Command::Send { kind, payload } => {
                self.outbox.push_back((kind, payload));
                self.flush_outbox();
            }
            Command::UseRelay { server, relay_only } => self.use_relay(server, relay_only),
            Command::SetMuted { cid, muted } => {
                for sender in self.senders.iter_mut().filter(|s| s.cid == cid) {
                    sender.source.set_muted(muted);
                }
            }
            Command::Rebind { socket, host, reply } => {
                let _ = reply.send(self.rebind(socket, host));
            }
            // Handled by the loop, which stops after it.
            Command::Close => {}
        }
    }

    /// Switches to `socket`, adding `host` (and an active TCP candidate on its address) as
    /// local candidates unless relayed ones only are used, and drops the ICE/TCP connections
    /// of the old network (the old candidates stay known to str0m, but nothing arrives on
    /// them any more) and the allocation made from the old socket: the resume's
    /// [`Command::UseRelay`], which follows, allocates anew with the response's fresh
    /// credentials (the join's may have expired).
    fn rebind(&mut self, socket: Arc<dyn DatagramSocket>, host: Candidate) -> Result<(), RtcError> {
        self.alive()?;
        let tcp = tcp_candidate(&host)?;
        if !self.relay_only {
            add_local_candidates(&mut self.rtc, &host, &tcp)?;
        }
        self.tcp = tcp;
        self.ice_tcp.reset();
        self.socket = socket;
        self.local_addr = host.addr();
        self.host = host;
        self.recv_errors_in_a_row = 0;
        self.receiving = true;
        self.drop_relay();
        self.turn = None;
        Ok(())
    }

    /// A resume's word on relays, applied before its ICE restarts: allocate on `server` if
    /// it is not the relay in use, and use relayed candidates only or not as `relay_only`
    /// (the server's `force_relay`) says, as upstream reconfigures its peer connections.
    fn use_relay(&mut self, server: Option<TurnServer>, relay_only: bool) {
        // The same relay lists fresh credentials in every response; a live allocation made
        // with earlier ones stays (a second Allocate from this socket would be refused).
        let current = self.turn.as_ref().filter(|turn| !turn.failed()).map(TurnClient::server);
        if server.as_ref().is_some_and(|s| Some(s.addr) != current) {
            self.drop_relay();
            self.turn = turn_client(server, self.next_seed());
        }
        self.set_relay_only(relay_only);
    }

    /// Uses relayed candidates only (host and TCP ones discarded, so the next ICE restart
    /// pairs only the relayed one) or all of them again (str0m re-enables the discarded
    /// ones). Relay-only needs a relay: without one the host candidates stay, with a warning.
    fn set_relay_only(&mut self, wanted: bool) {
        let relay_only = wanted && self.turn.is_some();
        if wanted && !relay_only {
            tracing::warn!(
                "the server asks for relayed candidates only, but lists no TURN relay this \
                 client can use (UDP, by IP address): keeping host candidates"
            );
        }
        if relay_only == self.relay_only {
            return;
        }
        self.relay_only = relay_only;
        if relay_only {
            tracing::info!("relayed candidates only from now on (the server's force_relay)");
            let mut api = self.rtc.direct_api();
            api.invalidate_candidate(&self.host);
            api.invalidate_candidate(&self.tcp);
        } else if let Err(e) = add_local_candidates(&mut self.rtc, &self.host, &self.tcp) {
            tracing::warn!(error = %e, "could not use the host candidates again");
        } else {
            tracing::info!("host candidates in use again (no more force_relay)");
        }
    }

    /// A fresh seed for the next TURN client's transaction ids.
    fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.seed
    }

    fn create_offer(
        &mut self,
        ice_restart: bool,
        tracks: Vec<(String, LocalTrack)>,
    ) -> Result<String, RtcError> {
        self.alive()?;
        if self.pending_offer.is_some() {
            if !ice_restart {
                return Err(RtcError::OfferPending);
            }
            // A resume's offer replaces one whose answer was lost with the old signalling:
            // roll it back, media lines it would have added included.
            self.pending_offer = None;
            let rtc = &self.rtc;
            self.senders.retain(|s| rtc.media(s.mid).is_some());
        }
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for (cid, track) in tracks {
            let kind = match track.kind() {
                TrackKind::Audio => str0m::media::MediaKind::Audio,
                TrackKind::Video => str0m::media::MediaKind::Video,
            };
            // livekit-server matches the line to the AddTrackRequest by its msid track id.
            let mid = api.add_media(
                kind,
                Direction::SendOnly,
                Some(cid.clone()),
                Some(cid.clone()),
                None,
            );
            added.push(Sender { cid, mid, source: Generator::new(track, Instant::now()) });
        }
        // Until an answer is applied the channels exist only in the offer: (re)state them.
        if !self.negotiated {
            for kind in [DataChannelKind::Reliable, DataChannelKind::Lossy] {
                api.add_channel_with_config(kind.channel_config());
            }
        }
        if ice_restart && self.negotiated {
            api.ice_restart(true);
        } else if ice_restart {
            tracing::debug!("ICE restart requested before the first answer; a plain offer will do");
        }
        let Some((offer, pending)) = api.apply() else {
            return Err(RtcError::NothingToNegotiate);
        };
        tracing::debug!(ice_restart, tracks = added.len(), "created an offer");
        self.senders.extend(added);
        lock(&self.shared).sending = self.senders.iter().map(|s| s.cid.clone()).collect();
        self.pending_offer = Some(pending);
        let sdp = offer.to_sdp_string();
        lock(&self.shared).local_description = Some((SdpKind::Offer, sdp.clone()));
        Ok(sdp)
    }

    fn set_remote_answer(&mut self, sdp: &str) -> Result<(), RtcError> {
        self.alive()?;
        let answer = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| RtcError::Sdp(format!("expected a valid SDP answer: {e}")))?;
        let pending = self.pending_offer.take().ok_or(RtcError::NoPendingOffer)?;
        let ufrag_before = self.local_ufrag();
        let result = guarded("applying the remote answer", || {
            self.rtc.sdp_api().accept_answer(pending, answer)
        });
        self.after_remote_description(sdp, ufrag_before, result)?;
        self.negotiated = true;
        Ok(())
    }

    fn answer_offer(&mut self, sdp: &str) -> Result<String, RtcError> {
        self.alive()?;
        let offer = SdpOffer::from_sdp_string(sdp)
            .map_err(|e| RtcError::Sdp(format!("expected a valid SDP offer: {e}")))?;
        let ufrag_before = self.local_ufrag();
        let result =
            guarded("applying the remote offer", || self.rtc.sdp_api().accept_offer(offer));
        let answer = self.after_remote_description(sdp, ufrag_before, result)?;
        self.negotiated = true;
        let sdp = answer.to_sdp_string();
        lock(&self.shared).local_description = Some((SdpKind::Answer, sdp.clone()));
        Ok(sdp)
    }

    /// Common follow-up of applying a remote offer or answer: errors, ICE restarts, and the
    /// remote candidates that were waiting for it.
    fn after_remote_description<T>(
        &mut self,
        sdp: &str,
        ufrag_before: String,
        result: Result<T, String>,
    ) -> Result<T, RtcError> {
        let value = match result {
            Ok(value) => value,
            Err(reason) => {
                if !self.rtc.is_alive() {
                    self.fatal(reason.clone());
                }
                return Err(RtcError::Sdp(reason));
            }
        };
        if self.negotiated && self.local_ufrag() != ufrag_before {
            tracing::debug!("ICE restart applied");
            let change = self.tracker.on_ice_restart();
            self.publish(change);
        }
        self.remote_ufrag = SdpFacts::of(sdp).ufrag;
        for candidate in std::mem::take(&mut self.early_candidates) {
            self.add_remote_candidate(candidate);
        }
        // str0m's ICE agent names no timeout before its first one, so a peer connection
        // that only answers would start its own checks only when the remote's first check
        // arrives — never, if those cannot reach us (UDP blocked, our candidate active
        // TCP). Starting its clock now makes it check at once.
        self.on_timeout();
        Ok(value)
    }

    fn add_remote_candidate(&mut self, candidate: Candidate) {
        match (candidate.ufrag(), self.remote_ufrag.as_deref()) {
            (Some(theirs), Some(current)) if theirs != current => {
                // Trickled ahead of the (ICE-restart) description it belongs to, or stale.
                if self.early_candidates.len() < MAX_EARLY_CANDIDATES {
                    self.early_candidates.push(candidate);
                }
            }
            _ => self.rtc.add_remote_candidate(candidate),
        }
    }

    /// After a local description: trickle the host candidate (unless relayed ones only are
    /// used) and the relayed one under the (new) credentials.
    fn trickle_if_new_credentials(&mut self) {
        let Some((_, sdp)) = lock(&self.shared).local_description.clone() else { return };
        let facts = SdpFacts::of(&sdp);
        if facts.ufrag.is_some() && facts.ufrag != self.trickled_ufrag {
            self.trickled_ufrag = facts.ufrag.clone();
            let host = (!self.relay_only).then_some(&self.host);
            for candidate in host.into_iter().chain(self.relay.as_ref()) {
                let candidate_init = candidate_init_json(candidate, &facts);
                self.emit(PcEvent::LocalCandidate { candidate_init });
            }
        }
    }

    fn local_ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }

    fn flush_outbox(&mut self) {
        while let Some((kind, payload)) = self.outbox.front() {
            let id = self.channels.iter().find(|(_, (_, k))| *k == Some(*kind)).map(|(id, _)| *id);
            let reliable = *kind == DataChannelKind::Reliable;
            let Some(mut channel) = id.and_then(|id| self.rtc.channel(id)) else {
                tracing::warn!(channel = kind.label(), "dropping a message: the channel closed");
                self.reliable_dropped |= reliable;
                self.outbox.pop_front();
                continue;
            };
            match channel.write(true, payload) {
                Ok(true) => self.reliable_written += u64::from(reliable),
                // SCTP's send buffer is full: keep the rest, in order, for later.
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(channel = kind.label(), error = %e, "dropping a message");
                    self.reliable_dropped |= reliable;
                }
            }
            self.outbox.pop_front();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                let change = self.tracker.on_dtls_connected();
                self.publish(change);
            }
            Event::IceConnectionStateChange(ice) => {
                tracing::debug!(?ice, "ICE state");
                let change = self.tracker.on_ice(ice, Instant::now());
                self.publish(change);
            }
            Event::ChannelOpen(id, label) => self.on_channel_open(id, label),
            Event::MediaData(data) => self.on_media(&data),
            Event::KeyframeRequest(request) => {
                tracing::debug!(mid = %request.mid, kind = ?request.kind, "key frame requested");
                for sender in self.senders.iter_mut().filter(|s| s.mid == request.mid) {
                    sender.source.request_key_frame();
                }
            }
            Event::ChannelData(data) => match self.channels.get(&data.id) {
                Some((_, Some(kind))) => {
                    let kind = *kind;
                    self.emit(PcEvent::Data { kind, payload: data.data });
                }
                _ => tracing::debug!("ignoring data on a channel that is not LiveKit's"),
            },
            Event::ChannelClose(id) => {
                if let Some((label, kind)) = self.channels.remove(&id) {
                    lock(&self.shared).open_channels.retain(|(open, _)| *open != label);
                    if let Some(kind) = kind {
                        self.emit(PcEvent::ChannelClosed(kind));
                    }
                }
            }
            Event::ChannelBufferedAmountLow(id) => {
                self.report_reliable_acked(id);
                self.flush_outbox();
            }
            Event::Closed => {
                self.fatal("the remote peer closed the DTLS/SCTP transport".to_owned())
            }
            other => tracing::trace!(event = ?other, "str0m event not used"),
        }
    }

    /// Counts a frame received on a media line.
    fn on_media(&mut self, data: &MediaData) {
        let key = matches!(&data.codec_extra, CodecExtra::Vp8(extra) if extra.is_keyframe);
        let mut received = self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let counter: &mut MidCounter = received.entry(data.mid.to_string()).or_default();
        counter.frames += 1;
        counter.key_frames += u64::from(key);
        counter.last_at = Some(Instant::now());
    }

    /// Writes the frames that are due. Before ICE has connected (or the line is negotiated)
    /// str0m has no writer and the frames are dropped, as a browser's encoder output is
    /// before it can send — but a key frame that was not sent is owed still: without it the
    /// server's downtracks wait for one, and a key frame asked for before the line could send
    /// would otherwise never come (a republished camera stayed black after a train tunnel).
    fn write_media(&mut self) {
        let now = Instant::now();
        for sender in &mut self.senders {
            let Some(frame) = sender.source.due(now) else { continue };
            let key = crate::media::vp8::is_key_frame(&frame.data);
            let Some(writer) = self.rtc.writer(sender.mid) else {
                if key {
                    sender.source.request_key_frame();
                }
                continue;
            };
            let codec = match sender.source.kind() {
                TrackKind::Audio => Codec::Opus,
                TrackKind::Video => Codec::Vp8,
            };
            let Some(pt) =
                writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt())
            else {
                tracing::debug!(mid = %sender.mid, ?codec, "no negotiated payload type yet");
                if key {
                    sender.source.request_key_frame();
                }
                continue;
            };
            let clock = match frame.clock_rate {
                48_000 => Frequency::FORTY_EIGHT_KHZ,
                _ => Frequency::NINETY_KHZ,
            };
            let rtp_time = MediaTime::new(frame.rtp_time, clock);
            if let Err(e) = writer.write(pt, now.into_std(), rtp_time, frame.data) {
                tracing::debug!(mid = %sender.mid, error = %e, "writing a frame failed");
                if key {
                    sender.source.request_key_frame();
                }
            }
        }
    }

    /// The buffered amount of channel `id` dropped (str0m reports it when SCTP's SACKs
    /// release it: sctp-proto counts a message as buffered until it is acknowledged). If it is
    /// our reliable channel and nothing is buffered any more, everything written was received.
    fn report_reliable_acked(&mut self, id: ChannelId) {
        let reliable = matches!(self.channels.get(&id), Some((_, Some(DataChannelKind::Reliable))));
        if !reliable || self.reliable_dropped || self.reliable_written == self.reliable_acked {
            return;
        }
        let Some(mut channel) = self.rtc.channel(id) else { return };
        if channel.buffered_amount() == 0 {
            self.reliable_acked = self.reliable_written;
            self.emit(PcEvent::ReliableAcked { messages: self.reliable_acked });
        }
    }

    fn on_channel_open(&mut self, id: ChannelId, label: String) {
        let kind = DataChannelKind::from_label(&label);
        let stream_id = self.rtc.direct_api().sctp_stream_id_by_channel_id(id);
        tracing::debug!(%label, ?stream_id, "data channel open");
        if let Some(stream_id) = stream_id {
            lock(&self.shared).open_channels.push((label.clone(), stream_id));
        }
        self.channels.insert(id, (label, kind));
        if let Some(kind) = kind {
            self.emit(PcEvent::ChannelOpen(kind));
        }
        self.flush_outbox();
    }

    /// Closes DTLS/SCTP, sends what that produces, and reports Closed.
    async fn close(&mut self) {
        if self.rtc.is_alive() {
            if let Err(e) = self.rtc.close() {
                tracing::debug!(error = %e, "closing str0m");
            }
            // Nothing more will be received: send what closing produced, then stop.
            loop {
                match guarded("closing", || self.rtc.poll_output()) {
                    Ok(Output::Transmit(transmit)) => self.transmit(transmit).await,
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(_)) | Err(_) => break,
                }
            }
        }
        self.set_closed();
    }

    fn set_closed(&mut self) {
        let change = self.tracker.on_close();
        lock(&self.shared).open_channels.clear();
        self.publish(change);
    }

    /// The transport cannot be used any more: report Failed and stop str0m.
    fn fatal(&mut self, reason: String) {
        tracing::warn!(%reason, "peer connection failed");
        self.rtc.disconnect();
        {
            let mut shared = lock(&self.shared);
            shared.fatal.get_or_insert(reason);
            shared.open_channels.clear();
        }
        let change = self.tracker.on_fatal();
        self.publish(change);
    }

    fn lock_fatal(&self) -> bool {
        lock(&self.shared).fatal.is_some()
    }

    fn alive(&self) -> Result<(), RtcError> {
        match lock(&self.shared).fatal.clone() {
            Some(reason) => Err(RtcError::Failed(reason)),
            None => Ok(()),
        }
    }

    /// Records a state change where the handle can read it, then tells the engine.
    fn publish(&mut self, change: Option<PcState>) {
        if let Some(state) = change {
            tracing::debug!(?state, "peer connection state");
            lock(&self.shared).state = state;
            self.emit(PcEvent::StateChanged(state));
        }
    }

    fn emit(&self, event: PcEvent) {
        // The engine may have stopped listening; the task still ends with its handle.
        let _ = self.events.send(event);
    }
}
