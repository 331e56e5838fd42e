//! The conformance matrix: every scenario of a library run against every SDK on the real
//! lane, each cell judged by the scenario's expectations and the invariants, and written as a
//! markdown table and a self-contained HTML page.
//!
//! A cell whose SDK cannot take what the scenario asks (a fault on sockets it does not own, a
//! policy its engine does not take) is "n/a" with the reason, found before anything runs. A
//! cell that ran shows pass or fail with how many verdicts passed, the time to detect (the
//! first fault → the first participant hit by it starting a reconnect episode) and heal →
//! `Reconnected` (the last heal → that participant's first `Reconnected` after it); with
//! media, also heal → first frame (the last heal → frames again, the slowest received track)
//! and the longest gap (the longest stop of any received track on the fault timeline).

pub mod compare;
pub mod saved;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{ClientEvent, Lifecycle, Observed, Sdk};
use crate::flow::flows;
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
    /// With media, [`media_times`]: (last heal → first frame, longest gap).
    pub media: Option<(Option<Duration>, Duration)>,
    /// The SDK builds that ran ([`RunRecord::builds`]).
    pub builds: Vec<String>,
    /// Where the logs of the run's programs are (name, path), as [`RunRecord::logs`].
    pub logs: Vec<(String, PathBuf)>,
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
            media: media_times(record),
            builds: record.builds().into_iter().map(|(build, _)| build.to_owned()).collect(),
            logs: record.logs.clone(),
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
    let recovered = last_heal(record).and_then(|healed| {
        events()
            .find(|e| e.at >= healed && e.event == ClientEvent::Reconnected)
            .map(|e| e.at.saturating_sub(healed))
    });
    (detect, recovered)
}

/// When the last fault healed (an instant fault heals as it starts); `None` when none did.
fn last_heal(record: &RunRecord) -> Option<Duration> {
    record.faults.iter().filter_map(|f| f.healed).max()
}

