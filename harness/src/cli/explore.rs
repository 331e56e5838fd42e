//! `faultline explore`: random fault schedules in the simulation lane, each run judged by
//! DESIGN.md's invariants, with a progress line and a summary. On a violation it shrinks the
//! failing schedule, writes it to a file, prints the replay command and exits 1.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline::sim::explore::{self, Case, ExploreConfig, Summary};
use faultline::sim::server::PlantedBug;

/// Options of `faultline explore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many random schedules to run.
    #[arg(long, default_value_t = 100)]
    cases: u64,
    /// The exploration's seed (the same seed explores the same schedules).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Participants in every case (1–8).
    #[arg(long, default_value_t = 2)]
    participants: usize,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    jobs: Option<usize>,
    /// Also generate flaky links (`fail_rate`); such cases may not replay exactly.
    #[arg(long)]
    flaky_links: bool,
    /// Run every case against a deliberately broken server, to see the explorer find it.
    #[arg(long, value_parser = parse_planted_bug)]
    planted_bug: Option<PlantedBug>,
    /// The most runs shrinking a failure may take.
    #[arg(long, default_value_t = 60)]
    shrink_runs: usize,
    /// Where to write a failing case.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Parses a planted bug's name as written in case files (`lose_first_data_after_resume`).
pub fn parse_planted_bug(name: &str) -> Result<PlantedBug, String> {
    use serde::de::IntoDeserializer as _;
    use serde::Deserialize as _;
    PlantedBug::deserialize(name.into_deserializer()).map_err(|e: serde::de::value::Error| {
        format!("{e} (for example: lose_first_data_after_resume)")
    })
}

/// Runs the exploration and prints its summary.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = ExploreConfig {
        cases: args.cases,
        seed: args.seed,
        participants: args.participants,
        jobs: args.jobs.unwrap_or(ExploreConfig::default().jobs),
        flaky_links: args.flaky_links,
        planted_bug: args.planted_bug,
        shrink_runs: args.shrink_runs,
    };
    eprintln!(
        "exploring {} schedules with {} participants (seed {}, {} threads)",
        config.cases, config.participants, config.seed, config.jobs
    );
    let explored = config.clone();
    let summary = tokio::task::spawn_blocking(move || {
        explore::explore(&explored, |p| {
            let width = 30;
            let filled = (p.done * width / p.total.max(1)) as usize;
            eprint!(
                "\r[{}{}] {}/{} cases, {:.0} s simulated ",
                "=".repeat(filled),
                " ".repeat(width as usize - filled),
                p.done,
                p.total,
                p.simulated.as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        })
    })
    .await
    .context("the exploration thread panicked")??;
    eprintln!();
    print_summary(&summary);
    let Some(failure) = summary.failure else {
        println!("no violation");
        return Ok(ExitCode::SUCCESS);
    };
    let path = args.out.join(format!("faultline-failure-{}.toml", failure.shrunk.seed));
    write_case(&failure.shrunk, &path, &args)?;
    println!("VIOLATION found by case seed {}; the schedule as generated:", failure.original.seed);
    print!("{}", failure.original.schedule);
    println!(
        "shrunk in {} runs ({:.1} s) to {} step(s) with {} participant(s):",
        failure.shrink_runs,
        failure.shrink_wall.as_secs_f64(),
        failure.shrunk.schedule.steps.len(),
        failure.shrunk.participants
    );
    print!("{}", failure.shrunk.schedule);
    for violation in &failure.violations {
        println!("  {violation}");
    }
    println!("trace of the shrunk case:\n{}", failure.trace);
    println!("written to {}; replay it with:\n  {}", path.display(), replay_command(&path));
    Ok(ExitCode::FAILURE)
}

fn print_summary(summary: &Summary) {
    let wall = summary.wall.as_secs_f64();
    println!(
        "{} cases, {:.0} s simulated in {:.1} s of wall time ({:.0}x), {} violation(s){}",
        summary.cases,
        summary.simulated.as_secs_f64(),
        wall,
        summary.simulated.as_secs_f64() / wall.max(1e-9),
        usize::from(summary.failure.is_some()),
        if summary.failed_joins > 0 {
            format!(", {} room(s) could not join", summary.failed_joins)
        } else {
            String::new()
        }
    );
}

fn replay_command(path: &std::path::Path) -> String {
    format!("faultline replay {}", path.display())
}

fn write_case(case: &Case, path: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {} for the failing case", args.out.display()))?;
    let text = format!(
        "# A failing faultline exploration case. Replay: {}\n{}",
        replay_command(path),
        case.to_toml()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
