//! Running `ip`, `nft` and `tc`, and the up-front check that they, root and Linux are here.
//!
//! Every change to a namespace is one of these commands: what faultline did can be redone
//! or inspected by hand with the same command line, which errors quote.

use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;

use super::error::{NetnsError, Tool};

/// Runs `tool args…`, returning its stdout; a non-zero exit is an error quoting stderr.
pub(super) async fn run(tool: Tool, args: &[&str]) -> Result<String, NetnsError> {
    run_with_input(tool, args, None).await
}

/// Runs `tool args…` with `input` on its stdin (for `nft -f -`).
pub(super) async fn run_with_input(
    tool: Tool,
    args: &[&str],
    input: Option<&str>,
) -> Result<String, NetnsError> {
    let mut cmd = tokio::process::Command::new(tool.program());
    cmd.args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| spawn_error(tool, args, e))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).await.map_err(|e| spawn_error(tool, args, e))?;
    }
    let output = child.wait_with_output().await.map_err(|e| spawn_error(tool, args, e))?;
    checked(tool, args, output)
}

/// [`run`] for places that cannot await (destructors, the availability check).
pub(super) fn run_blocking(tool: Tool, args: &[&str]) -> Result<String, NetnsError> {
    let output = std::process::Command::new(tool.program())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(tool, args, e))?;
    checked(tool, args, output)
}

fn command_line(tool: Tool, args: &[&str]) -> String {
    std::iter::once(tool.program()).chain(args.iter().copied()).collect::<Vec<_>>().join(" ")
}

fn spawn_error(tool: Tool, args: &[&str], source: std::io::Error) -> NetnsError {
    if source.kind() == std::io::ErrorKind::NotFound {
        NetnsError::MissingTool { tool }
    } else {
        NetnsError::Spawn { command: command_line(tool, args), source }
    }
}

fn checked(tool: Tool, args: &[&str], output: Output) -> Result<String, NetnsError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command: command_line(tool, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// Whether this machine can build topologies: Linux, root, and `ip`, `nft`, `tc` on PATH.
pub(super) fn check_available() -> Result<(), NetnsError> {
    check_root()?;
    for (tool, version_flag) in [(Tool::Ip, "-V"), (Tool::Nft, "--version"), (Tool::Tc, "-V")] {
        run_blocking(tool, &[version_flag])?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn check_root() -> Result<(), NetnsError> {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(NetnsError::NotRoot { uid: uid.as_raw() })
    }
}

#[cfg(not(target_os = "linux"))]
fn check_root() -> Result<(), NetnsError> {
    Err(NetnsError::NotLinux { os: std::env::consts::OS })
}
