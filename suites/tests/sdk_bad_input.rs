//! faultline-sdk given bad input: a rejected or expired token, URLs that are wrong or lead
//! nowhere, and fake servers that hang up, stall, fail the upgrade or send garbage. Each must
//! end in a clear error, quickly, without a panic — and never with the token in the message.

mod real_lane;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::token::TokenSpec;
use faultline_sdk::signal::SignalError;
use faultline_sdk::{Room, RoomError, RoomOptions};
use futures_util::SinkExt;
use prost::Message as _;
use real_lane::{server, unique_room};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A token for the fake servers (its value must never appear in an error).
const TOKEN: &str = "tok-5ecret-value";

/// Every attempt here must fail well within this.
const BOUND: Duration = Duration::from_secs(10);

/// Options with short timeouts, so the stalling cases end fast.
fn quick() -> RoomOptions {
    RoomOptions {
        connect_timeout: Duration::from_secs(1),
        join_timeout: Duration::from_secs(1),
        ..RoomOptions::default()
    }
}

/// Connects and expects an error, within [`BOUND`], that does not leak `token`.
async fn connect_fails(url: &str, token: &str) -> Result<RoomError> {
    let attempt = tokio::time::timeout(BOUND, Room::connect(url, token, quick()))
        .await
        .with_context(|| format!("Room::connect({url}) did not return within {BOUND:?}"))?;
    let error = match attempt {
        Ok(_) => anyhow::bail!("Room::connect({url}) succeeded; expected an error"),
        Err(error) => error,
    };
    ensure!(!error.to_string().contains(token), "the error leaks the token: {error}");
    // A failure another attempt might fix is tried again (3 retries by default, like
    // upstream); the final error says so and carries the last attempt's.
    match error {
        RoomError::JoinFailed { attempts, last } => {
            ensure!(attempts == 4, "1 attempt + 3 retries, not {attempts}: {last}");
            Ok(*last)
        }
        other => Ok(other),
    }
}

/// A fake signalling server on 127.0.0.1 running `serve` on each accepted TCP stream.
async fn fake_server<F, Fut>(serve: F) -> Result<SocketAddr>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Ok(addr)
}

