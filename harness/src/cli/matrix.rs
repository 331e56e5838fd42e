//! `faultline matrix`: every scenario of a library × every SDK on the real lane, as a markdown
//! table (printed, and written beside the report), an HTML page and a JSON file. Exit status:
//! 0 every cell that could run passed, 1 one failed, 2 an SDK cannot run here or a cell could
//! not be run (the cause and the fix are printed). `--compare OLD NEW` compares two such JSON
//! files instead of running anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use faultline::client::Sdk;
use faultline::matrix::compare::compare;
use faultline::matrix::saved::SavedMatrix;
use faultline::matrix::{run_cell, scenario_files, Cell, Matrix};
use faultline::provision::ProvisionEnv;
use faultline::scenario::Scenario;

/// Options of `faultline matrix`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An SDK to run (repeat for several; default: faultline, upstream-rust, js and go; also
    /// `driver:COMMAND`, a program of yours that speaks docs/driver-protocol.md).
    #[arg(long = "sdk")]
    pub(super) sdks: Vec<super::SdkArg>,
    /// The directory of scenario files.
    #[arg(long, default_value = "fixtures/scenarios")]
    scenarios: PathBuf,
    /// Where to write the HTML page; the markdown table (`.md`) and the matrix as a file
    /// `--compare` reads (`.json`) go beside it.
    #[arg(long, required_unless_present = "compare")]
    report: Option<PathBuf>,
    /// Run nothing: compare two matrix files (the `.json` a run wrote beside its report),
    /// OLD then NEW, and print what changed — verdicts and timings, cell by cell. Exits 1 if
    /// a cell regressed (passed before and fails now, or fails more).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with_all = ["sdks", "report"])]
    compare: Option<Vec<PathBuf>>,
    /// With `--compare`, list every cell, not only those that changed.
    #[arg(long, requires = "compare")]
    all: bool,
    /// Seed of each run's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the matrix and writes it out, or compares two.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(files) = &args.compare {
        return Ok(compare_files(&files[0], &files[1], args.all));
    }
    let Some(report) = args.report else {
        anyhow::bail!("--report is required unless --compare is given");
    };
    let sdks: Vec<Sdk> = if args.sdks.is_empty() {
        Sdk::ALL.to_vec()
    } else {
        args.sdks.iter().map(|s| s.sdk).collect()
    };
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
    std::fs::write(&report, matrix.html())
        .with_context(|| format!("writing {}", report.display()))?;
    let md = report.with_extension("md");
    std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    let json = report.with_extension("json");
    let saved = SavedMatrix::from(&matrix).to_json().context("writing the matrix as JSON")?;
    std::fs::write(&json, saved).with_context(|| format!("writing {}", json.display()))?;
    eprintln!(
        "faultline matrix: wrote {}, {} and {}",
        report.display(),
        md.display(),
        json.display()
    );
    Ok(if matrix.could_not_run() {
        ExitCode::from(2)
    } else if matrix.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--compare OLD NEW`: prints what changed; 0 nothing regressed, 1 something did, 2 a file
/// cannot be read.
fn compare_files(old: &Path, new: &Path, all: bool) -> ExitCode {
    let load =
        |path: &Path| SavedMatrix::load(path).map_err(|e| eprintln!("faultline matrix: {e}"));
    let (Ok(old), Ok(new)) = (load(old), load(new)) else { return ExitCode::from(2) };
    let comparison = compare(&old, &new);
    println!("{}", comparison.markdown(all));
    if comparison.regressed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
