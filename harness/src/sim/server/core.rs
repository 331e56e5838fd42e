//! The simulated server's state and its one task: rooms, participants, their signalling
//! links and peer connections, and every timer. Links and tests talk to it over channels;
//! everything it does happens in this task, in a deterministic order (ordered maps, a
//! `biased` select, counters for sids).
//!
//! Each behaviour names the file of livekit/livekit v1.13.5 it follows. Media tracks
//! (publication, subscription, forwarding) are in `tracks`.

mod tracks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol::{self as proto, signal_request, signal_response, simulate_scenario};
use prost::Message as _;
use str0m::net::{Protocol, Transmit};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::data_cache::{DataCache, JoiningHold};
use super::ice_tcp::FromIceTcp;
use super::link::{FromLink, JoinRequest, ToLink};
use super::media::{Channel, MediaEvent, ServerPc};
use super::{Control, PlantedBug, ServerConfig};
use tracks::{DownTrack, Publication};

/// pkg/rtc/participant.go: the ping interval and timeout sent in every JoinResponse (s).
const PING_INTERVAL: i32 = 5;
const PING_TIMEOUT: i32 = 15;
/// pkg/rtc/room.go `Join`: a participant that has not connected a minute after joining is
/// removed (JOIN_FAILURE).
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// pkg/rtc/transport.go `iceFailedTimeoutTotal`: pion declares ICE disconnected after
/// 10 s without hearing the client and failed 5 s later.
const PC_FAILED_AFTER: Duration = Duration::from_secs(15);
/// pkg/rtc/participant.go `disconnectCleanupDuration`: after a media failure the
/// participant waits this long for a resume before it is removed.
const RESUME_WINDOW: Duration = Duration::from_secs(5);
/// pkg/rtc/room.go: how long the simulate-disconnect-on-resume scenarios stay armed.
const SIMULATE_DISCONNECT_WINDOW: Duration = Duration::from_secs(5);
/// pkg/rtc/room.go: an empty room closes after its departure timeout (default 20 s).
const DEPARTURE_TIMEOUT: Duration = Duration::from_secs(20);
/// pkg/utils/iceconfigcache.go: how long a participant's ICE preference is remembered.
const ICE_CONFIG_TTL: Duration = Duration::from_secs(5 * 60);
/// pkg/service/roommanager.go `tokenRefreshInterval`: the server sends a fresh token when
/// the session starts and this often after.
const TOKEN_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// pkg/service/roommanager.go `tokenDefaultTTL`: the lifetime of a refreshed token.
const REFRESHED_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// The server version this double imitates.
const VERSION: &str = "1.13.5";

/// pkg/rtc/transportmanager.go `ICEConfig`: the candidate type a participant's ICE config
/// prefers, set by SimulateScenario's `switch_candidate_protocol` (UDP clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcePreference {
    /// `ICT_TCP`: `SetPreferTCP` filters every candidate but TCP.
    Tcp,
    /// `ICT_TLS`: no candidate is filtered (`SetPreferTCP(false)`); the client is told to
    /// force relay (pkg/rtc/participant.go `ClientConf.ForceRelay`), and a server with a
    /// TURN/TLS port would list only that (pkg/service/roommanager.go
    /// `iceServersForParticipant`; this one has no TURN/TLS, so it lists its TURN/UDP relay,
    /// if any, as livekit falls back to).
    Tls,
}

impl IcePreference {
    /// pkg/rtc/room.go: the scenario's `CandidateProtocol` as an ICE candidate type;
    /// `None` for UDP (`ICT_NONE`).
    fn from_protocol(protocol: i32) -> Option<Self> {
        match proto::CandidateProtocol::try_from(protocol) {
            Ok(proto::CandidateProtocol::Tcp) => Some(Self::Tcp),
            Ok(proto::CandidateProtocol::Tls) => Some(Self::Tls),
            _ => None,
        }
    }
}

/// One connected participant.
struct Participant {
    sid: String,
    identity: String,
    name: String,
    metadata: String,
    state: proto::participant_info::State,
    joined_at: Instant,
    joined_at_secs: i64,
    /// The open signalling link: connection id and its sender.
    link: Option<(u64, mpsc::UnboundedSender<ToLink>)>,
    publisher: ServerPc,
    subscriber: ServerPc,
    /// Offer ids of the subscriber PC (SessionDescription.id).
    next_offer_id: u32,
    /// When the participant is removed unless something happens first, and why.
    remove_at: Option<(Instant, proto::DisconnectReason)>,
    /// When the transport ended under a connected participant (it counts as failed).
    pc_fails_at: Option<Instant>,
    /// When a simulated speaker update ends.
    speaking_until: Option<Instant>,
    /// The highest reliable data sequence received from this participant.
    last_reliable_seq: u32,
    /// [`PlantedBug::LoseFirstDataAfterResume`] is armed: the next reliable packet is lost.
    lose_next_reliable: bool,
    /// When the server next sends it a fresh token.
    refresh_at: Instant,
    /// When the server last heard this participant's signalling (pkg/rtc/transportmanager.go
    /// `LastSeenSignalAt`).
    last_signal_at: Instant,
    /// The departures the server told this participant of, with when (pkg/rtc/participant.go
    /// `updateCache`, of which only the departures matter here); the last [`DEPARTURES_KEPT`].
    departures: Vec<(Instant, proto::ParticipantInfo)>,
    /// Reliable data held back until its primary transport is fully established.
    hold: JoiningHold,
    /// The candidate preference of this session's ICE config, if any.
    ice_preference: Option<IcePreference>,
    /// The tracks it publishes in this session (`tracks`).
    tracks: Vec<Publication>,
    /// Its subscriptions: one downtrack per other participant's published track.
    downtracks: Vec<DownTrack>,
}

