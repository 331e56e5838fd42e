//! A killable TCP proxy: put it in front of any address (typically livekit-server's
//! signalling port) and cut, stall, black-hole or throttle the connections that go through it.
//!
//! The proxy listens on `127.0.0.1` (or the address given to [`Proxy::start_on`]) on a port
//! the system picks and forwards every accepted connection to its upstream. Its [`Mode`] can be switched at any time and applies to the
//! connections already open as well as to new ones:
//!
//! | mode | open connections | new connections |
//! |---|---|---|
//! | [`Mode::Pass`] | forwarded | accepted and forwarded |
//! | [`Mode::Killed`] | reset (the client reads `ECONNRESET`) | refused (`ECONNREFUSED`: nothing listens) |
//! | [`Mode::BlackHole`] | kept open, every byte dropped | accepted, every byte dropped |
//! | [`Mode::Paused`] | kept open, bytes held | accepted, bytes held |
//! | [`Mode::RefuseNew`] | forwarded | refused (`ECONNREFUSED`) |
//!
//! Leaving a black hole resets every connection that was in it. A black hole models a peer
//! that vanished without a word (a dead Wi-Fi link, a dropped NAT mapping, a powered-off
//! host): the bytes sent into it are gone, so the byte stream cannot go on, and a peer that
//! comes back has no memory of the connection and answers it with a reset. Leaving a pause,
//! by contrast, delivers everything that was held, in order — a stall, not a loss.
//!
//! A throttle ([`Proxy::throttle`]) is independent of the mode: it caps each direction of each
//! connection at a number of bytes per second.
//!
//! Every change is logged with `tracing` and published, with the time it happened, to
//! [`Proxy::subscribe`], so a scenario runner can put the faults on its timeline. Dropping the
//! [`Proxy`] closes its listener and every connection: none of its tasks outlives it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long re-opening the listener after a kill retries while the port is still in use.
const REBIND_PATIENCE: Duration = Duration::from_secs(2);
/// How long [`Proxy::kill`] waits for every connection to be reset.
const SEVER_PATIENCE: Duration = Duration::from_secs(5);
/// Largest chunk the proxy reads at once.
const CHUNK: usize = 16 * 1024;
/// A throttled connection moves at most `rate / THROTTLE_SLICES` bytes in one burst.
const THROTTLE_SLICES: u64 = 20;

/// What the proxy does with connections; see the table in the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Reset every connection and refuse new ones.
    Killed,
    /// Keep connections open but drop every byte in both directions; connections that were
    /// in the black hole are reset when it ends.
    BlackHole,
    /// Hold every byte in both directions until the mode changes; nothing is lost.
    Paused,
    /// Keep forwarding on open connections, refuse new ones.
    RefuseNew,
}

impl Mode {
    /// Whether the proxy accepts new connections in this mode.
    fn listens(self) -> bool {
        matches!(self, Mode::Pass | Mode::BlackHole | Mode::Paused)
    }
}

/// One change of the proxy's behaviour, as published by [`Proxy::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyEvent {
    /// When the change took effect (`tokio::time`, so it follows a paused or simulated clock).
    pub at: Instant,
    /// What changed.
    pub change: Change,
}

/// What a [`ProxyEvent`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The mode switched.
    Mode {
        /// The mode before the change.
        from: Mode,
        /// The mode after the change.
        to: Mode,
    },
    /// The throttle was set (`Some`) or lifted (`None`).
    Throttle {
        /// The new cap per direction and connection, in bytes per second.
        bytes_per_sec: Option<u64>,
    },
}

/// Counters of what the proxy has done since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted from clients.
    pub accepted: u64,
    /// Connections currently open.
    pub active: u64,
    /// Connections the proxy reset on purpose (a kill, or the end of a black hole).
    pub severed: u64,
    /// Accepted connections that were closed because the upstream could not be reached.
    pub upstream_errors: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_up: u64,
    /// Bytes forwarded from the upstream to clients.
    pub bytes_down: u64,
    /// Bytes dropped in a black hole, both directions together.
    pub bytes_dropped: u64,
}

