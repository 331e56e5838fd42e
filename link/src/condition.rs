//! What one direction of a link does to packets, as plain data: a [`Condition`] and its parts,
//! the checks a condition must pass ([`Condition::validate`]), and the jitter distributions'
//! shapes. The pipe (`crate::pipe`) carries a condition out.
//!
//! Serde: every struct and enum uses kebab-case names; durations are integers of microseconds
//! under a key ending in `-us`. In TOML:
//!
//! ```toml
//! delay = { base-us = 40000, jitter-us = 5000, distribution = "normal", correlation = 0.25 }
//! loss = { model = "gilbert-elliott", p = 0.01, r = 0.3, loss-bad = 1.0 }
//! rate = { bits-per-second = 2000000, queue = { packets = 50 } }
//! delay-steps = [{ at-us = 0, delay-us = 30000 }, { at-us = 5000000, delay-us = 300000 }]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything one direction of a link does to packets. `Default` is a perfect wire: nothing.
///
/// The stages, in the order a packet meets them: [`loss`](Self::loss), [`duplicate`](Self::duplicate),
/// the bottleneck ([`rate`](Self::rate) or [`trace`](Self::trace)), the propagation
/// [`delay`](Self::delay) (its base replaced by [`delay_steps`](Self::delay_steps) when given),
/// then, unless [`reorder`](Self::reorder), departures are kept in arrival order.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Condition {
    /// Propagation delay, with jitter.
    pub delay: Delay,
    /// `false`: a packet never leaves before one that arrived earlier (its departure is raised
    /// to the previous departure). `true`: jitter may reorder packets.
    pub reorder: bool,
    /// Which packets are lost, before anything else happens to them.
    pub loss: Loss,
    /// Probability (0..=1) that a packet is sent twice. The copy shares the original's
    /// propagation delay: it leaves with the original, or, behind a bottleneck (which it passes
    /// as a packet of its own), right after it.
    pub duplicate: f64,
    /// A bottleneck of fixed capacity with a bounded drop-tail queue.
    pub rate: Option<Rate>,
    /// A bottleneck replaying recorded capacity (Mahimahi delivery opportunities). At most one
    /// of `rate` and `trace`.
    pub trace: Option<Trace>,
    /// A recorded delay series: from each step's `at` (since the condition was set) the base
    /// delay is that step's `delay`; before the first step, [`Delay::base`] applies. Sorted by
    /// `at`. The step in force is the one at the time a packet leaves the bottleneck.
    pub delay_steps: Vec<DelayStep>,
}

/// Propagation delay: `base` plus a jitter offset drawn per packet, clamped at zero.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Delay {
    /// The delay without jitter.
    #[serde(rename = "base-us", with = "micros")]
    pub base: Duration,
    /// The jitter's scale; what it means depends on [`distribution`](Self::distribution).
    /// Zero: no jitter and no random draw.
    #[serde(rename = "jitter-us", with = "micros")]
    pub jitter: Duration,
    /// The shape of the jitter.
    pub distribution: Distribution,
    /// 0..=1, as netem's: each draw's underlying uniform number is
    /// `(1 − correlation)·fresh + correlation·previous`, then shaped by the distribution. As in
    /// netem, this also narrows the spread (an average of uniforms is no longer uniform).
    pub correlation: f64,
}

/// The jitter's distribution: netem's four. Each maps a uniform number `u` in 0..1 (correlated
/// as [`Delay::correlation`] says) to an offset in units of [`Delay::jitter`]; like netem's
/// tables, offsets are clamped to ±4 jitters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Uniform over `base − jitter ..= base + jitter`.
    #[default]
    Uniform,
    /// Gaussian with mean `base` and standard deviation `jitter` (cut at ±4σ).
    Normal,
    /// netem's heavy tail: a Pareto of shape 3 shifted to mean zero,
    /// `offset = jitter · 4/3 · ((1 − u)^(−1/3) − 3/2)`: never less than `−2/3 · jitter`,
    /// a long tail above (cut at `+4 · jitter`), standard deviation ≈ 0.83 jitters (after the cut).
    Pareto,
    /// netem's "paretonormal": at the same `u`, `¼ · normal + ¾ · pareto` (a blend of the two
    /// inverse distribution functions, as netem's table is built, not a per-packet coin flip).
    ParetoNormal,
}

