//! A simulated LiveKit server for turmoil hosts — a **test double for the simulation lane
//! only**, never a stand-in for livekit-server in the real lane.
//!
//! It speaks livekit-server v1.13.5's v0 protocol as far as a client publishing Opus and VP8
//! can observe it: `/rtc` over WebSocket with binary protobuf `SignalRequest`/`SignalResponse`, access
//! tokens checked as livekit-server checks them ([`crate::token::verify_at`]), and real
//! WebRTC on one UDP port (str0m, full ICE, DTLS, SCTP data channels, ICE restarts) and,
//! when [`ServerConfig::ice_tcp_port`] is set, ICE over TCP on another (`ice_tcp`), and when
//! [`ServerConfig::turn_port`] is set, a TURN relay over UDP (`turn`). Join,
//! resume, duplicate identities, the join and resume deadlines, data forwarding, media tracks
//! (publication, auto-subscription, forwarding with key-frame gating, mute, unpublishing
//! with the session: `core/tracks.rs`), every
//! `SimulateScenario`, and the RoomService-like controls of [`ServerControl`] follow the real
//! server; each behaviour names the file of livekit/livekit it was taken from (see `core`),
//! among them the departures sent after a resume, the token refresh at the start of a
//! session and every 5 minutes, tokens that expire in simulated time with livekit-server's
//! minute of leeway, "has connected" meaning either peer connection, reliable data held for a
//! participant still being set up and replayed once its data channels open (`data_cache`),
//! and a join or resume answered before the WebSocket upgrade, so that a session producing no
//! first message is an HTTP 500 (`link`). Not modelled: simulcast, codecs other than Opus
//! and VP8, RTX/NACK and congestion control, subscription permissions and selective
//! subscription, JSON signalling, `/rtc/v1`, TURN over TLS, multi-node routing.
//!
//! No known divergence remains in what it models; `faultline conform` compares the two lanes
//! scenario by scenario, and a difference it finds is fixed here or listed here with its
//! source.

mod core;
mod data_cache;
mod ice_tcp;
mod link;
mod media;
mod turn;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use livekit_protocol as proto;
use tokio::sync::{mpsc, oneshot};

/// The server's keys and ports.
#[derive(Clone)]
pub struct ServerConfig {
    /// API key tokens must be signed for.
    pub api_key: String,
    /// The secret that goes with it.
    pub api_secret: String,
    /// HTTP/WebSocket port.
    pub http_port: u16,
    /// The single UDP port all peer connections share.
    pub udp_port: u16,
    /// The ICE/TCP port all peer connections share (livekit-server's `rtc.tcp_port`), or
    /// `None` for none, as faultline's loopback servers have (the default).
    pub ice_tcp_port: Option<u16>,
    /// The TURN/UDP port of the embedded relay (livekit-server's `turn.udp_port`, with
    /// `turn.enabled`), or `None` for no relay, as faultline's loopback servers have (the
    /// default). With a port, the join and reconnect responses list the relay as each
    /// participant's ICE server; relayed addresses are on the server host's address
    /// ([`crate::sim::SERVER_HOST`]), and the relay reaches that address only, as the real
    /// lane's `turn.allow_restricted_peer_cidrs` lets it.
    pub turn_port: Option<u16>,
    /// A deliberate misbehaviour, for showing that exploration finds bugs (`None`: the
    /// server behaves as livekit-server).
    pub planted_bug: Option<PlantedBug>,
}

/// Deliberate server bugs that break a promise the client makes to its user, so a test can
/// show that the explorer finds and shrinks a schedule that exposes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantedBug {
    /// After a participant resumes, the server counts the first reliable data packet it
    /// receives from it as forwarded but silently drops it. Its receivers never get it,
    /// breaking DESIGN.md invariant 5 (reliable data across an outage that ends in
    /// `Reconnected` arrives exactly once, in order) — only after a resume.
    LoseFirstDataAfterResume,
    /// After a participant resumes, its video downtracks wait for a key frame (as
    /// livekit-server's do after the ICE restart) but never ask the publisher for one: the
    /// PLI that livekit-server's `keyFrameRequester` sends is skipped. faultline-sdk's
    /// synthetic video, like a real encoder, sends a key frame only when asked, so the
    /// resumed subscriber's video never comes back, breaking DESIGN.md invariant 6 (media
    /// comes back) — only after a resume, only for video, only where both publish. A server
    /// bug rather than an SDK one (say, skipping the republish after a full reconnect) so
    /// that the explorer's own fault injection needs no hidden switch in faultline-sdk, and
    /// because a dead video after a resume is what the field reports (server-sdk-go#229:
    /// "reconnected, but not really").
    NoKeyframeRequestAfterResume,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("api_key", &self.api_key)
            .field("http_port", &self.http_port)
            .field("udp_port", &self.udp_port)
            .field("ice_tcp_port", &self.ice_tcp_port)
            .field("turn_port", &self.turn_port)
            .field("planted_bug", &self.planted_bug)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    /// livekit-server's `--dev` keys and ports.
    fn default() -> Self {
        Self {
            api_key: "devkey".to_owned(),
            api_secret: "secret".to_owned(),
            http_port: 7880,
            udp_port: 7882,
            ice_tcp_port: None,
            turn_port: None,
            planted_bug: None,
        }
    }
}

