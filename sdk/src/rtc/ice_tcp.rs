//! ICE over TCP (RFC 6544), the client's half: so that a peer connection still has a path
//! when UDP is blocked or the server asks for TCP (`switch_candidate_protocol`, which the
//! `ForceTcp` simulation uses).
//!
//! Each peer connection has one *active* TCP candidate beside its UDP host candidate. str0m
//! pairs it with the server's passive TCP candidates and asks for packets to be sent to
//! them; str0m does no I/O, so this module opens one connection per remote candidate,
//! through the [`Network`] seam (`connect_ice_tcp`, so it runs in the simulation too), and
//! frames every packet as RFC 4571 says: a 16-bit big-endian length, then the packet. What
//! arrives is unframed and handed to the driver, tagged with the remote address.
//!
//! The active candidate is not trickled: an active candidate cannot be connected to, and
//! livekit-server (pion) ignores remote active candidates, learning ours as peer-reflexive
//! from the first check that arrives over the connection. A connection that fails or closes
//! is forgotten, and the next packet for that address opens a new one; ICE's retransmitted
//! checks pace the attempts. A packet for a connection whose queue is full is dropped, as a
//! datagram would be: ICE and SCTP retransmit.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use str0m::net::TcpType;
use str0m::Candidate;
use tokio::sync::mpsc;

use crate::net::{read_frame, write_frame, Network};

/// RFC 6544 §4.5: an active candidate's port is meaningless and written as 9 (discard).
const ACTIVE_PORT: u16 = 9;

/// Packets queued for one connection (while it connects, or while its writes wait).
const QUEUE: usize = 256;

/// How long a connection may take to open before it is given up (and retried on demand).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A packet that arrived over ICE/TCP: the remote candidate's address and the packet.
pub(super) type Inbound = (SocketAddr, Vec<u8>);

/// The active candidate of a peer connection on `ip`.
pub(super) fn active_candidate(ip: IpAddr) -> Result<Candidate, String> {
    Candidate::builder()
        .tcp()
        .host(SocketAddr::new(ip, ACTIVE_PORT))
        .tcptype(TcpType::Active)
        .build()
        .map_err(|e| e.to_string())
}

/// The ICE/TCP connections of one peer connection, by remote address.
pub(super) struct IceTcp {
    net: Arc<dyn Network>,
    links: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    inbound: mpsc::Sender<Inbound>,
}

impl IceTcp {
    /// No connections yet; what arrives on any of them comes out of the returned receiver.
    pub(super) fn new(net: Arc<dyn Network>) -> (IceTcp, mpsc::Receiver<Inbound>) {
        let (inbound, received) = mpsc::channel(QUEUE);
        (IceTcp { net, links: HashMap::new(), inbound }, received)
    }

    /// Sends `packet` to the passive candidate `destination`, opening a connection first if
    /// there is none (or the last one ended).
    pub(super) fn send(&mut self, destination: SocketAddr, packet: &[u8]) {
        if self.links.get(&destination).is_none_or(mpsc::Sender::is_closed) {
            let (queue, queued) = mpsc::channel(QUEUE);
            let net = Arc::clone(&self.net);
            tokio::spawn(carry(net, destination, queued, self.inbound.clone()));
            self.links.insert(destination, queue);
        }
        let Some(link) = self.links.get(&destination) else { return };
        if link.try_send(packet.to_vec()).is_err() {
            tracing::debug!(%destination, "ICE/TCP: connection queue full; packet dropped");
        }
    }

    /// Forgets every connection (they end once their queues are dropped): the network
    /// changed and they belong to the old one.
    pub(super) fn reset(&mut self) {
        self.links.clear();
    }
}

/// One connection's task: connects, then writes queued packets framed and reads framed
/// packets until either side ends or the queue's sender is dropped.
async fn carry(
    net: Arc<dyn Network>,
    destination: SocketAddr,
    mut queued: mpsc::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Inbound>,
) {
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, net.connect_ice_tcp(destination))
        .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(%destination, error = %e, "ICE/TCP: connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%destination, "ICE/TCP: connect timed out after {CONNECT_TIMEOUT:?}");
            return;
        }
    };
    tracing::debug!(%destination, local = %connection.local_addr, "ICE/TCP: connected");
    let (mut reader, mut writer) = tokio::io::split(connection.stream);
    let write = async {
        while let Some(packet) = queued.recv().await {
            match write_frame(&mut writer, &packet).await {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::debug!(%destination, error = %e, "ICE/TCP: packet dropped");
                }
                written => written?,
            }
        }
        Ok::<(), io::Error>(())
    };
    let read = async {
        loop {
            let packet = read_frame(&mut reader).await?;
            if inbound.send((destination, packet)).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    };
    let ended = tokio::select! {
        biased;
        ended = write => ended,
        ended = read => ended,
    };
    if let Err(e) = ended {
        tracing::debug!(%destination, error = %e, "ICE/TCP: connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TokioNetwork;
    use anyhow::Context;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_active_candidate_says_so_and_uses_the_discard_port() {
        let candidate = active_candidate(Ipv4Addr::LOCALHOST.into()).expect("a valid candidate");
        let line = candidate.to_sdp_string();
        assert!(line.contains(" tcp ") && line.contains("127.0.0.1 9 typ host"), "{line}");
        assert!(line.ends_with("tcptype active"), "{line}");
    }

    /// Packets go out framed (length first), framed packets come back whole, even when
    /// the bytes arrive split at awkward places.
    #[tokio::test]
    async fn packets_are_framed_both_ways() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let server = listener.local_addr()?;
        let (mut tcp, mut inbound) = IceTcp::new(Arc::new(TokioNetwork));
        tcp.send(server, b"hello");
        tcp.send(server, b"");
        let (mut stream, _) =
            tokio::time::timeout(Duration::from_secs(10), listener.accept()).await??;
        let mut got = [0u8; 9];
        stream.read_exact(&mut got).await?;
        assert_eq!(&got, b"\x00\x05hello\x00\x00");
        stream.write_all(b"\x00\x03ab").await?;
        stream.flush().await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(b"c\x00\x01z").await?;
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.recv()).await?;
        let second = tokio::time::timeout(Duration::from_secs(10), inbound.recv()).await?;
        assert_eq!(first, Some((server, b"abc".to_vec())));
        assert_eq!(second, Some((server, b"z".to_vec())));
        Ok(())
    }

    /// After the server closes a connection, the next packet opens a new one.
    #[tokio::test]
    async fn a_closed_connection_is_reopened_on_the_next_packet() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let server = listener.local_addr()?;
        let (mut tcp, _inbound) = IceTcp::new(Arc::new(TokioNetwork));
        tcp.send(server, b"one");
        let (first, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await??;
        drop(first);
        // The task ends (dropping its queue) when its read sees the close.
        let queue = tcp.links.get(&server).cloned().context("a link after the first send")?;
        tokio::time::timeout(Duration::from_secs(10), queue.closed())
            .await
            .context("expected the closed connection's task to end within 10 s")?;
        tcp.send(server, b"two");
        let (mut second, _) =
            tokio::time::timeout(Duration::from_secs(10), listener.accept()).await??;
        let mut got = [0u8; 5];
        second.read_exact(&mut got).await?;
        assert_eq!(&got, b"\x00\x03two");
        Ok(())
    }
}
