//! `faultline bench link`: the user-space link emulator (`faultline::netns`, a TUN in the
//! server namespace) measured on real packets — its own latency, how exactly it delays, how
//! its jitter, loss, duplication and Gilbert–Elliott bursts come out against what was set,
//! how fast it forwards on this machine, and whether a replayed trace delivers its rates.
//! Numbered, timestamped UDP datagrams (`faultline::netns::probe`, as the netns tests use)
//! go from a client namespace to the server's media port, one client per measurement so
//! that each has a fresh pipe. Figures are printed, not asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use faultline::net::Direction;
use faultline::netns::probe::{self, Arrival, Pace};
use faultline::netns::{Link, Namespace, Scope, Topology, MEDIA_UDP_PORT};
use faultline_link::{Condition, Delay, Distribution, Loss, PipeStats, Queue, Trace};
use tokio::net::UdpSocket;

/// Every datagram's size (UDP payload): 10 Mbit/s at one a millisecond.
const SIZE: usize = 1250;
/// An IP and UDP header: what a datagram weighs on the link beyond its payload.
const HEADERS: usize = 28;
/// A stream has ended once nothing arrived for this long (every delay here is shorter).
const QUIET: Duration = Duration::from_millis(500);
/// Datagrams in each own-latency stream and each jitter stream, one a millisecond.
const LATENCY_PACKETS: u32 = 2000;
/// Datagrams in the loss-and-duplication stream.
const LOSS_PACKETS: u32 = 10_000;
/// Datagrams in the Gilbert–Elliott stream.
const BURST_PACKETS: u32 = 20_000;
/// Datagrams of the pilot that finds how fast one sender goes.
const PILOT: u32 = 50_000;
/// How long the throughput stream should last.
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
/// The base delay of the delay and jitter measurements.
const DELAY: Duration = Duration::from_millis(50);
/// The trace's steps.
const STEPS: [(Duration, u64); 3] = [
    (Duration::from_secs(2), 6_000_000),
    (Duration::from_secs(2), 1_000_000),
    (Duration::from_secs(2), 3_000_000),
];
/// One client namespace per stream measured.
const CLIENTS: usize = 9;

/// Measures and prints. `packets`: datagrams in the delay-accuracy stream; `seed` seeds the
/// conditions.
pub async fn run(packets: u32, seed: u64) -> anyhow::Result<()> {
    Topology::available().context(
        "`faultline bench link` measures the link emulator in network namespaces, and this \
         machine cannot make them",
    )?;
    let topology = Topology::create(CLIENTS).await.context("building the namespaces")?;
    let site = topology.server();
    let server = Arc::new(probe::udp_socket(site.namespace(), (site.address(), MEDIA_UDP_PORT))?);
    let mut lab = Lab { server, links: topology.clients().iter() };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "link emulator on real packets ({cores} cores, UDP through a TUN in the server namespace)"
    );
    let baseline = own_latency(&mut lab, seed).await?;
    delay_accuracy(&mut lab, packets, baseline, seed + 1).await?;
    jitter(&mut lab, baseline, seed + 2).await?;
    throughput(&mut lab, site.namespace(), seed + 4).await?;
    loss_and_duplication(&mut lab, seed + 5).await?;
    gilbert_elliott(&mut lab, seed + 6).await?;
    trace_replay(&mut lab, seed + 7).await
}

/// The server's socket, and the client links not measured yet.
struct Lab<'a> {
    server: Arc<UdpSocket>,
    links: std::slice::Iter<'a, Link>,
}

impl<'a> Lab<'a> {
    /// The next client, ready for [`Bench`] (see [`Bench::new`]).
    async fn bench(&mut self, condition: Option<(Condition, u64)>) -> anyhow::Result<Bench<'a>> {
        let link = self.links.next().context("more measurements than client namespaces")?;
        Bench::new(link, &self.server, condition).await
    }
}

