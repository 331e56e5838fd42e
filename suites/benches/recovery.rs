//! Recovery latency against the real livekit-server, for each SDK, printed (not asserted):
//! how long from the moment recovery can begin to `Reconnected`; median, min and max over
//! repeated runs.
//!
//! - signal-reconnect, full-reconnect, disconnect-signal-on-resume: the scenario asked →
//!   `Reconnected`.
//! - outage healed: a proxy in front of signalling killed until the room's episode starts
//!   (and then for 0, 2, 5 or 10 s more), then healed → `Reconnected` (includes whatever
//!   is left of the SDK's backoff wait when the link comes back).
//! - media black hole: all media dropped (faultline-sdk: its socket wrapper; the other SDKs:
//!   the kernel, the client in a network namespace of its own); time to detect (drop → the
//!   episode starts), then healed → `Reconnected`.
//! - dark link: the same, but the whole link goes dark (a tunnel): media dropped and
//!   signalling held (faultline-sdk: its socket wrapper holds the streams and refuses new
//!   ones; the other SDKs: the kernel drops everything on the client's link).
//! - force-tcp: on a server with ICE/TCP (in a network namespace of its own), the server is
//!   asked to move the client to TCP candidates while a peer publishes a packet every
//!   100 ms; the time from the ask to the first of the peer's packets published after it
//!   arriving, and how the client got there (an episode, or none). For faultline-sdk,
//!   nothing reaches its UDP sockets after the ask, so those packets can only come over
//!   TCP.
//! - force-tls: on a server with its TURN relay on, the same ticking peer; `ForceTls`, then a
//!   resume asked at once (its ReconnectResponse carries `force_relay`): asked →
//!   `Reconnected`. Then, for faultline-sdk, every UDP path but the relay is cut: cut → the
//!   first of the peer's packets published after the cut arriving.
//!
//! - media: a faultline-sdk peer publishes audio and 30 fps video to the client, which is
//!   then asked for a signalling resume or a full reconnect (`media`), or has its media
//!   black-holed until its episode starts (`media-black-hole`; faultline-sdk: its socket
//!   wrapper; the other SDKs: the kernel). Measured from the ask (or the heal) at the
//!   client: the moment the peer's video came back (the end of the longest stretch without
//!   a new frame), that longest stretch, and `Reconnected`; beside them the floor the
//!   protocol allows — detection (0: the ask or the heal is the start) + one signalling
//!   round trip + a key-frame round trip (PLI to the publisher and a frame back: one more
//!   round trip) + one frame interval (33.3 ms), with the loopback round trip measured as a
//!   TCP connect to the server — and the floor given this client's own `Reconnected` (its
//!   `Reconnected` + a key-frame round trip + a frame interval). faultline-sdk's frame times
//!   are read from its subscribed tracks every 2 ms; the other SDKs' from their `media`
//!   samples (every 100 ms, so ±100 ms), through `faultline::flow`, which faultline-sdk's
//!   samples are also printed through for comparison.
//!
//! Run: `cargo bench -p faultline-suites --bench recovery`. `RUNS=n` changes the count
//! (default 5), `SDKS=faultline,js` the SDKs (default all four), `CASES=outage` the cases
//! (of `simulate`, `outage`, `black-hole`, `dark-link`, `force-tcp`, `force-tls`, `media`,
//! `media-black-hole`; default all). `MEDIA_DUMP=1` prints each media run's events and
//! faultline-sdk's frame times.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use faultline::client::{Client, ClientOptions, Sdk};
use faultline::event_log::{ClientEvent, EventLog, Lifecycle, Observed};
use faultline::flow::{flows_of, Flow, TrackKey};
use faultline::net::{Direction, FaultyNetwork, NetFaults};
use faultline::netns::{Namespace, Scope, Topology};
use faultline::provision::ProvisionEnv;
use faultline::proxy::Proxy;
use faultline::server::{LiveKitServer, ServerOptions};
use faultline::sim::schedule::SimulateKind;
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{RoomOptions, TrackSource};
use tokio::time::Instant;