/// What a participant's timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// `remove_at`: the participant is removed with the stored reason.
    Removal,
    /// pkg/rtc/room.go `Join`: not connected a minute after joining (JOIN_FAILURE).
    Join,
    /// `pc_fails_at`: a transport ended under a connected participant.
    PcFailed,
    /// The media path has been silent for pion's ICE timeouts.
    MediaSilent,
    /// A simulated speaker update ends.
    SpeakingEnds,
    /// The next token refresh.
    TokenRefresh,
    /// A downtrack waiting for a key frame asks the publisher for one (`tracks`).
    KeyframeRequest,
}

/// How many departures a participant's update cache keeps (the real cache is an LRU of
/// participants; a room here never has more).
const DEPARTURES_KEPT: usize = 64;

impl Participant {
    fn info(&self) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            state: self.state as i32,
            joined_at: self.joined_at_secs,
            joined_at_ms: self.joined_at_secs * 1000,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                ..Default::default()
            }),
            // pkg/rtc/participant.go `ToProto`: the published tracks (pending ones are not).
            tracks: self.tracks.iter().filter(|t| t.live).map(|t| t.info.clone()).collect(),
            ..Default::default()
        }
    }

    /// pkg/rtc/participant.go `GetClientConfiguration`: `force_relay` is ENABLED while the
    /// ICE config prefers TLS, UNSET otherwise (`OnICEConfigChanged`).
    fn client_configuration(&self) -> proto::ClientConfiguration {
        let force_relay = if self.ice_preference == Some(IcePreference::Tls) {
            proto::ClientConfigSetting::Enabled
        } else {
            proto::ClientConfigSetting::Unset
        };
        proto::ClientConfiguration { force_relay: force_relay as i32, ..Default::default() }
    }

    fn send(&self, message: signal_response::Message) {
        if let Some((_, link)) = &self.link {
            let _ = link.send(ToLink::Send(Box::new(message)));
        }
    }

    fn close_link(&mut self) {
        if let Some((_, link)) = self.link.take() {
            let _ = link.send(ToLink::Close);
        }
    }

    /// pkg/rtc/participant.go `HasConnected`: either peer connection has connected.
    fn has_connected(&self) -> bool {
        self.subscriber.has_connected() || self.publisher.has_connected()
    }

    /// Every timer of this participant and when it fires (`None`: not armed), listed once
    /// for both [`Core::next_timer`] and [`Core::on_timers`]; a removal comes first (once
    /// due, nothing else matters).
    fn deadlines(&self) -> [(Deadline, Option<Instant>); 7] {
        [
            (Deadline::Removal, self.remove_at.map(|(at, _)| at)),
            (Deadline::Join, (!self.has_connected()).then_some(self.joined_at + JOIN_DEADLINE)),
            (Deadline::PcFailed, self.pc_fails_at),
            (Deadline::MediaSilent, self.media_deadline()),
            (Deadline::SpeakingEnds, self.speaking_until),
            (Deadline::TokenRefresh, Some(self.refresh_at)),
            tracks::next_keyframe_request(&self.downtracks),
        ]
    }

    /// A fresh token for this participant in `room` (pkg/service/roommanager.go
    /// `refreshToken`: the same grants, a new lifetime), signed with `keys`.
    fn refreshed_token(&self, room: &str, keys: &(String, String)) -> Option<String> {
        crate::token::TokenSpec::join(room, &self.identity)
            .with_name(&self.name)
            .with_metadata(&self.metadata)
            .with_ttl(REFRESHED_TOKEN_TTL)
            .mint_at(&keys.0, &keys.1, crate::sim::wall_clock())
            .ok()
    }

    /// When the media path counts as failed if the client stays silent: pion's ICE
    /// timeouts after the last datagram of a connected PC. `None` while a removal is
    /// already scheduled.
    fn media_deadline(&self) -> Option<Instant> {
        if self.remove_at.is_some() {
            return None;
        }
        let silent_since = [self.publisher.last_heard(), self.subscriber.last_heard()]
            .into_iter()
            .flatten()
            .min()?;
        Some(Instant::from_std(silent_since) + PC_FAILED_AFTER)
    }

    fn pc(&mut self, target: i32) -> &mut ServerPc {
        if target == proto::SignalTarget::Subscriber as i32 {
            &mut self.subscriber
        } else {
            &mut self.publisher
        }
    }
}

/// One room.
struct Room {
    sid: String,
    creation_time: i64,
    participants: BTreeMap<String, Participant>,
    /// pkg/rtc/room.go `disconnectSignalOnResumeParticipants`: identity → until when.
    drop_on_resume: BTreeMap<String, Instant>,
    /// pkg/rtc/room.go `disconnectSignalOnResumeNoMessagesParticipants`.
    refuse_resume: BTreeMap<String, Instant>,
    /// When the room closes because it stayed empty.
    closes_at: Option<Instant>,
    /// Recent sequenced reliable packets, for participants still being set up.
    data: DataCache,
}

impl Room {
    fn info(&self, name: &str) -> proto::Room {
        proto::Room {
            sid: self.sid.clone(),
            name: name.to_owned(),
            empty_timeout: 300,
            departure_timeout: DEPARTURE_TIMEOUT.as_secs() as u32,
            creation_time: self.creation_time,
            creation_time_ms: self.creation_time * 1000,
            num_participants: self.participants.len() as u32,
            ..Default::default()
        }
    }

    /// Sends `message` to everyone except `except`.
    fn broadcast(&self, except: Option<&str>, message: &signal_response::Message) {
        for (identity, participant) in &self.participants {
            if Some(identity.as_str()) != except {
                participant.send(message.clone());
            }
        }
    }
}

