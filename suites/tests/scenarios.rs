//! The scenario library (`fixtures/scenarios/`) on the real lane, each file judged by its own
//! expectations and the invariants (the files that list both lanes are run on the real lane
//! by `conform.rs`, which holds them to that too), and in the simulation over many seeds; what the client does under each toxiproxy toxic in each
//! direction and under each mode of the killable proxy, written as small scenarios and run by
//! the same runner; that a scenario whose expectation is wrong fails with expected, seen and
//! the trace; that a run watches an episode to its end, not just for `settle`; and that an
//! exhaustion under a partition is judged by the delays its policy drew.

mod at_once;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::client::ClientEvent;
use faultline::scenario::format::Lane;
use faultline::scenario::{run_real, sweep, RunOptions, RunRecord, Scenario, REQUIRED_PASS_RATE};
use rstest::rstest;

fn library(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios").join(file)
}

/// Runs a scenario file and returns its record.
async fn run_file(path: &Path) -> Result<RunRecord> {
    let scenario = Scenario::load(path)?;
    run_real(&scenario, path, RunOptions::default())
        .await
        .with_context(|| format!("running {}", path.display()))
}

/// Runs scenario text (named `name` in messages) and returns its record.
async fn run_text(name: &str, text: &str) -> Result<RunRecord> {
    let path = PathBuf::from(format!("<{name}>"));
    let scenario = Scenario::parse(text, &path)?;
    Ok(run_real(&scenario, &path, RunOptions::default()).await?)
}

fn passed(record: &RunRecord) -> Result<()> {
    ensure!(record.passed(), "{}", record.summary());
    Ok(())
}

/// The library files that list only the real lane. The files that list the sim lane too are
/// run on the real lane by `conform.rs`, which requires them to pass there as well as to agree
/// with the simulation.
const REAL_ONLY: &[&str] = &[
    "cellular-handover.toml",
    "lossy-3g.toml",
    "middlebox-rst.toml",
    "latency-spike-during-resume.toml",
    "node-crash.toml",
    "signal-node-crash.toml",
    "node-drain.toml",
    "redis-outage.toml",
    "udp-blocked-from-join.toml",
    "udp-blocked-mid-call.toml",
    "force-tcp.toml",
    "force-tls.toml",
    "cellular-drive.toml",
    "unmute-during-republish.toml",
];

/// How many real-only files run at once: their time is their timelines (faultline-sdk in
/// process; the conform suite's comparisons left the machine 87 % idle six at a time), but
/// four of these are cluster files (two nodes and Redis each), so four at a time.
const REAL_AT_ONCE: usize = 4;

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 4))]
async fn each_real_only_library_scenario_passes_on_the_real_lane() -> Result<()> {
    at_once::check_each(
        "real-only library files",
        REAL_ONLY,
        REAL_AT_ONCE,
        |file| (*file).to_owned(),
        |file| async move { passed(&run_file(&library(file)).await?) },
    )
    .await
}

