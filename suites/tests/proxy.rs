//! The killable proxy against a local echo server: each mode does to a live TCP connection
//! what its documentation promises.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use faultline::proxy::{Change, Mode, Proxy, ProxyError, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

mod echo;
use echo::Echo;

/// Bound on waiting for something that must happen.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long we watch to show that something does not happen.
const QUIET: Duration = Duration::from_millis(300);

async fn connect(proxy: &Proxy) -> Result<TcpStream> {
    timeout(PATIENCE, TcpStream::connect(proxy.local_addr()))
        .await
        .context("connecting to the proxy timed out")?
        .with_context(|| format!("connecting to the proxy at {}", proxy.local_addr()))
}

/// Sends `message` and expects it back.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Result<()> {
    stream.write_all(message).await?;
    let mut echoed = vec![0; message.len()];
    timeout(PATIENCE, stream.read_exact(&mut echoed))
        .await
        .context("no echo within the patience window")??;
    ensure!(echoed == message, "echo was {echoed:?}, expected {message:?}");
    Ok(())
}

/// Expects the connection to be closed or reset within the patience window.
async fn expect_closed(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0; 64];
    match timeout(PATIENCE, stream.read(&mut buf)).await {
        Err(_) => bail!("the connection was still open {PATIENCE:?} later"),
        Ok(Ok(0)) => Ok(()),
        Ok(Err(error))
            if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        Ok(Ok(n)) => bail!("expected a closed connection, read {:?}", &buf[..n]),
        Ok(Err(error)) => bail!("expected EOF or a reset, got {error}"),
    }
}

/// Expects nothing at all — no data, no EOF, no error — for [`QUIET`].
async fn expect_silence(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0; 64];
    match timeout(QUIET, stream.read(&mut buf)).await {
        Err(_) => Ok(()),
        Ok(outcome) => bail!("expected silence, the read returned {outcome:?}"),
    }
}

async fn expect_refused(addr: SocketAddr) -> Result<()> {
    match timeout(PATIENCE, TcpStream::connect(addr)).await {
        Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => Ok(()),
        Ok(Err(error)) => bail!("expected ECONNREFUSED from {addr}, got {error}"),
        Ok(Ok(_)) => bail!("expected {addr} to refuse a connection, it accepted"),
        Err(_) => bail!("connecting to {addr} neither succeeded nor failed in {PATIENCE:?}"),
    }
}

