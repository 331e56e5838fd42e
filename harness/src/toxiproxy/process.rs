//! toxiproxy-server as a process: provisioned (pinned v2.12.0) and run the way
//! [`crate::server`] runs livekit-server — API on a free 127.0.0.1 port, ready when
//! `GET /version` answers, logged under the target directory, killed on drop and never
//! outliving the test process — or shared by every test of a test binary.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{ToxiproxyClient, ToxiproxyError};
use crate::provision::{self, Attempt, Program, ProvisionEnv, Source};
use crate::supervise::{self, Launch, Liveness, NotReady, Process};

/// How to start a [`Toxiproxy`].
#[derive(Debug, Clone)]
pub struct ToxiproxyOptions {
    /// The toxiproxy version (v2.12.0).
    pub version: String,
    /// Where binaries come from.
    pub env: ProvisionEnv,
    /// Bound on `GET /version` answering after the process was spawned.
    pub ready_timeout: Duration,
    /// A name for the log file; `None` uses the current test's name.
    pub name: Option<String>,
}

impl Default for ToxiproxyOptions {
    fn default() -> Self {
        Self {
            version: provision::DEFAULT_TOXIPROXY_VERSION.to_string(),
            env: ProvisionEnv::from_env(),
            ready_timeout: Duration::from_secs(20),
            name: None,
        }
    }
}

/// A running toxiproxy-server started by faultline.
pub struct Toxiproxy {
    version: String,
    source: Source,
    attempts: Vec<Attempt>,
    api_port: u16,
    client: ToxiproxyClient,
    liveness: Liveness,
}

impl fmt::Debug for Toxiproxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Toxiproxy")
            .field("version", &self.version)
            .field("source", &self.source)
            .field("api_port", &self.api_port)
            .field("log_path", &self.log_path())
            .finish()
    }
}

static SHARED: tokio::sync::OnceCell<Arc<Toxiproxy>> = tokio::sync::OnceCell::const_new();

impl Toxiproxy {
    /// Provisions and starts toxiproxy-server, returning once `GET /version` answers.
    pub async fn start(opts: ToxiproxyOptions) -> Result<Toxiproxy, ToxiproxyError> {
        let provisioned =
            provision::provision(Program::Toxiproxy, &opts.version, &opts.env).await?;
        let log_dir = supervise::log_dir();
        std::fs::create_dir_all(&log_dir).map_err(|e| ToxiproxyError::Spawn {
            what: format!("create {}", log_dir.display()),
            reason: e.to_string(),
        })?;
        let mut last_race = None;
        for _ in 0..3 {
            let api_port = crate::server::free_tcp_port("127.0.0.1").map_err(|e| {
                ToxiproxyError::Spawn { what: "pick a free port".into(), reason: e.to_string() }
            })?;
            let log_name = match &opts.name {
                Some(name) => format!("{name}.toxiproxy-server.{api_port}.log"),
                None => supervise::log_file_name("toxiproxy-server", api_port),
            };
            let log_path = log_dir.join(log_name);
            let _ = std::fs::remove_file(&log_path);
            let launch = launch_for(&provisioned.source, api_port);
            let process =
                Process::spawn(&launch, &log_path).map_err(|e| ToxiproxyError::Spawn {
                    what: format!("spawn {}", launch.program.display()),
                    reason: e.to_string(),
                })?;
            tracing::info!(pid = process.pid(), api_port, log = %log_path.display(), "toxiproxy-server spawned");
            let liveness = Liveness::new("toxiproxy-server", process, log_path.clone());
            let base = Url::parse(&format!("http://127.0.0.1:{api_port}/"))
                .expect("a loopback URL with a numeric port is valid");
            let client = ToxiproxyClient::watching(base, liveness.clone());
            let probe = || {
                let client = client.clone();
                async move { client.version().await.is_ok() }
            };
            match supervise::wait_ready(&liveness, opts.ready_timeout, probe).await {
                Ok(()) => {
                    return Ok(Toxiproxy {
                        version: provisioned.version,
                        source: provisioned.source,
                        attempts: provisioned.attempts,
                        api_port,
                        client,
                        liveness,
                    })
                }
                Err(NotReady::Exited(died)) if died.tail.contains("address already in use") => {
                    last_race = Some(died);
                }
                Err(NotReady::Exited(died)) => return Err(ToxiproxyError::Died(died)),
                Err(NotReady::Timeout) => {
                    liveness.kill();
                    return Err(ToxiproxyError::NotReady {
                        url: format!("{}version", client.base()),
                        timeout: opts.ready_timeout,
                        tail: supervise::tail(&log_path, 20),
                        log_path,
                    });
                }
            }
        }
        Err(ToxiproxyError::Died(last_race.expect("the loop ran and only continues on a race")))
    }

    /// The toxiproxy shared by every test of this process, started on first use. Tests
    /// sharing it must use unique proxy names.
    pub async fn shared() -> Result<Arc<Toxiproxy>, ToxiproxyError> {
        SHARED
            .get_or_try_init(|| async {
                let opts = ToxiproxyOptions { name: Some("shared".into()), ..Default::default() };
                Self::start(opts).await.map(Arc::new)
            })
            .await
            .cloned()
    }

    /// The API client.
    pub fn client(&self) -> &ToxiproxyClient {
        &self.client
    }

    /// The API base URL, `http://127.0.0.1:<port>`.
    pub fn api_url(&self) -> String {
        self.client.base().as_str().trim_end_matches('/').to_string()
    }

    /// The API port.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        self.liveness.log_path()
    }

    /// The pid of the process while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.liveness.pid()
    }

    /// Which source provided toxiproxy.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Every provisioning source considered.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The version (as requested).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Ok while the process runs; otherwise its exit status and log.
    pub fn ensure_running(&self) -> Result<(), ToxiproxyError> {
        Ok(self.liveness.check()?)
    }
}

impl Drop for Toxiproxy {
    /// Kills toxiproxy now, even if proxy handles made from its client are still around.
    fn drop(&mut self) {
        self.liveness.kill();
    }
}

fn launch_for(source: &Source, api_port: u16) -> Launch {
    let server_args: Vec<std::ffi::OsString> =
        vec!["-host".into(), "127.0.0.1".into(), "-port".into(), api_port.to_string().into()];
    match source {
        Source::Container { image, docker } => {
            let name = format!("faultline-toxiproxy-{}-{api_port}", std::process::id());
            Launch::container(docker, name, &[], image, server_args)
        }
        _ => Launch::new(source.binary().map(Path::to_path_buf).unwrap_or_default(), server_args),
    }
}
