//! The simulated server's TURN relay over UDP, when [`super::ServerConfig::turn_port`] is
//! set: livekit-server's embedded pion/turn server (pkg/service/turn.go, pion/turn v5.0.12
//! `internal/server`), so that a client which must relay its media — told to force relay, or
//! on a network that lets it reach nothing but the relay — has a relay to allocate on. It
//! reads and writes faultline-sdk's own STUN codec ([`faultline_sdk::stun`]).
//!
//! What it does, as pion does it with livekit's configuration:
//! - Credentials (pkg/service/roommanager.go `iceServersForParticipant`): each participant
//!   gets `turn:<server ip>:<turn port>?transport=udp` with a username naming its sid and an
//!   expiry [`CREDENTIAL_TTL`] ahead, and a credential the relay recomputes from the username
//!   with the API secret; it keeps no per-participant state. livekit encodes the username
//!   with base62 and the password as SHA-256 (turn.go `CreateUsername`/`CreatePassword`);
//!   this relay uses the TURN REST API's `<expiry>:<sid>` and an HMAC-SHA256 (base64url) of
//!   it, which a client treats as opaque alike. As in turn.go `HandleAuth`, an expired
//!   username is refused for Allocate only.
//! - Authentication (pion `authenticateRequest`): no MESSAGE-INTEGRITY → 401 with REALM and
//!   NONCE; a stale or foreign nonce → 438 with a new one; a missing NONCE, REALM or USERNAME,
//!   an unknown or expired user, or a MESSAGE-INTEGRITY that does not verify → **400** (pion
//!   answers a wrong key with 400, not the 401 of RFC 8489 §9.2.4). Nonces last an hour and
//!   are signed with a key of this run: a restarted server refuses the old ones with 438.
//! - Allocate: 437 for a second allocation on the same 5-tuple (a retransmission, same
//!   transaction, gets the first success again); 400 without REQUESTED-TRANSPORT, 442 for
//!   anything but UDP (pion would also relay over TCP, RFC 6062: not modelled); a relay socket
//!   on the lowest free port of [`RELAY_PORTS`] (pion picks a random one), 508 if none. The
//!   success carries XOR-RELAYED-ADDRESS, LIFETIME and XOR-MAPPED-ADDRESS.
//! - Lifetimes: the LIFETIME asked for if under an hour, else 600 s; Refresh extends,
//!   Refresh with 0 deletes; an allocation ends when its lifetime runs out, and its relay
//!   socket closes. Permissions (per peer IP, CreatePermission) last [`PERMISSION_LIFETIME`].
//!   Refresh and CreatePermission for no allocation of that 5-tuple and user go unanswered.
//! - Peers (turn.go's `PermissionHandler`): livekit refuses a loopback, private, link-local,
//!   multicast or unspecified peer IP unless `turn.allow_restricted_peer_cidrs` lists it
//!   (CreatePermission → 403). turmoil's addresses are all private (192.168.0.0/16), and the
//!   real lane allows the server's own address only (harness/src/server.rs `turn_config`), so
//!   the simulated server allows its own IP only: the relay reaches its media port, nothing
//!   else on the simulated network.
//! - Data: a Send indication to a permitted peer IP goes out of the relay socket; a datagram
//!   at the relay socket from a permitted IP comes back as a Data indication; anything else
//!   is dropped silently.
//! - Binding requests are answered with XOR-MAPPED-ADDRESS (livekit: "UDP TURN is used as
//!   STUN"; pion adds a FINGERPRINT, which the shared codec does not write).
//!
//! Not modelled: ChannelBind (faultline-sdk uses Send and Data indications; a ChannelBind
//! request is answered 400 without authentication, where pion would bind the channel) and
//! ChannelData (dropped), EVEN-PORT, RESERVATION-TOKEN, DONT-FRAGMENT, quotas, the deny list,
//! TURN over TLS.
//!
//! The relay's usual peer is the server's own media socket, on the same host: turmoil
//! delivers a datagram from one socket of a host to another of the same host when it is
//! addressed to the host's own IP (`is_same` in turmoil's UDP: a loopback delivery, a tick
//! later, with the host's IP as source), so relaying to `<server ip>:<udp port>` needs no
//! loopback address and no setting.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use faultline_sdk::stun::{self, Attribute, Class, Message, Method};
use jsonwebtoken::{Algorithm, EncodingKey};
use livekit_protocol as proto;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use turmoil::net::UdpSocket;

