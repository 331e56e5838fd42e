//! Each toxiproxy toxic, applied through the harness's client to a TCP stream between a
//! test client and a small in-test server, does to the stream what it says; disabled
//! proxies refuse connections; guards undo their fault when dropped.
//!
//! Bounds are one-sided and generous (a delay is at least the setting), so a slow machine
//! cannot make these fail.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use faultline::toxiproxy::{Proxy, Stream, Toxic, ToxicKind, Toxiproxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on any single wait in these tests.
const BOUND: Duration = Duration::from_secs(20);

/// An in-test TCP server that echoes everything back.
async fn echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// An in-test TCP server that writes `payload` to each connection, then closes it.
async fn source_server(payload: Vec<u8>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let payload = payload.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(&payload).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A proxy with a unique name on the shared toxiproxy, in front of `upstream`.
async fn proxy_to(name: &str, upstream: SocketAddr) -> Result<(Proxy, SocketAddr)> {
    let toxiproxy = Toxiproxy::shared().await?;
    let proxy = toxiproxy
        .client()
        .create_proxy(&format!("{name}-{}", std::process::id()), &upstream.to_string())
        .await?;
    let listen = proxy.listen_addr()?;
    Ok((proxy, listen))
}

/// Sends `msg` and reads the echo, returning the round-trip time.
async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    stream.write_all(msg).await?;
    let mut buf = vec![0; msg.len()];
    tokio::time::timeout(BOUND, stream.read_exact(&mut buf)).await.context("echo timed out")??;
    ensure!(buf == msg, "echo returned {buf:?}");
    Ok(started.elapsed())
}

/// Reads until EOF, returning every read's size (an error ends the stream too).
async fn read_chunks(stream: &mut TcpStream) -> Result<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await.context("read timed out")? {
            Ok(0) => return Ok(chunks),
            Ok(n) => chunks.push(n),
            Err(e) => bail!("read failed after {} bytes: {e}", chunks.iter().sum::<usize>()),
        }
    }
}

