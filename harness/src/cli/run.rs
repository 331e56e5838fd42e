//! `faultline run <scenario>`: plays a scenario file, shows the faults and each participant's
//! state live on stderr, prints a verdict per expectation and writes the trace and the HTML
//! report if asked. Exit status: 0 every verdict passed, 1 one failed, 2 the scenario could
//! not be run (bad file, a server that would not start), with the cause and the fix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use faultline::client::{ClientEvent, Observed};
use faultline::report;
use faultline::scenario::format::Lane;
use faultline::scenario::{
    run_real, run_sim, sweep, Progress, RunOptions, Scenario, REQUIRED_PASS_RATE,
};

/// Options of `faultline run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file (TOML; see fixtures/scenarios/ for examples).
    scenario: PathBuf,
    /// Where to run it: the real livekit-server, or the turmoil simulation.
    #[arg(long, value_enum, default_value = "real")]
    lane: LaneArg,
    /// Seed of the run's randomness (media loss, backoff jitter); with `--seeds`, the first
    /// seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the scenario once for each of N seeds (sim lane only) and report its pass rate and
    /// the seeds each failing expectation failed for; exits 1 below 99 %.
    #[arg(long, value_name = "N", conflicts_with_all = ["trace", "report"])]
    seeds: Option<u64>,
    /// Write every fault and event, timestamped, as JSON lines to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write a self-contained HTML timeline of the run to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Run every participant with this SDK (faultline, upstream-rust, js, go, or
    /// `driver:COMMAND` for a program of yours that speaks docs/driver-protocol.md), whatever
    /// the file says.
    #[arg(long)]
    pub(super) sdk: Option<super::SdkArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LaneArg {
    Real,
    Sim,
}

/// Exit status when the scenario could not be run at all.
const COULD_NOT_RUN: u8 = 2;

fn could_not_run(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("faultline run: could not run the scenario: {message}");
    ExitCode::from(COULD_NOT_RUN)
}

