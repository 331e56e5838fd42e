//! What media costs, printed (not asserted):
//!
//! - **client**: one faultline-sdk client publishing synthetic audio and 30 fps VP8 video
//!   against the real livekit-server, for `SECS` seconds (default 20). Process CPU time
//!   (user + system, all threads, from `/proc/self/stat`) over three windows of that length:
//!   the publisher joined and idle (the baseline); the publisher publishing with nobody
//!   subscribed (the server receives, forwards nothing); and the same with a second
//!   faultline-sdk client in this process subscribed to both tracks (one publisher + one
//!   subscriber). Printed as % of one core above the baseline, with the resident set's
//!   growth (VmRSS), and livekit-server's own CPU over each window for context.
//! - **recorder**: the harness's cost per media sample at 50 subscribed tracks: a synthetic
//!   record of one subscriber receiving 25 publishers' audio and video (50 tracks), a
//!   `Media` sample every 100 ms for 60 s (600 samples, 30 000 counts), with one
//!   reconnect episode of the subscriber and a gap in the middle. Times
//!   `faultline::flow::flows_of` and `faultline::judge::violations` over it (median of
//!   `REPEATS`, default 15) and the record's heap size.
//!
//! Run: `cargo bench -p faultline-suites --bench media`. `CASES=client` or
//! `CASES=recorder` picks one part. Linux only (reads `/proc`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::client::{ClientEvent, MediaCount};
use faultline::flow::flows_of;
use faultline::record::{EventRecord, ParticipantRecord, RunRecord};
use faultline::scenario::format::Lane;
use faultline::server::LiveKitServer;
use faultline_sdk::{ConnectionState, LocalTrack, Room, RoomOptions, TrackSource};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (this bench needs Linux)"))?;
    // Fields after the command's closing parenthesis, from field 3 (state) on.
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / ticks_per_second)
}