/// The core task's state.
pub(super) struct Core {
    udp: turmoil::net::UdpSocket,
    udp_port: u16,
    /// The ICE/TCP port, if the server has one.
    ice_tcp_port: Option<u16>,
    /// The TURN relay's port, if the server has one (`turn`).
    turn_port: Option<u16>,
    /// Open ICE/TCP connections by client address: where packets for that address go.
    ice_tcp_links: BTreeMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
    rooms: BTreeMap<String, Room>,
    /// Connection id → (room, identity) of the participant it serves.
    links: BTreeMap<u64, (String, String)>,
    /// pkg/service/roommanager.go `iceConfigCache`: (room, identity) → its ICE candidate
    /// preference, until when.
    ice_configs: BTreeMap<(String, String), (IcePreference, Instant)>,
    /// Sid counter, shared by every run of the server (the real server's sids are GUIDs:
    /// a restarted server never reuses one).
    sids: Arc<AtomicU64>,
    started: Instant,
    planted_bug: Option<PlantedBug>,
    /// The API key and secret, to sign refreshed tokens.
    keys: (String, String),
}

impl Core {
    pub(super) fn new(
        config: &ServerConfig,
        udp: turmoil::net::UdpSocket,
        sids: Arc<AtomicU64>,
    ) -> Self {
        let udp_port = config.udp_port;
        Self {
            udp,
            udp_port,
            ice_tcp_port: config.ice_tcp_port,
            turn_port: config.turn_port,
            ice_tcp_links: BTreeMap::new(),
            rooms: BTreeMap::new(),
            links: BTreeMap::new(),
            ice_configs: BTreeMap::new(),
            sids,
            started: Instant::now(),
            planted_bug: config.planted_bug,
            keys: (config.api_key.clone(), config.api_secret.clone()),
        }
    }

