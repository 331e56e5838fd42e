//! The fault-injecting network wrapper around real tokio sockets: each fault measurably does
//! to UDP datagrams and TCP streams what its documentation promises.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use faultline::net::{Direction, FaultyNetwork, NetError, NetFaults};
use faultline_sdk::net::{DatagramSocket, Network, TcpConnection, TokioNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

mod echo;
use echo::Echo;

/// Bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long we watch to show that something does not happen.
const QUIET: Duration = Duration::from_millis(300);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn wrapped(seed: u64) -> (FaultyNetwork, NetFaults) {
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), seed);
    let faults = network.faults();
    (network, faults)
}

/// A socket straight from tokio, outside the faults.
async fn plain_socket() -> Result<Arc<dyn DatagramSocket>> {
    Ok(TokioNetwork.bind_udp(LOCALHOST).await?)
}

async fn send(from: &Arc<dyn DatagramSocket>, to: &Arc<dyn DatagramSocket>, n: u32) -> Result<()> {
    from.send_to(&n.to_be_bytes(), to.local_addr()?).await?;
    Ok(())
}

/// Receives one datagram carrying a number, within the patience window.
async fn recv(socket: &Arc<dyn DatagramSocket>) -> Result<u32> {
    let mut buf = [0; 64];
    let (len, _) = timeout(PATIENCE, socket.recv_from(&mut buf))
        .await
        .context("no datagram arrived within the patience window")??;
    let bytes: [u8; 4] = buf[..len].try_into().context("a datagram of the wrong size")?;
    Ok(u32::from_be_bytes(bytes))
}

/// Expects no datagram for [`QUIET`].
async fn expect_no_datagram(socket: &Arc<dyn DatagramSocket>) -> Result<()> {
    let mut buf = [0; 64];
    match timeout(QUIET, socket.recv_from(&mut buf)).await {
        Err(_) => Ok(()),
        Ok(outcome) => bail!("expected no datagram, recv returned {outcome:?}"),
    }
}

async fn connect(network: &FaultyNetwork, echo: &Echo) -> Result<TcpConnection> {
    let port = echo.addr.port();
    Ok(timeout(PATIENCE, network.connect_tcp("127.0.0.1", port)).await??)
}

