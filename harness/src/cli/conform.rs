//! `faultline conform [SCENARIO...]`: runs each scenario that lists both lanes on the real
//! livekit-server and in the simulation and compares what each client saw
//! ([`faultline::conform`]), printing one row per scenario: equal, or the first difference.
//! Exit status: 0 all equal, 1 a difference, 2 a scenario could not be run.

use std::path::PathBuf;
use std::process::ExitCode;

use faultline::conform::{compare, lists_both_lanes};
use faultline::matrix::scenario_files;
use faultline::scenario::Scenario;

/// Options of `faultline conform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files to compare (default: every file in `--scenarios` that lists both lanes).
    files: Vec<PathBuf>,
    /// The directory of scenario files, when none are named.
    #[arg(long, default_value = "fixtures/scenarios")]
    scenarios: PathBuf,
    /// Seed of both lanes' runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Compares each scenario and prints the table.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let named = !args.files.is_empty();
    let files = if named {
        args.files
    } else {
        match scenario_files(&args.scenarios) {
            Ok(files) => files,
            Err(e) => {
                eprintln!("faultline conform: cannot read {}: {e}", args.scenarios.display());
                return Ok(ExitCode::from(2));
            }
        }
    };
    let mut rows = Vec::new();
    for file in files {
        let scenario = match Scenario::load(&file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("faultline conform: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        if !lists_both_lanes(&scenario) {
            if named {
                eprintln!(
                    "faultline conform: {} does not list both lanes (lanes = [\"real\", \"sim\"]); \
                     there is nothing to compare",
                    file.display()
                );
                return Ok(ExitCode::from(2));
            }
            continue;
        }
        eprintln!("faultline conform: {} — real lane, then sim lane …", scenario.name);
        match compare(&scenario, &file, args.seed).await {
            Ok(comparison) => rows.push((scenario.name.clone(), comparison.difference)),
            Err(e) => {
                eprintln!("faultline conform: {}: could not run: {e}", file.display());
                return Ok(ExitCode::from(2));
            }
        }
    }
    if rows.is_empty() {
        eprintln!(
            "faultline conform: no scenario in {} lists both lanes",
            args.scenarios.display()
        );
        return Ok(ExitCode::from(2));
    }
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(8).max(8);
    println!("{:<width$}  real vs sim", "scenario");
    for (name, difference) in &rows {
        match difference {
            None => println!("{name:<width$}  equal"),
            Some(d) => println!("{name:<width$}  DIFFERENT: {d}"),
        }
    }
    let different = rows.iter().filter(|(_, d)| d.is_some()).count();
    if different == 0 {
        println!("{} scenarios: the simulation agrees with the real server", rows.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{different} of {} scenarios differ between the lanes", rows.len());
        Ok(ExitCode::FAILURE)
    }
}
