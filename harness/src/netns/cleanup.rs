//! Removing a topology: on drop, and — because a SIGKILLed test process runs no destructor —
//! by a watchdog that outlives the process.
//!
//! The watchdog is a tiny `sh` loop, like the one [`crate::supervise`] gives every server,
//! but it watches only the test process: once that is gone it kills whatever still runs in
//! the run's namespaces, deletes them, and deletes the root-side veth (which takes its peer,
//! and the routes through it, along). It runs in a process group of its own and ignores
//! the terminal's signals, so a Ctrl-C that kills the test process does not kill it too.
//!
//! Deleting a name the run planned but never created is harmless, so the guard and the
//! watchdog are set up with every planned name before anything is created: a topology that
//! fails half-way is removed like a whole one.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::command::run_blocking;
use super::error::{NetnsError, Tool};

/// Deletes a run's namespaces and root-side veth when dropped; its watchdog does the same
/// if the process dies first.
#[derive(Debug)]
pub(super) struct Cleanup {
    namespaces: Vec<String>,
    root_link: String,
    watchdog: Mutex<Option<Child>>,
}

/// $1 = the test process, $2 = the root-side veth, the rest = the namespaces.
const WATCHDOG: &str = r#"trap '' HUP INT QUIT TERM
p=$1; l=$2; shift 2
while kill -0 "$p" 2>/dev/null; do sleep 0.5; done
for ns in "$@"; do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
done
ip link del "$l" 2>/dev/null
exit 0"#;

impl Cleanup {
    /// Guards `namespaces` and `root_link` (none of which need exist yet) and starts the
    /// watchdog.
    pub(super) fn start(namespaces: Vec<String>, root_link: String) -> Result<Self, NetnsError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("faultline-netns-watchdog")
            .arg(std::process::id().to_string())
            .arg(&root_link)
            .args(&namespaces)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let watchdog = cmd.spawn().map_err(|source| NetnsError::Spawn {
            command: "sh -c <the namespace watchdog>".into(),
            source,
        })?;
        Ok(Cleanup { namespaces, root_link, watchdog: Mutex::new(Some(watchdog)) })
    }
}

impl Drop for Cleanup {
    /// Stops the watchdog, SIGKILLs what still runs in the namespaces (it could not reach
    /// anything any more), and deletes them and the root-side veth.
    fn drop(&mut self) {
        let watchdog = self.watchdog.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut watchdog) = watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        for namespace in &self.namespaces {
            // A namespace that was never created has no pids and cannot be deleted: both fail.
            if let Ok(pids) = run_blocking(Tool::Ip, &["netns", "pids", namespace]) {
                for pid in pids.split_whitespace() {
                    tracing::debug!(%namespace, pid, "killing a process left in the namespace");
                    let _ = Command::new("kill")
                        .args(["-9", pid])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = run_blocking(Tool::Ip, &["netns", "del", namespace]);
        }
        // Usually gone with the server namespace already; not if a process kept it alive.
        let _ = run_blocking(Tool::Ip, &["link", "del", &self.root_link]);
        tracing::debug!(namespaces = ?self.namespaces, "network namespaces removed");
    }
}
