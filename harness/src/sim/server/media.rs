//! One server-side peer connection of a simulated participant: a str0m `Rtc` that shares
//! the server's single UDP port (and, when it has one, its ICE/TCP port) with every other
//! peer connection (as livekit-server's UDP and TCP muxes do), plus the negotiation
//! bookkeeping LiveKit's v0 protocol needs.
//!
//! The server runs full ICE, like livekit-server (pion): str0m makes the offerer the
//! controlling agent, so the server controls on the subscriber PC (it offers) and is
//! controlled on the publisher PC (the client offers) — the real server's roles.
//!
//! Media: the publisher PC reports every frame the client sends ([`MediaEvent::Frame`]) and
//! asks the client for key frames ([`ServerPc::request_keyframe`]); the subscriber PC keeps a
//! send-only line per subscribed track ([`ServerPc::add_line`], [`ServerPc::end_line`]),
//! negotiated by the server's next offer, and writes frames on it ([`ServerPc::write`]).
//! str0m applies an offer's changes only with its answer and forgets them when a newer offer
//! replaces it (a resume's ICE restart), so the wanted lines are kept here and every offer
//! (re)states those not yet negotiated; one offer is outstanding at a time and a change made
//! meanwhile is offered once its answer came (pion's negotiation queue in livekit-server's
//! pkg/rtc/transport.go `Negotiate`).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// LiveKit's two data channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Channel {
    /// `_reliable`: ordered, retransmitted.
    Reliable,
    /// `_lossy`: unordered, no retransmissions.
    Lossy,
}

impl Channel {
    fn label(self) -> &'static str {
        match self {
            Channel::Reliable => "_reliable",
            Channel::Lossy => "_lossy",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        [Channel::Reliable, Channel::Lossy].into_iter().find(|c| c.label() == label)
    }

    fn config(self) -> ChannelConfig {
        let (ordered, reliability) = match self {
            Channel::Reliable => (true, Reliability::Reliable),
            Channel::Lossy => (false, Reliability::MaxRetransmits { retransmits: 0 }),
        };
        ChannelConfig { label: self.label().to_owned(), ordered, reliability, ..Default::default() }
    }
}

/// What a peer connection reports to the server core.
#[derive(Debug)]
pub(super) enum MediaEvent {
    /// DTLS is up: the transport is connected.
    Connected,
    /// Connected with both of LiveKit's channels open (pkg/rtc/transport.go
    /// `isFullyEstablished`); reported once.
    Established,
    /// A message arrived on one of LiveKit's channels.
    Data(Channel, Vec<u8>),
    /// A media frame arrived (publisher PC).
    Frame(Box<MediaData>),
    /// The transport ended (closed by the remote or failed beyond repair).
    Closed,
}

/// The client's `sdp` without its active TCP candidates, which the server ignores (pion:
/// an active candidate connects to us, and is learnt from its first check).
fn without_active_tcp(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|line| !(line.starts_with("a=candidate:") && line.ends_with("tcptype active")))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A server-side peer connection.
pub(super) struct ServerPc {
    rtc: Rtc,
    local: Candidate,
    /// The passive ICE/TCP candidate, when the server has an ICE/TCP port.
    tcp: Option<Candidate>,
    channels: Vec<(ChannelId, Channel)>,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    /// The channels str0m reported open (the offer lists them in `channels` earlier).
    opened: Vec<Channel>,
    /// [`MediaEvent::Established`] was reported.
    established: bool,
    closed: bool,
    /// When the client was last heard on this connection (or ICE last restarted).
    last_heard: Option<Instant>,
    /// The ICE candidate filter excludes UDP (`switch_candidate_protocol`): this
    /// connection neither sends nor accepts UDP traffic any more.
    udp_filtered: bool,
    /// The filter excludes UDP from the client's next offer on (see [`Self::prefer_tcp`]).
    udp_filter_pending: bool,
    /// Subscriber: the send-only lines wanted, one per subscribed track.
    lines: Vec<Line>,
    /// Subscriber: negotiated lines to turn inactive in the next offer.
    ending: Vec<Mid>,
    /// Subscriber: the lines the outstanding offer adds, by track sid.
    offered_lines: Vec<(String, Mid)>,
    /// Subscriber: a change waits for the outstanding offer's answer.
    renegotiate: bool,
}

/// A send-only line of the subscriber PC, carrying one publisher's track.
#[derive(Debug, Clone)]
struct Line {
    /// `TR_…`: the msid's track id.
    track_sid: String,
    /// `<PA_sid>|<TR_sid>`: the msid's stream id, as livekit-server names it.
    stream: String,
    kind: MediaKind,
    /// Its mid, once an answer accepted it.
    mid: Option<Mid>,
}