/// The library scenarios that list the sim lane, in the simulation (same expectations), for
/// the seeds a user would get: each must pass for at least 99 % of the first [`SIM_SEEDS`]
/// ([`MEDIA_SIM_SEEDS`] for one with tracks).
#[rstest]
#[case::sim_train_tunnel("train-tunnel.toml")]
#[case::sim_sfu_restart("sfu-restart.toml")]
#[case::sim_server_leave("server-leave.toml")]
#[case::sim_migration("migration.toml")]
#[case::sim_removed_by_moderator("removed-by-moderator.toml")]
#[case::sim_wifi_drop("wifi-drop.toml")]
#[case::sim_media_only_loss("media-only-loss.toml")]
#[case::sim_half_open_socket("half-open-socket.toml")]
#[case::sim_outage_exhaustion("outage-exhaustion.toml")]
#[case::sim_peer_left_during_outage("peer-left-during-outage.toml")]
#[case::sim_rejoin_while_receiving("rejoin-while-receiving.toml")]
#[case::sim_expired_token("expired-token.toml")]
#[case::sim_publisher_full_reconnect("publisher-full-reconnect.toml")]
#[case::sim_sfu_restart_video("sfu-restart-video.toml")]
#[case::sim_media_dead_after_resume("media-dead-after-resume.toml")]
#[case::sim_resume_keeps_tracks("resume-keeps-tracks.toml")]
#[case::sim_muted_during_outage("muted-during-outage.toml")]
#[case::sim_publish_during_reconnect("publish-during-reconnect.toml")]
fn library_scenario_passes_on_the_sim_lane(#[case] file: &str) -> Result<()> {
    let path = library(file);
    let scenario = Scenario::load(&path)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let has_media = scenario.participants.iter().any(|p| !p.tracks.is_empty());
    let seeds = if has_media { MEDIA_SIM_SEEDS } else { SIM_SEEDS };
    let swept = sweep(&scenario, &path, 1..seeds + 1, threads)?;
    ensure!(
        swept.pass_rate() >= REQUIRED_PASS_RATE,
        "{file} passed for {} of {} seeds; failures by expectation (seeds): {:?}; errors: {:?}",
        swept.passed,
        swept.runs,
        swept.failures,
        swept.errors
    );
    Ok(())
}

/// How many seeds each sim-lane library scenario is swept over here (`faultline run --lane
/// sim --seeds 1000` gives the figures in the README).
const SIM_SEEDS: u64 = 100;
/// The same for a scenario with tracks: the simulation then carries every frame, four times
/// the work of a run without, so fewer seeds keep the suite's time.
const MEDIA_SIM_SEEDS: u64 = 25;

#[test_log::test]
fn every_library_file_is_in_the_suite_for_each_lane_it_lists() -> Result<()> {
    let listed = include_str!("scenarios.rs");
    for entry in std::fs::read_dir(library(""))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        let scenario = Scenario::load(&path)?;
        let dual = scenario.lanes.contains(&Lane::Sim) && scenario.lanes.contains(&Lane::Real);
        for lane in &scenario.lanes {
            // Sim-lane cases are named `sim_…`; a real-only file is in REAL_ONLY, and a
            // dual-lane file's real run is conform.rs's (its DUAL_LANE).
            let (found, there) = match lane {
                Lane::Sim => (
                    listed.lines().any(|line| {
                        line.starts_with("#[case::sim_")
                            && line.ends_with(&format!("(\"{name}\")]"))
                    }),
                    "a #[case::sim_…] here",
                ),
                Lane::Real if dual => (
                    include_str!("conform.rs").contains(&format!("    \"{name}\",\n")),
                    "a line in conform.rs's DUAL_LANE",
                ),
                Lane::Real => (REAL_ONLY.contains(&name.as_str()), "a line in REAL_ONLY here"),
            };
            ensure!(found, "{name} lists the {lane} lane but has no {there}");
        }
    }
    Ok(())
}

/// One participant (plus a peer), one fault from 1 s for `lasts`, and `expect` as TOML.
fn focused(name: &str, fault: &str, lasts: &str, expect: &str) -> String {
    format!(
        r#"name = "{name}"
lanes = ["real"]
settle = "2s"
[[participant]]
identity = "client"
[[participant]]
identity = "peer"
[[fault]]
at = "1s"
for = "{lasts}"
target = "client"
{fault}
{expect}
[[expect]]
type = "final-state"
participant = "client"
state = "connected"
"#
    )
}

const UNNOTICED: &str = "[[expect]]\ntype = \"no-reconnect\"\nparticipant = \"client\"\n";

fn recovers(within: &str) -> String {
    format!(
        "[[expect]]\ntype = \"reconnected\"\nparticipant = \"client\"\nwithin = \"{within}\"\n\
         [[expect]]\ntype = \"no-disconnect\"\nparticipant = \"client\"\n"
    )
}

