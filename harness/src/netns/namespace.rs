//! One network namespace of a topology, and the two ways of running something inside it:
//! a child process behind `ip netns exec <name>` (external clients, livekit-server), or a
//! closure on a thread that has entered the namespace (sockets made there stay there, so a
//! test or faultline-sdk in this process can use the namespace's network).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::sync::Arc;

use super::cleanup::Cleanup;
use super::error::NetnsError;
use crate::supervise::Launch;

/// A network namespace of a [`Topology`](super::Topology). A clone keeps the whole topology
/// alive: it is removed when the topology and every clone of its namespaces are dropped.
#[derive(Clone)]
pub struct Namespace {
    name: String,
    _alive: Arc<Cleanup>,
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&self.name).finish()
    }
}

impl Namespace {
    pub(super) fn new(name: String, alive: Arc<Cleanup>) -> Self {
        Namespace { name, _alive: alive }
    }

    /// Its name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The words that run a command inside it: `ip netns exec <name>`; append the program
    /// and its arguments.
    pub fn exec_prefix(&self) -> [OsString; 4] {
        ["ip".into(), "netns".into(), "exec".into(), self.name.clone().into()]
    }

    /// A command that runs `program` inside the namespace (add arguments as usual).
    pub fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        let [ip, rest @ ..] = self.exec_prefix();
        let mut cmd = std::process::Command::new(ip);
        cmd.args(rest).arg(program);
        cmd
    }

    /// `launch` run inside the namespace: its program and arguments behind
    /// [`Namespace::exec_prefix`] (`ip netns exec` execs, so the pid is the program's own),
    /// its environment and process group kept. Not for a container: the Docker engine would
    /// start it in its own namespace, not this one.
    pub(crate) fn wrap(&self, launch: Launch) -> Launch {
        let [ip, rest @ ..] = self.exec_prefix();
        let mut args: Vec<OsString> = rest.into();
        args.push(launch.program.into_os_string());
        args.extend(launch.args);
        Launch { program: ip.into(), args, ..launch }
    }

    /// Runs `f` on a new thread that has entered the namespace, and returns what it returns.
    /// Sockets `f` creates belong to the namespace for good and can be used from any thread
    /// afterwards (hand a `std::net` socket to tokio with `from_std` after
    /// `set_nonblocking(true)`). A panic in `f` is resumed here.
    #[cfg(target_os = "linux")]
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        use std::os::fd::AsFd;
        let enter_error =
            |source: std::io::Error| NetnsError::Enter { namespace: self.name.clone(), source };
        let file = std::fs::File::open(std::path::Path::new("/run/netns").join(&self.name))
            .map_err(enter_error)?;
        let joined = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(std::io::Error::from)?;
                    Ok(f())
                })
                .join()
        });
        match joined {
            Ok(result) => result.map_err(enter_error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Namespaces are Linux-only: always [`NetnsError::NotLinux`].
    #[cfg(not(target_os = "linux"))]
    pub fn run<T: Send>(&self, _f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        Err(NetnsError::NotLinux { os: std::env::consts::OS })
    }
}