impl ServerPc {
    /// A peer connection whose local candidates are the server's UDP port `local` and, if
    /// given, its ICE/TCP port `tcp` (passive: clients connect to it).
    pub(super) fn new(
        local: SocketAddr,
        tcp: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Self, String> {
        let mut rtc = Rtc::builder().build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate.clone())
            .ok_or_else(|| format!("str0m refused {local} as a host candidate"))?;
        let tcp = match tcp {
            Some(addr) => {
                let passive = Candidate::builder()
                    .tcp()
                    .host(addr)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(|e| e.to_string())?;
                rtc.add_local_candidate(passive.clone())
                    .ok_or_else(|| format!("str0m refused {addr} as a passive TCP candidate"))?;
                Some(passive)
            }
            None => None,
        };
        Ok(Self {
            rtc,
            local: candidate,
            tcp,
            channels: Vec::new(),
            pending: None,
            connected: false,
            opened: Vec::new(),
            established: false,
            closed: false,
            last_heard: None,
            udp_filtered: false,
            udp_filter_pending: false,
            lines: Vec::new(),
            ending: Vec::new(),
            offered_lines: Vec::new(),
            renegotiate: false,
        })
    }

    /// Whether DTLS has come up at least once.
    pub(super) fn has_connected(&self) -> bool {
        self.connected
    }

    /// When this connection last heard from the client, once it has connected.
    pub(super) fn last_heard(&self) -> Option<Instant> {
        self.last_heard.filter(|_| self.connected && !self.closed)
    }

    /// Restarts the silence clock (an ICE restart gives the path a fresh start).
    pub(super) fn reset_silence(&mut self, now: Instant) {
        if self.last_heard.is_some() {
            self.last_heard = Some(now);
        }
    }

    /// Stops using UDP (the candidate filter of `switch_candidate_protocol`).
    pub(super) fn filter_udp(&mut self) {
        self.udp_filtered = true;
    }

    /// Publisher: stops using UDP from the client's next offer (its ICE restart) on, and
    /// keeps the path it has until then. pkg/rtc/transportmanager.go `ICERestart` restarts
    /// only the subscriber; the publisher is told to prefer TCP (`SetPreferTCP`), which
    /// takes effect when the client next restarts its ICE.
    pub(super) fn prefer_tcp(&mut self) {
        self.udp_filter_pending = true;
    }

    /// Subscriber: an offer creating `_reliable` and `_lossy` (first time), adding the
    /// wanted lines not negotiated yet, turning ended ones inactive, and/or restarting ICE
    /// (`ice_restart`). `Ok(None)` while an offer is outstanding: the change is offered once
    /// its answer comes ([`Self::accept_answer`]); an ICE restart replaces the outstanding
    /// offer (its answer was lost with the old signalling).
    pub(super) fn create_offer(&mut self, ice_restart: bool) -> Result<Option<String>, String> {
        if self.pending.is_some() && !ice_restart {
            self.renegotiate = true;
            return Ok(None);
        }
        let unoffered = self.lines.iter().any(|l| l.mid.is_none()) || !self.ending.is_empty();
        if !ice_restart && !self.channels.is_empty() && !unoffered {
            return Ok(None);
        }
        let mut api = self.rtc.sdp_api();
        if self.channels.is_empty() {
            for channel in [Channel::Reliable, Channel::Lossy] {
                let id = api.add_channel_with_config(channel.config());
                self.channels.push((id, channel));
            }
        }
        if ice_restart {
            api.ice_restart(true);
        }
        // Inactive now in the session: the offer says so (str0m keeps directions at once).
        for mid in self.ending.drain(..) {
            api.set_direction(mid, Direction::Inactive);
        }
        let mut offered_lines = Vec::new();
        for line in self.lines.iter().filter(|l| l.mid.is_none()) {
            let mid = api.add_media(
                line.kind,
                Direction::SendOnly,
                Some(line.stream.clone()),
                Some(line.track_sid.clone()),
                None,
            );
            offered_lines.push((line.track_sid.clone(), mid));
        }
        let (offer, pending) =
            api.apply().ok_or_else(|| "nothing to negotiate on the subscriber".to_owned())?;
        self.pending = Some(pending);
        self.offered_lines = offered_lines;
        self.renegotiate = false;
        Ok(Some(self.filtered_sdp(offer.to_sdp_string())))
    }

