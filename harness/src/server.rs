//! A real livekit-server for tests: provisioned (see [`crate::provision`]), configured
//! loopback-only on free ports from `fixtures/livekit.yaml`, ready when `GET /` answers
//! "OK", logged under the target directory, and killed when dropped. It can be SIGKILLed
//! and restarted on the same ports to reproduce an SFU crash.
//!
//! Or, with [`ServerOptions::netns`], inside the server namespace of a
//! [`Topology`](crate::netns::Topology): started behind `ip netns exec`, bound to that
//! namespace's private address (reachable only from the topology's namespaces and this
//! machine's root namespace) on livekit's fixed ports, with ICE/TCP on, since the namespace
//! contains the listener that livekit-server binds on every interface.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::netns::{self, ServerSite};
use crate::provision::{self, Attempt, Program, ProvisionEnv, ProvisionError, Source};
use crate::room_service::RoomService;
use crate::startup::{self, NeverReady, Shared, SpawnFailed, StartError};
use crate::supervise::{self, Launch, Liveness, Process, ProcessDied};
use crate::token::{TokenError, TokenSpec};

/// The configuration template; `{{name}}` placeholders are filled per server.
const CONFIG_TEMPLATE: &str = include_str!("../../fixtures/livekit.yaml");

/// The program, as logs and errors name it.
const PROGRAM: &str = "livekit-server";

/// How to start a [`LiveKitServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The livekit-server version (`FAULTLINE_LIVEKIT_VERSION`, else v1.13.5).
    pub version: String,
    /// A fixed HTTP/WebSocket port; `None` picks a free one.
    pub http_port: Option<u16>,
    /// Where binaries come from.
    pub env: ProvisionEnv,
    /// Bound on the server answering `GET /` after it was spawned.
    pub ready_timeout: Duration,
    /// A name for the log file; `None` uses the current test's name.
    pub name: Option<String>,
    /// Run inside this network namespace (from [`Topology::server`](netns::Topology::server))
    /// instead of on loopback. The server keeps the namespace alive while it runs.
    pub netns: Option<ServerSite>,
    /// Share rooms through the Redis at this address: the server is then one node of a
    /// cluster ([`crate::cluster`]).
    pub redis: Option<SocketAddr>,
    /// The API secret (key `faultline`); `None` draws a new one. The nodes of a cluster
    /// share one, so a token minted for one node is good on every node.
    pub api_secret: Option<String>,
    /// Run livekit-server's embedded TURN relay over UDP, bound to the server's address and
    /// allowed to relay towards that address only. Join responses then list it
    /// (`turn:<address>:<port>?transport=udp`) with per-participant credentials.
    pub turn: bool,
    /// Listen for ICE over TCP (the default) — in a namespace only: livekit-server's ICE/TCP
    /// listener binds every address, which loopback runs must not.
    pub ice_tcp: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            version: std::env::var("FAULTLINE_LIVEKIT_VERSION")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| provision::DEFAULT_LIVEKIT_VERSION.to_string()),
            http_port: None,
            env: ProvisionEnv::from_env(),
            ready_timeout: Duration::from_secs(30),
            name: None,
            netns: None,
            redis: None,
            api_secret: None,
            turn: false,
            ice_tcp: true,
        }
    }
}

