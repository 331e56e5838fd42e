//! The core's packets: it drives every peer connection (str0m) until nothing more happens,
//! sends what they produce over UDP or ICE/TCP, routes each arriving packet to the peer
//! connection it belongs to, and forwards data-channel messages between participants.

use std::net::SocketAddr;

use livekit_protocol::{self as proto, signal_response};
use prost::Message as _;
use str0m::net::{Protocol, Transmit};
use tokio::time::Instant;

use super::super::ice_tcp::FromIceTcp;
use super::super::media::{Channel, MediaEvent};
use super::Core;

impl Core {
    /// Drains every peer connection, sends what they produced and handles their events,
    /// until nothing more happens. Returns the earliest str0m timeout.
    pub(super) async fn drive_media(&mut self) -> Option<Instant> {
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

    pub(super) async fn transmit(&self, transmit: Transmit) {
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

    pub(super) fn on_ice_tcp(&mut self, event: FromIceTcp) {
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
    pub(super) fn on_packet(&mut self, proto: Protocol, source: SocketAddr, data: &[u8]) {
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

    pub(super) fn on_media(
        &mut self,
        room: &str,
        identity: &str,
        subscriber: bool,
        event: MediaEvent,
    ) {
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
    pub(super) fn forward_data(
        &mut self,
        room: &str,
        identity: &str,
        kind: Channel,
        payload: &[u8],
    ) {
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
}
