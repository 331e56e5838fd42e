//! Fault injection inside the SDK's own sockets: the media-path faults (UDP loss, delay,
//! partitions) that a TCP proxy such as toxiproxy cannot produce, signalling cuts without a
//! proxy in the way, and a network handover.
//!
//! [`FaultyNetwork`] wraps any [`Network`] and is handed to the SDK in its place; the
//! [`NetFaults`] handle it gives out switches faults on and off while the SDK runs:
//!
//! - **media** (the UDP [`DatagramSocket`]s): drop everything ([`NetFaults::partition_media`]),
//!   in one direction or both, or UDP only ([`NetFaults::block_udp`]), or all UDP but a
//!   TURN relay's ([`NetFaults::block_udp_except`]); lose a percentage
//!   ([`NetFaults::set_media_loss`]), drawn from a random generator seeded by
//!   [`FaultyNetwork::new`]'s `seed`, so a seed always gives the same loss pattern for the
//!   same traffic on the same build; delay every datagram by a fixed time, keeping their
//!   order ([`NetFaults::set_media_delay`]). A fault is applied to a
//!   datagram when the SDK sends it (outbound) or when the wrapper reads it from the real
//!   socket for the SDK (inbound); datagrams already delayed are not affected.
//! - **signalling** (the TCP streams): reset every open stream
//!   ([`NetFaults::sever_signalling`]); refuse new connections
//!   ([`NetFaults::refuse_new_signalling`]); black-hole every stream — reads wait, writes are
//!   swallowed ([`NetFaults::black_hole_signalling`]). As with the proxy's black hole, streams
//!   that were in the black hole are reset when it ends, since their bytes are gone. Or hold
//!   every stream ([`NetFaults::hold_signalling`]), as a paused proxy does: reads wait, writes
//!   are kept (up to a socket send buffer's [`HOLD_BUFFER`], then they wait too) and go out
//!   when it ends; the streams carry on. Or deafen them ([`NetFaults::deafen_signalling`]):
//!   what the server sends is lost, what the client sends still arrives — a one-way cut —
//!   and, as after a black hole, the streams are reset when it ends.
//! - **network change** ([`NetFaults::change_network`]): a Wi-Fi to cellular handover. Sockets
//!   and streams opened before it go dead, and new UDP sockets are bound on the new IP.
//!
//! ICE over TCP (the media path on TCP, opened with `connect_ice_tcp`, counted in
//! [`NetStats::ice_tcp_opened`]) is media, not signalling: signalling faults leave it alone. A
//! media partition, in either direction, holds its connections as a stalled TCP connection
//! is held (reads and writes wait, no byte is lost, and they carry on when it heals); a
//! network change resets them. Loss and delay act on datagrams only (TCP would turn them
//! into retransmissions). The kernel's media faults ([`crate::netns`]) cover the ICE/TCP
//! port as well.
//!
//! All timing uses `tokio::time`, so the wrapper also runs on a paused or simulated clock.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use faultline_sdk::net::{AsyncStream, DatagramSocket, Network, TcpConnection};
use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info};

/// How many bytes a held stream accepts before its writes wait: a TCP send buffer's worth
/// (Linux starts a socket's at 16 KiB and grows it; 64 KiB is a common size).
pub const HOLD_BUFFER: usize = 64 * 1024;

/// Which way datagrams travel, from the SDK's point of view (in files: `inbound`,
/// `outbound`, `both`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Datagrams arriving at the SDK's sockets.
    Inbound,
    /// Datagrams the SDK sends.
    Outbound,
    /// Both ways.
    #[default]
    Both,
}

impl std::fmt::Display for Direction {
    /// As files write it: `inbound`, `outbound`, `both`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Both => "both",
        })
    }
}

impl Direction {
    fn includes(self, other: Direction) -> bool {
        self == Direction::Both || self == other
    }
}

/// Why a fault could not be set.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A loss percentage outside 0..=100.
    #[error("media loss must be a percentage from 0 to 100, got {0}")]
    InvalidLoss(f64),
}