/// Why a proxy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy could not open its listening socket.
    #[error("the proxy could not listen on {addr}: {source}")]
    Listen {
        /// The address it tried to listen on.
        addr: SocketAddr,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// After a kill or refuse-new, the proxy's port was taken before it could listen again.
    #[error(
        "the proxy could not listen on {addr} again: the port was still in use after \
         {patience:?} ({source}); another process probably took it while the proxy was \
         closed — start a new proxy instead of healing this one"
    )]
    PortTaken {
        /// The address the proxy listened on before.
        addr: SocketAddr,
        /// How long it retried.
        patience: Duration,
        /// The last error from the operating system.
        #[source]
        source: io::Error,
    },
    /// A throttle of zero bytes per second was asked for.
    #[error(
        "a throttle must allow at least 1 byte per second, got 0; use pause() to stop the \
         traffic or throttle(None) to remove the limit"
    )]
    ZeroRate,
    /// A kill did not manage to close every connection in time.
    #[error(
        "the proxy on {addr} still had {active} open connection(s) {patience:?} after it was \
         killed; this is a bug in faultline's proxy"
    )]
    SeverTimeout {
        /// The proxy's address.
        addr: SocketAddr,
        /// Connections still open.
        active: u64,
        /// How long the kill waited.
        patience: Duration,
    },
}

/// The link settings every connection follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    mode: Mode,
    throttle: Option<u64>,
}

/// Counters shared by the proxy and its tasks.
#[derive(Debug)]
struct Counters {
    accepted: AtomicU64,
    severed: AtomicU64,
    upstream_errors: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    bytes_dropped: AtomicU64,
    /// Open connections; a watch so that a kill can wait for it to reach zero.
    active: watch::Sender<u64>,
}

impl Counters {
    fn new() -> Self {
        Counters {
            accepted: AtomicU64::new(0),
            severed: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_dropped: AtomicU64::new(0),
            active: watch::Sender::new(0),
        }
    }
}

/// Counts one open connection for as long as it lives (also when its task is aborted).
struct ActiveGuard(Arc<Counters>);

impl ActiveGuard {
    fn new(counters: &Arc<Counters>) -> Self {
        counters.active.send_modify(|n| *n += 1);
        ActiveGuard(Arc::clone(counters))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// An accepted client connection on its way to the task that serves it.
struct Accepted {
    client: TcpStream,
    guard: ActiveGuard,
}

/// The running accept loop of a listening proxy.
#[derive(Debug)]
struct AcceptLoop {
    task: JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

/// A killable TCP proxy; see the [module docs](self).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    /// Where new connections go; connections already open keep their upstream.
    upstream: watch::Receiver<SocketAddr>,
    link: watch::Sender<Link>,
    counters: Arc<Counters>,
    events: broadcast::Sender<ProxyEvent>,
    /// Hands accepted connections to the supervisor.
    accepted: mpsc::UnboundedSender<Accepted>,
    /// The accept loop while the proxy listens. The lock also serializes mode changes.
    listener: Mutex<Option<AcceptLoop>>,
    /// Owns every connection task; aborting it closes them all.
    supervisor: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream`, listening on `127.0.0.1` on a port the system picks, in
    /// [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> Result<Proxy, ProxyError> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream).await
    }

    /// Starts a proxy to `upstream` listening on `wanted` (port 0: one the system picks), in
    /// [`Mode::Pass`]. For clients in network namespaces, listen on the topology's
    /// [`root_address`](crate::netns::Topology::root_address).
    pub async fn start_on(wanted: SocketAddr, upstream: SocketAddr) -> Result<Proxy, ProxyError> {
        // A receiver keeps the last value after its sender is gone: a fixed upstream.
        Self::start_routed(wanted, watch::channel(upstream).1).await
    }

    /// Starts a proxy listening on `wanted` that forwards each new connection to wherever
    /// `route` points when the connection is accepted (a load balancer in front of several
    /// servers: [`crate::cluster`] re-points it when a node dies or drains). Connections
    /// already open keep their upstream.
    pub async fn start_routed(
        wanted: SocketAddr,
        route: watch::Receiver<SocketAddr>,
    ) -> Result<Proxy, ProxyError> {
        let upstream = *route.borrow();
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| ProxyError::Listen { addr: wanted, source })?;
        let addr =
            listener.local_addr().map_err(|source| ProxyError::Listen { addr: wanted, source })?;
        let (link, _) = watch::channel(Link { mode: Mode::Pass, throttle: None });
        let counters = Arc::new(Counters::new());
        let (accepted, queue) = mpsc::unbounded_channel();
        let supervisor =
            tokio::spawn(supervise(queue, route.clone(), link.subscribe(), Arc::clone(&counters)));
        let proxy = Proxy {
            addr,
            upstream: route,
            link,
            counters,
            events: broadcast::channel(256).0,
            accepted,
            listener: Mutex::new(None),
            supervisor,
        };
        *proxy.listener.lock().await = Some(proxy.spawn_accept_loop(listener));
        info!(proxy = %addr, %upstream, "proxy started");
        Ok(proxy)
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards new connections to.
    pub fn upstream(&self) -> SocketAddr {
        *self.upstream.borrow()
    }

    /// A URL with `scheme` for the proxy's address, e.g. `url("http")` is
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// The `ws://` URL of the proxy, for a LiveKit client.
    pub fn ws_url(&self) -> String {
        self.url("ws")
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.link.borrow().mode
    }

    /// What the proxy has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            accepted: c.accepted.load(Ordering::Relaxed),
            active: *c.active.borrow(),
            severed: c.severed.load(Ordering::Relaxed),
            upstream_errors: c.upstream_errors.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            bytes_dropped: c.bytes_dropped.load(Ordering::Relaxed),
        }
    }

