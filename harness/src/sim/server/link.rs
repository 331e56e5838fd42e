//! The HTTP side of the simulated server: one task per accepted TCP connection. It reads the
//! request head, answers `GET /` and `/rtc/validate` as plain HTTP, checks the access token
//! of `/rtc` and starts the session (all before the upgrade, by peeking at the head, so
//! refusals are plain HTTP statuses as the real server's are), upgrades to a WebSocket once
//! the session has produced its first message, and then relays binary protobuf frames
//! between the socket and the server core (which owns all state).
//!
//! Behaviour taken from livekit/livekit v1.13.5 `pkg/service/rtcservice.go`: the token comes
//! from the `access_token` query parameter or an `Authorization: Bearer` header, a bad token
//! is HTTP 401 before the upgrade, `/rtc/validate` explains a refusal in plain text, and the
//! v0 query carries `reconnect=1` (resumes find the participant by identity, as
//! the real server does; `sid` and `auto_subscribe` change nothing for a data-only client).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use turmoil::net::TcpStream;

use super::ServerConfig;

/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// A join or resume, as the query and token describe it.
#[derive(Debug, Clone)]
pub(super) struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub reconnect: bool,
    /// The server's own IP as the client reached it (its media candidate's address).
    pub server_ip: std::net::IpAddr,
}

/// What the core tells a link to do.
#[derive(Debug)]
pub(super) enum ToLink {
    /// Send a message.
    Send(Box<proto::signal_response::Message>),
    /// Close the WebSocket (after what was queued before).
    Close,
}

/// What a link tells the core.
#[derive(Debug)]
pub(super) enum FromLink {
    /// May this resume be upgraded? (`disconnect_signal_on_resume_no_messages` says no.)
    Admit { join: JoinRequest, reply: oneshot::Sender<bool> },
    /// A WebSocket is open for `join`.
    Open { conn: u64, join: JoinRequest, out: mpsc::UnboundedSender<ToLink> },
    /// A request arrived.
    Request { conn: u64, message: Box<proto::signal_request::Message> },
    /// The WebSocket closed.
    Closed { conn: u64 },
}

/// Serves one TCP connection.
pub(super) async fn serve(
    mut stream: TcpStream,
    conn: u64,
    config: Arc<ServerConfig>,
    core: mpsc::UnboundedSender<FromLink>,
) {
    let Some(head) = read_head(&mut stream).await else { return };
    let Some(request) = Head::parse(&head) else {
        respond(&mut stream, 400, "malformed HTTP request").await;
        return;
    };
    match request.path.as_str() {
        "/" => respond(&mut stream, 200, "OK").await,
        "/rtc/validate" => match authorize(&config, &request) {
            Ok(_) => respond(&mut stream, 200, "success").await,
            Err(why) => respond(&mut stream, 401, &why).await,
        },
        "/rtc" => {
            let join = match authorize(&config, &request) {
                Ok(join) => join,
                Err(why) => return respond(&mut stream, 401, &why).await,
            };
            let server_ip = match stream.local_addr() {
                Ok(addr) => addr.ip(),
                Err(_) => return,
            };
            let join = JoinRequest { server_ip, ..join };
            if join.reconnect {
                let (reply, admitted) = oneshot::channel();
                if core.send(FromLink::Admit { join: join.clone(), reply }).is_err() {
                    return;
                }
                if !admitted.await.unwrap_or(false) {
                    // rtcservice.go: the simulated no-messages resume fails the upgrade.
                    return respond(&mut stream, 500, "simulated signal disconnect on resume")
                        .await;
                }
            }
            relay(stream, conn, join, core).await;
        }
        _ => respond(&mut stream, 404, "not found").await,
    }
}

