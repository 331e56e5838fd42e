//! The conformance matrix: every scenario of a library run against every SDK on the real
//! lane, each cell judged by the scenario's expectations and the invariants, and written as a
//! markdown table and a self-contained HTML page.
//!
//! A cell whose SDK cannot take what the scenario asks (a fault on sockets it does not own, a
//! policy its engine does not take) is "n/a" with the reason, found before anything runs. A
//! cell that ran shows pass or fail with how many verdicts passed, the time to detect (the
//! first fault → the first participant hit by it starting a reconnect episode) and heal →
//! `Reconnected` (the last heal → that participant's first `Reconnected` after it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{ClientEvent, Lifecycle, Observed, Sdk};
use crate::record::RunRecord;
use crate::report::escape_html as esc;
use crate::scenario::format::{Lane, Scenario};
use crate::scenario::real_lane::check_real_lane;
use crate::scenario::{run_real, RunError, RunOptions};

/// One scenario × SDK.
#[derive(Debug, Clone)]
pub enum Cell {
    /// The SDK cannot run this scenario: why.
    NotApplicable(String),
    /// The run could not be done (a server that would not start): why.
    CouldNotRun(String),
    /// It ran.
    Ran(Outcome),
}

/// What a cell's run showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Verdicts passed, of all.
    pub passed: usize,
    /// All verdicts.
    pub total: usize,
    /// The verdicts that failed: what, expected, seen.
    pub failures: Vec<(String, String, String)>,
    /// First fault → the participant it hit starts an episode.
    pub detect: Option<Duration>,
    /// Last heal → that participant's first `Reconnected` after it.
    pub heal_to_reconnected: Option<Duration>,
}

impl Outcome {
    /// Whether every verdict passed.
    pub fn ok(&self) -> bool {
        self.passed == self.total
    }

    fn of(record: &RunRecord) -> Outcome {
        let failures: Vec<_> = record
            .verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| (v.what.clone(), v.expected.clone(), v.seen.clone()))
            .collect();
        let (detect, heal_to_reconnected) = recovery_times(record);
        Outcome {
            passed: record.verdicts.len() - failures.len(),
            total: record.verdicts.len(),
            failures,
            detect,
            heal_to_reconnected,
        }
    }
}

/// The matrix: scenario files (rows) × SDKs (columns).
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The SDKs, in column order.
    pub sdks: Vec<Sdk>,
    /// Each scenario (name, file) with one cell per SDK.
    pub rows: Vec<(String, PathBuf, Vec<Cell>)>,
}

/// Times from a record: (first fault → its target's first episode start, last heal → that
/// participant's first `Reconnected` after it).
pub fn recovery_times(record: &RunRecord) -> (Option<Duration>, Option<Duration>) {
    let Some(first) = record.faults.first() else { return (None, None) };
    let who =
        first.target.clone().or_else(|| record.participants.first().map(|p| p.identity.clone()));
    let Some(who) = who else { return (None, None) };
    let events = || record.events.iter().filter(|e| e.participant == who);
    let detect = events()
        .find(|e| {
            e.at >= first.started && e.event.lifecycle().is_some_and(Lifecycle::opens_episode)
        })
        .map(|e| e.at.saturating_sub(first.started));
    let healed = record.faults.iter().filter_map(|f| f.healed).max();
    let recovered = healed.and_then(|healed| {
        events()
            .find(|e| e.at >= healed && e.event == ClientEvent::Reconnected)
            .map(|e| e.at.saturating_sub(healed))
    });
    (detect, recovered)
}

/// The scenario files in `dir` (`*.toml`), sorted by name.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs one cell: `scenario` with every participant on `sdk`.
pub async fn run_cell(scenario: &Scenario, file: &Path, sdk: Sdk, seed: u64) -> Cell {
    let mut scenario = scenario.clone();
    for participant in &mut scenario.participants {
        participant.sdk = sdk;
    }
    if !scenario.lanes.contains(&Lane::Real) {
        return Cell::NotApplicable("the scenario runs on the sim lane only".into());
    }
    if let Err(e) = check_real_lane(&scenario, file) {
        return Cell::NotApplicable(reason(&e));
    }
    match run_real(&scenario, file, RunOptions { seed, ..RunOptions::default() }).await {
        Ok(record) => Cell::Ran(Outcome::of(&record)),
        Err(e @ RunError::SdkCannot { .. }) => Cell::NotApplicable(reason(&e)),
        Err(e) => Cell::CouldNotRun(e.to_string()),
    }
}

