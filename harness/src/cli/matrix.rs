//! `faultline matrix`: every scenario of a library × every SDK on the real lane, as a markdown
//! table (printed, and written beside the report) and an HTML page. Exit status: 0 every
//! cell that could run passed, 1 one failed, 2 an SDK cannot run here or a cell could not be
//! run (the cause and the fix are printed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use faultline::client::Sdk;
use faultline::matrix::{run_cell, scenario_files, Cell, Matrix};
use faultline::provision::ProvisionEnv;
use faultline::scenario::Scenario;

/// Options of `faultline matrix`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An SDK to run (repeat for several; default: faultline, upstream-rust and js).
    #[arg(long = "sdk")]
    sdks: Vec<Sdk>,
    /// The directory of scenario files.
    #[arg(long, default_value = "fixtures/scenarios")]
    scenarios: PathBuf,
    /// Where to write the HTML page; the markdown table goes beside it (`.md`).
    #[arg(long)]
    report: PathBuf,
    /// Seed of each run's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the matrix and writes it out.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sdks = if args.sdks.is_empty() { Sdk::ALL.to_vec() } else { args.sdks };
    let env = ProvisionEnv::from_env();
    for sdk in &sdks {
        if let Err(e) = sdk.readiness(&env) {
            eprintln!("faultline matrix: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let files = match scenario_files(&args.scenarios) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("faultline matrix: no *.toml scenario in {}", args.scenarios.display());
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("faultline matrix: cannot read {}: {e}", args.scenarios.display());
            return Ok(ExitCode::from(2));
        }
    };
    let mut matrix = Matrix { sdks: sdks.clone(), rows: Vec::new() };
    for file in files {
        let scenario = match Scenario::load(&file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("faultline matrix: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let mut cells = Vec::new();
        for sdk in &sdks {
            let started = Instant::now();
            eprint!("  {:<28} × {sdk:<14} … ", scenario.name);
            let cell = run_cell(&scenario, &file, *sdk, args.seed).await;
            let said = match &cell {
                Cell::NotApplicable(_) => "n/a".to_owned(),
                Cell::CouldNotRun(why) => format!("could not run: {why}"),
                Cell::Ran(o) if o.ok() => format!("pass {}/{}", o.passed, o.total),
                Cell::Ran(o) => format!("FAIL {}/{}", o.passed, o.total),
            };
            eprintln!("{said} ({:.0?})", started.elapsed());
            cells.push(cell);
        }
        matrix.rows.push((scenario.name.clone(), file, cells));
    }
    let markdown = matrix.markdown();
    println!("{markdown}");
    std::fs::write(&args.report, matrix.html())
        .with_context(|| format!("writing {}", args.report.display()))?;
    let md = args.report.with_extension("md");
    std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("faultline matrix: wrote {} and {}", args.report.display(), md.display());
    Ok(if matrix.could_not_run() {
        ExitCode::from(2)
    } else if matrix.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
