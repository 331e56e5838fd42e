//! What changed between two saved matrices (`faultline matrix --compare OLD NEW`): for each
//! scenario and SDK column in both, the verdicts (a pass that became a failure is a
//! regression, a failure that became a pass a fix, a failure that changed what failed either)
//! and the timings (detect, heal → Reconnected, heal → first frame, longest gap) with their
//! change — so that a release's change of behaviour shows before its users see it.

use std::fmt::Write as _;

use super::saved::{SavedCell, SavedMatrix};

/// A timing change this large is marked as notable: at least this many seconds…
const NOTABLE_SECS: f64 = 0.5;
/// …and this share of the old figure.
const NOTABLE_SHARE: f64 = 0.25;

/// How one cell changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// It passed before and fails now, or fails more.
    Regressed,
    /// It failed before and passes now.
    Fixed,
    /// It fails both times, on other verdicts.
    FailsDifferently,
    /// It ran one time and not the other.
    RanOnce,
    /// Its verdicts are the same.
    Same,
}

/// One scenario × SDK in both matrices.
#[derive(Debug, Clone)]
pub struct CellChange {
    /// The scenario.
    pub scenario: String,
    /// The SDK column.
    pub sdk: String,
    /// How its verdicts changed.
    pub change: Change,
    /// The cell before and after.
    pub old: SavedCell,
    /// The cell after.
    pub new: SavedCell,
}

/// The comparison of two matrices.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The builds of each SDK column both have: (sdk, old builds, new builds).
    pub builds: Vec<(String, Vec<String>, Vec<String>)>,
    /// Every cell both have, in the new matrix's order.
    pub cells: Vec<CellChange>,
    /// Scenario × SDK cells only one of them has ("old"/"new", scenario, sdk).
    pub unmatched: Vec<(&'static str, String, String)>,
}

/// Compares `old` with `new`, matching rows by scenario name and columns by SDK name.
pub fn compare(old: &SavedMatrix, new: &SavedMatrix) -> Comparison {
    let column = |m: &SavedMatrix, sdk: &str| m.sdks.iter().position(|s| s == sdk);
    let mut builds = Vec::new();
    for (i, sdk) in new.sdks.iter().enumerate() {
        if let Some(j) = column(old, sdk) {
            builds.push((sdk.clone(), old.builds[j].clone(), new.builds[i].clone()));
        }
    }
    let mut cells = Vec::new();
    let mut unmatched = Vec::new();
    for row in &new.rows {
        let old_row = old.rows.iter().find(|r| r.scenario == row.scenario);
        for (i, sdk) in new.sdks.iter().enumerate() {
            let before = old_row.zip(column(old, sdk)).map(|(r, j)| &r.cells[j]);
            match before {
                Some(before) => cells.push(CellChange {
                    scenario: row.scenario.clone(),
                    sdk: sdk.clone(),
                    change: change(before, &row.cells[i]),
                    old: before.clone(),
                    new: row.cells[i].clone(),
                }),
                None => unmatched.push(("new", row.scenario.clone(), sdk.clone())),
            }
        }
    }
    for row in &old.rows {
        for sdk in &old.sdks {
            let in_new =
                new.rows.iter().any(|r| r.scenario == row.scenario) && column(new, sdk).is_some();
            if !in_new {
                unmatched.push(("old", row.scenario.clone(), sdk.clone()));
            }
        }
    }
    Comparison { builds, cells, unmatched }
}

fn change(old: &SavedCell, new: &SavedCell) -> Change {
    match (old.ran(), new.ran()) {
        (true, true) => {}
        (false, false) => return Change::Same,
        _ => return Change::RanOnce,
    }
    let newly_failing = new.failures.iter().any(|f| !old.failures.contains(f));
    let no_longer_failing = old.failures.iter().any(|f| !new.failures.contains(f));
    match (old.failures.is_empty(), new.failures.is_empty()) {
        (true, false) => Change::Regressed,
        (false, true) => Change::Fixed,
        _ if newly_failing && new.failures.len() > old.failures.len() => Change::Regressed,
        _ if newly_failing || no_longer_failing => Change::FailsDifferently,
        _ => Change::Same,
    }
}

impl Comparison {
    /// Whether some cell regressed: what a pipeline fails on.
    pub fn regressed(&self) -> bool {
        self.cells.iter().any(|c| c.change == Change::Regressed)
    }

    /// The comparison as markdown: the builds, then one row per cell whose verdicts or
    /// timings changed notably (every cell with `all`), then the cells only one side has.
    pub fn markdown(&self, all: bool) -> String {
        let mut out = String::new();
        for (sdk, old, new) in &self.builds {
            let _ = writeln!(out, "- {sdk}: {} → {}", old.join("; "), new.join("; "));
        }
        let counts = |c: Change| self.cells.iter().filter(|x| x.change == c).count();
        let _ = writeln!(
            out,
            "\n{} cells compared: {} regressed, {} fixed, {} fail differently, {} ran only once\n",
            self.cells.len(),
            counts(Change::Regressed),
            counts(Change::Fixed),
            counts(Change::FailsDifferently),
            counts(Change::RanOnce)
        );
        let _ = writeln!(
            out,
            "| scenario | sdk | verdicts | detect | heal→Reconnected | heal→first frame | longest gap |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        let mut shown = 0;
        for c in &self.cells {
            let timings = [
                timing(c.old.detect, c.new.detect),
                timing(c.old.heal_to_reconnected, c.new.heal_to_reconnected),
                timing(c.old.heal_to_first_frame, c.new.heal_to_first_frame),
                timing(c.old.longest_gap, c.new.longest_gap),
            ];
            let notable = timings.iter().any(|(_, notable)| *notable);
            if !all && c.change == Change::Same && !notable {
                continue;
            }
            shown += 1;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                c.scenario,
                c.sdk,
                verdicts(c),
                timings.iter().map(|(text, _)| text.as_str()).collect::<Vec<_>>().join(" | ")
            );
        }
        if shown == 0 {
            let _ =
                writeln!(out, "| (no cell changed its verdicts or a timing notably) | | | | | | |");
        }
        for (side, scenario, sdk) in &self.unmatched {
            let _ = writeln!(out, "\n- {scenario} × {sdk}: only in the {side} matrix");
        }
        let _ = writeln!(
            out,
            "\nA timing is marked ⚠ when it moved by at least {NOTABLE_SECS} s and {:.0} % of the \
             old figure.",
            NOTABLE_SHARE * 100.0
        );
        out
    }
}