/// Media figures from a record, `None` when it has no media flows: (the last heal → the
/// first frame after it, the slowest of the received tracks — `None` without a heal or when a
/// track delivered nothing after it; the longest stop of any received track between the
/// timeline's zero and the end).
pub fn media_times(record: &RunRecord) -> Option<(Option<Duration>, Duration)> {
    let flows = flows(record);
    let longest =
        flows.values().map(|f| f.longest_gap(record.timeline_zero, record.ended).0).max()?;
    let first_frame = last_heal(record).and_then(|healed| {
        flows
            .values()
            .try_fold(Duration::ZERO, |worst, f| Some(worst.max(f.first_after(healed)? - healed)))
    });
    Some((first_frame, longest))
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

    /// Each column's SDK with the builds its runs reported, in order of first appearance
    /// (one, unless the build changed during the matrix).
    pub fn builds(&self) -> Vec<(Sdk, Vec<&str>)> {
        self.sdks
            .iter()
            .enumerate()
            .map(|(column, sdk)| {
                let mut builds: Vec<&str> = Vec::new();
                for (_, _, cells) in &self.rows {
                    if let Some(Cell::Ran(o)) = cells.get(column) {
                        for build in &o.builds {
                            if !builds.contains(&build.as_str()) {
                                builds.push(build);
                            }
                        }
                    }
                }
                (*sdk, builds)
            })
            .collect()
    }

    /// The table as markdown: one row per scenario, one column per SDK; then the reasons and
    /// failures in full.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (sdk, builds) in self.builds() {
            let _ = writeln!(
                out,
                "- {sdk}: {}",
                if builds.is_empty() { "no run".to_owned() } else { builds.join("; ") }
            );
        }
        out.push('\n');
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
                        let mut text = format!(
                            "{} {}/{} · detect {} · heal→Reconnected {}",
                            if o.ok() { "pass" } else { "**FAIL**" },
                            o.passed,
                            o.total,
                            secs(o.detect),
                            secs(o.heal_to_reconnected)
                        );
                        if let Some((first_frame, gap)) = o.media {
                            let _ = write!(
                                text,
                                " · heal→first frame {} · longest gap {}",
                                secs(first_frame),
                                secs(Some(gap))
                            );
                        }
                        text
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
             (first fault → the participant it hit starts reconnecting) and heal → Reconnected; \
             a scenario with media adds heal → first frame (the slowest received track) and the \
             longest gap (the longest stop of frames of any received track).</p>",
        );
        out.push_str("<ul>");
        for (sdk, builds) in self.builds() {
            let builds = if builds.is_empty() { "no run".to_owned() } else { builds.join("; ") };
            let _ = write!(out, "<li><b>{}</b>: {}</li>", esc(sdk.name()), esc(&builds));
        }
        out.push_str("</ul><table><tr><th>scenario</th>");
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
                        if let Some((first_frame, gap)) = o.media {
                            let _ = write!(
                                out,
                                "<br>heal → first frame {}<br>longest gap {}",
                                esc(&secs(first_frame)),
                                esc(&secs(Some(gap)))
                            );
                        }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::client::MediaCount;
    use crate::record::{EventRecord, FaultRecord, Verdict};
    use crate::vocab::TrackSource;

    /// bob receiving alice's camera and microphone, sampled every 100 ms from 0.5 s to 6 s,
    /// with a partition of alice from 2 s, healed at 3 s: `stopped(source)` says when a
    /// source's frames do not advance.
    fn bob_receiving(stopped: impl Fn(TrackSource, u64) -> bool) -> RunRecord {
        let ms = Duration::from_millis;
        let mut counts = [0u64; 2];
        let mut events = Vec::new();
        for at in (500..=6000).step_by(100) {
            let mut tracks = Vec::new();
            for (count, source) in
                counts.iter_mut().zip([TrackSource::Camera, TrackSource::Microphone])
            {
                if !stopped(source, at) {
                    *count += 3;
                }
                tracks.push(MediaCount {
                    from: "alice".into(),
                    source,
                    sid: format!("TR_{}", source.name()),
                    frames: *count,
                    decoded: None,
                });
            }
            events.push(EventRecord {
                participant: "bob".into(),
                at: ms(at),
                event: ClientEvent::Media { tracks },
            });
        }
        RunRecord {
            scenario: "s".into(),
            description: String::new(),
            file: PathBuf::from("s.toml"),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            participants: Vec::new(),
            timeline_zero: ms(1000),
            ended: ms(6000),
            faults: vec![FaultRecord {
                index: 0,
                kind: "partition",
                label: "partition → alice".into(),
                target: Some("alice".into()),
                started: ms(2000),
                healed: Some(ms(3000)),
                refuses_connections: true,
                mutes: None,
            }],
            events,
            final_states: Vec::new(),
            verdicts: vec![Verdict {
                what: "w".into(),
                expected: "e".into(),
                seen: "s".into(),
                passed: true,
            }],
            logs: Vec::new(),
            cluster: Vec::new(),
        }
    }

    #[test]
    fn media_times_take_the_slowest_track_after_the_heal_and_the_longest_stop_of_any() {
        let ms = Duration::from_millis;
        // The camera stops longest (2.0 → 3.4 s), the microphone comes back last (3.7 s).
        let record = bob_receiving(|source, at| match source {
            TrackSource::Camera => (2100..3400).contains(&at),
            TrackSource::Microphone => (2600..3700).contains(&at),
        });
        assert_eq!(media_times(&record), Some((Some(ms(700)), ms(1400))));
        let matrix = Matrix {
            sdks: vec![Sdk::Faultline],
            rows: vec![(
                "s".into(),
                PathBuf::from("s.toml"),
                vec![Cell::Ran(Outcome::of(&record))],
            )],
        };
        assert!(
            matrix.markdown().contains("· heal→first frame 0.70 s · longest gap 1.40 s |"),
            "{}",
            matrix.markdown()
        );
        assert!(matrix.html().contains("<br>heal → first frame 0.70 s<br>longest gap 1.40 s"));

        // The microphone never comes back: no first frame for it, and a stop open to the end.
        let silent = bob_receiving(|source, at| source == TrackSource::Microphone && at > 2500);
        assert_eq!(media_times(&silent), Some((None, ms(3500))));

        // Without media: nothing to say, and the cell says nothing of it.
        let mut quiet = record.clone();
        quiet.events.clear();
        assert_eq!(media_times(&quiet), None);
        let matrix = Matrix {
            sdks: vec![Sdk::Faultline],
            rows: vec![("s".into(), PathBuf::from("s.toml"), vec![Cell::Ran(Outcome::of(&quiet))])],
        };
        assert!(!matrix.markdown().contains("first frame"), "{}", matrix.markdown());
        assert!(!matrix.html().contains("<br>heal → first frame"), "only the key mentions it");
    }
}
