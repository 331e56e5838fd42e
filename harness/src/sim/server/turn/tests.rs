//! The TURN relay against a raw client (a bare turmoil UDP socket speaking
//! `faultline_sdk::stun`) and raw peers: allocation and authentication, permissions, relaying
//! both ways, the ends of allocations, delivery to a socket on the relay's own host — with the
//! relay alone on a host, allowed to reach the peers' hosts — and, on the simulated server,
//! the ICE server its join and reconnect responses list and the peers its relay may reach.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use faultline_sdk::stun::{long_term_key, Attribute, Class, Message, Method, TRANSPORT_UDP};
use futures_util::StreamExt;
use livekit_protocol::{self as proto, signal_response};
use prost::Message as _;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use turmoil::net::UdpSocket;

use super::{ice_server, CREDENTIAL_TTL, PERMISSION_LIFETIME, RELAY_PORTS};
use crate::sim::server::ServerConfig;
use crate::sim::{ClientContext, Sim, SERVER_HOST};

/// The relay's host in the relay-only simulations.
const RELAY_HOST: &str = "relay";
const SECRET: &str = "secret";
const TURN_PORT: u16 = 3478;
const CLIENT_PORT: u16 = 5000;
const PEER_PORT: u16 = 9000;
/// How long a test waits for a datagram that should come.
const WAIT: Duration = Duration::from_secs(5);
/// How long a test listens for a datagram that should not come (many round trips).
const SILENCE: Duration = Duration::from_secs(2);

fn with_turn() -> ServerConfig {
    ServerConfig { turn_port: Some(TURN_PORT), ..ServerConfig::default() }
}

/// The simulated server's relay.
fn server_relay() -> SocketAddr {
    SocketAddr::new(turmoil::lookup(SERVER_HOST), TURN_PORT)
}

/// The relay of a relay-only simulation.
fn relay_addr() -> SocketAddr {
    SocketAddr::new(turmoil::lookup(RELAY_HOST), TURN_PORT)
}

fn peer_addr(host: &str) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(host), PEER_PORT)
}

/// A simulation with the relay alone on [`RELAY_HOST`] (an echo socket beside it on
/// [`PEER_PORT`]), allowed to reach its own host and `allowed` (all private addresses).
fn relay_sim(allowed: &'static [&'static str]) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(4))
        .simulation_duration(Duration::from_secs(15 * 60))
        .build();
    sim.host(RELAY_HOST, move || async move {
        tokio::spawn(echo(UdpSocket::bind(("0.0.0.0", PEER_PORT)).await?, Arc::default()));
        let socket = UdpSocket::bind(("0.0.0.0", TURN_PORT)).await?;
        let relay_ip = turmoil::lookup(RELAY_HOST);
        let mut peers: Vec<IpAddr> = allowed.iter().map(|host| turmoil::lookup(*host)).collect();
        peers.push(relay_ip);
        super::serve(socket, relay_ip, SECRET.to_owned(), peers).await;
        Ok(())
    });
    sim
}

/// Runs `test` as the client host "raw" of `sim`, to the end.
fn run_client<F>(mut sim: turmoil::Sim<'static>, test: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + 'static,
{
    sim.client("raw", async move { test.await.map_err(Into::into) });
    if let Err(e) = sim.run() {
        panic!("{e}");
    }
}

/// A client of the relay-only simulation, challenged.
async fn relay_client() -> anyhow::Result<Client> {
    let mut client = Client::new(relay_addr(), ice_server(relay_addr(), "PA_raw", SECRET)).await?;
    client.challenge(tx(1)).await?;
    Ok(client)
}

fn tx(n: u8) -> [u8; 12] {
    [n; 12]
}

/// A peer host that answers every datagram with `pong <data> from <source>`, and counts them.
fn echo_peer(sim: &mut turmoil::Sim<'_>, host: &str, received: Arc<AtomicUsize>) {
    sim.host(host, move || {
        let received = received.clone();
        async move {
            echo(UdpSocket::bind(("0.0.0.0", PEER_PORT)).await?, received).await;
            Ok(())
        }
    });
}

async fn echo(socket: UdpSocket, received: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 2048];
    while let Ok((len, from)) = socket.recv_from(&mut buf).await {
        received.fetch_add(1, Ordering::SeqCst);
        let mut reply = b"pong ".to_vec();
        reply.extend_from_slice(&buf[..len]);
        reply.extend_from_slice(format!(" from {from}").as_bytes());
        let _ = socket.send_to(&reply, from).await;
    }
}

fn run(sim: Sim<'_>) {
    if let Err(e) = sim.run() {
        panic!("{e}");
    }
}