/// Runs the scenario and reports on it.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut scenario = match Scenario::load(&args.scenario) {
        Ok(s) => s,
        Err(e) => return Ok(could_not_run(e)),
    };
    if let Some(sdk) = &args.sdk {
        for participant in &mut scenario.participants {
            participant.sdk = sdk.sdk;
        }
    }
    let lane = match args.lane {
        LaneArg::Real => Lane::Real,
        LaneArg::Sim => Lane::Sim,
    };
    eprintln!("faultline run: {} — {}", scenario.name, scenario.description.trim());
    let field = scenario.field.clone();
    if let Some(n) = args.seeds {
        if !matches!(lane, Lane::Sim) {
            return Ok(could_not_run(
                "`--seeds` runs the scenario many times in the simulation; add `--lane sim`",
            ));
        }
        return Ok(run_seeds(scenario, args.scenario, args.seed, n).await);
    }
    let result = match lane {
        Lane::Real => {
            let observer = Box::new(Display::default().observer());
            let options = RunOptions { seed: args.seed, observer: Some(observer), quiet: None };
            run_real(&scenario, &args.scenario, options).await
        }
        Lane::Sim => {
            eprintln!(
                "  … running in the simulation (seed {}): simulated time, no live progress",
                args.seed
            );
            let (file, seed) = (args.scenario.clone(), args.seed);
            match tokio::task::spawn_blocking(move || run_sim(&scenario, &file, seed)).await {
                Ok(result) => result,
                Err(e) => return Ok(could_not_run(format!("the simulation thread failed: {e}"))),
            }
        }
    };
    let record = match result {
        Ok(record) => record,
        Err(e) => return Ok(could_not_run(e)),
    };
    eprintln!();
    for (build, who) in record.builds() {
        println!("build  {build} ({})", who.join(", "));
    }
    for v in &record.verdicts {
        let mark = if v.passed { "PASS" } else { "FAIL" };
        println!("{mark}  {}\n      expected: {}\n      seen:     {}", v.what, v.expected, v.seen);
    }
    if let Some(path) = &args.trace {
        match report::write_trace(&record, path) {
            Ok(()) => eprintln!("trace:  {}", path.display()),
            Err(e) => {
                return Ok(could_not_run(format!(
                    "cannot write the trace to {}: {e}",
                    path.display()
                )))
            }
        }
    }
    if let Some(path) = &args.report {
        match report::write_html(&record, path) {
            Ok(()) => eprintln!("report: {}", path.display()),
            Err(e) => {
                return Ok(could_not_run(format!(
                    "cannot write the report to {}: {e}",
                    path.display()
                )))
            }
        }
    }
    if let Some(field) = &field {
        print!("{}", faultline::field::report::beside(field, &record));
    }
    for (name, path) in &record.logs {
        eprintln!("{name} log: {}", path.display());
    }
    let failed = record.verdicts.iter().filter(|v| !v.passed).count();
    if failed == 0 {
        println!("scenario `{}` passed ({} verdicts)", record.scenario, record.verdicts.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "scenario `{}` FAILED: {failed} of {} verdicts",
            record.scenario,
            record.verdicts.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `--seeds N`: the sim lane over seeds `first..first + n`, its pass rate and the failing
/// seeds, each with the command that replays it.
async fn run_seeds(scenario: Scenario, file: PathBuf, first: u64, n: u64) -> ExitCode {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let seeds = first..first.saturating_add(n);
    eprintln!(
        "  … {n} runs in the simulation (seeds {}..={}) on {threads} threads",
        seeds.start,
        seeds.end.saturating_sub(1)
    );
    let started = std::time::Instant::now();
    let (scenario_c, file_c) = (scenario.clone(), file.clone());
    let swept =
        tokio::task::spawn_blocking(move || sweep(&scenario_c, &file_c, seeds, threads)).await;
    let result = match swept {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return could_not_run(e),
        Err(e) => return could_not_run(format!("the simulation threads failed: {e}")),
    };
    let replay = |seed: u64| format!("faultline run {} --lane sim --seed {seed}", file.display());
    for (what, seeds) in &result.failures {
        println!(
            "FAIL  {what}: {} of {} seeds ({})",
            seeds.len(),
            result.runs,
            faultline::judge::short_list(seeds)
        );
    }
    for (seed, why) in result.errors.iter().take(10) {
        println!("ERROR seed {seed}: {why}");
    }
    let rate = result.pass_rate() * 100.0;
    println!(
        "scenario `{}`: {} of {} seeds passed ({rate:.1} %) in {:.1} s",
        scenario.name,
        result.passed,
        result.runs,
        started.elapsed().as_secs_f64()
    );
    if let Some(seed) = result.failed_seeds().first() {
        println!("replay the first failure: {}", replay(*seed));
    }
    if result.pass_rate() >= REQUIRED_PASS_RATE {
        ExitCode::SUCCESS
    } else {
        println!(
            "scenario `{}` FAILED: a scenario's verdict must hold for at least {:.0} % of seeds",
            scenario.name,
            REQUIRED_PASS_RATE * 100.0
        );
        ExitCode::FAILURE
    }
}

/// The live display: one line per fault change and lifecycle event, each followed by every
/// participant's state and the faults in force.
#[derive(Default)]
struct Display {
    zero: Option<Duration>,
    states: BTreeMap<String, String>,
    active: BTreeMap<usize, String>,
    data: BTreeMap<String, u32>,
}

impl Display {
    fn observer(mut self) -> impl FnMut(Progress<'_>) + Send {
        move |progress| self.show(progress)
    }

    fn show(&mut self, progress: Progress<'_>) {
        // When it happened, from the start of the run.
        let when = match &progress {
            Progress::FaultStarted(f) => Some(f.started),
            Progress::FaultHealed(f) => f.healed,
            Progress::Event(e) => Some(e.at),
            Progress::TimelineStarted(at) => Some(*at),
            Progress::Cluster(c) => Some(c.at),
            Progress::Phase(_) => None,
        };
        let line = match progress {
            Progress::Phase(text) => {
                eprintln!("  … {text}");
                return;
            }
            Progress::TimelineStarted(at) => {
                self.zero = Some(at);
                "everyone connected: the fault timeline starts".to_owned()
            }
            Progress::FaultStarted(f) => {
                if f.healed != Some(f.started) {
                    self.active.insert(f.index, f.label.clone());
                }
                format!("fault #{} starts: {}", f.index, f.label)
            }
            Progress::FaultHealed(f) => {
                self.active.remove(&f.index);
                format!("fault #{} healed: {}", f.index, f.label)
            }
            Progress::Cluster(c) => format!("cluster: {}", c.change),
            Progress::Event(e) => match &e.event {
                ClientEvent::DataReceived { .. } => {
                    *self.data.entry(e.participant.clone()).or_default() += 1;
                    return;
                }
                event => {
                    let step = event.lifecycle();
                    if let Some(step) = step {
                        let state = step.resulting_state();
                        self.states.insert(e.participant.clone(), format!("{state:?}"));
                    }
                    match event {
                        ClientEvent::Disconnected { reason } => {
                            format!("{}: Disconnected ({})", e.participant, reason.as_str_name())
                        }
                        ClientEvent::ParticipantConnected { identity, .. } => {
                            format!("{}: sees {identity} join", e.participant)
                        }
                        ClientEvent::ParticipantDisconnected { identity, .. } => {
                            format!("{}: sees {identity} leave", e.participant)
                        }
                        other if step.is_some() => format!("{}: {other:?}", e.participant),
                        _ => return,
                    }
                }
            },
        };
        let t = match (self.zero, when) {
            (Some(zero), Some(at)) => format!("{:+8.3}s", at.as_secs_f64() - zero.as_secs_f64()),
            _ => "  joining".to_owned(),
        };
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(p, s)| match self.data.get(p) {
                Some(n) => format!("{p} {s} ({n} data)"),
                None => format!("{p} {s}"),
            })
            .collect();
        let faults = if self.active.is_empty() {
            "no fault".to_owned()
        } else {
            self.active.values().cloned().collect::<Vec<_>>().join("; ")
        };
        eprintln!("[{t}] {line:<48} | {} | {faults}", states.join(", "));
    }
}
