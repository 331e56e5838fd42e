//! Connection options: [`RoomOptions`], the [`ReconnectPolicy`] and its backoff arithmetic.
//!
//! The defaults are the upstream `livekit` crate's constants (10 attempts, 300 ms base delay
//! doubling up to 7 s, full jitter; 5 s WebSocket connect, 5 s join, 15 s peer-connection
//! connect). Unlike upstream, every one of them can be changed, so a test can make a reconnect
//! loop run out in seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::net::{Network, TokioNetwork};

/// How the delay before a reconnect attempt is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: the delay is exactly the capped exponential value.
    None,
    /// "Full jitter": the delay is uniform in `[0, capped exponential value]` (upstream's).
    Full,
}

/// How many times, and how far apart, the engine retries after losing its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Attempts per reconnect episode (the first is immediate). After the last fails the
    /// room ends with one `Disconnected`.
    pub attempts: u32,
    /// The delay cap before attempt 2.
    pub base_delay: Duration,
    /// Growth factor of the delay cap per attempt.
    pub multiplier: f64,
    /// The largest delay cap.
    pub max_delay: Duration,
    /// How the delay is drawn below its cap.
    pub jitter: Jitter,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            attempts: 10,
            base_delay: Duration::from_millis(300),
            multiplier: 2.0,
            max_delay: Duration::from_secs(7),
            jitter: Jitter::Full,
        }
    }
}

impl ReconnectPolicy {
    /// The upper bound of the delay before attempt `attempt` (1-based): zero for the first
    /// attempt, then `min(max_delay, base_delay · multiplier^(attempt-2))`.
    pub fn delay_cap(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(attempt - 2).unwrap_or(i32::MAX);
        let secs = self.base_delay.as_secs_f64() * self.multiplier.max(0.0).powi(exponent);
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The delay before attempt `attempt`, drawn from `rng` according to [`Self::jitter`].
    pub fn delay(&self, attempt: u32, rng: &mut SmallRng) -> Duration {
        let cap = self.delay_cap(attempt);
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full if cap.is_zero() => cap,
            Jitter::Full => Duration::from_secs_f64(rng.random_range(0.0..=cap.as_secs_f64())),
        }
    }

    /// The sum of all delay caps: the longest an episode can spend waiting between attempts
    /// (37.3 s for the default policy).
    ///
    /// The upstream `livekit` crate, with the same constants, sleeps once more after its last
    /// attempt fails before it gives up, so its sum is one cap longer (44.3 s). faultline-sdk
    /// gives up as soon as the last attempt fails: a wait after it cannot succeed, so the
    /// `Disconnected` comes up to 7 s sooner, with the same attempts made.
    pub fn total_delay_cap(&self) -> Duration {
        (1..=self.attempts).map(|attempt| self.delay_cap(attempt)).sum()
    }
}

/// Options for [`crate::Room::connect`].
#[derive(Clone)]
pub struct RoomOptions {
    /// Subscribe to every published track automatically (query `auto_subscribe`).
    pub auto_subscribe: bool,
    /// Ask the server to adapt video quality to what is rendered (query `adaptive_stream`).
    pub adaptive_stream: bool,
    /// The reconnect policy.
    pub reconnect: ReconnectPolicy,
    /// How many times [`crate::Room::connect`] tries again, at once, after a failed join
    /// (upstream's `join_retries`, default 3: four attempts in all). A refused token or a
    /// malformed URL is not retried: it cannot get better.
    pub join_retries: u32,
    /// Bound on opening the signalling connection (TCP, TLS and the WebSocket upgrade).
    pub connect_timeout: Duration,
    /// Bound on waiting for the server's JoinResponse / ReconnectResponse.
    pub join_timeout: Duration,
    /// Bound on the peer connections reaching `Connected` after a join or resume.
    pub pc_connect_timeout: Duration,
    /// How long a peer connection may stay disconnected before it counts as failed.
    pub pc_failed_after: Duration,
    /// Where sockets come from (real sockets by default).
    pub network: Arc<dyn Network>,
    /// Seed of the room's random number generator (backoff jitter). `None` takes the next
    /// value of a process-wide counter (see [`RoomOptions::seed`]), so runs are repeatable
    /// given the order in which rooms are created.
    pub rng_seed: Option<u64>,
}