/// A raw TURN client: its socket, the relay, its ICE server, and the realm and nonce once
/// challenged.
struct Client {
    socket: UdpSocket,
    relay: SocketAddr,
    server: proto::IceServer,
    auth: Option<(String, String)>,
}

impl Client {
    async fn new(relay: SocketAddr, server: proto::IceServer) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(("0.0.0.0", CLIENT_PORT)).await?;
        Ok(Self { socket, relay, server, auth: None })
    }

    fn key(&self) -> anyhow::Result<[u8; 16]> {
        let (realm, _) = self.auth.as_ref().context("not challenged yet")?;
        Ok(long_term_key(&self.server.username, realm, &self.server.credential))
    }

    /// `message` with USERNAME, REALM, NONCE and a MESSAGE-INTEGRITY made with `key`.
    fn signed(&self, message: Message, key: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (realm, nonce) = self.auth.clone().context("not challenged yet")?;
        Ok(message
            .with(Attribute::Username(self.server.username.clone()))
            .with(Attribute::Realm(realm))
            .with(Attribute::Nonce(nonce))
            .encode(Some(key)))
    }

    async fn send(&self, bytes: &[u8]) -> anyhow::Result<()> {
        self.socket.send_to(bytes, self.relay).await?;
        Ok(())
    }

    /// The next datagram from the relay, decoded, with its bytes; `None` if none comes
    /// within `within`.
    async fn recv(&self, within: Duration) -> anyhow::Result<Option<(Message, Vec<u8>)>> {
        let mut buf = vec![0u8; 2048];
        let Ok(received) = tokio::time::timeout(within, self.socket.recv_from(&mut buf)).await
        else {
            return Ok(None);
        };
        let (len, from) = received?;
        ensure!(from == self.relay, "a datagram from {from}, not the relay");
        let bytes = buf[..len].to_vec();
        Ok(Some((Message::decode(&bytes)?, bytes)))
    }

    /// Sends `bytes` and reads the answer to transaction `transaction`.
    async fn ask(&self, bytes: &[u8], transaction: [u8; 12]) -> anyhow::Result<(Message, Vec<u8>)> {
        self.send(bytes).await?;
        let (answer, bytes) = self.recv(WAIT).await?.context("no answer from the relay")?;
        ensure!(answer.transaction == transaction, "an answer to another transaction: {answer:?}");
        Ok((answer, bytes))
    }

    /// An Allocate without credentials: expects the 401 and keeps its realm and nonce.
    async fn challenge(&mut self, transaction: [u8; 12]) -> anyhow::Result<()> {
        let request = allocate(transaction).encode(None);
        let (answer, _) = self.ask(&request, transaction).await?;
        ensure!(answer.method == Method::Allocate && answer.class == Class::Error, "{answer:?}");
        ensure!(answer.error_code().map(|(code, _)| code) == Some(401), "{answer:?}");
        ensure!(answer.relayed().is_none(), "a 401 relays nothing: {answer:?}");
        let realm = answer.realm().context("a 401 names the realm")?.to_owned();
        let nonce = answer.nonce().context("a 401 carries a nonce")?.to_owned();
        ensure!(realm == "livekit", "realm {realm:?}");
        self.auth = Some((realm, nonce));
        Ok(())
    }

    /// A signed request of `message`; the answer must be a success whose MESSAGE-INTEGRITY
    /// verifies with the client's key.
    async fn succeed(&self, message: Message) -> anyhow::Result<Message> {
        let (method, transaction) = (message.method, message.transaction);
        let key = self.key()?;
        let (answer, bytes) = self.ask(&self.signed(message, &key)?, transaction).await?;
        ensure!(answer.method == method && answer.class == Class::Success, "{answer:?}");
        ensure!(answer.verify(&bytes, &key), "the success's integrity does not verify");
        Ok(answer)
    }

    /// An authenticated Allocate; its relayed address.
    async fn allocate(&self, transaction: [u8; 12]) -> anyhow::Result<SocketAddr> {
        let answer = self.succeed(allocate(transaction)).await?;
        answer.relayed().context("no XOR-RELAYED-ADDRESS")
    }

    /// A signed request of `message` whose answer must be an error: its code.
    async fn fail(&self, message: Message) -> anyhow::Result<u16> {
        let transaction = message.transaction;
        let (answer, _) = self.ask(&self.signed(message, &self.key()?)?, transaction).await?;
        ensure!(answer.class == Class::Error, "expected an error: {answer:?}");
        ensure!(answer.relayed().is_none(), "an error relays nothing: {answer:?}");
        answer.error_code().map(|(code, _)| code).context("an error without ERROR-CODE")
    }

    async fn permit(&self, peer: SocketAddr, transaction: [u8; 12]) -> anyhow::Result<()> {
        let request = Message::new(Method::CreatePermission, Class::Request, transaction)
            .with(Attribute::XorPeerAddress(peer));
        self.succeed(request).await.map(drop)
    }

    async fn send_to_peer(&self, peer: SocketAddr, data: &[u8], n: u8) -> anyhow::Result<()> {
        let indication = Message::new(Method::Send, Class::Indication, tx(n))
            .with(Attribute::XorPeerAddress(peer))
            .with(Attribute::Data(data.to_vec()));
        self.send(&indication.encode(None)).await
    }

    /// The next Data indication: its peer and data.
    async fn data(&self, within: Duration) -> anyhow::Result<Option<(SocketAddr, String)>> {
        let Some((message, _)) = self.recv(within).await? else { return Ok(None) };
        ensure!(
            (message.method, message.class) == (Method::Data, Class::Indication),
            "expected a Data indication: {message:?}"
        );
        let peer = message.peer().context("a Data indication names its peer")?;
        let data = message.data().context("a Data indication carries DATA")?;
        Ok(Some((peer, String::from_utf8_lossy(data).into_owned())))
    }
}

