//! Scenarios: field disconnects written down as files, and (later) their runner.
//!
//! The command (`faultline run`) and the suites share this module, so a scenario means the same
//! thing wherever it runs.

pub mod format;

pub use format::{Scenario, ScenarioError};
