//! Signalling: one WebSocket to the server's `/rtc` endpoint carrying protobuf
//! `SignalRequest`s out and `SignalResponse`s in.
//!
//! `connect` opens the socket (TCP from the [`Network`], TLS for `wss`, the WebSocket
//! upgrade) and waits for the server's first answer (JoinResponse, or ReconnectResponse for a
//! resume). It then hands the socket to a small I/O task that owns it: it writes what the
//! engine sends, forwards what the server sends, keeps the link alive with pings, and reports
//! the link dead — once — when the socket closes, nothing has been heard for the ping
//! timeout, or nothing at all, signalling or media, for a few seconds and a probe ping went
//! unanswered (see `liveness`). Dropping the `SignalConn` closes the socket after flushing
//! what was queued.

mod liveness;
mod transport;
pub(crate) mod url;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{self as proto, signal_request, signal_response};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::net::{AsyncStream, Network};
use liveness::Liveness;
pub(crate) use liveness::MediaHeard;
pub(crate) use url::{JoinParams, ResumeParams};

/// Why signalling could not be set up, or failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No TCP connection could be opened.
    #[error("cannot connect to the LiveKit server at {addr}: {source} (is the server running and the URL right?)")]
    Connect {
        /// host:port tried.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("{0}")]
    Tls(String),
    /// A step did not finish in time.
    #[error("timed out after {after:?} while {during} at {url}")]
    Timeout {
        /// What was being waited for.
        during: &'static str,
        /// The bound that ran out.
        after: Duration,
        /// The URL (token redacted).
        url: String,
    },
    /// The server answered the WebSocket upgrade with an HTTP error.
    #[error("the server refused the connection to {url}: HTTP {status}{}", reason_suffix(.reason))]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The server's explanation (from `/rtc/validate`), if any.
        reason: String,
        /// The URL (token redacted).
        url: String,
    },
    /// The WebSocket failed.
    #[error("signalling WebSocket error at {url}: {reason}")]
    WebSocket {
        /// What failed.
        reason: String,
        /// The URL (token redacted).
        url: String,
    },
    /// The server closed the connection before answering.
    #[error("the server closed the signalling connection to {url} before sending {expected}")]
    ClosedEarly {
        /// What was expected.
        expected: &'static str,
        /// The URL (token redacted).
        url: String,
    },
    /// The server sent something that is not a signalling message.
    #[error("the server sent an undecodable signalling frame ({0}); is the URL a LiveKit server?")]
    Decode(String),
    /// The server answered with something other than what the step needs.
    #[error("expected {expected} from the server, got {got}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The server answered with a LeaveRequest.
    #[error("the server sent Leave (action {action:?}, reason {reason:?}) instead of {expected}")]
    Leave {
        /// What the server wants the client to do.
        action: proto::leave_request::Action,
        /// Why.
        reason: proto::DisconnectReason,
        /// What was expected.
        expected: &'static str,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl SignalError {
    /// Whether retrying cannot help: the server rejected our credentials, or told us to go.
    pub fn is_terminal(&self) -> bool {
        match self {
            SignalError::Rejected { status, .. } => matches!(status, 401 | 403),
            SignalError::Leave { action, .. } => {
                *action == proto::leave_request::Action::Disconnect
            }
            SignalError::InvalidUrl { .. } => true,
            _ => false,
        }
    }
}

/// Decodes one binary signalling frame. Never panics, whatever the bytes.
pub fn decode_signal_response(bytes: &[u8]) -> Result<proto::SignalResponse, SignalError> {
    proto::SignalResponse::decode(bytes).map_err(|e| SignalError::Decode(e.to_string()))
}

/// What the I/O task reports to the engine.
#[derive(Debug)]
pub(crate) enum SignalEvent {
    /// A message from the server.
    Message(Box<signal_response::Message>),
    /// The link is dead (closed, failed, silent for the ping timeout, or silent on both
    /// signalling and media). Sent once, last.
    Closed(String),
}

/// Keepalive timing from the JoinResponse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    /// How often to ping.
    pub interval: Duration,
    /// How long silence may last before the link counts as dead.
    pub timeout: Duration,
}

impl Keepalive {
    /// The JoinResponse's values (seconds), with the server's defaults for zeros.
    pub(crate) fn from_join(join: &proto::JoinResponse) -> Self {
        let secs = |v: i32, default: u64| {
            Duration::from_secs(u64::try_from(v).ok().filter(|s| *s > 0).unwrap_or(default))
        };
        Self { interval: secs(join.ping_interval, 5), timeout: secs(join.ping_timeout, 15) }
    }
}

