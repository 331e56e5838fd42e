//! Scenarios: field disconnects written down as files, and their runner.
//!
//! - [`format`]: the file format, read and checked with located errors.
//! - [`run`]: playing a scenario against the real livekit-server.
//! - [`sim_lane`]: playing it in the turmoil simulation.
//! - [`record`]: what a run saw; [`judge`]: its verdicts.
//!
//! The command (`faultline run`) and the suites share this module, so a scenario means the same
//! thing wherever it runs.

pub mod format;
pub mod judge;
pub mod record;
pub mod run;
pub mod sim_lane;

pub use format::{Scenario, ScenarioError};
pub use record::RunRecord;
pub use run::{run_real, Progress, RunError, RunOptions};
pub use sim_lane::run_sim;