/// One-way time without the emulator in the path and through it with a perfect condition;
/// returns the median without (ms), the baseline of what the emulator adds.
async fn own_latency(lab: &mut Lab<'_>, seed: u64) -> anyhow::Result<f64> {
    let without = ms(&lab.bench(None).await?.stream(LATENCY_PACKETS, 1).await?);
    let perfect = lab.bench(Some((Condition::default(), seed))).await?;
    let through = ms(&perfect.stream(LATENCY_PACKETS, 1).await?);
    let (without_median, without_p99) = (percentile(&without, 0.5), percentile(&without, 0.99));
    let (through_median, through_p99) = (percentile(&through, 0.5), percentile(&through, 0.99));
    println!(
        "own latency, no effect ({LATENCY_PACKETS} × {SIZE} B, 1 a ms): without {without_median:.3} \
         ms median / {without_p99:.3} p99;  through it {through_median:.3} / {through_p99:.3}  \
         ({:+.3} / {:+.3})",
        through_median - without_median,
        through_p99 - without_p99,
    );
    Ok(without_median)
}

/// A fixed delay at 10 Mbit/s: how far the added delay is from the one set.
async fn delay_accuracy(
    lab: &mut Lab<'_>,
    packets: u32,
    baseline: f64,
    seed: u64,
) -> anyhow::Result<()> {
    let delay = Delay { base: DELAY, ..Delay::default() };
    let delayed = lab.bench(Some((Condition { delay, ..Condition::default() }, seed))).await?;
    let arrivals = delayed.stream(packets, 1).await?;
    let error: Vec<f64> =
        ms(&arrivals).iter().map(|took| took - baseline - millis(DELAY)).collect();
    let (median, p99) = (percentile(&error, 0.5), percentile(&error, 0.99));
    println!(
        "delay {:.0} ms at 10 Mbit/s ({packets} × {SIZE} B, {} arrived): error median \
         {median:+.3} ms, p99 {p99:+.3} ms  (target ≤ 1 ms: {}; added delay = one-way time less \
         the no-emulator median {baseline:.3} ms)",
        millis(DELAY),
        arrivals.len(),
        if median.abs() <= 1.0 && p99.abs() <= 1.0 { "met" } else { "MISSED" },
    );
    Ok(())
}

/// Uniform and normal jitter: the added delays' moments and range against the set ones.
/// Reordering is allowed, so that each datagram keeps its own draw (kept in order, one
/// would wait for the slowest before it).
async fn jitter(lab: &mut Lab<'_>, baseline: f64, seed: u64) -> anyhow::Result<()> {
    let jitters = [
        (Distribution::Uniform, Duration::from_millis(20), "50 ± 20 ms uniform"),
        (Distribution::Normal, Duration::from_millis(10), "50 ms normal σ 10 ms"),
    ];
    for (seed, (distribution, jitter, name)) in (seed..).zip(jitters) {
        let delay = Delay { base: DELAY, jitter, distribution, ..Delay::default() };
        let condition = Condition { delay, reorder: true, ..Condition::default() };
        let arrivals = lab.bench(Some((condition, seed))).await?.stream(LATENCY_PACKETS, 1).await?;
        let added: Vec<f64> = ms(&arrivals).iter().map(|took| took - baseline).collect();
        let observed = Moments::of(&added);
        let (j, base) = (millis(jitter), millis(DELAY));
        let (set, range) = match distribution {
            Distribution::Normal => (
                Moments { mean: base, std: j, min: base - 4.0 * j, max: base + 4.0 * j },
                "cut at ",
            ),
            _ => (Moments { mean: base, std: j / 3f64.sqrt(), min: base - j, max: base + j }, ""),
        };
        println!(
            "jitter {name} ({} datagrams, reordering on): added delay mean {:.2} ms, std {:.2}, \
             min {:.2}, max {:.2}  (set: {:.2}, {:.2}, {range}{:.0}–{:.0})",
            added.len(),
            observed.mean,
            observed.std,
            observed.min,
            observed.max,
            set.mean,
            set.std,
            set.min,
            set.max,
        );
    }
    Ok(())
}

