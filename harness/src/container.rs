//! A server run in a container through testcontainers, for [`crate::supervise`]: started on
//! the host's network, its output appended to the server's log, its exit noticed, SIGTERM
//! passed on, and removed when killed.
//!
//! testcontainers' API is async and its `Drop` needs a Tokio runtime, while a supervised
//! process is started, checked and killed from synchronous code (destructors included). So
//! each container is owned by a thread of its own running a single-threaded runtime, and
//! its handle, [`Running`], talks to that thread over a channel.
//!
//! What testcontainers does here: creating and starting the container (pulling the image if
//! the engine lacks it), its output streams, its exit code, removing it. What it cannot do
//! is remove a container after the test process was SIGKILLed: it has no reaper (its
//! `watchdog` feature covers only SIGTERM, SIGINT and SIGQUIT), and `Drop` never runs for
//! the shared server, which lives in a static. The watchdog of [`crate::supervise`] removes
//! the container then, with `docker rm -f <name>`.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use testcontainers::bollard::query_parameters::KillContainerOptions;
use testcontainers::core::client::docker_client_instance;
use testcontainers::core::{AccessMode, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::AsyncWriteExt;

use crate::provision::split_image;

/// How long [`Running::kill`] waits for the container to be removed.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The image reference (`repository:tag`).
    pub image: String,
    /// The container's name, unique on the engine.
    pub name: String,
    /// Bind mounts, as `docker run -v` takes them: `HOST:CONTAINER[:ro]`.
    pub mounts: Vec<String>,
    /// The arguments (the image's entrypoint runs them).
    pub args: Vec<String>,
}

/// What the handle asks of the container's thread.
enum Order {
    /// Send SIGTERM and keep watching.
    Terminate,
    /// Remove the container (SIGKILL) and end.
    Kill,
}

/// A container started by [`Running::start`]; its thread owns it.
#[derive(Debug)]
pub(crate) struct Running {
    orders: tokio::sync::mpsc::UnboundedSender<Order>,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    removed: mpsc::Receiver<()>,
}

impl Running {
    /// Starts `spec` on the host's network, its output appended to `log`. Returns at once:
    /// a container that fails to start is reported as exited with status 125 (as `docker
    /// run` does), the reason in the log.
    pub(crate) fn start(spec: Spec, log: std::fs::File) -> std::io::Result<Running> {
        let (orders, order_rx) = tokio::sync::mpsc::unbounded_channel();
        let (removed_tx, removed) = mpsc::channel();
        let exit = Arc::new(Mutex::new(None));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let exit_slot = Arc::clone(&exit);
        std::thread::Builder::new().name(format!("container {}", spec.name)).spawn(move || {
            let log = tokio::fs::File::from_std(log);
            let status = runtime.block_on(run(spec, log, order_rx));
            *exit_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
            let _ = removed_tx.send(());
        })?;
        Ok(Running { orders, exit, removed })
    }

    /// The exit status, once the container has stopped.
    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the container SIGTERM.
    pub(crate) fn terminate(&self) {
        let _ = self.orders.send(Order::Terminate);
    }

    /// Removes the container (SIGKILL), waiting up to [`REMOVE_TIMEOUT`] for the engine.
    pub(crate) fn kill(&self) {
        let _ = self.orders.send(Order::Kill);
        let _ = self.removed.recv_timeout(REMOVE_TIMEOUT);
    }
}

/// The container's thread: start it, copy its output to `log` until it stops or is told to
/// go, remove it. Returns its exit status.
async fn run(
    spec: Spec,
    mut log: tokio::fs::File,
    mut orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
) -> ExitStatus {
    let (name, tag) = split_image(&spec.image);
    let mut request = GenericImage::new(name, tag)
        .with_network("host")
        .with_container_name(&spec.name)
        .with_cmd(&spec.args);
    for mount in &spec.mounts {
        request = request.with_mount(bind_mount(mount));
    }
    let container = match request.start().await {
        Ok(container) => container,
        Err(e) => {
            let line = format!("faultline: cannot start container {}: {e}\n", spec.name);
            let _ = log.write_all(line.as_bytes()).await;
            return ExitStatus::from_raw(125 << 8);
        }
    };
    let mut stdout = container.stdout(true);
    let mut stderr = container.stderr(true);
    let mut err_log = match log.try_clone().await {
        Ok(file) => file,
        Err(_) => return remove(container).await,
    };
    // Both streams end when the container stops.
    let output = async {
        let _ = tokio::join!(
            tokio::io::copy_buf(&mut stdout, &mut log),
            tokio::io::copy_buf(&mut stderr, &mut err_log)
        );
    };
    tokio::pin!(output);
    loop {
        tokio::select! {
            () = &mut output => break,
            order = orders.recv() => match order {
                Some(Order::Terminate) => signal_term(container.id()).await,
                Some(Order::Kill) | None => return remove(container).await,
            },
        }
    }
    let code = container.exit_code().await.ok().flatten();
    let _ = container.rm().await;
    // An unknown code, or one outside 0..=255, reads as 255.
    let code = code.and_then(|c| u8::try_from(c).ok()).unwrap_or(u8::MAX);
    ExitStatus::from_raw(i32::from(code) << 8)
}

/// Removes the container, killing it; the status of a SIGKILLed process.
async fn remove(container: ContainerAsync<GenericImage>) -> ExitStatus {
    let _ = container.rm().await;
    // A wait status holding only a signal number means "killed by that signal".
    ExitStatus::from_raw(rustix::process::Signal::KILL.as_raw())
}

/// Sends SIGTERM to the container's main process (testcontainers' `stop` would SIGKILL it
/// after a grace period; a drain must take as long as it takes).
async fn signal_term(id: &str) {
    if let Ok(client) = docker_client_instance().await {
        let options = KillContainerOptions { signal: "SIGTERM".into() };
        let _ = client.kill_container(id, Some(options)).await;
    }
}

/// A `docker run -v` value, `HOST:CONTAINER[:ro]`, as a bind mount.
fn bind_mount(spec: &str) -> Mount {
    let mut parts = spec.splitn(3, ':');
    let host = parts.next().unwrap_or_default();
    let inside = parts.next().unwrap_or(host);
    let mode = match parts.next() {
        Some("ro") => AccessMode::ReadOnly,
        _ => AccessMode::ReadWrite,
    };
    Mount::bind_mount(host, inside).with_access_mode(mode)
}

#[cfg(test)]
mod tests {
    use testcontainers::core::AccessMode;

    use super::bind_mount;

    #[test]
    fn docker_run_mount_values_become_bind_mounts() {
        let mount = bind_mount("/tmp/config:/config:ro");
        assert_eq!((mount.source(), mount.target()), (Some("/tmp/config"), Some("/config")));
        assert_eq!(mount.access_mode(), AccessMode::ReadOnly);
        let mount = bind_mount("/data:/data");
        assert_eq!(mount.access_mode(), AccessMode::ReadWrite);
        // A bare path is bound at the same path; nothing here panics on odd input.
        assert_eq!(bind_mount("/dir").target(), Some("/dir"));
        assert_eq!(bind_mount("").source(), Some(""));
    }
}