/// Counters of what the wrapped network has done, for assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetStats {
    /// Datagrams the SDK sent.
    pub datagrams_sent: u64,
    /// Of those, datagrams dropped by a fault.
    pub datagrams_sent_dropped: u64,
    /// Datagrams that reached the SDK's sockets.
    pub datagrams_received: u64,
    /// Of those, datagrams dropped by a fault.
    pub datagrams_received_dropped: u64,
    /// Datagrams handed to the SDK (after any delay).
    pub datagrams_delivered: u64,
    /// TCP streams opened.
    pub streams_opened: u64,
    /// TCP connections refused by a fault.
    pub streams_refused: u64,
    /// Open TCP streams reset by a fault.
    pub streams_severed: u64,
    /// Writes of signalling bytes that went out to the server (not held, not swallowed).
    pub signalling_writes: u64,
    /// ICE/TCP connections opened (media over TCP: held by media partitions).
    pub ice_tcp_opened: u64,
}

/// Faults on one direction of the media path.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PathFaults {
    /// Media cut: datagrams dropped, ICE/TCP connections held.
    blocked: bool,
    /// Datagrams dropped, ICE/TCP left alone (a firewall that blocks UDP).
    udp_blocked: bool,
    /// Probability of losing a datagram, 0.0..=1.0.
    loss: f64,
    delay: Duration,
}

/// Every fault currently in force.
#[derive(Debug, Default)]
struct FaultState {
    inbound: PathFaults,
    outbound: PathFaults,
    /// Streams born before this epoch are severed.
    sever_epoch: u64,
    refuse_connects: bool,
    black_hole: bool,
    hold: bool,
    deaf: bool,
    /// Sockets opened before this epoch are on a network that is gone.
    network_epoch: u64,
    /// Where UDP sockets are bound after a network change.
    bind_ip: Option<IpAddr>,
    /// The one peer whose datagrams a UDP block lets through (a TURN relay).
    udp_allowed: Option<SocketAddr>,
}

impl FaultState {
    /// Applies `change` to the faults of each path `direction` covers.
    fn change_paths(&mut self, direction: Direction, change: impl Fn(&mut PathFaults)) {
        if direction.includes(Direction::Inbound) {
            change(&mut self.inbound);
        }
        if direction.includes(Direction::Outbound) {
            change(&mut self.outbound);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_sent: AtomicU64,
    datagrams_sent_dropped: AtomicU64,
    datagrams_received: AtomicU64,
    datagrams_received_dropped: AtomicU64,
    datagrams_delivered: AtomicU64,
    streams_opened: AtomicU64,
    streams_refused: AtomicU64,
    streams_severed: AtomicU64,
    signalling_writes: AtomicU64,
    ice_tcp_opened: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the network, its sockets and streams, and the control handles.
#[derive(Debug)]
struct Shared {
    seed: u64,
    state: Mutex<FaultState>,
    counters: Counters,
    /// Numbers the sockets, so that each gets its own reproducible random stream.
    sockets_created: AtomicU64,
    /// The open streams, to wake them when a fault changes.
    streams: Mutex<Vec<Weak<StreamControl>>>,
}

/// Locks `mutex`; the data stays consistent even if a holder panicked, as every critical
/// section here is a plain assignment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        lock(&self.state)
    }

    /// Wakes every open stream so that it looks at the faults again.
    fn wake_streams(&self) {
        let mut streams = lock(&self.streams);
        streams.retain(|stream| match stream.upgrade() {
            Some(stream) => {
                stream.read.wake();
                stream.write.wake();
                true
            }
            None => false,
        });
    }

    /// Severs every stream opened so far; returns how many were open.
    fn sever_streams(&self) -> u64 {
        let severed_epoch = {
            let mut state = self.state();
            state.sever_epoch += 1;
            state.sever_epoch - 1
        };
        let open = lock(&self.streams)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|stream| !stream.media && stream.born == severed_epoch)
            .count() as u64;
        self.counters.streams_severed.fetch_add(open, Ordering::Relaxed);
        self.wake_streams();
        open
    }
}

/// A [`Network`] that injects the faults set through its [`NetFaults`] handle.
#[derive(Clone)]
pub struct FaultyNetwork {
    inner: Arc<dyn Network>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultyNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyNetwork").field("shared", &self.shared).finish_non_exhaustive()
    }
}

