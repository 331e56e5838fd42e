//! Property-based exploration of the simulation lane: random fault schedules over several
//! participants, each run judged against DESIGN.md's invariants, failures shrunk to a
//! minimal schedule and written out for replay.
//!
//! - [`Case`]: a seed, a participant count and a [`Schedule`] — everything a run depends on,
//!   so it prints as TOML and replays.
//! - [`run_case`] (`run`): one case in a [`super::Sim`], with a workload of joins and reliable
//!   data, faults applied at their times, then settling until every room is `Connected` or
//!   `Disconnected` (or a room's episode outlives its bound), recorded as a
//!   [`crate::record::RunRecord`] like any lane's run.
//! - [`crate::judge::violations`]: invariants 1–6 on that record, the same judge every lane
//!   uses (6 in the cases with media, [`Case::media`]).
//! - `generate`: random schedules from a seed; `shrink`: smaller failing schedules.
//! - [`explore`]: the loop — generate, run, judge, and on a violation shrink and stop.
//! - `shard`: one exploration split across machines ([`Shard`]), and [`merge`] of what
//!   the shards report.
//!
//! Determinism: a case's run depends only on the case. turmoil draws every message's
//! latency and every `fail_rate` decision from its seeded RNG, and str0m draws some of its
//! own values from OS randomness (see [`super::Sim::new`]), which can change how many
//! datagrams a run sends. With the default fixed link latency those extra draws cannot change
//! *when* anything arrives, so the same case gives the same trace. A `fail_rate` fault decides
//! per message whether the link breaks, so a case with one may not replay exactly (those
//! tried did); the generator leaves `fail_rate` out unless asked
//! ([`ExploreConfig::flaky_links`]). One known wrinkle with three or more participants:
//! faultline-sdk reports several remote participants that left during a full reconnect in
//! `HashMap` order, so those `ParticipantDisconnected` events of one instant may come in a
//! different order run to run (verdicts do not depend on it). Likewise with media: str0m
//! draws the ids of media lines (mids) from OS randomness and faultline-sdk keeps its
//! subscriptions by mid, so the `TrackSubscribed`/`TrackUnsubscribed` events of one
//! participant at one instant may come in either order; their times, and every media
//! sample's counts, repeat.

mod generate;
mod run;
mod shard;
mod shrink;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use generate::generate;
pub use run::{
    run_case, run_case_with, Overrides, ParticipantRun, PublishPlan, Run, JOIN_STAGGER, ROOM,
    TRACKS_AFTER_LAST_JOIN, VIDEO_FPS,
};
pub use shard::{merge, FoundViolation, MergeError, Merged, Shard, ShardReport};
pub use shrink::shrink;

use super::schedule::{Schedule, ScheduleError};
use super::server::PlantedBug;
use super::SimError;
use crate::judge::{violations, Violation};

/// Everything one run depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The simulation's seed.
    pub seed: u64,
    /// How many participants join (identities and hosts `p0`, `p1`, … unless `names`).
    pub participants: usize,
    /// The participants' identities (and host names), when not `p0`, `p1`, …: a scenario run
    /// on the sim lane uses the scenario's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A deliberate server bug, if any (see [`PlantedBug`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted_bug: Option<PlantedBug>,
    /// Every participant publishes a microphone and a camera track after joining (and
    /// invariant 6 has something to judge).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub media: bool,
    /// The faults.
    #[serde(flatten)]
    pub schedule: Schedule,
}

impl Case {
    /// The participants' identities (also their host names).
    pub fn identities(&self) -> Vec<String> {
        if self.names.is_empty() {
            (0..self.participants).map(|i| format!("p{i}")).collect()
        } else {
            self.names.clone()
        }
    }

    /// Reads a case from TOML (as written by [`Case::to_toml`]).
    pub fn from_toml(text: &str) -> Result<Self, ExploreError> {
        toml::from_str(text).map_err(|e| ExploreError::Parse(e.to_string()))
    }

    /// The case as TOML: `seed`, `participants`, then the `[[step]]`s.
    pub fn to_toml(&self) -> String {
        // Plain numbers, strings and tables: it always serialises.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the case: {e}\n"))
    }