/// pkg/service/turn.go `LivekitRealm`.
pub(super) const REALM: &str = "livekit";

/// How long a participant's TURN username is good for a new allocation (pkg/config/config.go:
/// `turn.ttl_seconds` defaults to 300).
pub(super) const CREDENTIAL_TTL: Duration = Duration::from_secs(300);

/// The ports relayed addresses are given from (livekit's `turn.relay_range_start` and
/// `turn.relay_range_end`, as the real lane sets them), clear of the server's other ports
/// and of turmoil's ephemeral ports (49152 and up).
pub(super) const RELAY_PORTS: RangeInclusive<u16> = 30_000..=39_999;

/// pion/turn `proto.DefaultLifetime`: an allocation's lifetime unless the client asks.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);

/// pion/turn `maximumAllocationLifetime`: a LIFETIME asked for at or above this is ignored.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// pion/turn `allocation.DefaultPermissionTimeout`.
pub(super) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// pion/turn `nonceLifetime`.
const NONCE_LIFETIME: Duration = Duration::from_secs(3600);

/// pion/turn allocation.go `rtpMTU`: the largest datagram a relay socket reads whole.
const MTU: usize = 1600;

/// The TURN ICE server of participant `participant_sid` (pkg/service/roommanager.go
/// `iceServersForParticipant`): none without a TURN port, as livekit lists none with TURN
/// disabled. A TLS-only preference changes nothing here: livekit falls back to the UDP URL
/// when it has no TURN/TLS port, and this server has none.
pub(super) fn ice_servers(
    turn_port: Option<u16>,
    server_ip: IpAddr,
    participant_sid: &str,
    api_secret: &str,
) -> Vec<proto::IceServer> {
    turn_port
        .map(|port| ice_server(SocketAddr::new(server_ip, port), participant_sid, api_secret))
        .into_iter()
        .collect()
}

/// The ICE server for a relay at `relay`: its URL and a username good for
/// [`CREDENTIAL_TTL`] of simulated wall-clock time from now, with its credential.
pub(super) fn ice_server(
    relay: SocketAddr,
    participant_sid: &str,
    api_secret: &str,
) -> proto::IceServer {
    let expiry = crate::sim::wall_clock().as_secs() + CREDENTIAL_TTL.as_secs();
    let username = format!("{expiry}:{participant_sid}");
    let credential = sign(api_secret, &username);
    proto::IceServer { urls: vec![format!("turn:{relay}?transport=udp")], username, credential }
}

