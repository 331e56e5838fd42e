//! `faultline bench sim`: how fast the simulation lane runs on this machine — simulated
//! seconds per wall second for a two-participant room, and fault schedules explored per
//! minute. Figures are printed, not asserted.

use std::time::{Duration, Instant};

use anyhow::Context;
use faultline::sim::explore::{self, Case, ExploreConfig};
use faultline::sim::schedule::Schedule;

/// Measures and prints. `rooms`: how many fault-free two-participant runs to time;
/// `cases`: how many schedules to explore; `jobs`: exploration threads.
pub async fn run(rooms: u32, cases: u64, jobs: usize, seed: u64) -> anyhow::Result<()> {
    let (simulated, wall) = tokio::task::spawn_blocking(move || {
        let mut simulated = Duration::ZERO;
        let started = Instant::now();
        for i in 0..rooms {
            let case = Case {
                seed: seed + u64::from(i),
                participants: 2,
                names: Vec::new(),
                planted_bug: None,
                media: false,
                schedule: Schedule::default(),
            };
            simulated += explore::run_case(&case)?.simulated;
        }
        Ok::<_, explore::ExploreError>((simulated, started.elapsed()))
    })
    .await
    .context("the benchmark thread panicked")??;
    println!(
        "two-participant room (joins, a reliable packet each per 500 ms, no faults), one thread: \
         {:.0} simulated s in {:.2} wall s = {:.0} simulated s per wall s (n={rooms})",
        simulated.as_secs_f64(),
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    let config = ExploreConfig { cases, seed, participants: 2, jobs, ..ExploreConfig::default() };
    let summary = tokio::task::spawn_blocking(move || explore::explore(&config, |_| {}))
        .await
        .context("the benchmark thread panicked")??;
    let minutes = summary.wall.as_secs_f64() / 60.0;
    println!(
        "exploration, two participants, {jobs} thread(s): {} schedules in {:.1} wall s = {:.0} \
         schedules per minute ({:.0} simulated s per wall s{})",
        summary.cases,
        summary.wall.as_secs_f64(),
        summary.cases as f64 / minutes.max(1e-9),
        summary.simulated.as_secs_f64() / summary.wall.as_secs_f64().max(1e-9),
        if summary.failure.is_some() { "; stopped early at a violation" } else { "" }
    );
    Ok(())
}
