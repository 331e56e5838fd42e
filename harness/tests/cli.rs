//! The `faultline` command reports missing sources and bad input clearly, with a failing exit
//! status: doctor and server when no source works, and `faultline run`'s cannot-run cases (a
//! malformed or missing scenario file, no livekit-server to be had, an SDK that cannot run here
//! or cannot take what the scenario asks, no Redis for a cluster), which exit with status 2 before anything is
//! started; `--seeds`, which reports a scenario's pass rate over many simulation seeds; and
//! `faultline import`, which writes a scenario from field evidence or names what is wrong with it;
//! `faultline matrix --compare`, which says what changed between two saved matrices and fails
//! on a regression; and that the harness's own log stays off the terminal unless `RUST_LOG`
//! asks for it.

use std::process::Command;

use anyhow::{Context, Result};

/// Runs `faultline` with no programs on PATH and an empty cache; returns the exit code and
/// everything it printed.
fn faultline(args: &[&str], cache: &std::path::Path) -> Result<(Option<i32>, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("PATH", "")
        .env("FAULTLINE_CACHE", cache)
        .env_remove("LIVEKIT_URL")
        .env_remove("LIVEKIT_SERVER_BIN")
        .env_remove("TOXIPROXY_SERVER_BIN")
        .env_remove("REDIS_SERVER_BIN")
        .env_remove("RUST_LOG")
        .output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code(), text))
}

#[test]
fn doctor_fails_and_says_how_to_fix_it_when_no_source_works() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (code, text) = faultline(&["doctor"], cache.path())?;
    assert_eq!(code, Some(1), "doctor must fail without any source:\n{text}");
    assert!(text.contains("livekit-server v1.13.5: NO SOURCE"), "{text}");
    assert!(text.contains("toxiproxy-server v2.12.0: NO SOURCE"), "{text}");
    assert!(text.contains("go:           not found on PATH"), "{text}");
    assert!(text.contains("fix: install Go >= 1.26"), "{text}");
    assert!(text.contains("redis-server (the cluster lane): NO SOURCE"), "{text}");
    assert!(
        text.contains("install what is missing (Debian/Ubuntu): ")
            && text.contains("apt-get install chromium python3 python3-venv nodejs nftables")
            && text.contains("{ command -v npm >/dev/null || "),
        "doctor names the install command, npm after Node.js: {text}"
    );
    assert!(text.contains("fix: install it with"), "{text}");
    Ok(())
}

#[test]
fn server_fails_with_the_provisioning_report_when_no_source_works() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let (code, text) = faultline(&["server", "--version", "v1.13.5"], cache.path())?;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("no source could provide livekit-server v1.13.5"), "{text}");
    assert!(text.contains("go not found on PATH"), "{text}");

    let (code, text) = faultline(&["server", "--version", "latest"], cache.path())?;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("version \"latest\" is not of the form v1.2.3"), "{text}");
    Ok(())
}

#[test]
fn a_malformed_scenario_exits_2_naming_file_and_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "name = \"broken\"\n[[participant]]\nidentity = \"a\"\n[[fault]]\nat = \"1s\"\ntype = \"earthquake\"\n",
    )?;
    let (code, text) = faultline(&["run", file.to_str().unwrap_or_default()], dir.path())?;
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
    let (code, text) = faultline(&["run", "/nonexistent/scenario.toml"], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot read scenario file /nonexistent/scenario.toml"), "{text}");
    Ok(())
}

#[test]
fn no_livekit_server_exits_2_with_the_fix() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/server-leave.toml");
    let (code, text) = faultline(&["run", scenario], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot start livekit-server for the scenario"), "{text}");
    assert!(text.contains("fix: install Go"), "says how to fix it: {text}");
    Ok(())
}

#[test]
fn an_sdk_that_cannot_run_here_exits_2_naming_what_to_install() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/server-leave.toml");
    let (code, text) = faultline(&["run", scenario, "--sdk", "js"], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("the js client cannot run here"), "{text}");
    assert!(text.contains("apt-get install nodejs"), "says how to fix it: {text}");
    let (code, text) = faultline(&["run", scenario, "--sdk", "upstream-rust"], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("python3 is not on PATH"), "{text}");
    assert!(text.contains("FAULTLINE_PYTHON"), "says how to fix it: {text}");
    let (code, text) = faultline(&["run", scenario, "--sdk", "swift"], dir.path())?;
    assert_eq!(code, Some(2), "clap refuses an unknown SDK: {text}");
    assert!(text.contains("faultline, upstream-rust, js, go and driver"), "{text}");
    Ok(())
}

