//! The `[field]` table of a scenario `faultline import` wrote: what the field evidence showed
//! (the outages, the field client's lifecycle), so that a run's report can set it beside what
//! the run reproduced. It changes nothing about how the scenario runs.

use std::time::Duration;

use serde::Deserialize;

use super::durations::duration;

/// What the field evidence showed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The participant that stands for the field client.
    pub participant: String,
    /// The outages the evidence showed, on the fault timeline.
    #[serde(default)]
    pub outages: Vec<FieldOutage>,
    /// Whether the client's log was among the evidence (without it the lifecycle is unknown,
    /// not empty).
    #[serde(default)]
    pub log: bool,
    /// The field client's lifecycle, as its log showed it.
    #[serde(default)]
    pub lifecycle: Vec<FieldMoment>,
}

/// An outage the evidence showed: media stopped at `at` for `for`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldOutage {
    /// When the media stopped, from the timeline's zero.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// How long it stayed stopped.
    #[serde(rename = "for", deserialize_with = "duration")]
    pub lasted: Duration,
}

/// One step of the field client's lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMoment {
    /// When, from the timeline's zero.
    #[serde(deserialize_with = "duration")]
    pub at: Duration,
    /// `Reconnecting`, `Reconnected` or `Disconnected`.
    pub state: String,
}