impl std::fmt::Debug for RoomOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomOptions")
            .field("auto_subscribe", &self.auto_subscribe)
            .field("adaptive_stream", &self.adaptive_stream)
            .field("reconnect", &self.reconnect)
            .field("join_retries", &self.join_retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("join_timeout", &self.join_timeout)
            .field("pc_connect_timeout", &self.pc_connect_timeout)
            .field("pc_failed_after", &self.pc_failed_after)
            .field("rng_seed", &self.rng_seed)
            .finish_non_exhaustive()
    }
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            auto_subscribe: true,
            adaptive_stream: false,
            reconnect: ReconnectPolicy::default(),
            join_retries: 3,
            connect_timeout: Duration::from_secs(5),
            join_timeout: Duration::from_secs(5),
            pc_connect_timeout: Duration::from_secs(15),
            pc_failed_after: crate::rtc::PcConfig::DEFAULT_FAILED_AFTER,
            network: Arc::new(TokioNetwork),
            rng_seed: None,
        }
    }
}

/// Default seeds: a fixed start value, advanced once per room that did not pick its own.
static NEXT_DEFAULT_SEED: AtomicU64 = AtomicU64::new(0x6661_756c_746c_696e);

impl RoomOptions {
    /// The seed this room's RNG uses: [`Self::rng_seed`], or else the next value of a
    /// process-wide counter starting at a fixed constant (deterministic, never OS entropy).
    pub fn seed(&self) -> u64 {
        self.rng_seed.unwrap_or_else(|| NEXT_DEFAULT_SEED.fetch_add(1, Ordering::Relaxed))
    }

    /// An upper bound on how long one reconnect episode can last before it ends in
    /// `Reconnected` or `Disconnected`: every delay at its cap plus every attempt using all
    /// of its timeouts.
    pub fn reconnect_bound(&self) -> Duration {
        let per_attempt = self.connect_timeout + self.join_timeout + self.pc_connect_timeout;
        self.reconnect.total_delay_cap() + per_attempt * self.reconnect.attempts
    }

    /// A seeded RNG for this room.
    pub(crate) fn rng(&self) -> SmallRng {
        SmallRng::seed_from_u64(self.seed())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_first_attempt_is_immediate_and_caps_grow_to_the_maximum() {
        let policy = ReconnectPolicy::default();
        let caps: Vec<u64> = (1..=10).map(|a| policy.delay_cap(a).as_millis() as u64).collect();
        assert_eq!(caps, [0, 300, 600, 1200, 2400, 4800, 7000, 7000, 7000, 7000]);
    }

    #[test]
    fn default_caps_sum_to_one_cap_less_than_upstreams_bound() {
        let policy = ReconnectPolicy::default();
        assert_eq!(policy.total_delay_cap(), Duration::from_millis(37_300));
        // Upstream sleeps once more (one more 7 s cap) after its last attempt: 44.3 s.
        let upstream = policy.total_delay_cap() + policy.delay_cap(policy.attempts + 1);
        assert_eq!(upstream, Duration::from_millis(44_300));
    }

    #[test]
    fn full_jitter_stays_within_the_cap_and_is_repeatable_by_seed() {
        let policy = ReconnectPolicy::default();
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (1..=10).map(|a| policy.delay(a, &mut rng)).collect::<Vec<_>>()
        };
        let first = draw(7);
        assert_eq!(first, draw(7), "the same seed must give the same delays");
        assert_ne!(first, draw(8), "different seeds should give different delays");
        for (i, delay) in first.iter().enumerate() {
            assert!(*delay <= policy.delay_cap(i as u32 + 1), "attempt {}: {delay:?}", i + 1);
        }
        assert_eq!(first[0], Duration::ZERO);
    }

    #[test]
    fn no_jitter_gives_the_cap() {
        let policy = ReconnectPolicy { jitter: Jitter::None, ..Default::default() };
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(policy.delay(3, &mut rng), Duration::from_millis(600));
    }

    #[test]
    fn absurd_multipliers_saturate_at_the_maximum() {
        let policy = ReconnectPolicy { multiplier: 1e300, ..Default::default() };
        assert_eq!(policy.delay_cap(100), policy.max_delay);
        let shrinking = ReconnectPolicy { multiplier: -3.0, ..Default::default() };
        assert_eq!(shrinking.delay_cap(3), Duration::ZERO);
    }

    #[test]
    fn default_seeds_are_distinct_per_room() {
        let options = RoomOptions::default();
        assert_ne!(options.seed(), options.seed());
        let fixed = RoomOptions { rng_seed: Some(42), ..Default::default() };
        assert_eq!(fixed.seed(), 42);
    }
}
