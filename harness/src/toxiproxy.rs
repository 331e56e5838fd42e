//! A real toxiproxy (pinned v2.12.0) for tests, and a typed async client for its REST API.
//!
//! [`Toxiproxy`] provisions and runs `toxiproxy-server` the way [`crate::server`] runs
//! livekit-server: API on a free 127.0.0.1 port, ready when `GET /version` answers, logged
//! under the target directory, killed on drop and never outliving the test process.
//! [`ToxiproxyClient`] creates proxies and adds toxics; [`ToxicGuard`] and
//! [`DisabledGuard`] undo a toxic or a disabled proxy when dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::provision::{self, Attempt, Program, ProvisionEnv, ProvisionError, Source};
use crate::supervise::{self, Launch, Liveness, NotReady, Process, ProcessDied};

/// Bound on one REST call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A toxiproxy operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ToxiproxyError {
    /// No binary or container could be had.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The process could not be spawned.
    #[error("cannot start toxiproxy-server: {what}: {reason}")]
    Spawn {
        /// What was being done.
        what: String,
        /// The OS error.
        reason: String,
    },
    /// The process runs but never answered `GET /version`.
    #[error(
        "toxiproxy-server did not answer GET {url} within {timeout:?}; it was killed; log: {}\n\
         last log lines:\n{tail}",
        log_path.display()
    )]
    NotReady {
        /// The URL probed.
        url: String,
        /// The bound waited.
        timeout: Duration,
        /// The log file.
        log_path: std::path::PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// The toxiproxy process is not running.
    #[error(transparent)]
    Died(#[from] ProcessDied),
    /// The API answered with an error (404 not found, 409 already exists, 400 bad request).
    #[error("toxiproxy {method} {path}: HTTP {status}: {message}")]
    Api {
        /// The HTTP method.
        method: &'static str,
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Toxiproxy's message.
        message: String,
    },
    /// The request could not be sent, or the answer not read.
    #[error("toxiproxy {method} {url}: {reason}")]
    Transport {
        /// The HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl ToxiproxyError {
    /// The HTTP status of an API error (e.g. 404, 409), if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ToxiproxyError::Api { status, .. } => Some(*status),
            _ => None,
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
            let client = ToxiproxyClient { base, liveness: Some(liveness.clone()) };
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
                        url: format!("{}version", client.base),
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
        self.client.base.as_str().trim_end_matches('/').to_string()
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

/// Which direction of a proxied connection a toxic acts on (in files and toxiproxy's API:
/// `upstream`, `downstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Client → server.
    Upstream,
    /// Server → client.
    #[default]
    Downstream,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        })
    }
}

/// A toxic type and its attributes, in toxiproxy's units.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum ToxicKind {
    /// Delays all data by `latency` ± `jitter` milliseconds.
    Latency {
        /// Milliseconds added.
        latency: u64,
        /// Random ± milliseconds.
        jitter: u64,
    },
    /// Limits throughput to `rate` KB/s.
    Bandwidth {
        /// KB per second.
        rate: u64,
    },
    /// Delays the close of the connection by `delay` milliseconds.
    SlowClose {
        /// Milliseconds.
        delay: u64,
    },
    /// Stops all data and closes the connection after `timeout` ms (0: never closes: a
    /// black hole).
    Timeout {
        /// Milliseconds; 0 keeps it open and silent forever.
        timeout: u64,
    },
    /// Resets the connection (TCP RST) after `timeout` ms. Only connections opened after the
    /// toxic was added get a real RST.
    ResetPeer {
        /// Milliseconds.
        timeout: u64,
    },
    /// Slices data into pieces of `average_size` ± `size_variation` bytes, `delay` µs apart.
    Slicer {
        /// Average slice size in bytes.
        average_size: u64,
        /// Variation of the slice size in bytes.
        size_variation: u64,
        /// Microseconds between slices.
        delay: u64,
    },
    /// Closes the connection once `bytes` bytes have passed.
    LimitData {
        /// Bytes allowed through.
        bytes: u64,
    },
}

