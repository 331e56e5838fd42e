//! A scenario's verdict over many seeds (`faultline run --lane sim --seeds N`): the sim lane
//! run once per seed, in parallel on every core, and the pass rate with the seeds each
//! failing verdict failed for — so a scenario that passes only for a lucky seed shows it.
//!
//! The seed drives every random draw of a run (backoff jitter, media loss, the simulation's
//! scheduling), so the seeds a user would get are any seeds: a library scenario must pass for
//! at least [`REQUIRED_PASS_RATE`] of them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::format::Scenario;
use super::lane::RunError;
use super::sim_lane::{check_sim_lane, run_sim};

/// The share of seeds a library scenario must pass for.
pub const REQUIRED_PASS_RATE: f64 = 0.99;

/// The outcome of one scenario over a range of seeds.
#[derive(Debug, Clone, Default)]
pub struct SeedSweep {
    /// How many seeds ran.
    pub runs: u64,
    /// Seeds for which every verdict passed.
    pub passed: u64,
    /// For each verdict that failed at least once (by its `what`), the seeds it failed for, in
    /// order.
    pub failures: BTreeMap<String, Vec<u64>>,
    /// Seeds whose run could not be judged at all, with why (a join that failed, a
    /// simulation error).
    pub errors: Vec<(u64, String)>,
}

impl SeedSweep {
    /// The share of runs that passed, 0 when none ran.
    pub fn pass_rate(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.passed as f64 / self.runs as f64
        }
    }

    /// Seeds that failed a verdict or could not be judged, in order.
    pub fn failed_seeds(&self) -> Vec<u64> {
        let mut seeds: Vec<u64> = self
            .failures
            .values()
            .flatten()
            .copied()
            .chain(self.errors.iter().map(|(seed, _)| *seed))
            .collect();
        seeds.sort_unstable();
        seeds.dedup();
        seeds
    }
}

/// Runs `scenario` (read from `file`) on the sim lane once for each seed in `seeds`, on
/// `threads` threads (at least one). Errors before anything runs if the sim lane cannot run
/// the scenario; a seed whose run fails is counted in [`SeedSweep::errors`].
pub fn sweep(
    scenario: &Scenario,
    file: &Path,
    seeds: Range<u64>,
    threads: usize,
) -> Result<SeedSweep, RunError> {
    check_sim_lane(scenario, file)?;
    let next = AtomicU64::new(seeds.start);
    let result = Mutex::new(SeedSweep::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let outcome = run_sim(scenario, file, seed);
                let mut sweep = result.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                sweep.runs += 1;
                match outcome {
                    Ok(record) => {
                        let failed: Vec<String> = record
                            .verdicts
                            .into_iter()
                            .filter(|v| !v.passed)
                            .map(|v| v.what)
                            .collect();
                        if failed.is_empty() {
                            sweep.passed += 1;
                        }
                        for what in failed {
                            sweep.failures.entry(what).or_default().push(seed);
                        }
                    }
                    Err(e) => sweep.errors.push((seed, e.to_string())),
                }
            });
        }
    });
    let mut sweep = result.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    for seeds in sweep.failures.values_mut() {
        seeds.sort_unstable();
    }
    sweep.errors.sort_by_key(|(seed, _)| *seed);
    Ok(sweep)
}