impl FaultyNetwork {
    /// Wraps `inner`, with no fault in force. `seed` makes the media loss reproducible.
    pub fn new(inner: Arc<dyn Network>, seed: u64) -> FaultyNetwork {
        let shared = Arc::new(Shared {
            seed,
            state: Mutex::new(FaultState::default()),
            counters: Counters::default(),
            sockets_created: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
        });
        FaultyNetwork { inner, shared }
    }

    /// The handle that switches this network's faults.
    pub fn faults(&self) -> NetFaults {
        NetFaults { shared: Arc::clone(&self.shared) }
    }
}

impl Network for FaultyNetwork {
    fn connect_tcp(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpConnection>> {
        let shared = Arc::clone(&self.shared);
        let born = {
            let state = shared.state();
            if state.refuse_connects {
                drop(state);
                bump(&shared.counters.streams_refused);
                debug!(host, port, "refusing a signalling connection (fault)");
                return Box::pin(std::future::ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!(
                        "connection to {host}:{port} refused by faultline's network fault \
                         (NetFaults::refuse_new_signalling)"
                    ),
                ))));
            }
            // Counted from the start, so that a sever during the connect kills it too.
            state.sever_epoch
        };
        let connecting = self.inner.connect_tcp(host, port);
        Box::pin(async move {
            let connection = connecting.await?;
            bump(&shared.counters.streams_opened);
            Ok(FaultyStream::wrap(connection, born, false, shared))
        })
    }

    fn connect_ice_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnection>> {
        let shared = Arc::clone(&self.shared);
        // Counted from the start, so that a network change during the connect kills it too.
        let born = shared.state().network_epoch;
        let connecting = self.inner.connect_ice_tcp(addr);
        Box::pin(async move {
            let connection = connecting.await?;
            bump(&shared.counters.ice_tcp_opened);
            Ok(FaultyStream::wrap(connection, born, true, shared))
        })
    }

    fn bind_udp(
        &self,
        local_ip: IpAddr,
    ) -> BoxFuture<'static, io::Result<Arc<dyn DatagramSocket>>> {
        let shared = Arc::clone(&self.shared);
        let (moved_to, network) = {
            let state = shared.state();
            (state.bind_ip, state.network_epoch)
        };
        let ip = moved_to.unwrap_or(local_ip);
        let index = shared.sockets_created.fetch_add(1, Ordering::Relaxed);
        let binding = self.inner.bind_udp(ip);
        Box::pin(async move {
            let inner = binding.await.map_err(|error| match moved_to {
                Some(ip) => io::Error::new(
                    error.kind(),
                    format!(
                        "binding a UDP socket on {ip}, the address after a simulated network \
                         change, failed: {error}; on macOS only 127.0.0.1 exists on the \
                         loopback interface unless aliased: sudo ifconfig lo0 alias {ip} up"
                    ),
                ),
                None => error,
            })?;
            let socket = FaultySocket::new(inner, shared, network, index);
            Ok(Arc::new(socket) as Arc<dyn DatagramSocket>)
        })
    }
}

/// Switches the faults of a [`FaultyNetwork`]; cheap to clone, all clones act on the same
/// network.
#[derive(Debug, Clone)]
pub struct NetFaults {
    shared: Arc<Shared>,
}

impl NetFaults {
    /// Drops every datagram travelling in `direction` (`Both` is a full media partition),
    /// and holds the ICE/TCP connections meanwhile (see the module docs). Adds to what is
    /// already blocked.
    pub fn partition_media(&self, direction: Direction) {
        self.shared.state().change_paths(direction, |path| path.blocked = true);
        self.shared.wake_streams();
        info!(?direction, "media partitioned (fault)");
    }

    /// Drops every datagram travelling in `direction` but leaves ICE/TCP alone, as a
    /// firewall that blocks UDP does. Adds to what is already blocked.
    pub fn block_udp(&self, direction: Direction) {
        self.shared.state().change_paths(direction, |path| path.udp_blocked = true);
        info!(?direction, "UDP blocked (fault)");
    }

    /// Drops every datagram but those to and from `relay`, both ways, and leaves ICE/TCP
    /// alone: a firewall that lets only a TURN relay through. Adds to what is already
    /// blocked.
    pub fn block_udp_except(&self, relay: SocketAddr) {
        let mut state = self.shared.state();
        state.udp_allowed = Some(relay);
        state.change_paths(Direction::Both, |path| path.udp_blocked = true);
        info!(%relay, "UDP blocked but to and from one relay (fault)");
    }

