//! Getting a binary of a pinned version of livekit-server or toxiproxy.
//!
//! Sources are tried in a fixed order (`order`) and every one is recorded as chosen or
//! skipped with the reason, so that a failure explains itself:
//!
//! 1. (livekit-server only) `LIVEKIT_URL`: an external server, validated and probed
//!    (`external`).
//! 2. `LIVEKIT_SERVER_BIN` / `TOXIPROXY_SERVER_BIN` (`explicit`), else the program on
//!    `PATH` (`on_path`), if it is the requested version.
//! 3. A cached build: `<cache>/bin/<program>-<version>` (`cache`).
//! 4. `go install` of the pinned version into the cache (file-locked, logged, bounded;
//!    `go_install`).
//! 5. The upstream container image, run through testcontainers, when the Docker engine at
//!    `DOCKER_HOST` answers (`container`).
//!
//! This module holds the types they share. Everything read from the process environment
//! goes through [`ProvisionEnv`], which can also be built explicitly, so tests can exercise
//! each failure without touching the process-global environment.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

mod build;
mod cache;
mod command;
mod container;
mod explicit;
mod external;
mod go_install;
mod on_path;
mod order;
pub mod system;
mod version;

pub use build::{BuildStep, CacheLock};
pub(crate) use command::run_bounded;
pub use command::{command, command_std};
pub use container::docker_engine;
pub(crate) use container::{docker_runs_containers, split_image};
pub use external::http_base;
pub use go_install::go_version;
pub use order::{provision, survey};
pub use version::canonical_version;

/// The livekit-server version used unless `FAULTLINE_LIVEKIT_VERSION` or an option says otherwise.
pub const DEFAULT_LIVEKIT_VERSION: &str = "v1.13.5";
/// The toxiproxy version the harness is pinned to.
pub const DEFAULT_TOXIPROXY_VERSION: &str = "v2.12.0";
/// The Docker engine asked when `DOCKER_HOST` is unset (where testcontainers looks first).
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

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
    /// `FAULTLINE_JS_BUNDLE`: a livekit-client UMD bundle (a file, or a directory holding
    /// `dist/livekit-client.umd.js`, such as a checkout after its build) the `js` client runs
    /// instead of the pinned one.
    pub js_bundle: Option<PathBuf>,
    /// `LIVEKIT_LIB_PATH`: a `liblivekit_ffi` the `upstream-rust` client loads instead of the
    /// wheel's own copy (the wheel's own variable, passed through to its driver).
    pub livekit_lib: Option<PathBuf>,
    /// `FAULTLINE_JS_VERSION`: another published livekit-client (an exact version) the `js`
    /// client runs instead of the pinned one, installed with npm into the cache.
    pub js_version: Option<String>,
    /// `FAULTLINE_UPSTREAM_RUST_VERSION`: another published PyPI `livekit` wheel (an exact
    /// version) the `upstream-rust` client runs instead of the pinned one, in a venv of its own.
    pub upstream_rust_version: Option<String>,
    /// `FAULTLINE_GO_VERSION`: another published `server-sdk-go` v2 (an exact version) the
    /// `go` client's driver is built against instead of the pinned one, in a directory of its
    /// own.
    pub go_version: Option<String>,
    /// `FAULTLINE_DRIVER`: the command that starts the `driver` client, a program of the
    /// user's that speaks `docs/driver-protocol.md` (run through `sh -c`).
    pub driver: Option<String>,
    /// Bound on a `go install` (and on pulling an image).
    pub build_timeout: Duration,
    /// The Docker engine the container source asks and runs containers on: `DOCKER_HOST`,
    /// else [`DEFAULT_DOCKER_HOST`] (`None`: no engine). testcontainers, which runs the
    /// containers, reads `DOCKER_HOST` from the process environment itself, so a value set
    /// here by hand only changes which engine is asked.
    pub docker_host: Option<String>,
    /// Bound on the Docker engine answering.
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
            .field("js_bundle", &self.js_bundle)
            .field("livekit_lib", &self.livekit_lib)
            .field("js_version", &self.js_version)
            .field("upstream_rust_version", &self.upstream_rust_version)
            .field("go_version", &self.go_version)
            .field("driver", &self.driver)
            .field("build_timeout", &self.build_timeout)
            .field("docker_host", &self.docker_host)
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
            js_bundle: var("FAULTLINE_JS_BUNDLE").map(PathBuf::from),
            livekit_lib: var("LIVEKIT_LIB_PATH").map(PathBuf::from),
            js_version: var("FAULTLINE_JS_VERSION"),
            upstream_rust_version: var("FAULTLINE_UPSTREAM_RUST_VERSION"),
            go_version: var("FAULTLINE_GO_VERSION"),
            driver: var("FAULTLINE_DRIVER"),
            build_timeout: Duration::from_secs(20 * 60),
            docker_host: Some(var("DOCKER_HOST").unwrap_or_else(|| DEFAULT_DOCKER_HOST.into())),
            docker_probe_timeout: Duration::from_secs(5),
            external_probe_timeout: Duration::from_secs(5),
        }
    }

    /// An environment with no `PATH`, no Docker engine, no external server, no explicit
    /// binaries and the given cache: only what the caller adds is available. Useful in tests.
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
            js_bundle: None,
            livekit_lib: None,
            js_version: None,
            upstream_rust_version: None,
            go_version: None,
            driver: None,
            build_timeout: Duration::from_secs(20 * 60),
            docker_host: None,
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
        std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| command::is_executable(p))
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
    /// The upstream image, run by the Docker engine through testcontainers.
    Container {
        /// The image reference, e.g. `livekit/livekit-server:v1.13.5`.
        image: String,
        /// The docker CLI the watchdog removes the container with if the test process dies
        /// first (see [`crate::supervise`]).
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