    /// Reads a case file.
    pub fn read(path: &Path) -> Result<Self, ExploreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ExploreError::Io { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ExploreError::Parse(reason) => {
                ExploreError::Parse(format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// Writes the case file.
    pub fn write(&self, path: &Path) -> Result<(), ExploreError> {
        std::fs::write(path, self.to_toml())
            .map_err(|source| ExploreError::Io { path: path.to_owned(), source })
    }
}

/// Why a case could not be run (not a violation: the run itself did not happen).
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// The schedule does not fit the simulation.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The simulation failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// A case file is not valid TOML for a case.
    #[error("cannot read the case: {0}; expected `seed`, `participants` and `[[step]]` tables as `faultline explore` writes them")]
    Parse(String),
    /// Too few participants, or too many.
    #[error("expected between 1 and {max} participants, got {got}")]
    Participants {
        /// The count asked for.
        got: usize,
        /// The largest supported.
        max: usize,
    },
    /// `names` does not name each participant once, or names the server's host.
    #[error("the case's names {names:?} must be {participants} distinct identities, none of them {server:?} (the server's host)", server = super::SERVER_HOST)]
    Names {
        /// The names given.
        names: Vec<String>,
        /// The participant count.
        participants: usize,
    },
    /// A case file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The share of cases with media unless told otherwise (percent).
pub const DEFAULT_MEDIA_PERCENT: u8 = 25;

/// What [`explore`] does.
#[derive(Debug, Clone)]
pub struct ExploreConfig {
    /// How many schedules to try (over all shards).
    pub cases: u64,
    /// Which of them this process runs.
    pub shard: Shard,
    /// The first case's seed; case `i` uses a seed derived from it and `i`.
    pub seed: u64,
    /// Participants per case.
    pub participants: usize,
    /// Worker threads (each runs whole cases).
    pub jobs: usize,
    /// Include `fail_rate` faults (see the determinism note above).
    pub flaky_links: bool,
    /// A deliberate server bug to run every case against.
    pub planted_bug: Option<PlantedBug>,
    /// The most runs shrinking may spend.
    pub shrink_runs: usize,
    /// In about this share of cases (percent) every participant publishes audio and video,
    /// and invariant 6 is judged.
    pub media_percent: u8,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        Self {
            cases: 100,
            shard: Shard::default(),
            seed: 1,
            participants: 2,
            jobs: std::thread::available_parallelism().map_or(1, usize::from),
            flaky_links: false,
            planted_bug: None,
            shrink_runs: 60,
            media_percent: DEFAULT_MEDIA_PERCENT,
        }
    }
}

/// A case that broke an invariant: as found and as shrunk.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case as generated.
    pub original: Case,
    /// The smallest failing case shrinking found.
    pub shrunk: Case,
    /// What the shrunk case broke.
    pub violations: Vec<Violation>,
    /// The shrunk case's recorded trace.
    pub trace: String,
    /// Runs spent shrinking.
    pub shrink_runs: usize,
    /// Wall time spent shrinking.
    pub shrink_wall: Duration,
}

/// What an exploration did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Cases run to completion.
    pub cases: u64,
    /// Simulated time over all cases.
    pub simulated: Duration,
    /// Wall time exploring (shrinking not included).
    pub wall: Duration,
    /// Rooms that could not join at all (faults before the join; not a violation).
    pub failed_joins: u64,
    /// Cases in which every participant published audio and video.
    pub media_cases: u64,
    /// The first violation found, shrunk.
    pub failure: Option<Failure>,
}

/// Progress of a running exploration, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Cases finished.
    pub done: u64,
    /// Cases planned.
    pub total: u64,
    /// Simulated time so far.
    pub simulated: Duration,
}

/// The seed of case `index` of an exploration starting at `seed` (splitmix64, so nearby
/// indexes give unrelated seeds).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs this shard's share of `config.cases` random cases on `config.jobs` threads, calling
/// `progress` after each.
/// Stops at the first violation, shrinks it, and returns it in the summary. An error means a
/// case could not be run at all.
pub fn explore(
    config: &ExploreConfig,
    progress: impl Fn(Progress) + Sync,
) -> Result<Summary, ExploreError> {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let state = Mutex::new((Summary::default(), None::<(u64, Case, Vec<Violation>)>, None));
    let lock = || state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    std::thread::scope(|scope| {
        for _ in 0..config.jobs.max(1) {
            scope.spawn(|| loop {
                let index = config.shard.case_index(next.fetch_add(1, Ordering::Relaxed));
                if index >= config.cases || stop.load(Ordering::Relaxed) {
                    return;
                }
                let case = generate(
                    case_seed(config.seed, index),
                    config.participants,
                    config.flaky_links,
                    config.planted_bug,
                    config.media_percent,
                );
                let outcome = run_case(&case);
                let mut guard = lock();
                let (summary, failure, error) = &mut *guard;
                match outcome {
                    Ok(run) => {
                        summary.cases += 1;
                        summary.media_cases += u64::from(run.case.media);
                        summary.simulated += run.simulated;
                        summary.failed_joins +=
                            run.participants.iter().filter(|p| p.join_error.is_some()).count()
                                as u64;
                        let found = violations(&run.record);
                        // Keep the lowest failing index, so the result does not depend on
                        // which thread got there first.
                        if !found.is_empty() && failure.as_ref().is_none_or(|(i, ..)| index < *i) {
                            *failure = Some((index, case, found));
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        *error = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                progress(Progress {
                    done: summary.cases,
                    total: config.shard.cases_of(config.cases),
                    simulated: summary.simulated,
                });
            });
        }
    });
    let (mut summary, failure, error) =
        state.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(error) = error {
        return Err(error);
    }
    summary.wall = started.elapsed();
    if let Some((_, original, broken)) = failure {
        let shrinking = Instant::now();
        let shrunk = shrink(&original, &broken, config.shrink_runs)?;
        summary.failure = Some(Failure {
            original,
            shrunk: shrunk.case,
            violations: shrunk.violations,
            trace: shrunk.run.trace_text(),
            shrink_runs: shrunk.runs,
            shrink_wall: shrinking.elapsed(),
        });
    }
    Ok(summary)
}

/// Re-runs one case: its run and what it broke (empty: it passed).
pub fn replay(case: &Case) -> Result<(Run, Vec<Violation>), ExploreError> {
    let run = run_case(case)?;
    let found = violations(&run.record);
    Ok((run, found))
}
