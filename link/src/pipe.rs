//! One direction of a link as a seeded state machine: [`Pipe::offer`] takes a packet's arrival
//! time and size and answers when it leaves (never, once or twice), carrying out its
//! [`Condition`]. Time is a [`Duration`] since the pipe's epoch, passed in; randomness comes only
//! from the seed.

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::condition::{Condition, ConditionError, Loss, Queue, Trace};
use crate::trace::OPPORTUNITY_BYTES;

/// One direction's state.
#[derive(Debug)]
pub struct Pipe {
    condition: Condition,
    perfect: bool,
    rng: SmallRng,
    /// When the condition was set: the origin of its trace and delay steps.
    epoch: Duration,
    loss_last: Option<f64>,
    jitter_last: Option<f64>,
    bad: bool,
    /// When the bottleneck has sent the last byte it accepted.
    free_at: Duration,
    /// Accepted packets that have not started leaving the bottleneck: (start, size).
    waiting: VecDeque<(Duration, usize)>,
    waiting_bytes: usize,
    /// The trace's next opportunity (counted across loops) and the bytes of it already used.
    cursor: (u64, usize),
    last_departure: Duration,
    stats: PipeStats,
}

/// Counters since the pipe was created. Every packet offered, and every copy made, ends up
/// lost, queue-dropped or departed: `offered + duplicated = lost + queue_dropped + departures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Packets offered.
    pub offered: u64,
    /// Packets dropped by the loss model.
    pub lost: u64,
    /// Packets (and copies) dropped at the bottleneck: its queue was full, or a once trace had
    /// run out.
    pub queue_dropped: u64,
    /// Copies made by duplication.
    pub duplicated: u64,
}

impl PipeStats {
    /// Departures so far (the copies included): `offered − lost − queue_dropped + duplicated`,
    /// what the far end of a lossless path receives.
    pub fn departed(&self) -> u64 {
        (self.offered + self.duplicated).saturating_sub(self.lost + self.queue_dropped)
    }
}

/// When a packet leaves: 0, 1 or 2 times, in order, each at or after its arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Departures {
    times: [Duration; 2],
    len: u8,
}

impl Departures {
    fn push(&mut self, at: Duration) {
        self.times[usize::from(self.len)] = at;
        self.len += 1;
    }

    /// Whether the packet never leaves.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many times it leaves.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The departure times.
    pub fn as_slice(&self) -> &[Duration] {
        &self.times[..self.len()]
    }

    /// The departure times.
    pub fn iter(&self) -> impl Iterator<Item = Duration> + '_ {
        self.as_slice().iter().copied()
    }
}

impl IntoIterator for Departures {
    type Item = Duration;
    type IntoIter = std::iter::Take<std::array::IntoIter<Duration, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.times.into_iter().take(self.len())
    }
}

impl<'a> IntoIterator for &'a Departures {
    type Item = Duration;
    type IntoIter = std::iter::Copied<std::slice::Iter<'a, Duration>>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter().copied()
    }
}

impl Pipe {
    /// A pipe carrying out `condition` from time zero, its randomness seeded by `seed`.
    pub fn new(condition: Condition, seed: u64) -> Result<Pipe, ConditionError> {
        condition.validate()?;
        Ok(Pipe {
            perfect: condition.is_perfect(),
            condition,
            rng: SmallRng::seed_from_u64(seed),
            epoch: Duration::ZERO,
            loss_last: None,
            jitter_last: None,
            bad: false,
            free_at: Duration::ZERO,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            cursor: (0, 0),
            last_departure: Duration::ZERO,
            stats: PipeStats::default(),
        })
    }

    /// Replaces the condition from `now` on. Packets already accepted keep their departures;
    /// the bottleneck still finishes them before anything newer, and its waiting packets still
    /// count against the (new) queue. The delay steps and the trace restart at `now`; the loss
    /// and jitter models restart from their initial state; the random stream and counters go on.
    pub fn set(&mut self, condition: Condition, now: Duration) -> Result<(), ConditionError> {
        condition.validate()?;
        self.perfect = condition.is_perfect();
        self.condition = condition;
        self.epoch = now;
        (self.loss_last, self.jitter_last, self.bad) = (None, None, false);
        self.cursor = (0, 0);
        Ok(())
    }

    /// The condition in force.
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// Counters since creation.
    pub fn stats(&self) -> PipeStats {
        self.stats
    }

    /// A packet of `size` bytes (the whole IP packet) arrives at `now`: when it leaves.
    /// `now` must not go back between calls.
    pub fn offer(&mut self, now: Duration, size: usize) -> Departures {
        self.stats.offered += 1;
        let mut out = Departures::default();
        if self.perfect {
            out.push(self.in_order(now));
            return out;
        }
        if self.lose() {
            self.stats.lost += 1;
            return out;
        }
        let copies = match self.condition.duplicate > 0.0
            && self.rng.random::<f64>() < self.condition.duplicate
        {
            true => 2,
            false => 1,
        };
        self.stats.duplicated += copies - 1;
        let mut exits = Departures::default();
        for _ in 0..copies {
            match self.bottleneck(now, size) {
                Some(exit) => exits.push(exit),
                None => self.stats.queue_dropped += 1,
            }
        }
        if let Some(first) = exits.iter().next() {
            let propagation = self.propagation(first);
            for exit in exits {
                out.push(self.in_order(exit.saturating_add(propagation)));
            }
        }
        out
    }

    /// `at`, raised to the previous departure unless the condition allows reordering.
    fn in_order(&mut self, at: Duration) -> Duration {
        let at = if self.condition.reorder { at } else { at.max(self.last_departure) };
        self.last_departure = self.last_departure.max(at);
        at
    }

