//! A TURN client over UDP (RFC 8656), sans I/O: one allocation on a relay listed in the
//! ICE servers, giving a peer connection a relayed candidate.
//!
//! It shares the peer connection's UDP socket (the relayed candidate's base is the host
//! candidate's address, as browsers do): the driver hands it every datagram that comes from
//! the relay, sends what [`TurnClient::poll_transmit`] returns to [`TurnClient::server`],
//! and routes str0m's packets from the relayed address through [`TurnClient::send`]. Peers
//! are reached with Send/Data indications after a CreatePermission; no channels. Requests
//! are retransmitted from 500 ms, doubling; the allocation and its permissions are
//! refreshed before they lapse. Only `turn:` URLs with an IP address and UDP transport are
//! usable: `turns:` (TLS) and TCP relays are not spoken, and host names are not resolved.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use livekit_protocol as proto;
use rand::rngs::SmallRng;
use rand::RngCore;
use tokio::time::Instant;

use crate::stun::{self, Attribute, Class, Message, Method};

/// The first retransmission timeout; each retransmission doubles it.
const INITIAL_RTO: Duration = Duration::from_millis(500);

/// Transmissions of a request before it is given up (waits 0.5 + 1 + 2 + 4 s).
const MAX_TRANSMISSIONS: u32 = 4;

/// How long before a lapse the allocation or a permission is refreshed.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// A permission's lifetime (RFC 8656 §9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

/// Packets held for a peer whose permission is being installed.
const MAX_HELD_PER_PEER: usize = 64;

/// A relay to allocate on, from the ICE servers of a JoinResponse or ReconnectResponse.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TurnServer {
    /// The relay's UDP address.
    pub addr: SocketAddr,
    /// The long-term credential's username.
    pub username: String,
    /// The long-term credential's password.
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    // The credential is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TurnServer {
    /// The first usable relay among `servers`: a `turn:` URL with an IP address and UDP
    /// transport (livekit-server lists its embedded relay as `turn:<node ip>:<port>
    /// ?transport=udp`).
    pub(crate) fn first_usable(servers: &[proto::IceServer]) -> Option<TurnServer> {
        servers.iter().find_map(|server| {
            server.urls.iter().find_map(|url| {
                let addr = udp_relay_address(url)?;
                Some(TurnServer {
                    addr,
                    username: server.username.clone(),
                    password: server.credential.clone(),
                })
            })
        })
    }
}

/// The address of a `turn:<ip>:<port>[?transport=udp]` URL; `None` for anything else.
fn udp_relay_address(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("turn:")?;
    let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
    let udp = query.split('&').all(|p| !p.starts_with("transport=") || p == "transport=udp");
    if !udp {
        return None;
    }
    let addr: Option<SocketAddr> = host_port.parse().ok();
    if addr.is_none() {
        tracing::debug!(url, "skipping a TURN URL that names no IP address and port");
    }
    addr
}

/// What a datagram from the relay meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TurnEvent {
    /// The allocation succeeded: this is the relayed address.
    Allocated(SocketAddr),
    /// The allocation failed (or lapsed) for good.
    Failed(String),
    /// A packet from `peer`, relayed.
    Data {
        /// Who sent it to the relayed address.
        peer: SocketAddr,
        /// The packet.
        packet: Vec<u8>,
    },
}

/// Why a transaction was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Allocate,
    Refresh,
    Permission(IpAddr),
}

/// A request awaiting its response.
#[derive(Debug)]
struct Transaction {
    purpose: Purpose,
    bytes: Vec<u8>,
    transmissions: u32,
    next_at: Instant,
}

#[derive(Debug)]
enum Allocation {
    /// Allocate sent, no success yet.
    Requesting,
    /// The relayed address, and when to refresh it.
    Active { relayed: SocketAddr, refresh_at: Instant },
    /// Given up.
    Failed,
}

