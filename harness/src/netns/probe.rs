//! Numbered UDP datagrams through a topology, to see what a link does to real packets: each
//! carries its number and its send time, so the receiving end — in the same process — knows
//! which arrived, how often, in what order, and how long each took one way. The netns tests
//! check the emulator ([`Link::emulate`](super::Link::emulate)) with it, and
//! `faultline bench link` measures it.
//!
//! A datagram starts with its number (4 bytes, big-endian) and the nanoseconds from the
//! stream's start to just before it was sent (8 bytes, big-endian); the rest is zeros.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::error::NetnsError;
use super::namespace::Namespace;

/// The bytes a probe datagram needs at least: its number and its send time.
pub const HEADER: usize = 12;

/// One datagram as the receiving end saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Its number, in sending order.
    pub number: u32,
    /// One-way time: from just before it was sent to its arrival.
    pub took: Duration,
    /// When it arrived, since the stream started.
    pub at: Duration,
}

/// Why a stream could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A datagram too short to carry its number and send time.
    #[error("a probe datagram needs at least {HEADER} bytes (its number and send time), not {0}")]
    TooSmall(usize),
    /// Something else than the stream's datagrams reached the receiving socket.
    #[error("a datagram of {len} bytes arrived, {size} were sent")]
    WrongSize {
        /// What arrived.
        len: usize,
        /// What was sent.
        size: usize,
    },
    /// The socket could not be made in its namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A socket operation failed.
    #[error("probe socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A tokio UDP socket bound to `addr` inside `namespace` (port 0: any free one).
pub fn udp_socket(
    namespace: &Namespace,
    addr: impl Into<SocketAddr>,
) -> Result<UdpSocket, ProbeError> {
    let addr = addr.into();
    let socket = namespace.run(|| std::net::UdpSocket::bind(addr))??;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket)?)
}

/// How a stream is sent: `burst` datagrams at once (at least 1), a burst every `every`.
/// Burst `k` is due `k · every` after the start, and a sender that falls behind catches up
/// at once: a `burst` of the whole count goes as fast as the socket takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Datagrams sent back to back.
    pub burst: u32,
    /// From one burst's due time to the next's.
    pub every: Duration,
}

/// Sends `count` numbered datagrams of `size` bytes from `from` to `to` at `pace`, and
/// returns what `to` received, in arrival order, until nothing came for `quiet` (make it
/// longer than any delay on the path). Sender and receiver take turns on the calling task;
/// [`send`] and [`receive`] apart can run on two.
pub async fn stream_through(
    from: &UdpSocket,
    to: &UdpSocket,
    count: u32,
    size: usize,
    pace: Pace,
    quiet: Duration,
) -> Result<Vec<Arrival>, ProbeError> {
    let start = Instant::now();
    let target = to.local_addr()?;
    let (arrivals, sent) =
        tokio::join!(receive(to, start, size, quiet), send(from, target, start, count, size, pace));
    sent?;
    arrivals
}

/// Sends `count` numbered datagrams of `size` bytes from `from` to `target` at `pace`, each
/// stamped with its time since `start`.
pub async fn send(
    from: &UdpSocket,
    target: SocketAddr,
    start: Instant,
    count: u32,
    size: usize,
    pace: Pace,
) -> Result<(), ProbeError> {
    if size < HEADER {
        return Err(ProbeError::TooSmall(size));
    }
    let mut packet = vec![0u8; size];
    let burst = pace.burst.max(1);
    for number in 0..count {
        if number > 0 && number % burst == 0 {
            let due = start + pace.every * (number / burst);
            tokio::time::sleep_until(due.into()).await;
        }
        packet[..4].copy_from_slice(&number.to_be_bytes());
        let sent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        packet[4..HEADER].copy_from_slice(&sent.to_be_bytes());
        from.send_to(&packet, target).await?;
    }
    Ok(())
}

/// What `to` receives of a stream [`send`] stamped with the same `start`, in arrival order,
/// until nothing came for `quiet`. Every datagram must be `size` bytes.
pub async fn receive(
    to: &UdpSocket,
    start: Instant,
    size: usize,
    quiet: Duration,
) -> Result<Vec<Arrival>, ProbeError> {
    let mut arrivals = Vec::new();
    let mut buf = vec![0; size.max(2048)];
    loop {
        // Read what is there without a timer each; wait (bounded by `quiet`) only when
        // nothing is.
        let len = match to.try_recv(&mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                match timeout(quiet, to.readable()).await {
                    Ok(ready) => ready?,
                    Err(_) => break,
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let at = start.elapsed();
        if len != size || len < HEADER {
            return Err(ProbeError::WrongSize { len, size });
        }
        let number = u32::from_be_bytes(std::array::from_fn(|i| buf[i]));
        let sent = Duration::from_nanos(u64::from_be_bytes(std::array::from_fn(|i| buf[4 + i])));
        arrivals.push(Arrival { number, took: at.saturating_sub(sent), at });
    }
    Ok(arrivals)
}
