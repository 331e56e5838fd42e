//! `faultline replay`: re-runs one simulation case — a file `faultline explore` wrote, or a
//! schedule file with `--seed` — and prints its trace and verdict (exit 1 on a violation).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline::sim::explore::{self, Case};
use faultline::sim::schedule::Schedule;
use faultline::sim::server::PlantedBug;

use super::explore::parse_planted_bug;

/// Options of `faultline replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A case file (`seed`, `participants`, `[[step]]`s), or with `--seed` a schedule file
    /// (`[[step]]`s only).
    file: PathBuf,
    /// Treat FILE as a schedule and run it with this simulation seed.
    #[arg(long)]
    seed: Option<u64>,
    /// With `--seed`: how many participants.
    #[arg(long, default_value_t = 2, requires = "seed")]
    participants: usize,
    /// With `--seed`: run against a deliberately broken server.
    #[arg(long, value_parser = parse_planted_bug, requires = "seed")]
    planted_bug: Option<PlantedBug>,
    /// With `--seed`: every participant publishes audio and video.
    #[arg(long, requires = "seed")]
    media: bool,
}

/// Replays the case and prints what happened.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let case = match args.seed {
        Some(seed) => {
            let text = std::fs::read_to_string(&args.file)
                .with_context(|| format!("reading the schedule {}", args.file.display()))?;
            let schedule = Schedule::from_toml(&text)
                .with_context(|| format!("in {}", args.file.display()))?;
            Case {
                seed,
                participants: args.participants,
                names: Vec::new(),
                planted_bug: args.planted_bug,
                media: args.media,
                schedule,
            }
        }
        None => Case::read(&args.file)?,
    };
    let replayed = case.clone();
    let (run, violations) = tokio::task::spawn_blocking(move || explore::replay(&replayed))
        .await
        .context("the replay thread panicked")??;
    println!(
        "case: seed {}, {} participant(s){}{}, {} step(s):",
        case.seed,
        case.participants,
        case.planted_bug.map(|b| format!(", planted bug {b:?}")).unwrap_or_default(),
        if case.media { ", audio and video" } else { "" },
        case.schedule.steps.len()
    );
    print!("{}", case.schedule);
    println!("trace ({:.1} s simulated):\n{}", run.simulated.as_secs_f64(), run.trace_text());
    if violations.is_empty() {
        println!("verdict: every invariant held");
        return Ok(ExitCode::SUCCESS);
    }
    println!("verdict: {} violation(s)", violations.len());
    for violation in &violations {
        println!("  {violation}");
    }
    Ok(ExitCode::FAILURE)
}
