//! `faultline explore`: random fault schedules in the simulation lane, each run judged by
//! DESIGN.md's invariants, with a progress line and a summary. On a violation it shrinks the
//! failing schedule, writes it to a file, prints the replay command and exits 1.
//!
//! `--shard I/N` runs one machine's share of a larger exploration and `--summary FILE` writes
//! what it did as JSON; `faultline explore merge FILE...` checks that the summaries are the
//! shards of one exploration and combines them (exit 1 if any shard found a violation, 2 if
//! the summaries do not fit together).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline::sim::explore::{self, Case, ExploreConfig, Shard, ShardReport, Summary};
use faultline::sim::server::PlantedBug;

/// Options of `faultline explore`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    merge: Option<Merge>,
    #[command(flatten)]
    run: RunArgs,
}

/// `faultline explore merge`.
#[derive(Debug, clap::Subcommand)]
enum Merge {
    /// Combine the `--summary` files of an exploration's shards.
    Merge {
        /// The shards' summary files (JSON).
        #[arg(required = true)]
        summaries: Vec<PathBuf>,
    },
}

/// Options of an exploration run.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// How many random schedules to run (over all shards).
    #[arg(long, default_value_t = 100)]
    cases: u64,
    /// Run only shard I of N: the cases whose index is I modulo N.
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    shard: Shard,
    /// Write what this run did (and any violation's case file) as JSON, for `explore merge`.
    #[arg(long)]
    summary: Option<PathBuf>,
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
    /// In about this share of cases (percent), every participant publishes audio and video
    /// and invariant 6 (media comes back) is judged.
    #[arg(long, default_value_t = explore::DEFAULT_MEDIA_PERCENT, value_parser = clap::value_parser!(u8).range(0..=100))]
    media_percent: u8,
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

/// Runs the exploration (or merges shards) and prints its summary.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.merge {
        Some(Merge::Merge { summaries }) => merge(&summaries),
        None => explore_run(args.run).await,
    }
}

async fn explore_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = ExploreConfig {
        cases: args.cases,
        shard: args.shard,
        seed: args.seed,
        participants: args.participants,
        jobs: args.jobs.unwrap_or(ExploreConfig::default().jobs),
        flaky_links: args.flaky_links,
        planted_bug: args.planted_bug,
        shrink_runs: args.shrink_runs,
        media_percent: args.media_percent,
    };
    eprintln!(
        "exploring {} schedules with {} participants (seed {}, shard {}, {} threads, audio and \
         video in {} % of cases)",
        config.shard.cases_of(config.cases),
        config.participants,
        config.seed,
        config.shard,
        config.jobs,
        config.media_percent
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
    let path = summary
        .failure
        .as_ref()
        .map(|f| args.out.join(format!("faultline-failure-{}.toml", f.shrunk.seed)));
    if let Some(file) = &args.summary {
        let report = ShardReport::new(&config, &summary, path.as_deref());
        let text = serde_json::to_string_pretty(&report).context("encoding the summary")?;
        std::fs::write(file, text + "\n")
            .with_context(|| format!("writing the summary to {}", file.display()))?;
        eprintln!("summary: {}", file.display());
    }
    let (Some(failure), Some(path)) = (summary.failure, path) else {
        println!("no violation");
        return Ok(ExitCode::SUCCESS);
    };
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
        "{} cases ({} with media), {:.0} s simulated in {:.1} s of wall time ({:.0}x), {} \
         violation(s){}",
        summary.cases,
        summary.media_cases,
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

/// `explore merge`: reads the shards' summaries, checks they belong together, prints the
/// combined figures and every violation.
fn merge(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("faultline explore merge: cannot read {}: {e}", file.display());
                return Ok(ExitCode::from(2));
            }
        };
        match serde_json::from_str::<ShardReport>(&text) {
            Ok(report) => reports.push((file.display().to_string(), report)),
            Err(e) => {
                eprintln!(
                    "faultline explore merge: {} is not a summary `faultline explore --summary` \
                     wrote: {e}",
                    file.display()
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    let merged = match explore::merge(&reports) {
        Ok(merged) => merged,
        Err(e) => {
            eprintln!("faultline explore merge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    println!(
        "{} shards of exploration seed {}: {} of {} cases run ({} with media), {:.0} s \
         simulated, longest shard {:.1} s of wall time, {} violation(s){}",
        reports.len(),
        merged.seed,
        merged.ran,
        merged.cases,
        merged.media_cases,
        merged.simulated_secs,
        merged.wall_secs,
        merged.violations.len(),
        if merged.failed_joins > 0 {
            format!(", {} room(s) could not join", merged.failed_joins)
        } else {
            String::new()
        }
    );
    for (shard, found) in &merged.violations {
        println!("shard {shard}: case seed {} broke:", found.case_seed);
        for broke in &found.broke {
            println!("  {broke}");
        }
        println!("  replay: {}", replay_command(&found.file));
    }
    Ok(if merged.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn write_case(case: &Case, path: &std::path::Path, args: &RunArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {} for the failing case", args.out.display()))?;
    let text = format!(
        "# A failing faultline exploration case. Replay: {}\n{}",
        replay_command(path),
        case.to_toml()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