/// A livekit-server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No binary, container or external server could be had.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The requested port is taken.
    #[error(
        "cannot start livekit-server on 127.0.0.1:{port}: the port is already in use ({reason}); \
         choose another port or leave it unset to pick a free one"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// What binding it reported.
        reason: String,
    },
    /// The process could not be spawned or its files written.
    #[error(transparent)]
    Spawn(#[from] SpawnFailed),
    /// The process runs but never answered `GET /` with "OK"; it was killed.
    #[error(transparent)]
    NotReady(#[from] NeverReady),
    /// The process is not running (exited at startup, or killed mid-test).
    #[error(transparent)]
    Died(#[from] ProcessDied),
    /// The operation needs a server faultline started, not an external one.
    #[error("{operation} needs a livekit-server started by faultline, but this one is external ({url}); unset LIVEKIT_URL")]
    External {
        /// The operation attempted.
        operation: &'static str,
        /// The external server.
        url: String,
    },
    /// A token could not be minted.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Only a binary can be started in a network namespace.
    #[error(
        "livekit-server cannot run in the network namespace {namespace}: it would come from \
         {from}, and only a binary can be started behind `ip netns exec`; unset LIVEKIT_URL \
         and let faultline build the binary, or point LIVEKIT_SERVER_BIN at one"
    )]
    NotInNamespace {
        /// The namespace asked for.
        namespace: String,
        /// Where the server would have come from.
        from: String,
    },
}

/// The `turn:` section of a server on `address` whose relay listens on UDP `port`: relayed
/// sockets bind to the same address, and the relay may reach that address (livekit-server
/// refuses loopback and private peers unless allowed).
fn turn_config(address: Ipv4Addr, port: u16) -> String {
    format!(
        "\n# The embedded TURN relay, over UDP only (TURN/TLS needs a domain and port 443).\n\
         turn:\n  enabled: true\n  udp_port: {port}\n  relay_range_start: {start}\n  \
         relay_range_end: {end}\n  bind_addresses:\n    - {address}\n  \
         allow_restricted_peer_cidrs:\n    - {address}/32\n",
        start = TURN_RELAY_PORTS.start(),
        end = TURN_RELAY_PORTS.end(),
    )
}

/// The ports relayed addresses are drawn from.
const TURN_RELAY_PORTS: std::ops::RangeInclusive<u16> = 30000..=39999;

/// The ports a local server listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPorts {
    /// HTTP / WebSocket (signalling, RoomService).
    pub http: u16,
    /// The UDP mux port (all media).
    pub udp: u16,
    /// The ICE/TCP port: `None` on loopback, where it is disabled (see
    /// `fixtures/livekit.yaml`); on for a server in a network namespace of its own.
    pub ice_tcp: Option<u16>,
    /// The embedded TURN relay's UDP port, when [`ServerOptions::turn`] is set.
    pub turn: Option<u16>,
}

struct Local {
    ports: ServerPorts,
    launch: Launch,
    liveness: Liveness,
    ready_timeout: Duration,
    _config_dir: tempfile::TempDir,
    /// Keeps the namespace until the server is killed (fields drop after `Drop::drop`).
    _netns: Option<ServerSite>,
}

/// A running livekit-server (started by faultline, or external via `LIVEKIT_URL`).
pub struct LiveKitServer {
    version: String,
    source: Source,
    attempts: Vec<Attempt>,
    http_url: Url,
    signal_addr: SocketAddr,
    api_key: String,
    api_secret: String,
    local: Option<Local>,
}

impl fmt::Debug for LiveKitServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveKitServer")
            .field("version", &self.version)
            .field("source", &self.source)
            .field("http_url", &self.http_url.as_str())
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("ports", &self.ports())
            .field("log_path", &self.log_path())
            .finish()
    }
}

static SHARED: Shared<LiveKitServer> = Shared::new();

