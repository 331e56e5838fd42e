//! `faultline import`: writes a scenario from one field client's evidence — a
//! chrome://webrtc-internals dump, its livekit-client or LiveKit Rust SDK log, or both — and
//! says what it found (`faultline::field::import`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use faultline::field;
use faultline::scenario::Scenario;

/// Options of `faultline import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The evidence: a webrtc-internals dump (JSON), an SDK log, or one of each from the same
    /// session.
    #[arg(required = true, num_args = 1..=2)]
    files: Vec<PathBuf>,
    /// Where to write the scenario (default: print it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The scenario's name (default: the first file's name).
    #[arg(long)]
    name: Option<String>,
}

/// Reads the evidence, writes the scenario and checks that faultline accepts it.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut evidence = Vec::new();
    for file in &args.files {
        let timeline =
            field::read(file).with_context(|| format!("importing {}", file.display()))?;
        evidence.push(timeline);
    }
    let imported = field::import::import(&evidence).context("importing the evidence")?;
    let name = args.name.clone().unwrap_or_else(|| {
        let stem = args.files[0].file_stem().map(|s| s.to_string_lossy().into_owned());
        stem.unwrap_or_else(|| "imported".into()).split('.').next().unwrap_or("imported").into()
    });
    let text = imported.scenario(&name);
    let path = args.out.clone().unwrap_or_else(|| PathBuf::from("<imported>"));
    // What is written must be a scenario faultline runs; a failure here is faultline's bug.
    Scenario::parse(&text, &path).with_context(|| {
        format!("the imported scenario does not parse (a faultline bug; please report it):\n{text}")
    })?;
    match &args.out {
        Some(out) => {
            std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "faultline import: {} outage(s), {} fault(s) → {} (run it: faultline run {})",
                imported.outages.len(),
                imported.faults.len(),
                out.display(),
                out.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
