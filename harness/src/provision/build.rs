//! Preparing something in the cache once: the lock that makes one process build while the
//! others wait, and the logged, bounded build step.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::ProvisionEnv;

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