    fn sid(&mut self, prefix: &str) -> String {
        let n = self.sids.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}_{n:012}")
    }

    fn wall_secs(&self) -> i64 {
        let since = turmoil::since_epoch().unwrap_or_else(|| self.started.elapsed());
        since.as_secs() as i64
    }

    /// Runs until an input channel closes (the server's host stopped).
    pub(super) async fn run(
        mut self,
        mut links: mpsc::UnboundedReceiver<FromLink>,
        mut controls: mpsc::UnboundedReceiver<Control>,
        mut ice_tcp: mpsc::UnboundedReceiver<FromIceTcp>,
    ) {
        let mut buf = vec![0_u8; 2048];
        loop {
            let rtc_deadline = self.drive_media().await;
            let deadline = [rtc_deadline, self.next_timer()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                biased;
                control = controls.recv() => match control {
                    Some(control) => self.on_control(control),
                    None => return,
                },
                event = links.recv() => match event {
                    Some(event) => self.on_link(event),
                    None => return,
                },
                received = self.udp.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.on_packet(Protocol::Udp, source, &buf[..n]),
                    Err(e) => tracing::debug!(error = %e, "simulated server: UDP receive error"),
                },
                // Never `None` while the server runs: its acceptor holds a sender (and
                // without an ICE/TCP port, the sender is held by `serve`).
                Some(event) = ice_tcp.recv() => self.on_ice_tcp(event),
                () = tokio::time::sleep_until(deadline) => self.on_timers(),
            }
        }
    }

    // ---- media ----------------------------------------------------------------------

    /// Drains every peer connection, sends what they produced and handles their events,
    /// until nothing more happens. Returns the earliest str0m timeout.
    async fn drive_media(&mut self) -> Option<Instant> {
        loop {
            let mut transmits = Vec::new();
            let mut events = Vec::new();
            let mut next: Option<std::time::Instant> = None;
            for (room, r) in &mut self.rooms {
                for (identity, p) in &mut r.participants {
                    for (subscriber, pc) in [(false, &mut p.publisher), (true, &mut p.subscriber)] {
                        let mut produced = Vec::new();
                        if let Some(at) = pc.poll(&mut transmits, &mut produced) {
                            next = Some(next.map_or(at, |n| n.min(at)));
                        }
                        events.extend(
                            produced
                                .into_iter()
                                .map(|e| (room.clone(), identity.clone(), subscriber, e)),
                        );
                    }
                }
            }
            for transmit in transmits {
                self.transmit(transmit).await;
            }
            if events.is_empty() {
                return next.map(Instant::from_std);
            }
            for (room, identity, subscriber, event) in events {
                self.on_media(&room, &identity, subscriber, event);
            }
        }
    }

    async fn transmit(&self, transmit: Transmit) {
        match transmit.proto {
            Protocol::Tcp => match self.ice_tcp_links.get(&transmit.destination) {
                Some(link) => {
                    let _ = link.send(transmit.contents.to_vec());
                }
                None => tracing::debug!(
                    destination = %transmit.destination,
                    "simulated server: no ICE/TCP connection for a packet"
                ),
            },
            _ => {
                if let Err(e) = self.udp.send_to(&transmit.contents, transmit.destination).await {
                    tracing::debug!(error = %e, "simulated server: UDP send failed");
                }
            }
        }
    }

    fn on_ice_tcp(&mut self, event: FromIceTcp) {
        match event {
            FromIceTcp::Opened(peer, link) => {
                self.ice_tcp_links.insert(peer, link);
            }
            FromIceTcp::Packet(peer, packet) => self.on_packet(Protocol::Tcp, peer, &packet),
            FromIceTcp::Closed(peer) => {
                if self.ice_tcp_links.get(&peer).is_some_and(|link| link.is_closed()) {
                    self.ice_tcp_links.remove(&peer);
                }
            }
        }
    }

    /// A packet from a client, over UDP or an ICE/TCP connection: to the peer connection
    /// that takes it.
    fn on_packet(&mut self, proto: Protocol, source: SocketAddr, data: &[u8]) {
        let now = Instant::now().into_std();
        for r in self.rooms.values_mut() {
            for p in r.participants.values_mut() {
                for pc in [&mut p.publisher, &mut p.subscriber] {
                    if pc.accepts(now, proto, source, data) {
                        pc.receive(now, proto, source, data);
                        return;
                    }
                }
            }
        }
    }

    fn on_media(&mut self, room: &str, identity: &str, subscriber: bool, event: MediaEvent) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(p) = r.participants.get_mut(identity) else { return };
        match event {
            MediaEvent::Connected => {
                p.pc_fails_at = None;
                if subscriber && p.state != proto::participant_info::State::Active {
                    // pkg/rtc/participant.go: the participant becomes ACTIVE once its
                    // primary transport connects; the room broadcasts the change.
                    p.state = proto::participant_info::State::Active;
                    let update = signal_response::Message::Update(proto::ParticipantUpdate {
                        participants: vec![p.info()],
                    });
                    r.broadcast(None, &update);
                }
            }
            MediaEvent::Closed => {
                if p.has_connected() {
                    p.pc_fails_at = Some(now);
                }
            }
            // pkg/rtc/participant.go `onPrimaryTransportFullyEstablished`.
            MediaEvent::Established if subscriber => {
                for packet in p.hold.open(&mut r.data, now, &p.identity) {
                    if !p.subscriber.send(Channel::Reliable, &packet) {
                        tracing::debug!(to = %identity, "simulated server: replay not written");
                    }
                }
            }
            MediaEvent::Established => {}
            MediaEvent::Data(kind, payload) if !subscriber => {
                self.forward_data(room, identity, kind, &payload)
            }
            MediaEvent::Data(..) => {}
            MediaEvent::Frame(frame) if !subscriber => self.on_frame(room, identity, &frame),
            MediaEvent::Frame(_) => {}
        }
    }

    /// pkg/rtc/participant.go `handleReceivedDataMessage`: a reliable packet whose sequence
    /// is not above the last one received from this participant is dropped (a replay after
    /// a resume); the rest is stamped with the sender (packet and user payload), its kind
    /// set from the channel, and handed to the room — pkg/rtc/room.go
    /// `BroadcastDataPacketForRoom` — which sends it to everyone else, or only to
    /// `destination_identities`.
    fn forward_data(&mut self, room: &str, identity: &str, kind: Channel, payload: &[u8]) {
        let Ok(mut packet) = proto::DataPacket::decode(payload) else {
            tracing::debug!("simulated server: dropping an undecodable data packet");
            return;
        };
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(sender) = r.participants.get_mut(identity) else { return };
        if kind == Channel::Reliable && packet.sequence > 0 {
            if packet.sequence <= sender.last_reliable_seq {
                tracing::debug!(
                    sequence = packet.sequence,
                    "simulated server: dropping an already received reliable packet"
                );
                return;
            }
            sender.last_reliable_seq = packet.sequence;
            if std::mem::take(&mut sender.lose_next_reliable) {
                tracing::debug!(sequence = packet.sequence, "simulated server: planted bug");
                return;
            }
        }
        #[allow(deprecated)]
        {
            packet.kind = match kind {
                Channel::Reliable => proto::data_packet::Kind::Reliable,
                Channel::Lossy => proto::data_packet::Kind::Lossy,
            } as i32;
            packet.participant_identity = sender.identity.clone();
            packet.participant_sid = sender.sid.clone();
            if let Some(proto::data_packet::Value::User(user)) = &mut packet.value {
                user.participant_identity = sender.identity.clone();
                user.participant_sid = sender.sid.clone();
                if packet.destination_identities.is_empty() {
                    packet.destination_identities = user.destination_identities.clone();
                } else {
                    user.destination_identities = packet.destination_identities.clone();
                }
            }
        }
        let destinations = packet.destination_identities.clone();
        let encoded = packet.encode_to_vec();
        // pkg/rtc/room.go `onDataMessage`: sequenced reliable packets are cached, and a
        // participant still being set up gets them from the cache later.
        let sequenced = (kind == Channel::Reliable && packet.sequence > 0)
            .then(|| (packet.participant_sid.clone(), packet.sequence));
        if let Some((sender, seq)) = &sequenced {
            r.data.add(Instant::now(), sender, *seq, &encoded, &destinations);
        }
        for (other, p) in &mut r.participants {
            if other == identity || (!destinations.is_empty() && !destinations.contains(other)) {
                continue;
            }
            if let Some((sender, seq)) = &sequenced {
                if !p.hold.admit(sender, *seq) {
                    continue;
                }
            }
            if !p.subscriber.send(kind, &encoded) {
                tracing::debug!(to = %other, "simulated server: subscriber channel not open");
            }
        }
    }

    // ---- signalling -------------------------------------------------------------------

    fn on_link(&mut self, event: FromLink) {
        match event {
            FromLink::Admit { join, reply } => {
                // pkg/rtc/room.go `ResumeParticipant` closes the new signal connection before
                // any message while the scenario is armed; pkg/service/rtcservice.go tries
                // the session three times, then answers HTTP 500 — and the third close
                // disarms the scenario. So one resume is refused, then it is over.
                let now = Instant::now();
                let refused = self
                    .rooms
                    .get_mut(&join.room)
                    .and_then(|r| r.refuse_resume.remove(&join.identity))
                    .is_some_and(|until| now < until);
                let _ = reply.send(!refused);
            }
            FromLink::Open { conn, join, out } => {
                if join.reconnect {
                    self.resume(conn, join, out);
                } else {
                    self.join(conn, join, out);
                }
            }
            FromLink::Request { conn, message } => {
                if let Some((room, identity)) = self.links.get(&conn).cloned() {
                    self.on_request(&room, &identity, *message);
                }
            }
            FromLink::Closed { conn } => {
                let Some((room, identity)) = self.links.remove(&conn) else { return };
                let Some(p) = self.participant(&room, &identity) else { return };
                if p.link.as_ref().is_some_and(|(c, _)| *c == conn) {
                    p.link = None;
                    // pkg/rtc/participant.go `HandleSignalSourceClose`: a signal connection
                    // that closes before any peer connection connected ends the participant
                    // at once (SIGNAL_CLOSE, no leave).
                    if !p.has_connected() {
                        self.remove(&room, &identity, proto::DisconnectReason::SignalClose, None);
                    }
                }
            }
        }
    }

    fn participant(&mut self, room: &str, identity: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(identity)
    }

    /// pkg/service/roommanager.go `getIceConfig`: the preference cached for `identity` in
    /// `room`, if it has not expired (expired entries are dropped).
    fn cached_ice_preference(
        &mut self,
        room: &str,
        identity: &str,
        now: Instant,
    ) -> Option<IcePreference> {
        self.ice_configs.retain(|_, (_, until)| now < *until);
        let key = (room.to_owned(), identity.to_owned());
        self.ice_configs.get(&key).map(|(preference, _)| *preference)
    }

    /// pkg/service/roommanager.go `StartSession` + pkg/rtc/room.go `Join`.
    fn join(&mut self, conn: u64, join: JoinRequest, out: mpsc::UnboundedSender<ToLink>) {
        let now = Instant::now();
        // roommanager.go: a join under an identity already present replaces it.
        if self.participant(&join.room, &join.identity).is_some() {
            self.remove(
                &join.room,
                &join.identity,
                proto::DisconnectReason::DuplicateIdentity,
                Some(proto::leave_request::Action::Disconnect),
            );
        }
        let media = SocketAddr::new(join.server_ip, self.udp_port);
        let tcp = self.ice_tcp_port.map(|port| SocketAddr::new(join.server_ip, port));
        let (mut publisher, mut subscriber) = match (
            ServerPc::new(media, tcp, now.into_std()),
            ServerPc::new(media, tcp, now.into_std()),
        ) {
            (Ok(p), Ok(s)) => (p, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("simulated server: cannot create a peer connection: {e}");
                let _ = out.send(ToLink::Close);
                return;
            }
        };
        // roommanager.go `setIceConfig`: a new session inherits the cached preference.
        let ice_preference = self.cached_ice_preference(&join.room, &join.identity, now);
        if ice_preference == Some(IcePreference::Tcp) {
            publisher.filter_udp();
            subscriber.filter_udp();
        }
        if !self.rooms.contains_key(&join.room) {
            let sid = self.sid("RM");
            let creation_time = self.wall_secs();
            self.rooms.insert(
                join.room.clone(),
                Room {
                    sid,
                    creation_time,
                    participants: BTreeMap::new(),
                    drop_on_resume: BTreeMap::new(),
                    refuse_resume: BTreeMap::new(),
                    closes_at: None,
                    data: DataCache::new(now),
                },
            );
        }
        let sid = self.sid("PA");
        let joined_at_secs = self.wall_secs();
        let participant = Participant {
            sid,
            identity: join.identity.clone(),
            name: join.name.clone(),
            metadata: join.metadata.clone(),
            state: proto::participant_info::State::Joined,
            joined_at: now,
            joined_at_secs,
            link: Some((conn, out)),
            publisher,
            subscriber,
            next_offer_id: 0,
            remove_at: None,
            pc_fails_at: None,
            speaking_until: None,
            last_reliable_seq: 0,
            lose_next_reliable: false,
            refresh_at: now + TOKEN_REFRESH_INTERVAL,
            last_signal_at: now,
            departures: Vec::new(),
            hold: JoiningHold::default(),
            ice_preference,
            tracks: Vec::new(),
            downtracks: Vec::new(),
        };
        let Some(room) = self.rooms.get_mut(&join.room) else { return };
        room.closes_at = None;
        // pkg/rtc/room.go `createJoinResponseLocked`.
        let response = proto::JoinResponse {
            room: Some(room.info(&join.room)),
            participant: Some(participant.info()),
            other_participants: room.participants.values().map(Participant::info).collect(),
            server_version: VERSION.to_owned(),
            subscriber_primary: true,
            client_configuration: Some(participant.client_configuration()),
            ping_interval: PING_INTERVAL,
            ping_timeout: PING_TIMEOUT,
            server_info: Some(server_info()),
            // pkg/service/roommanager.go `iceServersForParticipant`.
            ice_servers: super::turn::ice_servers(
                self.turn_port,
                join.server_ip,
                &participant.sid,
                &self.keys.1,
            ),
            ..Default::default()
        };
        participant.send(signal_response::Message::Join(response));
        // pkg/service/roommanager.go `rtcSessionWorker`: a first refresh at once, "for cases
        // when client token is close to expiring".
        if let Some(token) = participant.refreshed_token(&join.room, &self.keys) {
            participant.send(signal_response::Message::RefreshToken(token));
        }
        // The room tells the others (pkg/rtc/room.go `broadcastParticipantState`).
        room.broadcast(
            None,
            &signal_response::Message::Update(proto::ParticipantUpdate {
                participants: vec![participant.info()],
            }),
        );
        room.participants.insert(join.identity.clone(), participant);
        self.links.insert(conn, (join.room.clone(), join.identity.clone()));
        // pkg/rtc/room.go `Join` with auto-subscribe: the tracks already published.
        self.subscribe_to_room(&join.room, &join.identity);
        // pkg/rtc/participant.go: with subscriber_primary the server negotiates the
        // subscriber PC (carrying `_reliable` and `_lossy`) right after the join.
        self.offer_subscriber(&join.room, &join.identity, false);
    }

    /// pkg/service/rtcservice.go + roommanager.go: a resume (`reconnect=1`) finds the
    /// participant by identity; unknown ones are told to reconnect fully.
    fn resume(&mut self, conn: u64, join: JoinRequest, out: mpsc::UnboundedSender<ToLink>) {
        let now = Instant::now();
        let Some(room) = self.rooms.get_mut(&join.room) else {
            return state_mismatch(&out);
        };
        let drop_after =
            room.drop_on_resume.remove(&join.identity).is_some_and(|until| now < until);
        let Some(p) = room.participants.get_mut(&join.identity) else {
            return state_mismatch(&out);
        };
        p.close_link();
        p.link = Some((conn, out));
        // participant.go: a resume stops the disconnect timer; the ICE restart that follows
        // gives the media path a fresh start.
        p.remove_at = None;
        p.lose_next_reliable = self.planted_bug == Some(PlantedBug::LoseFirstDataAfterResume);
        p.publisher.reset_silence(now.into_std());
        p.subscriber.reset_silence(now.into_std());
        p.send(signal_response::Message::Reconnect(proto::ReconnectResponse {
            ice_servers: super::turn::ice_servers(
                self.turn_port,
                join.server_ip,
                &p.sid,
                &self.keys.1,
            ),
            client_configuration: Some(p.client_configuration()),
            server_info: Some(server_info()),
            last_message_seq: p.last_reliable_seq,
        }));
        // pkg/rtc/participant_signal.go `sendDisconnectUpdatesForReconnect` (protocol > 8):
        // the departures sent since the server last heard the participant, which a client
        // whose signalling was down may have missed.
        let missed = p
            .departures
            .iter()
            .filter(|(at, _)| *at >= p.last_signal_at)
            .map(|(_, info)| info.clone())
            .collect();
        p.send(signal_response::Message::Update(proto::ParticipantUpdate { participants: missed }));
        p.last_signal_at = now;
        // pkg/rtc/room.go `ResumeParticipant`: then everyone's info (the participant's own
        // included), the room, and an ICE restart.
        let everyone = room.participants.values().map(Participant::info).collect();
        let room_info = room.info(&join.room);
        if let Some(p) = room.participants.get(&join.identity) {
            p.send(signal_response::Message::Update(proto::ParticipantUpdate {
                participants: everyone,
            }));
            p.send(signal_response::Message::RoomUpdate(proto::RoomUpdate {
                room: Some(room_info),
            }));
        }
        self.links.insert(conn, (join.room.clone(), join.identity.clone()));
        // pkg/rtc/transportmanager.go: a resume restarts ICE on the subscriber.
        self.offer_subscriber(&join.room, &join.identity, true);
        self.relock_downtracks(&join.room, &join.identity, true);
        if drop_after {
            // pkg/rtc/room.go: the simulated scenario closes the link after answering.
            if let Some(p) = self.participant(&join.room, &join.identity) {
                p.close_link();
            }
            self.links.remove(&conn);
        }
    }

    /// Sends a subscriber offer (initial or ICE restart) and the server's candidate.
    fn offer_subscriber(&mut self, room: &str, identity: &str, ice_restart: bool) {
        let Some(p) = self.participant(room, identity) else { return };
        match p.subscriber.create_offer(ice_restart) {
            // An offer is outstanding: this change follows its answer.
            Ok(None) => {}
            Ok(Some(sdp)) => {
                p.next_offer_id += 1;
                let candidates = p.subscriber.candidate_inits(&sdp);
                p.send(signal_response::Message::Offer(proto::SessionDescription {
                    r#type: "offer".into(),
                    sdp,
                    id: p.next_offer_id,
                    ..Default::default()
                }));
                for candidate_init in candidates {
                    p.send(trickle(candidate_init, proto::SignalTarget::Subscriber));
                }
            }
            Err(e) => tracing::warn!("simulated server: cannot offer the subscriber: {e}"),
        }
    }

    fn on_request(&mut self, room: &str, identity: &str, message: signal_request::Message) {
        if let Some(p) = self.participant(room, identity) {
            p.last_signal_at = Instant::now();
        }
        match message {
            signal_request::Message::Offer(offer) => {
                let Some(p) = self.participant(room, identity) else { return };
                match p.publisher.accept_offer(&offer.sdp) {
                    Ok(sdp) => {
                        let candidates = p.publisher.candidate_inits(&sdp);
                        self.publisher_offered(room, identity, &offer.sdp);
                        let Some(p) = self.participant(room, identity) else { return };
                        p.send(signal_response::Message::Answer(proto::SessionDescription {
                            r#type: "answer".into(),
                            sdp,
                            id: offer.id,
                            ..Default::default()
                        }));
                        for candidate_init in candidates {
                            p.send(trickle(candidate_init, proto::SignalTarget::Publisher));
                        }
                    }
                    Err(e) => {
                        // pkg/rtc/participant.go: negotiation failures ask for a full
                        // reconnect.
                        tracing::warn!("simulated server: bad publisher offer: {e}");
                        self.remove(
                            room,
                            identity,
                            proto::DisconnectReason::StateMismatch,
                            Some(proto::leave_request::Action::Reconnect),
                        );
                    }
                }
            }
            signal_request::Message::Answer(answer) => {
                let Some(p) = self.participant(room, identity) else { return };
                let renegotiate = match p.subscriber.accept_answer(&answer.sdp) {
                    Ok(renegotiate) => renegotiate,
                    Err(e) => {
                        tracing::warn!("simulated server: bad subscriber answer: {e}");
                        return;
                    }
                };
                self.downtracks_bound(room, identity);
                if renegotiate {
                    self.offer_subscriber(room, identity, false);
                }
            }
            signal_request::Message::Trickle(trickle) => {
                let Some(p) = self.participant(room, identity) else { return };
                if let Err(e) = p.pc(trickle.target).add_remote_candidate(&trickle.candidate_init) {
                    tracing::debug!("simulated server: bad candidate: {e}");
                }
            }
            signal_request::Message::PingReq(ping) => {
                let now_ms = self.started.elapsed().as_millis() as i64;
                let Some(p) = self.participant(room, identity) else { return };
                p.send(signal_response::Message::PongResp(proto::Pong {
                    last_ping_timestamp: ping.timestamp,
                    timestamp: now_ms,
                }));
            }
            signal_request::Message::Ping(_) => {
                let now_ms = self.started.elapsed().as_millis() as i64;
                let Some(p) = self.participant(room, identity) else { return };
                p.send(signal_response::Message::Pong(now_ms));
            }
            signal_request::Message::Leave(_) => {
                // pkg/rtc/participant.go: a client leave closes the session.
                self.remove(room, identity, proto::DisconnectReason::ClientInitiated, None);
            }
            signal_request::Message::AddTrack(request) => self.add_track(room, identity, request),
            signal_request::Message::Mute(request) => self.mute_track(room, identity, &request),
            signal_request::Message::Simulate(simulate) => {
                if let Some(scenario) = simulate.scenario {
                    self.simulate(room, identity, scenario);
                }
            }
            other => tracing::trace!(request = ?other, "simulated server: request not modelled"),
        }
    }

    /// pkg/rtc/room.go `onSimulateScenario`.
    fn simulate(&mut self, room: &str, identity: &str, scenario: simulate_scenario::Scenario) {
        let now = Instant::now();
        use simulate_scenario::Scenario;
        match scenario {
            Scenario::SpeakerUpdate(secs) => {
                let Some(r) = self.rooms.get_mut(room) else { return };
                let Some(p) = r.participants.get_mut(identity) else { return };
                p.speaking_until = Some(now + Duration::from_secs(secs.max(0) as u64));
                let sid = p.sid.clone();
                r.broadcast(None, &speakers(sid, true));
            }
            // "drop participant without necessarily cleaning up": no leave; the
            // participant is gone, so its resume meets STATE_MISMATCH.
            Scenario::NodeFailure(_) => {
                self.remove(room, identity, proto::DisconnectReason::ServerShutdown, None)
            }
            Scenario::Migration(_) => {
                self.remove(room, identity, proto::DisconnectReason::Migration, None)
            }
            Scenario::ServerLeave(_) => self.remove(
                room,
                identity,
                proto::DisconnectReason::ServerShutdown,
                Some(proto::leave_request::Action::Disconnect),
            ),
            // participant.ICERestart with a candidate preference (UDP clears it; filters
            // already in place stay). pkg/service/roommanager.go caches the preference per
            // (room, identity) for 5 minutes and applies it to every new session of that
            // identity there. TCP: the subscriber restarts ICE without UDP at once; the
            // publisher keeps its path until the client restarts it; without an ICE/TCP
            // port there is nothing left to reach. TLS filters nothing
            // (transportmanager.go `SetPreferTCP(false)`): the subscriber restarts ICE with
            // every candidate, the session goes on, and its responses force relay.
            Scenario::SwitchCandidateProtocol(protocol) => {
                let key = (room.to_owned(), identity.to_owned());
                let preference = IcePreference::from_protocol(protocol);
                match preference {
                    Some(preference) => {
                        self.ice_configs.insert(key, (preference, now + ICE_CONFIG_TTL));
                    }
                    None => {
                        self.ice_configs.remove(&key);
                    }
                }
                let Some(p) = self.participant(room, identity) else { return };
                p.ice_preference = preference;
                let Some(preference) = preference else { return };
                if preference == IcePreference::Tcp {
                    p.publisher.prefer_tcp();
                    p.subscriber.filter_udp();
                }
                self.offer_subscriber(room, identity, true);
                self.relock_downtracks(room, identity, false);
            }
            Scenario::SubscriberBandwidth(_) => {
                tracing::debug!("simulated server: subscriber bandwidth has no data-only effect")
            }
            Scenario::DisconnectSignalOnResume(_) => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.drop_on_resume.insert(identity.to_owned(), now + SIMULATE_DISCONNECT_WINDOW);
                }
            }
            Scenario::DisconnectSignalOnResumeNoMessages(_) => {
                if let Some(r) = self.rooms.get_mut(room) {
                    r.refuse_resume.insert(identity.to_owned(), now + SIMULATE_DISCONNECT_WINDOW);
                }
            }
            other => tracing::debug!(scenario = ?other, "simulated server: scenario not handled"),
        }
    }

    /// pkg/rtc/room.go `RemoveParticipant`: optionally tells the participant why
    /// (`leave`), closes its link and transports, and tells the others it left.
    fn remove(
        &mut self,
        room: &str,
        identity: &str,
        reason: proto::DisconnectReason,
        leave: Option<proto::leave_request::Action>,
    ) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(mut p) = r.participants.remove(identity) else { return };
        tracing::debug!(room, identity, ?reason, "simulated server: removing a participant");
        if let Some(action) = leave {
            p.send(leave_message(action, reason));
        }
        if let Some((conn, _)) = &p.link {
            self.links.remove(conn);
        }
        p.close_link();
        p.publisher.close_quietly();
        p.subscriber.close_quietly();
        p.state = proto::participant_info::State::Disconnected;
        // pkg/rtc/participant.go `Close`: its tracks go with the session.
        let unpublished = std::mem::take(&mut p.tracks);
        let mut info = p.info();
        info.disconnect_reason = reason as i32;
        for other in r.participants.values_mut() {
            if other.departures.len() == DEPARTURES_KEPT {
                other.departures.remove(0);
            }
            other.departures.push((now, info.clone()));
        }
        r.broadcast(
            None,
            &signal_response::Message::Update(proto::ParticipantUpdate {
                participants: vec![info],
            }),
        );
        if r.participants.is_empty() {
            r.closes_at = Some(now + DEPARTURE_TIMEOUT);
        }
        let published: Vec<Publication> = unpublished.into_iter().filter(|t| t.live).collect();
        self.unpublish(room, &published);
    }

    // ---- timers -----------------------------------------------------------------------

    fn next_timer(&self) -> Option<Instant> {
        self.rooms
            .values()
            .flat_map(|r| {
                let participants = r.participants.values();
                r.closes_at.into_iter().chain(
                    participants.flat_map(|p| p.deadlines().into_iter().filter_map(|(_, at)| at)),
                )
            })
            .min()
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut removals = Vec::new();
        let mut failures = Vec::new();
        let mut keyframe_requests = Vec::new();
        let mut closed_rooms = Vec::new();
        for (name, r) in &mut self.rooms {
            if r.closes_at.is_some_and(|at| at <= now) {
                closed_rooms.push(name.clone());
                continue;
            }
            let mut silent = Vec::new();
            for (identity, p) in &mut r.participants {
                p.publisher.tick(std_now);
                p.subscriber.tick(std_now);
                let due =
                    p.deadlines().into_iter().filter(|(_, at)| at.is_some_and(|at| at <= now));
                for (deadline, _) in due {
                    match deadline {
                        Deadline::Removal => {
                            if let Some((_, reason)) = p.remove_at {
                                removals.push((name.clone(), identity.clone(), reason, None));
                            }
                            break;
                        }
                        Deadline::Join => {
                            removals.push((
                                name.clone(),
                                identity.clone(),
                                proto::DisconnectReason::JoinFailure,
                                Some(proto::leave_request::Action::Disconnect),
                            ));
                            break;
                        }
                        Deadline::PcFailed | Deadline::MediaSilent => {
                            p.pc_fails_at = None;
                            let failed = (name.clone(), identity.clone());
                            if !failures.contains(&failed) {
                                failures.push(failed);
                            }
                        }
                        Deadline::SpeakingEnds => {
                            p.speaking_until = None;
                            silent.push(p.sid.clone());
                        }
                        Deadline::TokenRefresh => {
                            p.refresh_at = now + TOKEN_REFRESH_INTERVAL;
                            if let Some(token) = p.refreshed_token(name, &self.keys) {
                                p.send(signal_response::Message::RefreshToken(token));
                            }
                        }
                        Deadline::KeyframeRequest => {
                            keyframe_requests.push((name.clone(), identity.clone()))
                        }
                    }
                }
            }
            for sid in silent {
                r.broadcast(None, &speakers(sid, false));
            }
        }
        for name in closed_rooms {
            self.rooms.remove(&name);
        }
        for (room, identity) in keyframe_requests {
            self.request_keyframes(&room, &identity);
        }
        for (room, identity, reason, leave) in removals {
            self.remove(&room, &identity, reason, leave);
        }
        for (room, identity) in failures {
            // pkg/rtc/participant.go `onAnyTransportFailed`: the server asks the client to
            // resume, closes the signal connection, and gives it a while to come back
            // (`setupDisconnectTimer`).
            let Some(p) = self.participant(&room, &identity) else { continue };
            tracing::debug!(%room, %identity, "simulated server: peer connection failed");
            p.send(leave_message(
                proto::leave_request::Action::Resume,
                proto::DisconnectReason::ConnectionTimeout,
            ));
            p.close_link();
            p.remove_at = Some((now + RESUME_WINDOW, proto::DisconnectReason::ConnectionTimeout));
        }
    }

    // ---- controls ---------------------------------------------------------------------

    fn on_control(&mut self, control: Control) {
        match control {
            Control::RemoveParticipant { room, identity, reply } => {
                let found = self.participant(&room, &identity).is_some();
                if found {
                    // pkg/service/roomservice.go `RemoveParticipant`.
                    self.remove(
                        &room,
                        &identity,
                        proto::DisconnectReason::ParticipantRemoved,
                        Some(proto::leave_request::Action::Disconnect),
                    );
                }
                let _ = reply.send(found);
            }
            Control::DeleteRoom { room, reply } => {
                let identities: Vec<String> = self
                    .rooms
                    .get(&room)
                    .map(|r| r.participants.keys().cloned().collect())
                    .unwrap_or_default();
                let found = self.rooms.contains_key(&room);
                // pkg/service/roomservice.go `DeleteRoom`.
                for identity in identities {
                    self.remove(
                        &room,
                        &identity,
                        proto::DisconnectReason::RoomDeleted,
                        Some(proto::leave_request::Action::Disconnect),
                    );
                }
                self.rooms.remove(&room);
                let _ = reply.send(found);
            }
            Control::ListParticipants { room, reply } => {
                let list = self
                    .rooms
                    .get(&room)
                    .map(|r| r.participants.values().map(Participant::info).collect())
                    .unwrap_or_default();
                let _ = reply.send(list);
            }
        }
    }
}

