//! Running a server process (livekit-server, toxiproxy) or a client driver for as long as a
//! test needs it, and never longer.
//!
//! The process writes to a log file under the target directory
//! (`target/faultline-logs/<test binary>/…`), is SIGKILLed when its handle is dropped, and
//! cannot outlive the test process even when that process is itself SIGKILLed (then no
//! destructor runs). For the last guarantee each process gets a watchdog: a tiny `sh` loop
//! that polls, every 0.5 s, whether the test process is still alive, and SIGKILLs the server
//! once it is not. The watchdog runs in a process group of its own and ignores the terminal's
//! signals, so the Ctrl-C or `timeout` that ends the test process does not end it too. A server in a container (`container.rs`, run through
//! testcontainers) is no child of ours: its watchdog watches only the test process and then
//! removes the container with `docker rm -f`, which testcontainers has no way to do after a
//! SIGKILL.
//!
//! Why a watchdog rather than `prctl(PR_SET_PDEATHSIG)`: that needs `unsafe` in `pre_exec`
//! (the workspace forbids unsafe code), is Linux-only, and fires when the spawning *thread*
//! exits — test harness threads come and go, which would kill shared servers early. The
//! watchdog needs only POSIX `sh`, `kill` and `sleep`, so it works on Linux and macOS, and
//! costs one sleeping shell per server.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::container::{Running, Spec};

/// How to start one server process.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The program to execute (the server binary; for a container, its image, for messages).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The container to run instead of a program, and the `docker` CLI its watchdog removes
    /// it with.
    pub container: Option<(Spec, PathBuf)>,
    /// Environment variables to set for it.
    pub env: Vec<(OsString, OsString)>,
    /// Run it in a process group of its own and kill the whole group, so that whatever it
    /// starts (a driver's browser) goes with it.
    pub group: bool,
}

impl Launch {
    /// Runs `program` with `args`, nothing else.
    pub(crate) fn new(program: PathBuf, args: Vec<OsString>) -> Self {
        Launch { program, args, container: None, env: Vec::new(), group: false }
    }

    /// Runs `image` with `args` in a container named `name` through testcontainers: on the
    /// host's network (so a loopback-only configuration means the same thing; on macOS that
    /// needs Docker Desktop's host networking, 4.34 or later), with `mounts` (`-v` values)
    /// bound in; removed when it stops or is killed, and by its watchdog with `docker rm -f`
    /// through the `docker` CLI if the test process dies first.
    pub(crate) fn container(
        docker: &Path,
        name: String,
        mounts: &[String],
        image: &str,
        args: Vec<OsString>,
    ) -> Self {
        let spec = Spec {
            image: image.to_string(),
            name,
            mounts: mounts.to_vec(),
            args: args.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        };
        Launch {
            container: Some((spec, docker.to_path_buf())),
            ..Launch::new(PathBuf::from(image), args)
        }
    }
}

/// A running (or exited) server process, with its watchdog.
#[derive(Debug)]
pub(crate) struct Process {
    runs: Runs,
    watchdog: Option<Child>,
    group: bool,
    killed_by_us: bool,
    /// Asked to stop with SIGTERM (it may still be running, winding down).
    terminated_by_us: bool,
}

/// What a [`Process`] runs.
#[derive(Debug)]
enum Runs {
    /// A child process of ours.
    Child(Child),
    /// A container, owned by its thread.
    Container(Running),
}

impl Process {
    /// Starts `launch` with stdout and stderr appended to `log_path`.
    pub(crate) fn spawn(launch: &Launch, log_path: &Path) -> std::io::Result<Process> {
        let log = open_log(launch, log_path)?;
        let stdout = Stdio::from(log.try_clone()?);
        Self::start(launch, Stdio::null(), stdout, log)
    }

    /// Starts `launch` with its stdin and stdout piped to the caller (a driver speaking a
    /// line protocol) and its stderr appended to `log_path`.
    pub(crate) fn spawn_piped(
        launch: &Launch,
        log_path: &Path,
    ) -> std::io::Result<(Process, std::process::ChildStdin, std::process::ChildStdout)> {
        let log = open_log(launch, log_path)?;
        let mut process = Self::start(launch, Stdio::piped(), Stdio::piped(), log)?;
        let (stdin, stdout) = match &mut process.runs {
            Runs::Child(child) => (child.stdin.take(), child.stdout.take()),
            Runs::Container(_) => (None, None),
        };
        match (stdin, stdout) {
            (Some(stdin), Some(stdout)) => Ok((process, stdin, stdout)),
            _ => Err(std::io::Error::other("the child's pipes were not created")),
        }
    }