/// Which packets are lost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(tag = "model", rename_all = "kebab-case", rename_all_fields = "kebab-case")]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each packet is lost with `probability`; netem's correlation: the uniform number compared
    /// with `probability` is `(1 − correlation)·fresh + correlation·previous`. As in netem,
    /// correlation also lowers the long-run rate for small probabilities (0.1 with correlation
    /// 0.5 loses about 0.2 % of packets); for bursts at a known rate use
    /// [`Loss::GilbertElliott`].
    Random {
        /// 0..=1.
        probability: f64,
        /// 0..=1; default 0.
        #[serde(default)]
        correlation: f64,
    },
    /// A two-state Markov chain (good, bad), advanced once per packet before the packet's fate
    /// is drawn in the state it lands in. Starts good. Long-run loss rate
    /// `p/(p+r)·loss_bad + r/(p+r)·loss_good`; with `loss_bad = 1, loss_good = 0`, bursts
    /// average `1/r` packets.
    GilbertElliott {
        /// Probability of going from good to bad.
        p: f64,
        /// Probability of going from bad to good.
        r: f64,
        /// Loss probability in the good state (netem's `1-k`); default 0.
        #[serde(default)]
        loss_good: f64,
        /// Loss probability in the bad state (netem's `1-h`); default 1.
        #[serde(default = "one")]
        loss_bad: f64,
    },
}

/// A bottleneck of fixed capacity: packets are serialized one at a time, first come first served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rate {
    /// Capacity; a packet of `size` bytes takes `size · 8 / bits_per_second` seconds.
    pub bits_per_second: u64,
    /// The drop-tail queue in front of it.
    pub queue: Queue,
}

/// The capacity of a bottleneck's drop-tail queue. It counts the packets *waiting*: not the one
/// being serialized (behind a [`Trace`]: one with some bytes already carried by an opportunity).
/// A packet that starts leaving the moment it arrives needs no room; one that has to wait is
/// dropped if it does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Queue {
    /// At most this many packets wait.
    Packets(usize),
    /// At most this many bytes (whole IP packets) wait.
    Bytes(usize),
}

/// A bottleneck replaying recorded capacity, as Mahimahi does: each timestamp is one delivery
/// opportunity of [`OPPORTUNITY_BYTES`](crate::OPPORTUNITY_BYTES) bytes, shared first come first
/// served; a packet leaves at the opportunity carrying its last byte. Opportunities nobody can
/// use (the queue is empty) are wasted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Trace {
    /// Milliseconds since the condition was set, non-decreasing (Mahimahi's file format; see
    /// [`parse_mahimahi`](crate::parse_mahimahi)).
    pub opportunities: Vec<u32>,
    /// `true` (the default, as in Mahimahi): the trace repeats with a period of its last
    /// timestamp. `false`: once it has run out, nothing more gets through; packets that cannot
    /// be carried any more are dropped and counted as `queue_dropped`.
    #[serde(default = "yes")]
    pub looped: bool,
    /// The drop-tail queue in front of it.
    pub queue: Queue,
}

/// One step of a recorded delay series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DelayStep {
    /// When the step starts, since the condition was set.
    #[serde(rename = "at-us", with = "micros")]
    pub at: Duration,
    /// The base delay from then on (jitter still applies).
    #[serde(rename = "delay-us", with = "micros")]
    pub delay: Duration,
}

/// Why a [`Condition`] cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConditionError {
    /// A probability or correlation outside 0..=1 (or not a number).
    #[error("{field} must be between 0 and 1, got {value}")]
    OutOfRange {
        /// Which field, e.g. `loss.probability`.
        field: &'static str,
        /// What it was.
        value: f64,
    },
    /// A rate of zero bits per second.
    #[error("the rate must be above 0 bits per second")]
    ZeroRate,
    /// A queue of zero packets or bytes.
    #[error("the queue must hold at least one packet or byte")]
    ZeroQueue,
    /// Both `rate` and `trace`.
    #[error("a condition has one bottleneck: a rate or a trace, not both")]
    TwoBottlenecks,
    /// A trace without timestamps.
    #[error("the trace has no delivery opportunities")]
    EmptyTrace,
    /// A trace whose timestamps go down.
    #[error("trace opportunity {index} ({value} ms) is before the previous one")]
    UnsortedTrace {
        /// Its position (0-based).
        index: usize,
        /// Its timestamp.
        value: u32,
    },
    /// A looped trace whose last timestamp is 0 (a period of zero).
    #[error("a looped trace's last timestamp is its period and must be above 0 ms")]
    ZeroPeriod,
    /// Delay steps out of order.
    #[error("delay step {index} starts before the previous one")]
    UnsortedDelaySteps {
        /// Its position (0-based).
        index: usize,
    },
}