fn allocate(transaction: [u8; 12]) -> Message {
    Message::new(Method::Allocate, Class::Request, transaction)
        .with(Attribute::RequestedTransport(TRANSPORT_UDP))
}

fn refresh(transaction: [u8; 12], lifetime: u32) -> Message {
    Message::new(Method::Refresh, Class::Request, transaction).with(Attribute::Lifetime(lifetime))
}

#[test_log::test]
fn an_allocation_relays_to_a_permitted_peer_and_back() {
    let mut sim = relay_sim(&["peer"]);
    echo_peer(&mut sim, "peer", Arc::default());
    run_client(sim, async {
        let client = relay_client().await?;
        let answer = client.succeed(allocate(tx(2))).await?;
        let relayed = answer.relayed().context("no XOR-RELAYED-ADDRESS")?;
        ensure!(relayed.ip() == turmoil::lookup(RELAY_HOST), "relayed at {relayed}");
        ensure!(RELAY_PORTS.contains(&relayed.port()), "relayed at {relayed}");
        let me = SocketAddr::new(turmoil::lookup("raw"), CLIENT_PORT);
        ensure!(answer.mapped() == Some(me), "mapped {:?}, not {me}", answer.mapped());
        ensure!(answer.lifetime() == Some(600), "lifetime {:?}", answer.lifetime());
        // The same 5-tuple, another transaction: 437 Allocation Mismatch.
        ensure!(client.fail(allocate(tx(3))).await? == 437);

        let peer = peer_addr("peer");
        client.permit(peer, tx(4)).await?;
        client.send_to_peer(peer, b"ping", 5).await?;
        let (from, data) = client.data(WAIT).await?.context("no Data indication")?;
        ensure!(from == peer, "relayed from {from}, not {peer}");
        ensure!(data == format!("pong ping from {relayed}"), "the peer's answer {data:?}");
        Ok(())
    });
}

#[test_log::test]
fn requests_without_a_valid_credential_or_transport_are_refused() {
    run_client(relay_sim(&[]), async {
        let mut client = relay_client().await?;
        let username = client.server.username.clone();
        // pion answers a MESSAGE-INTEGRITY that does not verify with 400.
        let wrong = long_term_key(&username, "livekit", "not-the-credential");
        let (answer, _) = client.ask(&client.signed(allocate(tx(2)), &wrong)?, tx(2)).await?;
        ensure!(answer.class == Class::Error && answer.relayed().is_none(), "{answer:?}");
        ensure!(answer.error_code().map(|(c, _)| c) == Some(400), "{answer:?}");
        // A nonce the relay did not sign: 438 with a fresh one.
        let forged = allocate(tx(3))
            .with(Attribute::Username(username))
            .with(Attribute::Realm("livekit".into()))
            .with(Attribute::Nonce("0000000000000000forged".into()))
            .encode(Some(&client.key()?));
        let (answer, _) = client.ask(&forged, tx(3)).await?;
        ensure!(answer.error_code().map(|(c, _)| c) == Some(438), "{answer:?}");
        ensure!(answer.nonce().is_some() && answer.realm() == Some("livekit"), "{answer:?}");
        // No REQUESTED-TRANSPORT: 400; TCP: 442 (only UDP is relayed).
        ensure!(client.fail(Message::new(Method::Allocate, Class::Request, tx(4))).await? == 400);
        let tcp = Message::new(Method::Allocate, Class::Request, tx(5))
            .with(Attribute::RequestedTransport(6));
        ensure!(client.fail(tcp).await? == 442);
        // A username past its expiry may not allocate; a fresh one may.
        tokio::time::sleep(CREDENTIAL_TTL + Duration::from_secs(1)).await;
        ensure!(client.fail(allocate(tx(6))).await? == 400, "an expired username allocated");
        client.server = ice_server(relay_addr(), "PA_raw", SECRET);
        client.allocate(tx(7)).await?;
        Ok(())
    });
}