/// Each toxic in each direction on the client's signalling connection, and what a correct
/// client does about it: delays, throttling, slicing and a slow close leave a working
/// connection working (nothing to notice); a black hole (`timeout` 0) is caught by the ping
/// timeout; a reset, or a connection closed after a few bytes, is noticed at once; in both
/// cases the client is back soon after the toxic goes.
#[rstest]
#[case::latency_up("latency", "upstream")]
#[case::latency_down("latency", "downstream")]
#[case::bandwidth_up("bandwidth", "upstream")]
#[case::bandwidth_down("bandwidth", "downstream")]
#[case::slow_close_up("slow_close", "upstream")]
#[case::slow_close_down("slow_close", "downstream")]
#[case::slicer_up("slicer", "upstream")]
#[case::slicer_down("slicer", "downstream")]
#[case::timeout_up("timeout", "upstream")]
#[case::timeout_down("timeout", "downstream")]
#[case::reset_peer_up("reset_peer", "upstream")]
#[case::reset_peer_down("reset_peer", "downstream")]
#[case::limit_data_up("limit_data", "upstream")]
#[case::limit_data_down("limit_data", "downstream")]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_toxic_on_signalling(#[case] kind: &str, #[case] stream: &str) -> Result<()> {
    let (toxic, lasts, expect) = match kind {
        "latency" => ("latency = \"400ms\", jitter = \"100ms\"", "4s", UNNOTICED.to_owned()),
        "bandwidth" => ("rate_kbps = 4", "4s", UNNOTICED.to_owned()),
        "slow_close" => ("delay = \"3s\"", "4s", UNNOTICED.to_owned()),
        "slicer" => {
            ("average_size = 16, size_variation = 8, delay = \"2ms\"", "4s", UNNOTICED.to_owned())
        }
        "timeout" => ("timeout = \"0ms\"", "20s", recovers("15s")),
        "reset_peer" => ("timeout = \"0ms\"", "2s", recovers("8s")),
        // Long enough for the client's next ping to use up the bytes going up.
        "limit_data" => ("bytes = 16", "8s", recovers("8s")),
        other => anyhow::bail!("no case for {other}"),
    };
    let fault = format!(
        "type = \"toxic\"\nstream = \"{stream}\"\ntoxic = {{ kind = \"{kind}\", {toxic} }}"
    );
    let name = format!("toxic-{kind}-{stream}");
    passed(&run_text(&name, &focused(&name, &fault, lasts, &expect)).await?)
}

/// Each mode of the killable proxy in front of the client's signalling: a kill is noticed at
/// once and recovered; a black hole is caught by the ping timeout and recovered; a pause, a
/// refusal of new connections and a throttle leave the open connection working, unnoticed.
#[rstest]
#[case::kill("mode = \"kill\"", "2s", recovers("8s"))]
#[case::black_hole("mode = \"black-hole\"", "20s", recovers("15s"))]
#[case::pause("mode = \"pause\"", "3s", UNNOTICED.to_owned())]
#[case::refuse_new("mode = \"refuse-new\"", "3s", UNNOTICED.to_owned())]
#[case::throttle("mode = \"throttle\"\nrate = 2000", "3s", UNNOTICED.to_owned())]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_killable_proxy_mode(
    #[case] mode: &str,
    #[case] lasts: &str,
    #[case] expect: String,
) -> Result<()> {
    let fault = format!("type = \"signal-proxy\"\n{mode}");
    let name = format!("proxy-{}", mode.split('"').nth(1).unwrap_or("mode"));
    passed(&run_text(&name, &focused(&name, &fault, lasts, &expect)).await?)
}

/// A scenario whose expectation is wrong (a short drop does not disconnect anyone) fails, and
/// says what was expected, what was seen, and shows the trace.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_wrong_expectation_fails_with_expected_seen_and_the_trace() -> Result<()> {
    let text = r#"name = "wrong"
