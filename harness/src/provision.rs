//! Getting a binary of a pinned version of livekit-server or toxiproxy.
//!
//! Sources are tried in a fixed order and every one is recorded as chosen or skipped with
//! the reason, so that a failure explains itself:
//!
//! 1. (livekit-server only) `LIVEKIT_URL`: an external server, validated and probed.
//! 2. `LIVEKIT_SERVER_BIN` / `TOXIPROXY_SERVER_BIN`, else the program on `PATH`, if it is
//!    the requested version.
//! 3. A cached build: `<cache>/bin/<program>-<version>`.
//! 4. `go install` of the pinned version into the cache (file-locked, logged, bounded).
//! 5. The upstream container image, when a Docker engine answers.
//!
//! Everything read from the process environment goes through [`ProvisionEnv`], which can
//! also be built explicitly, so tests can exercise each failure without touching the
//! process-global environment.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use url::Url;

/// The livekit-server version used unless `FAULTLINE_LIVEKIT_VERSION` or an option says otherwise.
pub const DEFAULT_LIVEKIT_VERSION: &str = "v1.13.5";
/// The toxiproxy version the harness is pinned to.
pub const DEFAULT_TOXIPROXY_VERSION: &str = "v2.12.0";

/// A program the harness knows how to provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// livekit-server, the LiveKit SFU.
    LiveKitServer,
    /// toxiproxy-server, Shopify's TCP fault proxy.
    Toxiproxy,
}

impl Program {
    /// The conventional binary name (`livekit-server`, `toxiproxy-server`).
    pub fn binary_name(self) -> &'static str {
        match self {
            Program::LiveKitServer => "livekit-server",
            Program::Toxiproxy => "toxiproxy-server",
        }
    }

    /// The environment variable naming an explicit binary.
    pub fn bin_env_var(self) -> &'static str {
        match self {
            Program::LiveKitServer => "LIVEKIT_SERVER_BIN",
            Program::Toxiproxy => "TOXIPROXY_SERVER_BIN",
        }
    }

    /// The Go package whose `go install` builds this program.
    pub fn go_package(self) -> &'static str {
        match self {
            Program::LiveKitServer => "github.com/livekit/livekit-server/cmd/server",
            Program::Toxiproxy => "github.com/Shopify/toxiproxy/v2/cmd/server",
        }
    }

    /// The Go module path, as `go version -m` reports it.
    fn go_module(self) -> &'static str {
        match self {
            Program::LiveKitServer => "github.com/livekit/livekit-server",
            Program::Toxiproxy => "github.com/Shopify/toxiproxy/v2",
        }
    }

    /// The upstream container image for `version` (canonical, with a leading `v`).
    pub fn image(self, version: &str) -> String {
        match self {
            Program::LiveKitServer => format!("livekit/livekit-server:{version}"),
            Program::Toxiproxy => {
                format!("ghcr.io/shopify/toxiproxy:{}", version.trim_start_matches('v'))
            }
        }
    }

    /// The flag that makes the binary print its version.
    fn version_flag(self) -> &'static str {
        match self {
            Program::LiveKitServer => "--version",
            Program::Toxiproxy => "-version",
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.binary_name())
    }
}

/// Where the provisioning reads its inputs from. [`ProvisionEnv::from_env`] reads the
/// process environment; tests build one explicitly.
#[derive(Clone)]
pub struct ProvisionEnv {
    /// The `PATH` searched for the programs, `go` and `docker` (`None`: nothing is found).
    pub path: Option<OsString>,
    /// The cache directory (`$FAULTLINE_CACHE`, `$XDG_CACHE_HOME/faultline`, `~/.cache/faultline`).
    pub cache_dir: PathBuf,
    /// `LIVEKIT_URL`: an external livekit-server to use instead of starting one.
    pub livekit_url: Option<String>,
    /// `LIVEKIT_API_KEY` for the external server (default `devkey`).
    pub livekit_api_key: String,
    /// `LIVEKIT_API_SECRET` for the external server (default `secret`).
    pub livekit_api_secret: String,
    /// `LIVEKIT_SERVER_BIN`: an explicit livekit-server binary.
    pub livekit_server_bin: Option<PathBuf>,
    /// `TOXIPROXY_SERVER_BIN`: an explicit toxiproxy-server binary.
    pub toxiproxy_server_bin: Option<PathBuf>,
    /// `CHROMIUM_BIN`: the browser the `js` client runs in (else `chromium` on `PATH`).
    pub chromium_bin: Option<PathBuf>,
    /// `REDIS_SERVER_BIN`: the redis-server a cluster's nodes share (else `redis-server` on
    /// `PATH`).
    pub redis_server_bin: Option<PathBuf>,
    /// `FAULTLINE_PYTHON`: the Python that builds the `upstream-rust` client's venv (else
    /// `python3` on `PATH`).
    pub python: Option<PathBuf>,
    /// Bound on a `go install` (and on a `docker pull`).
    pub build_timeout: Duration,
    /// Bound on `docker info` answering.
    pub docker_probe_timeout: Duration,
    /// Bound on the external server answering `GET /`.
    pub external_probe_timeout: Duration,
}