/// One sender flat out through a perfect condition for about [`THROUGHPUT_FOR`] (a pilot
/// finds how many datagrams that is): what the emulator forwarded, what arrived, and where
/// the rest was lost (`server`: the server's namespace, whose socket overflows count).
async fn throughput(lab: &mut Lab<'_>, server: &Namespace, seed: u64) -> anyhow::Result<()> {
    let fast = lab.bench(Some((Condition::default(), seed))).await?;
    let (_, pilot_took, _) = fast.flood(PILOT).await?;
    let count = (f64::from(PILOT) * THROUGHPUT_FOR.as_secs_f64() / pilot_took.as_secs_f64())
        .clamp(f64::from(PILOT), 2_000_000.0) as u32;
    let (before, overflowed_before) = (fast.stats()?, socket_overflows(server)?);
    let (arrivals, sending, span) = fast.flood(count).await?;
    let forwarded = (fast.stats()?.offered - before.offered) as f64;
    let overflowed = (socket_overflows(server)? - overflowed_before) as f64;
    let (sent, received) = (f64::from(count), arrivals.len() as f64);
    let per_second = |n: f64| n / span.as_secs_f64().max(1e-9);
    let mbit = |n: f64| per_second(n) * (SIZE * 8) as f64 / 1e6;
    let share = |n: f64| 100.0 * n / sent;
    println!(
        "throughput, perfect condition, one sender flat out ({count} × {SIZE} B in {:.2} s = \
         {:.0} pkt/s): the emulator forwarded {:.0} pkt/s = {:.0} Mbit/s, the receiver got \
         {:.0} pkt/s = {:.0} Mbit/s",
        sending.as_secs_f64(),
        sent / sending.as_secs_f64().max(1e-9),
        per_second(forwarded),
        mbit(forwarded),
        per_second(received),
        mbit(received),
    );
    println!(
        "  lost {:.1} %: {:.1} % in the TUN's queue before the emulator read them, {:.1} % \
         overflowing the receiving socket (the bench's own receiver), {:.1} % elsewhere",
        share(sent - received),
        share(sent - forwarded),
        share(overflowed),
        share(forwarded - received - overflowed),
    );
    Ok(())
}

/// Random loss and duplication together: each rate against its 95 % binomial interval,
/// and the datagrams that arrived against the model's own count.
async fn loss_and_duplication(lab: &mut Lab<'_>, seed: u64) -> anyhow::Result<()> {
    let (loss, duplicate) = (0.10, 0.05);
    let condition = Condition {
        loss: Loss::Random { probability: loss, correlation: 0.0 },
        duplicate,
        ..Condition::default()
    };
    let lossy = lab.bench(Some((condition, seed))).await?;
    let arrivals = lossy.stream(LOSS_PACKETS, 5).await?;
    let copies = copies_of(&arrivals, LOSS_PACKETS);
    let lost = copies.iter().filter(|c| **c == 0).count() as u64;
    let doubled = copies.iter().filter(|c| **c >= 2).count() as u64;
    let trials = u64::from(LOSS_PACKETS);
    println!("{}", binomial_line("loss", lost, trials, loss));
    println!(
        "{}",
        binomial_line("duplication of what was not lost", doubled, trials - lost, duplicate)
    );
    let stats = lossy.stats()?;
    println!(
        "  the model's count: {} offered − {} lost − {} queue-dropped + {} duplicated = {}; \
         received {} ({})",
        stats.offered,
        stats.lost,
        stats.queue_dropped,
        stats.duplicated,
        stats.departed(),
        arrivals.len(),
        if stats.departed() == arrivals.len() as u64 { "equal" } else { "DIFFERENT" },
    );
    Ok(())
}

