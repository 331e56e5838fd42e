//! faultline-sdk inside a namespace: a [`Network`] whose sockets are created there, so the
//! kernel's faults on that client's link reach an in-process SDK exactly as they reach an
//! external client — the check that faultline's socket wrappers ([`crate::net`]) and the
//! kernel agree.
//!
//! Only the creation of a socket happens on a thread inside the namespace (a socket belongs
//! to the namespace it was created in); connecting, sending and receiving happen on the
//! caller's tokio runtime like any other socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use faultline_sdk::net::{DatagramSocket, Network, TcpConnection, TokioNetwork};
use futures_util::future::BoxFuture;

use super::namespace::Namespace;

/// faultline-sdk's sockets, made inside a namespace (only their creation happens there; they
/// are used on the caller's runtime). Hosts must be IP literals: a topology has no DNS.
#[derive(Debug, Clone)]
pub struct NamespaceNetwork {
    namespace: Namespace,
}

impl NamespaceNetwork {
    /// Sockets made inside `namespace` (which the network keeps alive).
    pub fn new(namespace: Namespace) -> Self {
        NamespaceNetwork { namespace }
    }
}

impl Network for NamespaceNetwork {
    fn connect_tcp(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<TcpConnection>> {
        let namespace = self.namespace.clone();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Box::pin(async move {
            let ip: IpAddr = host.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{host} is not an IP address; a client in the network namespace {} \
                         must connect to an address of its topology",
                        namespace.name()
                    ),
                )
            })?;
            let socket = namespace
                .run(|| match ip {
                    IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                })
                .map_err(io::Error::other)??;
            let stream = socket.connect(SocketAddr::new(ip, port)).await?;
            TokioNetwork::tcp_connection(stream)
        })
    }

    fn bind_udp(
        &self,
        local_ip: IpAddr,
    ) -> BoxFuture<'static, io::Result<Arc<dyn DatagramSocket>>> {
        let namespace = self.namespace.clone();
        Box::pin(async move {
            let socket = namespace
                .run(|| std::net::UdpSocket::bind(SocketAddr::new(local_ip, 0)))
                .map_err(io::Error::other)??;
            socket.set_nonblocking(true)?;
            Ok(TokioNetwork::datagram_socket(tokio::net::UdpSocket::from_std(socket)?))
        })
    }
}