impl ToxicKind {
    /// The toxiproxy type name (`latency`, `reset_peer`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            ToxicKind::Latency { .. } => "latency",
            ToxicKind::Bandwidth { .. } => "bandwidth",
            ToxicKind::SlowClose { .. } => "slow_close",
            ToxicKind::Timeout { .. } => "timeout",
            ToxicKind::ResetPeer { .. } => "reset_peer",
            ToxicKind::Slicer { .. } => "slicer",
            ToxicKind::LimitData { .. } => "limit_data",
        }
    }
}

/// A toxic to add to a proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Toxic {
    /// Its name, unique within the proxy.
    pub name: String,
    /// The direction it acts on.
    pub stream: Stream,
    /// The probability (0.0–1.0) that it applies to a given connection.
    pub toxicity: f32,
    /// Its type and attributes.
    #[serde(flatten)]
    pub kind: ToxicKind,
}

impl Toxic {
    /// A toxic on `stream` that applies to every connection, named `<type>_<stream>`.
    pub fn new(kind: ToxicKind, stream: Stream) -> Self {
        let direction = match stream {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        };
        Self { name: format!("{}_{direction}", kind.type_name()), stream, toxicity: 1.0, kind }
    }

    /// Sets the name.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Sets the toxicity (probability per connection).
    pub fn with_toxicity(mut self, toxicity: f32) -> Self {
        self.toxicity = toxicity;
        self
    }
}

/// A toxic as toxiproxy reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToxicInfo {
    /// Its name.
    pub name: String,
    /// Its type name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its direction.
    pub stream: Stream,
    /// Its toxicity.
    pub toxicity: f32,
    /// Its attributes.
    pub attributes: serde_json::Value,
}

/// A proxy as toxiproxy reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProxyInfo {
    /// Its name.
    pub name: String,
    /// Where it listens (`127.0.0.1:<port>`).
    pub listen: String,
    /// Where it forwards to.
    pub upstream: String,
    /// Whether it accepts connections.
    pub enabled: bool,
    /// Its toxics.
    #[serde(default)]
    pub toxics: Vec<ToxicInfo>,
}

/// An async client for toxiproxy's REST API.
#[derive(Debug, Clone)]
pub struct ToxiproxyClient {
    base: Url,
    liveness: Option<Liveness>,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: String,
}