impl fmt::Debug for ProvisionEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionEnv")
            .field("path", &self.path)
            .field("cache_dir", &self.cache_dir)
            .field("livekit_url", &self.livekit_url)
            .field("livekit_api_key", &self.livekit_api_key)
            .field("livekit_api_secret", &"<redacted>")
            .field("livekit_server_bin", &self.livekit_server_bin)
            .field("toxiproxy_server_bin", &self.toxiproxy_server_bin)
            .field("chromium_bin", &self.chromium_bin)
            .field("redis_server_bin", &self.redis_server_bin)
            .field("python", &self.python)
            .field("build_timeout", &self.build_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ProvisionEnv {
    fn default() -> Self {
        Self::from_env()
    }
}

impl ProvisionEnv {
    /// Reads the inputs from the process environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let cache_dir = var("FAULTLINE_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|d| Path::new(&d).join("faultline")))
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache").join("faultline")))
            .unwrap_or_else(|| std::env::temp_dir().join("faultline-cache"));
        Self {
            path: std::env::var_os("PATH"),
            cache_dir,
            livekit_url: var("LIVEKIT_URL"),
            livekit_api_key: var("LIVEKIT_API_KEY").unwrap_or_else(|| "devkey".into()),
            livekit_api_secret: var("LIVEKIT_API_SECRET").unwrap_or_else(|| "secret".into()),
            livekit_server_bin: var("LIVEKIT_SERVER_BIN").map(PathBuf::from),
            toxiproxy_server_bin: var("TOXIPROXY_SERVER_BIN").map(PathBuf::from),
            chromium_bin: var("CHROMIUM_BIN").map(PathBuf::from),
            redis_server_bin: var("REDIS_SERVER_BIN").map(PathBuf::from),
            python: var("FAULTLINE_PYTHON").map(PathBuf::from),
            build_timeout: Duration::from_secs(20 * 60),
            docker_probe_timeout: Duration::from_secs(5),
            external_probe_timeout: Duration::from_secs(5),
        }
    }

    /// An environment with no `PATH`, no external server, no explicit binaries and the
    /// given cache: only what the caller adds is available. Useful in tests.
    pub fn isolated(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            path: None,
            cache_dir: cache_dir.into(),
            livekit_url: None,
            livekit_api_key: "devkey".into(),
            livekit_api_secret: "secret".into(),
            livekit_server_bin: None,
            toxiproxy_server_bin: None,
            chromium_bin: None,
            redis_server_bin: None,
            python: None,
            build_timeout: Duration::from_secs(20 * 60),
            docker_probe_timeout: Duration::from_secs(5),
            external_probe_timeout: Duration::from_secs(5),
        }
    }

    /// The cached binary path for `program` at `version` (whether or not it exists).
    pub fn cached_binary(&self, program: Program, version: &str) -> PathBuf {
        self.cache_dir.join("bin").join(format!("{}-{}", program.binary_name(), version))
    }

    /// Finds an executable called `name` on [`ProvisionEnv::path`].
    pub fn find_on_path(&self, name: &str) -> Option<PathBuf> {
        let path = self.path.as_deref()?;
        std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| is_executable(p))
    }

    fn explicit_binary(&self, program: Program) -> Option<&Path> {
        match program {
            Program::LiveKitServer => self.livekit_server_bin.as_deref(),
            Program::Toxiproxy => self.toxiproxy_server_bin.as_deref(),
        }
    }
}

