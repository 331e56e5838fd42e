//! What one run of a scenario saw: every fault with when it started and healed, every event
//! each participant's room reported, their final states and the verdicts. The runner fills
//! it in, [`crate::judge`] judges it, and [`crate::report`] writes it out as a trace or an
//! HTML timeline. All times are measured from the start of the run (before anyone joined);
//! [`RunRecord::timeline_zero`] is the moment everyone was connected, from which a
//! scenario's `at` values count.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use faultline_sdk::{ConnectionState, RoomEvent};

use crate::check::{format_trace, Recorded};
use crate::scenario::format::Lane;

/// Everything a run saw.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The scenario's name.
    pub scenario: String,
    /// What it models.
    pub description: String,
    /// The scenario file.
    pub file: PathBuf,
    /// Where it ran.
    pub lane: Lane,
    /// The seed of the run's randomness (media loss, backoff jitter).
    pub seed: u64,
    /// The room the participants joined.
    pub room: String,
    /// The participants' identities, in the order of the file.
    pub participants: Vec<String>,
    /// When every participant was connected: the zero of the fault timeline.
    pub timeline_zero: Duration,
    /// When recording stopped.
    pub ended: Duration,
    /// The faults, in the order they started.
    pub faults: Vec<FaultRecord>,
    /// Every event of every participant, in the order they arrived.
    pub events: Vec<EventRecord>,
    /// Each participant's `connection_state()` when recording stopped.
    pub final_states: Vec<(String, ConnectionState)>,
    /// The verdict on each expectation and on the invariants, in that order.
    pub verdicts: Vec<Verdict>,
    /// Where the logs of the programs the run used are (name, path).
    pub logs: Vec<(String, PathBuf)>,
    /// Names the lane gave participants (the sim lane's hosts `p0`, `p1`, …) and the
    /// scenario identities they stand for; empty when the lane used the scenario's names.
    pub aliases: Vec<(String, String)>,
}

/// One fault as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRecord {
    /// Its position in the scenario file's `[[fault]]` list (0-based).
    pub index: usize,
    /// Its `type`.
    pub kind: &'static str,
    /// A one-line description with its settings.
    pub label: String,
    /// The participant it hit; `None` for the server or the room.
    pub target: Option<String>,
    /// When it took effect.
    pub started: Duration,
    /// When it was healed; `None` if it lasted to the end.
    pub healed: Option<Duration>,
}

impl FaultRecord {
    /// Whether it hit `identity` (faults of the server or room hit everyone).
    pub fn hits(&self, identity: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == identity)
    }
}

/// One event one participant's room reported.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Whose room.
    pub participant: String,
    /// When it arrived.
    pub at: Duration,
    /// The event.
    pub event: RoomEvent,
}

/// The verdict on one expectation or invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What was judged (`reconnected alice within 8s`, `invariants of alice`).
    pub what: String,
    /// What a correct client does.
    pub expected: String,
    /// What this one did.
    pub seen: String,
    /// Whether the two agree.
    pub passed: bool,
}

impl RunRecord {
    /// Whether every verdict passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// `identity`'s events, timestamped from the start of the run, as `check` takes them.
    pub fn events_of(&self, identity: &str) -> Vec<Recorded> {
        self.events
            .iter()
            .filter(|e| e.participant == identity)
            .map(|e| Recorded { at: e.at, event: e.event.clone() })
            .collect()
    }

    /// The scenario identity of a participant as the lane named it (events about other
    /// participants carry the lane's names).
    pub fn scenario_identity<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.iter().find(|(alias, _)| alias == name).map_or(name, |(_, id)| id.as_str())
    }

    /// `identity`'s state when recording stopped.
    pub fn final_state(&self, identity: &str) -> Option<ConnectionState> {
        self.final_states.iter().find(|(p, _)| p == identity).map(|(_, s)| *s)
    }

    /// A time of the run as the report shows it: seconds from the timeline's zero (negative
    /// while the participants were joining).
    pub fn timeline_secs(&self, at: Duration) -> f64 {
        at.as_secs_f64() - self.timeline_zero.as_secs_f64()
    }

    /// A plain-text account: each verdict with expected and seen, the faults, each
    /// participant's trace and where the logs are. What a failing test prints.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let outcome = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "scenario `{}` ({}) on the {} lane, seed {}, room {}: {outcome}",
            self.scenario,
            self.file.display(),
            self.lane,
            self.seed,
            self.room
        );
        for v in &self.verdicts {
            let mark = if v.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(
                out,
                "  {mark} {}\n       expected: {}\n       seen:     {}",
                v.what, v.expected, v.seen
            );
        }
        let _ = writeln!(out, "faults (seconds from everyone connected):");
        for f in &self.faults {
            let healed = f.healed.map_or("never healed".to_owned(), |h| {
                format!("healed at {:+.3}s", self.timeline_secs(h))
            });
            let _ = writeln!(
                out,
                "  #{} {:+.3}s {} ({healed})",
                f.index,
                self.timeline_secs(f.started),
                f.label
            );
        }
        for p in &self.participants {
            let _ = writeln!(
                out,
                "trace of {p} (seconds from the start of the run; everyone connected at {:.3}s), final state {:?}:",
                self.timeline_zero.as_secs_f64(),
                self.final_state(p)
            );
            out.push_str(&format_trace(&self.events_of(p)));
        }
        for (name, path) in &self.logs {
            let _ = writeln!(out, "{name} log: {}", path.display());
        }
        out
    }
}
