//! The Redis a cluster's livekit-server nodes share: provisioned (`REDIS_SERVER_BIN`, else
//! `redis-server` on `PATH`, else the `redis` container image when a Docker engine answers),
//! started on a free loopback port with persistence off, killable and restartable on that
//! port, and asked the few questions the harness has (which nodes registered, which node
//! hosts a room).
//!
//! Redis is not built from source like livekit-server and toxiproxy: every platform packages
//! it, so when nothing provides it the error names the platform's install command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::provision::{self, Attempt, ProvisionEnv};
use crate::supervise::{self, Launch, Liveness, NotReady, Process, ProcessDied};

/// The oldest Redis livekit-server v1.13 works with (its go-redis client speaks RESP3).
const MIN_MAJOR: u32 = 6;
/// The image run when Redis comes from a container.
pub const REDIS_IMAGE: &str = "redis:7.0";
/// Bound on Redis answering PING after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on one question to Redis.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisSource {
    /// A `redis-server` binary (from `REDIS_SERVER_BIN` or `PATH`).
    Binary(PathBuf),
    /// The [`REDIS_IMAGE`] container (the `docker` CLI its watchdog removes it with).
    Container(PathBuf),
}

/// Why Redis could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No source could provide `redis-server`.
    #[error("{}", no_redis_message(attempts))]
    NoSource {
        /// Each source and why it failed.
        attempts: Vec<Attempt>,
    },
    /// The process could not be spawned or its log opened.
    #[error("cannot start redis-server: {reason}; log: {}", log.display())]
    Spawn {
        /// The OS error.
        reason: String,
        /// The log file.
        log: PathBuf,
    },
    /// It runs but never answered PING.
    #[error(
        "redis-server on {addr} did not answer PING within {timeout:?}; it was killed; log: {}\n\
         last log lines:\n{tail}",
        log.display()
    )]
    NotReady {
        /// Its address.
        addr: SocketAddr,
        /// The bound waited.
        timeout: Duration,
        /// The log file.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// It is not running (exited at startup, or killed).
    #[error(transparent)]
    Died(#[from] ProcessDied),
    /// A question to Redis failed.
    #[error("asking redis-server on {addr} `{command}` failed: {reason}; log: {}", log.display())]
    Query {
        /// Its address.
        addr: SocketAddr,
        /// The command.
        command: String,
        /// What went wrong.
        reason: String,
        /// The log file.
        log: PathBuf,
    },
}

fn no_redis_message(attempts: &[Attempt]) -> String {
    let mut msg = String::from("no source could provide redis-server; sources tried:\n");
    for a in attempts {
        msg.push_str(&format!("  - {a}\n"));
    }
    msg.push_str(&format!(
        "fix: {}, or set REDIS_SERVER_BIN to a redis-server >= {MIN_MAJOR}, or start a Docker \
         engine (faultline then runs {REDIS_IMAGE})",
        install_hint()
    ));
    msg
}

/// The command that installs Redis on this platform.
pub fn install_hint() -> &'static str {
    if cfg!(target_os = "macos") {
        "install it with `brew install redis`"
    } else {
        "install it with `apt-get install redis-server` (Debian, Ubuntu) or your \
         distribution's redis package"
    }
}

/// Finds Redis, trying each source in order and recording why each was skipped. With
/// `survey`, checks every source and starts nothing (for `faultline doctor`).
pub async fn provision(
    env: &ProvisionEnv,
    survey: bool,
) -> Result<(RedisSource, Vec<Attempt>), RedisError> {
    let mut attempts = Vec::new();
    let mut found: Option<RedisSource> = None;
    for source in ["REDIS_SERVER_BIN", "PATH", "docker"] {
        if found.is_some() && !survey {
            break;
        }
        let result = match source {
            "REDIS_SERVER_BIN" => match &env.redis_server_bin {
                Some(bin) => {
                    check_binary(bin, env).await.map(|d| (d, RedisSource::Binary(bin.clone())))
                }
                None => Err("not set".into()),
            },
            "PATH" => match env.find_on_path("redis-server") {
                Some(bin) => check_binary(&bin, env).await.map(|d| (d, RedisSource::Binary(bin))),
                None => Err("no redis-server on PATH".into()),
            },
            _ => provision::docker_runs_containers(env).await.map(|(engine, docker)| {
                (format!("engine {engine} runs {REDIS_IMAGE}"), RedisSource::Container(docker))
            }),
        };
        match result {
            Ok((detail, chosen)) => {
                attempts.push(Attempt { source, chosen: true, detail });
                found.get_or_insert(chosen);
            }
            Err(detail) => attempts.push(Attempt { source, chosen: false, detail }),
        }
    }
    match found {
        Some(source) => Ok((source, attempts)),
        None => Err(RedisError::NoSource { attempts }),
    }
}

/// Checks that `bin` is a redis-server of a version livekit-server works with.
async fn check_binary(bin: &Path, env: &ProvisionEnv) -> Result<String, String> {
    let mut cmd = provision::command(bin, env);
    cmd.arg("--version");
    let (_, out) = provision::run_bounded(cmd, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{} --version: {e}", bin.display()))?;
    // "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=…"
    let version = out
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .ok_or_else(|| format!("{} --version printed no version ({out:?})", bin.display()))?;
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major >= MIN_MAJOR {
        Ok(format!("{} is Redis {version}", bin.display()))
    } else {
        Err(format!(
            "{} is Redis {version}; livekit-server needs {MIN_MAJOR} or later",
            bin.display()
        ))
    }
}

/// A running Redis on `127.0.0.1`, with persistence off (a restart starts empty, like a
/// Redis that lost its memory). Killed when dropped.
pub struct Redis {
    addr: SocketAddr,
    launch: Launch,
    liveness: Liveness,
    client: redis::Client,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("addr", &self.addr).field("log", &self.log_path()).finish()
    }
}