/// Gilbert–Elliott loss: the loss rate and mean burst against the chain's.
async fn gilbert_elliott(lab: &mut Lab<'_>, seed: u64) -> anyhow::Result<()> {
    let (p, r) = (0.02, 0.25);
    let loss = Loss::GilbertElliott { p, r, loss_good: 0.0, loss_bad: 1.0 };
    let bursty = lab.bench(Some((Condition { loss, ..Condition::default() }, seed))).await?;
    let arrivals = bursty.stream(BURST_PACKETS, 5).await?;
    let copies = copies_of(&arrivals, BURST_PACKETS);
    let lost = copies.iter().filter(|c| **c == 0).count();
    let bursts = copies
        .iter()
        .enumerate()
        .filter(|(i, c)| **c == 0 && (*i == 0 || copies[i - 1] != 0))
        .count();
    let stats = bursty.stats()?;
    println!(
        "Gilbert–Elliott p {:.0} %, r {:.0} %, loss in bad 100 % ({BURST_PACKETS} datagrams): \
         loss {:.2} % vs p/(p+r) {:.2} %; mean burst {:.2} vs 1/r {:.2} ({bursts} bursts; the \
         model's departures {}, received {})",
        p * 100.0,
        r * 100.0,
        100.0 * lost as f64 / f64::from(BURST_PACKETS),
        100.0 * p / (p + r),
        lost as f64 / bursts.max(1) as f64,
        1.0 / r,
        stats.departed(),
        arrivals.len(),
    );
    Ok(())
}

/// A stepped trace under a saturating 10 Mbit/s: the rate delivered in each step.
async fn trace_replay(lab: &mut Lab<'_>, seed: u64) -> anyhow::Result<()> {
    let opportunities = faultline_link::stepped_rate_trace(&STEPS);
    let trace = Trace { opportunities, looped: true, queue: Queue::Packets(50) };
    let condition = Condition { trace: Some(trace), ..Condition::default() };
    let traced = lab.bench(Some((condition, seed))).await?;
    let total: Duration = STEPS.iter().map(|(length, _)| *length).sum();
    let arrivals = traced.stream(u32::try_from(total.as_millis())?, 1).await?;
    // Each step's middle: the stream starts just after the trace does.
    let trim = Duration::from_millis(100);
    let mut from = Duration::ZERO;
    let mut steps = Vec::new();
    for (length, rate) in STEPS {
        let (start, end) = (from + trim, from + length - trim);
        let bytes =
            arrivals.iter().filter(|a| (start..end).contains(&a.at)).count() * (SIZE + HEADERS);
        let got = bytes as f64 * 8.0 / (end - start).as_secs_f64() / 1e6;
        steps.push(format!("{got:.2} of {:.0}", rate as f64 / 1e6));
        from += length;
    }
    println!(
        "trace 6 → 1 → 3 Mbit/s, 2 s each, offered 10 Mbit/s behind 50 packets: delivered {} \
         Mbit/s (IP bytes, each step's middle {:.1} s)",
        steps.join(", "),
        (STEPS[0].0 - 2 * trim).as_secs_f64(),
    );
    Ok(())
}

/// One measurement: a client's socket, its link (with a condition, or none: not through
/// the emulator) and the server's socket.
struct Bench<'a> {
    link: &'a Link,
    client: Arc<UdpSocket>,
    server: Arc<UdpSocket>,
}

impl<'a> Bench<'a> {
    /// A socket on `link`, its neighbours resolved by a few datagrams (so that none below
    /// waits for ARP), then the link given `condition` (with its seed) to the server.
    async fn new(
        link: &'a Link,
        server: &Arc<UdpSocket>,
        condition: Option<(Condition, u64)>,
    ) -> anyhow::Result<Bench<'a>> {
        let client = Arc::new(probe::udp_socket(link.namespace(), (link.address(), 0))?);
        let (pace, quiet) = (Pace { burst: 1, every: Duration::from_millis(1) }, QUIET / 2);
        probe::stream_through(&client, server, 5, SIZE, pace, quiet).await?;
        if let Some((condition, seed)) = condition {
            link.emulate(Direction::Outbound, Scope::Media, condition, seed).await?;
        }
        Ok(Bench { link, client, server: Arc::clone(server) })
    }

    /// `count` datagrams, `per_ms` a millisecond, and what arrived.
    async fn stream(&self, count: u32, per_ms: u32) -> anyhow::Result<Vec<Arrival>> {
        let pace = Pace { burst: per_ms, every: Duration::from_millis(1) };
        Ok(probe::stream_through(&self.client, &self.server, count, SIZE, pace, QUIET).await?)
    }

    /// `count` datagrams as fast as the sender goes, received on another task: what
    /// arrived, how long sending took, and from the first send to the last arrival.
    async fn flood(&self, count: u32) -> anyhow::Result<(Vec<Arrival>, Duration, Duration)> {
        let start = Instant::now();
        let server = Arc::clone(&self.server);
        let receiver =
            tokio::spawn(async move { probe::receive(&server, start, SIZE, QUIET).await });
        let target = self.server.local_addr()?;
        let pace = Pace { burst: count, every: Duration::ZERO };
        probe::send(&self.client, target, start, count, SIZE, pace).await?;
        let sending = start.elapsed();
        let arrivals = receiver.await.context("the receiving task panicked")??;
        let span = arrivals.last().map_or(sending, |a| a.at);
        Ok((arrivals, sending, span))
    }

    /// The emulator's counters of this link's way to the server.
    fn stats(&self) -> anyhow::Result<PipeStats> {
        self.link.emulated(Direction::Outbound).context("the emulator has no pipe for the link")
    }
}

