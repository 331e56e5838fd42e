//! The simulated server's ICE/TCP port, when it has one (livekit-server's `rtc.tcp_port`):
//! accepts clients' connections, unframes the packets they carry (RFC 4571, with the SDK's
//! own framing functions) for the core, and frames the core's packets back onto the
//! connection they belong to, found by the client's address (as pion's TCP mux does).

use std::net::SocketAddr;

use faultline_sdk::net::{read_frame, write_frame};
use tokio::sync::mpsc;

/// What the ICE/TCP port tells the core.
#[derive(Debug)]
pub(super) enum FromIceTcp {
    /// A client connected from this address; packets for it go into the sender.
    Opened(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
    /// A packet arrived from this address.
    Packet(SocketAddr, Vec<u8>),
    /// The connection from this address ended.
    Closed(SocketAddr),
}

/// Accepts connections on `listener` until the host stops, each served by [`carry`].
pub(super) async fn accept(
    listener: turmoil::net::TcpListener,
    core: mpsc::UnboundedSender<FromIceTcp>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { return };
        tokio::spawn(carry(stream, peer, core.clone()));
    }
}

/// One connection: reads frames for the core, writes the core's packets framed, until
/// either side ends.
async fn carry(
    stream: turmoil::net::TcpStream,
    peer: SocketAddr,
    core: mpsc::UnboundedSender<FromIceTcp>,
) {
    let (outgoing, mut queued) = mpsc::unbounded_channel::<Vec<u8>>();
    if core.send(FromIceTcp::Opened(peer, outgoing)).is_err() {
        return;
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        while let Some(packet) = queued.recv().await {
            write_frame(&mut writer, &packet).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let read = async {
        loop {
            let packet = read_frame(&mut reader).await?;
            if core.send(FromIceTcp::Packet(peer, packet)).is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let ended = tokio::select! {
        biased;
        ended = write => ended,
        ended = read => ended,
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "simulated server: ICE/TCP connection ended");
    }
    // Closed first, so the core can tell this connection's sender from a newer one's.
    drop(queued);
    let _ = core.send(FromIceTcp::Closed(peer));
}