/// pkg/service/rtcservice.go `readInitialResponse`: how long the first attempt to start a
/// session waits for its first message before the request fails.
const INITIAL_RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the session, upgrades once it has produced its first message (the JoinResponse,
/// ReconnectResponse or Leave), and relays frames until either side closes. As in
/// pkg/service/rtcservice.go, a session that produces no first message is an HTTP 500, not a
/// WebSocket closed after the upgrade.
async fn relay(
    mut stream: TcpStream,
    conn: u64,
    join: JoinRequest,
    core: mpsc::UnboundedSender<FromLink>,
) {
    let (out, mut to_link) = mpsc::unbounded_channel();
    if core.send(FromLink::Open { conn, join, out }).is_err() {
        return;
    }
    let first = match tokio::time::timeout(INITIAL_RESPONSE_TIMEOUT, to_link.recv()).await {
        Ok(Some(ToLink::Send(message))) => message,
        Ok(Some(ToLink::Close) | None) => {
            let _ = core.send(FromLink::Closed { conn });
            return respond(&mut stream, 500, "connection closed by media").await;
        }
        Err(_) => {
            let _ = core.send(FromLink::Closed { conn });
            return respond(&mut stream, 500, "timed out while waiting for signal response").await;
        }
    };
    // The head was already read (peeked) and judged: the handshake only has to agree.
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        let _ = core.send(FromLink::Closed { conn });
        return;
    };
    let bytes = proto::SignalResponse { message: Some(*first) }.encode_to_vec();
    if ws.send(WsMessage::Binary(bytes.into())).await.is_err() {
        let _ = core.send(FromLink::Closed { conn });
        return;
    }
    loop {
        tokio::select! {
            biased;
            command = to_link.recv() => match command {
                Some(ToLink::Send(message)) => {
                    let bytes = proto::SignalResponse { message: Some(*message) }.encode_to_vec();
                    if ws.send(WsMessage::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Some(ToLink::Close) | None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    break;
                }
            },
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    match proto::SignalRequest::decode(bytes.as_ref()) {
                        Ok(proto::SignalRequest { message: Some(message) }) => {
                            let _ = core.send(FromLink::Request { conn, message: Box::new(message) });
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "simulated server: undecodable request"),
                    }
                }
                // The real server switches to JSON on a text frame; this double speaks
                // protobuf only, which is what faultline-sdk sends.
                Some(Ok(WsMessage::Text(_))) => {
                    tracing::debug!("simulated server: ignoring a text (JSON) frame");
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = core.send(FromLink::Closed { conn });
}

/// Reads the request head without consuming it (the WebSocket handshake reads it again).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = vec![0_u8; MAX_HEAD];
    let read = async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            if let Some(end) = text.find("\r\n\r\n") {
                return Some(text[..end].to_owned());
            }
            if n == buf.len() {
                return None;
            }
            // More of the head is on its way.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read).await.ok().flatten()
}

/// The parts of an HTTP request head the server looks at.
struct Head {
    path: String,
    query: BTreeMap<String, String>,
    bearer: Option<String>,
}

impl Head {
    fn parse(head: &str) -> Option<Head> {
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split_whitespace();
        let _method = request_line.next()?;
        let target = request_line.next()?;
        let parsed = url::Url::parse(&format!("http://server{target}")).ok()?;
        let query = parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let bearer = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("authorization") {
                return None;
            }
            value.trim().strip_prefix("Bearer ").map(|t| t.trim().to_owned())
        });
        Some(Head { path: parsed.path().to_owned(), query, bearer })
    }
}

/// Verifies the token and reads the join out of it and the query.
fn authorize(config: &ServerConfig, request: &Head) -> Result<JoinRequest, String> {
    let token = request
        .query
        .get("access_token")
        .cloned()
        .or_else(|| request.bearer.clone())
        .ok_or_else(|| "no access token: expected access_token in the query".to_owned())?;
    let claims = crate::token::verify_at(
        &token,
        &config.api_key,
        &config.api_secret,
        crate::sim::wall_clock(),
    )?;
    if !claims.video.room_join || claims.video.room.is_empty() {
        return Err("the token does not grant joining a room".to_owned());
    }
    if claims.sub.is_empty() {
        return Err("the token has no identity".to_owned());
    }
    let flag = |name: &str, default: bool| match request.query.get(name).map(String::as_str) {
        Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        _ => default,
    };
    Ok(JoinRequest {
        room: claims.video.room,
        identity: claims.sub,
        name: claims.name,
        metadata: claims.metadata,
        reconnect: flag("reconnect", false),
        server_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    })
}

/// Writes a plain HTTP response and closes.
async fn respond(stream: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