#[derive(Debug, Default)]
struct Permission {
    /// Installed until this time (`None`: requested, not confirmed).
    until: Option<Instant>,
    /// Whether a CreatePermission is outstanding.
    requested: bool,
    /// Packets waiting for the permission, in order.
    held: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// The credential state after the relay's first 401.
#[derive(Debug)]
struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// One allocation on one relay.
pub(crate) struct TurnClient {
    server: TurnServer,
    auth: Option<Auth>,
    allocation: Allocation,
    permissions: HashMap<IpAddr, Permission>,
    transactions: HashMap<[u8; 12], Transaction>,
    outgoing: VecDeque<Vec<u8>>,
    rng: SmallRng,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.server)
            .field("allocation", &self.allocation)
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// Starts allocating on `server`: the first request is ready in
    /// [`TurnClient::poll_transmit`]. `rng` draws transaction ids.
    pub(crate) fn new(server: TurnServer, rng: SmallRng, now: Instant) -> TurnClient {
        let mut client = TurnClient {
            server,
            auth: None,
            allocation: Allocation::Requesting,
            permissions: HashMap::new(),
            transactions: HashMap::new(),
            outgoing: VecDeque::new(),
            rng,
        };
        client.request(Purpose::Allocate, now);
        client
    }

    /// The relay's address: datagrams from it are the client's, and its output goes there.
    pub(crate) fn server(&self) -> SocketAddr {
        self.server.addr
    }

    /// The relayed address, once allocated.
    pub(crate) fn relayed(&self) -> Option<SocketAddr> {
        match self.allocation {
            Allocation::Active { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Whether the allocation failed for good (a new client must start over).
    pub(crate) fn failed(&self) -> bool {
        matches!(self.allocation, Allocation::Failed)
    }

    /// The next datagram for the relay.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// When [`TurnClient::on_timeout`] has work next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let retransmit = self.transactions.values().map(|t| t.next_at).min();
        let refresh = match self.allocation {
            Allocation::Active { refresh_at, .. } => Some(refresh_at),
            _ => None,
        };
        let permit = self
            .permissions
            .values()
            .filter(|p| !p.requested)
            .filter_map(|p| p.until.map(|until| until - REFRESH_AHEAD))
            .min();
        [retransmit, refresh, permit].into_iter().flatten().min()
    }

    /// Retransmits, refreshes, and gives up on requests that went unanswered.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> Option<TurnEvent> {
        let due: Vec<[u8; 12]> =
            self.transactions.iter().filter(|(_, t)| t.next_at <= now).map(|(id, _)| *id).collect();
        let mut event = None;
        for id in due {
            let Some(t) = self.transactions.get_mut(&id) else { continue };
            if t.transmissions >= MAX_TRANSMISSIONS {
                let purpose = t.purpose;
                self.transactions.remove(&id);
                event = event.or(self.give_up(purpose, "the relay did not answer"));
                continue;
            }
            t.transmissions += 1;
            t.next_at = now + INITIAL_RTO * 2u32.pow(t.transmissions - 1);
            self.outgoing.push_back(t.bytes.clone());
        }
        if let Allocation::Active { refresh_at, .. } = self.allocation {
            if refresh_at <= now && !self.outstanding(Purpose::Refresh) {
                self.request(Purpose::Refresh, now);
            }
        }
        let lapsing: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| !p.requested && p.until.is_some_and(|u| u - REFRESH_AHEAD <= now))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in lapsing {
            self.request(Purpose::Permission(ip), now);
        }
        event
    }

    /// Sends `packet` to `peer` through the relay, installing a permission first if needed.
    pub(crate) fn send(&mut self, peer: SocketAddr, packet: &[u8], now: Instant) {
        if self.relayed().is_none() {
            return;
        }
        let permission = self.permissions.entry(peer.ip()).or_default();
        if permission.until.is_some_and(|until| now < until) {
            let indication = Message::new(Method::Send, Class::Indication, self.transaction_id())
                .with(Attribute::XorPeerAddress(peer))
                .with(Attribute::Data(packet.to_vec()));
            self.outgoing.push_back(indication.encode(None));
            return;
        }
        if permission.held.len() < MAX_HELD_PER_PEER {
            permission.held.push_back((peer, packet.to_vec()));
        }
        if !permission.requested {
            self.request(Purpose::Permission(peer.ip()), now);
        }
    }

