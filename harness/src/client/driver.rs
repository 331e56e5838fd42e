//! The harness's side of the driver protocol (`docs/driver-protocol.md`): starts a driver
//! as a supervised child process (its own process group, killed with everything it started
//! when dropped or when the test process dies), reads its `hello`, sends it commands and
//! waits for their replies, and turns its events into [`ClientEvent`]s.
//!
//! The token travels only inside the `connect` command on the driver's stdin; nothing the
//! harness writes to a log contains a command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use faultline_sdk::{ConnectionState, DisconnectReason};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::{ClientError, ClientEvent, ClientState, MediaCount, Sdk};
use crate::supervise::{Launch, Process};
use crate::vocab::{parse_source, TrackSource};

/// The protocol version this harness speaks (version 2 adds media; a version-1 driver
/// still runs everything but tracks).
pub const PROTOCOL_VERSION: u64 = 2;

/// How long a driver may take to say hello (a browser starts in a few seconds).
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// What a driver said about itself.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    /// The protocol version it speaks.
    pub protocol: u64,
    /// The SDK's name.
    pub sdk: String,
    /// The SDK version actually loaded.
    pub sdk_version: String,
    /// Anything else it wants said (the FFI or browser version).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A reply to one command.
#[derive(Debug, Clone, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    unsupported: bool,
    #[serde(default)]
    state: Option<WireState>,
    #[serde(default)]
    sid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct WireState {
    connection_state: String,
    #[serde(default)]
    room_sid: String,
    #[serde(default)]
    local_sid: String,
    #[serde(default)]
    local_identity: String,
    #[serde(default)]
    remotes: Vec<WireRemote>,
    #[serde(default)]
    local_tracks: Vec<WireLocalTrack>,
    #[serde(default)]
    subscriptions: Vec<WireSubscription>,
}

#[derive(Debug, Clone, Deserialize)]
struct WireLocalTrack {
    source: String,
    sid: String,
    #[serde(default)]
    muted: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct WireSubscription {
    from: String,
    source: String,
    sid: String,
}

#[derive(Debug, Clone, Deserialize)]
struct WireRemote {
    identity: String,
    sid: String,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A running driver.
#[derive(Debug)]
pub(crate) struct Driver {
    sdk: Sdk,
    hello: Hello,
    stdin: tokio::sync::Mutex<Option<tokio::process::ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    process: Mutex<Process>,
    log_path: PathBuf,
}

impl Driver {
    /// Starts the driver, waits for its hello and checks the protocol version. Its events
    /// go to `events`.
    pub(crate) async fn start(
        sdk: Sdk,
        launch: &Launch,
        log_path: PathBuf,
        events: mpsc::UnboundedSender<ClientEvent>,
    ) -> Result<Driver, ClientError> {
        let failed = |message: String| ClientError::Driver {
            sdk,
            message,
            log: log_path.clone(),
            tail: crate::supervise::tail(&log_path, 20),
        };
        let (process, stdin, stdout) = Process::spawn_piped(launch, &log_path)
            .map_err(|e| failed(format!("cannot start {}: {e}", launch.program.display())))?;
        let stdin = tokio::process::ChildStdin::from_std(stdin)
            .map_err(|e| failed(format!("cannot use the driver's stdin: {e}")))?;
        let stdout = tokio::process::ChildStdout::from_std(stdout)
            .map_err(|e| failed(format!("cannot use the driver's stdout: {e}")))?;
        let pending: Pending = Arc::default();
        let (hello_tx, hello_rx) = oneshot::channel();
        tokio::spawn(read_lines(sdk, stdout, pending.clone(), events, hello_tx, log_path.clone()));
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, hello_rx).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(_)) => return Err(failed("the driver exited before saying hello".into())),
            Err(_) => {
                return Err(failed(format!("the driver said no hello within {HELLO_TIMEOUT:?}")))
            }
        };
        if !(1..=PROTOCOL_VERSION).contains(&hello.protocol) {
            return Err(failed(format!(
                "the driver speaks protocol {}, this harness speaks 1 to {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        Ok(Driver {
            sdk,
            hello,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            process: Mutex::new(process),
            log_path,
        })
    }

    /// What the driver said about itself.
    pub(crate) fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The driver's log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The driver's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pid()
    }

    fn failed(&self, op: &str, message: String) -> ClientError {
        ClientError::Failed {
            sdk: self.sdk,
            op: op.to_owned(),
            message,
            log: self.log_path.clone(),
            tail: crate::supervise::tail(&self.log_path, 20),
        }
    }

