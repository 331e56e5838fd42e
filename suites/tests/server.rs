//! The real livekit-server as the harness runs it: it starts and answers, disappears when
//! dropped, runs in parallel without collisions, is reported with its log when killed
//! behind the harness's back, restarts on the same ports, and answers RoomService calls.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::room_service::RoomServiceError;
use faultline::server::{LiveKitServer, ServerError, ServerOptions};
use faultline::supervise::process_alive;
use faultline::token::TokenSpec;
use livekit_api::access_token::Claims;

/// Polls `condition` every 50 ms until it holds, failing after `bound`.
async fn eventually(
    bound: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + bound;
    while !condition() {
        ensure!(tokio::time::Instant::now() < deadline, "{what} did not happen within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

async fn get_root(server: &LiveKitServer) -> Result<(u16, String)> {
    let response = reqwest::get(format!("{}/", server.http_url())).await?;
    Ok((response.status().as_u16(), response.text().await?))
}

#[test_log::test(tokio::test)]
async fn a_server_answers_and_is_gone_after_drop() -> Result<()> {
    let server = LiveKitServer::start(ServerOptions::default()).await?;
    assert_eq!(get_root(&server).await?, (200, "OK".to_string()));
    assert!(server.ws_url().starts_with("ws://127.0.0.1:"), "{}", server.ws_url());
    let log = server.log_path().context("a local server has a log")?.to_path_buf();
    let shown = log.display().to_string();
    assert!(
        shown.contains("faultline-logs/server/a_server_answers_and_is_gone_after_drop."),
        "{shown}"
    );
    assert!(
        std::fs::read_to_string(&log)?.contains("starting LiveKit server"),
        "log {}",
        log.display()
    );
    let pid = server.pid().context("a running local server has a pid")?;
    let addr = server.signal_addr();
    let rooms = server.room_service();

    drop(server);
    assert!(!process_alive(pid), "livekit-server pid {pid} still runs after drop");
    eventually(Duration::from_secs(5), "the HTTP port closing", || !accepts(addr)).await?;
    // A client that outlived its server says what happened instead of a bare refusal.
    let err = rooms.list_rooms().await.expect_err("the server is gone");
    assert!(err.to_string().contains("was killed by faultline"), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn two_servers_run_side_by_side() -> Result<()> {
    let (a, b) = tokio::join!(
        LiveKitServer::start(ServerOptions::default()),
        LiveKitServer::start(ServerOptions::default())
    );
    let (a, b) = (a?, b?);
    let (pa, pb) = (a.ports().context("local")?, b.ports().context("local")?);
    assert_ne!(pa.http, pb.http);
    assert_ne!(pa.udp, pb.udp);
    assert_ne!(a.log_path(), b.log_path());
    assert_eq!(get_root(&a).await?, (200, "OK".to_string()));
    assert_eq!(get_root(&b).await?, (200, "OK".to_string()));
    // Each has its own keys: a token for one is refused by the other.
    let token = a.token("side-by-side", "alice")?;
    let validate =
        |s: &LiveKitServer| format!("{}/rtc/validate?access_token={token}", s.http_url());
    assert_eq!(reqwest::get(validate(&a)).await?.status().as_u16(), 200);
    assert_eq!(reqwest::get(validate(&b)).await?.status().as_u16(), 401);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_server_killed_behind_our_back_is_reported_with_its_log() -> Result<()> {
    let server = LiveKitServer::start(ServerOptions::default()).await?;
    let pid = server.pid().context("pid")?;
    let log = server.log_path().context("log")?.to_path_buf();
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    ensure!(status.success(), "kill -9 {pid} failed");
    eventually(Duration::from_secs(5), "the harness noticing the death", || {
        server.ensure_running().is_err()
    })
    .await?;

    let err = server.room_service().list_rooms().await.expect_err("the server is dead");
    assert!(matches!(err, RoomServiceError::ServerDied { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&log.display().to_string()), "no log path in: {message}");
    assert!(message.contains("exited unexpectedly"), "{message}");

    let err = server.ensure_running().expect_err("dead");
    assert!(matches!(err, ServerError::Died(_)), "{err}");
    assert!(err.to_string().contains(&log.display().to_string()), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_killed_server_restarts_on_the_same_ports() -> Result<()> {
    let server = LiveKitServer::start(ServerOptions::default()).await?;
    let ports = server.ports().context("local")?;
    let token = server.token("restart-room", "bob")?;
    server.kill().await?;
    assert!(get_root(&server).await.is_err(), "a killed server still answers");
    assert!(server.ensure_running().is_err());

    server.restart().await?;
    assert_eq!(server.ports(), Some(ports));
    assert_eq!(get_root(&server).await?, (200, "OK".to_string()));
    // Same keys: a token minted before the crash is still accepted.
    let url = format!("{}/rtc/validate?access_token={token}", server.http_url());
    assert_eq!(reqwest::get(url).await?.status().as_u16(), 200);
    server.room_service().list_rooms().await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn room_service_creates_lists_and_deletes_rooms() -> Result<()> {
    let server = LiveKitServer::shared().await?;
    let rooms = server.room_service();
    let name = format!("room-service-{}", std::process::id());
    let created = rooms.create_room(&name, 60).await?;
    assert_eq!(created.name, name);
    assert!(rooms.list_rooms().await?.iter().any(|r| r.name == name));
    assert!(rooms.list_participants(&name).await?.is_empty());

    rooms.delete_room(&name).await?;
    assert!(!rooms.list_rooms().await?.iter().any(|r| r.name == name));
    let err = rooms.delete_room(&name).await.expect_err("the room is gone");
    assert!(matches!(err, RoomServiceError::NotFound { method: "DeleteRoom", .. }), "{err}");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn tokens_carry_their_grants_and_the_secret_is_never_printed() -> Result<()> {
    let server = LiveKitServer::shared().await?;
    let validate =
        |token: String| format!("{}/rtc/validate?access_token={token}", server.http_url());
    let token = server.token("tokens", "carol")?;
    assert_eq!(reqwest::get(validate(token.clone())).await?.status().as_u16(), 200);
    let claims = Claims::from_unverified(&token)?;
    assert_eq!((claims.sub.as_str(), claims.video.room.as_str()), ("carol", "tokens"));
    assert!(claims.video.room_join);
    assert_eq!(claims.exp - claims.nbf, 3600);

    let spec = TokenSpec::join("tokens", "dave")
        .with_ttl(Duration::from_secs(90))
        .with_name("Dave")
        .with_metadata("{\"seat\":3}");
    let claims = Claims::from_unverified(&server.token_with(&spec)?)?;
    assert_eq!((claims.name.as_str(), claims.metadata.as_str()), ("Dave", "{\"seat\":3}"));
    assert_eq!(claims.exp - claims.nbf, 90);

    let forged = spec.mint(server.api_key(), "not-the-secret-not-the-secret-not-the-secret")?;
    assert_eq!(reqwest::get(validate(forged)).await?.status().as_u16(), 401);

    assert!(!format!("{server:?}").contains(server.api_secret()), "Debug shows the secret");
    Ok(())
}

/// The machine's address on its default route, if it has one besides loopback. Connecting a
/// UDP socket sends nothing; it only asks the kernel which local address it would use.
fn outward_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test_log::test(tokio::test)]
async fn a_server_is_reachable_on_loopback_only() -> Result<()> {
    let server = LiveKitServer::start(ServerOptions::default()).await?;
    let ports = server.ports().context("a local server has ports")?;
    ensure!(accepts(SocketAddr::from(([127, 0, 0, 1], ports.http))), "no answer on loopback");
    let ip = outward_ip().context(
        "this machine has no address besides loopback, so exposure cannot be checked here",
    )?;
    ensure!(
        !accepts(SocketAddr::new(ip, ports.http)),
        "the server's HTTP port {} answers on {ip}: it must bind 127.0.0.1 only (log: {:?})",
        ports.http,
        server.log_path()
    );
    Ok(())
}
