//! The network seam: every socket the SDK opens comes from a [`Network`].
//!
//! The SDK itself never names `tokio::net`. [`TokioNetwork`] is the default, real-socket
//! implementation and the only place in the crate that touches the operating system's
//! sockets; the faultline harness wraps a `Network` to inject faults, and the simulation lane
//! supplies one backed by turmoil. TLS for `wss://` is layered by the SDK on top of the plain
//! stream a `Network` returns, so implementations deal in TCP and UDP only.
//!
//! ICE over TCP frames each packet as RFC 4571 says (a 16-bit big-endian length, then the
//! packet): [`write_frame`] and [`read_frame`] are that format, public so that whatever
//! speaks ICE/TCP to the SDK in a test (the simulation's server) frames as it does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream the signalling WebSocket can run over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// An established TCP connection, with the addresses of both ends.
///
/// `local_addr` matters beyond bookkeeping: its IP is the interface that reaches the server,
/// and the SDK binds its media (UDP) sockets on that IP so that its ICE host candidate is
/// reachable from the server.
pub struct TcpConnection {
    /// The connected stream.
    pub stream: Box<dyn AsyncStream>,
    /// The local end of the connection.
    pub local_addr: SocketAddr,
    /// The remote end of the connection.
    pub peer_addr: SocketAddr,
}

impl std::fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnection")
            .field("local_addr", &self.local_addr)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

/// A bound UDP socket, as the WebRTC transport uses it.
pub trait DatagramSocket: Send + Sync + 'static {
    /// The address this socket is bound to; a concrete IP (never unspecified), since it is
    /// announced to the server as an ICE host candidate.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sends one datagram to `target`.
    fn send_to<'a>(&'a self, buf: &'a [u8], target: SocketAddr)
        -> BoxFuture<'a, io::Result<usize>>;
    /// Receives one datagram, returning its length and sender.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8])
        -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
}

/// Where the SDK gets its sockets from.
pub trait Network: Send + Sync + 'static {
    /// Opens a TCP connection to `host:port` (`host` may be a name or an IP literal).
    fn connect_tcp(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpConnection>>;
    /// Binds a UDP socket on `local_ip` with a port chosen by the system.
    ///
    /// The SDK passes the local IP of its signalling connection; an implementation may bind
    /// elsewhere (a harness simulating a Wi-Fi to cellular handover does), as long as the
    /// returned socket's `local_addr` is where it really receives.
    fn bind_udp(&self, local_ip: IpAddr)
        -> BoxFuture<'static, io::Result<Arc<dyn DatagramSocket>>>;
    /// Opens a TCP connection for ICE over TCP to the server's passive candidate `addr`:
    /// the media path when UDP is unavailable, not signalling. By default the same as
    /// [`connect_tcp`](Network::connect_tcp); a wrapper that injects faults overrides it to
    /// tell the two apart.
    fn connect_ice_tcp(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpConnection>> {
        self.connect_tcp(&addr.ip().to_string(), addr.port())
    }
}

/// Writes `packet` as one RFC 4571 frame. A packet longer than 65 535 bytes cannot be
/// framed: `InvalidInput`, and nothing is written.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, packet: &[u8]) -> io::Result<()> {
    let length = u16::try_from(packet.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "an RFC 4571 frame holds at most 65535 bytes, this packet has {}",
                packet.len()
            ),
        )
    })?;
    let mut framed = Vec::with_capacity(2 + packet.len());
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(packet);
    writer.write_all(&framed).await
}

/// Reads one RFC 4571 frame and returns its packet; `UnexpectedEof` once the stream ends.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut length = [0u8; 2];
    reader.read_exact(&mut length).await?;
    let mut packet = vec![0u8; usize::from(u16::from_be_bytes(length))];
    reader.read_exact(&mut packet).await?;
    Ok(packet)
}

/// The default [`Network`]: real sockets from tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioNetwork;

impl Network for TokioNetwork {
    fn connect_tcp(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpConnection>> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            Self::tcp_connection(stream)
        })
    }

    fn bind_udp(
        &self,
        local_ip: IpAddr,
    ) -> BoxFuture<'static, io::Result<Arc<dyn DatagramSocket>>> {
        Box::pin(async move {
            let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
            Ok(Self::datagram_socket(socket))
        })
    }
}

impl TokioNetwork {
    /// A connected tokio stream as the SDK uses it (no Nagle delay), for a [`Network`] that
    /// makes its own tokio sockets.
    pub fn tcp_connection(stream: tokio::net::TcpStream) -> io::Result<TcpConnection> {
        stream.set_nodelay(true)?;
        let local_addr = stream.local_addr()?;
        let peer_addr = stream.peer_addr()?;
        Ok(TcpConnection { stream: Box::new(stream), local_addr, peer_addr })
    }

    /// A bound tokio UDP socket behind the [`DatagramSocket`] trait, for a [`Network`] that
    /// makes its own tokio sockets.
    pub fn datagram_socket(socket: tokio::net::UdpSocket) -> Arc<dyn DatagramSocket> {
        Arc::new(TokioUdp(socket))
    }
}

/// A tokio UDP socket behind the [`DatagramSocket`] trait.
struct TokioUdp(tokio::net::UdpSocket);

impl DatagramSocket for TokioUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        target: SocketAddr,
    ) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.send_to(buf, target))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.0.recv_from(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_packet_too_long_to_frame_is_refused_and_nothing_is_written() {
        let mut written = Vec::new();
        let error = write_frame(&mut written, &vec![0u8; 65_536]).await.expect_err("too long");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(written.is_empty());
        write_frame(&mut written, &vec![7u8; 65_535]).await.expect("the longest frame");
        assert_eq!(&written[..3], &[0xff, 0xff, 7]);
        let packet = read_frame(&mut written.as_slice()).await.expect("a whole frame");
        assert_eq!(packet.len(), 65_535);
    }
}
