//! toxiproxy-server as a process: provisioned (pinned v2.12.0) and started by
//! [`crate::startup`] as livekit-server is — API on a free 127.0.0.1 port, ready when
//! `GET /version` answers, logged under the target directory, killed on drop and never
//! outliving the test process — or shared by every test of a test binary.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::{ToxiproxyClient, ToxiproxyError};
use crate::provision::{self, Attempt, Program, ProvisionEnv, Provisioned, Source};
use crate::startup::{self, Shared, StartError};
use crate::supervise::{self, Launch, Liveness};

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

static SHARED: Shared<Toxiproxy> = Shared::new();

/// The program, as logs and errors name it.
const PROGRAM: &str = "toxiproxy-server";

impl Toxiproxy {
    /// Provisions and starts toxiproxy-server, returning once `GET /version` answers.
    pub async fn start(opts: ToxiproxyOptions) -> Result<Toxiproxy, ToxiproxyError> {
        let provisioned =
            provision::provision(Program::Toxiproxy, &opts.version, &opts.env).await?;
        startup::on_free_ports(|| Self::start_once(&opts, &provisioned))
            .await
            .map_err(StartError::into_error)
    }

    /// One try at [`Toxiproxy::start`], on a port chosen free just now.
    async fn start_once(
        opts: &ToxiproxyOptions,
        provisioned: &Provisioned,
    ) -> Result<Toxiproxy, StartError> {
        let api_port = startup::free_tcp_port().map_err(|e| {
            StartError::spawn(PROGRAM, "pick a free port", e, &supervise::log_dir())
        })?;
        let log_path = startup::log_path(opts.name.as_deref(), PROGRAM, api_port);
        let liveness =
            startup::spawn(PROGRAM, &launch_for(&provisioned.source, api_port), &log_path)?;
        let base = Url::parse(&format!("http://127.0.0.1:{api_port}/"))
            .expect("a loopback URL with a numeric port is valid");
        let client = ToxiproxyClient::watching(base, liveness.clone());
        let probe = || {
            let client = client.clone();
            async move { client.version().await.is_ok() }
        };
        let described = format!("GET {}version", client.base());
        startup::until_ready(&liveness, opts.ready_timeout, &described, probe).await?;
        Ok(Toxiproxy {
            version: provisioned.version.clone(),
            source: provisioned.source.clone(),
            attempts: provisioned.attempts.clone(),
            api_port,
            client,
            liveness,
        })
    }

    /// The toxiproxy shared by every test of this process, started on first use. Tests
    /// sharing it must use unique proxy names.
    pub async fn shared() -> Result<Arc<Toxiproxy>, ToxiproxyError> {
        SHARED
            .get_or_start(|name| {
                Self::start(ToxiproxyOptions { name: Some(name.into()), ..Default::default() })
            })
            .await
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