/// Which source provided a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An already running server at this URL (`LIVEKIT_URL`).
    External {
        /// The validated URL, as given.
        url: Url,
    },
    /// A binary named by `LIVEKIT_SERVER_BIN` / `TOXIPROXY_SERVER_BIN`.
    EnvBinary(PathBuf),
    /// A binary found on `PATH`.
    PathBinary(PathBuf),
    /// A binary built earlier into the cache.
    Cache(PathBuf),
    /// A binary just built by `go install` into the cache.
    GoInstall(PathBuf),
    /// The upstream image, run by the Docker engine through this `docker` CLI.
    Container {
        /// The image reference, e.g. `livekit/livekit-server:v1.13.5`.
        image: String,
        /// The docker CLI used to run it.
        docker: PathBuf,
    },
}

impl Source {
    /// The local binary to run, for the sources that provide one.
    pub fn binary(&self) -> Option<&Path> {
        match self {
            Source::EnvBinary(p)
            | Source::PathBinary(p)
            | Source::Cache(p)
            | Source::GoInstall(p) => Some(p),
            Source::External { .. } | Source::Container { .. } => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::External { url } => write!(f, "external server {url}"),
            Source::EnvBinary(p) => write!(f, "binary from environment {}", p.display()),
            Source::PathBinary(p) => write!(f, "binary on PATH {}", p.display()),
            Source::Cache(p) => write!(f, "cached build {}", p.display()),
            Source::GoInstall(p) => write!(f, "fresh go install {}", p.display()),
            Source::Container { image, .. } => write!(f, "container {image}"),
        }
    }
}

/// One source considered during provisioning: chosen, or skipped with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Short name of the source (`LIVEKIT_URL`, `PATH`, `cache`, `go install`, `docker`).
    pub source: &'static str,
    /// Whether this source was chosen.
    pub chosen: bool,
    /// What was found, or why it was skipped.
    pub detail: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.chosen { "chosen" } else { "skipped" };
        write!(f, "{:<20} {verdict}: {}", self.source, self.detail)
    }
}

/// The outcome of provisioning: the chosen source and every source considered.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The program provisioned.
    pub program: Program,
    /// The canonical version (with a leading `v`).
    pub version: String,
    /// Where it comes from.
    pub source: Source,
    /// Every source considered, in order.
    pub attempts: Vec<Attempt>,
}

/// Why a program could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `LIVEKIT_URL` is set but is not a usable server URL.
    #[error(
        "LIVEKIT_URL={url:?} is not a usable livekit-server URL: {reason}; expected \
         ws://host:port, wss://host:port, http://host:port or https://host:port \
         (unset LIVEKIT_URL to let faultline start its own server)"
    )]
    InvalidExternalUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `LIVEKIT_URL` names a server that does not answer `GET /`.
    #[error(
        "LIVEKIT_URL={url} does not answer: GET {probe} failed within {timeout:?}: {reason}; \
         start that server, or unset LIVEKIT_URL to let faultline start its own"
    )]
    ExternalUnreachable {
        /// The URL as given.
        url: String,
        /// The HTTP URL probed.
        probe: String,
        /// The bound waited.
        timeout: Duration,
        /// What happened.
        reason: String,
    },
    /// The version string is not `vMAJOR.MINOR.PATCH`.
    #[error("version {0:?} is not of the form v1.2.3")]
    InvalidVersion(String),
    /// No source could provide the program.
    #[error("{}", no_source_message(*program, version, attempts))]
    NoSource {
        /// The program wanted.
        program: Program,
        /// The version wanted.
        version: String,
        /// Each source and why it failed.
        attempts: Vec<Attempt>,
    },
}

fn no_source_message(program: Program, version: &str, attempts: &[Attempt]) -> String {
    let mut msg = format!("no source could provide {program} {version}; sources tried:\n");
    for a in attempts {
        msg.push_str(&format!("  - {a}\n"));
    }
    let env = program.bin_env_var();
    msg.push_str(&format!(
        "fix: install Go >= 1.26 (faultline then builds {program} {version} once into its \
         cache), or set {env} to a {program} {version} binary, or put {bin} on PATH, or start \
         a Docker engine",
        bin = program.binary_name()
    ));
    if program == Program::LiveKitServer {
        msg.push_str(", or set LIVEKIT_URL to a running server");
    }
    msg
}