lanes = ["real"]
settle = "1s"
[[participant]]
identity = "client"
[[fault]]
at = "500ms"
for = "1s"
type = "signal-proxy"
mode = "pause"
[[expect]]
type = "disconnected"
participant = "client"
reason = "SIGNAL_CLOSE"
within = "2s"
"#;
    let record = run_text("wrong", text).await?;
    ensure!(!record.passed(), "a wrong expectation must fail:\n{}", record.summary());
    let failed = record.verdicts.iter().find(|v| !v.passed).context("a failed verdict")?;
    ensure!(failed.what.starts_with("disconnected: client"), "{failed:?}");
    ensure!(
        failed.expected.contains("exactly one Disconnected with reason SIGNAL_CLOSE"),
        "{failed:?}"
    );
    ensure!(failed.seen.starts_with("no Disconnected (lifecycle: Connected"), "{failed:?}");
    let summary = record.summary();
    for needed in [
        "FAIL disconnected: client",
        "expected:",
        "seen:",
        "trace of client",
        "Connected",
        "livekit-server log:",
    ] {
        ensure!(summary.contains(needed), "the summary lacks {needed:?}:\n{summary}");
    }
    Ok(())
}

/// A run keeps watching while an episode may still end within its bound, whatever `settle`
/// the file guessed. `simulate force-tcp` has the server move the client to TCP candidates,
/// which the shared loopback server does not have (its ICE/TCP is off): its media fails
/// about 15 s later and a 3-attempt policy
/// gives up about 25 s after that — past the 30 s of `settle`, well inside the bound (three
/// attempts at their timeouts, ~78 s). The room must be judged as it ends, `Disconnected`,
/// not as "still Reconnecting".
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn an_episode_outlasting_settle_is_watched_to_its_end() -> Result<()> {
    let text = r#"name = "force-tcp-exhaustion"
lanes = ["real"]
settle = "30s"
[[participant]]
identity = "client"
reconnect = { attempts = 3 }
[[fault]]
at = "1s"
target = "client"
type = "simulate"
scenario = "force-tcp"
[[expect]]
type = "final-state"
participant = "client"
state = "disconnected"
"#;
    let record = run_text("force-tcp-exhaustion", text).await?;
    passed(&record)?;
    let settle_ended = record.timeline_zero + Duration::from_secs(1 + 30);
    let ended = record
        .events
        .iter()
        .find(|e| matches!(e.event, ClientEvent::Disconnected { .. }))
        .context("a Disconnected")?;
    ensure!(
        ended.at > settle_ended,
        "the episode ended within `settle`, so this run no longer shows watching past it:\n{}",
        record.summary()
    );
    Ok(())
}

/// Invariant 4 on the real lane: a partition refuses every new connection, so a room that
/// exhausts a 3-attempt policy under it makes its attempts exactly as the policy's delays,
/// drawn from the room's seed, space them. The run passes; the same record with the
/// `Disconnected` 5 s late (as if a fourth attempt had been made) is caught.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn an_exhaustion_under_a_partition_is_judged_by_its_drawn_delays() -> Result<()> {
    let text = r#"name = "partition-exhaustion"
lanes = ["real"]
settle = "1s"
[[participant]]
identity = "laptop"
reconnect = { attempts = 3, base_delay = "100ms", max_delay = "400ms" }
[[fault]]
at = "1s"
for = "40s"
target = "laptop"
type = "partition"
[[expect]]
type = "final-state"
participant = "laptop"
state = "disconnected"
"#;
    let record = run_text("partition-exhaustion", text).await?;
    passed(&record)?;
    let mut late = record.clone();
    let ended = late
        .events
        .iter_mut()
        .find(|e| matches!(e.event, ClientEvent::Disconnected { .. }))
        .context("a Disconnected")?;
    ended.at += Duration::from_secs(5);
    let broken = faultline::judge::violations(&late);
    ensure!(
        broken.iter().any(|v| v.invariant == 4),
        "an episode 5 s longer than its drawn delays must break invariant 4: {broken:?}\n{}",
        record.summary()
    );
    Ok(())
}
