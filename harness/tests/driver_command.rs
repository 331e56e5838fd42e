//! A driver given by command (`faultline run --sdk driver:COMMAND`): any program that speaks
//! `docs/driver-protocol.md` joins a library scenario without a change to faultline. The
//! program here is the upstream Rust SDK's own driver, started by its command line as a user
//! would start theirs; the run must pass and say which build ran.
//!
//! In the harness package because it runs the `faultline` binary cargo builds for this
//! package's tests (`CARGO_BIN_EXE_faultline`).

use std::process::Command;

use anyhow::{ensure, Context, Result};
use faultline::client::Sdk;
use faultline::provision::ProvisionEnv;

#[test]
fn a_driver_given_by_command_runs_a_library_scenario() -> Result<()> {
    let env = ProvisionEnv::from_env();
    // Prepares the upstream SDK's driver in the cache (its venv and driver.py).
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(Sdk::UpstreamRust.pinned_build(&env))?;
    let dir = env.cache_dir.join("drivers/upstream-rust-1.2.1");
    let command = format!(
        "driver:{} -u {}",
        dir.join("venv/bin/python").display(),
        dir.join("driver.py").display()
    );
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/scenarios/wifi-drop.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .arg(&scenario)
        .args(["--sdk", &command])
        .env_remove("FAULTLINE_DRIVER")
        .output()
        .context("running faultline run --sdk driver:…")?;
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.code() == Some(0), "wifi-drop with a driver by command: {said}");
    ensure!(
        said.contains("build  upstream-rust 1.2.1: livekit_ffi") && said.contains("(laptop, peer)"),
        "the run names the build the driver reported: {said}"
    );
    Ok(())
}
