//! One exploration split across machines: [`Shard`] `I/N` runs the cases whose index is `I`
//! modulo `N` (no case runs twice, none is left out), each shard writes a [`ShardReport`],
//! and [`merge`] checks that the reports are the shards of one exploration and combines them.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ExploreConfig, Summary};

/// Which part of an exploration's cases to run: those whose index is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: u64,
    /// How many shards the exploration has.
    pub count: u64,
}

impl Default for Shard {
    /// The whole exploration.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// Whether case `index` belongs to this shard.
    pub fn has(&self, index: u64) -> bool {
        index % self.count == self.index
    }

    /// How many of `cases` cases this shard runs.
    pub fn cases_of(&self, cases: u64) -> u64 {
        (cases + self.count - 1 - self.index) / self.count
    }

    /// The index of this shard's `k`-th case.
    pub fn case_index(&self, k: u64) -> u64 {
        self.index + k * self.count
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N` with `0 <= I < N`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("expected a shard as I/N with 0 <= I < N (for example 3/10), got {text:?}");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = index.trim().parse().map_err(|_| bad())?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What one shard did, as `faultline explore --summary FILE` writes it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The exploration's seed.
    pub seed: u64,
    /// Its cases over all shards.
    pub cases: u64,
    /// Participants per case.
    pub participants: usize,
    /// Whether flaky links were generated.
    pub flaky_links: bool,
    /// The planted bug, if any (by name).
    pub planted_bug: Option<String>,
    /// The share of cases with media (percent; absent in summaries from before media).
    #[serde(default)]
    pub media_percent: u8,
    /// This shard.
    pub shard: Shard,
    /// Cases this shard ran to completion (fewer than its share when it stopped at a
    /// violation).
    pub ran: u64,
    /// Simulated seconds over its cases.
    pub simulated_secs: f64,
    /// Wall-clock seconds exploring (shrinking not included).
    pub wall_secs: f64,
    /// Rooms that could not join at all.
    pub failed_joins: u64,
    /// Cases it ran in which every participant published audio and video.
    #[serde(default)]
    pub media_cases: u64,
    /// The violation it found, if any.
    pub violation: Option<FoundViolation>,
}

/// A violation a shard found, shrunk and written out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundViolation {
    /// The generated case's seed.
    pub case_seed: u64,
    /// What the shrunk case broke.
    pub broke: Vec<String>,
    /// Where the shrunk case was written (replay it with `faultline replay FILE`).
    pub file: PathBuf,
}

impl ShardReport {
    /// The report of a shard's `summary` under `config`; `case_file` is where a shrunk
    /// failure was written.
    pub fn new(config: &ExploreConfig, summary: &Summary, case_file: Option<&Path>) -> Self {
        Self {
            seed: config.seed,
            cases: config.cases,
            participants: config.participants,
            flaky_links: config.flaky_links,
            planted_bug: config.planted_bug.map(|bug| format!("{bug:?}")),
            media_percent: config.media_percent,
            shard: config.shard,
            ran: summary.cases,
            simulated_secs: summary.simulated.as_secs_f64(),
            wall_secs: summary.wall.as_secs_f64(),
            failed_joins: summary.failed_joins,
            media_cases: summary.media_cases,
            violation: summary.failure.as_ref().map(|f| FoundViolation {
                case_seed: f.original.seed,
                broke: f.violations.iter().map(ToString::to_string).collect(),
                file: case_file.map(Path::to_path_buf).unwrap_or_default(),
            }),
        }
    }
}

/// Reports that are not the shards of one exploration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no shard reports to merge")]
    Empty,
    /// A report of another exploration.
    #[error("{file} is from another exploration: it has {what}, the first report has {first}")]
    Mismatch {
        /// The report that differs.
        file: String,
        /// What it says.
        what: String,
        /// What the first report says.
        first: String,
    },
    /// The reports do not cover the shards exactly once.
    #[error("the reports must be shards 0..{count} once each; {problem}")]
    Coverage {
        /// The shard count.
        count: u64,
        /// Which shards are missing or repeated.
        problem: String,
    },
}

/// The shards of one exploration, combined.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The exploration's seed.
    pub seed: u64,
    /// Cases over all shards.
    pub cases: u64,
    /// Cases run to completion.
    pub ran: u64,
    /// Simulated seconds over all cases.
    pub simulated_secs: f64,
    /// The longest shard's wall-clock seconds (shards run side by side).
    pub wall_secs: f64,
    /// Rooms that could not join at all.
    pub failed_joins: u64,
    /// Cases run with audio and video.
    pub media_cases: u64,
    /// Every violation found, by shard.
    pub violations: Vec<(Shard, FoundViolation)>,
}

/// Combines `reports` (with the file each was read from, for messages) after checking they
/// are the shards `0..N` of one exploration, each once.
pub fn merge(reports: &[(String, ShardReport)]) -> Result<Merged, MergeError> {
    let Some((_, first)) = reports.first() else { return Err(MergeError::Empty) };
    let key = |r: &ShardReport| {
        format!(
            "seed {}, {} cases, {} participants, flaky links {}, planted bug {:?}, media in {} %, {} shards",
            r.seed, r.cases, r.participants, r.flaky_links, r.planted_bug, r.media_percent, r.shard.count
        )
    };
    for (file, report) in reports {
        if key(report) != key(first) {
            return Err(MergeError::Mismatch {
                file: file.clone(),
                what: key(report),
                first: key(first),
            });
        }
    }
    let count = first.shard.count;
    let mut seen = vec![0_u32; usize::try_from(count).unwrap_or(usize::MAX).min(1 << 20)];
    for (_, report) in reports {
        if let Some(n) = usize::try_from(report.shard.index).ok().and_then(|i| seen.get_mut(i)) {
            *n += 1;
        }
    }
    let missing: Vec<String> =
        (0..seen.len()).filter(|i| seen[*i] == 0).map(|i| i.to_string()).collect();
    let repeated: Vec<String> =
        (0..seen.len()).filter(|i| seen[*i] > 1).map(|i| i.to_string()).collect();
    if !missing.is_empty() || !repeated.is_empty() {
        let mut problem = Vec::new();
        if !missing.is_empty() {
            problem.push(format!("missing {}", missing.join(", ")));
        }
        if !repeated.is_empty() {
            problem.push(format!("repeated {}", repeated.join(", ")));
        }
        return Err(MergeError::Coverage { count, problem: problem.join("; ") });
    }
    Ok(Merged {
        seed: first.seed,
        cases: first.cases,
        ran: reports.iter().map(|(_, r)| r.ran).sum(),
        simulated_secs: reports.iter().map(|(_, r)| r.simulated_secs).sum(),
        wall_secs: reports.iter().map(|(_, r)| r.wall_secs).fold(0.0, f64::max),
        failed_joins: reports.iter().map(|(_, r)| r.failed_joins).sum(),
        media_cases: reports.iter().map(|(_, r)| r.media_cases).sum(),
        violations: reports
            .iter()
            .filter_map(|(_, r)| Some((r.shard, r.violation.clone()?)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_cases_without_overlap_or_gap() {
        let cases = 103;
        let mut covered = vec![0; cases as usize];
        for index in 0..7 {
            let shard = Shard { index, count: 7 };
            for k in 0..shard.cases_of(cases) {
                let i = shard.case_index(k);
                assert!(shard.has(i));
                covered[i as usize] += 1;
            }
        }
        assert!(covered.iter().all(|n| *n == 1), "{covered:?}");
    }

    #[test]
    fn a_shard_is_written_i_slash_n() {
        assert_eq!("3/10".parse::<Shard>(), Ok(Shard { index: 3, count: 10 }));
        for bad in ["10/10", "1/0", "3", "a/b", "-1/2"] {
            let e = bad.parse::<Shard>().expect_err(bad);
            assert!(e.contains("I/N") && e.contains(bad), "{e}");
        }
    }

    fn report(index: u64, count: u64) -> (String, ShardReport) {
        let report = ShardReport {
            seed: 7,
            cases: 100,
            participants: 2,
            flaky_links: false,
            planted_bug: None,
            media_percent: 50,
            shard: Shard { index, count },
            ran: 50,
            simulated_secs: 10.0,
            wall_secs: 2.0 + index as f64,
            failed_joins: 0,
            media_cases: 20,
            violation: None,
        };
        (format!("s{index}.json"), report)
    }

    #[test]
    fn merging_checks_the_reports_are_one_explorations_shards() {
        let merged = merge(&[report(0, 2), report(1, 2)]).expect("two halves");
        assert_eq!((merged.ran, merged.simulated_secs, merged.wall_secs), (100, 20.0, 3.0));
        assert!(merged.violations.is_empty());
        let (file, mut broken) = report(1, 2);
        let found =
            FoundViolation { case_seed: 42, broke: vec!["x".into()], file: "f.toml".into() };
        broken.violation = Some(found.clone());
        let merged = merge(&[report(0, 2), (file, broken)]).expect("two halves");
        assert_eq!(merged.violations, vec![(Shard { index: 1, count: 2 }, found)]);

        let e = merge(&[report(0, 3), report(2, 3), report(2, 3)]).expect_err("coverage");
        assert_eq!(
            e.to_string(),
            "the reports must be shards 0..3 once each; missing 1; repeated 2"
        );
        let (file, mut other) = report(1, 2);
        other.seed = 8;
        let e = merge(&[report(0, 2), (file, other)]).expect_err("mismatch");
        assert!(e.to_string().starts_with("s1.json is from another exploration: it has seed 8"));
        assert_eq!(merge(&[]), Err(MergeError::Empty));
    }
}
