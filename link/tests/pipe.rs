//! The pipe against the behaviour it promises: exact timings for delay, rate and trace, and
//! statistics over many packets with fixed seeds. Statistical tolerances are 4 standard errors
//! (a false failure about once in 16 000 runs, and never for these fixed seeds).

use std::time::Duration;

use faultline_link::{
    constant_rate_trace, stepped_rate_trace, Condition, Delay, DelayStep, Departures, Distribution,
    Loss, Pipe, Queue, Rate, Trace,
};

const N: usize = 10_000;

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn us(us: u64) -> Duration {
    Duration::from_micros(us)
}

fn pipe(condition: Condition) -> Pipe {
    Pipe::new(condition, 42).expect("a valid condition")
}

fn one(departures: Departures) -> Duration {
    assert_eq!(departures.len(), 1, "{departures:?}");
    departures.iter().next().expect("one departure")
}

fn delayed(base: u64, jitter: u64, distribution: Distribution, correlation: f64) -> Condition {
    let delay = Delay { base: ms(base), jitter: ms(jitter), distribution, correlation };
    Condition { delay, reorder: true, ..Condition::default() }
}

/// Each packet's delay in milliseconds, one packet a millisecond.
fn delays(condition: Condition) -> Vec<f64> {
    let mut pipe = pipe(condition);
    (0..N as u64).map(|i| (one(pipe.offer(ms(i), 100)) - ms(i)).as_secs_f64() * 1e3).collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn sd(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

fn lag1(xs: &[f64]) -> f64 {
    let m = mean(xs);
    let cov: f64 = xs.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum();
    cov / xs.iter().map(|x| (x - m).powi(2)).sum::<f64>()
}

#[test]
fn a_perfect_wire_changes_nothing_and_draws_nothing() {
    let mut perfect = pipe(Condition::default());
    for t in [us(0), us(1), us(1500), ms(7), ms(7), Duration::from_secs(3600)] {
        assert_eq!(one(perfect.offer(t, 1200)), t);
    }
    // No random draws: a pipe that was perfect for a while loses the same packets afterwards
    // as one that was lossy from the start.
    let lossy = Condition {
        loss: Loss::Random { probability: 0.3, correlation: 0.0 },
        ..Condition::default()
    };
    let mut was_perfect = Pipe::new(Condition::default(), 9).expect("valid");
    for i in 0..100 {
        was_perfect.offer(ms(i), 100);
    }
    was_perfect.set(lossy.clone(), ms(100)).expect("valid");
    let mut lossy = Pipe::new(lossy, 9).expect("valid");
    let a: Vec<bool> = (0..200).map(|i| was_perfect.offer(ms(100 + i), 100).is_empty()).collect();
    let b: Vec<bool> = (0..200).map(|i| lossy.offer(ms(i), 100).is_empty()).collect();
    assert_eq!(a, b);
}

#[test]
fn delay_alone_is_exact() {
    let mut pipe = pipe(delayed(40, 0, Distribution::Normal, 0.0));
    for t in [us(0), us(333), ms(10)] {
        assert_eq!(one(pipe.offer(t, 1200)), t + ms(40));
    }
}

#[test]
fn jitter_keeps_order_unless_reordering_is_allowed() {
    let departures = |reorder| {
        let mut pipe = pipe(Condition { reorder, ..delayed(50, 50, Distribution::Uniform, 0.0) });
        (0..1000).map(|i| (ms(i), one(pipe.offer(ms(i), 100)))).collect::<Vec<_>>()
    };
    let kept = departures(false);
    assert!(kept.iter().all(|(arrival, departure)| departure >= arrival));
    assert!(kept.windows(2).all(|w| w[1].1 >= w[0].1), "in order");
    let reordered = departures(true);
    assert!(reordered.windows(2).any(|w| w[1].1 < w[0].1), "some packet overtakes");
}

#[test]
fn random_loss_rate() {
    let mut pipe = pipe(Condition {
        loss: Loss::Random { probability: 0.1, correlation: 0.0 },
        ..Condition::default()
    });
    let lost = (0..N as u64).filter(|&i| pipe.offer(ms(i), 100).is_empty()).count() as f64;
    // Binomial: σ = √(N·p·(1−p)) = 30 packets.
    assert!((lost - 1000.0).abs() <= 4.0 * 30.0, "lost {lost}");
    assert_eq!(pipe.stats().lost, lost as u64);
}

#[test]
fn duplication_rate_and_copies_leave_with_the_original() {
    let mut pipe = pipe(Condition { duplicate: 0.05, ..Condition::default() });
    let mut twice = 0;
    for i in 0..N as u64 {
        let departures = pipe.offer(ms(i), 100);
        assert!(departures.iter().all(|at| at == ms(i)));
        twice += usize::from(departures.len() == 2);
    }
    let sigma = (N as f64 * 0.05 * 0.95).sqrt(); // binomial, ≈ 21.8
    assert!((twice as f64 - 500.0).abs() <= 4.0 * sigma, "duplicated {twice}");
    assert_eq!(pipe.stats().duplicated, twice as u64);
}

#[test]
fn uniform_jitter_mean_and_range() {
    let d = delays(delayed(50, 10, Distribution::Uniform, 0.0));
    // Uniform on 40..=60 ms: σ = 10/√3 ms; the mean's standard error is σ/√N ≈ 0.058 ms.
    let se = 10.0 / 3f64.sqrt() / (N as f64).sqrt();
    assert!((mean(&d) - 50.0).abs() <= 4.0 * se, "mean {}", mean(&d));
    let (lo, hi) = d.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!((40.0..40.1).contains(&lo) && (59.9..=60.0).contains(&hi), "{lo}..{hi}");
}

#[test]
fn normal_jitter_standard_deviation() {
    let d = delays(delayed(100, 10, Distribution::Normal, 0.0));
    // The sample standard deviation's standard error is σ/√(2N) ≈ 0.071 ms.
    let se = 10.0 / (2.0 * N as f64).sqrt();
    assert!((sd(&d) - 10.0).abs() <= 4.0 * se, "sd {}", sd(&d));
    assert!((mean(&d) - 100.0).abs() <= 4.0 * 10.0 / (N as f64).sqrt());
}

#[test]
fn pareto_jitter_has_a_long_right_tail() {
    for (distribution, pareto_share) in
        [(Distribution::Pareto, 1.0), (Distribution::ParetoNormal, 0.75)]
    {
        let d = delays(delayed(100, 10, distribution, 0.0));
        // Cutting the tail at 4 jitters moves the Pareto part's mean from 0 to
        // −jitter·∫₄^∞ (1.5 + 0.75y)^−3 dy = −jitter/(1.5·4.5²).
        let expected = 100.0 - pareto_share * 10.0 / (1.5 * 4.5f64.powi(2));
        let se = sd(&d) / (N as f64).sqrt();
        assert!((mean(&d) - expected).abs() <= 4.0 * se, "{distribution:?}: mean {}", mean(&d));
        let (lo, hi) = d.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(hi - 100.0 > 2.0 * (100.0 - lo), "{distribution:?}: {lo}..{hi}");
        assert!(hi <= 140.0 + 1e-6, "cut at 4 jitters");
        if distribution == Distribution::Pareto {
            assert!(lo >= 100.0 - 10.0 * 2.0 / 3.0 - 1e-6, "never below −2/3 jitter: {lo}");
        }
    }
}

#[test]
fn correlation_shows_in_lag_one_autocorrelation() {
    let free = lag1(&delays(delayed(50, 10, Distribution::Uniform, 0.0)));
    let tied = lag1(&delays(delayed(50, 10, Distribution::Uniform, 0.75)));
    // Independent: the sample autocorrelation's standard error is 1/√N. Correlated: the
    // underlying uniform is an AR(1) process of coefficient 0.75, standard error √((1−ρ²)/N).
    assert!(free.abs() <= 4.0 / (N as f64).sqrt(), "{free}");
    assert!((tied - 0.75).abs() <= 4.0 * ((1.0 - 0.75f64.powi(2)) / N as f64).sqrt(), "{tied}");
}

/// Loss outcomes of 100 000 packets (Gilbert–Elliott losses are correlated, so the standard
/// error is several times the binomial one; more packets keep the tolerance meaningful).
fn gilbert_elliott(p: f64, r: f64, loss_good: f64, loss_bad: f64) -> Vec<bool> {
    let mut pipe = pipe(Condition {
        loss: Loss::GilbertElliott { p, r, loss_good, loss_bad },
        ..Condition::default()
    });
    (0..100_000).map(|i| pipe.offer(us(i), 100).is_empty()).collect()
}

#[test]
fn gilbert_elliott_long_run_loss_rate() {
    let (p, r, loss_good, loss_bad) = (0.05, 0.25, 0.01, 0.8);
    let lost = gilbert_elliott(p, r, loss_good, loss_bad);
    let n = lost.len() as f64;
    let rate = lost.iter().filter(|&&l| l).count() as f64 / n;
    let (bad, good) = (p / (p + r), r / (p + r));
    let expected = bad * loss_bad + good * loss_good;
    // Variance of the mean: the state's share (a two-state chain with eigenvalue λ = 1 − p − r
    // has asymptotic variance π_b·π_g·(1+λ)/(1−λ)), scaled by the loss difference, plus each
    // packet's own Bernoulli draw.
    let lambda = 1.0 - p - r;
    let chain = bad * good * (1.0 + lambda) / (1.0 - lambda) * (loss_bad - loss_good).powi(2);
    let draw = bad * loss_bad * (1.0 - loss_bad) + good * loss_good * (1.0 - loss_good);
    let se = ((chain + draw) / n).sqrt();
    assert!((rate - expected).abs() <= 4.0 * se, "rate {rate}, expected {expected} ± {}", 4.0 * se);
}

#[test]
fn gilbert_elliott_mean_burst_length() {
    let r = 0.25;
    let lost = gilbert_elliott(0.05, r, 0.0, 1.0);
    let mut bursts = Vec::new();
    let mut run = 0.0;
    for &l in lost.iter().chain([&false]) {
        match l {
            true => run += 1.0,
            false if run > 0.0 => bursts.push(std::mem::take(&mut run)),
            false => {}
        }
    }
    // Bursts are geometric with mean 1/r and standard deviation √(1−r)/r.
    let se = (1.0 - r).sqrt() / r / (bursts.len() as f64).sqrt();
    assert!((mean(&bursts) - 1.0 / r).abs() <= 4.0 * se, "mean burst {}", mean(&bursts));
}

fn rated(queue: Queue) -> Condition {
    Condition { rate: Some(Rate { bits_per_second: 10_000_000, queue }), ..Condition::default() }
}

#[test]
fn a_rate_serializes_packets() {
    let mut pipe = pipe(rated(Queue::Packets(100)));
    // 1250 bytes at 10 Mbit/s take exactly 1 ms; offered every 0.1 ms, they leave 1 ms apart.
    for i in 0..10 {
        assert_eq!(one(pipe.offer(us(100 * i), 1250)), ms(i + 1));
    }
    // An idle link starts serializing at once.
    assert_eq!(one(pipe.offer(ms(100), 125)), ms(100) + us(100));
}

#[test]
fn a_full_queue_drops_the_excess() {
    for (queue, accepted) in
        [(Queue::Packets(3), 4), (Queue::Bytes(3750), 4), (Queue::Bytes(3749), 3)]
    {
        let mut pipe = pipe(rated(queue));
        let departures: Vec<_> = (0..10).map(|_| pipe.offer(Duration::ZERO, 1250)).collect();
        let out: Vec<_> = departures.iter().flatten().collect();
        // One packet serializing, the rest waiting.
        assert_eq!(out, (1..=accepted).map(ms).collect::<Vec<_>>(), "{queue:?}");
        assert_eq!(pipe.stats().queue_dropped, 10 - accepted, "{queue:?}");
        // At 2.5 ms, the packets that started at 0, 1 and 2 ms no longer wait: room again.
        assert_eq!(one(pipe.offer(us(2500), 1250)), ms(accepted + 1), "{queue:?}");
    }
}

fn traced(opportunities: Vec<u32>, looped: bool) -> Pipe {
    pipe(Condition {
        trace: Some(Trace { opportunities, looped, queue: Queue::Packets(10_000) }),
        ..Condition::default()
    })
}

#[test]
fn a_constant_trace_delivers_its_rate() {
    let mut pipe = traced(constant_rate_trace(12_000_000, Duration::from_secs(1)), true);
    // Offered at 24 Mbit/s for two seconds: one packet leaves each millisecond, lap after lap.
    for i in 0..4000 {
        assert_eq!(one(pipe.offer(us(500 * i), 1500)), ms(i + 1));
    }
}

#[test]
fn an_opportunity_is_shared_and_a_big_packet_spans_several() {
    let mut pipe = traced(vec![10, 20, 30], false);
    let sizes_and_departures = [(500, 10), (500, 10), (500, 10), (1000, 20), (1000, 30)];
    for (size, at) in sizes_and_departures {
        assert_eq!(one(pipe.offer(Duration::ZERO, size)), ms(at), "{size} bytes");
    }
    let mut pipe = traced(vec![10, 20, 30], false);
    assert_eq!(one(pipe.offer(Duration::ZERO, 3000)), ms(20));
    assert_eq!(one(pipe.offer(Duration::ZERO, 100)), ms(30));
}

#[test]
fn unused_opportunities_are_wasted() {
    let mut pipe = traced(constant_rate_trace(12_000_000, ms(100)), false);
    assert_eq!(one(pipe.offer(us(5500), 500)), ms(6));
    // The rest of the 6 ms opportunity is gone by 6.2 ms.
    assert_eq!(one(pipe.offer(us(6200), 500)), ms(7));
}

#[test]
fn a_looped_trace_repeats_with_its_last_timestamp_as_period() {
    let mut pipe = traced(vec![5, 10], true);
    assert_eq!(one(pipe.offer(ms(12), 1500)), ms(15));
    assert_eq!(one(pipe.offer(ms(21), 1500)), ms(25));
    assert_eq!(one(pipe.offer(ms(30), 1500)), ms(30));
    // A timestamp 0 coincides with the previous lap's last one.
    let mut pipe = traced(vec![0, 10], true);
    let at_ten: Vec<_> = (0..3).map(|_| one(pipe.offer(ms(10), 1500))).collect();
    assert_eq!(at_ten, [ms(10), ms(10), ms(20)]);
}

#[test]
fn a_once_trace_runs_out() {
    let mut pipe = traced(vec![5, 10], false);
    assert_eq!(one(pipe.offer(Duration::ZERO, 1500)), ms(5));
    assert_eq!(one(pipe.offer(Duration::ZERO, 1500)), ms(10));
    assert!(pipe.offer(Duration::ZERO, 1500).is_empty());
    assert!(pipe.offer(ms(11), 10).is_empty());
    assert_eq!(pipe.stats().queue_dropped, 2);
}

#[test]
fn an_outage_in_a_stepped_trace_delivers_nothing() {
    let second = Duration::from_secs(1);
    let trace = stepped_rate_trace(&[(second, 12_000_000), (second, 0), (second, 12_000_000)]);
    let mut pipe = traced(trace, false);
    let out: Vec<_> = (0..3000).flat_map(|i| pipe.offer(ms(i), 1500)).collect();
    assert!(out.iter().all(|&at| at <= ms(1000) || at >= ms(2001)), "nothing in the outage");
    assert_eq!(out.iter().filter(|&&at| at >= ms(2001)).count(), 1000, "backlog drains after");
}

#[test]
fn delay_steps_switch_the_base_delay() {
    let steps =
        vec![DelayStep { at: ms(100), delay: ms(50) }, DelayStep { at: ms(200), delay: ms(20) }];
    let mut pipe = pipe(Condition {
        delay_steps: steps.clone(),
        ..delayed(10, 0, Distribution::Uniform, 0.0)
    });
    for (at, leaves) in [(0, 10), (99, 109), (150, 200), (250, 270)] {
        assert_eq!(one(pipe.offer(ms(at), 100)), ms(leaves));
    }
    // After `set`, the steps count from the moment it was set.
    pipe.set(
        Condition { delay_steps: steps, ..delayed(30, 0, Distribution::Uniform, 0.0) },
        ms(1000),
    )
    .expect("valid");
    assert_eq!(one(pipe.offer(ms(1050), 100)), ms(1080));
    assert_eq!(one(pipe.offer(ms(1150), 100)), ms(1200));
}

#[test]
fn set_keeps_what_was_already_accepted() {
    let delay = Delay { base: ms(100), ..Delay::default() };
    let mut link = pipe(Condition { delay, ..Condition::default() });
    assert_eq!(one(link.offer(ms(0), 100)), ms(100));
    link.set(Condition::default(), ms(10)).expect("valid");
    assert_eq!(link.condition(), &Condition::default());
    assert_eq!(one(link.offer(ms(20), 100)), ms(100), "in order behind the delayed one");
    link.set(Condition { reorder: true, ..Condition::default() }, ms(30)).expect("valid");
    assert_eq!(one(link.offer(ms(40), 100)), ms(40), "may overtake");

    // A rate change: the bottleneck finishes its backlog first.
    let mut link = pipe(rated(Queue::Packets(10)));
    for _ in 0..5 {
        link.offer(Duration::ZERO, 1250);
    }
    link.set(rated(Queue::Packets(10)), us(500)).expect("valid");
    assert_eq!(one(link.offer(ms(1), 1250)), ms(6));
}

#[test]
fn every_packet_is_accounted_for_and_seeds_reproduce() {
    let condition = Condition {
        delay: Delay {
            base: ms(20),
            jitter: ms(5),
            distribution: Distribution::Normal,
            correlation: 0.2,
        },
        loss: Loss::Random { probability: 0.05, correlation: 0.1 },
        duplicate: 0.1,
        rate: Some(Rate { bits_per_second: 5_000_000, queue: Queue::Bytes(20_000) }),
        ..Condition::default()
    };
    let run = |seed| {
        let mut pipe = Pipe::new(condition.clone(), seed).expect("valid");
        let mut departed = 0;
        let mut all = Vec::new();
        for i in 0..5000 {
            let departures = pipe.offer(us(1500 * i), 1200);
            assert!(departures.iter().all(|at| at >= us(1500 * i)));
            departed += departures.len() as u64;
            all.extend(departures);
        }
        let s = pipe.stats();
        assert_eq!(s.offered + s.duplicated, s.lost + s.queue_dropped + departed, "{s:?}");
        assert_eq!(s.departed(), departed, "{s:?}");
        assert!(s.lost > 0 && s.duplicated > 0 && s.queue_dropped > 0, "{s:?}");
        all
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}