    /// Sends `command` (an object with `op`) and waits up to `timeout` for its reply.
    async fn request(&self, mut command: Value, timeout: Duration) -> Result<Reply, ClientError> {
        let op = command["op"].as_str().unwrap_or("?").to_owned();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        command["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, tx);
        let mut line = command.to_string();
        line.push('\n');
        {
            let mut stdin = self.stdin.lock().await;
            let Some(stdin) = stdin.as_mut() else {
                return Err(self.failed(&op, "the driver's input is already closed".into()));
            };
            if let Err(e) = stdin.write_all(line.as_bytes()).await {
                return Err(self.failed(&op, format!("cannot write to the driver: {e}")));
            }
            let _ = stdin.flush().await;
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(self.failed(&op, "the driver exited without replying".into())),
            Err(_) => {
                self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                return Err(self.failed(&op, format!("no reply within {timeout:?}")));
            }
        };
        if reply.ok {
            return Ok(reply);
        }
        let message = reply.error.clone().unwrap_or_else(|| "the driver gave no reason".into());
        if reply.unsupported {
            Err(ClientError::Unsupported { sdk: self.sdk, op, message })
        } else {
            Err(self.failed(&op, message))
        }
    }

    /// `connect`: joins the room.
    pub(crate) async fn connect(
        &self,
        url: &str,
        token: &str,
        options: Value,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let command = json!({"op": "connect", "url": url, "token": token, "options": options});
        self.request(command, timeout).await.map(drop)
    }

    /// `simulate`.
    pub(crate) async fn simulate(&self, scenario: Value) -> Result<(), ClientError> {
        let mut command = scenario;
        command["op"] = json!("simulate");
        self.request(command, Duration::from_secs(20)).await.map(drop)
    }

    /// `publish`.
    pub(crate) async fn publish(
        &self,
        payload: &[u8],
        topic: Option<&str>,
        reliable: bool,
        destinations: &[String],
    ) -> Result<(), ClientError> {
        let command = json!({
            "op": "publish",
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
            "topic": topic,
            "reliable": reliable,
            "destinations": destinations,
        });
        self.request(command, Duration::from_secs(20)).await.map(drop)
    }

    /// `publish_track`: the track's sid.
    pub(crate) async fn publish_track(&self, source: TrackSource) -> Result<String, ClientError> {
        let command = json!({"op": "publish_track", "source": source.name()});
        let reply = self.request(command, Duration::from_secs(20)).await?;
        reply.sid.ok_or_else(|| self.failed("publish_track", "the reply carried no sid".into()))
    }

    /// `mute_track`.
    pub(crate) async fn mute_track(
        &self,
        source: TrackSource,
        muted: bool,
    ) -> Result<(), ClientError> {
        let command = json!({"op": "mute_track", "source": source.name(), "muted": muted});
        self.request(command, Duration::from_secs(20)).await.map(drop)
    }

    /// `state`.
    pub(crate) async fn state(&self) -> Result<ClientState, ClientError> {
        let reply = self.request(json!({"op": "state"}), Duration::from_secs(10)).await?;
        let Some(state) = reply.state else {
            return Err(self.failed("state", "the reply carried no state".into()));
        };
        let connection_state = match state.connection_state.as_str() {
            "connected" => ConnectionState::Connected,
            "reconnecting" => ConnectionState::Reconnecting,
            "disconnected" => ConnectionState::Disconnected,
            other => {
                return Err(self.failed("state", format!("unknown connection_state {other:?}")))
            }
        };
        Ok(ClientState {
            connection_state,
            room_sid: state.room_sid,
            local_sid: state.local_sid,
            local_identity: state.local_identity,
            remotes: state.remotes.into_iter().map(|r| (r.identity, r.sid)).collect(),
            local_tracks: state
                .local_tracks
                .into_iter()
                .filter_map(|t| Some((parse_source(&t.source)?, t.sid, t.muted)))
                .collect(),
            subscriptions: state
                .subscriptions
                .into_iter()
                .filter_map(|s| Some((s.from, parse_source(&s.source)?, s.sid)))
                .collect(),
        })
    }

    /// `close`, then end the driver's input so that it exits; kills it if it has not
    /// exited within 5 s.
    pub(crate) async fn close(&self) -> Result<(), ClientError> {
        let closed = self.request(json!({"op": "close"}), Duration::from_secs(15)).await;
        self.stdin.lock().await.take();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let exited = self
                .process
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .exit_status()
                .is_some();
            if exited || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process.lock().unwrap_or_else(std::sync::PoisonError::into_inner).kill();
        closed.map(drop)
    }
}

/// Reads the driver's lines until it exits: the hello, replies (to their waiters) and
/// events (to `events`). Anything unreadable is noted in the driver's log, never fatal.
async fn read_lines(
    sdk: Sdk,
    stdout: tokio::process::ChildStdout,
    pending: Pending,
    events: mpsc::UnboundedSender<ClientEvent>,
    hello: oneshot::Sender<Hello>,
    log_path: PathBuf,
) {
    let note = |text: String| {
        use std::io::Write as _;
        if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&log_path) {
            let _ = writeln!(log, "---- faultline ({sdk} driver): {text}");
        }
    };
    let mut hello = Some(hello);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                note(format!("not a protocol line ({e}): {line}"));
                continue;
            }
        };
        match value["type"].as_str() {
            Some("hello") => match serde_json::from_value::<Hello>(value) {
                Ok(h) => {
                    if let Some(tx) = hello.take() {
                        let _ = tx.send(h);
                    }
                }
                Err(e) => note(format!("bad hello ({e}): {line}")),
            },
            Some("reply") => {
                let Some(id) = value["id"].as_u64() else {
                    note(format!("a reply without an id: {line}"));
                    continue;
                };
                match serde_json::from_value::<Reply>(value) {
                    Ok(reply) => {
                        let waiter = pending
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(reply);
                        }
                    }
                    Err(e) => note(format!("bad reply ({e}): {line}")),
                }
            }
            Some("event") => match parse_event(&value) {
                Ok(Some(event)) => {
                    let _ = events.send(event);
                }
                Ok(None) => note(format!("an event outside the vocabulary, ignored: {line}")),
                Err(e) => note(format!("bad event ({e}): {line}")),
            },
            _ => note(format!("a line of unknown type: {line}")),
        }
    }
    // The driver exited: waiters get an error as their senders drop, and the event stream
    // ends.
    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
}

