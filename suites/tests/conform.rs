//! The simulation agrees with the real livekit-server: every library scenario that lists both
//! lanes is run on each (the real lane watched until the room is quiet), must pass on the real
//! lane (this is its real-lane run; `scenarios.rs` sweeps its seeds in the simulation), and
//! what each client saw — lifecycle, the others' joins and leaves, which session it ended on, final state,
//! each track's events (published, subscribed, unsubscribed, unpublished, by sid ordinal),
//! every verdict (media's among them) — must be the same (`faultline conform` over the library).
//!
//! One case per file (a check below keeps the list complete); libtest runs two at once.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use faultline::conform::{compare, lists_both_lanes};
use faultline::matrix::scenario_files;
use faultline::scenario::Scenario;
use rstest::rstest;

fn library(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios").join(file)
}

#[rstest]
#[case::expired_token("expired-token.toml")]
#[case::half_open_socket("half-open-socket.toml")]
#[case::media_dead_after_resume("media-dead-after-resume.toml")]
#[case::media_only_loss("media-only-loss.toml")]
#[case::migration("migration.toml")]
#[case::muted_during_outage("muted-during-outage.toml")]
#[case::outage_exhaustion("outage-exhaustion.toml")]
#[case::peer_left_during_outage("peer-left-during-outage.toml")]
#[case::publish_during_reconnect("publish-during-reconnect.toml")]
#[case::publisher_full_reconnect("publisher-full-reconnect.toml")]
#[case::rejoin_while_receiving("rejoin-while-receiving.toml")]
#[case::removed_by_moderator("removed-by-moderator.toml")]
#[case::resume_keeps_tracks("resume-keeps-tracks.toml")]
#[case::server_leave("server-leave.toml")]
#[case::sfu_restart_video("sfu-restart-video.toml")]
#[case::sfu_restart("sfu-restart.toml")]
#[case::train_tunnel("train-tunnel.toml")]
#[case::wifi_drop("wifi-drop.toml")]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_dual_lane_library_scenario_sees_the_same_on_both_lanes(
    #[case] file: &str,
) -> Result<()> {
    let path = library(file);
    let scenario = Scenario::load(&path)?;
    ensure!(lists_both_lanes(&scenario), "{file} no longer lists both lanes: drop its case");
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
    let listed = include_str!("conform.rs");
    let mut dual = 0;
    for file in scenario_files(&library(""))? {
        let scenario = Scenario::load(&file)?;
        if !lists_both_lanes(&scenario) {
            continue;
        }
        dual += 1;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        ensure!(
            listed.contains(&format!("(\"{name}\")")),
            "{name} lists both lanes but has no case here"
        );
    }
    ensure!(dual >= 5, "expected the library's dual-lane scenarios, found {dual}");
    Ok(())
}