impl Condition {
    /// Checks probabilities and correlations (0..=1), the bottleneck (one at most, rate and
    /// queue above zero, a trace non-empty, non-decreasing and, if looped, with a period above
    /// zero) and that the delay steps are sorted.
    pub fn validate(&self) -> Result<(), ConditionError> {
        let unit = |field, value: f64| match (0.0..=1.0).contains(&value) {
            true => Ok(()),
            false => Err(ConditionError::OutOfRange { field, value }),
        };
        unit("delay.correlation", self.delay.correlation)?;
        unit("duplicate", self.duplicate)?;
        match self.loss {
            Loss::None => {}
            Loss::Random { probability, correlation } => {
                unit("loss.probability", probability)?;
                unit("loss.correlation", correlation)?;
            }
            Loss::GilbertElliott { p, r, loss_good, loss_bad } => {
                unit("loss.p", p)?;
                unit("loss.r", r)?;
                unit("loss.loss-good", loss_good)?;
                unit("loss.loss-bad", loss_bad)?;
            }
        }
        let queue = |queue: Queue| match queue {
            Queue::Packets(0) | Queue::Bytes(0) => Err(ConditionError::ZeroQueue),
            _ => Ok(()),
        };
        match (&self.rate, &self.trace) {
            (Some(_), Some(_)) => return Err(ConditionError::TwoBottlenecks),
            (Some(rate), None) if rate.bits_per_second == 0 => {
                return Err(ConditionError::ZeroRate)
            }
            (Some(rate), None) => queue(rate.queue)?,
            (None, Some(trace)) => {
                let ops = &trace.opportunities;
                let last = *ops.last().ok_or(ConditionError::EmptyTrace)?;
                if let Some(i) = ops.windows(2).position(|w| w[1] < w[0]) {
                    return Err(ConditionError::UnsortedTrace { index: i + 1, value: ops[i + 1] });
                }
                if trace.looped && last == 0 {
                    return Err(ConditionError::ZeroPeriod);
                }
                queue(trace.queue)?;
            }
            (None, None) => {}
        }
        match self.delay_steps.windows(2).position(|w| w[1].at < w[0].at) {
            Some(i) => Err(ConditionError::UnsortedDelaySteps { index: i + 1 }),
            None => Ok(()),
        }
    }

    /// Whether the condition does nothing to packets (a pipe then draws no random numbers).
    pub fn is_perfect(&self) -> bool {
        let lossless = match self.loss {
            Loss::None => true,
            Loss::Random { probability, .. } => probability == 0.0,
            Loss::GilbertElliott { p, loss_good, loss_bad, .. } => {
                loss_good == 0.0 && (p == 0.0 || loss_bad == 0.0)
            }
        };
        self.delay.base.is_zero()
            && self.delay.jitter.is_zero()
            && lossless
            && self.duplicate == 0.0
            && self.rate.is_none()
            && self.trace.is_none()
            && self.delay_steps.iter().all(|step| step.delay.is_zero())
    }
}

impl Distribution {
    /// The jitter offset, in units of the jitter, at the uniform number `u` (0..1).
    pub(crate) fn offset(self, u: f64) -> f64 {
        let u = u.clamp(1e-12, 1.0 - 1e-12);
        let pareto = || (4.0 / 3.0 * ((1.0 - u).powf(-1.0 / 3.0) - 1.5)).min(4.0);
        let offset = match self {
            Distribution::Uniform => 2.0 * u - 1.0,
            Distribution::Normal => inverse_normal(u),
            Distribution::Pareto => pareto(),
            Distribution::ParetoNormal => 0.25 * inverse_normal(u) + 0.75 * pareto(),
        };
        offset.clamp(-4.0, 4.0)
    }
}