/// This process's resident set, in MB.
fn rss_mb() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    let kb: f64 = line.split_whitespace().nth(1).context("VmRSS kB")?.parse()?;
    Ok(kb / 1024.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU used over one window, by this process and by the server.
struct Window {
    own: f64,
    server: Option<f64>,
    wall: f64,
    rss_after: f64,
}

async fn window(secs: u64, ticks: f64, server_pid: Option<&str>) -> Result<Window> {
    let own0 = cpu_seconds("self", ticks)?;
    let server0 = server_pid.map(|p| cpu_seconds(p, ticks)).transpose()?;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = started.elapsed().as_secs_f64();
    let own = cpu_seconds("self", ticks)? - own0;
    let server = match (server_pid, server0) {
        (Some(p), Some(s0)) => Some(cpu_seconds(p, ticks)? - s0),
        _ => None,
    };
    Ok(Window { own, server, wall, rss_after: rss_mb()? })
}

/// Joins `identity` to `room` and drains its events (so nothing queues up unread).
async fn join(server: &LiveKitServer, room: &str, identity: &str) -> Result<Room> {
    let token = server.token(room, identity)?;
    let (joined, mut events) = Room::connect(&server.ws_url(), &token, RoomOptions::default())
        .await
        .with_context(|| format!("{identity} joining {room}"))?;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    Ok(joined)
}

/// Waits until `room` has received `frames` frames of `from`'s `source`.
async fn frames_from(room: &Room, from: &str, source: TrackSource, frames: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = room
            .subscribed_tracks()
            .into_iter()
            .filter(|(who, t)| who == from && t.source() == source)
            .map(|(_, t)| t.stats().frames)
            .max()
            .unwrap_or(0);
        if got >= frames {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{frames} frames of {from}'s {source:?} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client_cost(secs: u64) -> Result<()> {
    let ticks = clock_ticks();
    let server = LiveKitServer::shared().await.context("starting livekit-server")?;
    let server_pid = server.pid().map(|p| p.to_string());
    let server_pid = server_pid.as_deref();
    let room = format!("bench-media-cost-{}", std::process::id());
    let publisher = join(&server, &room, "publisher").await?;
    // Let the join's own work settle before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_joined = rss_mb()?;
    let idle = window(secs, ticks, server_pid).await?;

    let local = publisher.local_participant();
    for track in [LocalTrack::audio("mic"), LocalTrack::video("cam", 30)] {
        tokio::time::timeout(WAIT, local.publish_track(track)).await??;
    }
    let rss_before_publishing = rss_mb()?;
    let alone = window(secs, ticks, server_pid).await?;

    let subscriber = join(&server, &room, "subscriber").await?;
    for source in [TrackSource::Microphone, TrackSource::Camera] {
        frames_from(&subscriber, "publisher", source, 5).await?;
    }
    let rss_before_subscribed = rss_mb()?;
    let both = window(secs, ticks, server_pid).await?;
    let stats: Vec<_> = subscriber
        .subscribed_tracks()
        .into_iter()
        .map(|(_, t)| format!("{:?} {} frames", t.source(), t.stats().frames))
        .collect();

    let pct = |w: &Window| w.own / w.wall * 100.0;
    let server_pct = |w: &Window| w.server.map(|s| s / w.wall * 100.0);
    let above = |w: &Window| (w.own - idle.own * w.wall / idle.wall) / w.wall * 100.0;
    println!(
        "client cost, faultline-sdk against livekit-server {} ({secs} s windows, CPU % of one \
         core, CLK_TCK {ticks}):",
        server.version()
    );
    let show = |name: &str, w: &Window, rss_from: f64, extra: Option<f64>| {
        let server = server_pct(w).map_or("?".to_owned(), |p| format!("{p:.1} %"));
        let extra = extra.map_or(String::new(), |e| format!("  above baseline {e:>5.1} %"));
        println!(
            "  {name:<44} process {:>5.1} %{extra}  RSS {:>6.1} MB ({:+.1} MB over the window)  \
             livekit-server {server}",
            pct(w),
            w.rss_after,
            w.rss_after - rss_from
        );
    };
    show("publisher joined, idle (baseline)", &idle, rss_joined, None);
    show(
        "publisher: audio + 30 fps video, no subscriber",
        &alone,
        rss_before_publishing,
        Some(above(&alone)),
    );
    show(
        "one publisher + one subscriber (same process)",
        &both,
        rss_before_subscribed,
        Some(above(&both)),
    );
    println!(
        "  RSS: {rss_joined:.1} MB joined → {:.1} MB after publishing {secs} s alone → {:.1} MB \
         after {secs} s with the subscriber; the subscriber received {}",
        alone.rss_after,
        both.rss_after,
        stats.join(", ")
    );
    subscriber.close().await?;
    publisher.close().await?;
    Ok(())
}

/// A record of one subscriber receiving `publishers` publishers' audio and video: a sample
/// every 100 ms for `secs` seconds; the subscriber resumes at the middle (1 s of no frames,
/// Reconnecting → Reconnected).
fn synthetic_record(publishers: usize, secs: u64) -> RunRecord {
    let sub = "subscriber".to_owned();
    let names: Vec<String> = (0..publishers).map(|i| format!("publisher-{i:02}")).collect();
    let sources = [TrackSource::Microphone, TrackSource::Camera];
    let sid = |i: usize, s: TrackSource| format!("TR_{i:02}{}xxxxxxxx", s.name());
    let at = |ms: u64| Duration::from_millis(ms);
    let mut events = Vec::new();
    let mut event = |participant: &str, t: Duration, event: ClientEvent| {
        events.push(EventRecord { participant: participant.to_owned(), at: t, event })
    };
    event(&sub, at(0), ClientEvent::Connected);
    for name in &names {
        event(name, at(0), ClientEvent::Connected);
    }
    for (i, name) in names.iter().enumerate() {
        for s in sources {
            event(
                &sub,
                at(10),
                ClientEvent::TrackSubscribed { from: name.clone(), source: s, sid: sid(i, s) },
            );
        }
    }
    let samples = secs * 10;
    let (stop, resume) = (samples / 2, samples / 2 + 10);
    let mut frames = 0u64;
    for n in 1..=samples {
        let t = at(n * 100);
        if n == stop {
            event(&sub, t, ClientEvent::Reconnecting);
        }
        if n == resume {
            event(&sub, t, ClientEvent::Reconnected);
        }
        if !(stop..resume).contains(&n) {
            frames += 3;
        }
        let tracks = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| sources.into_iter().map(move |s| (i, name, s)))
            .map(|(i, name, s)| MediaCount {
                from: name.clone(),
                source: s,
                sid: sid(i, s),
                frames: if s == TrackSource::Microphone { frames * 5 / 3 } else { frames },
                decoded: None,
            })
            .collect();
        event(&sub, t, ClientEvent::Media { tracks });
    }
    let everyone: Vec<String> = std::iter::once(sub.clone()).chain(names.iter().cloned()).collect();
    RunRecord {
        scenario: "bench".into(),
        description: "synthetic".into(),
        file: "bench.toml".into(),
        lane: Lane::Real,
        seed: 0,
        room: "bench".into(),
        participants: everyone
            .iter()
            .map(|p| ParticipantRecord::faultline(p, &RoomOptions::default()))
            .collect(),
        timeline_zero: at(20),
        ended: at(samples * 100 + 1),
        faults: Vec::new(),
        events,
        final_states: everyone.iter().map(|p| (p.clone(), ConnectionState::Connected)).collect(),
        verdicts: Vec::new(),
        logs: Vec::new(),
        cluster: Vec::new(),
    }
}

/// The heap bytes `record`'s events hold, and how many media counts they are (vectors' capacity and strings').
fn heap_bytes(record: &RunRecord) -> (usize, usize) {
    let mut bytes = record.events.capacity() * std::mem::size_of::<EventRecord>();
    let mut counts = 0;
    for e in &record.events {
        bytes += e.participant.capacity();
        if let ClientEvent::Media { tracks } = &e.event {
            counts += tracks.len();
            bytes += tracks.capacity() * std::mem::size_of::<MediaCount>();
            bytes += tracks.iter().map(|t| t.from.capacity() + t.sid.capacity()).sum::<usize>();
        }
    }
    (bytes, counts)
}

fn median_of<T>(repeats: usize, mut run: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let started = std::time::Instant::now();
        let out = std::hint::black_box(run());
        times.push(started.elapsed());
        last = Some(out);
    }
    times.sort();
    (times[times.len() / 2], times[0], last.expect("at least one run"))
}