impl Redis {
    /// Starts Redis from `source` on a free loopback port (named `name` in its log file) and
    /// returns once it answers PING.
    pub async fn start(source: &RedisSource, name: &str) -> Result<Redis, RedisError> {
        let log_dir = supervise::log_dir();
        let port = crate::startup::free_tcp_port().map_err(|e| RedisError::Spawn {
            reason: format!("cannot pick a free port: {e}"),
            log: log_dir.clone(),
        })?;
        let log = log_dir.join(format!("{name}.redis-server.{port}.log"));
        let spawn_err =
            |e: std::io::Error| RedisError::Spawn { reason: e.to_string(), log: log.clone() };
        std::fs::create_dir_all(&log_dir).map_err(spawn_err)?;
        let _ = std::fs::remove_file(&log);
        let dir =
            tempfile::Builder::new().prefix("faultline-redis-").tempdir().map_err(spawn_err)?;
        // Loopback only, nothing written to disk.
        let args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        let launch = match source {
            RedisSource::Binary(bin) => {
                let mut args = args;
                // Its working directory, in case a command asks it to write anyway.
                args.extend(["--dir".into(), dir.path().into()]);
                Launch::new(bin.clone(), args)
            }
            RedisSource::Container(docker) => {
                let container = format!("faultline-redis-{}-{port}", std::process::id());
                let mut command = vec!["redis-server".into()];
                command.extend(args);
                Launch::container(docker, container, &[], REDIS_IMAGE, command)
            }
        };
        let process = Process::spawn(&launch, &log).map_err(spawn_err)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let client =
            redis::Client::open(format!("redis://{addr}/")).map_err(|e| RedisError::Spawn {
                reason: format!("cannot make a client for {addr}: {e}"),
                log: log.clone(),
            })?;
        let redis = Redis {
            addr,
            launch,
            liveness: Liveness::new("redis-server", process, log),
            client,
            _dir: dir,
        };
        redis.wait_ready().await?;
        tracing::info!(%addr, log = %redis.log_path().display(), "redis-server ready");
        Ok(redis)
    }

    async fn wait_ready(&self) -> Result<(), RedisError> {
        let probe = || async { self.query::<String>(&redis::cmd("PING")).await.is_ok() };
        match supervise::wait_ready(&self.liveness, READY_TIMEOUT, probe).await {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(died)) => Err(RedisError::Died(died)),
            Err(NotReady::Timeout) => {
                self.liveness.kill();
                Err(RedisError::NotReady {
                    addr: self.addr,
                    timeout: READY_TIMEOUT,
                    log: self.log_path().to_owned(),
                    tail: supervise::tail(self.log_path(), 20),
                })
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        self.liveness.log_path()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.liveness.check().is_ok()
    }

    /// SIGKILLs it: every node loses its Redis at once.
    pub fn kill(&self) {
        self.liveness.kill();
        tracing::info!(addr = %self.addr, "redis-server killed");
    }

    /// Starts it again on the same port, empty, and returns once it answers PING.
    pub async fn restart(&self) -> Result<(), RedisError> {
        {
            let mut slot = self.liveness.lock();
            if let Some(old) = slot.as_mut() {
                old.kill();
            }
            let process = Process::spawn(&self.launch, self.log_path()).map_err(|e| {
                RedisError::Spawn { reason: e.to_string(), log: self.log_path().to_owned() }
            })?;
            *slot = Some(process);
        }
        self.wait_ready().await
    }

    /// The fields of the hash `key` (empty when it does not exist).
    pub async fn hkeys(&self, key: &str) -> Result<Vec<String>, RedisError> {
        self.query(redis::cmd("HKEYS").arg(key)).await
    }

    /// One field of the hash `key`.
    pub async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, RedisError> {
        self.query(redis::cmd("HGET").arg(key).arg(field)).await
    }

    /// Runs one command on a fresh connection, bounded by [`QUERY_TIMEOUT`].
    async fn query<T: redis::FromRedisValue + Send + 'static>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let client = self.client.clone();
        let command = command.clone();
        let failed = |reason: String, command: &redis::Cmd| RedisError::Query {
            addr: self.addr,
            command: String::from_utf8_lossy(&command.get_packed_command())
                .split("\r\n")
                .filter(|part| !part.is_empty() && !part.starts_with(['*', '$']))
                .collect::<Vec<_>>()
                .join(" "),
            reason,
            log: self.log_path().to_owned(),
        };
        let asked = command.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let mut connection = client.get_connection_with_timeout(QUERY_TIMEOUT)?;
            connection.set_read_timeout(Some(QUERY_TIMEOUT))?;
            connection.set_write_timeout(Some(QUERY_TIMEOUT))?;
            command.query::<T>(&mut connection)
        })
        .await
        .map_err(|e| failed(format!("the query task failed: {e}"), &asked))?;
        answer.map_err(|e| failed(e.to_string(), &asked))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.liveness.kill();
    }
}
