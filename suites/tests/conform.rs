//! The simulation agrees with the real livekit-server: every library scenario that lists both
//! lanes is run on each (the real lane watched until the room is quiet) and what each client
//! saw — lifecycle, the others' joins and leaves, which session it ended on, final state,
//! each track's events (published, subscribed, unsubscribed, unpublished, by sid ordinal),
//! every verdict (media's among them) — must be the same (`faultline conform` over the library).

use std::path::Path;

use anyhow::{ensure, Result};
use faultline::conform::{compare, lists_both_lanes};
use faultline::matrix::scenario_files;
use faultline::scenario::Scenario;

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn every_dual_lane_library_scenario_sees_the_same_on_both_lanes() -> Result<()> {
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios");
    let mut compared = Vec::new();
    let mut differences = Vec::new();
    for file in scenario_files(&library)? {
        let scenario = Scenario::load(&file)?;
        if !lists_both_lanes(&scenario) {
            continue;
        }
        let comparison = compare(&scenario, &file, 1).await?;
        if let Some(difference) = comparison.difference {
            differences.push(format!("{}: {difference}", scenario.name));
        }
        compared.push(scenario.name);
    }
    ensure!(compared.len() >= 5, "expected the library's dual-lane scenarios, found {compared:?}");
    ensure!(
        differences.is_empty(),
        "the lanes differ (compared {compared:?}):\n{}",
        differences.join("\n")
    );
    Ok(())
}