fn recorder_cost(repeats: usize) -> Result<()> {
    let (publishers, secs) = (25, 60);
    let rss0 = rss_mb()?;
    let record = synthetic_record(publishers, secs);
    let rss1 = rss_mb()?;
    let (bytes, counts) = heap_bytes(&record);
    let samples =
        record.events.iter().filter(|e| matches!(e.event, ClientEvent::Media { .. })).count();
    println!(
        "recorder cost at {} subscribed tracks ({} publishers × audio + video, one subscriber), \
         a sample every 100 ms for {secs} s: {samples} samples, {counts} counts, {} events",
        publishers * 2,
        publishers,
        record.events.len()
    );
    println!(
        "  record: {:.2} MB on the heap ({:.0} B per count; EventRecord {} B, MediaCount {} B); \
         RSS grew {:.1} MB building it",
        bytes as f64 / 1e6,
        bytes as f64 / counts as f64,
        std::mem::size_of::<EventRecord>(),
        std::mem::size_of::<MediaCount>(),
        rss1 - rss0
    );
    let (median, min, flows) =
        median_of(repeats, || flows_of(&record.events, record.timeline_zero));
    ensure!(flows.len() == publishers * 2, "one flow per track: {}", flows.len());
    println!(
        "  flow::flows_of      median {:>8.2} ms  min {:>8.2} ms  ({:.0} ns per count, {:.1} µs per \
         sample; {repeats} runs)",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e9 / counts as f64,
        median.as_secs_f64() * 1e6 / samples as f64
    );
    let (median, min, found) = median_of(repeats, || faultline::judge::violations(&record));
    println!(
        "  judge::violations   median {:>8.2} ms  min {:>8.2} ms  ({:.0} ns per count, {:.1} µs per \
         sample; {} violations, as built: frames back 0.1 s after Reconnected; {repeats} runs)",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e9 / counts as f64,
        median.as_secs_f64() * 1e6 / samples as f64,
        found.len()
    );
    for v in found.iter().take(3) {
        println!("    {v}");
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cases = std::env::var("CASES").unwrap_or_default();
    let wanted = |case: &str| cases.is_empty() || cases.split(',').any(|c| c.trim() == case);
    let secs: u64 = std::env::var("SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20).max(1);
    let repeats: usize =
        std::env::var("REPEATS").ok().and_then(|s| s.parse().ok()).unwrap_or(15).max(1);
    if wanted("client") {
        client_cost(secs).await?;
    }
    if wanted("recorder") {
        recorder_cost(repeats)?;
    }
    Ok(())
}
