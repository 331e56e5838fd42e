//! What the real-lane suites share: joining a room on the shared livekit-server with a fresh
//! identity, fast reconnect policies, and the "recovers from a scenario" check.

#![allow(dead_code)] // each test binary uses a different part of it

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline::server::LiveKitServer;
use faultline_sdk::{
    ConnectionState, Jitter, ReconnectPolicy, Room, RoomEvent, RoomOptions, SimulateScenario,
};

/// Generous bound on one wait for an event in these suites.
pub const WAIT: Duration = Duration::from_secs(30);

/// A room name no other test (in any process) uses.
pub fn unique_room(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The shared server, with the reason in the error if it cannot be had.
pub async fn server() -> Result<Arc<LiveKitServer>> {
    LiveKitServer::shared().await.context("starting the shared livekit-server")
}

/// A reconnect policy that runs out in about a second.
pub fn fast_options() -> RoomOptions {
    RoomOptions {
        reconnect: ReconnectPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_millis(400),
            jitter: Jitter::Full,
        },
        connect_timeout: Duration::from_secs(2),
        join_timeout: Duration::from_secs(2),
        ..RoomOptions::default()
    }
}

/// Joins `room` on `url` as `identity`; returns the room and its recorded events, after
/// checking it reports `Connected`.
pub async fn join_at(
    server: &LiveKitServer,
    url: &str,
    room: &str,
    identity: &str,
    options: RoomOptions,
) -> Result<(Room, EventLog)> {
    let token = server.token(room, identity)?;
    let (joined, events) = Room::connect(url, &token, options).await.with_context(|| {
        format!("{identity} joining {room} at {url}; server log: {:?}", server.log_path())
    })?;
    let mut log = EventLog::new(events);
    log.wait_for("Connected", WAIT, |e| *e == RoomEvent::Connected).await?;
    ensure!(joined.connection_state() == ConnectionState::Connected, "a joined room is Connected");
    server_sees_active(server, room, identity).await?;
    Ok((joined, log))
}

/// Waits until the server lists `identity` in `room` as ACTIVE. A client reports `Connected`
/// once its own side of the peer connection is up, which can be a few milliseconds before the
/// server marks the participant active; signalling cut in that window makes the server drop
/// the participant (and its peer connections) instead of waiting for a resume, so a test that
/// cuts signalling right after joining waits for this first.
pub async fn server_sees_active(server: &LiveKitServer, room: &str, identity: &str) -> Result<()> {
    use livekit_protocol::participant_info::State;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = server.room_service().list_participants(room).await?;
        let state = listed.iter().find(|p| p.identity == identity).map(|p| p.state);
        if state == Some(State::Active as i32) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the server never listed {identity} in {room} as ACTIVE within {WAIT:?} (state \
             {state:?}); server log: {:?}",
            server.log_path()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Joins `room` on the server directly.
pub async fn join(server: &LiveKitServer, room: &str, identity: &str) -> Result<(Room, EventLog)> {
    join_at(server, &server.ws_url(), room, identity, RoomOptions::default()).await
}

/// Makes `scenario` happen and checks the room goes `Reconnecting` → `Reconnected` and ends
/// `Connected`, with the invariants holding.
pub async fn assert_recovers(
    room: &Room,
    log: &mut EventLog,
    scenario: SimulateScenario,
) -> Result<()> {
    room.simulate_scenario(scenario).await.with_context(|| format!("simulating {scenario:?}"))?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(
        room.connection_state() == ConnectionState::Connected,
        "after Reconnected the room must be Connected, it is {:?}\n{}",
        room.connection_state(),
        log.trace()
    );
    log.judge(room.connection_state())?;
    Ok(())
}

/// What a [`Front`] does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontMode {
    /// Forward it to the server.
    Forward,
    /// Answer it with this HTTP status (and close).
    Answer(u16),
    /// Answer the first this-many connections (counted from the start) with this status,
    /// then forward.
    AnswerFirst(u16, u32),
}

/// A TCP front for the server that forwards connections or answers them with an HTTP error
/// status, and can cut the connections it forwards: for the HTTP-status paths of reconnects.
pub struct Front {
    addr: std::net::SocketAddr,
    mode: tokio::sync::watch::Sender<FrontMode>,
    answered: tokio::sync::watch::Receiver<u32>,
    cut: Arc<tokio::sync::Notify>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Front {
    /// Starts a front for `upstream` on 127.0.0.1.
    pub async fn start(upstream: std::net::SocketAddr) -> Result<Front> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = tokio::sync::watch::channel(FrontMode::Forward);
        let (answered_tx, answered) = tokio::sync::watch::channel(0u32);
        let cut = Arc::new(tokio::sync::Notify::new());
        let cut_all = cut.clone();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let current = match *mode_rx.borrow() {
                    FrontMode::AnswerFirst(status, count) if *answered_tx.borrow() < count => {
                        FrontMode::Answer(status)
                    }
                    FrontMode::AnswerFirst(..) => FrontMode::Forward,
                    mode => mode,
                };
                match current {
                    FrontMode::Forward => {
                        let cut = cut_all.clone();
                        let targets = seen.clone();
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await
                            else {
                                return;
                            };
                            // Note the request target (first line) before forwarding.
                            let mut head = vec![0u8; 16 * 1024];
                            let Ok(n) = inbound.read(&mut head).await else { return };
                            let text = String::from_utf8_lossy(&head[..n]);
                            if let Some(target) = text.split_whitespace().nth(1) {
                                targets
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(target.to_owned());
                            }
                            if outbound.write_all(&head[..n]).await.is_err() {
                                return;
                            }
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                () = cut.notified() => {}
                            }
                        });
                    }
                    FrontMode::Answer(status) | FrontMode::AnswerFirst(status, _) => {
                        answered_tx.send_modify(|n| *n += 1);
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut request = [0u8; 4096];
                            let _ = inbound.read(&mut request).await;
                            let body = format!("faultline front answers {status}");
                            let response = format!(
                                "HTTP/1.1 {status} Front\r\nContent-Length: {}\r\n\
                                 Connection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = inbound.write_all(response.as_bytes()).await;
                        });
                    }
                }
            }
        });
        Ok(Front { addr, mode, answered, cut, requests })
    }

    /// The WebSocket URL of the front.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Changes what happens to new connections.
    pub fn set_mode(&self, mode: FrontMode) {
        self.mode.send_replace(mode);
    }

    /// Cuts every forwarded connection open now.
    pub fn cut(&self) {
        self.cut.notify_waiters();
    }

    /// The request targets (path and query) of the connections forwarded so far.
    pub fn forwarded_requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many connections were answered with a status so far.
    pub fn answered(&self) -> u32 {
        *self.answered.borrow()
    }

    /// Waits until at least `count` connections were answered with a status.
    pub async fn wait_answered(&self, count: u32) -> Result<()> {
        let mut answered = self.answered.clone();
        tokio::time::timeout(WAIT, answered.wait_for(|n| *n >= count))
            .await
            .with_context(|| format!("{count} connections answered within {WAIT:?}"))??;
        Ok(())
    }
}
