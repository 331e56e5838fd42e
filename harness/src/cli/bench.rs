//! `faultline bench servers`: how long a first build of each program takes, and how long a
//! server takes to start from the cache; `faultline bench sim`: how fast the simulation
//! lane runs (see `sim`); `faultline bench link`: what the user-space link emulator does to
//! real packets (see `link`). Figures are printed, not asserted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use faultline::provision::{self, Program, ProvisionEnv, Source};
use faultline::server::{LiveKitServer, ServerOptions};
use faultline::toxiproxy::{Toxiproxy, ToxiproxyOptions};

/// Options of `faultline bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

mod link;
mod sim;

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Simulated seconds per wall second of a two-participant room, and fault schedules
    /// explored per minute.
    Sim {
        /// Fault-free two-participant runs to time.
        #[arg(long, default_value_t = 10)]
        rooms: u32,
        /// Schedules to explore.
        #[arg(long, default_value_t = 60)]
        cases: u64,
        /// Exploration threads (default: one per CPU).
        #[arg(long)]
        jobs: Option<usize>,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The user-space link emulator on real packets in network namespaces (needs root): its
    /// own latency, delay accuracy at 10 Mbit/s, jitter, throughput, loss, duplication,
    /// Gilbert–Elliott bursts and a replayed trace, against what was set.
    Link {
        /// Datagrams in the delay-accuracy stream (1250 B, one a millisecond: 10 Mbit/s).
        #[arg(long, default_value_t = 5000)]
        packets: u32,
        /// Seeds the emulated conditions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// First-build time of livekit-server and toxiproxy, and cached start times.
    Servers {
        /// The cache to build into. A first build is measured only when it holds no binary
        /// yet; default: a new empty directory under the system temp dir (removed after).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// How many cached starts of each program to time.
        #[arg(long, default_value_t = 7)]
        starts: usize,
        /// The livekit-server version.
        #[arg(long = "version", default_value = provision::DEFAULT_LIVEKIT_VERSION)]
        livekit_version: String,
    },
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (cache, starts, livekit_version) = match args.what {
        What::Servers { cache, starts, livekit_version } => (cache, starts, livekit_version),
        What::Sim { rooms, cases, jobs, seed } => {
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
            sim::run(rooms, cases, jobs, seed).await?;
            return Ok(ExitCode::SUCCESS);
        }
        What::Link { packets, seed } => {
            link::run(packets, seed).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let temp;
    let cache_dir = match cache {
        Some(dir) => dir,
        None => {
            temp = tempfile::Builder::new().prefix("faultline-bench-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // Only the cache and go install may provide the programs, so a build is measured.
    let env = ProvisionEnv {
        cache_dir,
        livekit_url: None,
        livekit_server_bin: None,
        toxiproxy_server_bin: None,
        ..ProvisionEnv::from_env()
    };
    println!("cache: {}", env.cache_dir.display());
    for (program, version) in [
        (Program::Toxiproxy, provision::DEFAULT_TOXIPROXY_VERSION),
        (Program::LiveKitServer, livekit_version.as_str()),
    ] {
        let started = Instant::now();
        let provisioned = provision::provision(program, version, &env)
            .await
            .with_context(|| format!("provisioning {program} {version}"))?;
        let elapsed = started.elapsed();
        match &provisioned.source {
            Source::GoInstall(_) => {
                println!(
                    "first build of {program} {version} (go install): {:.1} s",
                    elapsed.as_secs_f64()
                )
            }
            other => println!("{program} {version}: no build measured, provided by {other}"),
        }
    }

    let mut livekit = Vec::new();
    for _ in 0..starts {
        let opts = ServerOptions {
            version: livekit_version.clone(),
            env: env.clone(),
            name: Some("bench".into()),
            ..ServerOptions::default()
        };
        let started = Instant::now();
        let server = LiveKitServer::start(opts).await.context("starting livekit-server")?;
        livekit.push(started.elapsed());
        drop(server);
    }
    let mut toxiproxy = Vec::new();
    for _ in 0..starts {
        let opts =
            ToxiproxyOptions { env: env.clone(), name: Some("bench".into()), ..Default::default() };
        let started = Instant::now();
        let proxy = Toxiproxy::start(opts).await.context("starting toxiproxy")?;
        toxiproxy.push(started.elapsed());
        drop(proxy);
    }
    println!("cached start of livekit-server until GET / answers: {}", summary(&mut livekit));
    println!("cached start of toxiproxy until GET /version answers: {}", summary(&mut toxiproxy));
    Ok(ExitCode::SUCCESS)
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match (samples.first(), samples.get(samples.len() / 2), samples.last()) {
        (Some(min), Some(median), Some(max)) => format!(
            "median {:.0} ms (min {:.0}, max {:.0}, n={})",
            ms(*median),
            ms(*min),
            ms(*max),
            samples.len()
        ),
        _ => "no samples".into(),
    }
}