/// Bound on any one wait: longer than a default-policy exhaustion of any SDK.
const WAIT: Duration = Duration::from_secs(90);

struct Joined {
    client: Client,
    log: EventLog<ClientEvent>,
    /// When the log's clock started (its events' times count from here).
    log_started: Instant,
    media: Option<NetFaults>,
}

async fn join(server: &LiveKitServer, sdk: Sdk, url: &str, room: &str) -> Result<Joined> {
    join_with(server, sdk, url, room, "bench", None).await
}

/// Joins the server of a [`Kernel`] from the client namespace `namespace`.
async fn join_in(
    server: &LiveKitServer,
    sdk: Sdk,
    room: &str,
    namespace: Option<Namespace>,
) -> Result<Joined> {
    join_with(server, sdk, &server.ws_url(), room, "bench", namespace).await
}

async fn join_with(
    server: &LiveKitServer,
    sdk: Sdk,
    url: &str,
    room: &str,
    identity: &str,
    namespace: Option<Namespace>,
) -> Result<Joined> {
    let token = server.token(room, identity)?;
    let mut options = ClientOptions { namespace, ..ClientOptions::default() };
    let mut media = None;
    if sdk == Sdk::Faultline {
        let network = FaultyNetwork::new(Arc::new(TokioNetwork), 1);
        media = Some(network.faults());
        options.faultline = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    }
    let (client, events) = Client::connect(sdk, url, &token, options, &ProvisionEnv::from_env())
        .await
        .with_context(|| format!("{sdk} joining {room}"))?;
    let log_started = Instant::now();
    let mut log = EventLog::starting_at(events, log_started);
    log.wait_for("Connected", WAIT, |e| *e == ClientEvent::Connected).await?;
    Ok(Joined { client, log, log_started, media })
}

impl Joined {
    async fn reconnected(&mut self) -> Result<()> {
        self.log.wait_for("Reconnected", WAIT, |e| *e == ClientEvent::Reconnected).await?;
        Ok(())
    }

    async fn episode_starts(&mut self) -> Result<()> {
        self.log
            .wait_for("the episode's start", WAIT, |e| {
                e.lifecycle().is_some_and(Lifecycle::opens_episode)
            })
            .await?;
        Ok(())
    }
}

/// One run of a simulated scenario: asked → Reconnected.
async fn simulated(
    server: &LiveKitServer,
    sdk: Sdk,
    scenario: SimulateKind,
    run: usize,
) -> Result<Duration> {
    let room = format!("bench-{sdk}-{scenario:?}-{run}-{}", std::process::id());
    let mut p = join(server, sdk, &server.ws_url(), &room).await?;
    let started = Instant::now();
    p.client.simulate(scenario).await?;
    p.reconnected().await?;
    let took = started.elapsed();
    p.client.close().await?;
    Ok(took)
}

/// One run of a signalling outage through a killed proxy, `lasting` past the episode's
/// start: healed → Reconnected.
async fn outage(
    server: &LiveKitServer,
    sdk: Sdk,
    lasting: Duration,
    run: usize,
) -> Result<Duration> {
    let proxy = Proxy::start(server.signal_addr()).await?;
    let room = format!("bench-{sdk}-outage-{}-{run}-{}", lasting.as_secs(), std::process::id());
    let mut p = join(server, sdk, &proxy.ws_url(), &room).await?;
    proxy.kill().await?;
    p.episode_starts().await?;
    // The outage's length is what is measured against: a fixed wait is the point here.
    tokio::time::sleep(lasting).await;
    proxy.heal().await?;
    let healed = Instant::now();
    p.reconnected().await?;
    let took = healed.elapsed();
    p.client.close().await?;
    Ok(took)
}

/// Where another SDK's media can be dropped by the kernel: a server in a network namespace
/// and one client link.
struct Kernel {
    topology: Topology,
    server: LiveKitServer,
}