    /// Every change made from now on, with its time.
    pub fn subscribe(&self) -> broadcast::Receiver<ProxyEvent> {
        self.events.subscribe()
    }

    /// Switches to `to`. The change applies to open connections at once; when this returns,
    /// the listener is closed (for [`Mode::Killed`] and [`Mode::RefuseNew`]) or open again on
    /// the same port, and after a kill every connection has been reset.
    pub async fn set_mode(&self, to: Mode) -> Result<(), ProxyError> {
        let mut listener = self.listener.lock().await;
        let from = self.mode();
        if to.listens() {
            // Switch first, so that a connection accepted by the new listener sees `to`.
            self.link.send_modify(|link| link.mode = to);
            if listener.is_none() {
                match self.rebind().await {
                    Ok(socket) => *listener = Some(self.spawn_accept_loop(socket)),
                    Err(error) => {
                        self.link.send_modify(|link| link.mode = from);
                        return Err(error);
                    }
                }
            }
        } else {
            // Close first, so that no connection is accepted after the switch.
            if let Some(accept_loop) = listener.take() {
                // The loop ends as soon as it sees the stop; a loop that already ended (it
                // cannot, short of a panic) has nothing left to hand over.
                let _ = accept_loop.stop.send(());
                let _ = accept_loop.task.await;
            }
            self.link.send_modify(|link| link.mode = to);
        }
        info!(proxy = %self.addr, ?from, ?to, "proxy mode changed");
        // Nobody listening is fine: events are for whoever wants them.
        let _ =
            self.events.send(ProxyEvent { at: Instant::now(), change: Change::Mode { from, to } });
        if to == Mode::Killed {
            self.wait_all_closed().await?;
        }
        Ok(())
    }