#[test]
fn a_fault_an_sdk_cannot_take_exits_2_before_anything_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("delay.toml");
    std::fs::write(
        &file,
        "name = \"delay\"\n[[participant]]\nidentity = \"a\"\nsdk = \"js\"\n[[fault]]\n\
         at = \"1s\"\nfor = \"2s\"\ntype = \"media\"\ndelay = \"200ms\"\n",
    )?;
    let (code, text) = faultline(&["run", file.to_str().unwrap_or_default()], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("runs the js SDK, which cannot take fault #0"), "{text}");
    // Another SDK's delay is the link emulator's, in network namespaces; without `ip` (PATH is
    // empty here) they cannot be had, and the refusal says how to get them.
    assert!(text.contains("network namespaces"), "{text}");
    assert!(text.contains("apt-get install iproute2"), "{text}");
    assert!(!text.contains("livekit-server"), "refused before a server was sought: {text}");

    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "name = \"policy\"\n[[participant]]\nidentity = \"a\"\nsdk = \"upstream-rust\"\n\
         [participant.reconnect]\nattempts = 3\n[[fault]]\nat = \"1s\"\ntype = \"simulate\"\n\
         scenario = \"signal-reconnect\"\n",
    )?;
    let (code, text) = faultline(&["run", file.to_str().unwrap_or_default()], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("cannot take a `reconnect` policy"), "{text}");
    Ok(())
}

#[test]
fn a_cluster_scenario_without_redis_exits_2_naming_the_install_command() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/node-crash.toml");
    let (code, text) = faultline(&["run", library], cache.path())?;
    assert_eq!(code, Some(2), "{text}");
    for needle in ["no source could provide redis-server", "REDIS_SERVER_BIN", "install it with"] {
        assert!(text.contains(needle), "names {needle}: {text}");
    }
    Ok(())
}

/// The library's train-tunnel with the default reconnect policy: its backoff draws run out
/// inside the tunnel for about one seed in four (seeds 1–4 and 6 among the first eight).
fn train_tunnel_with_the_default_policy(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/train-tunnel.toml");
    let text = std::fs::read_to_string(library)?;
    anyhow::ensure!(text.contains("reconnect = { attempts = 20 }\n"), "the override moved");
    let file = dir.join("tunnel-default-policy.toml");
    std::fs::write(&file, text.replace("reconnect = { attempts = 20 }\n", ""))?;
    Ok(file)
}

#[test]
fn seeds_report_the_pass_rate_the_failing_seeds_and_how_to_replay_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = train_tunnel_with_the_default_policy(dir.path())?;
    let file = file.to_str().unwrap_or_default();
    let (code, text) = faultline(&["run", file, "--lane", "sim", "--seeds", "8"], dir.path())?;
    assert_eq!(code, Some(1), "below 99 % must fail:\n{text}");
    assert!(text.contains("scenario `train-tunnel`: 2 of 8 seeds passed (25.0 %)"), "{text}");
    assert!(
        text.contains("FAIL  no-disconnect: laptop: 6 of 8 seeds (1, 2, 3, 4, 5, 6)"),
        "names the failing expectation and its seeds: {text}"
    );
    assert!(
        text.contains(&format!(
            "replay the first failure: faultline run {file} --lane sim --seed 1"
        )),
        "{text}"
    );

    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/train-tunnel.toml");
    let (code, text) = faultline(&["run", library, "--lane", "sim", "--seeds", "8"], dir.path())?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("8 of 8 seeds passed (100.0 %)"), "{text}");
    Ok(())
}

#[test]
fn seeds_on_the_real_lane_exit_2_naming_the_sim_lane() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let library = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/scenarios/train-tunnel.toml");
    let (code, text) = faultline(&["run", library, "--seeds", "8"], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("add `--lane sim`"), "{text}");
    Ok(())
}

/// The simulated seconds a `--summary` file reports.
fn simulated_secs(file: &std::path::Path) -> Result<f64> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    report["simulated_secs"].as_f64().context("simulated_secs")
}

#[test]
fn shards_of_an_exploration_run_its_cases_once_and_merge_into_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let explore = |shard: &str, summary: &str| -> Result<(Option<i32>, String)> {
        let args = ["explore", "--cases", "6", "--seed", "3", "--shard", shard, "--summary"];
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.push(path(summary));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        faultline(&args, dir.path())
    };
    let (code, text) = explore("0/1", "whole.json")?;
    assert_eq!(code, Some(0), "{text}");
    for (shard, file) in [("0/2", "a.json"), ("1/2", "b.json")] {
        let (code, text) = explore(shard, file)?;
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("exploring 3 schedules"), "{text}");
    }
    // Each case's run depends only on the case: the halves add up to the whole.
    let halves =
        simulated_secs(&dir.path().join("a.json"))? + simulated_secs(&dir.path().join("b.json"))?;
    let whole = simulated_secs(&dir.path().join("whole.json"))?;
    assert!((halves - whole).abs() < 1e-6, "halves {halves} s, whole {whole} s");

    let (code, text) =
        faultline(&["explore", "merge", &path("a.json"), &path("b.json")], dir.path())?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("2 shards of exploration seed 3: 6 of 6 cases run"), "{text}");
    assert!(text.contains("0 violation(s)"), "{text}");

    let (code, text) = faultline(&["explore", "merge", &path("a.json")], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("the reports must be shards 0..2 once each; missing 1"), "{text}");
    let (code, text) =
        faultline(&["explore", "merge", &path("a.json"), &path("whole.json")], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("is from another exploration"), "{text}");
    Ok(())
}