async fn round_trip(connection: &mut TcpConnection, message: &[u8]) -> Result<()> {
    connection.stream.write_all(message).await?;
    let mut echoed = vec![0; message.len()];
    timeout(PATIENCE, connection.stream.read_exact(&mut echoed))
        .await
        .context("no echo within the patience window")??;
    ensure!(echoed == message, "echo was {echoed:?}, expected {message:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn datagrams_pass_and_are_counted_without_faults() -> Result<()> {
    let (network, faults) = wrapped(1);
    let a = network.bind_udp(LOCALHOST).await?;
    let b = network.bind_udp(LOCALHOST).await?;
    for n in 0..10 {
        send(&a, &b, n).await?;
        assert_eq!(recv(&b).await?, n);
    }
    let stats = faults.stats();
    assert_eq!(
        (stats.datagrams_sent, stats.datagrams_received, stats.datagrams_delivered),
        (10, 10, 10),
        "{stats:?}"
    );
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_partition_drops_every_datagram_until_healed() -> Result<()> {
    let (network, faults) = wrapped(1);
    let a = network.bind_udp(LOCALHOST).await?;
    let b = network.bind_udp(LOCALHOST).await?;

    faults.partition_media(Direction::Both);
    for n in 0..20 {
        send(&a, &b, n).await?;
        send(&b, &a, n).await?;
    }
    expect_no_datagram(&b).await?;
    expect_no_datagram(&a).await?;
    assert_eq!(faults.stats().datagrams_sent_dropped, 40);

    faults.heal_media();
    send(&a, &b, 99).await?;
    assert_eq!(recv(&b).await?, 99);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_one_way_partition_blocks_only_its_direction() -> Result<()> {
    let (network, faults) = wrapped(1);
    let ours = network.bind_udp(LOCALHOST).await?;
    let theirs = plain_socket().await?;

    faults.partition_media(Direction::Inbound);
    send(&theirs, &ours, 1).await?;
    expect_no_datagram(&ours).await?;
    assert_eq!(faults.stats().datagrams_received_dropped, 1);
    send(&ours, &theirs, 2).await?;
    assert_eq!(recv(&theirs).await?, 2);

    faults.heal_media();
    faults.partition_media(Direction::Outbound);
    send(&ours, &theirs, 3).await?;
    expect_no_datagram(&theirs).await?;
    assert_eq!(faults.stats().datagrams_sent_dropped, 1);
    send(&theirs, &ours, 4).await?;
    assert_eq!(recv(&ours).await?, 4);
    Ok(())
}

/// Sends 1000 datagrams through 50% outbound loss, one at a time, and returns which arrived.
async fn loss_pattern(seed: u64) -> Result<Vec<bool>> {
    let (network, faults) = wrapped(seed);
    faults.set_media_loss(Direction::Outbound, 50.0)?;
    let ours = network.bind_udp(LOCALHOST).await?;
    let theirs = plain_socket().await?;
    let mut pattern = Vec::new();
    for n in 0..1000 {
        let dropped_before = faults.stats().datagrams_sent_dropped;
        send(&ours, &theirs, n).await?;
        let lost = faults.stats().datagrams_sent_dropped > dropped_before;
        if !lost {
            // In lockstep, so the receiver's buffer can never overflow and lose some itself.
            assert_eq!(recv(&theirs).await?, n);
        }
        pattern.push(!lost);
    }
    expect_no_datagram(&theirs).await?;
    Ok(pattern)
}

#[test_log::test(tokio::test)]
async fn loss_is_near_its_percentage_and_the_seed_reproduces_it() -> Result<()> {
    let first = loss_pattern(42).await?;
    let arrived = first.iter().filter(|&&arrived| arrived).count();
    assert!((300..=700).contains(&arrived), "{arrived} of 1000 arrived through 50% loss");
    assert_eq!(loss_pattern(42).await?, first, "the same seed must lose the same datagrams");
    assert_ne!(loss_pattern(43).await?, first, "another seed should lose other datagrams");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn bad_loss_percentages_are_refused() {
    let (_network, faults) = wrapped(1);
    for percent in [-1.0, 100.5, f64::NAN] {
        assert!(
            matches!(
                faults.set_media_loss(Direction::Both, percent),
                Err(NetError::InvalidLoss(_))
            ),
            "{percent} was accepted"
        );
    }
}

#[test_log::test(tokio::test)]
async fn delay_holds_each_datagram_for_at_least_the_setting_and_keeps_order() -> Result<()> {
    let delay = Duration::from_millis(150);
    for direction in [Direction::Outbound, Direction::Inbound] {
        let (network, faults) = wrapped(1);
        faults.set_media_delay(direction, delay);
        let ours = network.bind_udp(LOCALHOST).await?;
        let theirs = plain_socket().await?;
        let (from, to) = match direction {
            Direction::Outbound => (&ours, &theirs),
            _ => (&theirs, &ours),
        };
        let mut sent_at = Vec::new();
        for n in 0..5 {
            sent_at.push(Instant::now());
            send(from, to, n).await?;
        }
        for (n, sent) in sent_at.iter().enumerate() {
            assert_eq!(recv(to).await?, n as u32, "{direction:?}: out of order");
            let waited = sent.elapsed();
            assert!(waited >= delay, "{direction:?}: datagram {n} arrived after {waited:?}");
        }
    }
    Ok(())
}

#[test_log::test(tokio::test)]
async fn sever_resets_open_streams_even_mid_read_and_new_ones_work() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut old = connect(&network, &echo).await?;
    round_trip(&mut old, b"hello").await?;

    let pending_read = tokio::spawn(async move {
        let mut buf = [0; 16];
        let outcome = old.stream.read(&mut buf).await.map(|_| ());
        (old, outcome)
    });
    assert_eq!(faults.sever_signalling(), 1);
    let (mut old, outcome) = timeout(PATIENCE, pending_read).await??;
    assert_eq!(outcome.err().map(|e| e.kind()), Some(ErrorKind::ConnectionReset));
    let write = old.stream.write_all(b"more").await;
    assert_eq!(write.err().map(|e| e.kind()), Some(ErrorKind::ConnectionReset));

    let mut fresh = connect(&network, &echo).await?;
    round_trip(&mut fresh, b"again").await?;
    let stats = faults.stats();
    assert_eq!((stats.streams_opened, stats.streams_severed), (2, 1), "{stats:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn refusing_fails_new_connects_and_keeps_open_streams() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut open = connect(&network, &echo).await?;

    faults.refuse_new_signalling();
    let refused = network.connect_tcp("127.0.0.1", echo.addr.port()).await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused));
    round_trip(&mut open, b"still here").await?;
    assert_eq!(faults.stats().streams_refused, 1);

    faults.heal_signalling();
    let mut fresh = connect(&network, &echo).await?;
    round_trip(&mut fresh, b"new").await?;
    round_trip(&mut open, b"still here").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_black_hole_pends_reads_swallows_writes_and_resets_on_heal() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut old = connect(&network, &echo).await?;
    round_trip(&mut old, b"ping").await?;

    faults.black_hole_signalling();
    old.stream.write_all(b"lost").await?;
    old.stream.flush().await?;
    let mut buf = [0; 16];
    let early = timeout(QUIET, old.stream.read(&mut buf)).await;
    ensure!(early.is_err(), "expected a read to wait in the black hole, it returned {early:?}");
    assert_eq!(echo.received(), 4, "a write in the black hole reached the server");

    let pending_read = tokio::spawn(async move {
        let mut buf = [0; 16];
        old.stream.read(&mut buf).await.map(|_| ())
    });
    faults.heal_signalling();
    let outcome = timeout(PATIENCE, pending_read).await??;
    assert_eq!(outcome.err().map(|e| e.kind()), Some(ErrorKind::ConnectionReset));
    let mut fresh = connect(&network, &echo).await?;
    round_trip(&mut fresh, b"back").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_hold_keeps_bytes_both_ways_and_delivers_them_on_heal() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut held = connect(&network, &echo).await?;
    round_trip(&mut held, b"ping").await?;

    // The echo of this comes back while the stream is held.
    held.stream.write_all(b"kept").await?;
    faults.hold_signalling();
    let mut buf = [0; 4];
    let read = timeout(QUIET, held.stream.read(&mut buf)).await;
    ensure!(read.is_err(), "expected a read to wait while held, it returned {read:?}");
    // A send buffer's worth of writes is accepted and kept; past it, writes wait.
    held.stream.write_all(b"late").await?;
    held.stream.flush().await?;
    let filler = vec![b'x'; faultline::net::HOLD_BUFFER - 4];
    held.stream.write_all(&filler).await?;
    let full = timeout(QUIET, held.stream.write_all(b"more")).await;
    ensure!(full.is_err(), "expected a write past the send buffer to wait, it returned {full:?}");
    assert_eq!(echo.received(), 8, "a write made while held reached the server");

    faults.heal_signalling();
    // The same stream carries on; what waited in each direction is delivered in order.
    timeout(PATIENCE, held.stream.read_exact(&mut buf)).await.context("no echo after heal")??;
    assert_eq!(&buf, b"kept");
    timeout(PATIENCE, held.stream.read_exact(&mut buf)).await.context("held write lost")??;
    assert_eq!(&buf, b"late");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_deafened_stream_still_sends_hears_nothing_and_resets_on_heal() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut deaf = connect(&network, &echo).await?;
    round_trip(&mut deaf, b"ping").await?;

    faults.deafen_signalling();
    deaf.stream.write_all(b"sent").await?;
    deaf.stream.flush().await?;
    let mut buf = [0; 16];
    let read = timeout(QUIET, deaf.stream.read(&mut buf)).await;
    ensure!(read.is_err(), "expected a deaf read to wait, it returned {read:?}");
    // The write went out (the echo's answer to it was thrown away).
    assert_eq!(echo.received(), 8, "a write made while deaf did not reach the server");

    let pending_read = tokio::spawn(async move {
        let mut buf = [0; 16];
        deaf.stream.read(&mut buf).await.map(|_| ())
    });
    faults.heal_signalling();
    let outcome = timeout(PATIENCE, pending_read).await??;
    assert_eq!(outcome.err().map(|e| e.kind()), Some(ErrorKind::ConnectionReset));
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_network_change_kills_old_sockets_and_binds_new_ones_on_the_new_ip() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let old = network.bind_udp(LOCALHOST).await?;
    let theirs = plain_socket().await?;
    let mut stream = connect(&network, &echo).await?;

    let cellular = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    faults.change_network(cellular);
    send(&old, &theirs, 1).await?;
    expect_no_datagram(&theirs).await?;
    send(&theirs, &old, 2).await?;
    expect_no_datagram(&old).await?;
    let write = stream.stream.write_all(b"hello").await;
    assert_eq!(write.err().map(|e| e.kind()), Some(ErrorKind::ConnectionReset));

    // The SDK asks for its old address; it gets the new network's.
    let new = network.bind_udp(LOCALHOST).await?;
    assert_eq!(new.local_addr()?.ip(), cellular);
    send(&new, &theirs, 3).await?;
    let mut buf = [0; 64];
    let (_, from): (usize, SocketAddr) =
        timeout(PATIENCE, theirs.recv_from(&mut buf)).await.context("nothing from new")??;
    assert_eq!(from, new.local_addr()?);
    send(&theirs, &new, 4).await?;
    assert_eq!(recv(&new).await?, 4);
    Ok(())
}

/// ICE over TCP is media: a media partition holds its connection (nothing lost, carried on
/// after the heal), a UDP block and the signalling faults leave it alone, and a network
/// change resets it.
#[test_log::test(tokio::test)]
async fn an_ice_tcp_connection_takes_media_faults_not_signalling_ones() -> Result<()> {
    let echo = Echo::start().await?;
    let (network, faults) = wrapped(1);
    let mut media = timeout(PATIENCE, network.connect_ice_tcp(echo.addr)).await??;
    round_trip(&mut media, b"ping").await?;
    ensure!(network.faults().stats().ice_tcp_opened == 1, "{:?}", faults.stats());

    faults.block_udp(Direction::Both);
    faults.hold_signalling();
    faults.black_hole_signalling();
    round_trip(&mut media, b"free").await?;
    faults.heal();

    faults.partition_media(Direction::Inbound);
    media.stream.write_all(b"kept").await?;
    let mut buf = [0; 4];
    let read = timeout(QUIET, media.stream.read(&mut buf)).await;
    ensure!(read.is_err(), "expected a read to wait during a partition, it returned {read:?}");
    assert_eq!(echo.received(), 8, "a write made during the partition reached the server");
    faults.heal_media();
    timeout(PATIENCE, media.stream.read_exact(&mut buf)).await.context("held write lost")??;
    assert_eq!(&buf, b"kept");

    faults.change_network(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let reset = timeout(PATIENCE, media.stream.read(&mut buf)).await?;
    ensure!(
        matches!(&reset, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "expected a reset after a network change, got {reset:?}"
    );
    ensure!(faults.stats().signalling_writes == 0, "{:?}", faults.stats());
    Ok(())
}