/// The standard normal distribution's inverse (quantile) function, by Peter Acklam's rational
/// approximation (relative error below 1.2e-9), for 0 < `u` < 1.
fn inverse_normal(u: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] =
        [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let poly = |coefficients: &[f64], x: f64| coefficients.iter().fold(0.0, |acc, c| acc * x + c);
    let tail = |p: f64| {
        let q = (-2.0 * p.ln()).sqrt();
        poly(&C, q) / (poly(&D, q) * q + 1.0)
    };
    const LOW: f64 = 0.02425;
    if u < LOW {
        tail(u)
    } else if u > 1.0 - LOW {
        -tail(1.0 - u)
    } else {
        let q = u - 0.5;
        let r = q * q;
        poly(&A, r) * q / (poly(&B, r) * r + 1.0)
    }
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

mod micros {
    //! Serde for a [`Duration`] as an integer of microseconds.
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(bits_per_second: u64, queue: Queue) -> Option<Rate> {
        Some(Rate { bits_per_second, queue })
    }

    fn trace(opportunities: Vec<u32>, looped: bool) -> Option<Trace> {
        Some(Trace { opportunities, looped, queue: Queue::Packets(10) })
    }

    #[test]
    fn validate_rejects_what_cannot_be_run() {
        let ok = Condition::default();
        assert_eq!(ok.validate(), Ok(()));
        let fine = rate(1_000_000, Queue::Packets(10));
        let random = |probability, correlation| Loss::Random { probability, correlation };
        let ge = |p, r| Loss::GilbertElliott { p, r, loss_good: 0.0, loss_bad: 1.0 };
        let step = |ms| DelayStep { at: Duration::from_millis(ms), delay: Duration::ZERO };
        let bad: Vec<(Condition, &str)> = vec![
            (Condition { duplicate: 1.5, ..ok.clone() }, "duplicate"),
            (Condition { duplicate: f64::NAN, ..ok.clone() }, "duplicate"),
            (Condition { loss: random(-0.1, 0.0), ..ok.clone() }, "loss.probability"),
            (Condition { loss: random(0.1, 1.1), ..ok.clone() }, "loss.correlation"),
            (Condition { loss: ge(0.1, 2.0), ..ok.clone() }, "loss.r"),
            (
                Condition { delay: Delay { correlation: -1.0, ..Delay::default() }, ..ok.clone() },
                "delay.correlation",
            ),
            (Condition { rate: rate(0, Queue::Packets(1)), ..ok.clone() }, "above 0 bits"),
            (Condition { rate: rate(1, Queue::Bytes(0)), ..ok.clone() }, "at least one"),
            (
                Condition { trace: trace(vec![1], true), ..Condition { rate: fine, ..ok.clone() } },
                "not both",
            ),
            (Condition { trace: trace(vec![], true), ..ok.clone() }, "no delivery"),
            (Condition { trace: trace(vec![1, 3, 2], true), ..ok.clone() }, "opportunity 2"),
            (Condition { trace: trace(vec![0, 0], true), ..ok.clone() }, "period"),
            (Condition { delay_steps: vec![step(5), step(4)], ..ok.clone() }, "delay step 1"),
        ];
        for (condition, says) in bad {
            let error = condition.validate().expect_err("invalid").to_string();
            assert!(error.contains(says), "{error:?} should mention {says:?}");
        }
        let once = Condition { trace: trace(vec![0, 0], false), ..ok.clone() };
        assert_eq!(once.validate(), Ok(()), "a once trace may sit at 0 ms");
        assert_eq!(Condition { rate: fine, ..ok }.validate(), Ok(()));
    }

    #[test]
    fn perfect_means_nothing_happens() {
        assert!(Condition::default().is_perfect());
        assert!(Condition { reorder: true, ..Condition::default() }.is_perfect());
        let delayed = Delay { base: Duration::from_millis(1), ..Delay::default() };
        assert!(!Condition { delay: delayed, ..Condition::default() }.is_perfect());
        assert!(!Condition { duplicate: 0.1, ..Condition::default() }.is_perfect());
        let rate = rate(1, Queue::Packets(1));
        assert!(!Condition { rate, ..Condition::default() }.is_perfect());
    }

    #[test]
    fn distribution_offsets() {
        assert!((inverse_normal(0.975) - 1.959964).abs() < 1e-6);
        assert!((inverse_normal(0.01) + 2.326348).abs() < 1e-6);
        assert!(inverse_normal(0.5).abs() < 1e-12);
        assert_eq!(Distribution::Uniform.offset(0.5), 0.0);
        assert!((Distribution::Pareto.offset(0.0) + 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(Distribution::Pareto.offset(0.999_999), 4.0);
        assert_eq!(Distribution::Normal.offset(0.0), -4.0);
    }
}