#[test_log::test]
fn only_permitted_peers_are_relayed_either_way() {
    let mut sim = relay_sim(&["peer", "other"]);
    let other_received = Arc::new(AtomicUsize::new(0));
    echo_peer(&mut sim, "peer", Arc::default());
    echo_peer(&mut sim, "other", other_received.clone());
    run_client(sim, async move {
        let client = relay_client().await?;
        let relayed = client.allocate(tx(2)).await?;
        let peer = peer_addr("peer");
        client.permit(peer, tx(3)).await?;
        // Out to a peer without permission: dropped.
        client.send_to_peer(peer_addr("other"), b"to other", 4).await?;
        // In from an address without permission (this host's, another socket): dropped.
        let intruder = UdpSocket::bind(("0.0.0.0", CLIENT_PORT + 1)).await?;
        intruder.send_to(b"intrusion", relayed).await?;
        // Then the permitted peer's answer arrives, and is the first thing that does: the
        // intrusion, had it been relayed, would have come two hops earlier.
        client.send_to_peer(peer, b"to peer", 5).await?;
        let (from, data) = client.data(WAIT).await?.context("no Data indication")?;
        ensure!(from == peer, "a Data indication from {from} ({data:?}), not {peer}");
        ensure!(data == format!("pong to peer from {relayed}"), "{data:?}");
        ensure!(client.data(SILENCE).await?.is_none(), "a datagram after the peer's answer");
        ensure!(
            other_received.load(Ordering::SeqCst) == 0,
            "a peer without permission received a Send indication's data"
        );
        Ok(())
    });
}

#[test_log::test]
fn allocations_and_permissions_end_and_free_their_relay_port() {
    let mut sim = relay_sim(&["peer"]);
    echo_peer(&mut sim, "peer", Arc::default());
    run_client(sim, async {
        let client = relay_client().await?;
        let first = client.allocate(tx(2)).await?;
        // A Refresh with LIFETIME 0 deletes the allocation, and its port is free again.
        let answer = client.succeed(refresh(tx(3), 0)).await?;
        ensure!(answer.lifetime() == Some(0), "{answer:?}");
        ensure!(client.allocate(tx(4)).await? == first, "the relay port was not freed");

        // An allocation ends when its lifetime runs out, closing its relay socket.
        client.succeed(refresh(tx(5), 0)).await?;
        let answer = client.succeed(allocate(tx(6)).with(Attribute::Lifetime(10))).await?;
        ensure!(answer.lifetime() == Some(10), "{answer:?}");
        tokio::time::sleep(Duration::from_secs(11)).await;
        ensure!(client.allocate(tx(7)).await? == first, "the expired allocation lives on");

        // A Refresh extends an allocation past its first lifetime, until the new one ends.
        client.succeed(refresh(tx(8), 0)).await?;
        let answer = client.succeed(allocate(tx(9)).with(Attribute::Lifetime(60))).await?;
        ensure!(answer.lifetime() == Some(60), "{answer:?}");
        let allocated = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let answer = client.succeed(refresh(tx(10), 60)).await?;
        ensure!(answer.lifetime() == Some(60), "{answer:?}");
        tokio::time::sleep_until(allocated + Duration::from_secs(70)).await;
        ensure!(client.fail(allocate(tx(11))).await? == 437, "the refreshed allocation ended");
        tokio::time::sleep_until(allocated + Duration::from_secs(95)).await;
        ensure!(client.allocate(tx(12)).await? == first, "the refreshed allocation lives on");

        // Permissions last five minutes (this allocation, ten).
        let peer = peer_addr("peer");
        client.permit(peer, tx(13)).await?;
        client.send_to_peer(peer, b"early", 14).await?;
        ensure!(client.data(WAIT).await?.is_some_and(|(from, _)| from == peer));
        tokio::time::sleep(PERMISSION_LIFETIME).await;
        client.send_to_peer(peer, b"late", 15).await?;
        ensure!(client.data(SILENCE).await?.is_none(), "relayed on an expired permission");
        client.permit(peer, tx(16)).await?;
        client.send_to_peer(peer, b"again", 17).await?;
        let (from, data) = client.data(WAIT).await?.context("no Data indication")?;
        ensure!(from == peer && data.starts_with("pong again"), "{from} {data:?}");
        Ok(())
    });
}