/// Waits (bounded) for the peer to close the stream, by EOF or by an error such as a reset;
/// returns how many bytes arrived first. Fails if the stream stays open.
async fn closed(stream: &mut TcpStream) -> Result<usize> {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Err(_) => bail!("the stream was not closed within {BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

#[test_log::test(tokio::test)]
async fn latency_delays_every_round_trip_by_at_least_the_setting() -> Result<()> {
    let (proxy, listen) = proxy_to("latency", echo_server().await?).await?;
    let mut stream = TcpStream::connect(listen).await?;
    let guard = proxy
        .add_toxic(Toxic::new(ToxicKind::Latency { latency: 300, jitter: 0 }, Stream::Downstream))
        .await?;
    for _ in 0..3 {
        let rtt = round_trip(&mut stream, b"ping").await?;
        assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?} < 300 ms latency");
    }
    guard.remove().await?;
    let rtt = round_trip(&mut stream, b"ping").await?;
    assert!(rtt < Duration::from_millis(300), "latency still applied after removal: {rtt:?}");
    proxy.delete().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn bandwidth_caps_throughput() -> Result<()> {
    const BYTES: usize = 192 * 1024;
    let (proxy, listen) = proxy_to("bandwidth", source_server(vec![7; BYTES]).await?).await?;
    let _guard =
        proxy.add_toxic(Toxic::new(ToxicKind::Bandwidth { rate: 64 }, Stream::Downstream)).await?;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await?;
    let received: usize = read_chunks(&mut stream).await?.iter().sum();
    let elapsed = started.elapsed();
    assert_eq!(received, BYTES);
    // 192 KiB at 64 KB/s takes about 3 s; allow for KB = 1000 or 1024 and generous slack.
    let rate = received as f64 / elapsed.as_secs_f64();
    assert!(rate <= 64.0 * 1024.0 * 1.5, "throughput {rate:.0} B/s is above the 64 KB/s cap");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn reset_peer_resets_the_connection() -> Result<()> {
    let (proxy, listen) = proxy_to("reset", echo_server().await?).await?;
    let _guard =
        proxy.add_toxic(Toxic::new(ToxicKind::ResetPeer { timeout: 0 }, Stream::Upstream)).await?;
    let mut stream = TcpStream::connect(listen).await?;
    let _ = stream.write_all(b"hello").await;
    let mut buf = [0u8; 16];
    let outcome = tokio::time::timeout(BOUND, stream.read(&mut buf)).await.context("no reset")?;
    match outcome {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => bail!("expected ECONNRESET, read {n} bytes"),
    }
    Ok(())
}

#[test_log::test(tokio::test)]
async fn timeout_zero_black_holes_and_timeout_n_closes() -> Result<()> {
    let (proxy, listen) = proxy_to("timeout", echo_server().await?).await?;
    let mut stream = TcpStream::connect(listen).await?;
    round_trip(&mut stream, b"before").await?;
    let hole =
        proxy.add_toxic(Toxic::new(ToxicKind::Timeout { timeout: 0 }, Stream::Upstream)).await?;
    stream.write_all(b"lost").await?;
    let mut buf = [0u8; 16];
    // Nothing comes back, and the connection is not closed either: a black hole.
    let silent = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
    assert!(silent.is_err(), "data or close came through a black hole: {silent:?}");
    hole.remove().await?;

    let _close =
        proxy.add_toxic(Toxic::new(ToxicKind::Timeout { timeout: 500 }, Stream::Upstream)).await?;
    let mut stream = TcpStream::connect(listen).await?;
    let started = Instant::now();
    let _ = stream.write_all(b"x").await;
    let passed = closed(&mut stream).await?;
    assert_eq!(passed, 0, "data passed a timeout toxic");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed before the timeout");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn limit_data_closes_after_the_byte_limit() -> Result<()> {
    let (proxy, listen) = proxy_to("limit", source_server(vec![1; 10_000]).await?).await?;
    let _guard = proxy
        .add_toxic(Toxic::new(ToxicKind::LimitData { bytes: 1000 }, Stream::Downstream))
        .await?;
    let mut stream = TcpStream::connect(listen).await?;
    let received: usize = read_chunks(&mut stream).await?.iter().sum();
    assert_eq!(received, 1000);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn slicer_delivers_data_in_small_slices() -> Result<()> {
    let (proxy, listen) = proxy_to("slicer", source_server(vec![2; 400]).await?).await?;
    let slicer = ToxicKind::Slicer { average_size: 10, size_variation: 5, delay: 20_000 };
    let _guard = proxy.add_toxic(Toxic::new(slicer, Stream::Downstream)).await?;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await?;
    let chunks = read_chunks(&mut stream).await?;
    assert_eq!(chunks.iter().sum::<usize>(), 400);
    // 400 bytes in slices of at most 15 bytes, 20 ms apart: at least 26 slices, 0.5 s.
    assert!(chunks.len() >= 20, "only {} reads: {chunks:?}", chunks.len());
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    Ok(())
}

#[test_log::test(tokio::test)]
async fn slow_close_delays_the_close() -> Result<()> {
    let (proxy, listen) = proxy_to("slow-close", source_server(b"bye".to_vec()).await?).await?;
    let _guard = proxy
        .add_toxic(Toxic::new(ToxicKind::SlowClose { delay: 1000 }, Stream::Downstream))
        .await?;
    let started = Instant::now();
    let mut stream = TcpStream::connect(listen).await?;
    let received: usize = read_chunks(&mut stream).await?.iter().sum();
    assert_eq!(received, 3);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(1000), "closed after {elapsed:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_disabled_proxy_refuses_connections_until_its_guard_drops() -> Result<()> {
    let (proxy, listen) = proxy_to("disable", echo_server().await?).await?;
    let mut before = TcpStream::connect(listen).await?;
    round_trip(&mut before, b"up").await?;

    let guard = proxy.disable().await?;
    let refused = TcpStream::connect(listen).await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(ErrorKind::ConnectionRefused));
    // Existing connections are closed too.
    assert_eq!(closed(&mut before).await?, 0);

    drop(guard);
    let mut after = TcpStream::connect(listen).await?;
    round_trip(&mut after, b"back").await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_dropped_toxic_guard_removes_its_toxic() -> Result<()> {
    let (mut proxy, listen) = proxy_to("guard", echo_server().await?).await?;
    let toxic = Toxic::new(ToxicKind::Latency { latency: 400, jitter: 50 }, Stream::Upstream)
        .named("slow")
        .with_toxicity(1.0);
    let guard = proxy.add_toxic(toxic).await?;
    let listed = proxy.toxics().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].kind.as_str()), ("slow", "latency"));
    assert_eq!(listed[0].attributes["latency"], 400);
    assert_eq!(listed[0].stream, Stream::Upstream);

    drop(guard);
    assert!(proxy.refresh().await?.toxics.is_empty(), "toxic left after its guard dropped");
    let mut stream = TcpStream::connect(listen).await?;
    let rtt = round_trip(&mut stream, b"fast").await?;
    assert!(rtt < Duration::from_millis(400), "latency still applied: {rtt:?}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn api_errors_are_typed() -> Result<()> {
    let (proxy, _) = proxy_to("dup", echo_server().await?).await?;
    let toxiproxy = Toxiproxy::shared().await?;
    let client = toxiproxy.client();
    let err = client.create_proxy(proxy.name(), "127.0.0.1:1").await.expect_err("duplicate");
    assert_eq!(err.status(), Some(409), "{err}");
    let err = client.proxy("no-such-proxy").await.expect_err("missing");
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(err.to_string().contains("proxy not found"), "{err}");
    assert!(client.proxies().await?.iter().any(|p| p.name == proxy.name()));
    Ok(())
}