    /// Takes a datagram that came from the relay.
    pub(crate) fn handle(&mut self, datagram: &[u8], now: Instant) -> Option<TurnEvent> {
        let message = match Message::decode(datagram) {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring a datagram from the TURN relay");
                return None;
            }
        };
        if message.method == Method::Data && message.class == Class::Indication {
            let (peer, data) = (message.peer()?, message.data()?);
            let permitted = self.permissions.get(&peer.ip()).is_some_and(|p| p.until.is_some());
            return permitted.then(|| TurnEvent::Data { peer, packet: data.to_vec() });
        }
        let transaction = self.transactions.remove(&message.transaction)?;
        match message.class {
            Class::Success => {
                let authentic =
                    self.auth.as_ref().is_some_and(|auth| message.verify(datagram, &auth.key));
                if !authentic {
                    tracing::debug!("ignoring a TURN response without valid integrity");
                    self.transactions.insert(message.transaction, transaction);
                    return None;
                }
                self.on_success(transaction.purpose, &message, now)
            }
            Class::Error => self.on_error(transaction.purpose, &message, now),
            Class::Request | Class::Indication => None,
        }
    }

    fn on_success(
        &mut self,
        purpose: Purpose,
        message: &Message,
        now: Instant,
    ) -> Option<TurnEvent> {
        match purpose {
            Purpose::Allocate => {
                let Some(relayed) = message.relayed() else {
                    self.allocation = Allocation::Failed;
                    return Some(TurnEvent::Failed(
                        "the Allocate success names no relayed address".into(),
                    ));
                };
                self.allocation =
                    Allocation::Active { relayed, refresh_at: refresh_at(message, now) };
                tracing::debug!(server = %self.server.addr, %relayed, "TURN allocation made");
                Some(TurnEvent::Allocated(relayed))
            }
            Purpose::Refresh => {
                if let Allocation::Active { refresh_at: at, .. } = &mut self.allocation {
                    *at = refresh_at(message, now);
                }
                None
            }
            Purpose::Permission(ip) => {
                let permission = self.permissions.entry(ip).or_default();
                permission.requested = false;
                permission.until = Some(now + PERMISSION_LIFETIME);
                let held: Vec<_> = permission.held.drain(..).collect();
                for (peer, packet) in held {
                    self.send(peer, &packet, now);
                }
                None
            }
        }
    }

    fn on_error(&mut self, purpose: Purpose, message: &Message, now: Instant) -> Option<TurnEvent> {
        let (code, reason) = message.error_code().unwrap_or((0, "no ERROR-CODE"));
        // 401 on a first request: the relay names its realm and nonce. 438: a new nonce.
        let retry = match code {
            401 if self.auth.is_none() => true,
            438 => true,
            _ => false,
        };
        if let (true, Some(realm), Some(nonce)) = (retry, message.realm(), message.nonce()) {
            let key = stun::long_term_key(&self.server.username, realm, &self.server.password);
            self.auth = Some(Auth { realm: realm.to_owned(), nonce: nonce.to_owned(), key });
            self.request(purpose, now);
            return None;
        }
        self.give_up(purpose, &format!("the relay answered {code} {reason}"))
    }

    /// A request failed for good: the allocation (or one permission) with it.
    fn give_up(&mut self, purpose: Purpose, why: &str) -> Option<TurnEvent> {
        match purpose {
            Purpose::Allocate | Purpose::Refresh => {
                self.allocation = Allocation::Failed;
                self.permissions.clear();
                let what = if purpose == Purpose::Allocate { "allocate" } else { "refresh" };
                Some(TurnEvent::Failed(format!(
                    "could not {what} on the TURN relay {}: {why}",
                    self.server.addr
                )))
            }
            Purpose::Permission(ip) => {
                tracing::debug!(%ip, why, "TURN permission refused");
                self.permissions.remove(&ip);
                None
            }
        }
    }

    fn outstanding(&self, purpose: Purpose) -> bool {
        self.transactions.values().any(|t| t.purpose == purpose)
    }

    /// Queues a request for `purpose`, authenticated once the realm and nonce are known.
    fn request(&mut self, purpose: Purpose, now: Instant) {
        let id = self.transaction_id();
        let mut message = match purpose {
            Purpose::Allocate => Message::new(Method::Allocate, Class::Request, id)
                .with(Attribute::RequestedTransport(stun::TRANSPORT_UDP)),
            Purpose::Refresh => Message::new(Method::Refresh, Class::Request, id),
            Purpose::Permission(ip) => {
                self.permissions.entry(ip).or_default().requested = true;
                Message::new(Method::CreatePermission, Class::Request, id)
                    .with(Attribute::XorPeerAddress(SocketAddr::new(ip, 0)))
            }
        };
        let key = self.auth.as_ref().map(|auth| {
            message = message
                .clone()
                .with(Attribute::Username(self.server.username.clone()))
                .with(Attribute::Realm(auth.realm.clone()))
                .with(Attribute::Nonce(auth.nonce.clone()));
            auth.key
        });
        let bytes = message.encode(key.as_ref().map(|k| &k[..]));
        self.outgoing.push_back(bytes.clone());
        let transaction =
            Transaction { purpose, bytes, transmissions: 1, next_at: now + INITIAL_RTO };
        self.transactions.insert(id, transaction);
    }

    fn transaction_id(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        id
    }
}