impl ToxiproxyClient {
    /// A client for the toxiproxy API at `api_url` (e.g. `http://127.0.0.1:8474`).
    pub fn new(api_url: &str) -> Result<Self, ToxiproxyError> {
        let mut base = Url::parse(api_url).map_err(|e| ToxiproxyError::Transport {
            method: "-",
            url: api_url.to_string(),
            reason: format!("not a URL: {e}"),
        })?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self { base, liveness: None })
    }

    /// The version toxiproxy reports (`git` for a `go install` build).
    pub async fn version(&self) -> Result<String, ToxiproxyError> {
        #[derive(Deserialize)]
        struct Version {
            version: String,
        }
        let v: Version = self.call(reqwest::Method::GET, "version", None::<&()>).await?;
        Ok(v.version)
    }

    /// Enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), ToxiproxyError> {
        self.call_no_body(reqwest::Method::POST, "reset", None::<&()>).await
    }

    /// Every proxy.
    pub async fn proxies(&self) -> Result<Vec<ProxyInfo>, ToxiproxyError> {
        let map: std::collections::BTreeMap<String, ProxyInfo> =
            self.call(reqwest::Method::GET, "proxies", None::<&()>).await?;
        Ok(map.into_values().collect())
    }

    /// A proxy by name.
    pub async fn proxy(&self, name: &str) -> Result<Proxy, ToxiproxyError> {
        let info: ProxyInfo =
            self.call(reqwest::Method::GET, &format!("proxies/{name}"), None::<&()>).await?;
        Ok(Proxy { client: self.clone(), info })
    }

    /// Creates an enabled proxy to `upstream` (`host:port`) listening on a free
    /// 127.0.0.1 port chosen by toxiproxy. Fails with HTTP 409 if the name exists.
    pub async fn create_proxy(&self, name: &str, upstream: &str) -> Result<Proxy, ToxiproxyError> {
        self.create_proxy_on(name, "127.0.0.1:0", upstream).await
    }

    /// Creates an enabled proxy listening on `listen` (`host:port`).
    pub async fn create_proxy_on(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
    ) -> Result<Proxy, ToxiproxyError> {
        let body = serde_json::json!({
            "name": name, "listen": listen, "upstream": upstream, "enabled": true,
        });
        let info: ProxyInfo = self.call(reqwest::Method::POST, "proxies", Some(&body)).await?;
        Ok(Proxy { client: self.clone(), info })
    }

    async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ToxiproxyError> {
        let (method_name, url, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ToxiproxyError::Transport {
            method: method_name,
            url,
            reason: format!("cannot decode ({e}): {}", String::from_utf8_lossy(&bytes)),
        })
    }

    async fn call_no_body<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ToxiproxyError> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(&'static str, String, bytes::Bytes), ToxiproxyError> {
        let method_name = match method.as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "DELETE" => "DELETE",
            _ => "request",
        };
        let url = format!("{}{path}", self.base);
        let transport = |reason: String| ToxiproxyError::Transport {
            method: method_name,
            url: url.clone(),
            reason,
        };
        let client = crate::http::client(CALL_TIMEOUT).map_err(|e| transport(e.to_string()))?;
        let mut request = client.request(method, &url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if let Some(Err(died)) = self.liveness.as_ref().map(Liveness::check) {
                    return Err(ToxiproxyError::Died(died));
                }
                return Err(transport(crate::http::error_chain(&e)));
            }
        };
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(crate::http::error_chain(&e)))?;
        if status.is_success() {
            return Ok((method_name, url, bytes));
        }
        let message = serde_json::from_slice::<ApiErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ToxiproxyError::Api {
            method: method_name,
            path: format!("/{path}"),
            status: status.as_u16(),
            message,
        })
    }
}

/// A proxy on a toxiproxy server.
#[derive(Debug, Clone)]
pub struct Proxy {
    client: ToxiproxyClient,
    info: ProxyInfo,
}

impl Proxy {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// What toxiproxy reported when this handle was made or last refreshed.
    pub fn info(&self) -> &ProxyInfo {
        &self.info
    }

    /// The address clients connect to.
    pub fn listen_addr(&self) -> Result<SocketAddr, ToxiproxyError> {
        self.info.listen.parse().map_err(|e| ToxiproxyError::Transport {
            method: "-",
            url: self.client.base.to_string(),
            reason: format!(
                "proxy {} listens on {:?}, not an address: {e}",
                self.info.name, self.info.listen
            ),
        })
    }

    /// Reloads the proxy's state (enabled, toxics) from toxiproxy.
    pub async fn refresh(&mut self) -> Result<&ProxyInfo, ToxiproxyError> {
        self.info = self.client.proxy(&self.info.name).await?.info;
        Ok(&self.info)
    }