/// The part of a refusal that says why (without the file name the table already shows).
fn reason(error: &RunError) -> String {
    match error {
        RunError::SdkCannot { what, .. } => format!("cannot take {what}"),
        other => other.to_string(),
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

impl Matrix {
    /// Whether every cell that ran passed and every other was not applicable.
    pub fn all_passed(&self) -> bool {
        self.cells()
            .all(|c| !matches!(c, Cell::CouldNotRun(_)) && !matches!(c, Cell::Ran(o) if !o.ok()))
    }

    /// Whether some cell could not be run at all.
    pub fn could_not_run(&self) -> bool {
        self.cells().any(|c| matches!(c, Cell::CouldNotRun(_)))
    }

    fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.rows.iter().flat_map(|(_, _, cells)| cells)
    }

    /// The table as markdown: one row per scenario, one column per SDK; then the reasons and
    /// failures in full.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "| scenario |");
        for sdk in &self.sdks {
            let _ = write!(out, " {sdk} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.sdks {
            let _ = write!(out, "---|");
        }
        out.push('\n');
        let mut notes = Vec::new();
        for (name, _, cells) in &self.rows {
            let _ = write!(out, "| {name} |");
            for (sdk, cell) in self.sdks.iter().zip(cells) {
                let text = match cell {
                    Cell::NotApplicable(why) => {
                        notes.push(format!("- {name} × {sdk}: n/a — {why}"));
                        "n/a".to_owned()
                    }
                    Cell::CouldNotRun(why) => {
                        notes.push(format!("- {name} × {sdk}: could not run — {why}"));
                        "could not run".to_owned()
                    }
                    Cell::Ran(o) => {
                        for (what, expected, seen) in &o.failures {
                            notes.push(format!(
                                "- {name} × {sdk}: FAIL {what} — expected {expected}; seen {seen}"
                            ));
                        }
                        format!(
                            "{} {}/{} · detect {} · heal→Reconnected {}",
                            if o.ok() { "pass" } else { "**FAIL**" },
                            o.passed,
                            o.total,
                            secs(o.detect),
                            secs(o.heal_to_reconnected)
                        )
                    }
                };
                let _ = write!(out, " {} |", text.replace('|', "\\|"));
            }
            out.push('\n');
        }
        if !notes.is_empty() {
            out.push('\n');
            for note in notes {
                let _ = writeln!(out, "{}", note.replace('\n', " "));
            }
        }
        out
    }

    /// The table as one self-contained HTML page (nothing fetched).
    pub fn html(&self) -> String {
        let mut out = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>faultline matrix</title>\
             <style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:6px 10px;vertical-align:top}\
             .pass{background:#e6f4ea}.fail{background:#fce8e6}.na{background:#f1f3f4;color:#555}\
             details{font-size:12px;max-width:28em}</style></head><body>\
             <h1>faultline: every scenario × every SDK</h1>\
             <p>Real lane (livekit-server). A cell shows the verdicts passed, the time to detect \
             (first fault → the participant it hit starts reconnecting) and heal → Reconnected.</p>\
             <table><tr><th>scenario</th>",
        );
        for sdk in &self.sdks {
            let _ = write!(out, "<th>{}</th>", esc(sdk.name()));
        }
        out.push_str("</tr>");
        for (name, file, cells) in &self.rows {
            let _ = write!(
                out,
                "<tr><td><b>{}</b><br><small>{}</small></td>",
                esc(name),
                esc(&file.display().to_string())
            );
            for cell in cells {
                match cell {
                    Cell::NotApplicable(why) => {
                        let _ = write!(
                            out,
                            "<td class=\"na\">n/a<details><summary>why</summary>{}</details></td>",
                            esc(why)
                        );
                    }
                    Cell::CouldNotRun(why) => {
                        let _ = write!(out, "<td class=\"fail\">could not run<details><summary>why</summary>{}</details></td>", esc(why));
                    }
                    Cell::Ran(o) => {
                        let class = if o.ok() { "pass" } else { "fail" };
                        let _ = write!(
                            out,
                            "<td class=\"{class}\">{} {}/{}<br>detect {}<br>heal → Reconnected {}",
                            if o.ok() { "pass" } else { "FAIL" },
                            o.passed,
                            o.total,
                            esc(&secs(o.detect)),
                            esc(&secs(o.heal_to_reconnected))
                        );
                        for (what, expected, seen) in &o.failures {
                            let _ = write!(
                                out,
                                "<details><summary>{}</summary>expected: {}<br>seen: {}</details>",
                                esc(what),
                                esc(expected),
                                esc(seen)
                            );
                        }
                        out.push_str("</td>");
                    }
                }
            }
            out.push_str("</tr>");
        }
        out.push_str("</table></body></html>\n");
        out
    }
}
