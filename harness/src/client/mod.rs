//! The client seam: any LiveKit SDK under test, behind one interface — connect, simulate a
//! scenario, publish data, read its state, close — reporting events in faultline's shared
//! vocabulary ([`ClientEvent`]).
//!
//! faultline-sdk runs in process (its sockets can be wrapped with faults). Other SDKs run as
//! supervised child processes speaking the driver protocol of `docs/driver-protocol.md`:
//! [`Sdk::UpstreamRust`] (the upstream Rust SDK inside the PyPI `livekit` wheel) and
//! [`Sdk::Js`] (`livekit-client` in headless Chromium). Each is provisioned on first use into
//! the faultline cache, pinned, under a lock, like livekit-server.

pub(crate) mod driver;
pub mod event;
pub mod external;
pub mod go;
pub mod js;
mod stage;
pub mod upstream_rust;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::{Arc, Weak};

use faultline_sdk::{
    ConnectionState, DataPacket, LocalTrack, ReconnectPolicy, Room, RoomError, RoomOptions,
    SimulateScenario,
};
use serde_json::json;
use tokio::sync::mpsc;

pub use driver::{Hello, PROTOCOL_VERSION};
pub use event::{ClientEvent, Lifecycle, MediaCount, Observed};

use crate::provision::ProvisionEnv;
pub use crate::vocab::Sdk;
use crate::vocab::{SimulateKind, TrackSource, VIDEO_FPS};

/// faultline-sdk's build, as reports name it: this checkout's version.
pub const FAULTLINE_BUILD: &str = concat!("faultline-sdk ", env!("CARGO_PKG_VERSION"));

/// How long an external SDK may take to join a room.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a client's media counters are sampled ([`ClientEvent::Media`]); drivers
/// sample at the same rate (`docs/driver-protocol.md`).
pub const MEDIA_SAMPLE_EVERY: Duration = Duration::from_millis(100);

impl Sdk {
    /// Whether the SDK can run here, without preparing anything: a sentence saying what is
    /// prepared or what its first use will do, or why it cannot run and how to fix that.
    pub fn readiness(self, env: &ProvisionEnv) -> Result<String, ClientError> {
        match self {
            Sdk::Faultline => Ok("in process".into()),
            Sdk::UpstreamRust => upstream_rust::readiness(env),
            Sdk::Js => js::readiness(env),
            Sdk::Go => go::readiness(env),
            Sdk::Driver => external::readiness(env),
        }
    }

    /// Prepares the SDK for `env` if needed (a build or an install, once per pin, into the
    /// cache), so that joining a room later does not spend its timeout on it.
    pub async fn prepare(self, env: &ProvisionEnv) -> Result<(), ClientError> {
        match self {
            Sdk::Faultline => Ok(()),
            Sdk::UpstreamRust => upstream_rust::prepare(env).await.map(drop),
            Sdk::Js => js::prepare(env).await.map(drop),
            Sdk::Go => go::prepare(env).await.map(drop),
            Sdk::Driver => external::prepare(env).map(drop),
        }
    }

    /// Prepares the SDK's pinned build if needed and returns its file: livekit-client's UMD
    /// bundle, or the wheel's `liblivekit_ffi` (`None` for faultline-sdk, which is in
    /// process, and for a driver of the user's, whose build is theirs). What a developer
    /// copies or compares a build of their own with.
    pub async fn pinned_build(self, env: &ProvisionEnv) -> Result<Option<PathBuf>, ClientError> {
        let pinned = ProvisionEnv {
            js_bundle: None,
            livekit_lib: None,
            js_version: None,
            upstream_rust_version: None,
            go_version: None,
            ..env.clone()
        };
        match self {
            Sdk::Faultline | Sdk::Driver => Ok(None),
            Sdk::Go => {
                go::prepare(&pinned).await?;
                Ok(Some(go::pinned_build(&pinned)))
            }
            Sdk::UpstreamRust => {
                upstream_rust::prepare(&pinned).await?;
                upstream_rust::pinned_library(&pinned).map(Some).ok_or_else(|| {
                    ClientError::Provision {
                        sdk: self,
                        message: "the prepared livekit wheel has no liblivekit_ffi in \
                                  livekit/rtc/resources"
                            .into(),
                    }
                })
            }
            Sdk::Js => {
                js::prepare(&pinned).await?;
                Ok(Some(js::pinned_bundle(&pinned)))
            }
        }
    }

