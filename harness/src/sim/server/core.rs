//! The simulated server's state and its one task: rooms, participants, their signalling
//! links and peer connections, and every timer. Links and tests talk to it over channels;
//! everything it does happens in this task, in a deterministic order (ordered maps, a
//! `biased` select, counters for sids).
//!
//! Each behaviour names the file of livekit/livekit v1.13.5 it follows. This file holds the
//! task's loop, its controls and the protocol constants; the jobs it dispatches to are split
//! by kind: `participant` (the records), `signalling`, `transport` (packets and peer
//! connections), `tracks` (publication, subscription, forwarding) and `timers`.

mod participant;
mod signalling;
mod timers;
mod tracks;
mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol::{self as proto, signal_response};
use str0m::net::Protocol;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ice_tcp::FromIceTcp;
use super::link::FromLink;
use super::{Control, PlantedBug, ServerConfig};
use participant::{IcePreference, Participant, Room};

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
