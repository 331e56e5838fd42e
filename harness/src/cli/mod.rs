//! The `faultline` command's subcommands. To add one: write a module with an `Args`
//! (clap `Args`) and an `async fn run(args) -> anyhow::Result<ExitCode>`, and add a variant
//! to [`Command`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod conform;
mod doctor;
mod explore;
mod import;
mod matrix;
mod replay;
mod run;
mod server;

/// faultline: reproduce the ways a LiveKit client loses its connection.
#[derive(Debug, Parser)]
#[command(name = "faultline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show which sources of livekit-server and toxiproxy are available on this machine.
    Doctor(doctor::Args),
    /// Start a livekit-server (and optionally toxiproxy) for manual use, until Ctrl-C.
    Server(server::Args),
    /// Measure provisioning and start-up times, the simulation's speed, and the link emulator
    /// on real packets.
    Bench(bench::Args),
    /// Run a scenario file against livekit-server and judge what the client did.
    Run(run::Args),
    /// Run every scenario against every SDK and write the conformance table.
    Matrix(matrix::Args),
    /// Run each scenario on both lanes and compare what the clients saw (sim vs real).
    Conform(conform::Args),
    /// Explore random fault schedules in the simulation lane against the invariants.
    Explore(explore::Args),
    /// Re-run one simulation case (a file `explore` wrote) and print its trace and verdict.
    Replay(replay::Args),
    /// Write a scenario from field evidence: a webrtc-internals dump and/or an SDK log.
    Import(import::Args),
}

/// An SDK as `--sdk` names it: a name (`faultline`, `upstream-rust`, `js`, `driver`), or
/// `driver:COMMAND` — a program of the user's that speaks `docs/driver-protocol.md`, started
/// with `sh -c COMMAND`.
#[derive(Debug, Clone)]
pub struct SdkArg {
    /// The SDK.
    pub sdk: faultline::client::Sdk,
    /// The driver's command, for `driver:COMMAND`.
    pub driver: Option<String>,
}

impl std::str::FromStr for SdkArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("driver:") {
            Some(command) if command.trim().is_empty() => {
                Err("`driver:` needs the command that starts the driver after the colon".into())
            }
            Some(command) => {
                Ok(SdkArg { sdk: faultline::client::Sdk::Driver, driver: Some(command.into()) })
            }
            None => Ok(SdkArg { sdk: s.parse()?, driver: None }),
        }
    }
}

impl Command {
    /// The driver command a `--sdk driver:COMMAND` gave, if any.
    fn driver(&self) -> Option<&str> {
        let sdks: Vec<&SdkArg> = match self {
            Command::Run(args) => args.sdk.iter().collect(),
            Command::Matrix(args) => args.sdks.iter().collect(),
            _ => Vec::new(),
        };
        sdks.into_iter().find_map(|s| s.driver.as_deref())
    }
}

/// Parses the command line, runs the subcommand and maps errors to exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command.driver() {
        // Read, like every provisioning input, from the environment (`ProvisionEnv`); set
        // here, before any thread starts.
        std::env::set_var("FAULTLINE_DRIVER", command);
    }
    let log = init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("faultline: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `server` runs until Ctrl-C by design and stops itself on it; every other command is
    // interrupted by it.
    let stops_on_ctrl_c = !matches!(cli.command, Command::Server(_));
    let outcome = runtime.block_on(async {
        let command = async {
            match cli.command {
                Command::Doctor(args) => doctor::run(args).await,
                Command::Server(args) => server::run(args).await,
                Command::Bench(args) => bench::run(args).await,
                Command::Run(args) => run::run(args).await,
                Command::Matrix(args) => matrix::run(args).await,
                Command::Conform(args) => conform::run(args).await,
                Command::Explore(args) => explore::run(args).await,
                Command::Replay(args) => replay::run(args).await,
                Command::Import(args) => import::run(args).await,
            }
        };
        tokio::select! {
            result = command => Ok(result),
            signal = interrupted(stops_on_ctrl_c) => Err(signal),
        }
    });
    // Shutting the runtime down drops every task still running, and with them the servers,
    // proxies, drivers and namespaces they held: each is stopped by its destructor. A blocking
    // task (a simulation) is not waited for long: the watchdogs stop what it held.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some(log) = log.filter(|l| std::fs::metadata(l).is_ok_and(|m| m.len() > 0)) {
        eprintln!("faultline log: {}", log.display());
    }
    match outcome {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("faultline: error: {e:#}");
            ExitCode::FAILURE
        }
        Err(Ok((name, number))) => {
            eprintln!(
                "faultline: interrupted by {name}; the servers, proxies, clients and namespaces it \
                 started are stopped"
            );
            ExitCode::from(128 + number)
        }
        Err(Err(e)) => {
            eprintln!("faultline: error: cannot watch for SIGINT and SIGTERM: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves when the process is asked to stop: SIGTERM (a `timeout`, CI cancelling a job) or,
/// if `on_ctrl_c`, SIGINT (Ctrl-C); with the signal's name and number, for the exit status
/// 128 + number that shells expect (130, 143).
async fn interrupted(on_ctrl_c: bool) -> std::io::Result<(&'static str, u8)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => Ok(("SIGTERM", 15)),
        _ = interrupt.recv(), if on_ctrl_c => Ok(("SIGINT", 2)),
    }
}

/// Where the harness's own tracing goes: with `RUST_LOG`, to the terminal as it asks;
/// without, at `info` to a file beside the servers' logs (returned, and named at the end), so
/// that the terminal keeps to progress and verdicts — a warning that a fault's expected
/// consequence produces (a proxy resetting clients while the server is down on purpose) is
/// not the person's to read there.
fn init_tracing() -> Option<std::path::PathBuf> {
    use tracing_subscriber::EnvFilter;
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
        return None;
    }
    let dir = faultline::supervise::log_dir();
    let path = dir.join(format!("faultline.{}.log", std::process::id()));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(&path)) {
        Ok(file) => {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("info"))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
            Some(path)
        }
        Err(e) => {
            eprintln!(
                "faultline: cannot write its log to {} ({e}); warnings go to the terminal",
                path.display()
            );
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("warn"))
                .with_writer(std::io::stderr)
                .init();
            None
        }
    }
}