    /// Why this SDK cannot be asked to simulate `scenario`, if it cannot (known from its
    /// API, so a scenario is refused before it starts).
    pub fn cannot_simulate(self, scenario: SimulateKind) -> Option<&'static str> {
        match (self, scenario) {
            (Sdk::UpstreamRust, SimulateKind::DisconnectSignalOnResumeNoMessages) => {
                Some("the upstream SDK's SimulateScenario has no such kind")
            }
            (Sdk::UpstreamRust, SimulateKind::Speaker { secs }) if secs != 3 => {
                Some("the upstream SDK always asks the server for 3 s of speaking")
            }
            (Sdk::Go, SimulateKind::FullReconnect) => Some(
                "the Go SDK's only full-reconnect simulation asks livekit-server for a \
                 LeaveRequestFullReconnect, which v1.13.5 does not know",
            ),
            (
                Sdk::Go,
                SimulateKind::DisconnectSignalOnResume
                | SimulateKind::DisconnectSignalOnResumeNoMessages,
            ) => Some("the Go SDK's SimulateScenario has no such kind"),
            (Sdk::Go, SimulateKind::ForceTcp) => Some(
                "the Go SDK's SimulateForceTCP does nothing (pion has no active TCP candidates)",
            ),
            (Sdk::Go, SimulateKind::Speaker { secs }) if secs != 5 => {
                Some("the Go SDK always asks the server for 5 s of speaking")
            }
            _ => None,
        }
    }

    /// Whether the SDK can be given a reconnect policy (the upstream Rust SDK's and the Go
    /// SDK's attempts and delays are constants of their engines).
    pub fn takes_reconnect_policy(self) -> bool {
        !matches!(self, Sdk::UpstreamRust | Sdk::Go)
    }

    /// The longest one reconnect episode may last when connected with `options`: every
    /// delay at its cap plus every attempt using all of its timeouts. The upstream SDK's and
    /// livekit-client's figures are their defaults, read from their sources.
    pub fn reconnect_bound(self, options: &ClientOptions) -> Duration {
        match (self, &options.reconnect) {
            (Sdk::Faultline, Some(policy)) => {
                RoomOptions { reconnect: policy.clone(), ..options.faultline.clone() }
                    .reconnect_bound()
            }
            (Sdk::Faultline, None) => options.faultline.reconnect_bound(),
            // rust-sdks rtc_engine: 10 attempts, delay caps min(7 s, 300 ms · 2^(i-1)) summing
            // to 44.3 s; each attempt bounded by the WebSocket connect (5 s), the
            // Join/ReconnectResponse (5 s) and the peer connection (15 s).
            (Sdk::UpstreamRust, _) => Duration::from_millis(44_300) + Duration::from_secs(25) * 10,
            // server-sdk-go v2.19.0 engine.go: a resume, then 10 full reconnects with delays of
            // 300 ms · n² (n = 0..8) summing to 61.2 s; each attempt bounded by the connect
            // timeout (5 s) for signalling and again for the peer connection, and a 3 s
            // validate request when it fails.
            (Sdk::Go, _) => Duration::from_millis(61_200) + Duration::from_secs(13) * 11,
            // livekit-client: each attempt bounded by the signal connection (15 s) and the peer
            // connection (15 s) timeouts; its default policy makes 10 attempts with delays
            // summing to 44 s.
            // A driver of the user's, whose policy faultline cannot read, is held to
            // livekit-client's figures: a generous 346 s with the default policy.
            (Sdk::Js | Sdk::Driver, Some(policy)) => {
                policy.total_delay_cap() + Duration::from_secs(30) * policy.attempts
            }
            (Sdk::Js | Sdk::Driver, None) => Duration::from_secs(44) + Duration::from_secs(30) * 10,
        }
    }
}

