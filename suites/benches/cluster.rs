//! The cluster lane's recovery time, printed (not asserted): N faultline-sdk clients in one
//! room on node 0 of a two-node cluster, their signalling through node 0 too; node 0 is
//! SIGKILLed, and each client's time from the kill to `Reconnected` (a full reconnect on the
//! other node) is measured. For N = 1, 10 and 50 clients in one process: the median and the
//! slowest client per run, and how they grow with N.
//!
//! Run: `cargo bench -p faultline-suites --bench cluster`. `RUNS=n` changes the runs per N
//! (default 3), `CLIENTS=1,10` the sizes (default 1,10,50).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::cluster::{Cluster, ClusterOptions};
use faultline::event_log::EventLog;
use faultline::proxy::Proxy;
use faultline::token::TokenSpec;
use faultline_sdk::{Room, RoomEvent, RoomOptions};
use tokio::time::Instant;

/// Bound on any one wait: a default-policy episode of faultline-sdk ends well within it.
const WAIT: Duration = Duration::from_secs(90);

struct Member {
    room: Room,
    log: EventLog,
    _proxy: Proxy,
}

/// Joins `n` clients to `room` through node 0; returns them once each is Connected.
async fn join_all(cluster: &Cluster, room: &str, n: usize) -> Result<Vec<Member>> {
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let identity = format!("c{i}");
        let route = cluster.route(&identity, 0)?;
        let proxy = Proxy::start_routed(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), route).await?;
        let token = cluster.token_with(&TokenSpec::join(room, &identity))?;
        let (joined, events) = Room::connect(&proxy.ws_url(), &token, RoomOptions::default())
            .await
            .with_context(|| format!("{identity} joining {room}"))?;
        let mut log = EventLog::new(events);
        log.wait_for("Connected", WAIT, |e| *e == RoomEvent::Connected).await?;
        members.push(Member { room: joined, log, _proxy: proxy });
    }
    Ok(members)
}

/// One run with `n` clients: each client's time from the kill to `Reconnected`, sorted.
async fn run(n: usize, index: usize) -> Result<Vec<Duration>> {
    let cluster =
        Cluster::start(ClusterOptions::new(2, &format!("bench-cluster-{n}-{index}"))).await?;
    let room = format!("bench-cluster-{n}-{index}-{}", std::process::id());
    cluster.place_room(&room, 0).await?;
    let mut members = join_all(&cluster, &room, n).await?;
    let killed = Instant::now();
    cluster.kill(0).await?;
    let waits = members.iter_mut().map(|m| async move {
        m.log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
        Ok::<_, anyhow::Error>(killed.elapsed())
    });
    let mut took: Vec<Duration> =
        futures_util::future::try_join_all(waits).await?.into_iter().collect();
    ensure!(cluster.room_node(&room).await? == Some(1), "the room came back on node 1");
    for m in &members {
        m.room.close().await?;
    }
    took.sort();
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let sizes: Vec<usize> = std::env::var("CLIENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50]);
    println!(
        "node kill → Reconnected (full reconnect on the surviving node), faultline-sdk clients"
    );
    for n in sizes {
        let mut medians = Vec::new();
        let mut slowest = Vec::new();
        for index in 0..runs {
            let took = run(n, index).await.with_context(|| format!("{n} clients, run {index}"))?;
            medians.push(took[took.len() / 2]);
            slowest.push(took[took.len() - 1]);
        }
        medians.sort();
        slowest.sort();
        println!(
            "clients {n:>3}  runs {runs}  median client {:>7.0} ms (runs {:>7.0}–{:>7.0})  slowest client {:>7.0} ms (runs {:>7.0}–{:>7.0})",
            ms(medians[medians.len() / 2]),
            ms(medians[0]),
            ms(medians[medians.len() - 1]),
            ms(slowest[slowest.len() / 2]),
            ms(slowest[0]),
            ms(slowest[slowest.len() - 1]),
        );
    }
    Ok(())
}