/// A cell's verdicts, old → new, with what newly fails or no longer does.
fn verdicts(c: &CellChange) -> String {
    let side = |cell: &SavedCell| {
        if cell.ran() {
            format!("{} {}/{}", cell.state, cell.passed, cell.total)
        } else {
            cell.state.clone()
        }
    };
    let mut text = format!("{} → {}", side(&c.old), side(&c.new));
    let gained: Vec<&str> =
        c.new.failures.iter().filter(|f| !c.old.failures.contains(f)).map(String::as_str).collect();
    let lost: Vec<&str> =
        c.old.failures.iter().filter(|f| !c.new.failures.contains(f)).map(String::as_str).collect();
    match c.change {
        Change::Regressed => text = format!("**REGRESSED** {text}"),
        Change::Fixed => text = format!("fixed {text}"),
        _ => {}
    }
    if !gained.is_empty() {
        let _ = write!(text, "; now fails: {}", gained.join(", "));
    }
    if !lost.is_empty() {
        let _ = write!(text, "; no longer fails: {}", lost.join(", "));
    }
    text.replace('|', "\\|")
}

/// One timing, old → new with its change, and whether the change is notable.
fn timing(old: Option<f64>, new: Option<f64>) -> (String, bool) {
    match (old, new) {
        (None, None) => ("—".into(), false),
        (Some(o), None) => (format!("{o:.2} → —"), false),
        (None, Some(n)) => (format!("— → {n:.2}"), false),
        (Some(o), Some(n)) => {
            let delta = n - o;
            let notable = delta.abs() >= NOTABLE_SECS && delta.abs() >= NOTABLE_SHARE * o.abs();
            let mark = if notable { " ⚠" } else { "" };
            (format!("{o:.2} → {n:.2} ({delta:+.2}){mark}"), notable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::saved::{SavedRow, FORMAT};

    fn cell(failures: &[&str], detect: f64) -> SavedCell {
        SavedCell {
            state: if failures.is_empty() { "pass" } else { "fail" }.into(),
            why: None,
            passed: 4 - failures.len(),
            total: 4,
            failures: failures.iter().map(|f| (*f).to_owned()).collect(),
            detect: Some(detect),
            heal_to_reconnected: Some(1.0),
            heal_to_first_frame: None,
            longest_gap: None,
        }
    }

    fn matrix(build: &str, rows: Vec<(&str, SavedCell)>) -> SavedMatrix {
        SavedMatrix {
            format: FORMAT,
            sdks: vec!["js".into()],
            builds: vec![vec![build.into()]],
            rows: rows
                .into_iter()
                .map(|(scenario, cell)| SavedRow { scenario: scenario.into(), cells: vec![cell] })
                .collect(),
        }
    }

    #[test]
    fn verdict_changes_are_classified_and_a_regression_fails_the_comparison() {
        let old = matrix(
            "livekit-client 2.22.4",
            vec![
                ("a", cell(&[], 0.5)),
                ("b", cell(&["x"], 0.5)),
                ("c", cell(&["x"], 0.5)),
                ("d", cell(&[], 0.5)),
                ("gone", cell(&[], 0.5)),
            ],
        );
        let new = matrix(
            "livekit-client 2.23.0",
            vec![
                ("a", cell(&["media-flowing"], 0.5)),
                ("b", cell(&[], 0.5)),
                ("c", cell(&["y"], 0.5)),
                ("d", cell(&[], 2.0)),
                ("added", cell(&[], 0.5)),
            ],
        );
        let comparison = compare(&old, &new);
        let changes: Vec<(&str, Change)> =
            comparison.cells.iter().map(|c| (c.scenario.as_str(), c.change.clone())).collect();
        assert_eq!(
            changes,
            [
                ("a", Change::Regressed),
                ("b", Change::Fixed),
                ("c", Change::FailsDifferently),
                ("d", Change::Same)
            ]
        );
        assert!(comparison.regressed());
        let text = comparison.markdown(false);
        assert!(text.contains("- js: livekit-client 2.22.4 → livekit-client 2.23.0"), "{text}");
        assert!(
            text.contains("**REGRESSED** pass 4/4 → fail 3/4; now fails: media-flowing"),
            "{text}"
        );
        assert!(text.contains("0.50 → 2.00 (+1.50) ⚠"), "a notable timing: {text}");
        assert!(text.contains("added × js: only in the new matrix"), "{text}");
        assert!(text.contains("gone × js: only in the old matrix"), "{text}");
    }

    #[test]
    fn small_timing_moves_are_not_notable() {
        assert!(!timing(Some(0.5), Some(0.9)).1, "0.4 s is under the floor");
        assert!(!timing(Some(10.0), Some(11.0)).1, "10 % is under the share");
        assert!(timing(Some(10.0), Some(13.0)).1);
    }
}