/// A client that failed, or cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Something the SDK needs is not on this machine.
    #[error("the {sdk} client cannot run here: {missing}. Fix: {fix}")]
    Unavailable {
        /// The SDK.
        sdk: Sdk,
        /// What is missing.
        missing: String,
        /// The command or setting that provides it.
        fix: String,
    },
    /// A local build named by an environment variable (or the matching
    /// [`ProvisionEnv`] field) cannot be used.
    #[error(
        "the {sdk} client cannot use the build {variable}={}: {why}. Fix: point {variable} at \
         {expected}, or unset it to run the pinned build",
        path.display()
    )]
    LocalBuild {
        /// The SDK.
        sdk: Sdk,
        /// The variable that named it.
        variable: &'static str,
        /// The path it named.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
        /// What the variable must name.
        expected: &'static str,
    },
    /// A published version named by an environment variable cannot be used as given.
    #[error("the {sdk} client cannot run {variable}={value:?}: {why}. Fix: {fix}")]
    Version {
        /// The SDK.
        sdk: Sdk,
        /// The variable that named it.
        variable: &'static str,
        /// What it said.
        value: String,
        /// What is wrong with it.
        why: String,
        /// What to do instead.
        fix: String,
    },
    /// Preparing the SDK in the cache failed.
    #[error("preparing the {sdk} client failed: {message}")]
    Provision {
        /// The SDK.
        sdk: Sdk,
        /// What failed, with the log to read.
        message: String,
    },
    /// The driver process failed to start or talk.
    #[error("the {sdk} driver failed: {message}; driver log: {}\nlast log lines:\n{tail}", log.display())]
    Driver {
        /// The SDK.
        sdk: Sdk,
        /// What went wrong.
        message: String,
        /// The driver's log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The SDK cannot do what was asked at all.
    #[error("the {sdk} client does not support {op}: {message}")]
    Unsupported {
        /// The SDK.
        sdk: Sdk,
        /// The operation.
        op: String,
        /// The driver's explanation.
        message: String,
    },
    /// The SDK tried and failed.
    #[error("{sdk}: {op} failed: {message}; driver log: {}\nlast log lines:\n{tail}", log.display())]
    Failed {
        /// The SDK.
        sdk: Sdk,
        /// The operation.
        op: String,
        /// The SDK's error.
        message: String,
        /// The driver's log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// faultline-sdk's own error.
    #[error("faultline-sdk: {0}")]
    Room(#[from] RoomError),
}

/// What a client says about its room right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientState {
    /// Its connection state.
    pub connection_state: ConnectionState,
    /// The room's sid.
    pub room_sid: String,
    /// The local participant's sid (new after a full reconnect, kept by a resume).
    pub local_sid: String,
    /// The local participant's identity.
    pub local_identity: String,
    /// The remote participants it knows, as (identity, sid), sorted by identity.
    pub remotes: Vec<(String, String)>,
    /// Its published tracks: (source, sid, muted), sorted.
    pub local_tracks: Vec<(TrackSource, String, bool)>,
    /// The remote tracks it is subscribed to: (publisher identity, source, sid), sorted.
    pub subscriptions: Vec<(String, TrackSource, String)>,
}

/// How to connect a client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A reconnect policy to ask the SDK for; `None` keeps the SDK's own. An SDK that cannot
    /// take one refuses to connect ([`ClientError::Unsupported`]).
    pub reconnect: Option<ReconnectPolicy>,
    /// faultline-sdk only: its room options (network seam, seed, timeouts). Its `reconnect`
    /// is replaced by [`ClientOptions::reconnect`] when that is set.
    pub faultline: RoomOptions,
    /// Other SDKs only: run the driver inside this network namespace (a client link of a
    /// [`crate::netns::Topology`]), so that kernel-level faults reach its media.
    pub namespace: Option<crate::netns::Namespace>,
}

/// One participant's client, of any SDK.
#[derive(Debug)]
pub struct Client {
    sdk: Sdk,
    inner: Inner,
    /// The namespace a driver runs in, kept alive as long as the driver.
    _namespace: Option<crate::netns::Namespace>,
}

#[derive(Debug)]
enum Inner {
    Faultline(Arc<Room>),
    Driver(Box<driver::Driver>),
}