    fn start(
        launch: &Launch,
        stdin: Stdio,
        stdout: Stdio,
        log: std::fs::File,
    ) -> std::io::Result<Process> {
        let (runs, target) = match &launch.container {
            Some((spec, _)) => (Runs::Container(Running::start(spec.clone(), log)?), String::new()),
            None => {
                let mut cmd = Command::new(&launch.program);
                cmd.args(&launch.args).stdin(stdin).stdout(stdout).stderr(Stdio::from(log));
                for (key, value) in &launch.env {
                    cmd.env(key, value);
                }
                if launch.group {
                    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
                }
                let child = cmd.spawn()?;
                let target =
                    if launch.group { format!("-{}", child.id()) } else { child.id().to_string() };
                (Runs::Child(child), target)
            }
        };
        let mut process = Process {
            runs,
            watchdog: None,
            group: launch.group,
            killed_by_us: false,
            terminated_by_us: false,
        };
        let remove_container = launch.container.as_ref().map(|(spec, docker)| (docker, &spec.name));
        match spawn_watchdog(std::process::id(), &target, remove_container) {
            Ok(watchdog) => process.watchdog = Some(watchdog),
            Err(e) => {
                process.kill();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot start the watchdog shell (sh): {e}"),
                ));
            }
        }
        Ok(process)
    }

    /// The process id (`None` for a container: its processes are the engine's).
    pub(crate) fn pid(&self) -> Option<u32> {
        match &self.runs {
            Runs::Child(child) => Some(child.id()),
            Runs::Container(_) => None,
        }
    }

    /// The exit status, if the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        match &mut self.runs {
            Runs::Child(child) => child.try_wait().ok().flatten(),
            Runs::Container(container) => container.exit_status(),
        }
    }

    /// SIGKILLs the process (its group) and reaps it, or removes its container; stops the
    /// watchdog.
    pub(crate) fn kill(&mut self) {
        self.killed_by_us = true;
        match &mut self.runs {
            Runs::Child(child) => {
                if self.group {
                    // The group's id is the leader's pid (it was started with process_group(0)).
                    let leader =
                        i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
                    if let Some(group) = leader {
                        let _ = rustix::process::kill_process_group(
                            group,
                            rustix::process::Signal::KILL,
                        );
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Runs::Container(container) => container.kill(),
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Process {
    /// Sends SIGTERM (to the group, for a grouped launch; to a container's main process):
    /// the program winds down in its own time — livekit-server drains, waiting for its
    /// participants to leave. The watchdog stays, so the process still cannot outlive the
    /// test process.
    pub(crate) fn terminate(&mut self) {
        if self.exit_status().is_some() {
            return;
        }
        self.terminated_by_us = true;
        let child = match &self.runs {
            Runs::Child(child) => child,
            Runs::Container(container) => return container.terminate(),
        };
        let Some(pid) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw)
        else {
            return;
        };
        let _ = if self.group {
            rustix::process::kill_process_group(pid, rustix::process::Signal::TERM)
        } else {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        };
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens `log_path` for appending and notes the start of `launch` in it.
fn open_log(launch: &Launch, log_path: &Path) -> std::io::Result<std::fs::File> {
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    writeln!(
        log,
        "---- faultline: starting {} {}",
        launch.program.display(),
        launch.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    )?;
    Ok(log)
}

/// A watchdog for `target` while `watched` (the test process) lives. `target` is a pid,
/// `-pgid` for a whole process group, or empty for a container, which `remove_container`
/// (the `docker` CLI and the container's name) names instead.
fn spawn_watchdog(
    watched: u32,
    target: &str,
    remove_container: Option<(&PathBuf, &String)>,
) -> std::io::Result<Child> {
    // $1 = the test process, $2 = the server (or -group, or nothing); the rest is a command
    // run once the test process is gone (docker rm -f <name>).
    // It ignores the terminal's signals and runs in a process group of its own: a Ctrl-C (to
    // the foreground group) or a `timeout` (SIGTERM to the group) that stops the test process
    // must not stop the watchdog that cleans up after it.
    const SCRIPT: &str = r#"trap '' HUP INT QUIT TERM
p=$1; c=$2; shift 2
while [ -z "$c" ] || kill -0 "$c" 2>/dev/null; do
  if ! kill -0 "$p" 2>/dev/null; then
    if [ -n "$c" ]; then kill -9 "$c" 2>/dev/null; fi
    "$@"; exit 0
  fi
  sleep 0.5
done"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(SCRIPT).arg("faultline-watchdog").arg(watched.to_string()).arg(target);
    if let Some((docker, name)) = remove_container {
        cmd.arg(docker).args(["rm", "-f"]).arg(name);
    } else {
        cmd.arg("true");
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
}

/// A process slot shared between a server handle and the clients that talk to it, so that
/// a client whose request fails can tell "the server died" (with its log) from other errors.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    program: &'static str,
    slot: Arc<Mutex<Option<Process>>>,
    log_path: PathBuf,
}

impl Liveness {
    pub(crate) fn new(program: &'static str, process: Process, log_path: PathBuf) -> Self {
        Self { program, slot: Arc::new(Mutex::new(Some(process))), log_path }
    }

    /// Locks the process slot (a poisoned lock is still usable: the slot holds no invariant
    /// a panic could break).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Process>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// SIGKILLs the process if it runs. Clients holding a clone then report it as killed.
    pub(crate) fn kill(&self) {
        if let Some(process) = self.lock().as_mut() {
            process.kill();
        }
    }

    /// SIGTERMs the process if it runs ([`Process::terminate`]).
    pub(crate) fn terminate(&self) {
        if let Some(process) = self.lock().as_mut() {
            process.terminate();
        }
    }

    /// The program (`livekit-server`, `toxiproxy-server`).
    pub(crate) fn program(&self) -> &'static str {
        self.program
    }

    /// The log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The pid of the running process, if one runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut slot = self.lock();
        let process = slot.as_mut()?;
        process.exit_status().is_none().then(|| process.pid()).flatten()
    }

    /// Ok when the process is running; otherwise a report with its exit status and log.
    pub(crate) fn check(&self) -> Result<(), ProcessDied> {
        let mut slot = self.lock();
        let (pid, status) = match slot.as_mut() {
            None => (None, "was never started".to_string()),
            Some(p) => match p.exit_status() {
                None => return Ok(()),
                Some(status) if p.killed_by_us => {
                    (p.pid(), format!("was killed by faultline ({status})"))
                }
                Some(status) if p.terminated_by_us => {
                    (p.pid(), format!("exited after faultline sent it SIGTERM ({status})"))
                }
                Some(status) => (p.pid(), format!("exited unexpectedly ({status})")),
            },
        };
        Err(ProcessDied {
            program: self.program,
            pid,
            status,
            log_path: self.log_path.clone(),
            tail: tail(&self.log_path, 20),
        })
    }
}

/// A server process that should be running is not.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ProcessDied {
    /// The program (`livekit-server`, `toxiproxy-server`).
    pub program: &'static str,
    /// Its pid, when it had started.
    pub pid: Option<u32>,
    /// What happened to it.
    pub status: String,
    /// Its log file.
    pub log_path: PathBuf,
    /// The last lines of its log.
    pub tail: String,
}

impl fmt::Display for ProcessDied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pid = self.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        write!(
            f,
            "{}{pid} is not running: it {}; log: {}\nlast log lines:\n{}",
            self.program,
            self.status,
            self.log_path.display(),
            self.tail
        )
    }
}

/// Polls `probe` every 50 ms until it returns true, the process exits, or `timeout` passes.
pub(crate) async fn wait_ready<F, Fut>(
    liveness: &Liveness,
    timeout: Duration,
    mut probe: F,
) -> Result<(), NotReady>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Err(died) = liveness.check() {
            return Err(NotReady::Exited(died));
        }
        if probe().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NotReady::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why [`wait_ready`] gave up.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// The process exited first.
    Exited(ProcessDied),
    /// The probe never succeeded within the bound.
    Timeout,
}

