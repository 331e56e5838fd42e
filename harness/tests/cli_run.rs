//! `faultline run` cannot-run cases: a malformed scenario file and a machine where no
//! livekit-server can be had both exit with status 2 and say what is wrong and how to fix it,
//! before anything is started.

use std::process::Command;

use anyhow::Result;

/// Runs `faultline run` with no programs on PATH and an empty cache; returns the exit code
/// and everything it printed.
fn run(args: &[&str], cache: &std::path::Path) -> Result<(Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .args(args)
        .env("PATH", "")
        .env("FAULTLINE_CACHE", cache)
        .env_remove("LIVEKIT_URL")
        .env_remove("LIVEKIT_SERVER_BIN")
        .env_remove("TOXIPROXY_SERVER_BIN")
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code(), text))
}

#[test]
fn a_malformed_scenario_exits_2_naming_file_and_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "name = \"broken\"\n[[participant]]\nidentity = \"a\"\n[[fault]]\nat = \"1s\"\ntype = \"earthquake\"\n",
    )?;
    let (code, text) = run(&[file.to_str().unwrap_or_default()], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&format!("{}:4:", file.display())), "names file:line: {text}");
    assert!(
        text.contains("earthquake") && text.contains("partition"),
        "says what is allowed: {text}"
    );
    Ok(())
}

#[test]
fn a_missing_scenario_file_exits_2() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (code, text) = run(&["/nonexistent/scenario.toml"], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot read scenario file /nonexistent/scenario.toml"), "{text}");
    Ok(())
}

#[test]
fn no_livekit_server_exits_2_with_the_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/server-leave.toml");
    let (code, text) = run(&[scenario], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot start livekit-server for the scenario"), "{text}");
    assert!(text.contains("fix: install Go"), "says how to fix it: {text}");
    Ok(())
}