impl Kernel {
    async fn start() -> Result<Kernel> {
        let topology = Topology::create(1).await?;
        let options = ServerOptions {
            netns: Some(topology.server().clone()),
            name: Some("bench-netns".into()),
            ..ServerOptions::default()
        };
        let server = LiveKitServer::start(options).await?;
        Ok(Kernel { topology, server })
    }
}

/// One run of a media black hole (`scope` [`Scope::Media`]) or a dark link ([`Scope::Link`]):
/// (drop → episode starts, heal → Reconnected).
async fn black_hole(
    server: &LiveKitServer,
    kernel: Option<&Kernel>,
    sdk: Sdk,
    scope: Scope,
    run: usize,
) -> Result<(Duration, Duration)> {
    let room = format!("bench-{sdk}-{scope:?}-{run}-{}", std::process::id());
    let link = kernel.map(|k| &k.topology.clients()[0]);
    let mut p = match kernel {
        Some(k) => join_in(&k.server, sdk, &room, link.map(|l| l.namespace().clone())).await?,
        None => join(server, sdk, &server.ws_url(), &room).await?,
    };
    match (&p.media, link) {
        (Some(media), _) => {
            if scope == Scope::Link {
                media.refuse_new_signalling();
                media.hold_signalling();
            }
            media.partition_media(Direction::Both);
        }
        (None, Some(link)) => link.partition(scope).await?,
        (None, None) => anyhow::bail!("{sdk}: no way to drop its media"),
    }
    let dropped = Instant::now();
    p.episode_starts().await?;
    let detected = dropped.elapsed();
    match (&p.media, link) {
        (Some(media), _) => media.heal(),
        (None, Some(link)) => link.heal().await?,
        (None, None) => {}
    }
    let healed = Instant::now();
    p.reconnected().await?;
    let recovered = healed.elapsed();
    p.client.close().await?;
    Ok((detected, recovered))
}

/// A faultline-sdk peer in `room` publishing a numbered packet every 100 ms, seen by `p`.
struct Ticks {
    /// The number the next tick takes: a tick numbered at or past its value at some moment
    /// was published after it.
    next: Arc<AtomicU32>,
    publishing: tokio::task::JoinHandle<()>,
}