/// When to refresh an allocation whose (re)newal `message` grants its LIFETIME.
fn refresh_at(message: &Message, now: Instant) -> Instant {
    let lifetime = Duration::from_secs(u64::from(message.lifetime().unwrap_or(600)));
    now + lifetime.saturating_sub(REFRESH_AHEAD).max(lifetime / 2)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    const RELAYED: &str = "127.0.0.1:40001";
    const PEER: &str = "127.0.0.1:7882";

    fn server() -> TurnServer {
        TurnServer {
            addr: "127.0.0.1:3478".parse().expect("addr"),
            username: "1700000000:PA_x".into(),
            password: "secret".into(),
        }
    }

    fn key() -> [u8; 16] {
        stun::long_term_key("1700000000:PA_x", "livekit", "secret")
    }

    /// The relay's side: the request `bytes` answered with `answer` (built on its transaction).
    fn answer(bytes: &[u8], class: Class, attrs: Vec<Attribute>, key: Option<&[u8]>) -> Vec<u8> {
        let request = Message::decode(bytes).expect("a request");
        let mut message = Message::new(request.method, class, request.transaction);
        for attr in attrs {
            message = message.with(attr);
        }
        message.encode(key)
    }

    /// A client allocated on the relay, with the relay's side played by the test.
    fn allocated(now: Instant) -> TurnClient {
        let mut client = TurnClient::new(server(), SmallRng::seed_from_u64(7), now);
        let first = client.poll_transmit().expect("an Allocate");
        let unauthorized = answer(
            &first,
            Class::Error,
            vec![
                Attribute::ErrorCode(401, "Unauthorized".into()),
                Attribute::Realm("livekit".into()),
                Attribute::Nonce("n1".into()),
            ],
            None,
        );
        assert_eq!(client.handle(&unauthorized, now), None);
        let second = client.poll_transmit().expect("an authenticated Allocate");
        let request = Message::decode(&second).expect("decodes");
        assert!(request.verify(&second, &key()), "the second Allocate is signed with the key");
        assert_eq!(request.requested_transport(), Some(stun::TRANSPORT_UDP));
        let success = answer(
            &second,
            Class::Success,
            vec![
                Attribute::XorRelayedAddress(RELAYED.parse().expect("addr")),
                Attribute::Lifetime(600),
            ],
            Some(&key()),
        );
        assert_eq!(
            client.handle(&success, now),
            Some(TurnEvent::Allocated(RELAYED.parse().expect("addr")))
        );
        client
    }

    #[test]
    fn only_a_udp_turn_url_with_an_ip_address_is_usable() {
        let ice = |urls: &[&str]| proto::IceServer {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            username: "u".into(),
            credential: "c".into(),
        };
        let usable = TurnServer::first_usable(&[
            ice(&["stun:127.0.0.1:3478"]),
            ice(&["turns:turn.example.com:443?transport=tcp", "turn:127.0.0.1:3479?transport=tcp"]),
            ice(&["turn:relay.example.com:3478", "turn:127.0.0.1:3480?transport=udp"]),
        ]);
        assert_eq!(usable.map(|s| s.addr), Some("127.0.0.1:3480".parse().expect("addr")));
        assert_eq!(TurnServer::first_usable(&[ice(&["turns:x:443?transport=tcp"])]), None);
        assert!(!format!("{:?}", server()).contains("secret"), "the credential stays out of logs");
    }

    #[test]
    fn a_packet_to_a_new_peer_waits_for_its_permission_then_goes_as_a_send_indication() {
        let now = Instant::now();
        let mut client = allocated(now);
        let peer: SocketAddr = PEER.parse().expect("addr");
        client.send(peer, b"check", now);
        let permit = client.poll_transmit().expect("a CreatePermission");
        let request = Message::decode(&permit).expect("decodes");
        assert_eq!(request.method, Method::CreatePermission);
        assert!(request.verify(&permit, &key()));
        assert_eq!(client.poll_transmit(), None, "nothing is sent before the permission");
        let ok = answer(&permit, Class::Success, vec![], Some(&key()));
        assert_eq!(client.handle(&ok, now), None);
        let send =
            Message::decode(&client.poll_transmit().expect("the held packet")).expect("decodes");
        assert_eq!((send.method, send.class), (Method::Send, Class::Indication));
        assert_eq!((send.peer(), send.data()), (Some(peer), Some(&b"check"[..])));

        let data = Message::new(Method::Data, Class::Indication, [9; 12])
            .with(Attribute::XorPeerAddress(peer))
            .with(Attribute::Data(b"reply".to_vec()))
            .encode(None);
        assert_eq!(
            client.handle(&data, now),
            Some(TurnEvent::Data { peer, packet: b"reply".to_vec() })
        );
    }

    #[test]
    fn a_forged_success_is_ignored_and_data_from_an_unpermitted_peer_dropped() {
        let now = Instant::now();
        let mut client = allocated(now);
        let peer: SocketAddr = PEER.parse().expect("addr");
        client.send(peer, b"x", now);
        let permit = client.poll_transmit().expect("a CreatePermission");
        let forged = answer(&permit, Class::Success, vec![], Some(b"not the key"));
        assert_eq!(client.handle(&forged, now), None);
        assert_eq!(client.poll_transmit(), None, "a forged success installs nothing");
        let stranger: SocketAddr = "127.0.0.2:9".parse().expect("addr");
        let data = Message::new(Method::Data, Class::Indication, [9; 12])
            .with(Attribute::XorPeerAddress(stranger))
            .with(Attribute::Data(b"spam".to_vec()))
            .encode(None);
        assert_eq!(client.handle(&data, now), None);
    }

    #[test]
    fn an_unanswered_allocate_is_retransmitted_then_given_up() {
        let start = Instant::now();
        let mut client = TurnClient::new(server(), SmallRng::seed_from_u64(7), start);
        let first = client.poll_transmit().expect("an Allocate");
        let mut sent = 1;
        let mut event = None;
        while event.is_none() {
            let at = client.poll_timeout().expect("a retransmission is scheduled");
            event = client.on_timeout(at);
            while let Some(again) = client.poll_transmit() {
                assert_eq!(again, first, "a retransmission repeats the request");
                sent += 1;
            }
            assert!(at - start <= Duration::from_secs(8), "given up within 7.5 s");
        }
        assert_eq!(sent, MAX_TRANSMISSIONS);
        assert!(matches!(event, Some(TurnEvent::Failed(why)) if why.contains("did not answer")));
        assert_eq!(client.relayed(), None);
        assert!(client.failed());
    }

    #[test]
    fn the_allocation_is_refreshed_before_it_lapses() {
        let now = Instant::now();
        let mut client = allocated(now);
        let at = client.poll_timeout().expect("a refresh is scheduled");
        assert_eq!(at - now, Duration::from_secs(540));
        assert_eq!(client.on_timeout(at), None);
        let refresh =
            Message::decode(&client.poll_transmit().expect("a Refresh")).expect("decodes");
        assert_eq!(refresh.method, Method::Refresh);
    }
}
