//! Running the short commands provisioning asks questions of (a version, an engine), with
//! the [`ProvisionEnv`]'s `PATH` and a bound.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::ProvisionEnv;

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

pub(super) fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)")
}

pub(super) fn is_executable(path: &Path) -> bool {
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