/// Normalizes `1.2.3` / `v1.2.3` to `v1.2.3`, rejecting anything else.
pub fn canonical_version(version: &str) -> Result<String, ProvisionError> {
    let bare = version.trim().trim_start_matches('v');
    let parts: Vec<&str> = bare.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) {
        Ok(format!("v{bare}"))
    } else {
        Err(ProvisionError::InvalidVersion(version.to_string()))
    }
}

/// Provisions `program` at `version`, trying every source in order.
pub async fn provision(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
) -> Result<Provisioned, ProvisionError> {
    let version = canonical_version(version)?;
    let mut attempts = Vec::new();
    let found = find_source(program, &version, env, Mode::Provision, &mut attempts).await?;
    match found {
        Some(source) => {
            tracing::info!(%program, %version, %source, "provisioned");
            Ok(Provisioned { program, version, source, attempts })
        }
        None => Err(ProvisionError::NoSource { program, version, attempts }),
    }
}

/// Checks every source without building or pulling anything: each attempt is `chosen`
/// when that source would work (for `go install`: Go is present). For `faultline doctor`.
pub async fn survey(program: Program, version: &str, env: &ProvisionEnv) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let version = match canonical_version(version) {
        Ok(version) => version,
        Err(e) => {
            record(&mut attempts, "version", false, e.to_string());
            return attempts;
        }
    };
    if let Err(e) = find_source(program, &version, env, Mode::Survey, &mut attempts).await {
        record(&mut attempts, "LIVEKIT_URL", false, e.to_string());
    }
    attempts
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stop at the first source that works, building or pulling if needed.
    Provision,
    /// Check every source, build and pull nothing.
    Survey,
}

fn record(attempts: &mut Vec<Attempt>, source: &'static str, chosen: bool, detail: String) {
    if chosen {
        tracing::info!(source, %detail, "provisioning source chosen");
    } else {
        tracing::info!(source, %detail, "provisioning source skipped");
    }
    attempts.push(Attempt { source, chosen, detail });
}

async fn find_source(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    mode: Mode,
    attempts: &mut Vec<Attempt>,
) -> Result<Option<Source>, ProvisionError> {
    let survey = mode == Mode::Survey;
    if program == Program::LiveKitServer {
        match &env.livekit_url {
            Some(raw) => {
                let url = external_url(raw)?;
                probe_external(raw, &url, env.external_probe_timeout).await?;
                record(attempts, "LIVEKIT_URL", true, format!("{url} answers GET /"));
                if !survey {
                    return Ok(Some(Source::External { url }));
                }
            }
            None => record(attempts, "LIVEKIT_URL", false, "not set".into()),
        }
    }

    let env_var = program.bin_env_var();
    match env.explicit_binary(program) {
        Some(bin) => match check_binary(program, bin, version, env).await {
            Ok(detail) => {
                record(attempts, env_var, true, detail);
                if !survey {
                    return Ok(Some(Source::EnvBinary(bin.to_path_buf())));
                }
            }
            Err(reason) => record(attempts, env_var, false, reason),
        },
        None => record(attempts, env_var, false, "not set".into()),
    }

    match env.find_on_path(program.binary_name()) {
        Some(bin) => match check_binary(program, &bin, version, env).await {
            Ok(detail) => {
                record(attempts, "PATH", true, detail);
                if !survey {
                    return Ok(Some(Source::PathBinary(bin)));
                }
            }
            Err(reason) => record(attempts, "PATH", false, reason),
        },
        None => record(attempts, "PATH", false, format!("no {} on PATH", program.binary_name())),
    }

    let cached = env.cached_binary(program, version);
    if is_executable(&cached) {
        record(attempts, "cache", true, format!("{}", cached.display()));
        if !survey {
            return Ok(Some(Source::Cache(cached)));
        }
    } else {
        record(attempts, "cache", false, format!("no {}", cached.display()));
    }

    match env.find_on_path("go") {
        None => record(
            attempts,
            "go install",
            false,
            format!("go not found on PATH; install Go >= 1.26 or set {env_var}"),
        ),
        Some(go) if survey => match go_version(&go, env).await {
            Ok(go_version) => record(
                attempts,
                "go install",
                true,
                format!("{} ({go_version}) can build {program} {version}", go.display()),
            ),
            Err(reason) => {
                record(attempts, "go install", false, format!("{}: {reason}", go.display()))
            }
        },
        Some(go) => match go_install(program, version, env, &go).await {
            Ok(GoInstalled::Built(bin, elapsed)) => {
                record(
                    attempts,
                    "go install",
                    true,
                    format!("built {} in {:.0?}", bin.display(), elapsed),
                );
                return Ok(Some(Source::GoInstall(bin)));
            }
            Ok(GoInstalled::BuiltByOther(bin)) => {
                record(attempts, "cache", true, format!("{} (built concurrently)", bin.display()));
                return Ok(Some(Source::Cache(bin)));
            }
            Err(reason) => record(attempts, "go install", false, reason),
        },
    }

    match env.find_on_path("docker") {
        None => record(attempts, "docker", false, "docker CLI not found on PATH".into()),
        Some(docker) if survey => match docker_engine(&docker, env).await {
            Ok(engine) => record(
                attempts,
                "docker",
                true,
                format!("engine {engine} can run {}", program.image(version)),
            ),
            Err(reason) => record(attempts, "docker", false, reason),
        },
        Some(docker) => match docker_image(program, version, env, &docker).await {
            Ok(image) => {
                record(attempts, "docker", true, format!("image {image}"));
                return Ok(Some(Source::Container { image, docker }));
            }
            Err(reason) => record(attempts, "docker", false, reason),
        },
    }
    Ok(None)
}

