//! A network link's conditions, one direction at a time, as a seeded state machine with no
//! I/O: given each packet's arrival time and size, when it leaves (never, once, or twice).
//! faultline's user-space forwarder (`harness/src/netns/emulator.rs`) moves real packets by it.
//!
//! A [`Condition`] covers netem's list — delay with jitter (uniform, normal, pareto,
//! paretonormal) and correlation, random or Gilbert–Elliott loss, duplication, reordering, a
//! rate with a drop-tail queue — plus Mahimahi's trace replay and a recorded delay series.
//! A [`Pipe`] carries one out; time is a [`std::time::Duration`] since the pipe's epoch, chosen
//! by the caller, and randomness comes only from the pipe's seed.
//!
//! ```
//! use std::time::Duration;
//! use faultline_link::{Condition, Delay, Pipe};
//!
//! let delay = Delay { base: Duration::from_millis(40), ..Delay::default() };
//! let mut pipe = Pipe::new(Condition { delay, ..Condition::default() }, 7)?;
//! let departures = pipe.offer(Duration::from_millis(5), 1200);
//! assert_eq!(departures.iter().collect::<Vec<_>>(), [Duration::from_millis(45)]);
//! # Ok::<(), faultline_link::ConditionError>(())
//! ```

mod condition;
mod pipe;
mod trace;

pub use condition::{
    Condition, ConditionError, Delay, DelayStep, Distribution, Loss, Queue, Rate, Trace,
};
pub use pipe::{Departures, Pipe, PipeStats};
pub use trace::{
    constant_rate_trace, parse_mahimahi, stepped_rate_trace, write_mahimahi, TraceError,
    OPPORTUNITY_BYTES,
};