    /// Subscriber: applies the client's answer. `Ok(true)` when a change waits to be offered.
    pub(super) fn accept_answer(&mut self, sdp: &str) -> Result<bool, String> {
        let answer =
            SdpAnswer::from_sdp_string(&without_active_tcp(sdp)).map_err(|e| e.to_string())?;
        let pending =
            self.pending.take().ok_or_else(|| "an answer without an offer of ours".to_owned())?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| e.to_string())?;
        for (track_sid, mid) in self.offered_lines.drain(..) {
            match self.lines.iter_mut().find(|l| l.track_sid == track_sid && l.mid.is_none()) {
                Some(line) => line.mid = Some(mid),
                // Ended while the offer was out: inactive in the next one.
                None => self.ending.push(mid),
            }
        }
        let unoffered = self.lines.iter().any(|l| l.mid.is_none()) || !self.ending.is_empty();
        Ok(std::mem::take(&mut self.renegotiate) || unoffered)
    }

    /// Subscriber: wants a send-only line for track `track_sid` of participant
    /// `participant_sid` (negotiated by the next offer).
    pub(super) fn add_line(&mut self, participant_sid: &str, track_sid: &str, kind: MediaKind) {
        if self.lines.iter().any(|l| l.track_sid == track_sid) {
            return;
        }
        self.lines.push(Line {
            track_sid: track_sid.to_owned(),
            stream: format!("{participant_sid}|{track_sid}"),
            kind,
            mid: None,
        });
    }

    /// Subscriber: the line of `track_sid` carries nothing more; it turns inactive in the next
    /// offer (LiveKit may reuse it; this double adds a new line for the next track instead).
    /// Whether there was such a line.
    pub(super) fn end_line(&mut self, track_sid: &str) -> bool {
        let Some(index) = self.lines.iter().position(|l| l.track_sid == track_sid) else {
            return false;
        };
        if let Some(mid) = self.lines.remove(index).mid {
            self.ending.push(mid);
        }
        true
    }

    /// Subscriber: whether a frame for `track_sid` would be sent now (its line negotiated,
    /// the transport connected).
    pub(super) fn writable(&self, track_sid: &str) -> bool {
        self.connected
            && !self.closed
            && self.lines.iter().any(|l| l.track_sid == track_sid && l.mid.is_some())
    }

    /// Subscriber: writes a frame received from a publisher on the line of `track_sid`.
    /// `false` if nothing was sent: no negotiated line, no connected transport, or no
    /// matching payload type.
    pub(super) fn write(&mut self, track_sid: &str, frame: &MediaData) -> bool {
        if !self.connected || self.closed {
            return false;
        }
        let Some(mid) = self.lines.iter().find(|l| l.track_sid == track_sid).and_then(|l| l.mid)
        else {
            return false;
        };
        let Some(writer) = self.rtc.writer(mid) else { return false };
        let Some(pt) = writer.match_params(frame.params) else { return false };
        match writer.write(pt, frame.network_time, frame.time, frame.data.clone()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "simulated server: writing a frame failed");
                false
            }
        }
    }

    /// Publisher: asks the client for a key frame on line `mid` (an RTCP PLI).
    pub(super) fn request_keyframe(&mut self, mid: Mid) {
        if !self.connected || self.closed {
            return;
        }
        if let Some(mut writer) = self.rtc.writer(mid) {
            if let Err(e) = writer.request_keyframe(None, KeyframeRequestKind::Pli) {
                tracing::debug!(error = %e, "simulated server: no PLI possible");
            }
        }
    }

    /// Publisher: answers the client's offer (first, renegotiation or ICE restart).
    pub(super) fn accept_offer(&mut self, sdp: &str) -> Result<String, String> {
        let offer =
            SdpOffer::from_sdp_string(&without_active_tcp(sdp)).map_err(|e| e.to_string())?;
        self.udp_filtered |= self.udp_filter_pending;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
        Ok(self.filtered_sdp(answer.to_sdp_string()))
    }

    /// The server's candidates for trickle messages, as RTCIceCandidateInit JSON for the
    /// data m-line of `sdp`: UDP unless it is filtered out, then ICE/TCP if there is one.
    pub(super) fn candidate_inits(&self, sdp: &str) -> Vec<String> {
        let mid = sdp.lines().find_map(|l| l.trim().strip_prefix("a=mid:")).unwrap_or("0");
        let ufrag = sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"));
        let udp = (!self.udp_filtered).then_some(&self.local);
        udp.into_iter()
            .chain(&self.tcp)
            .map(|candidate| {
                let mut init = serde_json::json!({
                    "candidate": candidate.to_sdp_string(),
                    "sdpMid": mid,
                    "sdpMLineIndex": 0,
                });
                if let Some(ufrag) = ufrag {
                    init["usernameFragment"] = ufrag.into();
                }
                init.to_string()
            })
            .collect()
    }

    /// A candidate the client trickled (RTCIceCandidateInit JSON); non-UDP ones are skipped
    /// (a client's TCP candidate is active: it connects, and is learnt from its first
    /// check, as pion ignores remote active candidates).
    pub(super) fn add_remote_candidate(&mut self, json: &str) -> Result<(), String> {
        let init: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let line = init["candidate"].as_str().unwrap_or_default().trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Ok(());
        }
        let candidate = Candidate::from_sdp_string(line).map_err(|e| e.to_string())?;
        if candidate.proto() == Protocol::Udp && !self.udp_filtered {
            self.rtc.add_remote_candidate(candidate);
        }
        Ok(())
    }

    /// Where a packet of `proto` arrives: the UDP port or the ICE/TCP port; `None` for a
    /// protocol this connection does not take (UDP while filtered out, TCP without a port).
    fn local_addr(&self, proto: Protocol) -> Option<SocketAddr> {
        match proto {
            Protocol::Udp if !self.udp_filtered => Some(self.local.addr()),
            Protocol::Tcp => self.tcp.as_ref().map(Candidate::addr),
            _ => None,
        }
    }

    /// Whether this peer connection takes a packet of `proto` from `source` (ICE ufrag or
    /// address).
    pub(super) fn accepts(
        &self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(local) = self.local_addr(proto).filter(|_| !self.closed) else { return false };
        match Receive::new(proto, source, local, data) {
            Ok(receive) => self.rtc.accepts(&Input::Receive(now, receive)),
            Err(_) => false,
        }
    }

    /// Feeds a packet that [`Self::accepts`].
    pub(super) fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) {
        let Some(local) = self.local_addr(proto) else { return };
        self.last_heard = Some(now);
        if let Ok(receive) = Receive::new(proto, source, local, data) {
            if let Err(e) = self.rtc.handle_input(Input::Receive(now, receive)) {
                tracing::debug!(error = %e, "simulated server: str0m rejected a packet");
            }
        }
    }

    /// `sdp` without UDP candidates while UDP is filtered out.
    fn filtered_sdp(&self, sdp: String) -> String {
        if !self.udp_filtered {
            return sdp;
        }
        let kept: Vec<&str> = sdp
            .split("\r\n")
            .filter(|line| !(line.starts_with("a=candidate:") && line.contains(" udp ")))
            .collect();
        kept.join("\r\n")
    }

    /// Sends a message on the channel of `kind`, if it is open.
    pub(super) fn send(&mut self, kind: Channel, payload: &[u8]) -> bool {
        let Some(id) = self.channels.iter().find(|(_, c)| *c == kind).map(|(id, _)| *id) else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut channel) => channel.write(true, payload).unwrap_or(false),
            None => false,
        }
    }

    /// Lets str0m's clock move to `now`.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "simulated server: str0m timeout handling failed");
        }
    }

    /// Drains str0m: datagrams go to `transmits`, events to `events`. Returns str0m's next
    /// timeout (`None` once closed).
    pub(super) fn poll(
        &mut self,
        transmits: &mut Vec<Transmit>,
        events: &mut Vec<MediaEvent>,
    ) -> Option<Instant> {
        while !self.closed {
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    tracing::debug!(error = %e, "simulated server: peer connection failed");
                    self.close_quietly();
                    events.push(MediaEvent::Closed);
                    return None;
                }
            };
            match output {
                Output::Timeout(at) => return Some(at),
                Output::Transmit(transmit) if self.local_addr(transmit.proto).is_some() => {
                    transmits.push(transmit)
                }
                Output::Transmit(_) => {}
                Output::Event(event) => self.on_event(event, events),
            }
        }
        None
    }

    fn on_event(&mut self, event: Event, events: &mut Vec<MediaEvent>) {
        match event {
            Event::Connected => {
                self.connected = true;
                events.push(MediaEvent::Connected);
                self.check_established(events);
            }
            Event::IceConnectionStateChange(state) => {
                tracing::trace!(?state, "simulated server: ICE state");
            }
            Event::ChannelOpen(id, label) => {
                if let Some(kind) = Channel::from_label(&label) {
                    self.channels.retain(|(_, c)| *c != kind);
                    self.channels.push((id, kind));
                    if !self.opened.contains(&kind) {
                        self.opened.push(kind);
                    }
                }
                self.check_established(events);
            }
            Event::ChannelData(data) => {
                if let Some((_, kind)) = self.channels.iter().find(|(id, _)| *id == data.id) {
                    events.push(MediaEvent::Data(*kind, data.data));
                }
            }
            Event::MediaData(data) => events.push(MediaEvent::Frame(Box::new(data))),
            Event::Closed => {
                self.close_quietly();
                events.push(MediaEvent::Closed);
            }
            _ => {}
        }
    }

    /// Reports [`MediaEvent::Established`] the first time the transport is connected with
    /// both channels open.
    fn check_established(&mut self, events: &mut Vec<MediaEvent>) {
        if !self.established && self.connected && self.opened.len() == 2 {
            self.established = true;
            events.push(MediaEvent::Established);
        }
    }

    /// Stops the transport without telling the client (a crash, or the end of a session).
    pub(super) fn close_quietly(&mut self) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect();
        }
    }
}