/// One `event` line in the shared vocabulary; `Ok(None)` for an event name outside it.
fn parse_event(value: &Value) -> Result<Option<ClientEvent>, String> {
    let text = |field: &str| -> Result<String, String> {
        value[field].as_str().map(str::to_owned).ok_or_else(|| format!("no string `{field}`"))
    };
    let optional = |field: &str| value[field].as_str().map(str::to_owned);
    let source = || -> Result<TrackSource, String> {
        let name = text("source")?;
        parse_source(&name).ok_or_else(|| format!("unknown track source {name:?}"))
    };
    Ok(Some(match value["event"].as_str().ok_or("no `event`")? {
        "connected" => ClientEvent::Connected,
        "signal_reconnecting" => ClientEvent::SignalReconnecting,
        "reconnecting" => ClientEvent::Reconnecting,
        "reconnected" => ClientEvent::Reconnected,
        "disconnected" => {
            let name = text("reason")?;
            let reason = DisconnectReason::from_str_name(&name)
                .ok_or_else(|| format!("unknown disconnect reason {name:?}"))?;
            ClientEvent::Disconnected { reason }
        }
        "participant_connected" => {
            ClientEvent::ParticipantConnected { identity: text("identity")?, sid: text("sid")? }
        }
        "participant_disconnected" => {
            ClientEvent::ParticipantDisconnected { identity: text("identity")?, sid: text("sid")? }
        }
        "data_received" => {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(text("payload")?)
                .map_err(|e| format!("payload is not base64: {e}"))?;
            ClientEvent::DataReceived {
                payload: Arc::new(payload),
                topic: optional("topic"),
                reliable: match &value["reliable"] {
                    serde_json::Value::Null => None,
                    reliable => Some(reliable.as_bool().ok_or("`reliable` is not a boolean")?),
                },
                from: optional("from"),
            }
        }
        "local_track_published" | "local_track_republished" => ClientEvent::LocalTrackPublished {
            source: source()?,
            sid: text("sid")?,
            previous_sid: optional("previous_sid"),
        },
        "local_track_unpublished" => {
            ClientEvent::LocalTrackUnpublished { source: source()?, sid: text("sid")? }
        }
        "track_published" => ClientEvent::TrackPublished {
            from: text("from")?,
            source: source()?,
            sid: text("sid")?,
        },
        "track_unpublished" => ClientEvent::TrackUnpublished {
            from: text("from")?,
            source: source()?,
            sid: text("sid")?,
        },
        "track_subscribed" => ClientEvent::TrackSubscribed {
            from: text("from")?,
            source: source()?,
            sid: text("sid")?,
        },
        "track_unsubscribed" => ClientEvent::TrackUnsubscribed {
            from: text("from")?,
            source: source()?,
            sid: text("sid")?,
        },
        "track_muted" | "track_unmuted" => ClientEvent::TrackMuted {
            from: text("from")?,
            source: source()?,
            muted: value["event"] == "track_muted",
        },
        "media" => {
            let tracks = value["tracks"].as_array().ok_or("no `tracks` list")?;
            let mut counts = Vec::with_capacity(tracks.len());
            for track in tracks {
                let field = |name: &str| {
                    track[name]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or(format!("a track without `{name}`"))
                };
                let name = field("source")?;
                counts.push(MediaCount {
                    from: field("from")?,
                    source: parse_source(&name).ok_or(format!("unknown source {name:?}"))?,
                    sid: field("sid")?,
                    frames: track["frames"].as_u64().ok_or("a track without numeric `frames`")?,
                    decoded: track["decoded"].as_u64(),
                });
            }
            ClientEvent::Media { tracks: counts }
        }
        "active_speakers_changed" => ClientEvent::ActiveSpeakersChanged {
            speakers: value["speakers"]
                .as_array()
                .ok_or("no `speakers` list")?
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_in_the_shared_vocabulary() {
        let cases = [
            (json!({"event": "reconnecting"}), ClientEvent::Reconnecting),
            (json!({"event": "signal_reconnecting"}), ClientEvent::SignalReconnecting),
            (
                json!({"event": "disconnected", "reason": "SERVER_SHUTDOWN"}),
                ClientEvent::Disconnected { reason: DisconnectReason::ServerShutdown },
            ),
            (
                json!({"event": "participant_connected", "identity": "bob", "sid": "PA_1"}),
                ClientEvent::ParticipantConnected { identity: "bob".into(), sid: "PA_1".into() },
            ),
            (
                json!({"event": "data_received", "payload": "aGk=", "topic": null,
                       "reliable": true, "from": "bob"}),
                ClientEvent::DataReceived {
                    payload: Arc::new(b"hi".to_vec()),
                    topic: None,
                    reliable: Some(true),
                    from: Some("bob".into()),
                },
            ),
            (
                json!({"event": "local_track_republished", "source": "camera", "sid": "TR_2",
                       "previous_sid": "TR_1"}),
                ClientEvent::LocalTrackPublished {
                    source: TrackSource::Camera,
                    sid: "TR_2".into(),
                    previous_sid: Some("TR_1".into()),
                },
            ),
            (
                json!({"event": "track_unmuted", "from": "bob", "source": "microphone"}),
                ClientEvent::TrackMuted {
                    from: "bob".into(),
                    source: TrackSource::Microphone,
                    muted: false,
                },
            ),
            (
                json!({"event": "media", "tracks": [{"from": "bob", "source": "camera",
                       "sid": "TR_1", "frames": 30, "decoded": 29}]}),
                ClientEvent::Media {
                    tracks: vec![MediaCount {
                        from: "bob".into(),
                        source: TrackSource::Camera,
                        sid: "TR_1".into(),
                        frames: 30,
                        decoded: Some(29),
                    }],
                },
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_event(&line), Ok(Some(expected)), "{line}");
        }
    }

    #[test]
    fn malformed_events_are_refused_and_unknown_ones_ignored() {
        assert_eq!(parse_event(&json!({"event": "track_subscription_failed"})), Ok(None));
        let no_source = parse_event(&json!({"event": "track_muted", "from": "bob"}));
        assert!(no_source.is_err_and(|e| e.contains("source")));
        let bad_source = parse_event(
            &json!({"event": "track_subscribed", "from": "bob", "source": "screen", "sid": "TR_1"}),
        );
        assert!(bad_source.is_err_and(|e| e.contains("screen")));
        let bad_count = parse_event(&json!({"event": "media", "tracks": [
            {"from": "bob", "source": "camera", "sid": "TR_1", "frames": "many"}]}));
        assert!(bad_count.is_err_and(|e| e.contains("frames")));
        let bad_reason = parse_event(&json!({"event": "disconnected", "reason": "GONE"}));
        assert!(bad_reason.is_err_and(|e| e.contains("GONE")));
        let bad_payload =
            parse_event(&json!({"event": "data_received", "payload": "!!", "reliable": true}));
        assert!(bad_payload.is_err_and(|e| e.contains("base64")));
    }
}