/// Everything [`connect`] needs.
pub(crate) struct ConnectParams<'a> {
    pub network: &'a Arc<dyn Network>,
    pub base: &'a ::url::Url,
    pub token: &'a str,
    pub join: &'a JoinParams,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
}

/// What the engine hands the I/O task.
enum Outbound {
    /// A request for the server (boxed: requests are large, barriers small).
    Request(Box<signal_request::Message>),
    /// Answered once the server has read everything queued before it (see
    /// [`SignalConn::barrier`]).
    Barrier(oneshot::Sender<()>),
    /// Judge the link by the media path too (see [`SignalConn::watch_media`]).
    WatchMedia(MediaHeard),
}

/// An open signalling link. Dropping it closes the socket (after flushing queued requests).
#[derive(Debug)]
pub(crate) struct SignalConn {
    tx: Option<mpsc::UnboundedSender<Outbound>>,
    rx: mpsc::UnboundedReceiver<SignalEvent>,
    /// Resolves when the I/O task has stopped (and the socket is closed).
    stopped: Option<oneshot::Receiver<()>>,
    local_addr: SocketAddr,
}

impl SignalConn {
    /// Queues a request for the server (dropped silently if the link is already dead: the
    /// engine learns that from [`SignalEvent::Closed`]).
    pub(crate) fn send(&self, message: signal_request::Message) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Outbound::Request(Box::new(message)));
        }
    }

    /// Waits (at most `bound`) until the server has read every request queued before this
    /// call; false if that could not be confirmed (the link died or the bound passed).
    ///
    /// livekit-server's WebSocket reader answers a `PingReq` as it reads it, in order
    /// (pkg/service/rtcservice.go), so the `PongResp` to a ping sent after the requests proves
    /// they were read and handed to the participant's session. Some requests have no answer
    /// of their own (`SimulateScenario`), and acting on them before the server has read them
    /// races the server: closing the socket right after asking for
    /// `disconnect_signal_on_resume` can let the resume overtake the request.
    pub(crate) async fn barrier(&self, bound: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (done, confirmed) = oneshot::channel();
        if tx.send(Outbound::Barrier(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(bound, confirmed).await, Ok(Ok(())))
    }

    /// Lets the link also judge itself by the media path: once the peer connections exist,
    /// a link silent on both paths is declared lost well before the ping timeout (see
    /// `liveness`).
    pub(crate) fn watch_media(&self, media: MediaHeard) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Outbound::WatchMedia(media));
        }
    }

    /// Flushes what was queued, closes the socket and waits (at most a second) until it is
    /// closed, so the server has read everything sent before.
    pub(crate) async fn close(&mut self) {
        self.tx = None;
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stopped).await;
        }
    }

    /// The next event; `Closed` is the last one, after which this returns a `Closed` again.
    pub(crate) async fn recv(&mut self) -> SignalEvent {
        self.rx.recv().await.unwrap_or_else(|| SignalEvent::Closed("signalling task ended".into()))
    }

    /// The local address of the signalling connection.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn AsyncStream>>;

