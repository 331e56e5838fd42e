//! A matrix as a file (`faultline matrix` writes it beside its report as `.json`): every cell's
//! verdicts, failures, timings and the SDK builds that ran, in seconds, so that a later run —
//! another build of an SDK, another version — can be compared with it ([`super::compare`]).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Cell, Matrix};

/// The file's format version; a file of another is refused.
pub const FORMAT: u32 = 1;

/// A saved matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedMatrix {
    /// [`FORMAT`].
    pub format: u32,
    /// The SDK columns, by name.
    pub sdks: Vec<String>,
    /// Each column's builds, as its runs reported them.
    pub builds: Vec<Vec<String>>,
    /// One row per scenario.
    pub rows: Vec<SavedRow>,
}

/// One scenario's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRow {
    /// The scenario's name.
    pub scenario: String,
    /// One cell per SDK column.
    pub cells: Vec<SavedCell>,
}

/// One cell: how it ran and, if it ran, its figures (seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCell {
    /// `pass`, `fail`, `n/a` or `could not run`.
    pub state: String,
    /// Why it did not run (`n/a`, `could not run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Verdicts passed.
    #[serde(default)]
    pub passed: usize,
    /// Verdicts in all.
    #[serde(default)]
    pub total: usize,
    /// The failed verdicts' descriptions.
    #[serde(default)]
    pub failures: Vec<String>,
    /// First fault → its target starts reconnecting.
    #[serde(default)]
    pub detect: Option<f64>,
    /// Last heal → `Reconnected`.
    #[serde(default)]
    pub heal_to_reconnected: Option<f64>,
    /// Last heal → the slowest received track's first frame.
    #[serde(default)]
    pub heal_to_first_frame: Option<f64>,
    /// The longest stop of any received track.
    #[serde(default)]
    pub longest_gap: Option<f64>,
}

impl SavedCell {
    /// Whether it ran.
    pub fn ran(&self) -> bool {
        self.state == "pass" || self.state == "fail"
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl From<&Cell> for SavedCell {
    fn from(cell: &Cell) -> Self {
        let empty = |state: &str, why: &str| SavedCell {
            state: state.into(),
            why: Some(why.into()),
            passed: 0,
            total: 0,
            failures: Vec::new(),
            detect: None,
            heal_to_reconnected: None,
            heal_to_first_frame: None,
            longest_gap: None,
        };
        match cell {
            Cell::NotApplicable(why) => empty("n/a", why),
            Cell::CouldNotRun(why) => empty("could not run", why),
            Cell::Ran(o) => SavedCell {
                state: if o.ok() { "pass" } else { "fail" }.into(),
                why: None,
                passed: o.passed,
                total: o.total,
                failures: o.failures.iter().map(|(what, _, _)| what.clone()).collect(),
                detect: secs(o.detect),
                heal_to_reconnected: secs(o.heal_to_reconnected),
                heal_to_first_frame: secs(o.media.and_then(|(first, _)| first)),
                longest_gap: secs(o.media.map(|(_, gap)| gap)),
            },
        }
    }
}

impl From<&Matrix> for SavedMatrix {
    fn from(matrix: &Matrix) -> Self {
        SavedMatrix {
            format: FORMAT,
            sdks: matrix.sdks.iter().map(|s| s.name().to_owned()).collect(),
            builds: matrix
                .builds()
                .into_iter()
                .map(|(_, builds)| builds.into_iter().map(str::to_owned).collect())
                .collect(),
            rows: matrix
                .rows
                .iter()
                .map(|(name, _, cells)| SavedRow {
                    scenario: name.clone(),
                    cells: cells.iter().map(SavedCell::from).collect(),
                })
                .collect(),
        }
    }
}

/// A saved matrix that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    /// The file cannot be read.
    #[error("cannot read the matrix file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a saved matrix.
    #[error(
        "{path} is not a matrix file written by `faultline matrix` (the .json beside its report): \
         {why}"
    )]
    Format {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

impl SavedMatrix {
    /// Reads a file `faultline matrix` wrote.
    pub fn load(path: &Path) -> Result<Self, SavedError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| SavedError::Read { path: name.clone(), source })?;
        let saved: SavedMatrix = serde_json::from_str(&text)
            .map_err(|e| SavedError::Format { path: name.clone(), why: e.to_string() })?;
        if saved.format != FORMAT {
            return Err(SavedError::Format {
                path: name,
                why: format!("format {}, where this faultline reads {FORMAT}", saved.format),
            });
        }
        if saved.builds.len() != saved.sdks.len()
            || saved.rows.iter().any(|r| r.cells.len() != saved.sdks.len())
        {
            return Err(SavedError::Format {
                path: name,
                why: "a row or the builds do not have one entry per SDK column".into(),
            });
        }
        Ok(saved)
    }

    /// The file's text (pretty JSON).
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}