/// HMAC-SHA256 of `text` with `secret`, base64url: credentials and nonce signatures.
fn sign(secret: &str, text: &str) -> String {
    jsonwebtoken::crypto::sign(
        text.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HMAC signs with a key of any length")
}

/// Runs the relay on `socket` (the TURN port) until its host stops, with relayed addresses
/// on `relay_ip`, credentials checked against `api_secret`, and `allowed_peers` the restricted
/// peer IPs it may relay to (livekit's `turn.allow_restricted_peer_cidrs`, as single IPs).
pub(super) async fn serve(
    socket: UdpSocket,
    relay_ip: IpAddr,
    api_secret: String,
    allowed_peers: Vec<IpAddr>,
) {
    Relay::new(socket, relay_ip, api_secret, allowed_peers).run().await;
}

/// A datagram a relay socket received.
#[derive(Debug)]
struct Relayed {
    /// The client whose allocation it arrived at, and that allocation's id.
    client: SocketAddr,
    allocation: u64,
    /// Who sent it.
    peer: SocketAddr,
    data: Vec<u8>,
}

/// One allocation, keyed by its client's address (the 5-tuple: one TURN port, UDP).
struct Allocation {
    id: u64,
    /// The participant sid of the username that made it.
    user: String,
    /// The Allocate transaction and the success's attributes, for its retransmissions.
    transaction: [u8; 12],
    response: Vec<Attribute>,
    relay: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    expires: Instant,
    /// Permitted peer IPs, until when.
    permissions: BTreeMap<IpAddr, Instant>,
}

impl Allocation {
    fn permits(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions.get(&peer).is_some_and(|until| now < *until)
    }
}

impl Drop for Allocation {
    /// Closes the relay socket: the reader holds the other reference.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A request's authenticated user and its long-term key.
struct Authenticated {
    user: String,
    key: [u8; 16],
}

struct Relay {
    socket: UdpSocket,
    ip: IpAddr,
    secret: String,
    /// Restricted peer IPs allowed all the same.
    allowed_peers: Vec<IpAddr>,
    /// Signs nonces; differs from run to run, as pion's random key does.
    nonce_key: String,
    allocations: BTreeMap<SocketAddr, Allocation>,
    next_allocation: u64,
    relayed_tx: mpsc::UnboundedSender<Relayed>,
    relayed_rx: mpsc::UnboundedReceiver<Relayed>,
    /// Counts Data indications, whose transaction ids it makes.
    indications: u64,
}

enum Event {
    Datagram(usize, SocketAddr),
    Relayed(Relayed),
    Expiry,
    Closed,
}

impl Relay {
    fn new(socket: UdpSocket, ip: IpAddr, secret: String, allowed_peers: Vec<IpAddr>) -> Self {
        let (relayed_tx, relayed_rx) = mpsc::unbounded_channel();
        let started = crate::sim::wall_clock().as_millis();
        Self {
            socket,
            ip,
            nonce_key: format!("{secret}:{started}"),
            secret,
            allowed_peers,
            allocations: BTreeMap::new(),
            next_allocation: 0,
            relayed_tx,
            relayed_rx,
            indications: 0,
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let next_expiry = self.allocations.values().map(|a| a.expires).min();
            let event = tokio::select! {
                biased;
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => Event::Datagram(len, from),
                    Err(_) => Event::Closed,
                },
                Some(relayed) = self.relayed_rx.recv() => Event::Relayed(relayed),
                () = tokio::time::sleep_until(next_expiry.unwrap_or_else(Instant::now)),
                    if next_expiry.is_some() => Event::Expiry,
            };
            match event {
                Event::Datagram(len, from) => self.on_datagram(&buf[..len], from).await,
                Event::Relayed(relayed) => self.on_relayed(relayed).await,
                Event::Expiry => self.expire(),
                Event::Closed => return,
            }
        }
    }

    /// Ends the allocations whose lifetime ran out (pion's lifetime timer).
    fn expire(&mut self) {
        let now = Instant::now();
        self.allocations.retain(|_, a| now < a.expires);
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self.expire();
        // ChannelData and other protocols: no channel is ever bound, so dropped.
        let Ok(request) = Message::decode(bytes) else { return };
        let reply = match (request.class, request.method) {
            (Class::Indication, Method::Send) => {
                self.on_send(&request, from).await;
                None
            }
            (Class::Request, Method::Binding) => Some(
                Message::new(Method::Binding, Class::Success, request.transaction)
                    .with(Attribute::XorMappedAddress(from))
                    .encode(None),
            ),
            (Class::Request, Method::Allocate) => Some(self.allocate(&request, bytes, from).await),
            (Class::Request, Method::Refresh) => self.refresh(&request, bytes, from),
            (Class::Request, Method::CreatePermission) => {
                self.create_permission(&request, bytes, from)
            }
            (Class::Request, Method::ChannelBind) => Some(error(&request, 400).encode(None)),
            _ => None,
        };
        if let Some(reply) = reply {
            let _ = self.socket.send_to(&reply, from).await;
        }
    }

    /// pion `authenticateRequest` with livekit's turn.go `HandleAuth`: the user and key, or
    /// the error response to send.
    fn authenticate(&self, request: &Message, bytes: &[u8]) -> Result<Authenticated, Vec<u8>> {
        let bad_request = || error(request, 400).encode(None);
        if !request.has_integrity() {
            return Err(self.challenge(request, 401));
        }
        let Some(nonce) = request.nonce() else { return Err(bad_request()) };
        if !self.nonce_is_fresh(nonce) {
            return Err(self.challenge(request, 438));
        }
        let (Some(_), Some(username)) = (request.realm(), request.username()) else {
            return Err(bad_request());
        };
        let Some(user) = user(username, request.method) else { return Err(bad_request()) };
        let key = stun::long_term_key(username, REALM, &sign(&self.secret, username));
        if !request.verify(bytes, &key) {
            return Err(bad_request());
        }
        Ok(Authenticated { user, key })
    }

    /// An error response naming the realm and a fresh nonce (401, 438).
    fn challenge(&self, request: &Message, code: u16) -> Vec<u8> {
        error(request, code)
            .with(Attribute::Nonce(self.nonce()))
            .with(Attribute::Realm(REALM.to_owned()))
            .encode(None)
    }

    /// pion `NonceHash.Generate`: the issue time in milliseconds, signed.
    fn nonce(&self) -> String {
        let stamp = format!("{:016x}", crate::sim::wall_clock().as_millis());
        let signature = sign(&self.nonce_key, &stamp);
        format!("{stamp}{signature}")
    }

    /// pion `NonceHash.Validate`: signed by this run, and at most an hour old.
    fn nonce_is_fresh(&self, nonce: &str) -> bool {
        let (Some(stamp), Some(signature)) = (nonce.get(..16), nonce.get(16..)) else {
            return false;
        };
        let Ok(issued) = u64::from_str_radix(stamp, 16) else { return false };
        let age = crate::sim::wall_clock().as_millis().saturating_sub(u128::from(issued));
        signature == sign(&self.nonce_key, stamp) && age <= NONCE_LIFETIME.as_millis()
    }

    /// pion `handleAllocateRequest`.
    async fn allocate(&mut self, request: &Message, bytes: &[u8], from: SocketAddr) -> Vec<u8> {
        let auth = match self.authenticate(request, bytes) {
            Ok(auth) => auth,
            Err(reply) => return reply,
        };
        if let Some(existing) = self.allocations.get(&from) {
            if existing.transaction != request.transaction {
                return error(request, 437).encode(None);
            }
            let mut again = Message::new(Method::Allocate, Class::Success, request.transaction);
            again.attributes.clone_from(&existing.response);
            return again.encode(Some(&auth.key));
        }
        match request.requested_transport() {
            None => return error(request, 400).encode(None),
            Some(stun::TRANSPORT_UDP) => {}
            Some(_) => return error(request, 442).encode(None),
        }
        let lifetime = lifetime(request);
        let Some((relay, port)) = bind_relay().await else {
            return error(request, 508).encode(None);
        };
        let response = vec![
            Attribute::XorRelayedAddress(SocketAddr::new(self.ip, port)),
            Attribute::Lifetime(seconds(lifetime)),
            Attribute::XorMappedAddress(from),
        ];
        self.next_allocation += 1;
        let id = self.next_allocation;
        let relay = Arc::new(relay);
        let reader = tokio::spawn(read_relay(relay.clone(), from, id, self.relayed_tx.clone()));
        let mut success = Message::new(Method::Allocate, Class::Success, request.transaction);
        success.attributes.clone_from(&response);
        self.allocations.insert(
            from,
            Allocation {
                id,
                user: auth.user,
                transaction: request.transaction,
                response,
                relay,
                reader,
                expires: Instant::now() + lifetime,
                permissions: BTreeMap::new(),
            },
        );
        success.encode(Some(&auth.key))
    }

    /// pion `handleRefreshRequest`.
    fn refresh(&mut self, request: &Message, bytes: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let auth = match self.authenticate(request, bytes) {
            Ok(auth) => auth,
            Err(reply) => return Some(reply),
        };
        let allocation = self.allocations.get_mut(&from).filter(|a| a.user == auth.user)?;
        let lifetime = lifetime(request);
        if lifetime.is_zero() {
            self.allocations.remove(&from);
        } else {
            allocation.expires = Instant::now() + lifetime;
        }
        Some(
            Message::new(Method::Refresh, Class::Success, request.transaction)
                .with(Attribute::Lifetime(seconds(lifetime)))
                .encode(Some(&auth.key)),
        )
    }

    /// pion `handleCreatePermissionRequest`: each XOR-PEER-ADDRESS in turn, until one is of
    /// the wrong family (443) or refused (403); none granted, or none at all (400), is an
    /// error response.
    fn create_permission(
        &mut self,
        request: &Message,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Option<Vec<u8>> {
        let auth = match self.authenticate(request, bytes) {
            Ok(auth) => auth,
            Err(reply) => return Some(reply),
        };
        let relay_ip = self.ip;
        let allowed_peers = &self.allowed_peers;
        let allocation = self.allocations.get_mut(&from).filter(|a| a.user == auth.user)?;
        let now = Instant::now();
        allocation.permissions.retain(|_, until| now < *until);
        let (mut added, mut code) = (0, 400);
        for attribute in &request.attributes {
            let Attribute::XorPeerAddress(peer) = attribute else { continue };
            if peer.is_ipv4() != relay_ip.is_ipv4() {
                (added, code) = (0, 443);
                break;
            }
            if restricted(peer.ip()) && !allowed_peers.contains(&peer.ip()) {
                (added, code) = (0, 403);
                break;
            }
            allocation.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
            added += 1;
        }
        let reply = if added == 0 {
            error(request, code)
        } else {
            Message::new(Method::CreatePermission, Class::Success, request.transaction)
        };
        Some(reply.encode(Some(&auth.key)))
    }

    /// pion `handleSendIndication`: out of the relay socket if the peer's IP is permitted.
    async fn on_send(&self, indication: &Message, from: SocketAddr) {
        let Some(allocation) = self.allocations.get(&from) else { return };
        let (Some(peer), Some(data)) = (indication.peer(), indication.data()) else { return };
        if allocation.permits(peer.ip(), Instant::now()) {
            let _ = allocation.relay.send_to(data, peer).await;
        }
    }

    /// pion allocation.go `packetConnHandler`: a Data indication to the client if the peer's
    /// IP is permitted.
    async fn on_relayed(&mut self, relayed: Relayed) {
        let Some(allocation) = self.allocations.get(&relayed.client) else { return };
        if allocation.id != relayed.allocation
            || !allocation.permits(relayed.peer.ip(), Instant::now())
        {
            return;
        }
        self.indications += 1;
        let mut transaction = [0u8; 12];
        transaction[4..].copy_from_slice(&self.indications.to_be_bytes());
        let indication = Message::new(Method::Data, Class::Indication, transaction)
            .with(Attribute::XorPeerAddress(relayed.peer))
            .with(Attribute::Data(relayed.data))
            .encode(None);
        let _ = self.socket.send_to(&indication, relayed.client).await;
    }
}

/// An error response with `code` and, as pion sends it, no reason phrase.
fn error(request: &Message, code: u16) -> Message {
    Message::new(request.method, Class::Error, request.transaction)
        .with(Attribute::ErrorCode(code, String::new()))
}

/// turn.go's `PermissionHandler`: the peer IPs refused unless allowed (Go's `IsLoopback`,
/// `IsLinkLocalUnicast`, `IsLinkLocalMulticast`, `IsMulticast`, `IsPrivate`,
/// `IsUnspecified`).
fn restricted(ip: IpAddr) -> bool {
    ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unspecified()
        || match ip {
            IpAddr::V4(ip) => ip.is_private() || ip.is_link_local(),
            IpAddr::V6(ip) => ip.is_unique_local() || ip.is_unicast_link_local(),
        }
}

/// turn.go `HandleAuth`: the participant sid of a `<expiry>:<sid>` username, unless the
/// expiry is 0, or has passed and the request is an Allocate.
fn user(username: &str, method: Method) -> Option<String> {
    let (expiry, sid) = username.split_once(':')?;
    let expiry: u64 = expiry.parse().ok()?;
    let expired = crate::sim::wall_clock() > Duration::from_secs(expiry);
    (expiry != 0 && !(expired && method == Method::Allocate)).then(|| sid.to_owned())
}

/// pion `allocationLifeTime`: the LIFETIME asked for if under an hour, else the default.
fn lifetime(request: &Message) -> Duration {
    request
        .lifetime()
        .map(|secs| Duration::from_secs(u64::from(secs)))
        .filter(|asked| *asked < MAX_LIFETIME)
        .unwrap_or(DEFAULT_LIFETIME)
}

fn seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

/// A relay socket on the lowest free port of [`RELAY_PORTS`].
async fn bind_relay() -> Option<(UdpSocket, u16)> {
    for port in RELAY_PORTS {
        if let Ok(socket) = UdpSocket::bind(("0.0.0.0", port)).await {
            return Some((socket, port));
        }
    }
    None
}

/// Hands what arrives at a relay socket to the relay, until the socket or the relay ends.
async fn read_relay(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    allocation: u64,
    relay: mpsc::UnboundedSender<Relayed>,
) {
    let mut buf = vec![0u8; MTU];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else { return };
        let data = buf[..len].to_vec();
        if relay.send(Relayed { client, allocation, peer, data }).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