    /// Loses `percent` of the datagrams travelling in `direction`, at random from the
    /// network's seed.
    pub fn set_media_loss(&self, direction: Direction, percent: f64) -> Result<(), NetError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(NetError::InvalidLoss(percent));
        }
        self.shared.state().change_paths(direction, |path| path.loss = percent / 100.0);
        info!(?direction, percent, "media loss set (fault)");
        Ok(())
    }

    /// Delivers every datagram travelling in `direction` `delay` late, in order.
    pub fn set_media_delay(&self, direction: Direction, delay: Duration) {
        self.shared.state().change_paths(direction, |path| path.delay = delay);
        info!(?direction, ?delay, "media delay set (fault)");
    }

    /// Removes every media fault: partitions, UDP blocks, loss and delay. Datagrams already
    /// delayed are still delivered on time.
    pub fn heal_media(&self) {
        let mut state = self.shared.state();
        state.inbound = PathFaults::default();
        state.outbound = PathFaults::default();
        state.udp_allowed = None;
        drop(state);
        // Held ICE/TCP streams are waiting to be woken.
        self.shared.wake_streams();
        info!("media healed");
    }

    /// Resets every open signalling stream: their reads and writes fail with
    /// `ConnectionReset`. Streams opened afterwards work. Returns how many were severed.
    pub fn sever_signalling(&self) -> u64 {
        let severed = self.shared.sever_streams();
        info!(severed, "signalling severed (fault)");
        severed
    }

    /// Makes new signalling connections fail with `ConnectionRefused`; open ones go on.
    pub fn refuse_new_signalling(&self) {
        self.shared.state().refuse_connects = true;
        info!("new signalling connections refused (fault)");
    }

    /// Black-holes every signalling stream, open or new: reads wait, writes are swallowed.
    pub fn black_hole_signalling(&self) {
        self.shared.state().black_hole = true;
        self.shared.wake_streams();
        info!("signalling black-holed (fault)");
    }

    /// Holds every signalling stream, open or new: reads and writes wait and no byte is lost,
    /// like a paused proxy's.
    pub fn hold_signalling(&self) {
        self.shared.state().hold = true;
        self.shared.wake_streams();
        info!("signalling held (fault)");
    }

    /// Deafens every signalling stream, open or new: what arrives for the client is read and
    /// thrown away (reads wait), what it writes still goes out.
    pub fn deafen_signalling(&self) {
        self.shared.state().deaf = true;
        self.shared.wake_streams();
        info!("signalling deafened (fault)");
    }

    /// Accepts new signalling connections again and ends a black hole, a deafening or a
    /// hold; the streams that were in a black hole or deaf are reset, held ones carry on.
    pub fn heal_signalling(&self) {
        let was_black_hole = {
            let mut state = self.shared.state();
            state.refuse_connects = false;
            state.hold = false;
            std::mem::take(&mut state.black_hole) | std::mem::take(&mut state.deaf)
        };
        let severed = if was_black_hole { self.shared.sever_streams() } else { 0 };
        // Held streams are waiting to be woken.
        self.shared.wake_streams();
        info!(severed, "signalling healed");
    }

    /// Removes every media and signalling fault. A network change is not undone.
    pub fn heal(&self) {
        self.heal_media();
        self.heal_signalling();
    }

    /// Simulates a move to another network whose local address is `new_ip` (127.0.0.2 is a
    /// good choice on Linux; on macOS it needs `sudo ifconfig lo0 alias 127.0.0.2 up`).
    /// Every UDP socket opened so far drops all traffic from now on, every open signalling
    /// stream is reset, and UDP sockets opened from now on are bound on `new_ip`, whatever
    /// address the SDK asks for.
    pub fn change_network(&self, new_ip: IpAddr) {
        {
            let mut state = self.shared.state();
            state.network_epoch += 1;
            state.bind_ip = Some(new_ip);
        }
        let severed = self.shared.sever_streams();
        info!(%new_ip, severed, "network changed (fault)");
    }

    /// What the network has done so far.
    pub fn stats(&self) -> NetStats {
        let c = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetStats {
            datagrams_sent: get(&c.datagrams_sent),
            datagrams_sent_dropped: get(&c.datagrams_sent_dropped),
            datagrams_received: get(&c.datagrams_received),
            datagrams_received_dropped: get(&c.datagrams_received_dropped),
            datagrams_delivered: get(&c.datagrams_delivered),
            streams_opened: get(&c.streams_opened),
            streams_refused: get(&c.streams_refused),
            streams_severed: get(&c.streams_severed),
            signalling_writes: get(&c.signalling_writes),
            ice_tcp_opened: get(&c.ice_tcp_opened),
        }
    }
}

