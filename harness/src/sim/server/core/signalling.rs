//! The core's signalling: admitting a link, a join (a new session) and a resume (the same
//! session on a new link), the server's offers, the client's requests, the simulate
//! scenarios, and a participant's removal with the leave it is told.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use livekit_protocol::{self as proto, signal_request, signal_response, simulate_scenario};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::data_cache::{DataCache, JoiningHold};
use super::super::link::{FromLink, JoinRequest, ToLink};
use super::super::media::ServerPc;
use super::super::PlantedBug;
use super::participant::{IcePreference, Participant, Room, DEPARTURES_KEPT};
use super::tracks::Publication;
use super::{
    server_info, speakers, trickle, Core, DEPARTURE_TIMEOUT, ICE_CONFIG_TTL, PING_INTERVAL,
    PING_TIMEOUT, SIMULATE_DISCONNECT_WINDOW, TOKEN_REFRESH_INTERVAL, VERSION,
};

impl Core {
    pub(super) fn on_link(&mut self, event: FromLink) {
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

    pub(super) fn participant(&mut self, room: &str, identity: &str) -> Option<&mut Participant> {
        self.rooms.get_mut(room)?.participants.get_mut(identity)
    }

    /// pkg/service/roommanager.go `getIceConfig`: the preference cached for `identity` in
    /// `room`, if it has not expired (expired entries are dropped).
    pub(super) fn cached_ice_preference(
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
    pub(super) fn join(
        &mut self,
        conn: u64,
        join: JoinRequest,
        out: mpsc::UnboundedSender<ToLink>,
    ) {
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
            ice_servers: super::super::turn::ice_servers(
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
    pub(super) fn resume(
        &mut self,
        conn: u64,
        join: JoinRequest,
        out: mpsc::UnboundedSender<ToLink>,
    ) {
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
            ice_servers: super::super::turn::ice_servers(
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
    pub(super) fn offer_subscriber(&mut self, room: &str, identity: &str, ice_restart: bool) {
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

    pub(super) fn on_request(
        &mut self,
        room: &str,
        identity: &str,
        message: signal_request::Message,
    ) {
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
    pub(super) fn simulate(
        &mut self,
        room: &str,
        identity: &str,
        scenario: simulate_scenario::Scenario,
    ) {
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
    pub(super) fn remove(
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
}

/// pkg/service/rtcservice.go: a resume for a participant the server does not have.
fn state_mismatch(out: &mpsc::UnboundedSender<ToLink>) {
    let _ = out.send(ToLink::Send(Box::new(leave_message(
        proto::leave_request::Action::Reconnect,
        proto::DisconnectReason::StateMismatch,
    ))));
    let _ = out.send(ToLink::Close);
}

pub(super) fn leave_message(
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