    /// Enables or disables the proxy. Disabled, it stops listening and closes every
    /// connection: the upstream looks unreachable.
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), ToxiproxyError> {
        let body = serde_json::json!({ "enabled": enabled });
        let _: ProxyInfo = self
            .client
            .call(reqwest::Method::POST, &format!("proxies/{}", self.info.name), Some(&body))
            .await?;
        Ok(())
    }

    /// Disables the proxy until the returned guard is dropped or re-enabled.
    pub async fn disable(&self) -> Result<DisabledGuard, ToxiproxyError> {
        self.set_enabled(false).await?;
        Ok(DisabledGuard { proxy: Some(self.clone()) })
    }

    /// Adds a toxic; it is removed when the returned guard is dropped (or removed).
    pub async fn add_toxic(&self, toxic: Toxic) -> Result<ToxicGuard, ToxiproxyError> {
        let info: ToxicInfo = self
            .client
            .call(
                reqwest::Method::POST,
                &format!("proxies/{}/toxics", self.info.name),
                Some(&toxic),
            )
            .await?;
        Ok(ToxicGuard { proxy: Some(self.clone()), name: info.name })
    }

    /// The proxy's toxics.
    pub async fn toxics(&self) -> Result<Vec<ToxicInfo>, ToxiproxyError> {
        self.client
            .call(reqwest::Method::GET, &format!("proxies/{}/toxics", self.info.name), None::<&()>)
            .await
    }

    /// Removes a toxic by name.
    pub async fn remove_toxic(&self, name: &str) -> Result<(), ToxiproxyError> {
        let path = format!("proxies/{}/toxics/{name}", self.info.name);
        self.client.call_no_body(reqwest::Method::DELETE, &path, None::<&()>).await
    }

    /// Deletes the proxy (closing its connections).
    pub async fn delete(self) -> Result<(), ToxiproxyError> {
        let path = format!("proxies/{}", self.info.name);
        self.client.call_no_body(reqwest::Method::DELETE, &path, None::<&()>).await
    }
}

/// Runs `cleanup` to completion from a destructor: on a separate thread with its own
/// small runtime, so it works whether or not the caller is inside a runtime (and even while
/// the caller's runtime shuts down). It blocks the dropping thread for one loopback call.
fn cleanup_blocking<F>(what: String, cleanup: F)
where
    F: std::future::Future<Output = Result<(), ToxiproxyError>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        match runtime {
            Ok(runtime) => runtime.block_on(cleanup),
            Err(e) => {
                Err(ToxiproxyError::Spawn { what: "build a runtime".into(), reason: e.to_string() })
            }
        }
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%e, "{what} failed"),
        Err(_) => tracing::warn!("{what} panicked"),
    }
}

/// Removes its toxic when dropped. Prefer [`ToxicGuard::remove`] in async code to see
/// errors.
#[derive(Debug)]
#[must_use = "the toxic is removed as soon as the guard is dropped"]
pub struct ToxicGuard {
    proxy: Option<Proxy>,
    name: String,
}

impl ToxicGuard {
    /// The toxic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the toxic now.
    pub async fn remove(mut self) -> Result<(), ToxiproxyError> {
        match self.proxy.take() {
            Some(proxy) => proxy.remove_toxic(&self.name).await,
            None => Ok(()),
        }
    }
}

impl Drop for ToxicGuard {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            let name = std::mem::take(&mut self.name);
            let what = format!("removing toxic {name} from proxy {}", proxy.name());
            cleanup_blocking(what, async move {
                match proxy.remove_toxic(&name).await {
                    // Already gone (e.g. after a reset): nothing to undo.
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => other,
                }
            });
        }
    }
}

/// Re-enables its proxy when dropped. Prefer [`DisabledGuard::enable`] in async code.
#[derive(Debug)]
#[must_use = "the proxy is re-enabled as soon as the guard is dropped"]
pub struct DisabledGuard {
    proxy: Option<Proxy>,
}

impl DisabledGuard {
    /// Re-enables the proxy now.
    pub async fn enable(mut self) -> Result<(), ToxiproxyError> {
        match self.proxy.take() {
            Some(proxy) => proxy.set_enabled(true).await,
            None => Ok(()),
        }
    }
}

impl Drop for DisabledGuard {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            let what = format!("re-enabling proxy {}", proxy.name());
            cleanup_blocking(what, async move {
                match proxy.set_enabled(true).await {
                    Err(e) if e.status() == Some(404) => Ok(()),
                    other => other,
                }
            });
        }
    }
}
