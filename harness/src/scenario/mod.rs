//! Scenarios: field disconnects written down as files, and their runner.
//!
//! - [`format`](mod@format): the file format, read and checked with located errors.
//! - [`lane`]: what both lanes share: run options, progress, errors, fault labels.
//! - [`real_lane`]: playing a scenario against the real livekit-server.
//! - [`sim_lane`]: playing it in the turmoil simulation.
//! - [`seeds`]: its pass rate over many seeds of the simulation.
//!
//! Each lane writes a [`crate::record::RunRecord`]; [`crate::judge`] gives its verdicts.
//!
//! The command (`faultline run`) and the suites share this module, so a scenario means the same
//! thing wherever it runs.

mod backend;
pub mod format;
pub mod lane;
pub mod real_lane;
pub mod seeds;
pub mod sim_lane;

pub use crate::record::RunRecord;
pub use format::{Scenario, ScenarioError};
pub use lane::{Progress, RunError, RunOptions};
pub use real_lane::run_real;
pub use seeds::{sweep, SeedSweep, REQUIRED_PASS_RATE};
pub use sim_lane::run_sim;