/// A datagram held back by a delay.
struct Delayed {
    due: Instant,
    bytes: Vec<u8>,
    peer: SocketAddr,
}

/// The inbound side of a socket: its loss draws and the datagrams being delayed.
struct Inbound {
    rng: SmallRng,
    queue: VecDeque<Delayed>,
}

/// The outbound side of a socket: its loss draws and the task sending delayed datagrams.
struct Outbound {
    rng: SmallRng,
    /// Feeds the delay task; created with the first delayed datagram.
    delayed: Option<mpsc::UnboundedSender<Delayed>>,
    /// When the last delayed datagram is due, so that order is kept when the delay shrinks.
    last_due: Option<Instant>,
}

/// A UDP socket with the network's media faults applied.
struct FaultySocket {
    inner: Arc<dyn DatagramSocket>,
    shared: Arc<Shared>,
    /// The network epoch the socket was opened in.
    network: u64,
    inbound: Mutex<Inbound>,
    outbound: Mutex<Outbound>,
    /// Delayed outbound datagrams not yet sent.
    in_flight: Arc<AtomicUsize>,
}

impl FaultySocket {
    fn new(
        inner: Arc<dyn DatagramSocket>,
        shared: Arc<Shared>,
        network: u64,
        index: u64,
    ) -> FaultySocket {
        let rng = |stream: u64| {
            // Distinct, reproducible streams per socket and direction.
            let salt = (index * 2 + stream).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            SmallRng::seed_from_u64(shared.seed ^ salt)
        };
        FaultySocket {
            inbound: Mutex::new(Inbound { rng: rng(0), queue: VecDeque::new() }),
            outbound: Mutex::new(Outbound { rng: rng(1), delayed: None, last_due: None }),
            inner,
            network,
            shared,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The faults of one direction now (`outbound` or inbound) for datagrams to or from
    /// `peer`, with the socket's network gone counted as a partition.
    fn faults(&self, outbound: bool, peer: SocketAddr) -> PathFaults {
        let state = self.shared.state();
        let mut faults = if outbound { state.outbound } else { state.inbound };
        let udp_blocked = faults.udp_blocked && state.udp_allowed != Some(peer);
        faults.blocked |= udp_blocked || self.network < state.network_epoch;
        faults
    }

    async fn send(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        let counters = &self.shared.counters;
        bump(&counters.datagrams_sent);
        let faults = self.faults(true, target);
        let delayed = {
            let mut outbound = lock(&self.outbound);
            let lost = faults.loss > 0.0 && outbound.rng.random_bool(faults.loss);
            if faults.blocked || lost {
                bump(&counters.datagrams_sent_dropped);
                return Ok(buf.len());
            }
            if faults.delay.is_zero() && self.in_flight.load(Ordering::Acquire) == 0 {
                None
            } else {
                let due = (Instant::now() + faults.delay)
                    .max(outbound.last_due.unwrap_or(Instant::now()));
                outbound.last_due = Some(due);
                let sender = outbound.delayed.get_or_insert_with(|| {
                    let (sender, queue) = mpsc::unbounded_channel();
                    tokio::spawn(send_delayed(
                        Arc::clone(&self.inner),
                        queue,
                        Arc::clone(&self.in_flight),
                    ));
                    sender
                });
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                Some(sender.send(Delayed { due, bytes: buf.to_vec(), peer: target }))
            }
        };
        match delayed {
            None => self.inner.send_to(buf, target).await,
            Some(Ok(())) => Ok(buf.len()),
            Some(Err(_)) => {
                Err(io::Error::other("the delayed-send task of a faulty socket stopped"))
            }
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let counters = &self.shared.counters;
        loop {
            let due = lock(&self.inbound).queue.front().map(|delayed| delayed.due);
            let arrived = match due {
                Some(due) if due <= Instant::now() => None,
                Some(due) => tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(due) => None,
                    received = self.inner.recv_from(buf) => Some(received?),
                },
                None => Some(self.inner.recv_from(buf).await?),
            };
            let Some((len, peer)) = arrived else {
                // The head of the queue is due.
                let Some(delayed) = lock(&self.inbound).queue.pop_front() else { continue };
                let len = delayed.bytes.len().min(buf.len());
                buf[..len].copy_from_slice(&delayed.bytes[..len]);
                bump(&counters.datagrams_delivered);
                return Ok((len, delayed.peer));
            };
            bump(&counters.datagrams_received);
            let faults = self.faults(false, peer);
            let mut inbound = lock(&self.inbound);
            let lost = faults.loss > 0.0 && inbound.rng.random_bool(faults.loss);
            if faults.blocked || lost {
                bump(&counters.datagrams_received_dropped);
                continue;
            }
            if faults.delay.is_zero() && inbound.queue.is_empty() {
                bump(&counters.datagrams_delivered);
                return Ok((len, peer));
            }
            let mut due = Instant::now() + faults.delay;
            if let Some(last) = inbound.queue.back() {
                due = due.max(last.due);
            }
            inbound.queue.push_back(Delayed { due, bytes: buf[..len].to_vec(), peer });
        }
    }
}

/// Sends delayed datagrams when they are due, in order, until the socket is dropped and the
/// queue is empty.
async fn send_delayed(
    socket: Arc<dyn DatagramSocket>,
    mut queue: mpsc::UnboundedReceiver<Delayed>,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some(delayed) = queue.recv().await {
        tokio::time::sleep_until(delayed.due).await;
        if let Err(error) = socket.send_to(&delayed.bytes, delayed.peer).await {
            debug!(%error, peer = %delayed.peer, "a delayed datagram could not be sent");
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DatagramSocket for FaultySocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        target: SocketAddr,
    ) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.send(buf, target))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.recv(buf))
    }
}