/// The last `lines` lines of a log file (or a note saying it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The directory for this process's server logs:
/// `<target>/faultline-logs/<executable name without its hash>`.
pub fn log_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "faultline".into());
    // Test binaries are named `<name>-<16 hex digits>`.
    let name = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    };
    target_dir(exe.as_deref()).join("faultline-logs").join(name)
}

/// `CARGO_TARGET_DIR`, else the nearest ancestor of the executable holding Cargo's
/// `CACHEDIR.TAG`, else the system temp dir.
fn target_dir(exe: Option<&Path>) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    exe.and_then(|exe| exe.ancestors().find(|dir| dir.join("CACHEDIR.TAG").is_file()))
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// A log file name for a server started by the current test: the test's name (libtest
/// names each test thread after the test) or `main`, the program, and a distinguishing id.
pub(crate) fn log_file_name(program: &str, id: impl fmt::Display) -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main").replace("::", ".");
    let test: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    format!("{test}.{program}.{id}.log")
}

/// Whether a process with this pid still exists, asked of `ps` (a zombie counts as gone).
/// For tests that check a server process is gone, however it was started.
pub fn process_alive(pid: u32) -> bool {
    let out =
        std::process::Command::new("ps").args(["-o", "stat=", "-p", &pid.to_string()]).output();
    match out {
        Ok(out) => {
            let stat = String::from_utf8_lossy(&out.stdout);
            let stat = stat.trim();
            !stat.is_empty() && !stat.starts_with('Z')
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    use super::spawn_watchdog;

    #[test_log::test]
    fn a_containers_watchdog_removes_it_once_the_test_process_is_gone() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let called = dir.path().join("called");
        let docker = dir.path().join("docker");
        std::fs::write(&docker, format!("#!/bin/sh\necho \"$@\" > '{}'\n", called.display()))?;
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755))?;
        // Stands in for the test process; reaped below, so it is gone, not a zombie.
        let mut test_process = std::process::Command::new("sleep").arg("0.3").spawn()?;
        let name = "faultline-livekit-1-2".to_string();
        let mut watchdog = spawn_watchdog(test_process.id(), "", Some((&docker, &name)))?;
        std::thread::sleep(Duration::from_millis(100));
        anyhow::ensure!(!called.exists(), "the container was removed while the test ran");
        test_process.wait()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while watchdog.try_wait()?.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "the watchdog did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(&called)?, "rm -f faultline-livekit-1-2\n");
        Ok(())
    }
}