    /// Resets every connection and refuses new ones ([`Mode::Killed`]).
    pub async fn kill(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::Killed).await
    }

    /// Keeps connections open but drops every byte ([`Mode::BlackHole`]).
    pub async fn black_hole(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::BlackHole).await
    }

    /// Holds every byte until [`Proxy::resume`] ([`Mode::Paused`]).
    pub async fn pause(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::Paused).await
    }

    /// Delivers what a pause held and forwards again ([`Mode::Pass`]).
    pub async fn resume(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::Pass).await
    }

    /// Refuses new connections, keeps forwarding on open ones ([`Mode::RefuseNew`]).
    pub async fn refuse_new(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::RefuseNew).await
    }

    /// Back to [`Mode::Pass`], listening again on the same port if the proxy was closed.
    pub async fn heal(&self) -> Result<(), ProxyError> {
        self.set_mode(Mode::Pass).await
    }

    /// Caps each direction of each connection at `bytes_per_sec` (`None` lifts the cap).
    /// Applies to open connections from their next chunk on.
    pub fn throttle(&self, bytes_per_sec: Option<u64>) -> Result<(), ProxyError> {
        if bytes_per_sec == Some(0) {
            return Err(ProxyError::ZeroRate);
        }
        self.link.send_modify(|link| link.throttle = bytes_per_sec);
        info!(proxy = %self.addr, ?bytes_per_sec, "proxy throttle changed");
        let _ = self
            .events
            .send(ProxyEvent { at: Instant::now(), change: Change::Throttle { bytes_per_sec } });
        Ok(())
    }

    fn spawn_accept_loop(&self, listener: TcpListener) -> AcceptLoop {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            self.accepted.clone(),
            Arc::clone(&self.counters),
            stopped,
        ));
        AcceptLoop { task, stop }
    }

    /// Listens on the proxy's port again, retrying while the system still holds it.
    async fn rebind(&self) -> Result<TcpListener, ProxyError> {
        let deadline = Instant::now() + REBIND_PATIENCE;
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => return Ok(listener),
                Err(source) if source.kind() == io::ErrorKind::AddrInUse => {
                    if Instant::now() >= deadline {
                        return Err(ProxyError::PortTaken {
                            addr: self.addr,
                            patience: REBIND_PATIENCE,
                            source,
                        });
                    }
                    debug!(proxy = %self.addr, "port still in use; retrying");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(source) => return Err(ProxyError::Listen { addr: self.addr, source }),
            }
        }
    }

    async fn wait_all_closed(&self) -> Result<(), ProxyError> {
        let mut active = self.counters.active.subscribe();
        let closed = tokio::time::timeout(SEVER_PATIENCE, active.wait_for(|n| *n == 0)).await;
        if closed.is_err() {
            return Err(ProxyError::SeverTimeout {
                addr: self.addr,
                active: *self.counters.active.borrow(),
                patience: SEVER_PATIENCE,
            });
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(accept_loop) = self.listener.get_mut().take() {
            accept_loop.task.abort();
        }
        self.supervisor.abort();
        debug!(proxy = %self.addr, "proxy stopped");
    }
}