/// What the network knows about one open stream.
#[derive(Debug)]
struct StreamControl {
    /// The sever epoch the stream was opened in (for an ICE/TCP stream, the network epoch).
    born: u64,
    /// An ICE/TCP stream (media faults apply), not a signalling one.
    media: bool,
    read: AtomicWaker,
    write: AtomicWaker,
}

/// What a stream must do now.
enum Verdict {
    Pass,
    BlackHole,
    Hold,
    Deaf,
    Severed,
}

/// A signalling stream with the network's signalling faults applied, or an ICE/TCP stream
/// with its media faults.
struct FaultyStream {
    /// `None` once severed: the real connection is closed.
    inner: Option<Box<dyn AsyncStream>>,
    /// Bytes written while held, passed on before anything newer once the hold ends.
    held: Vec<u8>,
    control: Arc<StreamControl>,
    shared: Arc<Shared>,
}

impl FaultyStream {
    /// `connection` with the faults applied: a signalling stream born in sever epoch `born`,
    /// or (`media`) an ICE/TCP stream born in network epoch `born`.
    fn wrap(
        connection: TcpConnection,
        born: u64,
        media: bool,
        shared: Arc<Shared>,
    ) -> TcpConnection {
        let control = Arc::new(StreamControl {
            born,
            media,
            read: AtomicWaker::new(),
            write: AtomicWaker::new(),
        });
        lock(&shared.streams).push(Arc::downgrade(&control));
        TcpConnection {
            stream: Box::new(FaultyStream {
                inner: Some(connection.stream),
                held: Vec::new(),
                control,
                shared,
            }),
            local_addr: connection.local_addr,
            peer_addr: connection.peer_addr,
        }
    }

    /// Looks at the faults; on a sever, closes the real connection and gives the error.
    fn verdict(&mut self) -> io::Result<(Verdict, &mut Box<dyn AsyncStream>)> {
        let (verdict, inner, _) = self.verdict_and_held()?;
        Ok((verdict, inner))
    }