/// Opens a signalling link and returns it with the server's first answer: a JoinResponse
/// for a join, a ReconnectResponse for a resume (`params.join.resume`).
pub(crate) async fn connect(
    params: &ConnectParams<'_>,
    keepalive: Option<Keepalive>,
) -> Result<(SignalConn, signal_response::Message), SignalError> {
    let rtc = url::rtc_url(params.base, params.token, params.join);
    let shown = url::redact(&rtc);
    let resume = params.join.resume.is_some();
    tracing::debug!(url = %shown, "opening signalling");

    let (ws, local_addr) = match tokio::time::timeout(params.connect_timeout, async {
        let opened = transport::open(params.network, &rtc).await?;
        let (ws, _) = tokio_tungstenite::client_async(rtc.as_str(), opened.stream)
            .await
            .map_err(|e| upgrade_error(e, &shown))?;
        Ok::<_, SignalError>((ws, opened.local_addr))
    })
    .await
    {
        Ok(Ok(opened)) => opened,
        Ok(Err(SignalError::Rejected { status, url, .. })) => {
            let reason = match transport::validate(
                params.network,
                &url::validate_url(&rtc),
                params.connect_timeout,
            )
            .await
            {
                Some((_, text)) => explanation(&text, params.token),
                None => String::new(),
            };
            return Err(SignalError::Rejected { status, reason, url });
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(SignalError::Timeout {
                during: "opening the signalling WebSocket",
                after: params.connect_timeout,
                url: shown,
            })
        }
    };

    let expected = if resume { "a ReconnectResponse" } else { "a JoinResponse" };
    let mut ws = ws;
    let mut early = Vec::new();
    let first = tokio::time::timeout(params.join_timeout, async {
        loop {
            match next_message(&mut ws).await {
                Frame::Message(message) => match *message {
                    signal_response::Message::Join(_) if !resume => return Ok(message),
                    signal_response::Message::Reconnect(_) if resume => return Ok(message),
                    signal_response::Message::Leave(leave) => {
                        return Err(SignalError::Leave {
                            action: leave.action(),
                            reason: leave.reason(),
                            expected,
                        })
                    }
                    signal_response::Message::RefreshToken(_)
                    | signal_response::Message::Update(_)
                    | signal_response::Message::RoomUpdate(_) => early.push(message),
                    other => {
                        return Err(SignalError::Unexpected { expected, got: message_name(&other) })
                    }
                },
                Frame::Skip => {}
                Frame::Undecodable(e) => return Err(e),
                Frame::Closed(_) => {
                    return Err(SignalError::ClosedEarly { expected, url: shown.clone() })
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(SignalError::Timeout {
            during: if resume {
                "waiting for the ReconnectResponse"
            } else {
                "waiting for the JoinResponse"
            },
            after: params.join_timeout,
            url: shown.clone(),
        })
    })?;

    let first = *first;
    let keepalive = keepalive.or_else(|| match &first {
        signal_response::Message::Join(join) => Some(Keepalive::from_join(join)),
        _ => None,
    });
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    for message in early {
        let _ = ev_tx.send(SignalEvent::Message(message));
    }
    let keepalive = keepalive.unwrap_or(Keepalive {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(15),
    });
    let (stopped_tx, stopped_rx) = oneshot::channel();
    tokio::spawn(async move {
        run_link(ws, req_rx, ev_tx, keepalive).await;
        let _ = stopped_tx.send(());
    });
    let conn = SignalConn { tx: Some(req_tx), rx: ev_rx, stopped: Some(stopped_rx), local_addr };
    Ok((conn, first))
}

fn upgrade_error(error: tungstenite::Error, shown: &str) -> SignalError {
    match error {
        tungstenite::Error::Http(response) => SignalError::Rejected {
            status: response.status().as_u16(),
            reason: String::new(),
            url: shown.to_owned(),
        },
        tungstenite::Error::Io(source) => {
            SignalError::WebSocket { reason: source.to_string(), url: shown.to_owned() }
        }
        other => SignalError::WebSocket { reason: other.to_string(), url: shown.to_owned() },
    }
}

/// One frame read from the socket, classified.
enum Frame {
    Message(Box<signal_response::Message>),
    /// A control frame, or a message without content.
    Skip,
    Undecodable(SignalError),
    Closed(String),
}

async fn next_message(ws: &mut Ws) -> Frame {
    match ws.next().await {
        None => Frame::Closed("the server closed the socket".into()),
        Some(Err(e)) => Frame::Closed(format!("socket error: {e}")),
        Some(Ok(WsMessage::Close(frame))) => Frame::Closed(match frame {
            Some(frame) => {
                format!("the server closed the WebSocket ({}: {})", frame.code, frame.reason)
            }
            None => "the server closed the WebSocket".into(),
        }),
        Some(Ok(WsMessage::Binary(bytes))) => match decode_signal_response(&bytes) {
            Ok(proto::SignalResponse { message: Some(message) }) => {
                Frame::Message(Box::new(message))
            }
            Ok(_) => Frame::Skip,
            Err(e) => Frame::Undecodable(e),
        },
        Some(Ok(WsMessage::Text(text))) => Frame::Undecodable(SignalError::Decode(format!(
            "a text frame of {} bytes where binary protobuf was expected",
            text.len()
        ))),
        Some(Ok(_)) => Frame::Skip,
    }
}

/// The I/O task: owns the socket until it dies or the engine drops its [`SignalConn`].
async fn run_link(
    mut ws: Ws,
    mut requests: mpsc::UnboundedReceiver<Outbound>,
    events: mpsc::UnboundedSender<SignalEvent>,
    keepalive: Keepalive,
) {
    let started = Instant::now();
    let mut link = Liveness::new(keepalive, started);
    let mut pings = tokio::time::interval_at(started + keepalive.interval, keepalive.interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtt_ms = 0_i64;
    // Barrier pings carry negative timestamps (regular ones count milliseconds up from 0),
    // so their answers are told apart from keepalive pongs.
    let mut barriers: Vec<(i64, oneshot::Sender<()>)> = Vec::new();
    let mut next_barrier = -1_i64;

    let why = loop {
        let check = link.next_check();
        // What to write, if anything; written below, outside the `select!`.
        let out = tokio::select! {
            biased;
            request = requests.recv() => match request {
                Some(Outbound::Request(message)) => Some(*message),
                Some(Outbound::Barrier(done)) => {
                    let ping = proto::Ping { timestamp: next_barrier, rtt: rtt_ms };
                    barriers.push((next_barrier, done));
                    next_barrier -= 1;
                    link.pinged(Instant::now());
                    Some(signal_request::Message::PingReq(ping))
                }
                Some(Outbound::WatchMedia(media)) => {
                    link.watch(media);
                    None
                }
                None => {
                    // The engine let go: flush nothing more, say goodbye, and stop quietly.
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    return;
                }
            },
            frame = next_message(&mut ws) => {
                link.heard_signal(Instant::now());
                match frame {
                    Frame::Message(message) if matches!(*message, signal_response::Message::PongResp(_)) => {
                        let signal_response::Message::PongResp(pong) = *message else { continue };
                        if pong.last_ping_timestamp < 0 {
                            if let Some(i) = barriers.iter().position(|(id, _)| *id == pong.last_ping_timestamp) {
                                let _ = barriers.swap_remove(i).1.send(());
                            }
                        } else {
                            let now_ms = millis_since(started);
                            rtt_ms = (now_ms - pong.last_ping_timestamp).max(0);
                        }
                    }
                    Frame::Message(message) if matches!(*message, signal_response::Message::Pong(_)) => {}
                    Frame::Message(message) => {
                        if events.send(SignalEvent::Message(message)).is_err() {
                            return;
                        }
                    }
                    Frame::Skip => {}
                    Frame::Undecodable(e) => tracing::warn!("ignoring a signalling frame: {e}"),
                    Frame::Closed(why) => break why,
                }
                None
            },
            _ = pings.tick() => {
                link.pinged(Instant::now());
                Some(keepalive_ping(started, rtt_ms))
            },
            () = tokio::time::sleep_until(check) => {
                let now = Instant::now();
                if let Some(why) = link.dead(now) {
                    break why;
                }
                link.wants_probe(now).then(|| {
                    link.pinged(now);
                    keepalive_ping(started, rtt_ms)
                })
            },
        };
        if let Some(message) = out {
            if let Err(why) = write(&mut ws, message, &link).await {
                break why;
            }
        }
    };
    tracing::info!("signalling link lost: {why}");
    let _ = events.send(SignalEvent::Closed(why));
}

/// A keepalive (or probe) ping; its timestamp counts milliseconds from `started`, so its pong
/// gives the round trip.
fn keepalive_ping(started: Instant, rtt_ms: i64) -> signal_request::Message {
    signal_request::Message::PingReq(proto::Ping { timestamp: millis_since(started), rtt: rtt_ms })
}

/// Writes `message`, giving up once `link` counts as dead: a write stuck on a stalled socket
/// whose send buffer is full must not keep the link from being declared dead. The error says
/// why the link is dead.
async fn write(
    ws: &mut Ws,
    message: signal_request::Message,
    link: &Liveness,
) -> Result<(), String> {
    let sending = send(ws, message);
    tokio::pin!(sending);
    loop {
        match tokio::time::timeout_at(link.deadline(), &mut sending).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => return Err(format!("cannot write to the signalling socket: {e}")),
            // The media path may have spoken meanwhile and moved the deadline.
            Err(_) => {
                if let Some(why) = link.dead(Instant::now()) {
                    return Err(format!("{why}, while a write waited on the socket"));
                }
            }
        }
    }
}

async fn send(ws: &mut Ws, message: signal_request::Message) -> Result<(), tungstenite::Error> {
    let bytes = proto::SignalRequest { message: Some(message) }.encode_to_vec();
    ws.send(WsMessage::Binary(bytes.into())).await
}

fn millis_since(start: Instant) -> i64 {
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A short name of a server message, for errors.
pub(crate) fn message_name(message: &signal_response::Message) -> String {
    let debug = format!("{message:?}");
    debug.split(['(', ' ', '{']).next().unwrap_or("message").to_owned()
}

/// How much of `/rtc/validate`'s answer goes into an error.
const EXPLANATION_CHARS: usize = 512;

/// `/rtc/validate`'s answer as it goes into an error: the token removed first (livekit-server
/// quotes it back: "invalid token: eyJ…"), then cut to [`EXPLANATION_CHARS`] — cutting first
/// could leave a prefix of a long token that no longer matches it.
fn explanation(text: &str, token: &str) -> String {
    let text = if token.is_empty() { text.to_owned() } else { text.replace(token, "<redacted>") };
    text.chars().take(EXPLANATION_CHARS).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_long_token_quoted_back_is_removed_before_the_explanation_is_cut() {
        let token = "eyJ".to_owned() + &"x".repeat(700);
        let quoted = format!("invalid token: {token}: token is expired");
        let shown = explanation(&quoted, &token);
        assert_eq!(shown, "invalid token: <redacted>: token is expired");
        let long = "why ".repeat(400);
        assert_eq!(explanation(&long, &token).chars().count(), EXPLANATION_CHARS);
    }

    #[test_log::test]
    fn garbage_does_not_decode_and_does_not_panic() {
        assert!(decode_signal_response(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_signal_response(&[]).is_ok_and(|r| r.message.is_none()));
    }

    #[test_log::test]
    fn auth_failures_and_server_disconnects_are_terminal() {
        let rejected =
            |status| SignalError::Rejected { status, reason: String::new(), url: String::new() };
        assert!(rejected(401).is_terminal());
        assert!(!rejected(503).is_terminal());
        let leave = |action| SignalError::Leave {
            action,
            reason: proto::DisconnectReason::StateMismatch,
            expected: "x",
        };
        assert!(leave(proto::leave_request::Action::Disconnect).is_terminal());
        assert!(!leave(proto::leave_request::Action::Reconnect).is_terminal());
    }

    #[test_log::test]
    fn keepalive_defaults_replace_zeros() {
        let join = proto::JoinResponse { ping_interval: 0, ping_timeout: 3, ..Default::default() };
        let keepalive = Keepalive::from_join(&join);
        assert_eq!(keepalive.interval, Duration::from_secs(5));
        assert_eq!(keepalive.timeout, Duration::from_secs(3));
    }

    /// A link running over a pipe of `capacity` bytes that nobody reads and that never
    /// answers: once the pipe is full, every write waits.
    struct Stalled {
        requests: mpsc::UnboundedSender<Outbound>,
        events: mpsc::UnboundedReceiver<SignalEvent>,
        task: tokio::task::JoinHandle<()>,
        /// The server's end, kept open and unread.
        _theirs: tokio::io::DuplexStream,
    }

    async fn stalled_link(capacity: usize) -> Stalled {
        let (ours, theirs) = tokio::io::duplex(capacity);
        let stream: Box<dyn AsyncStream> = Box::new(ours);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            stream,
            tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let keepalive =
            Keepalive { interval: Duration::from_secs(5), timeout: Duration::from_secs(15) };
        let task = tokio::spawn(run_link(ws, requests, events, keepalive));
        Stalled { requests: requests_tx, events: events_rx, task, _theirs: theirs }
    }

    /// Waits (in paused time) for the link to be declared dead; returns why.
    async fn closed(events: &mut mpsc::UnboundedReceiver<SignalEvent>) -> String {
        let closed = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("the link must be declared dead, not wait on the write for ever");
        let Some(SignalEvent::Closed(why)) = closed else {
            panic!("expected Closed, got {closed:?}")
        };
        why
    }

    #[test_log::test(tokio::test(start_paused = true))]
    async fn a_write_stuck_on_a_stalled_socket_still_ends_at_the_ping_timeout() {
        // 16 bytes: the first request fills the pipe, the next write waits for ever.
        let started = Instant::now();
        let mut link = stalled_link(16).await;
        let big = signal_request::Message::Leave(proto::LeaveRequest::default());
        link.requests.send(Outbound::Request(Box::new(big.clone()))).expect("link running");
        link.requests.send(Outbound::Request(Box::new(big))).expect("link running");
        let why = closed(&mut link.events).await;
        assert!(why.contains("ping timeout"), "{why}");
        assert_eq!(started.elapsed(), Duration::from_secs(15), "{why}");
        drop(link.requests);
        link.task.await.expect("the link task ends");
    }

    #[test_log::test(tokio::test(start_paused = true))]
    async fn a_dark_link_is_lost_though_its_probe_waits_on_a_stalled_socket() {
        // 1 byte: the probe's write waits. The media path heard the server once, at the
        // start, and never again.
        let started = Instant::now();
        let mut link = stalled_link(1).await;
        let media: MediaHeard = Arc::new(move || Some(started));
        link.requests.send(Outbound::WatchMedia(media)).expect("link running");
        let why = closed(&mut link.events).await;
        assert!(why.contains("on signalling or on the media path"), "{why}");
        assert_eq!(started.elapsed(), Duration::from_secs(7), "{why}");
        drop(link.requests);
        link.task.await.expect("the link task ends");
    }

    #[test_log::test]
    fn message_names_are_short() {
        let message = signal_response::Message::RefreshToken("t".into());
        assert_eq!(message_name(&message), "RefreshToken");
    }
}
