//! The simulation agrees with the real livekit-server: every library scenario that lists both
//! lanes is run on each (the real lane watched until the room is quiet), must pass on the real
//! lane (this is its real-lane run; `scenarios.rs` sweeps its seeds in the simulation), and
//! what each client saw — lifecycle, the others' joins and leaves, which session it ended on, final state,
//! each track's events (published, subscribed, unsubscribed, unpublished, by sid ordinal),
//! every verdict (media's among them) — must be the same (`faultline conform` over the library).
//!
//! One test runs every such file, six at a time (their time is their timelines, not the CPU).

mod at_once;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use faultline::conform::{compare, lists_both_lanes};
use faultline::matrix::scenario_files;
use faultline::scenario::Scenario;

fn library(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios").join(file)
}

/// Every library file that lists both lanes (a check below keeps the list complete).
const DUAL_LANE: &[&str] = &[
    "expired-token.toml",
    "half-open-socket.toml",
    "media-dead-after-resume.toml",
    "media-only-loss.toml",
    "migration.toml",
    "muted-during-outage.toml",
    "outage-exhaustion.toml",
    "peer-left-during-outage.toml",
    "publish-during-reconnect.toml",
    "publisher-full-reconnect.toml",
    "rejoin-while-receiving.toml",
    "removed-by-moderator.toml",
    "resume-keeps-tracks.toml",
    "server-leave.toml",
    "sfu-restart-video.toml",
    "sfu-restart.toml",
    "train-tunnel.toml",
    "wifi-drop.toml",
];

/// How many files run at once. A comparison waits on its real-lane timeline almost all the
/// time (faultline-sdk in process, one livekit-server): with two at once the machine was 95 %
/// idle (median of `vmstat 5`; 23 s of CPU in 185 s), so the files run six at a time in one
/// test.
const AT_ONCE: usize = 6;

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 4))]
async fn each_dual_lane_library_scenario_sees_the_same_on_both_lanes() -> Result<()> {
    at_once::check_each(
        "dual-lane library files",
        DUAL_LANE,
        AT_ONCE,
        |file| (*file).to_owned(),
        |file| sees_the_same_on_both_lanes(file),
    )
    .await
}

/// Runs `file` on both lanes: it must pass on the real one and agree with the simulation.
async fn sees_the_same_on_both_lanes(file: &str) -> Result<()> {
    let path = library(file);
    let scenario = Scenario::load(&path)?;
    ensure!(
        lists_both_lanes(&scenario),
        "{file} no longer lists both lanes: drop it from DUAL_LANE"
    );
    let comparison = compare(&scenario, &path, 1).await?;
    // The real lane's run is this file's run on the real server (scenarios.rs leaves it to
    // this test): its verdicts must pass, as well as agree with the simulation's.
    ensure!(
        comparison.real.passed(),
        "{file} fails on the real lane:\n{}",
        comparison.real.summary()
    );
    match comparison.difference {
        Some(difference) => Err(anyhow::anyhow!("the lanes differ on {file}: {difference}")),
        None => Ok(()),
    }
}

#[test_log::test]
fn every_dual_lane_library_file_has_a_case() -> Result<()> {
    let mut dual = 0;
    for file in scenario_files(&library(""))? {
        let scenario = Scenario::load(&file)?;
        if !lists_both_lanes(&scenario) {
            continue;
        }
        dual += 1;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        ensure!(
            DUAL_LANE.contains(&name.as_str()),
            "{name} lists both lanes but is not in DUAL_LANE"
        );
    }
    ensure!(dual >= 5, "expected the library's dual-lane scenarios, found {dual}");
    Ok(())
}