/// Accepts clients and hands them to the supervisor until told to stop; then it also hands
/// over the connections already waiting in the backlog, so that every connection the system
/// completed before the stop is served rather than reset.
async fn accept_loop(
    listener: TcpListener,
    accepted: mpsc::UnboundedSender<Accepted>,
    counters: Arc<Counters>,
    mut stop: oneshot::Receiver<()>,
) {
    let hand_over = |client: TcpStream, peer: SocketAddr| {
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, "proxy accepted a connection");
        let guard = ActiveGuard::new(&counters);
        // Fails only while the proxy is being dropped, which closes everything anyway.
        let _ = accepted.send(Accepted { client, guard });
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => {
                while let Some(Ok((client, peer))) = listener.accept().now_or_never() {
                    hand_over(client, peer);
                }
                return;
            }
            next = listener.accept() => match next {
                Ok((client, peer)) => hand_over(client, peer),
                Err(error) => {
                    // Typically out of file descriptors; back off instead of spinning.
                    warn!(%error, "proxy could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Owns the connection tasks: aborting it aborts them all.
async fn supervise(
    mut queue: mpsc::UnboundedReceiver<Accepted>,
    route: watch::Receiver<SocketAddr>,
    link: watch::Receiver<Link>,
    counters: Arc<Counters>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            next = queue.recv() => match next {
                Some(accepted) => {
                    let upstream = *route.borrow();
                    connections.spawn(serve(accepted, upstream, link.clone(), Arc::clone(&counters)));
                }
                None => return,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How one direction of a connection ended.
enum End {
    /// The sender closed its side; the close was passed on.
    Eof,
    /// The proxy cut the connection on purpose.
    Severed,
    /// A socket failed.
    Failed(io::Error),
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Up,
    Down,
}

/// Forwards one accepted connection until it ends or is cut.
async fn serve(
    accepted: Accepted,
    upstream: SocketAddr,
    mut link: watch::Receiver<Link>,
    counters: Arc<Counters>,
) {
    let Accepted { mut client, guard: _guard } = accepted;
    let connected = tokio::select! {
        biased;
        _ = link.wait_for(|l| l.mode == Mode::Killed) => None,
        connected = TcpStream::connect(upstream) => Some(connected),
    };
    let mut server = match connected {
        None => {
            counters.severed.fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        }
        Some(Ok(server)) => server,
        Some(Err(error)) => {
            warn!(%upstream, %error, "proxy could not reach its upstream; resetting the client");
            counters.upstream_errors.fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        }
    };
    // Signalling is latency-sensitive; a failure here only costs latency.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    // Set once the connection has been in a black hole: it must not carry bytes again.
    let doomed = AtomicBool::new(false);
    let end = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let up = pump(
            &mut client_read,
            &mut server_write,
            Direction::Up,
            link.clone(),
            &doomed,
            &counters,
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            Direction::Down,
            link.clone(),
            &doomed,
            &counters,
        );
        let (mut up, mut down) = (pin!(up), pin!(down));
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
            };
            match end {
                End::Eof if up_done && down_done => break End::Eof,
                End::Eof => {}
                other => break other,
            }
        }
    };
    match end {
        End::Eof => {}
        End::Severed => {
            counters.severed.fetch_add(1, Ordering::Relaxed);
            reset(client);
            reset(server);
        }
        End::Failed(error) => {
            debug!(%error, "a proxied connection failed; resetting both ends");
            reset(client);
            reset(server);
        }
    }
}

/// Closes `stream` with a reset rather than an orderly close.
fn reset(stream: TcpStream) {
    // Without zero linger the close is orderly, which is still a close.
    let _ = stream.set_zero_linger();
}

/// A chunk read from one side, waiting to be passed on.
enum Chunk {
    Data(usize),
    Eof,
}

/// Moves bytes one way, obeying the link, until the sender closes or the connection is cut.
async fn pump(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    direction: Direction,
    mut link: watch::Receiver<Link>,
    doomed: &AtomicBool,
    counters: &Counters,
) -> End {
    let mut buf = vec![0; CHUNK];
    loop {
        // Wait until reading is allowed, then read one chunk.
        let current = *link.borrow_and_update();
        match current.mode {
            Mode::Killed => return End::Severed,
            Mode::Paused => {
                if link.changed().await.is_err() {
                    return End::Severed;
                }
                continue;
            }
            Mode::BlackHole => doomed.store(true, Ordering::Relaxed),
            Mode::Pass | Mode::RefuseNew if doomed.load(Ordering::Relaxed) => return End::Severed,
            Mode::Pass | Mode::RefuseNew => {}
        }
        let limit = current.throttle.map_or(CHUNK, |rate| {
            usize::try_from(rate / THROTTLE_SLICES).unwrap_or(CHUNK).clamp(1, CHUNK)
        });
        let chunk = tokio::select! {
            read = from.read(&mut buf[..limit]) => match read {
                Ok(0) => Chunk::Eof,
                Ok(n) => Chunk::Data(n),
                Err(error) => return End::Failed(error),
            },
            changed = link.changed() => {
                if changed.is_err() {
                    return End::Severed;
                }
                continue;
            }
        };
        // Pass the chunk on once the link allows it.
        loop {
            let current = *link.borrow_and_update();
            match current.mode {
                Mode::Killed => return End::Severed,
                Mode::Paused => {
                    if link.changed().await.is_err() {
                        return End::Severed;
                    }
                }
                Mode::BlackHole => {
                    doomed.store(true, Ordering::Relaxed);
                    match chunk {
                        Chunk::Data(n) => {
                            counters.bytes_dropped.fetch_add(n as u64, Ordering::Relaxed);
                            break;
                        }
                        // The close is swallowed too; the connection ends with the black hole.
                        Chunk::Eof => {
                            let _ = link.wait_for(|l| l.mode != Mode::BlackHole).await;
                            return End::Severed;
                        }
                    }
                }
                Mode::Pass | Mode::RefuseNew if doomed.load(Ordering::Relaxed) => {
                    return End::Severed
                }
                Mode::Pass | Mode::RefuseNew => {
                    let n = match chunk {
                        Chunk::Eof => {
                            return match to.shutdown().await {
                                Ok(()) => End::Eof,
                                Err(error) => End::Failed(error),
                            }
                        }
                        Chunk::Data(n) => n,
                    };
                    let written = tokio::select! {
                        written = to.write_all(&buf[..n]) => written,
                        _ = link.wait_for(|l| l.mode == Mode::Killed) => return End::Severed,
                    };
                    if let Err(error) = written {
                        return End::Failed(error);
                    }
                    let forwarded = match direction {
                        Direction::Up => &counters.bytes_up,
                        Direction::Down => &counters.bytes_down,
                    };
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(rate) = current.throttle {
                        let pace = Duration::from_secs_f64(n as f64 / rate as f64);
                        tokio::select! {
                            _ = tokio::time::sleep(pace) => {}
                            _ = link.wait_for(|l| l.mode == Mode::Killed) => return End::Severed,
                        }
                    }
                    break;
                }
            }
        }
    }
}
