//! Bringing up a server process faultline manages (livekit-server, toxiproxy-server), one
//! way for all of them: on ports chosen free on 127.0.0.1 and chosen again when another
//! process took one first, logged to a fresh file, ready when its probe answers (killed and
//! reported with its log when it never does), and started once for the instance every test
//! of a test binary shares.
//!
//! Running the process once it is up — its log, its watchdog, killing it — is
//! [`crate::supervise`]'s job.

use std::future::Future;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::supervise::{self, Launch, Liveness, NotReady, Process, ProcessDied};

/// How many times in all a start is tried when a port chosen free was taken before the
/// process bound it.
const PORT_RACE_ATTEMPTS: usize = 3;

/// A managed process could not be spawned, or the files it needs not be written.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot start {program}: {what}: {reason}; log: {}", log_path.display())]
pub struct SpawnFailed {
    /// The program (`livekit-server`, `toxiproxy-server`).
    pub program: &'static str,
    /// What was being done.
    pub what: String,
    /// The OS error.
    pub reason: String,
    /// The log file (it may not exist yet; before the ports are chosen, the log directory).
    pub log_path: PathBuf,
}

/// A managed process ran but never answered its readiness probe; it was killed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{program} did not answer {probe} within {timeout:?}; it was killed; log: {}\n\
     last log lines:\n{tail}",
    log_path.display()
)]
pub struct NeverReady {
    /// The program.
    pub program: &'static str,
    /// The probe, as the message names it (`GET http://127.0.0.1:…/version`).
    pub probe: String,
    /// The bound waited.
    pub timeout: Duration,
    /// The log file.
    pub log_path: PathBuf,
    /// Its last lines.
    pub tail: String,
}

/// Why a managed process did not come up. Each program's module reports it with its own
/// error type ([`StartError::into_error`]).
#[derive(Debug)]
pub(crate) enum StartError {
    /// It could not be spawned.
    Spawn(SpawnFailed),
    /// It never answered.
    NotReady(NeverReady),
    /// It exited before it answered.
    Died(ProcessDied),
}

impl StartError {
    /// The same error as the program's own error type, which has a variant for each.
    pub(crate) fn into_error<E>(self) -> E
    where
        E: From<SpawnFailed> + From<NeverReady> + From<ProcessDied>,
    {
        match self {
            StartError::Spawn(e) => e.into(),
            StartError::NotReady(e) => e.into(),
            StartError::Died(e) => e.into(),
        }
    }

    /// A [`StartError::Spawn`] of `program` while doing `what`.
    pub(crate) fn spawn(
        program: &'static str,
        what: impl Into<String>,
        reason: impl std::fmt::Display,
        log_path: &Path,
    ) -> Self {
        StartError::Spawn(SpawnFailed {
            program,
            what: what.into(),
            reason: reason.to_string(),
            log_path: log_path.to_path_buf(),
        })
    }
}

/// Runs `attempt` — choose free ports, spawn, wait until ready — again, up to
/// [`PORT_RACE_ATTEMPTS`] times in all, while the process exits because a port was taken:
/// another process may bind a port between its being chosen and the program binding it.
pub(crate) async fn on_free_ports<T, F, Fut>(mut attempt: F) -> Result<T, StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartError>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(StartError::Died(died)) if port_taken(&died) && tried < PORT_RACE_ATTEMPTS => {
                tracing::warn!(%died, "a chosen port was taken meanwhile; retrying with new ports");
                tried += 1;
            }
            result => return result,
        }
    }
}

/// Whether the process exited because a port it was to bind was taken.
pub(crate) fn port_taken(died: &ProcessDied) -> bool {
    died.tail.contains("address already in use")
}

/// A TCP port free on 127.0.0.1 right now (bind port 0, read it, release it). Another
/// process may take it before the program binds it: [`on_free_ports`] tries again then.
pub(crate) fn free_tcp_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A UDP port free on 127.0.0.1 right now, as [`free_tcp_port`].
pub(crate) fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The log file of `program` listening on `port`: `<name>.<program>.<port>.log` in
/// [`supervise::log_dir`], named after the current test when `name` is `None`.
pub(crate) fn log_path(name: Option<&str>, program: &str, port: u16) -> PathBuf {
    let file = match name {
        Some(name) => format!("{name}.{program}.{port}.log"),
        None => supervise::log_file_name(program, port),
    };
    supervise::log_dir().join(file)
}

/// Spawns `launch` as `program`, logging to `log_path` from its first line (a file left there
/// by an earlier run is removed).
pub(crate) fn spawn(
    program: &'static str,
    launch: &Launch,
    log_path: &Path,
) -> Result<Liveness, StartError> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StartError::spawn(program, "create the log directory", e, log_path))?;
    }
    let _ = std::fs::remove_file(log_path);
    let process = Process::spawn(launch, log_path).map_err(|e| {
        StartError::spawn(program, format!("spawn {}", launch.program.display()), e, log_path)
    })?;
    tracing::info!(pid = process.pid(), log = %log_path.display(), "{program} spawned");
    Ok(Liveness::new(program, process, log_path.to_path_buf()))
}

/// Waits until `probe` answers (it is asked every 50 ms, for up to `timeout`). `described`
/// names the probe in the error. A process that exits first is reported with its exit
/// status; one that never answers is killed, and reported with its log's last lines.
pub(crate) async fn until_ready<F, Fut>(
    liveness: &Liveness,
    timeout: Duration,
    described: &str,
    probe: F,
) -> Result<(), StartError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    match supervise::wait_ready(liveness, timeout, probe).await {
        Ok(()) => Ok(()),
        Err(NotReady::Exited(died)) => Err(StartError::Died(died)),
        Err(NotReady::Timeout) => {
            liveness.kill();
            let log_path = liveness.log_path().to_path_buf();
            Err(StartError::NotReady(NeverReady {
                program: liveness.program(),
                probe: described.to_string(),
                timeout,
                tail: supervise::tail(&log_path, 20),
                log_path,
            }))
        }
    }
}

/// The instance of a managed program every test of a test binary shares: started on first
/// use, with its log named `shared.<program>.<port>.log`, and never stopped before the test
/// process exits (its watchdog kills it then).
pub(crate) struct Shared<T>(tokio::sync::OnceCell<Arc<T>>);

impl<T> Shared<T> {
    /// No instance yet.
    pub(crate) const fn new() -> Self {
        Shared(tokio::sync::OnceCell::const_new())
    }

    /// The instance, started by `start` (given the name for its log) if there is none yet.
    /// A start that fails is tried again by the next caller.
    pub(crate) async fn get_or_start<E, F, Fut>(&self, start: F) -> Result<Arc<T>, E>
    where
        F: FnOnce(&'static str) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.0.get_or_try_init(|| async { start("shared").await.map(Arc::new) }).await.cloned()
    }
}