impl Ticks {
    /// Joins the peer and starts ticking; returns once `p` has received a tick.
    async fn start(server: &LiveKitServer, room: &str, p: &mut Joined) -> Result<Ticks> {
        let peer = join_with(server, Sdk::Faultline, &server.ws_url(), room, "peer", None).await?;
        p.log
            .wait_for("the peer joining", WAIT, |e| {
                matches!(e, ClientEvent::ParticipantConnected { identity, .. } if identity == "peer")
            })
            .await?;
        let next = Arc::new(AtomicU32::new(0));
        let numbers = Arc::clone(&next);
        let publishing = tokio::spawn(async move {
            loop {
                // Each tick takes its number just before it is published.
                let n = numbers.fetch_add(1, Ordering::SeqCst);
                if peer.client.publish(&n.to_be_bytes(), Some("tick"), true, &[]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        p.log.wait_for("a tick", WAIT, |e| matches!(e, ClientEvent::DataReceived { .. })).await?;
        Ok(Ticks { next, publishing })
    }

    /// The number of the first tick published from now on.
    fn mark(&self) -> u32 {
        self.next.load(Ordering::SeqCst)
    }

    /// Waits until `p` receives a tick numbered `first` or later.
    async fn arrives(&self, p: &mut Joined, first: u32) -> Result<()> {
        p.log
            .wait_for("a tick published after the mark", WAIT, |e| match e {
                ClientEvent::DataReceived { payload, .. } => {
                    payload.as_slice().try_into().is_ok_and(|b| u32::from_be_bytes(b) >= first)
                }
                _ => false,
            })
            .await?;
        Ok(())
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        self.publishing.abort();
    }
}

/// How a client came through `ForceTcp`.
struct ForcedTcp {
    /// Asked → the first of the peer's packets published after the ask arrives.
    data_back: Duration,
    /// Asked → `Reconnected`, if the client went through an episode.
    episode: Option<Duration>,
}

/// One run of `ForceTcp` on the [`Kernel`]'s server (ICE/TCP on), with a faultline-sdk peer
/// in the root namespace publishing a numbered packet every 100 ms.
async fn force_tcp(kernel: &Kernel, sdk: Sdk, run: usize) -> Result<ForcedTcp> {
    let server = &kernel.server;
    let room = format!("bench-{sdk}-force-tcp-{run}-{}", std::process::id());
    let namespace = (!sdk.in_process()).then(|| kernel.topology.clients()[0].namespace().clone());
    let mut p = join_with(server, sdk, &server.ws_url(), &room, "bench", namespace).await?;
    let ticks = Ticks::start(server, &room, &mut p).await?;
    let asked = Instant::now();
    let first_after = ticks.mark();
    p.client.simulate(SimulateKind::ForceTcp).await?;
    if let Some(media) = &p.media {
        media.block_udp(Direction::Inbound);
    }
    ticks.arrives(&mut p, first_after).await?;
    let data_back = asked.elapsed();
    if let Some(media) = &p.media {
        media.heal();
    }
    p.log.poll();
    let since_ask = asked - p.log_started;
    let after_ask = |wanted: ClientEvent| {
        p.log.events().iter().find(|r| r.at >= since_ask && r.event == wanted).map(|r| r.at)
    };
    let episode = match (after_ask(ClientEvent::Reconnecting), after_ask(ClientEvent::Reconnected))
    {
        (None, _) => None,
        (Some(_), Some(at)) => Some(at - since_ask),
        (Some(_), None) => {
            p.reconnected().await?;
            Some(asked.elapsed())
        }
    };
    drop(ticks);
    p.client.close().await?;
    Ok(ForcedTcp { data_back, episode })
}

/// How a client came through `ForceTls` and the resume after it.
struct ForcedTls {
    /// The resume asked → `Reconnected`.
    resumed: Duration,
    /// Every UDP path but the relay cut → the first of the peer's packets published after
    /// the cut arriving (faultline-sdk only: its socket wrapper makes the cut).
    relay_only_data_back: Option<Duration>,
}

/// One run of `ForceTls` and a resume on a server with its TURN relay on (`relay`), with a
/// faultline-sdk peer publishing a numbered packet every 100 ms.
async fn force_tls(
    server: &LiveKitServer,
    relay: SocketAddr,
    sdk: Sdk,
    run: usize,
) -> Result<ForcedTls> {
    let room = format!("bench-{sdk}-force-tls-{run}-{}", std::process::id());
    let mut p = join_with(server, sdk, &server.ws_url(), &room, "bench", None).await?;
    let ticks = Ticks::start(server, &room, &mut p).await?;
    p.client.simulate(SimulateKind::ForceTls).await?;
    let asked = Instant::now();
    p.client.simulate(SimulateKind::SignalReconnect).await?;
    p.reconnected().await?;
    let resumed = asked.elapsed();
    let mut relay_only_data_back = None;
    if let Some(media) = p.media.clone() {
        let first_after = ticks.mark();
        media.block_udp_except(relay);
        let cut = Instant::now();
        ticks.arrives(&mut p, first_after).await?;
        relay_only_data_back = Some(cut.elapsed());
        media.heal();
    }
    drop(ticks);
    p.client.close().await?;
    Ok(ForcedTls { resumed, relay_only_data_back })
}

/// A faultline-sdk peer in `room` publishing audio and 30 fps video, received by `p`.
struct MediaPeer {
    _peer: Joined,
}

impl MediaPeer {
    /// Joins the peer, publishes, and returns once `p` receives the peer's video.
    async fn start(server: &LiveKitServer, room: &str, p: &mut Joined) -> Result<MediaPeer> {
        let peer = join_with(server, Sdk::Faultline, &server.ws_url(), room, "peer", None).await?;
        for source in [TrackSource::Microphone, TrackSource::Camera] {
            tokio::time::timeout(WAIT, peer.client.publish_track(source)).await??;
        }
        p.log
            .wait_for("the peer's video", WAIT, |e| match e {
                ClientEvent::Media { tracks } => tracks
                    .iter()
                    .any(|t| t.from == "peer" && t.source == TrackSource::Camera && t.frames >= 5),
                _ => false,
            })
            .await?;
        Ok(MediaPeer { _peer: peer })
    }
}

/// The loopback round trip to `server`'s signalling port: the median of 21 TCP connects.
async fn loopback_rtt(server: &LiveKitServer) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        let stream = tokio::net::TcpStream::connect(server.signal_addr()).await?;
        samples.push(started.elapsed());
        drop(stream);
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// What the peer's video did around one fault, at the faulted client, from the fault's
/// start (the ask, or the heal).
struct MediaBack {
    /// → the end of the longest stretch without a new video frame (`None`: none longer than
    /// three frame intervals, i.e. the video did not stop).
    back: Option<Duration>,
    /// That longest stretch.
    gap: Duration,
    /// The same two from the client's 100 ms `media` samples (through `faultline::flow`).
    sampled_back: Option<Duration>,
    sampled_gap: Duration,
    /// The audio's longest stretch, from the samples.
    sampled_audio_gap: Duration,
    /// → the peer's camera subscribed again, if the fault ended the subscription.
    subscribed: Option<Duration>,
    /// → `Reconnected` (as the event log received it).
    reconnected: Duration,
}

/// The fault of one media run.
#[derive(Debug, Clone, Copy)]
enum MediaFault {
    Simulate(SimulateKind),
    BlackHole,
}

impl MediaFault {
    fn name(self) -> String {
        match self {
            MediaFault::Simulate(kind) => serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{kind:?}")),
            MediaFault::BlackHole => "media black hole (heal)".to_owned(),
        }
    }
}

/// The frame arrival times of `from`'s video at faultline-sdk's room, since `started`.
fn note_arrivals(
    room: &faultline_sdk::Room,
    started: Instant,
    arrivals: &mut std::collections::BTreeSet<Duration>,
) {
    for (who, track) in room.subscribed_tracks() {
        if who == "peer" && track.source() == TrackSource::Camera {
            if let Some(at) = track.stats().last_frame_at {
                arrivals.insert(at.saturating_duration_since(started));
            }
        }
    }
}

/// One media run: the peer publishing to `p` (of `sdk`), `fault`, and what came back.
async fn media_run(
    server: &LiveKitServer,
    kernel: Option<&Kernel>,
    sdk: Sdk,
    fault: MediaFault,
    run: usize,
) -> Result<MediaBack> {
    let room = format!(
        "bench-{sdk}-media-{}-{run}-{}",
        fault.name().replace(' ', "-"),
        std::process::id()
    );
    let link = kernel.map(|k| &k.topology.clients()[0]);
    let server = kernel.map_or(server, |k| &k.server);
    let mut p = join_with(
        server,
        sdk,
        &server.ws_url(),
        &room,
        "bench",
        link.map(|l| l.namespace().clone()),
    )
    .await?;
    let _peer = MediaPeer::start(server, &room, &mut p).await?;
    let mut arrivals = std::collections::BTreeSet::new();
    let poll = Duration::from_millis(2);
    // A second of steady video before the fault.
    let steady = Instant::now() + Duration::from_secs(1);
    while Instant::now() < steady {
        if let Some(room) = p.client.room() {
            note_arrivals(room, p.log_started, &mut arrivals);
        }
        // The log stamps an event when it is read: read it often.
        p.log.poll();
        tokio::time::sleep(poll).await;
    }
    let before = Instant::now() - Duration::from_secs(1);
    let start = match fault {
        MediaFault::Simulate(kind) => {
            let asked = Instant::now();
            p.client.simulate(kind).await?;
            asked
        }
        MediaFault::BlackHole => {
            match (&p.media, link) {
                (Some(media), _) => media.partition_media(Direction::Both),
                (None, Some(link)) => link.partition(Scope::Media).await?,
                (None, None) => anyhow::bail!("{sdk}: no way to drop its media"),
            }
            p.episode_starts().await?;
            match (&p.media, link) {
                (Some(media), _) => media.heal(),
                (None, Some(link)) => link.heal().await?,
                (None, None) => {}
            }
            Instant::now()
        }
    };
    let since = |t: Instant| t - p.log_started;
    let from = since(start);
    let camera = TrackKey {
        subscriber: String::new(),
        publisher: "peer".into(),
        source: TrackSource::Camera,
    };
    // Until Reconnected and then video for a second, or a deadline.
    let deadline = start + WAIT;
    let reconnected = loop {
        if let Some(room) = p.client.room() {
            note_arrivals(room, p.log_started, &mut arrivals);
        }
        p.log.poll();
        let reconnected = p
            .log
            .events()
            .iter()
            .find(|e| e.at >= from && e.event == ClientEvent::Reconnected)
            .map(|e| e.at);
        if let Some(at) = reconnected {
            let flows = flows_of(p.log.events(), Duration::ZERO);
            let sampled_since = flows.get(&camera).and_then(|f| f.first_after(at));
            let exact_since = arrivals.range(at..).next().copied();
            let now = since(Instant::now());
            let settled = |t: Option<Duration>| t.is_some_and(|t| now > t + Duration::from_secs(1));
            let back = if p.client.room().is_some() {
                settled(exact_since) && settled(sampled_since)
            } else {
                settled(sampled_since)
            };
            if back || now > at + Duration::from_secs(10) {
                break at;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{sdk}: no Reconnected within {WAIT:?}");
        tokio::time::sleep(poll).await;
    };
    let to = since(Instant::now());
    let from_before = since(before);
    if std::env::var_os("MEDIA_DUMP").is_some() {
        println!("--- {sdk} {} run {run}: from {:?}", fault.name(), from);
        for e in p.log.events().iter().filter(|e| e.at >= from_before) {
            match &e.event {
                ClientEvent::Media { tracks } => {
                    let counts: Vec<_> = tracks
                        .iter()
                        .map(|t| format!("{}/{}={}", t.source.name(), t.sid, t.frames))
                        .collect();
                    println!("{:>10.1?} media {}", e.at, counts.join(" "));
                }
                other => println!("{:>10.1?} {other:?}", e.at),
            }
        }
        let near: Vec<_> =
            arrivals.iter().filter(|t| **t >= from_before).map(|t| format!("{t:.0?}")).collect();
        println!("exact arrivals: {}", near.join(" "));
    }
    // The end of the longest stretch without a frame, from the fault's start, if the
    // stretch is longer than `stopped`.
    let back_of = |flow: &Flow, stopped: Duration| {
        let (gap, began) = flow.longest_gap(from_before, to);
        let back = (gap > stopped).then(|| (began + gap).saturating_sub(from));
        (back, gap)
    };
    let exact = Flow { advances: arrivals.into_iter().collect(), ..Flow::default() };
    let (back, gap) = back_of(&exact, Duration::from_millis(100));
    let flows = flows_of(p.log.events(), Duration::ZERO);
    let flow_of = |source| {
        let key = TrackKey { source, ..camera.clone() };
        flows.get(&key).cloned().unwrap_or_default()
    };
    let (sampled_back, sampled_gap) =
        back_of(&flow_of(TrackSource::Camera), Duration::from_millis(250));
    let (sampled_audio_gap, _) = flow_of(TrackSource::Microphone).longest_gap(from_before, to);
    let subscribed = p
        .log
        .events()
        .iter()
        .find(|e| {
            e.at >= from
                && matches!(&e.event, ClientEvent::TrackSubscribed { from, source, .. }
                    if from == "peer" && *source == TrackSource::Camera)
        })
        .map(|e| e.at - from);
    p.client.close().await?;
    Ok(MediaBack {
        back: if p.client.room().is_some() { back } else { sampled_back },
        gap: if p.client.room().is_some() { gap } else { sampled_gap },
        sampled_back,
        sampled_gap,
        sampled_audio_gap,
        subscribed,
        reconnected: reconnected.saturating_sub(from),
    })
}

/// Runs `fault` `runs` times for `sdk` and prints the figures beside the floors.
async fn media_case(
    server: &LiveKitServer,
    kernel: Option<&Kernel>,
    sdk: Sdk,
    fault: MediaFault,
    runs: usize,
) -> Result<()> {
    let rtt = loopback_rtt(kernel.map_or(server, |k| &k.server)).await?;
    let frame = Duration::from_secs(1) / 30;
    let (mut back, mut gap, mut sampled_back, mut sampled_gap, mut audio_gap, mut reconnected) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut subscribed = Vec::new();
    let mut no_stop = 0;
    for run in 0..runs {
        let m = media_run(server, kernel, sdk, fault, run).await?;
        match m.back {
            Some(b) => back.push(b),
            None => no_stop += 1,
        }
        gap.push(m.gap);
        sampled_back.extend(m.sampled_back);
        sampled_gap.push(m.sampled_gap);
        audio_gap.push(m.sampled_audio_gap);
        subscribed.extend(m.subscribed);
        reconnected.push(m.reconnected);
    }
    let name = fault.name();
    let exact = sdk.in_process();
    let how = if exact { "" } else { " (100 ms samples)" };
    report(sdk, &format!("media {name}: → Reconnected"), reconnected.clone());
    if !subscribed.is_empty() {
        let n = subscribed.len();
        report(sdk, &format!("media {name}: → video subscribed ({n} of {runs})"), subscribed);
    }
    if back.is_empty() {
        println!("{sdk:<14} media {name}: video never stopped for > 3 frames in {runs} runs");
    } else {
        report(sdk, &format!("media {name}: → video back{how}"), back);
    }
    if no_stop > 0 && no_stop < runs {
        println!("{sdk:<14} media {name}: video did not stop in {no_stop} of {runs} runs");
    }
    let outage = if matches!(fault, MediaFault::BlackHole) { ", with the outage" } else { "" };
    report(sdk, &format!("media {name}: longest video gap{how}{outage}"), gap);
    if exact {
        if !sampled_back.is_empty() {
            report(sdk, &format!("media {name}: → video back (samples)"), sampled_back);
        }
        report(sdk, &format!("media {name}: longest video gap (samples)"), sampled_gap);
    }
    report(sdk, &format!("media {name}: longest audio gap (samples)"), audio_gap);
    let protocol = rtt + rtt + frame;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    reconnected.sort();
    let median_reconnected = reconnected[reconnected.len() / 2];
    println!(
        "{sdk:<14} media {name}: floor {:.1} ms = detection 0 + signalling RTT {:.2} + key-frame \
         RTT {:.2} + frame {:.1} (the next frame is 0–33.3 ms away, so a run may beat it by that); \
         given this client's Reconnected (median {:.1}): {:.1} ms",
        ms(protocol),
        ms(rtt),
        ms(rtt),
        ms(frame),
        ms(median_reconnected),
        ms(median_reconnected + rtt + frame)
    );
    Ok(())
}

fn report(sdk: Sdk, name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = samples[samples.len() / 2];
    println!(
        "{sdk:<14} {name:<40} runs {:>3}  median {:>8.1} ms  min {:>8.1} ms  max {:>8.1} ms",
        samples.len(),
        ms(median),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

/// Whether `sdk` can be asked for `kind`; if not, prints the row as not applicable, with why.
fn can_simulate(sdk: Sdk, kind: SimulateKind) -> bool {
    match sdk.cannot_simulate(kind) {
        Some(why) => {
            println!("{sdk:<14} {kind:?}: n/a ({why})");
            false
        }
        None => true,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5).max(1);
    let sdks: Vec<Sdk> = match std::env::var("SDKS") {
        Ok(list) if !list.is_empty() => list
            .split(',')
            .map(|name| name.trim().parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
        _ => Sdk::ALL.to_vec(),
    };
    let cases = std::env::var("CASES").unwrap_or_default();
    let wanted = |case: &str| cases.is_empty() || cases.split(',').any(|c| c.trim() == case);
    let server = LiveKitServer::shared().await.context("starting livekit-server")?;
    println!("recovery latency against livekit-server {}, {runs} runs each:", server.version());
    let scenarios = [
        SimulateKind::SignalReconnect,
        SimulateKind::FullReconnect,
        SimulateKind::DisconnectSignalOnResume,
    ];
    for sdk in sdks {
        for scenario in scenarios.into_iter().filter(|_| wanted("simulate")) {
            if !can_simulate(sdk, scenario) {
                continue;
            }
            let mut samples = Vec::new();
            for run in 0..runs {
                samples.push(simulated(&server, sdk, scenario, run).await?);
            }
            let name = serde_json::to_value(scenario)?.as_str().unwrap_or("?").to_owned();
            report(sdk, &format!("{name} → Reconnected"), samples);
        }
        for secs in [0, 2, 5, 10].into_iter().filter(|_| wanted("outage")) {
            let mut healed = Vec::new();
            for run in 0..runs {
                healed.push(outage(&server, sdk, Duration::from_secs(secs), run).await?);
            }
            report(sdk, &format!("outage +{secs}s healed → Reconn."), healed);
        }
        let darks = [
            (Scope::Media, "black-hole", "media black hole"),
            (Scope::Link, "dark-link", "dark link"),
        ];
        if wanted("force-tcp") && can_simulate(sdk, SimulateKind::ForceTcp) {
            let kernel = Kernel::start().await?;
            let (mut data_back, mut episodes) = (Vec::new(), Vec::new());
            for run in 0..runs {
                let forced = force_tcp(&kernel, sdk, run).await?;
                data_back.push(forced.data_back);
                episodes.extend(forced.episode);
            }
            report(sdk, "force-tcp: peer data back", data_back);
            match episodes.len() {
                0 => println!("{sdk:<14} force-tcp: no episode in {runs} runs"),
                n => report(sdk, &format!("force-tcp: → Reconn. ({n} of {runs})"), episodes),
            }
        }
        if wanted("force-tls") && can_simulate(sdk, SimulateKind::ForceTls) {
            let options = ServerOptions {
                name: Some("bench-turn".into()),
                turn: true,
                ..ServerOptions::default()
            };
            let turn_server = LiveKitServer::start(options).await?;
            let port = turn_server.ports().and_then(|p| p.turn).context("the relay's port")?;
            let relay = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let (mut resumed, mut data_back) = (Vec::new(), Vec::new());
            for run in 0..runs {
                let forced = force_tls(&turn_server, relay, sdk, run).await?;
                resumed.push(forced.resumed);
                data_back.extend(forced.relay_only_data_back);
            }
            report(sdk, "force-tls: resume → Reconn.", resumed);
            if !data_back.is_empty() {
                report(sdk, "force-tls: relay only → data", data_back);
            }
        }
        if wanted("media") {
            for kind in [SimulateKind::SignalReconnect, SimulateKind::FullReconnect] {
                if !can_simulate(sdk, kind) {
                    continue;
                }
                media_case(&server, None, sdk, MediaFault::Simulate(kind), runs).await?;
            }
        }
        if wanted("media-black-hole") {
            let kernel = if sdk.in_process() { None } else { Some(Kernel::start().await?) };
            media_case(&server, kernel.as_ref(), sdk, MediaFault::BlackHole, runs).await?;
        }
        let darks: Vec<_> = darks.into_iter().filter(|(_, case, _)| wanted(case)).collect();
        if darks.is_empty() {
            continue;
        }
        let kernel = if sdk.in_process() { None } else { Some(Kernel::start().await?) };
        for (scope, _, name) in darks {
            let (mut detect, mut recover) = (Vec::new(), Vec::new());
            for run in 0..runs {
                let (detected, recovered) =
                    black_hole(&server, kernel.as_ref(), sdk, scope, run).await?;
                detect.push(detected);
                recover.push(recovered);
            }
            report(sdk, &format!("{name}: detect"), detect);
            report(sdk, &format!("{name}: heal → Reconn."), recover);
        }
    }
    Ok(())
}
