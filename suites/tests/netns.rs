//! Kernel-level faults (faultline::netns) against the real kernel: traffic flows between a
//! client namespace and the server namespace, each fault does to it what a user would
//! notice on a real network, a real livekit-server runs in the server namespace, and
//! nothing is left behind.
//!
//! These tests need Linux and root. Elsewhere they fail with the reason and the fix, unless
//! `FAULTLINE_SKIP_NETNS` says why the machine runs without them (then they print it).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use faultline::net::Direction;
use faultline::netns::probe::{stream_through, udp_socket, Arrival, Pace};
use faultline::netns::{
    self, Link, Namespace, NamespaceNetwork, NetnsError, Scope, Topology, MEDIA_UDP_PORT,
    SIGNAL_PORT,
};
use faultline::proxy::Proxy;
use faultline::server::{LiveKitServer, ServerOptions};
use faultline_link::{Condition, Delay, Loss, Queue, Rate, Trace};
use faultline_sdk::{ConnectionState, RoomEvent, RoomOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

mod echo;
use echo::Echo;

mod real_lane;
use real_lane::{join_at, unique_room, WAIT};

/// Bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long we watch to show that something does not happen.
const QUIET: Duration = Duration::from_secs(1);
/// A stream through the emulator has ended once nothing arrived for this long (its delays
/// here are far shorter).
const DRAIN: Duration = Duration::from_secs(2);

/// `burst` datagrams every 2 ms: the pace these tests' streams were tuned to (the jitter
/// test's spread in particular, which datagrams kept in order narrow as they come closer).
fn paced(burst: u32) -> Pace {
    Pace { burst, every: Duration::from_millis(2) }
}

/// A topology with `clients` clients, or `None` (after saying why) where namespaces cannot
/// be had and are not required.
async fn topology(clients: usize) -> Result<Option<Topology>> {
    if !netns::usable_in_tests()? {
        return Ok(None);
    }
    Ok(Some(Topology::create(clients).await?))
}

/// A TCP listener on `addr` inside `ns`.
fn listen_in(ns: &Namespace, addr: impl Into<SocketAddr>) -> Result<TcpListener> {
    let addr = addr.into();
    let listener = ns.run(|| std::net::TcpListener::bind(addr))?.context("listening")?;
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// A TCP connection from inside `ns` to `target`, bounded by [`PATIENCE`].
async fn connect_from(ns: &Namespace, target: impl Into<SocketAddr>) -> Result<TcpStream> {
    let target = target.into();
    let socket = ns.run(TcpSocket::new_v4)??;
    Ok(timeout(PATIENCE, socket.connect(target)).await.context("connect timed out")??)
}

/// The server's UDP media port, bound in the server namespace.
fn server_udp(topology: &Topology) -> Result<UdpSocket> {
    let server = topology.server();
    Ok(udp_socket(server.namespace(), (server.address(), MEDIA_UDP_PORT))?)
}

/// A client's UDP socket on its own address, as an ICE host candidate is.
fn client_udp(link: &Link) -> Result<UdpSocket> {
    Ok(udp_socket(link.namespace(), (link.address(), 0))?)
}

/// Whether a datagram from `from` reaches `to` within `bound`: one probe every 50 ms, each
/// with a number of its own, so a late probe of an earlier check is never counted.
async fn reaches(from: &UdpSocket, to: &UdpSocket, bound: Duration) -> Result<bool> {
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let probe = PROBES.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let target = to.local_addr()?;
    let deadline = Instant::now() + bound;
    let mut buf = [0; 64];
    loop {
        from.send_to(&probe, target).await.context("sending a probe")?;
        let poll_until = Instant::now() + Duration::from_millis(50);
        while let Ok(received) = tokio::time::timeout_at(poll_until, to.recv_from(&mut buf)).await {
            let (len, _) = received?;
            if buf[..len] == probe {
                return Ok(true);
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Fails unless datagrams go from `client` to `server` and back within [`PATIENCE`].
async fn flows_both_ways(client: &UdpSocket, server: &UdpSocket, when: &str) -> Result<()> {
    ensure!(reaches(client, server, PATIENCE).await?, "no datagram client → server {when}");
    ensure!(reaches(server, client, PATIENCE).await?, "no datagram server → client {when}");
    Ok(())
}

/// Fails if a datagram goes either way between `client` and `server` within [`QUIET`].
async fn blocked_both_ways(client: &UdpSocket, server: &UdpSocket, when: &str) -> Result<()> {
    ensure!(!reaches(client, server, QUIET).await?, "a datagram went client → server {when}");
    ensure!(!reaches(server, client, QUIET).await?, "a datagram went server → client {when}");
    Ok(())
}

async fn round_trip(stream: &mut TcpStream, message: &[u8], bound: Duration) -> Result<bool> {
    stream.write_all(message).await?;
    let mut echoed = vec![0; message.len()];
    match timeout(bound, stream.read_exact(&mut echoed)).await {
        Err(_) => Ok(false),
        Ok(read) => {
            read?;
            ensure!(echoed == message, "echo was {echoed:?}, expected {message:?}");
            Ok(true)
        }
    }
}

/// A TCP echo server on the server's signalling port, in its namespace.
fn server_echo(topology: &Topology) -> Result<Echo> {
    let server = topology.server();
    Ok(Echo::serve(listen_in(server.namespace(), (server.address(), SIGNAL_PORT))?)?)
}

#[test_log::test(tokio::test)]
async fn udp_and_tcp_flow_between_a_client_and_the_server_namespace_and_nowhere_else() -> Result<()>
{
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    flows_both_ways(&client, &server, "without faults").await?;

    let echo = server_echo(&topology)?;
    let mut stream = connect_from(link.namespace(), echo.addr).await?;
    ensure!(
        stream.local_addr()?.ip() == link.address(),
        "the server sees the client's own address (no NAT)"
    );
    ensure!(round_trip(&mut stream, b"hello", PATIENCE).await?, "TCP echo from the client");

    // What listens on the root side of the root link (a proxy) is reachable from clients.
    let root = TcpListener::bind((topology.root_address(), 0)).await?;
    let _client_side = connect_from(link.namespace(), root.local_addr()?).await?;
    let (_, peer) = timeout(PATIENCE, root.accept()).await??;
    ensure!(peer.ip() == link.address(), "the root namespace sees the client as {peer}");

    // Nothing outside the topology is routed from a client.
    let outside = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9));
    let sent = client.send_to(b"x", outside).await;
    ensure!(
        matches!(&sent, Err(e) if e.kind() == ErrorKind::NetworkUnreachable),
        "a client must have no route out of the topology, send gave {sent:?}"
    );
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_media_partition_blocks_udp_both_ways_keeps_signalling_and_heals() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    let echo = server_echo(&topology)?;
    let mut signalling = connect_from(link.namespace(), echo.addr).await?;

    link.partition(Scope::Media).await?;
    blocked_both_ways(&client, &server, "during a media partition").await?;
    ensure!(
        round_trip(&mut signalling, b"still here", PATIENCE).await?,
        "a media partition must leave signalling alone"
    );

    link.heal().await?;
    flows_both_ways(&client, &server, "after heal").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_whole_link_partition_also_cuts_signalling_until_healed() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let echo = server_echo(&topology)?;
    let mut signalling = connect_from(link.namespace(), echo.addr).await?;
    ensure!(round_trip(&mut signalling, b"before", PATIENCE).await?, "echo before the fault");

    link.partition(Scope::Link).await?;
    ensure!(
        !round_trip(&mut signalling, b"during", QUIET).await?,
        "an echo came back through a whole-link partition"
    );
    let root = TcpListener::bind((topology.root_address(), 0)).await?;
    let socket = link.namespace().run(TcpSocket::new_v4)??;
    ensure!(
        timeout(QUIET, socket.connect(root.local_addr()?)).await.is_err(),
        "a connection to the root side got through a whole-link partition"
    );

    link.heal().await?;
    // TCP retransmits what the partition dropped: the held echo arrives after the heal.
    let mut echoed = [0; 6];
    timeout(PATIENCE, signalling.read_exact(&mut echoed))
        .await
        .context("the echo sent during the partition never arrived after the heal")??;
    ensure!(&echoed == b"during", "got {echoed:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_one_way_drop_blocks_exactly_one_direction() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);

    link.drop_all(Direction::Outbound, Scope::Media).await?;
    ensure!(!reaches(&client, &server, QUIET).await?, "to-server drop let a datagram through");
    ensure!(reaches(&server, &client, PATIENCE).await?, "to-server drop blocked from-server");

    link.heal().await?;
    link.drop_all(Direction::Inbound, Scope::Media).await?;
    ensure!(!reaches(&server, &client, QUIET).await?, "from-server drop let a datagram through");
    ensure!(reaches(&client, &server, PATIENCE).await?, "from-server drop blocked to-server");
    Ok(())
}

/// `percent` % loss lets through a number of 400 datagrams within `expected`: for 30 %,
/// 280 expected (σ ≈ 9), the bounds about 7σ wide each way; 100 % lets none through.
#[rstest::rstest]
#[case::thirty_percent(30, 215..=345)]
#[case::all(100, 0..=0)]
#[test_log::test(tokio::test)]
async fn loss_lets_a_plausible_fraction_through(
    #[case] percent: u8,
    #[case] expected: std::ops::RangeInclusive<u32>,
) -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    // Resolve the neighbours first, so that every datagram below meets only the loss.
    ensure!(reaches(&client, &server, PATIENCE).await?, "no path before the fault");
    while server.try_recv_from(&mut [0; 64]).is_ok() {}

    link.loss(Direction::Outbound, Scope::Media, percent).await?;
    let target = server.local_addr()?;
    for i in 0..400u32 {
        client.send_to(&i.to_be_bytes(), target).await?;
        if i % 50 == 49 {
            // Paced, so that no socket buffer overflows and only the rule drops.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut received = 0;
    let mut buf = [0; 64];
    // Everything sent is in flight on a local link: it has arrived once the socket stays
    // quiet for QUIET.
    while timeout(QUIET, server.recv_from(&mut buf)).await.is_ok() {
        received += 1;
    }
    ensure!(
        expected.contains(&received),
        "{percent} % loss let {received} of 400 datagrams through, expected {expected:?}"
    );
    Ok(())
}

/// Time for the client to send `bytes` to the server's echo and get them all back.
async fn echo_time(link: &Link, echo: &Echo, bytes: usize) -> Result<Duration> {
    let mut stream = connect_from(link.namespace(), echo.addr).await?;
    let (mut read, mut write) = stream.split();
    let started = Instant::now();
    let payload = vec![7u8; bytes];
    let mut back = vec![0; bytes];
    let (written, echoed) = tokio::join!(write.write_all(&payload), async {
        timeout(WAIT, read.read_exact(&mut back)).await
    });
    written?;
    echoed.context("the echo did not come back in time")??;
    Ok(started.elapsed())
}

#[test_log::test(tokio::test)]
async fn a_rate_limit_caps_throughput() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let echo = server_echo(&topology)?;
    const BYTES: usize = 250_000;
    let free = echo_time(link, &echo, BYTES).await?;

    // 1 Mbit/s to the server: 250 kB need at least 2 s (less the 20 ms burst).
    link.rate_limit(Direction::Outbound, Scope::Link, 1_000_000).await?;
    let capped = echo_time(link, &echo, BYTES).await?;
    ensure!(
        capped >= Duration::from_millis(1800),
        "250 kB through a 1 Mbit/s cap took {capped:?} (unlimited: {free:?})"
    );
    ensure!(free * 4 < capped, "the unlimited link ({free:?}) is not much faster than {capped:?}");
    ensure!(echo.received() == 2 * BYTES as u64, "every byte arrived: {}", echo.received());

    link.heal().await?;
    let healed = echo_time(link, &echo, BYTES).await?;
    ensure!(healed * 4 < capped, "after heal {healed:?}, capped {capped:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_link_down_makes_the_server_unreachable_until_it_is_up() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);

    link.set_down().await?;
    let sent = client.send_to(b"x", server.local_addr()?).await;
    ensure!(
        matches!(&sent, Err(e) if e.kind() == ErrorKind::NetworkUnreachable),
        "with the link down, send gave {sent:?}"
    );
    ensure!(
        !reaches(&server, &client, QUIET).await?,
        "a datagram reached a client whose link is down"
    );

    link.set_up().await?;
    flows_both_ways(&client, &server, "after link up").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn an_address_change_breaks_existing_flows_and_new_ones_work() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    let echo = server_echo(&topology)?;
    let mut old_stream = connect_from(link.namespace(), echo.addr).await?;
    ensure!(round_trip(&mut old_stream, b"before", PATIENCE).await?, "echo before the move");
    let old = link.address();

    let new = link.change_address().await?;
    ensure!(new != old && link.address() == new, "the address moved from {old} to {new}");
    ensure!(!reaches(&server, &client, QUIET).await?, "a datagram reached the old address");
    let moved = client.send_to(b"x", server.local_addr()?).await;
    ensure!(moved.is_err(), "a socket bound to the old address could still send: {moved:?}");
    match round_trip(&mut old_stream, b"after", QUIET).await {
        Ok(false) | Err(_) => {}
        Ok(true) => bail!("a TCP connection from the old address survived the move"),
    }

    let fresh = client_udp(link)?;
    flows_both_ways(&fresh, &server, "from a socket on the new address").await?;
    let mut new_stream = connect_from(link.namespace(), echo.addr).await?;
    ensure!(new_stream.local_addr()?.ip() == new, "a new connection comes from {new}");
    ensure!(round_trip(&mut new_stream, b"after", PATIENCE).await?, "echo on a new connection");
    Ok(())
}

/// The emulator's decisions must be exactly what reached the other end: each offered
/// datagram arrives once, twice (duplicated) or never (lost or dropped by the queue).
fn matches_the_model(link: &Link, arrivals: &[Arrival], offered: u32) -> Result<()> {
    let stats = link.emulated(Direction::Outbound).context("the emulator has no pipe")?;
    ensure!(stats.offered == u64::from(offered), "the emulator saw {stats:?} of {offered}");
    let expected = stats.departed();
    ensure!(
        arrivals.len() as u64 == expected,
        "{} datagrams arrived; the emulator's own count says {expected} ({stats:?})",
        arrivals.len()
    );
    Ok(())
}

/// `observed` successes out of `trials` within five standard errors of probability `p`.
fn near_binomial(observed: u64, trials: u64, p: f64, what: &str) -> Result<()> {
    let mean = trials as f64 * p;
    let sigma = (trials as f64 * p * (1.0 - p)).sqrt();
    ensure!(
        (observed as f64 - mean).abs() <= 5.0 * sigma,
        "{what}: {observed} of {trials}, expected {mean:.0} ± {:.0} (5σ)",
        5.0 * sigma
    );
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn the_emulator_delays_with_jitter_in_order_and_leaves_the_other_way_alone() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    let delay = Delay {
        base: Duration::from_millis(60),
        jitter: Duration::from_millis(20),
        ..Delay::default()
    };
    link.emulate(Direction::Outbound, Scope::Media, Condition { delay, ..Condition::default() }, 1)
        .await?;

    let arrivals = stream_through(&client, &server, 300, 200, paced(1), DRAIN).await?;
    matches_the_model(link, &arrivals, 300)?;
    ensure!(arrivals.len() == 300, "{} of 300 arrived", arrivals.len());
    ensure!(
        arrivals.windows(2).all(|w| w[0].number < w[1].number),
        "jitter reordered packets, which it must not unless asked"
    );
    let fastest = arrivals.iter().map(|a| a.took).min().unwrap_or_default();
    let slowest = arrivals.iter().map(|a| a.took).max().unwrap_or_default();
    ensure!(fastest >= Duration::from_millis(40), "a datagram took only {fastest:?} (60 ± 20 ms)");
    ensure!(
        slowest - fastest >= Duration::from_millis(20),
        "delays spread over {:?} only: no jitter",
        slowest - fastest
    );

    // The other way is untouched: a datagram back is not held for 40 ms or more.
    let back = stream_through(&server, &client, 20, 64, paced(1), DRAIN).await?;
    ensure!(back.len() == 20, "{} of 20 came back", back.len());
    let held = back.iter().filter(|a| a.took >= Duration::from_millis(40)).count();
    ensure!(held < 10, "{held} of 20 datagrams on the untouched way took 40 ms or more");

    // Healing takes the condition away.
    link.heal().await?;
    let healed = stream_through(&client, &server, 20, 64, paced(1), DRAIN).await?;
    ensure!(healed.len() == 20, "{} of 20 arrived after heal", healed.len());
    let still = healed.iter().filter(|a| a.took >= Duration::from_millis(40)).count();
    ensure!(still < 10, "{still} of 20 datagrams still took 40 ms or more after heal");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn the_emulator_reorders_only_when_asked() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    let delay = Delay {
        base: Duration::from_millis(30),
        jitter: Duration::from_millis(25),
        ..Delay::default()
    };
    let condition = Condition { delay, reorder: true, ..Condition::default() };
    link.emulate(Direction::Outbound, Scope::Media, condition, 2).await?;
    let arrivals = stream_through(&client, &server, 200, 100, paced(1), DRAIN).await?;
    matches_the_model(link, &arrivals, 200)?;
    let overtaken = arrivals.windows(2).filter(|w| w[0].number > w[1].number).count();
    ensure!(overtaken >= 10, "only {overtaken} of 200 datagrams arrived out of order");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn the_emulator_loses_and_duplicates_real_packets_at_the_rates_asked() -> Result<()> {
    let Some(topology) = topology(2).await? else { return Ok(()) };
    let server = server_udp(&topology)?;
    let (lossy, doubled) = (&topology.clients()[0], &topology.clients()[1]);
    let random = Loss::Random { probability: 0.2, correlation: 0.0 };
    lossy
        .emulate(
            Direction::Outbound,
            Scope::Media,
            Condition { loss: random, ..Condition::default() },
            3,
        )
        .await?;
    let arrivals = stream_through(&client_udp(lossy)?, &server, 3000, 100, paced(5), DRAIN).await?;
    matches_the_model(lossy, &arrivals, 3000)?;
    near_binomial(3000 - arrivals.len() as u64, 3000, 0.2, "datagrams lost at 20 %")?;

    let duplicate = Condition { duplicate: 0.1, ..Condition::default() };
    doubled.emulate(Direction::Outbound, Scope::Media, duplicate, 4).await?;
    let arrivals =
        stream_through(&client_udp(doubled)?, &server, 3000, 100, paced(5), DRAIN).await?;
    matches_the_model(doubled, &arrivals, 3000)?;
    near_binomial(arrivals.len() as u64 - 3000, 3000, 0.1, "datagrams duplicated at 10 %")?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn gilbert_elliott_loses_real_packets_in_bursts() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    // Bursts start with 2 % a packet and end with 25 %: 4 packets long on average, 7.4 %
    // of all packets lost.
    let loss = Loss::GilbertElliott { p: 0.02, r: 0.25, loss_good: 0.0, loss_bad: 1.0 };
    link.emulate(Direction::Outbound, Scope::Media, Condition { loss, ..Condition::default() }, 5)
        .await?;
    let arrivals = stream_through(&client, &server, 6000, 100, paced(5), DRAIN).await?;
    matches_the_model(link, &arrivals, 6000)?;
    let gaps: Vec<u32> =
        arrivals.windows(2).map(|w| w[1].number - w[0].number - 1).filter(|gap| *gap > 0).collect();
    ensure!(gaps.len() >= 50, "only {} bursts of loss in 6000 datagrams", gaps.len());
    let mean = f64::from(gaps.iter().sum::<u32>()) / gaps.len() as f64;
    ensure!((2.5..=6.0).contains(&mean), "bursts averaged {mean:.2} datagrams, expected 4");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_rate_with_a_queue_paces_and_drops_and_a_trace_paces_as_recorded() -> Result<()> {
    let Some(topology) = topology(2).await? else { return Ok(()) };
    let server = server_udp(&topology)?;
    let (rated, traced) = (&topology.clients()[0], &topology.clients()[1]);
    // 1 Mbit/s behind a 20-packet queue; 100 datagrams of 1000 bytes (1028 on the wire)
    // offered at once: about 21 get through, 8.2 ms apart.
    let rate = Rate { bits_per_second: 1_000_000, queue: Queue::Packets(20) };
    let condition = Condition { rate: Some(rate), ..Condition::default() };
    rated.emulate(Direction::Outbound, Scope::Media, condition, 6).await?;
    let arrivals =
        stream_through(&client_udp(rated)?, &server, 100, 1000, paced(100), DRAIN).await?;
    matches_the_model(rated, &arrivals, 100)?;
    ensure!(
        (19..=25).contains(&arrivals.len()),
        "{} of 100 passed a 20-packet queue",
        arrivals.len()
    );
    let span = arrivals.last().map(|a| a.took).unwrap_or_default();
    let least = Duration::from_micros(8224 * (arrivals.len() as u64 - 1));
    ensure!(span >= least, "the last datagram took {span:?}: faster than 1 Mbit/s ({least:?})");

    // A recorded link of one 1500-byte opportunity every 10 ms (1.2 Mbit/s): 30 datagrams of
    // 1400 bytes, one per opportunity.
    let opportunities = faultline_link::constant_rate_trace(1_200_000, Duration::from_secs(1));
    let trace = Trace { opportunities, looped: true, queue: Queue::Packets(100) };
    let condition = Condition { trace: Some(trace), ..Condition::default() };
    traced.emulate(Direction::Outbound, Scope::Media, condition, 7).await?;
    let arrivals =
        stream_through(&client_udp(traced)?, &server, 30, 1400, paced(30), DRAIN).await?;
    matches_the_model(traced, &arrivals, 30)?;
    ensure!(arrivals.len() == 30, "{} of 30 datagrams got through the trace", arrivals.len());
    let span = arrivals.last().map(|a| a.took).unwrap_or_default();
    ensure!(span >= Duration::from_millis(280), "30 opportunities 10 ms apart took {span:?}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn an_emulated_media_condition_leaves_signalling_alone() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let (server, client) = (server_udp(&topology)?, client_udp(link)?);
    let echo = server_echo(&topology)?;
    let mut signalling = connect_from(link.namespace(), echo.addr).await?;
    let delay = Delay { base: Duration::from_secs(3), ..Delay::default() };
    link.emulate(Direction::Both, Scope::Media, Condition { delay, ..Condition::default() }, 8)
        .await?;
    let started = Instant::now();
    ensure!(round_trip(&mut signalling, b"quick", PATIENCE).await?, "signalling echo");
    ensure!(
        started.elapsed() < delay.base,
        "signalling waited {:?} behind media",
        started.elapsed()
    );
    ensure!(!reaches(&client, &server, QUIET).await?, "media went through a 3 s delay at once");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn bad_faults_and_too_many_clients_are_refused() -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let loss = link.loss(Direction::Both, Scope::Media, 101).await;
    ensure!(matches!(loss, Err(NetnsError::InvalidFault(_))), "{loss:?}");
    let rate = link.rate_limit(Direction::Both, Scope::Media, 0).await;
    ensure!(matches!(rate, Err(NetnsError::InvalidFault(_))), "{rate:?}");
    let many = Topology::create(netns::MAX_CLIENTS + 1).await;
    ensure!(matches!(many, Err(NetnsError::TooManyClients { .. })), "{many:?}");
    Ok(())
}

/// The root namespace's view: namespace names and whether the block is still routed.
fn leftovers(names: &[String], root_link: &str) -> Result<Vec<String>> {
    let listed = std::process::Command::new("ip").args(["netns", "list"]).output()?;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let mut left: Vec<String> = names
        .iter()
        .filter(|n| listed.lines().any(|l| l.split_whitespace().next() == Some(n.as_str())))
        .cloned()
        .collect();
    let link = std::process::Command::new("ip").args(["link", "show", root_link]).output()?;
    if link.status.success() {
        left.push(root_link.to_string());
    }
    Ok(left)
}

#[test_log::test(tokio::test)]
async fn dropping_topologies_removes_everything_and_parallel_ones_do_not_collide() -> Result<()> {
    if !netns::usable_in_tests()? {
        return Ok(());
    }
    let (a, b) = tokio::try_join!(Topology::create(2), Topology::create(2))?;
    ensure!(a.name() != b.name(), "two topologies named {}", a.name());
    ensure!(a.root_address() != b.root_address(), "two topologies on {}", a.root_address());
    let mut names = vec![a.server().namespace().name().to_string()];
    names.extend(a.clients().iter().map(|c| c.namespace().name().to_string()));
    let root_link = a.name().to_string();
    ensure!(leftovers(&names, &root_link)?.len() == 4, "the namespaces exist while in use");

    a.clients()[0].partition(Scope::Link).await?;
    a.clients()[1].rate_limit(Direction::Both, Scope::Media, 1_000_000).await?;
    drop(a);
    let left = leftovers(&names, &root_link)?;
    ensure!(left.is_empty(), "left behind after drop: {left:?}");
    drop(b);
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_livekit_server_in_its_namespace_serves_the_root_and_a_client_and_feels_the_kernel(
) -> Result<()> {
    let Some(topology) = topology(1).await? else { return Ok(()) };
    let link = &topology.clients()[0];
    let opts = ServerOptions { netns: Some(topology.server().clone()), ..Default::default() };
    let server = LiveKitServer::start(opts).await?;
    let address = topology.server().address();
    ensure!(server.signal_addr() == SocketAddr::from((address, SIGNAL_PORT)), "{server:?}");
    let ports = server.ports().context("a local server has ports")?;
    ensure!(ports.ice_tcp.is_some(), "ICE/TCP is on in a namespace of its own: {ports:?}");

    // From the root namespace (where the harness runs).
    let body = reqwest::get(format!("{}/", server.http_url())).await?.text().await?;
    ensure!(body.trim() == "OK", "GET / from the root answered {body:?}");
    // From the client namespace, over plain HTTP/1.0.
    let mut http = connect_from(link.namespace(), server.signal_addr()).await?;
    http.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut answer = String::new();
    timeout(PATIENCE, http.read_to_string(&mut answer)).await??;
    ensure!(answer.starts_with("HTTP/1.0 200") && answer.ends_with("OK"), "{answer:?}");

    // faultline-sdk in the client namespace, signalling through a proxy on the root side:
    // joining needs signalling and the UDP media port (ICE + DTLS), so Connected proves both.
    let proxy = Proxy::start_on((topology.root_address(), 0).into(), server.signal_addr()).await?;
    let network = Arc::new(NamespaceNetwork::new(link.namespace().clone()));
    let options = RoomOptions { network, ..RoomOptions::default() };
    let room_name = unique_room("netns");
    let (room, mut log) = join_at(&server, &proxy.ws_url(), &room_name, "c0", options).await?;

    // A kernel media partition is a media outage for the SDK; healing it recovers the room.
    link.partition(Scope::Media).await?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    link.heal().await?;
    log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(room.connection_state() == ConnectionState::Connected, "{}", log.trace());
    log.judge(room.connection_state())?;
    room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_firewall_blocks_udp_both_ways_but_tcp_and_optionally_the_relay() -> Result<()> {
    let Some(topology) = topology(2).await? else { return Ok(()) };
    let (strict, relayed) = (&topology.clients()[0], &topology.clients()[1]);
    let server = topology.server();
    let media = server_udp(&topology)?;
    let relay = udp_socket(server.namespace(), (server.address(), netns::TURN_UDP_PORT))?;
    let echo = server_echo(&topology)?;

    strict.block_udp(None).await?;
    relayed.block_udp(Some(netns::TURN_UDP_PORT)).await?;
    for link in [strict, relayed] {
        let client = client_udp(link)?;
        blocked_both_ways(&client, &media, "to the media port behind a firewall").await?;
        let mut signalling = connect_from(link.namespace(), echo.addr).await?;
        ensure!(round_trip(&mut signalling, b"tcp", PATIENCE).await?, "TCP behind a firewall");
    }
    blocked_both_ways(&client_udp(strict)?, &relay, "to the relay behind a strict firewall")
        .await?;
    flows_both_ways(&client_udp(relayed)?, &relay, "to the relay it lets through").await?;

    strict.heal().await?;
    flows_both_ways(&client_udp(strict)?, &media, "after heal").await?;
    Ok(())
}