/// pkg/service/rtcservice.go: a resume for a participant the server does not have.
fn state_mismatch(out: &mpsc::UnboundedSender<ToLink>) {
    let _ = out.send(ToLink::Send(Box::new(leave_message(
        proto::leave_request::Action::Reconnect,
        proto::DisconnectReason::StateMismatch,
    ))));
    let _ = out.send(ToLink::Close);
}

fn leave_message(
    action: proto::leave_request::Action,
    reason: proto::DisconnectReason,
) -> signal_response::Message {
    // pkg/rtc/participant_signal.go `sendLeaveRequest`: clients of protocol ≥ 13 get the
    // action and reason (no `can_reconnect`; regions only with several nodes).
    signal_response::Message::Leave(proto::LeaveRequest {
        reason: reason as i32,
        action: action as i32,
        ..Default::default()
    })
}

fn trickle(candidate_init: String, target: proto::SignalTarget) -> signal_response::Message {
    signal_response::Message::Trickle(proto::TrickleRequest {
        candidate_init,
        target: target as i32,
        r#final: false,
    })
}

fn speakers(sid: String, active: bool) -> signal_response::Message {
    signal_response::Message::SpeakersChanged(proto::SpeakersChanged {
        speakers: vec![proto::SpeakerInfo { sid, level: if active { 0.9 } else { 0.0 }, active }],
    })
}

fn server_info() -> proto::ServerInfo {
    proto::ServerInfo {
        edition: proto::server_info::Edition::Standard as i32,
        version: VERSION.to_owned(),
        protocol: 16,
        node_id: "ND_faultline_sim".to_owned(),
        ..Default::default()
    }
}