/// A fake server that upgrades to WebSocket, sends `frames`, then hangs up.
async fn websocket_sending(frames: Vec<Message>) -> Result<SocketAddr> {
    fake_server(move |stream| {
        let frames = frames.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            for frame in frames {
                let _ = ws.send(frame).await;
            }
            let _ = ws.close(None).await;
        }
    })
    .await
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_bad_token_is_an_unauthorized_error_with_the_servers_reason() -> Result<()> {
    let server = server().await?;
    let token = "not-a-jwt-at-all";
    let error = connect_fails(&server.ws_url(), token).await?;
    ensure!(error.is_unauthorized(), "expected 401, got: {error}");
    let message = error.to_string();
    ensure!(message.contains("401"), "the status is named: {message}");
    ensure!(
        message.trim_end().len() > message.find("401").unwrap_or(0) + 3,
        "the server's reason (from /rtc/validate) follows the status: {message}"
    );
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_token_signed_with_the_wrong_secret_is_an_unauthorized_error() -> Result<()> {
    let server = server().await?;
    let token = TokenSpec::join(&unique_room("wrong-secret"), "p0")
        .mint(server.api_key(), "not-the-servers-secret-not-the-servers-secret")?;
    let error = connect_fails(&server.ws_url(), &token).await?;
    ensure!(error.is_unauthorized(), "expected 401, got: {error}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn malformed_urls_are_rejected_before_any_connection() -> Result<()> {
    for url in ["", "127.0.0.1:7880", "not a url", "ftp://127.0.0.1:7880", "ws://"] {
        let error = connect_fails(url, TOKEN).await?;
        ensure!(
            matches!(error, RoomError::Signal(SignalError::InvalidUrl { .. })),
            "{url:?}: expected an invalid-URL error, got: {error}"
        );
    }
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_port_nobody_listens_on_is_a_connect_error() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::Connect { .. })),
        "expected a connect error, got: {error}"
    );
    ensure!(error.to_string().contains(&addr.to_string()), "the address is named: {error}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_server_that_never_answers_the_upgrade_times_out() -> Result<()> {
    let addr = fake_server(|mut stream| async move {
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    })
    .await?;
    let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::Timeout { .. })),
        "expected a timeout, got: {error}"
    );
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn an_http_error_on_upgrade_is_reported_with_its_body() -> Result<()> {
    let addr = fake_server(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let body = "node overloaded";
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    })
    .await?;
    let error = connect_fails(&format!("http://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::Rejected { status: 503, .. })),
        "expected HTTP 503, got: {error}"
    );
    ensure!(!error.is_unauthorized(), "a 503 is not an auth failure");
    ensure!(error.to_string().contains("node overloaded"), "the server's text is kept: {error}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_server_that_hangs_up_before_the_join_response_is_an_error() -> Result<()> {
    let addr = websocket_sending(Vec::new()).await?;
    let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::ClosedEarly { .. })),
        "expected 'closed before the JoinResponse', got: {error}"
    );
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_silent_websocket_times_out_waiting_for_the_join_response() -> Result<()> {
    let addr = fake_server(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
        use futures_util::StreamExt;
        while ws.next().await.is_some() {}
    })
    .await?;
    let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::Timeout { .. })),
        "expected a join timeout, got: {error}"
    );
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn garbage_frames_are_decode_errors() -> Result<()> {
    let junk = vec![
        Message::Binary(vec![0xff; 64].into()),
        Message::Binary(vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f].into()),
        Message::Text("{\"join\": {}}".into()),
    ];
    for frame in junk {
        let addr = websocket_sending(vec![frame.clone()]).await?;
        let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
        ensure!(
            matches!(error, RoomError::Signal(SignalError::Decode(_))),
            "{frame:?}: expected a decode error, got: {error}"
        );
    }
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_wrong_first_message_is_an_unexpected_message_error() -> Result<()> {
    use livekit_protocol::{signal_response, SignalResponse};
    let pong = SignalResponse { message: Some(signal_response::Message::Pong(1)) };
    let addr = websocket_sending(vec![Message::Binary(pong.encode_to_vec().into())]).await?;
    let error = connect_fails(&format!("ws://{addr}"), TOKEN).await?;
    ensure!(
        matches!(error, RoomError::Signal(SignalError::Unexpected { .. })),
        "expected an unexpected-message error, got: {error}"
    );
    ensure!(error.to_string().contains("JoinResponse"), "it says what was expected: {error}");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_join_refused_twice_with_503_gets_in_on_the_third_attempt() -> Result<()> {
    let server = server().await?;
    let front = real_lane::Front::start(server.signal_addr()).await?;
    front.set_mode(real_lane::FrontMode::AnswerFirst(503, 2));
    let token = server.token(&unique_room("join-retry"), "p0")?;
    let (room, _events) =
        tokio::time::timeout(BOUND, Room::connect(&front.ws_url(), &token, quick()))
            .await
            .context("Room::connect did not return")?
            .context("the third attempt should get in")?;
    ensure!(front.answered() == 2, "two refusals, then through: {}", front.answered());
    room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_refused_token_is_not_retried() -> Result<()> {
    let server = server().await?;
    let front = real_lane::Front::start(server.signal_addr()).await?;
    front.set_mode(real_lane::FrontMode::Answer(401));
    let error = connect_fails(&front.ws_url(), TOKEN).await?;
    ensure!(error.is_unauthorized(), "expected 401, got: {error}");
    // The refused upgrade, and the /rtc/validate asking why: no second attempt.
    ensure!(front.answered() == 2, "one attempt (and its validate), saw {}", front.answered());
    Ok(())
}