    fn lose(&mut self) -> bool {
        match self.condition.loss {
            Loss::None => false,
            Loss::Random { probability, correlation } => {
                probability > 0.0
                    && correlated(&mut self.rng, &mut self.loss_last, correlation) < probability
            }
            Loss::GilbertElliott { p, r, loss_good, loss_bad } => {
                let flip = self.rng.random::<f64>() < if self.bad { r } else { p };
                self.bad ^= flip;
                self.rng.random::<f64>() < if self.bad { loss_bad } else { loss_good }
            }
        }
    }

    /// When a packet arriving at `now` has left the bottleneck, or `None` if it is dropped there.
    fn bottleneck(&mut self, now: Duration, size: usize) -> Option<Duration> {
        let from = now.max(self.free_at);
        let (start, finish, cursor, queue) = if let Some(rate) = &self.condition.rate {
            let nanos = (size as u128 * 8_000_000_000).div_ceil(u128::from(rate.bits_per_second));
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            let finish = from.saturating_add(Duration::from_nanos(nanos));
            (from, finish, self.cursor, rate.queue)
        } else if let Some(trace) = &self.condition.trace {
            let clock = Clock { trace, epoch: self.epoch };
            let (start, finish, cursor) = clock.carry(self.cursor, from, size)?;
            (start, finish, cursor, trace.queue)
        } else {
            return Some(now);
        };
        while self.waiting.front().is_some_and(|&(start, _)| start <= now) {
            let (_, size) = self.waiting.pop_front().unwrap_or_default();
            self.waiting_bytes -= size;
        }
        if start > now {
            let fits = match queue {
                Queue::Packets(packets) => self.waiting.len() < packets,
                Queue::Bytes(bytes) => self.waiting_bytes.saturating_add(size) <= bytes,
            };
            if !fits {
                return None;
            }
            self.waiting.push_back((start, size));
            self.waiting_bytes += size;
        }
        (self.free_at, self.cursor) = (finish, cursor);
        Some(finish)
    }

    /// The propagation delay of a packet leaving the bottleneck at `at`.
    fn propagation(&mut self, at: Duration) -> Duration {
        let since = at.saturating_sub(self.epoch);
        let steps = &self.condition.delay_steps;
        let delay = &self.condition.delay;
        let base = match steps.partition_point(|step| step.at <= since) {
            0 => delay.base,
            n => steps[n - 1].delay,
        };
        if delay.jitter.is_zero() {
            return base;
        }
        let u = correlated(&mut self.rng, &mut self.jitter_last, delay.correlation);
        let seconds =
            base.as_secs_f64() + delay.jitter.as_secs_f64() * delay.distribution.offset(u);
        Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX)
    }
}

/// netem's correlated uniform number: `(1 − rho)·fresh + rho·previous`.
fn correlated(rng: &mut SmallRng, last: &mut Option<f64>, rho: f64) -> f64 {
    let fresh: f64 = rng.random();
    let value = last.map_or(fresh, |previous| (1.0 - rho) * fresh + rho * previous);
    *last = Some(value);
    value
}

/// A trace's opportunities on the pipe's time line.
struct Clock<'a> {
    trace: &'a Trace,
    epoch: Duration,
}

impl Clock<'_> {
    /// When opportunity `k` (counted across loops) comes, if ever.
    fn time(&self, k: u64) -> Option<Duration> {
        let ops = &self.trace.opportunities;
        let n = ops.len() as u64;
        let lap = k / n;
        if lap > 0 && !self.trace.looped {
            return None;
        }
        let period = u64::from(*ops.last()?);
        let ms = lap.saturating_mul(period).saturating_add(u64::from(ops[(k % n) as usize]));
        Some(self.epoch.saturating_add(Duration::from_millis(ms)))
    }

    /// The first opportunity at or after `at`, if any.
    fn first_from(&self, at: Duration) -> Option<u64> {
        let ms =
            u64::try_from(at.saturating_sub(self.epoch).as_nanos().div_ceil(1_000_000)).ok()?;
        let ops = &self.trace.opportunities;
        let in_lap = |lap: u64| {
            let rest = ms.checked_sub(lap * u64::from(*ops.last()?))?;
            let i = ops.partition_point(|&op| u64::from(op) < rest);
            (i < ops.len()).then(|| lap * ops.len() as u64 + i as u64)
        };
        if !self.trace.looped {
            return in_lap(0);
        }
        // The previous lap's last opportunities coincide with this lap's start.
        let lap = ms / u64::from(*ops.last()?);
        in_lap(lap.saturating_sub(1)).or_else(|| in_lap(lap))
    }

    /// Carries `size` bytes from `cursor`, not before `from`: when the first and the last byte
    /// go, and the cursor after them; `None` if the trace runs out first.
    fn carry(
        &self,
        cursor: (u64, usize),
        from: Duration,
        size: usize,
    ) -> Option<(Duration, Duration, (u64, usize))> {
        let first = self.first_from(from)?;
        let (mut k, mut used) = if cursor.0 >= first { cursor } else { (first, 0) };
        let start = self.time(k)?;
        let mut left = size.max(1); // even an empty packet needs an opportunity
        loop {
            let at = self.time(k)?;
            let take = left.min(OPPORTUNITY_BYTES - used);
            (used, left) = (used + take, left - take);
            if used == OPPORTUNITY_BYTES {
                (k, used) = (k + 1, 0);
            }
            if left == 0 {
                return Some((start, at, (k, used)));
            }
        }
    }
}
