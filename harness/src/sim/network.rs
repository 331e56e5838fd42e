//! [`TurmoilNetwork`]: the SDK's network seam ([`faultline_sdk::net::Network`]) backed by
//! turmoil's simulated TCP and UDP, so an unchanged `Room` runs inside a simulation host.
//!
//! turmoil only lets a socket bind the unspecified address (or loopback); the host's own
//! address is where such a socket receives. A simulated TCP stream reports that host address
//! as its `local_addr`, which the SDK passes back to [`Network::bind_udp`]: the UDP socket is
//! bound on `0.0.0.0` and reports `local_ip:port`, the address peers really reach it at.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use faultline_sdk::net::{DatagramSocket, Network, TcpConnection};
use futures_util::future::BoxFuture;

/// Sockets from the turmoil simulation the calling task runs in. Every method must be
/// called from inside a turmoil host (turmoil panics otherwise).
#[derive(Debug, Default, Clone, Copy)]
pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    fn connect_tcp(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpConnection>> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(async move {
            let target: (String, u16) = (host, port);
            let stream = match target.0.parse::<IpAddr>() {
                Ok(ip) => turmoil::net::TcpStream::connect((ip, port)).await?,
                Err(_) => turmoil::net::TcpStream::connect(target).await?,
            };
            let local_addr = stream.local_addr()?;
            let peer_addr = stream.peer_addr()?;
            Ok(TcpConnection { stream: Box::new(stream), local_addr, peer_addr })
        })
    }

    fn bind_udp(
        &self,
        local_ip: IpAddr,
    ) -> BoxFuture<'static, io::Result<Arc<dyn DatagramSocket>>> {
        Box::pin(async move {
            if local_ip.is_unspecified() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "expected the host's own IP (the signalling connection's local address) \
                     for a simulated UDP socket, got the unspecified address",
                ));
            }
            let bind_ip = match (local_ip.is_loopback(), local_ip) {
                (true, ip) => ip,
                (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let socket = turmoil::net::UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?;
            let port = socket.local_addr()?.port();
            let local_addr = SocketAddr::new(local_ip, port);
            Ok(Arc::new(SimUdp { socket, local_addr }) as Arc<dyn DatagramSocket>)
        })
    }
}

/// A simulated UDP socket that reports the host address it receives on.
struct SimUdp {
    socket: turmoil::net::UdpSocket,
    local_addr: SocketAddr,
}

impl DatagramSocket for SimUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        target: SocketAddr,
    ) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.socket.send_to(buf, target))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.socket.recv_from(buf))
    }
}