/// Why the server could not start or a control failed.
#[derive(Debug, thiserror::Error)]
pub enum SimServerError {
    /// A socket could not be bound inside the simulation.
    #[error("the simulated LiveKit server cannot bind {what} port {port}: {source}; is another server on this host?")]
    Bind {
        /// "TCP" or "UDP".
        what: &'static str,
        /// The port.
        port: u16,
        /// turmoil's error.
        source: std::io::Error,
    },
    /// A control was used while the server host is not running.
    #[error("the simulated LiveKit server is not running (crashed, or not started yet); start the server host before using its controls")]
    NotRunning,
}

/// Requests from tests to the server core.
#[derive(Debug)]
enum Control {
    RemoveParticipant { room: String, identity: String, reply: oneshot::Sender<bool> },
    DeleteRoom { room: String, reply: oneshot::Sender<bool> },
    ListParticipants { room: String, reply: oneshot::Sender<Vec<proto::ParticipantInfo>> },
}

/// A simulated server: [`SimServer::serve`] is the software of its turmoil host; the
/// [`ServerControl`] from [`SimServer::control`] works from any host.
#[derive(Debug, Clone)]
pub struct SimServer {
    config: Arc<ServerConfig>,
    control: ServerControl,
    sids: Arc<AtomicU64>,
}

impl SimServer {
    /// A server with `config`.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config: Arc::new(config),
            control: ServerControl::default(),
            sids: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// RoomService-like controls for tests.
    pub fn control(&self) -> ServerControl {
        self.control.clone()
    }

    /// Runs the server until its host stops. Call it from the turmoil host's software
    /// (it can be called again after a bounce: the state starts empty, as a restarted
    /// livekit-server's does).
    pub async fn serve(&self) -> Result<(), SimServerError> {
        let config = self.config.clone();
        let listener =
            turmoil::net::TcpListener::bind(("0.0.0.0", config.http_port)).await.map_err(
                |source| SimServerError::Bind { what: "TCP", port: config.http_port, source },
            )?;
        let udp = turmoil::net::UdpSocket::bind(("0.0.0.0", config.udp_port)).await.map_err(
            |source| SimServerError::Bind { what: "UDP", port: config.udp_port, source },
        )?;
        let turn_socket = match config.turn_port {
            Some(port) => Some(
                turmoil::net::UdpSocket::bind(("0.0.0.0", port))
                    .await
                    .map_err(|source| SimServerError::Bind { what: "UDP", port, source })?,
            ),
            None => None,
        };
        let (link_tx, link_rx) = mpsc::unbounded_channel();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (ice_tcp_tx, ice_tcp_rx) = mpsc::unbounded_channel();
        let ice_tcp = match config.ice_tcp_port {
            Some(port) => {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port))
                    .await
                    .map_err(|source| SimServerError::Bind { what: "TCP", port, source })?;
                Some(tokio::spawn(ice_tcp::accept(listener, ice_tcp_tx.clone())))
            }
            None => None,
        };
        let turn = turn_socket.map(|socket| {
            // The relay may reach the server's own address only, as in the real lane.
            let relay_ip = turmoil::lookup(crate::sim::SERVER_HOST);
            let secret = config.api_secret.clone();
            tokio::spawn(turn::serve(socket, relay_ip, secret, vec![relay_ip]))
        });
        *self.control.lock() = Some(control_tx);
        let acceptor = tokio::spawn(async move {
            let mut next_conn = 0_u64;
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                next_conn += 1;
                tokio::spawn(link::serve(stream, next_conn, config.clone(), link_tx.clone()));
            }
        });
        core::Core::new(&self.config, udp, self.sids.clone())
            .run(link_rx, control_rx, ice_tcp_rx)
            .await;
        acceptor.abort();
        if let Some(ice_tcp) = ice_tcp {
            ice_tcp.abort();
        }
        if let Some(turn) = turn {
            turn.abort();
        }
        drop(ice_tcp_tx);
        Ok(())
    }
}

/// RoomService-like controls of a [`SimServer`], usable from any simulated host.
#[derive(Debug, Clone, Default)]
pub struct ServerControl {
    core: Arc<Mutex<Option<mpsc::UnboundedSender<Control>>>>,
}

impl ServerControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<Control>>> {
        self.core.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn ask<T>(
        &self,
        control: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, SimServerError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.lock().clone().ok_or(SimServerError::NotRunning)?;
        sender.send(control(reply)).map_err(|_| SimServerError::NotRunning)?;
        answer.await.map_err(|_| SimServerError::NotRunning)
    }

    /// Removes a participant (`Leave{DISCONNECT, PARTICIPANT_REMOVED}`). `false` if it was
    /// not in the room.
    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<bool, SimServerError> {
        let (room, identity) = (room.to_owned(), identity.to_owned());
        self.ask(|reply| Control::RemoveParticipant { room, identity, reply }).await
    }

    /// Deletes a room (`Leave{DISCONNECT, ROOM_DELETED}` to everyone in it). `false` if
    /// there was no such room.
    pub async fn delete_room(&self, room: &str) -> Result<bool, SimServerError> {
        let room = room.to_owned();
        self.ask(|reply| Control::DeleteRoom { room, reply }).await
    }

    /// The participants of a room (empty if there is no such room).
    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<proto::ParticipantInfo>, SimServerError> {
        let room = room.to_owned();
        self.ask(|reply| Control::ListParticipants { room, reply }).await
    }
}

#[cfg(test)]
mod tests;
