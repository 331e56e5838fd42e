//! Recovery latency against the real livekit-server, printed (not asserted): how long from
//! the moment recovery can begin to `Reconnected`, median over repeated runs.
//!
//! - resume: `SignalReconnect` asked → `Reconnected` (new socket, ICE restarts).
//! - full reconnect: `FullReconnect` asked → `Reconnected` (new join, new peer connections).
//! - outage healed: a proxy in front of signalling killed until the room is `Reconnecting`,
//!   then healed → `Reconnected`; includes waiting out the backoff of the default policy.
//!
//! Run: `cargo bench -p faultline-suites --bench recovery` (`RUNS=n` to change the count).

use std::time::Duration;

use anyhow::{Context, Result};
use faultline::check::EventLog;
use faultline::proxy::Proxy;
use faultline::server::LiveKitServer;
use faultline_sdk::{Room, RoomEvent, RoomOptions, SimulateScenario};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

async fn join(server: &LiveKitServer, url: &str, room: &str) -> Result<(Room, EventLog)> {
    let token = server.token(room, "bench")?;
    let (room, events) = Room::connect(url, &token, RoomOptions::default()).await?;
    Ok((room, EventLog::new(events)))
}

async fn reconnected(log: &mut EventLog) -> Result<()> {
    log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    Ok(())
}

/// One run of a simulated scenario: asked → Reconnected.
async fn simulated(
    server: &LiveKitServer,
    scenario: SimulateScenario,
    run: usize,
) -> Result<Duration> {
    let (room, mut log) =
        join(server, &server.ws_url(), &format!("bench-{scenario:?}-{run}")).await?;
    let started = Instant::now();
    room.simulate_scenario(scenario).await?;
    reconnected(&mut log).await?;
    let took = started.elapsed();
    room.close().await?;
    Ok(took)
}

/// One run of a signalling outage through a killed proxy: healed → Reconnected.
async fn outage(server: &LiveKitServer, run: usize) -> Result<Duration> {
    let proxy = Proxy::start(server.signal_addr()).await?;
    let (room, mut log) = join(server, &proxy.ws_url(), &format!("bench-outage-{run}")).await?;
    proxy.kill().await?;
    log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    proxy.heal().await?;
    let healed = Instant::now();
    reconnected(&mut log).await?;
    let took = healed.elapsed();
    room.close().await?;
    Ok(took)
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{name:<16} runs {:>3}  median {:>8.1} ms  min {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(10).max(1);
    let server = LiveKitServer::shared().await.context("starting livekit-server")?;
    let mut resume = Vec::new();
    let mut full = Vec::new();
    let mut healed = Vec::new();
    for run in 0..runs {
        resume.push(simulated(&server, SimulateScenario::SignalReconnect, run).await?);
        full.push(simulated(&server, SimulateScenario::FullReconnect, run).await?);
        healed.push(outage(&server, run).await?);
    }
    println!("recovery latency against livekit-server {}:", server.version());
    report("resume", resume);
    report("full reconnect", full);
    report("outage healed", healed);
    Ok(())
}