/// Waits until the proxy's stats satisfy `condition`.
async fn stats_until(proxy: &Proxy, condition: impl Fn(&Stats) -> bool) -> Result<Stats> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = proxy.stats();
        if condition(&stats) {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            bail!("the proxy's stats never reached the expected values; last: {stats:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test_log::test(tokio::test)]
async fn pass_forwards_both_ways_and_counts_it() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    assert_eq!(proxy.ws_url(), format!("ws://{}", proxy.local_addr()));
    let mut client = connect(&proxy).await?;
    round_trip(&mut client, b"hello").await?;
    round_trip(&mut client, b"world!").await?;
    let stats = stats_until(&proxy, |s| s.bytes_down == 11).await?;
    assert_eq!(
        stats,
        Stats { accepted: 1, active: 1, bytes_up: 11, bytes_down: 11, ..Stats::default() }
    );
    drop(client);
    stats_until(&proxy, |s| s.active == 0).await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn kill_resets_open_connections_and_refuses_new_ones() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let mut client = connect(&proxy).await?;
    round_trip(&mut client, b"before").await?;

    proxy.kill().await?;
    assert_eq!(proxy.mode(), Mode::Killed);
    expect_closed(&mut client).await?;
    expect_refused(proxy.local_addr()).await?;
    let stats = proxy.stats();
    assert_eq!((stats.severed, stats.active), (1, 0), "{stats:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn heal_after_a_kill_listens_on_the_same_port() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let addr = proxy.local_addr();
    proxy.kill().await?;
    expect_refused(addr).await?;

    proxy.heal().await?;
    assert_eq!(proxy.local_addr(), addr);
    let mut client = connect(&proxy).await?;
    round_trip(&mut client, b"after").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn heal_fails_clearly_when_the_port_was_taken() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    proxy.kill().await?;
    let _squatter = TcpListener::bind(proxy.local_addr()).await?;

    match proxy.heal().await {
        Err(error @ ProxyError::PortTaken { .. }) => {
            let message = error.to_string();
            assert!(message.contains(&proxy.local_addr().to_string()), "{message}");
        }
        other => bail!("expected PortTaken, got {other:?}"),
    }
    assert_eq!(proxy.mode(), Mode::Killed, "a failed heal must leave the proxy as it was");
    Ok(())
}

/// Decided semantics: a black hole keeps connections open and drops every byte; when it
/// ends, the connections that were in it are reset (their bytes are gone, so the stream
/// cannot continue), and new connections work.
#[test_log::test(tokio::test)]
async fn black_hole_swallows_bytes_then_resets_its_connections_on_heal() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let mut old = connect(&proxy).await?;
    round_trip(&mut old, b"ping").await?;

    proxy.black_hole().await?;
    old.write_all(b"lost").await?;
    expect_silence(&mut old).await?;
    // New connections are accepted but black-holed too.
    let mut during = connect(&proxy).await?;
    during.write_all(b"also lost").await?;
    expect_silence(&mut during).await?;
    stats_until(&proxy, |s| s.bytes_dropped == 13).await?;
    assert_eq!(echo.received(), 4, "only the bytes sent before the black hole reach the server");

    proxy.heal().await?;
    expect_closed(&mut old).await?;
    expect_closed(&mut during).await?;
    let mut fresh = connect(&proxy).await?;
    round_trip(&mut fresh, b"back").await?;
    assert_eq!(proxy.stats().severed, 2);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn pause_holds_bytes_and_resume_delivers_all_of_them_in_order() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let client = connect(&proxy).await?;
    let (mut read, mut write) = client.into_split();

    proxy.pause().await?;
    // More than one chunk, so that order across chunks is tested.
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move { write.write_all(&sent).await.map(|()| write) }
    });
    let mut first = [0; 1];
    let early = timeout(QUIET, read.read(&mut first)).await;
    ensure!(early.is_err(), "expected nothing while paused, the read returned {early:?}");
    assert_eq!(proxy.stats().bytes_up, 0);

    proxy.resume().await?;
    let mut received = vec![0; sent.len()];
    timeout(PATIENCE, read.read_exact(&mut received))
        .await
        .context("the held bytes were not delivered after resume")??;
    ensure!(received == sent, "the bytes delivered after resume differ from those sent");
    let _write = writer.await??;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn refuse_new_keeps_open_connections_and_refuses_new_ones() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let mut open = connect(&proxy).await?;

    proxy.refuse_new().await?;
    expect_refused(proxy.local_addr()).await?;
    round_trip(&mut open, b"still here").await?;

    proxy.heal().await?;
    let mut fresh = connect(&proxy).await?;
    round_trip(&mut fresh, b"new").await?;
    round_trip(&mut open, b"still here").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn throttle_keeps_throughput_under_the_cap() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let mut client = connect(&proxy).await?;
    assert!(matches!(proxy.throttle(Some(0)), Err(ProxyError::ZeroRate)));

    let rate = 32 * 1024;
    proxy.throttle(Some(rate))?;
    let payload = vec![7; rate as usize];
    let started = Instant::now();
    round_trip(&mut client, &payload).await?;
    let elapsed = started.elapsed();
    // A cap of `rate` moves `rate` bytes in about a second; allow for the first burst.
    assert!(
        elapsed >= Duration::from_millis(900),
        "{} bytes went through a {rate} B/s throttle in {elapsed:?}",
        payload.len()
    );

    proxy.throttle(None)?;
    round_trip(&mut client, &payload).await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn an_unreachable_upstream_closes_the_client_and_is_counted() -> Result<()> {
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let proxy = Proxy::start(closed).await?;
    let mut client = connect(&proxy).await?;
    expect_closed(&mut client).await?;
    stats_until(&proxy, |s| s.upstream_errors == 1 && s.active == 0).await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn every_change_is_published_with_its_time() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let mut events = proxy.subscribe();
    let before = Instant::now();
    proxy.kill().await?;
    proxy.heal().await?;
    proxy.throttle(Some(1000))?;

    let expected = [
        Change::Mode { from: Mode::Pass, to: Mode::Killed },
        Change::Mode { from: Mode::Killed, to: Mode::Pass },
        Change::Throttle { bytes_per_sec: Some(1000) },
    ];
    let mut last = before;
    for change in expected {
        let event = events.try_recv().context("an event is missing")?;
        assert_eq!(event.change, change);
        assert!(event.at >= last, "events out of time order");
        last = event.at;
    }
    Ok(())
}

#[test_log::test(tokio::test)]
async fn dropping_the_proxy_closes_its_connections_and_its_port() -> Result<()> {
    let echo = Echo::start().await?;
    let proxy = Proxy::start(echo.addr).await?;
    let addr = proxy.local_addr();
    let mut client = connect(&proxy).await?;
    round_trip(&mut client, b"hi").await?;

    drop(proxy);
    expect_closed(&mut client).await?;
    expect_refused(addr).await?;
    Ok(())
}