/// The relay's usual peer is the server's media socket, on its own host: turmoil delivers
/// from one socket of a host to another at the host's own IP.
#[test_log::test]
fn the_relay_reaches_a_socket_on_its_own_host() {
    run_client(relay_sim(&[]), async {
        let client = relay_client().await?;
        let relayed = client.allocate(tx(2)).await?;
        let neighbour = peer_addr(RELAY_HOST);
        client.permit(neighbour, tx(3)).await?;
        client.send_to_peer(neighbour, b"ping", 4).await?;
        let (from, data) = client.data(WAIT).await?.context("no Data indication")?;
        ensure!(from == neighbour, "relayed from {from}");
        ensure!(data == format!("pong ping from {relayed}"), "{data:?}");
        Ok(())
    });
}

type Ws = tokio_tungstenite::WebSocketStream<turmoil::net::TcpStream>;

async fn open(ctx: &ClientContext, extra: &str) -> anyhow::Result<Ws> {
    let token = ctx.token("turn-room", "raw")?;
    let stream = turmoil::net::TcpStream::connect((SERVER_HOST, 7880)).await?;
    let url = format!("ws://{SERVER_HOST}:7880/rtc?access_token={token}&protocol=17{extra}");
    Ok(tokio_tungstenite::client_async(url, stream).await?.0)
}

/// The first server message.
async fn first_message(ws: &mut Ws) -> anyhow::Result<signal_response::Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.context("no server message")? {
            Some(Ok(WsMessage::Binary(bytes))) => {
                let response = proto::SignalResponse::decode(bytes.as_ref())?;
                return response.message.context("an empty SignalResponse");
            }
            Some(Ok(_)) => {}
            other => bail!("the socket ended: {other:?}"),
        }
    }
}

/// Joins, then resumes: the ICE servers of the JoinResponse and of the ReconnectResponse,
/// and the participant's sid.
async fn ice_servers_of_a_session(
    ctx: &ClientContext,
) -> anyhow::Result<(Vec<proto::IceServer>, Vec<proto::IceServer>, String)> {
    let mut ws = open(ctx, "").await?;
    let signal_response::Message::Join(join) = first_message(&mut ws).await? else {
        bail!("expected a JoinResponse first");
    };
    let sid = join.participant.context("participant")?.sid;
    let mut resumed = open(ctx, &format!("&reconnect=1&sid={sid}")).await?;
    let signal_response::Message::Reconnect(reconnect) = first_message(&mut resumed).await? else {
        bail!("expected a ReconnectResponse first");
    };
    Ok((join.ice_servers, reconnect.ice_servers, sid))
}

#[test_log::test]
fn the_join_and_reconnect_responses_list_the_relay_only_with_a_turn_port() {
    let mut sim = Sim::new(5);
    sim.client("raw", |ctx| async move {
        let (joined, reconnected, _) = ice_servers_of_a_session(&ctx).await?;
        ensure!(joined.is_empty() && reconnected.is_empty(), "{joined:?} {reconnected:?}");
        Ok(())
    });
    run(sim);

    let mut sim = Sim::with(6, with_turn(), |_| {});
    sim.client("raw", |ctx| async move {
        let (joined, reconnected, sid) = ice_servers_of_a_session(&ctx).await?;
        let url = format!("turn:{}?transport=udp", server_relay());
        for servers in [&joined, &reconnected] {
            let [server] = servers.as_slice() else { bail!("one ICE server: {servers:?}") };
            ensure!(server.urls == [url.clone()], "{server:?}");
            ensure!(server.username.ends_with(&format!(":{sid}")), "{server:?}");
        }
        // The listed credential allocates, and the relay may reach the server's own address
        // (its media port) but no other host: livekit's restricted-peer filter, as the real
        // lane configures it.
        let mut client = Client::new(server_relay(), joined[0].clone()).await?;
        client.challenge(tx(1)).await?;
        let relayed = client.allocate(tx(2)).await?;
        ensure!(relayed.ip() == server_relay().ip(), "relayed at {relayed}");
        let media = SocketAddr::new(server_relay().ip(), ServerConfig::default().udp_port);
        client.permit(media, tx(3)).await?;
        let elsewhere = Message::new(Method::CreatePermission, Class::Request, tx(4))
            .with(Attribute::XorPeerAddress(peer_addr("raw")));
        ensure!(client.fail(elsewhere).await? == 403, "a restricted peer was permitted");
        Ok(())
    });
    run(sim);
}