    /// [`Self::verdict`], with the bytes kept during a hold.
    fn verdict_and_held(
        &mut self,
    ) -> io::Result<(Verdict, &mut Box<dyn AsyncStream>, &mut Vec<u8>)> {
        let verdict = {
            let state = self.shared.state();
            if self.control.media {
                if self.control.born < state.network_epoch {
                    Verdict::Severed
                } else if state.inbound.blocked || state.outbound.blocked {
                    Verdict::Hold
                } else {
                    Verdict::Pass
                }
            } else if self.control.born < state.sever_epoch {
                Verdict::Severed
            } else if state.black_hole {
                Verdict::BlackHole
            } else if state.hold {
                Verdict::Hold
            } else if state.deaf {
                Verdict::Deaf
            } else {
                Verdict::Pass
            }
        };
        if matches!(verdict, Verdict::Severed) {
            self.inner = None;
        }
        match self.inner.as_mut() {
            Some(inner) => Ok((verdict, inner, &mut self.held)),
            None if self.control.media => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "ICE/TCP connection reset by faultline's network fault (NetFaults::change_network)",
            )),
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "signalling connection reset by faultline's network fault \
                 (NetFaults::sever_signalling, change_network or the end of a black hole)",
            )),
        }
    }
}

impl AsyncRead for FaultyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Registered before looking, so that a fault set meanwhile still wakes us.
        this.control.read.register(cx.waker());
        match this.verdict_and_held() {
            Err(error) => Poll::Ready(Err(error)),
            Ok((Verdict::BlackHole | Verdict::Hold, _, _)) => Poll::Pending,
            Ok((Verdict::Deaf, inner, _)) => {
                // Read and drop what arrives until nothing is left, then wait.
                let mut scratch = [0_u8; 4096];
                loop {
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut *inner).poll_read(cx, &mut sink) {
                        Poll::Ready(Ok(())) if sink.filled().is_empty() => {
                            return Poll::Ready(Ok(()))
                        }
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
            Ok((_, inner, held)) => {
                // After a hold, what was kept goes out without waiting for the next write
                // (the owner may only be reading); a full socket is retried at the next poll.
                if let Poll::Ready(Err(error)) = pass_held(held, inner, cx) {
                    return Poll::Ready(Err(error));
                }
                Pin::new(inner).poll_read(cx, buf)
            }
        }
    }
}

/// Passes the bytes kept during a hold to `inner`; ready once none are left.
fn pass_held(
    held: &mut Vec<u8>,
    inner: &mut Box<dyn AsyncStream>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !held.is_empty() {
        match Pin::new(&mut *inner).poll_write(cx, held) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the connection took none of the bytes held during a hold",
                )))
            }
            Poll::Ready(Ok(n)) => {
                held.drain(..n);
            }
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
}

impl AsyncWrite for FaultyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.control.write.register(cx.waker());
        match this.verdict_and_held() {
            Err(error) => Poll::Ready(Err(error)),
            Ok((Verdict::BlackHole, _, _)) => Poll::Ready(Ok(buf.len())),
            Ok((Verdict::Hold, _, held)) => {
                let room = HOLD_BUFFER.saturating_sub(held.len()).min(buf.len());
                if room == 0 {
                    return Poll::Pending;
                }
                held.extend_from_slice(&buf[..room]);
                Poll::Ready(Ok(room))
            }
            Ok((_, inner, held)) => match pass_held(held, inner, cx) {
                Poll::Ready(Ok(())) => {
                    let written = Pin::new(inner).poll_write(cx, buf);
                    if !this.control.media && matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                        bump(&this.shared.counters.signalling_writes);
                    }
                    written
                }
                other => other.map_ok(|()| 0),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.control.write.register(cx.waker());
        match this.verdict_and_held() {
            Err(error) => Poll::Ready(Err(error)),
            // Like a socket's: a flush does not wait for the peer.
            Ok((Verdict::BlackHole | Verdict::Hold, _, _)) => Poll::Ready(Ok(())),
            Ok((_, inner, held)) => match pass_held(held, inner, cx) {
                Poll::Ready(Ok(())) => Pin::new(inner).poll_flush(cx),
                other => other,
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.control.write.register(cx.waker());
        match this.verdict() {
            Err(error) => Poll::Ready(Err(error)),
            Ok((Verdict::BlackHole, _)) => Poll::Ready(Ok(())),
            Ok((Verdict::Hold, _)) => Poll::Pending,
            Ok((_, inner)) => Pin::new(inner).poll_shutdown(cx),
        }
    }
}