/// UDP datagrams `namespace` dropped because a socket's receive buffer was full
/// (`RcvbufErrors` in `/proc/net/snmp`, read by a thread in the namespace).
fn socket_overflows(namespace: &Namespace) -> anyhow::Result<u64> {
    let snmp = namespace.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut udp = snmp.lines().filter(|line| line.starts_with("Udp: "));
    udp.next()
        .zip(udp.next())
        .and_then(|(names, values)| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "RcvbufErrors")
        })
        .and_then(|(_, value)| value.parse().ok())
        .context("no RcvbufErrors among the Udp counters of /proc/net/snmp")
}

/// Each arrival's one-way time in milliseconds.
fn ms(arrivals: &[Arrival]) -> Vec<f64> {
    arrivals.iter().map(|a| millis(a.took)).collect()
}

/// `duration` in milliseconds.
fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The nearest-rank `p`-quantile (0..=1) of `values`; NaN when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

/// Mean, standard deviation and range.
struct Moments {
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
}

impl Moments {
    fn of(values: &[f64]) -> Moments {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Moments {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// How many times each of the `count` datagrams arrived.
fn copies_of(arrivals: &[Arrival], count: u32) -> Vec<u32> {
    let mut copies = vec![0; count as usize];
    for arrival in arrivals {
        if let Some(c) = copies.get_mut(arrival.number as usize) {
            *c += 1;
        }
    }
    copies
}

/// `observed` of `trials` against probability `p`: the rates, and whether the count lies in
/// the central 95 % of Binomial(`trials`, `p`).
fn binomial_line(what: &str, observed: u64, trials: u64, p: f64) -> String {
    let (low, high) = binomial_interval(trials, p);
    let rate = |k: u64| 100.0 * k as f64 / trials.max(1) as f64;
    format!(
        "{what} {:.0} % ({trials} trials): {:.2} %, 95 % binomial interval {:.2}–{:.2} %: {}",
        p * 100.0,
        rate(observed),
        rate(low),
        rate(high),
        if (low..=high).contains(&observed) { "inside" } else { "OUTSIDE" },
    )
}

/// The central 95 % of Binomial(`n`, `p`): the smallest counts whose cumulative
/// probability reaches 2.5 % and 97.5 % (summed in log space, so large `n` does not
/// underflow).
fn binomial_interval(n: u64, p: f64) -> (u64, u64) {
    if p <= 0.0 {
        return (0, 0);
    }
    if p >= 1.0 {
        return (n, n);
    }
    let odds = (p / (1.0 - p)).ln();
    let mut log_pmf = n as f64 * (1.0 - p).ln();
    let (mut cdf, mut low) = (0.0, None);
    for k in 0..=n {
        if k > 0 {
            log_pmf += ((n - k + 1) as f64 / k as f64).ln() + odds;
        }
        cdf += log_pmf.exp();
        if low.is_none() && cdf >= 0.025 {
            low = Some(k);
        }
        if cdf >= 0.975 {
            return (low.unwrap_or(k), k);
        }
    }
    (low.unwrap_or(n), n)
}