#[test]
fn import_writes_a_runnable_scenario_and_names_what_is_wrong_with_bad_evidence() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/field");
    let dump = fixtures.join("wifi-drop.js.webrtc-internals.json");
    let log = fixtures.join("wifi-drop.js.driver.log");
    let out = dir.path().join("imported.toml");
    let (code, text) = faultline(
        &[
            "import",
            &dump.to_string_lossy(),
            &log.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
        ],
        dir.path(),
    )?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 outage(s)") && text.contains("faultline run"), "{text}");
    let written = std::fs::read_to_string(&out)?;
    // The log shows no reconnect through the outage: the media is lost, the signalling held.
    assert!(written.contains("type = \"media\"") && written.contains("[field]"), "{written}");

    // Bad evidence: a truncated dump, an empty file, a missing one, two dumps at once.
    let truncated = dir.path().join("truncated.json");
    std::fs::write(&truncated, "{\"PeerConnections\": {\"8-1\": {\"stats\": ")?;
    let empty = dir.path().join("empty.log");
    std::fs::write(&empty, "")?;
    let cases: [(Vec<String>, &str); 4] = [
        (vec![truncated.to_string_lossy().into()], "not valid JSON (truncated?)"),
        (vec![empty.to_string_lossy().into()], "the file is empty"),
        (vec!["/nonexistent/dump.json".into()], "cannot read /nonexistent/dump.json"),
        (
            vec![dump.to_string_lossy().into(), dump.to_string_lossy().into()],
            "one client's evidence at a time",
        ),
    ];
    for (files, says) in cases {
        let mut args = vec!["import"];
        args.extend(files.iter().map(String::as_str));
        let (code, text) = faultline(&args, dir.path())?;
        assert_eq!(code, Some(1), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?} should say {says:?}: {text}");
    }
    Ok(())
}

#[test]
fn the_harness_log_goes_to_a_file_named_at_the_end_unless_rust_log_asks_for_the_terminal(
) -> Result<()> {
    let cache = tempfile::tempdir()?;
    // `doctor` logs each provisioning source it skips at info.
    let (_, text) = faultline(&["doctor"], cache.path())?;
    assert!(!text.contains("provisioning source skipped"), "on the terminal:\n{text}");
    let named = text
        .lines()
        .find_map(|l| l.strip_prefix("faultline log: "))
        .with_context(|| format!("no log named at the end:\n{text}"))?;
    let log = std::fs::read_to_string(named)?;
    assert!(log.contains("provisioning source skipped"), "{named} holds:\n{log}");

    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("doctor")
        .env("PATH", "")
        .env("FAULTLINE_CACHE", cache.path())
        .env("RUST_LOG", "info")
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("provisioning source skipped"), "RUST_LOG=info:\n{text}");
    assert!(!text.contains("faultline log: "), "{text}");
    Ok(())
}

/// A saved matrix with one js cell per (scenario, failures).
fn saved_matrix(build: &str, rows: &[(&str, &[&str])]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|(scenario, failures)| {
            serde_json::json!({
                "scenario": scenario,
                "cells": [{
                    "state": if failures.is_empty() { "pass" } else { "fail" },
                    "passed": 3 - failures.len(), "total": 3, "failures": failures,
                    "detect": 0.5, "heal_to_reconnected": 2.0,
                }],
            })
        })
        .collect();
    serde_json::json!({"format": 1, "sdks": ["js"], "builds": [[build]], "rows": rows}).to_string()
}

#[test]
fn matrix_compare_names_what_changed_and_fails_on_a_regression() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: String| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };
    let old = write("old.json", saved_matrix("livekit-client 2.22.4", &[("a", &[]), ("b", &[])]))?;
    let same =
        write("same.json", saved_matrix("livekit-client 2.23.0", &[("a", &[]), ("b", &[])]))?;
    let worse = write(
        "worse.json",
        saved_matrix("livekit-client 2.23.0", &[("a", &[]), ("b", &["media-flowing: x"])]),
    )?;
    let (code, text) = faultline(&["matrix", "--compare", &old, &same], dir.path())?;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("js: livekit-client 2.22.4 → livekit-client 2.23.0"), "{text}");
    assert!(text.contains("2 cells compared: 0 regressed"), "{text}");
    let (code, text) = faultline(&["matrix", "--compare", &old, &worse], dir.path())?;
    assert_eq!(code, Some(1), "a regression fails: {text}");
    assert!(
        text.contains(
            "| b | js | **REGRESSED** pass 3/3 → fail 2/3; now fails: media-flowing: x |"
        ),
        "{text}"
    );
    let broken = write("broken.json", "{\"format\": 1}".into())?;
    let (code, text) = faultline(&["matrix", "--compare", &old, &broken], dir.path())?;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("is not a matrix file written by `faultline matrix`"), "{text}");
    Ok(())
}