impl LiveKitServer {
    /// Provisions and starts a server, returning once it answers `GET /`.
    pub async fn start(opts: ServerOptions) -> Result<LiveKitServer, ServerError> {
        let provisioned =
            provision::provision(Program::LiveKitServer, &opts.version, &opts.env).await?;
        if let Some(site) = &opts.netns {
            if provisioned.source.binary().is_none() {
                return Err(ServerError::NotInNamespace {
                    namespace: site.namespace().name().to_string(),
                    from: provisioned.source.to_string(),
                });
            }
        }
        if let Source::External { url } = &provisioned.source {
            return Ok(Self::external(url, &opts.env, provisioned.clone()));
        }
        if let (Some(port), None) = (opts.http_port, &opts.netns) {
            // Fail with a clear message before spawning anything.
            if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
                return Err(ServerError::PortInUse { port, reason: e.to_string() });
            }
        }
        let attempt = || Self::start_local(&opts, &provisioned);
        let started = match opts.http_port {
            // A port asked for is not chosen again: taken is taken.
            Some(_) => attempt().await,
            None => startup::on_free_ports(attempt).await,
        };
        started.map_err(|e| match (e, opts.http_port) {
            (StartError::Died(died), Some(port))
                if startup::port_taken(&died) && died.tail.contains(&format!(":{port}")) =>
            {
                ServerError::PortInUse {
                    port,
                    reason: format!("address already in use; log: {}", died.log_path.display()),
                }
            }
            (e, _) => e.into_error(),
        })
    }

    /// The server shared by every test of this process: started on first use, never
    /// stopped before the process exits (its watchdog kills it then). Tests sharing it
    /// must use unique room names.
    pub async fn shared() -> Result<Arc<LiveKitServer>, ServerError> {
        SHARED
            .get_or_start(|name| {
                Self::start(ServerOptions { name: Some(name.into()), ..Default::default() })
            })
            .await
    }

    fn external(url: &Url, env: &ProvisionEnv, provisioned: provision::Provisioned) -> Self {
        let http_url = provision::http_base(url);
        let host = url.host_str().unwrap_or("127.0.0.1");
        let port = url.port_or_known_default().unwrap_or(7880);
        // The URL answered GET / a moment ago, so it resolves; fall back to loopback.
        let signal_addr = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)));
        Self {
            version: provisioned.version,
            source: provisioned.source,
            attempts: provisioned.attempts,
            http_url,
            signal_addr,
            api_key: env.livekit_api_key.clone(),
            api_secret: env.livekit_api_secret.clone(),
            local: None,
        }
    }

    async fn start_local(
        opts: &ServerOptions,
        provisioned: &provision::Provisioned,
    ) -> Result<LiveKitServer, StartError> {
        let no_port = |what: &str, e| StartError::spawn(PROGRAM, what, e, &supervise::log_dir());
        let (address, ports) = match &opts.netns {
            // Nothing else lives in the namespace: livekit's own ports are free there.
            Some(site) => (
                site.address(),
                ServerPorts {
                    http: opts.http_port.unwrap_or(netns::SIGNAL_PORT),
                    udp: netns::MEDIA_UDP_PORT,
                    ice_tcp: opts.ice_tcp.then_some(netns::ICE_TCP_PORT),
                    turn: opts.turn.then_some(netns::TURN_UDP_PORT),
                },
            ),
            None => (
                Ipv4Addr::LOCALHOST,
                ServerPorts {
                    http: match opts.http_port {
                        Some(port) => port,
                        None => startup::free_tcp_port()
                            .map_err(|e| no_port("pick a free HTTP port", e))?,
                    },
                    udp: startup::free_udp_port()
                        .map_err(|e| no_port("pick a free UDP port", e))?,
                    ice_tcp: None,
                    turn: match opts.turn {
                        true => Some(
                            startup::free_udp_port()
                                .map_err(|e| no_port("pick a free UDP port for TURN", e))?,
                        ),
                        false => None,
                    },
                },
            ),
        };
        let api_key = "faultline".to_string();
        let api_secret = opts.api_secret.clone().unwrap_or_else(random_secret);
        let mut config = CONFIG_TEMPLATE
            .replace("{{address}}", &address.to_string())
            .replace("{{http_port}}", &ports.http.to_string())
            .replace("{{udp_port}}", &ports.udp.to_string())
            .replace("{{tcp_port}}", &ports.ice_tcp.unwrap_or(0).to_string())
            .replace("{{api_key}}", &api_key)
            .replace("{{api_secret}}", &api_secret);
        if let Some(turn) = ports.turn {
            config.push_str(&turn_config(address, turn));
        }
        if let Some(redis) = opts.redis {
            config.push_str(&format!("\n# One node of a cluster: rooms are shared through Redis.\nredis:\n  address: {redis}\n"));
        }
        let log_path = startup::log_path(opts.name.as_deref(), PROGRAM, ports.http);
        let spawn_err = |what: &str, e| StartError::spawn(PROGRAM, what, e, &log_path);
        let config_dir = tempfile::Builder::new()
            .prefix("faultline-livekit-")
            .tempdir()
            .map_err(|e| spawn_err("create a config directory", e))?;
        let config_path = config_dir.path().join("livekit.yaml");
        std::fs::write(&config_path, config).map_err(|e| spawn_err("write the config", e))?;

        let launch = launch_for(&provisioned.source, &config_path, ports.http);
        let launch = match &opts.netns {
            Some(site) => site.namespace().wrap(launch),
            None => launch,
        };
        let liveness = startup::spawn(PROGRAM, &launch, &log_path)?;
        let http_url = Url::parse(&format!("http://{address}:{}/", ports.http))
            .expect("a URL of an IPv4 address and a numeric port is valid");
        let server = LiveKitServer {
            version: provisioned.version.clone(),
            source: provisioned.source.clone(),
            attempts: provisioned.attempts.clone(),
            http_url,
            signal_addr: SocketAddr::from((address, ports.http)),
            api_key,
            api_secret,
            local: Some(Local {
                ports,
                launch,
                liveness,
                ready_timeout: opts.ready_timeout,
                _config_dir: config_dir,
                _netns: opts.netns.clone(),
            }),
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Waits until the server answers `GET /` with "OK".
    async fn wait_ready(&self) -> Result<(), StartError> {
        let Some(local) = &self.local else { return Ok(()) };
        let url = self.http_url.clone();
        let client = crate::http::client(Duration::from_secs(2)).map_err(|e| {
            StartError::spawn(PROGRAM, "build an HTTP client", e, local.liveness.log_path())
        })?;
        let probe = || {
            let request = client.get(url.clone());
            async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        response.text().await.map(|t| t.trim() == "OK").unwrap_or(false)
                    }
                    _ => false,
                }
            }
        };
        let described = format!("GET {} with 200 OK", self.http_url);
        startup::until_ready(&local.liveness, local.ready_timeout, &described, probe).await
    }

    /// The signalling URL, `ws://127.0.0.1:<port>` (the namespace's address for a server in
    /// a network namespace).
    pub fn ws_url(&self) -> String {
        let mut url = self.http_url.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http→ws and https→wss are allowed scheme changes.
        let _ = url.set_scheme(scheme);
        url.as_str().trim_end_matches('/').to_string()
    }

    /// The HTTP base URL, `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        self.http_url.as_str().trim_end_matches('/').to_string()
    }

    /// The signalling address (for putting a proxy in front of it).
    pub fn signal_addr(&self) -> SocketAddr {
        self.signal_addr
    }

    /// The ports of a server faultline started (`None` for an external server).
    pub fn ports(&self) -> Option<ServerPorts> {
        self.local.as_ref().map(|l| l.ports)
    }

    /// The API key.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The API secret. Never log it.
    pub fn api_secret(&self) -> &str {
        &self.api_secret
    }

    /// The version this server runs (as requested).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's log file (`None` for an external server).
    pub fn log_path(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.liveness.log_path())
    }

    /// The pid of the server process while it runs (`None` for an external server, a killed
    /// one, or a container, whose processes are the Docker engine's).
    pub fn pid(&self) -> Option<u32> {
        self.local.as_ref().and_then(|l| l.liveness.pid())
    }

    /// Which source provided the server.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Every provisioning source considered, chosen or skipped with the reason.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// Ok while the server process runs; otherwise its exit status and log.
    pub fn ensure_running(&self) -> Result<(), ServerError> {
        match &self.local {
            Some(local) => Ok(local.liveness.check()?),
            None => Ok(()),
        }
    }

    /// A token joining `room` as `identity` (publish, subscribe, data; one hour).
    pub fn token(&self, room: &str, identity: &str) -> Result<String, ServerError> {
        self.token_with(&TokenSpec::join(room, identity))
    }

    /// A token as `spec` describes it.
    pub fn token_with(&self, spec: &TokenSpec) -> Result<String, ServerError> {
        Ok(spec.mint(&self.api_key, &self.api_secret)?)
    }

    /// SIGKILLs the server: an abrupt SFU crash (no leave messages, sockets reset).
    pub async fn kill(&self) -> Result<(), ServerError> {
        let local = self.local_for("kill")?;
        local.liveness.check()?;
        local.liveness.kill();
        tracing::info!(log = %local.liveness.log_path().display(), "livekit-server killed");
        Ok(())
    }

    /// SIGTERMs the server: livekit-server drains — it stops taking new rooms and exits once
    /// its participants have left (a node taken out for a deploy).
    pub fn terminate(&self) -> Result<(), ServerError> {
        let local = self.local_for("terminate")?;
        local.liveness.check()?;
        local.liveness.terminate();
        tracing::info!(log = %local.liveness.log_path().display(), "livekit-server sent SIGTERM");
        Ok(())
    }

    /// Starts the server again on the same ports and keys (after [`LiveKitServer::kill`],
    /// or killing it first if it still runs), returning once it answers `GET /`.
    pub async fn restart(&self) -> Result<(), ServerError> {
        let local = self.local_for("restart")?;
        {
            let mut slot = local.liveness.lock();
            if let Some(old) = slot.as_mut() {
                old.kill();
            }
            let process =
                Process::spawn(&local.launch, local.liveness.log_path()).map_err(|e| {
                    SpawnFailed {
                        program: PROGRAM,
                        what: format!("respawn {}", local.launch.program.display()),
                        reason: e.to_string(),
                        log_path: local.liveness.log_path().to_path_buf(),
                    }
                })?;
            *slot = Some(process);
        }
        self.wait_ready().await.map_err(StartError::into_error)
    }

    /// A RoomService client for this server.
    pub fn room_service(&self) -> RoomService {
        let service = RoomService::new(&self.http_url, &self.api_key, &self.api_secret);
        match &self.local {
            Some(local) => service.watching(local.liveness.clone()),
            None => service,
        }
    }

    fn local_for(&self, operation: &'static str) -> Result<&Local, ServerError> {
        self.local
            .as_ref()
            .ok_or_else(|| ServerError::External { operation, url: self.http_url.to_string() })
    }
}

impl Drop for LiveKitServer {
    /// Kills the server now, even if RoomService clients made from it are still around.
    fn drop(&mut self) {
        if let Some(local) = &self.local {
            local.liveness.kill();
        }
    }
}

/// How to run the provisioned server with `config` (for a container, the config's
/// directory is bind-mounted at the same path, read-only).
fn launch_for(source: &Source, config: &Path, http_port: u16) -> Launch {
    let args = vec!["--config".into(), config.into()];
    match source {
        Source::Container { image, docker } => {
            let dir = config.parent().unwrap_or(config).display().to_string();
            let name = format!("faultline-livekit-{}-{http_port}", std::process::id());
            Launch::container(docker, name, &[format!("{dir}:{dir}:ro")], image, args)
        }
        _ => Launch::new(source.binary().map(Path::to_path_buf).unwrap_or_default(), args),
    }
}

/// A 48-hex-digit secret, different for every server (std's hasher keys are seeded from
/// the OS's randomness and advanced for every `RandomState`).
pub(crate) fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..3)
        .map(|i| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(i);
            format!("{:016x}", hasher.finish())
        })
        .collect()
}