/// Validates an external server URL: scheme ws/wss/http/https, a host, a port.
fn external_url(raw: &str) -> Result<Url, ProvisionError> {
    let invalid = |reason: &str| ProvisionError::InvalidExternalUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(raw).map_err(|e| invalid(&format!("cannot parse it ({e})")))?;
    if !matches!(url.scheme(), "ws" | "wss" | "http" | "https") {
        return Err(invalid(&format!("scheme {:?} is not ws, wss, http or https", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if url.port_or_known_default().is_none() {
        return Err(invalid("it has no port"));
    }
    Ok(url)
}

/// The HTTP(S) URL of a server given by a ws/wss/http/https URL, with path `/`.
pub fn http_base(url: &Url) -> Url {
    let mut http = url.clone();
    let scheme = match url.scheme() {
        "wss" | "https" => "https",
        _ => "http",
    };
    // Switching between these special schemes cannot fail.
    let _ = http.set_scheme(scheme);
    http.set_path("/");
    http.set_query(None);
    http
}

async fn probe_external(raw: &str, url: &Url, timeout: Duration) -> Result<(), ProvisionError> {
    let probe = http_base(url);
    let unreachable = |reason: String| ProvisionError::ExternalUnreachable {
        url: raw.to_string(),
        probe: probe.to_string(),
        timeout,
        reason,
    };
    let client = crate::http::client(timeout).map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(probe.clone())
        .send()
        .await
        .map_err(|e| unreachable(crate::http::error_chain(&e)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(unreachable(format!("answered HTTP {}", response.status())))
    }
}

/// Runs `cmd`, bounded by `timeout`, returning its combined output.
pub(crate) async fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(bool, String), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("did not finish within {timeout:?}")),
        Ok(Err(e)) => Err(format!("failed while running: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.success(), text.trim().to_string()))
        }
    }
}

/// A blocking command for `program` that sees [`ProvisionEnv::path`] as its `PATH` (for
/// quick questions such as a version).
pub fn command_std(program: &Path, env: &ProvisionEnv) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    match &env.path {
        Some(path) => cmd.env("PATH", path),
        None => cmd.env_remove("PATH"),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// A command for `program` that sees [`ProvisionEnv::path`] as its `PATH`.
pub fn command(program: &Path, env: &ProvisionEnv) -> Command {
    Command::from(command_std(program, env))
}

/// The first `MAJOR.MINOR.PATCH` in `text`, as `vMAJOR.MINOR.PATCH`.
fn find_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .find_map(|word| canonical_version(word).ok())
}

/// Checks that `bin` is `program` at `version`. Ok carries a description.
async fn check_binary(
    program: Program,
    bin: &Path,
    version: &str,
    env: &ProvisionEnv,
) -> Result<String, String> {
    if !is_executable(bin) {
        return Err(format!("{} is not an executable file", bin.display()));
    }
    // A `go install` build reports its module version in its build info; release builds
    // report it through the version flag (toxiproxy's flag says "git" when built by go).
    if let Some(go) = env.find_on_path("go") {
        let mut cmd = command(&go, env);
        cmd.arg("version").arg("-m").arg(bin);
        if let Ok((true, out)) = run_bounded(cmd, Duration::from_secs(10)).await {
            let module = out.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("mod") && words.next() == Some(program.go_module()))
                    .then(|| words.next().and_then(|v| canonical_version(v).ok()))
                    .flatten()
            });
            if let Some(found) = module {
                return version_verdict(bin, &found, version, "go build info");
            }
        }
    }
    let mut cmd = command(bin, env);
    cmd.arg(program.version_flag());
    let (_, out) = run_bounded(cmd, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{} {}: {e}", bin.display(), program.version_flag()))?;
    match find_version(&out) {
        Some(found) => version_verdict(bin, &found, version, program.version_flag()),
        None => Err(format!(
            "{} {} printed no version ({out:?}); cannot tell whether it is {version}",
            bin.display(),
            program.version_flag()
        )),
    }
}

fn version_verdict(bin: &Path, found: &str, wanted: &str, how: &str) -> Result<String, String> {
    if found == wanted {
        Ok(format!("{} is {found} ({how})", bin.display()))
    } else {
        Err(format!("{} is {found} ({how}), not the requested {wanted}", bin.display()))
    }
}

enum GoInstalled {
    Built(PathBuf, Duration),
    BuiltByOther(PathBuf),
}

/// Builds `program` at `version` with `go install` into the cache, once across processes.
async fn go_install(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    go: &Path,
) -> Result<GoInstalled, String> {
    let target = env.cached_binary(program, version);
    let bin_dir = env.cache_dir.join("bin");
    std::fs::create_dir_all(&bin_dir)
        .map_err(|e| format!("cannot create {}: {e}", bin_dir.display()))?;
    let what = format!("{program} {version}");
    let lock =
        CacheLock::acquire(env, &format!("{}-{version}", program.binary_name()), &what).await?;
    // The lock is released when `lock` is dropped, on every return path below.
    if is_executable(&target) {
        return Ok(GoInstalled::BuiltByOther(target));
    }

    let gobin = tempfile::Builder::new()
        .prefix("gobin-")
        .tempdir_in(&env.cache_dir)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", env.cache_dir.display()))?;
    let package = format!("{}@{version}", program.go_package());
    let mut cmd = command(go, env);
    cmd.arg("install").arg(&package).env("GOBIN", gobin.path()).env("CGO_ENABLED", "0");
    let step = BuildStep {
        what: &what,
        how: format!("`go install {package}`"),
        log_name: format!("go-install-{}-{version}", program.binary_name()),
        into: &bin_dir,
    };
    let elapsed = step.run(cmd, env).await?;
    let built = gobin.path().join("server");
    std::fs::rename(&built, &target)
        .map_err(|e| format!("cannot move {} to {}: {e}", built.display(), target.display()))?;
    eprintln!("faultline: built {} in {:.0?}", target.display(), elapsed);
    drop(lock);
    Ok(GoInstalled::Built(target, elapsed))
}

/// An exclusive lock on one thing the cache builds, held across processes: however many
/// test binaries ask for the same program at once, one builds it and the others wait, then
/// find it built. Released when dropped.
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    /// Takes `<cache>/<name>.lock`, waiting up to [`ProvisionEnv::build_timeout`] for
    /// another process that holds it (saying so once); `what` names the thing for messages.
    pub async fn acquire(env: &ProvisionEnv, name: &str, what: &str) -> Result<Self, String> {
        std::fs::create_dir_all(&env.cache_dir)
            .map_err(|e| format!("cannot create {}: {e}", env.cache_dir.display()))?;
        let lock_path = env.cache_dir.join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open lock {}: {e}", lock_path.display()))?;
        let wait_start = Instant::now();
        let mut told = false;
        loop {
            match fs2::FileExt::try_lock_exclusive(&file) {
                Ok(()) => return Ok(CacheLock { _file: file }),
                Err(_) if wait_start.elapsed() < env.build_timeout => {
                    if !told {
                        eprintln!(
                            "faultline: another process is preparing {what} (lock {}); \
                             waiting for it",
                            lock_path.display()
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(format!(
                        "waited {:?} for the lock {}: {e}",
                        env.build_timeout,
                        lock_path.display()
                    ))
                }
            }
        }
    }
}

/// One long step of preparing something in the cache (a `go install`, a `pip install`, an
/// `npm install`): run with its output in a log under `<cache>/logs`, progress printed every
/// 30 s, bounded by [`ProvisionEnv::build_timeout`], and a failure quoting the log's tail.
#[derive(Debug)]
pub struct BuildStep<'a> {
    /// What is being prepared (`livekit-server v1.13.5`).
    pub what: &'a str,
    /// The command, as a user would type it, for messages.
    pub how: String,
    /// The log file's name, without `.log`.
    pub log_name: String,
    /// Where the result goes, for messages.
    pub into: &'a Path,
}

impl BuildStep<'_> {
    /// Runs `cmd` (its stdin, stdout and stderr are set here) and returns how long it took.
    pub async fn run(&self, mut cmd: Command, env: &ProvisionEnv) -> Result<Duration, String> {
        let log_dir = env.cache_dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("cannot create {}: {e}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{}.log", self.log_name));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("cannot clone log handle: {e}"))?;
        let (what, how) = (self.what, &self.how);
        eprintln!(
            "faultline: preparing {what} with {how} (a first time takes minutes; later runs \
             use the cache {}); log: {}",
            self.into.display(),
            log_path.display()
        );
        let started = Instant::now();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run {how}: {e}"))?;
        let deadline = tokio::time::Instant::now() + env.build_timeout;
        let mut ticker = tokio::time::interval(Duration::from_secs(30));
        ticker.tick().await;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status.map_err(|e| format!("{how} failed: {e}"))?,
                _ = ticker.tick() => eprintln!(
                    "faultline: still preparing {what} ({}s elapsed)",
                    started.elapsed().as_secs()
                ),
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = child.kill().await;
                    return Err(format!(
                        "{how} did not finish within {:?}; log: {}",
                        env.build_timeout,
                        log_path.display()
                    ));
                }
            }
        };
        if !status.success() {
            return Err(format!(
                "{how} failed ({status}); last lines:\n{}\nlog: {}",
                crate::supervise::tail(&log_path, 15),
                log_path.display()
            ));
        }
        let elapsed = started.elapsed();
        let mut log = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .await
            .map_err(|e| format!("cannot append to {}: {e}", log_path.display()))?;
        let _ = log.write_all(format!("faultline: done in {elapsed:.1?}\n").as_bytes()).await;
        Ok(elapsed)
    }
}