impl Client {
    /// Prepares `sdk` if needed, joins the room at `url` with `token`, and returns the client
    /// with its event stream (which starts with `Connected`).
    pub async fn connect(
        sdk: Sdk,
        url: &str,
        token: &str,
        options: ClientOptions,
        env: &ProvisionEnv,
    ) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = match sdk {
            Sdk::Faultline => {
                let mut room_options = options.faultline;
                if let Some(policy) = options.reconnect {
                    room_options.reconnect = policy;
                }
                let (room, events) = Room::connect(url, token, room_options).await?;
                let room = Arc::new(room);
                tokio::spawn(forward_room_events(Arc::downgrade(&room), events, tx));
                Inner::Faultline(room)
            }
            Sdk::UpstreamRust | Sdk::Js | Sdk::Go | Sdk::Driver => {
                let launch = match sdk {
                    Sdk::UpstreamRust => upstream_rust::prepare(env).await?,
                    Sdk::Js => js::prepare(env).await?,
                    Sdk::Go => go::prepare(env).await?,
                    _ => external::prepare(env)?,
                };
                let launch = match &options.namespace {
                    Some(namespace) => namespace.wrap(launch),
                    None => launch,
                };
                let log = crate::supervise::log_dir();
                std::fs::create_dir_all(&log).map_err(|e| ClientError::Provision {
                    sdk,
                    message: format!("cannot create the log directory {}: {e}", log.display()),
                })?;
                let log = log.join(crate::supervise::log_file_name(sdk.name(), unique_id()));
                let driver = driver::Driver::start(sdk, &launch, log, tx).await?;
                let policy = options.reconnect.map(|p| {
                    json!({
                        "attempts": p.attempts,
                        "base_delay_ms": p.base_delay.as_millis() as u64,
                        "max_delay_ms": p.max_delay.as_millis() as u64,
                    })
                });
                let mut wire_options = json!({});
                if let Some(policy) = policy {
                    wire_options["reconnect_policy"] = policy;
                }
                driver.connect(url, token, wire_options, CONNECT_TIMEOUT).await?;
                Inner::Driver(Box::new(driver))
            }
        };
        Ok((Client { sdk, inner, _namespace: options.namespace }, rx))
    }

    /// Which SDK this is.
    pub fn sdk(&self) -> Sdk {
        self.sdk
    }

    /// The driver's hello (`None` in process).
    pub fn hello(&self) -> Option<&Hello> {
        match &self.inner {
            Inner::Faultline(_) => None,
            Inner::Driver(driver) => Some(driver.hello()),
        }
    }

    /// The exact build that runs, for reports: faultline-sdk's version, or what the driver's
    /// hello said (the SDK's version, and which build: the pinned package or a local file
    /// with the start of its SHA-256).
    pub fn build(&self) -> String {
        match &self.inner {
            Inner::Faultline(_) => FAULTLINE_BUILD.to_owned(),
            Inner::Driver(driver) => {
                let hello = driver.hello();
                match &hello.detail {
                    Some(detail) => format!("{} {}: {detail}", hello.sdk, hello.sdk_version),
                    None => format!("{} {}", hello.sdk, hello.sdk_version),
                }
            }
        }
    }

    /// The driver's log file (`None` in process).
    pub fn log_path(&self) -> Option<&std::path::Path> {
        match &self.inner {
            Inner::Faultline(_) => None,
            Inner::Driver(driver) => Some(driver.log_path()),
        }
    }

    /// The driver's process id (`None` in process).
    pub fn pid(&self) -> Option<u32> {
        match &self.inner {
            Inner::Faultline(_) => None,
            Inner::Driver(driver) => driver.pid(),
        }
    }

    /// faultline-sdk's room, when this client is faultline-sdk.
    pub fn room(&self) -> Option<&Room> {
        match &self.inner {
            Inner::Faultline(room) => Some(room),
            Inner::Driver(_) => None,
        }
    }

    /// Asks the SDK to simulate `scenario`.
    pub async fn simulate(&self, scenario: SimulateKind) -> Result<(), ClientError> {
        match &self.inner {
            Inner::Faultline(room) => {
                Ok(room.simulate_scenario(SimulateScenario::from(scenario)).await?)
            }
            Inner::Driver(driver) => {
                let wire = match scenario {
                    SimulateKind::Speaker { secs } => json!({"scenario": "speaker", "secs": secs}),
                    other => json!({ "scenario": other }),
                };
                driver.simulate(wire).await
            }
        }
    }

    /// Publishes user data to `destinations` (empty: everyone).
    pub async fn publish(
        &self,
        payload: &[u8],
        topic: Option<&str>,
        reliable: bool,
        destinations: &[String],
    ) -> Result<(), ClientError> {
        match &self.inner {
            Inner::Faultline(room) => {
                let packet = DataPacket {
                    payload: payload.to_vec(),
                    topic: topic.map(str::to_owned),
                    reliable,
                    destination_identities: destinations.to_vec(),
                };
                Ok(room.local_participant().publish_data(packet).await?)
            }
            Inner::Driver(driver) => driver.publish(payload, topic, reliable, destinations).await,
        }
    }

    /// The room as the SDK sees it now.
    pub async fn state(&self) -> Result<ClientState, ClientError> {
        match &self.inner {
            Inner::Faultline(room) => {
                let local = room.local_participant();
                let mut remotes: Vec<(String, String)> = room
                    .remote_participants()
                    .into_values()
                    .map(|p| (p.identity().to_owned(), p.sid().to_owned()))
                    .collect();
                remotes.sort();
                let mut local_tracks: Vec<_> = local
                    .track_publications()
                    .into_iter()
                    .map(|p| (p.source(), p.sid().to_owned(), p.is_muted()))
                    .collect();
                local_tracks.sort();
                let mut subscriptions: Vec<_> = room
                    .subscribed_tracks()
                    .into_iter()
                    .map(|(from, track)| (from, track.source(), track.sid().to_owned()))
                    .collect();
                subscriptions.sort();
                Ok(ClientState {
                    connection_state: room.connection_state(),
                    room_sid: room.sid(),
                    local_sid: local.sid(),
                    local_identity: local.identity(),
                    remotes,
                    local_tracks,
                    subscriptions,
                })
            }
            Inner::Driver(driver) => {
                let mut state = driver.state().await?;
                state.remotes.sort();
                Ok(state)
            }
        }
    }

    /// Publishes a synthetic track from `source` (audio at 48 kHz; video 320 × 180 at
    /// [`VIDEO_FPS`], no simulcast); returns its sid once the server accepted it.
    pub async fn publish_track(&self, source: TrackSource) -> Result<String, ClientError> {
        match &self.inner {
            Inner::Faultline(room) => {
                let track = match source {
                    TrackSource::Microphone => LocalTrack::audio(source.name()),
                    TrackSource::Camera => LocalTrack::video(source.name(), VIDEO_FPS),
                };
                let publication = room.local_participant().publish_track(track).await?;
                Ok(publication.sid().to_owned())
            }
            Inner::Driver(driver) => driver.publish_track(source).await,
        }
    }

    /// Mutes or unmutes the track of `source`.
    pub async fn mute_track(&self, source: TrackSource, muted: bool) -> Result<(), ClientError> {
        match &self.inner {
            Inner::Faultline(room) => {
                Ok(room.local_participant().set_track_muted(source, muted).await?)
            }
            Inner::Driver(driver) => driver.mute_track(source, muted).await,
        }
    }

    /// Leaves the room for good (and ends the driver).
    pub async fn close(&self) -> Result<(), ClientError> {
        match &self.inner {
            Inner::Faultline(room) => Ok(room.close().await?),
            Inner::Driver(driver) => driver.close().await,
        }
    }
}

/// Forwards faultline-sdk's events in the shared vocabulary, with a [`ClientEvent::Media`]
/// sample of its subscriptions every [`MEDIA_SAMPLE_EVERY`] while it has any, until the
/// room's events end or nobody listens.
async fn forward_room_events(
    room: Weak<Room>,
    mut events: mpsc::UnboundedReceiver<faultline_sdk::RoomEvent>,
    tx: mpsc::UnboundedSender<ClientEvent>,
) {
    let mut tick = tokio::time::interval(MEDIA_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            biased;
            event = events.recv() => match event {
                Some(event) => ClientEvent::from_room_event(&event),
                None => break,
            },
            _ = tick.tick() => {
                let Some(room) = room.upgrade() else { break };
                let tracks = MediaCount::sample(&room);
                (!tracks.is_empty()).then_some(ClientEvent::Media { tracks })
            }
        };
        if let Some(event) = event {
            if tx.send(event).is_err() {
                break;
            }
        }
    }
}

/// A process-unique number for log file names.
fn unique_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