/// Checks that a Docker engine answers and the image is present (pulling it if needed).
async fn docker_image(
    program: Program,
    version: &str,
    env: &ProvisionEnv,
    docker: &Path,
) -> Result<String, String> {
    docker_engine(docker, env).await?;
    let image = program.image(version);
    let mut inspect = command(docker, env);
    inspect.args(["image", "inspect", "--format", "{{.Id}}", &image]);
    if let Ok((true, _)) = run_bounded(inspect, env.docker_probe_timeout).await {
        return Ok(image);
    }
    eprintln!("faultline: pulling {image}");
    let mut pull = command(docker, env);
    pull.args(["pull", &image]);
    match run_bounded(pull, env.build_timeout).await {
        Ok((true, _)) => Ok(image),
        Ok((false, out)) => Err(format!("docker pull {image} failed: {}", last_line(&out))),
        Err(e) => Err(format!("docker pull {image}: {e}")),
    }
}

/// Checks that a Docker engine answers `docker info` within the probe bound; Ok carries
/// the engine version.
pub async fn docker_engine(docker: &Path, env: &ProvisionEnv) -> Result<String, String> {
    let mut info = command(docker, env);
    info.args(["info", "--format", "{{.ServerVersion}}"]);
    match run_bounded(info, env.docker_probe_timeout).await {
        Ok((true, out)) if !out.is_empty() => Ok(out),
        Ok((_, out)) => Err(format!("no Docker engine answers: {}", last_line(&out))),
        Err(e) => Err(format!("no Docker engine answers: docker info {e}")),
    }
}

/// The version `go version` reports, e.g. `go1.26.8`.
pub async fn go_version(go: &Path, env: &ProvisionEnv) -> Result<String, String> {
    let mut cmd = command(go, env);
    cmd.arg("env").arg("GOVERSION");
    match run_bounded(cmd, Duration::from_secs(10)).await {
        Ok((true, out)) => Ok(out),
        Ok((false, out)) => Err(last_line(&out).to_string()),
        Err(e) => Err(e),
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)")
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
