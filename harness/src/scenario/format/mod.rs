//! The scenario file format: a field disconnect written down as TOML.
//!
//! A scenario names its participants, a timeline of faults and what the client must do about
//! them. This module only reads and checks files; running them is the runner's job. Every error
//! names the file, the line and the field, and says what is allowed there.
//!
//! ```toml
//! name = "wifi-drop"
//! description = "A short Wi-Fi drop: both paths go dark for 3 s, then come back."
//! lanes = ["real", "sim"]
//!
//! [[participant]]
//! identity = "alice"
//! sdk = "faultline"      # or "upstream-rust", "js"; `faultline run --sdk` sets everyone's
//!
//! [[fault]]
//! at = "2s"
//! for = "3s"
//! target = "alice"
//! type = "partition"
//!
//! [[expect]]
//! type = "reconnected"
//! participant = "alice"
//! within = "8s"
//! ```
//!
//! A scenario with a `[cluster]` table runs on several livekit-server nodes sharing Redis
//! (real lane only): each participant's signalling goes to its `node` (while that node is up,
//! else the next one that is), and the faults `node-kill`, `node-restart`, `node-drain` and
//! `redis-kill` act on the cluster:
//!
//! ```toml
//! [cluster]
//! nodes = 2
//! room_node = 0          # the room is created there; livekit-server picks when unset
//!
//! [[participant]]
//! identity = "alice"
//! node = 1               # default: the participant's position, modulo `nodes`
//!
//! [[fault]]
//! at = "2s"
//! type = "node-kill"
//! node = "room"          # or an index: 0, 1, …
//! ```

mod checks;
mod durations;
mod expectations;
mod faults;
mod field;
mod media;
mod participants;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub(crate) use durations::duration;
pub use durations::parse_duration;
pub use expectations::{Expectation, FinalState};
pub use faults::{Direction, Fault, FaultStep, ProxyMode, SimulateKind, Stream, ToxicKind};
pub use field::{FieldMoment, FieldOutage, FieldSpec};
pub use media::{BurstLoss, MediaFault};
pub use participants::{
    ClusterSpec, Firewall, NodeRef, ParticipantSpec, PolicySpec, PublishSpec, ServerSpec, MAX_NODES,
};

use crate::vocab::TrackSpec;

/// A scenario, read and checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A short name, used in reports.
    pub name: String,
    /// What field disconnect this models, for the person reading the report.
    #[serde(default)]
    pub description: String,
    /// Which lanes can run it; both by default.
    #[serde(default = "all_lanes")]
    pub lanes: Vec<Lane>,
    /// How long to keep watching after the last fault has healed before judging (the run
    /// watches longer while a participant's reconnect episode may still end within its bound).
    #[serde(default = "default_settle", deserialize_with = "duration")]
    pub settle: Duration,
    /// Several livekit-server nodes sharing Redis instead of one server (real lane only).
    #[serde(default)]
    pub cluster: Option<ClusterSpec>,
    /// What the run's livekit-server offers: ICE over TCP, a TURN relay (real lane only).
    #[serde(default)]
    pub server: Option<Spanned<ServerSpec>>,
    /// The participants, each a client of its own.
    #[serde(rename = "participant")]
    pub participants: Vec<ParticipantSpec>,
    /// The timeline of faults.
    #[serde(rename = "fault", default)]
    pub faults: Vec<FaultStep>,
    /// What must be true of the run.
    #[serde(rename = "expect", default)]
    pub expectations: Vec<Spanned<Expectation>>,
    /// What the field evidence of an imported scenario showed (`faultline import`).
    #[serde(default)]
    pub field: Option<FieldSpec>,
}

/// The spans of the `[[fault]]` tables (every other field is ignored here).
#[derive(Deserialize)]
struct FaultSpans {
    #[serde(rename = "fault", default)]
    faults: Vec<Spanned<toml::Table>>,
}

/// Where a scenario runs: against the real livekit-server or in the turmoil simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lane {
    /// The real livekit-server, wall-clock time.
    Real,
    /// The simulated server in turmoil, simulated time.
    Sim,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Real => "real",
            Lane::Sim => "sim",
        })
    }
}

/// A scenario file that could not be read or is not a valid scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid: bad TOML, an unknown field, a value out of range, a reference to
    /// a participant that is not declared.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending field.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` names it in error messages, and the files it
    /// refers to (a `media` fault's `trace`) are read relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ScenarioError::Invalid { path: path.to_owned(), line, column, message }
        };
        let mut scenario: Scenario = toml::from_str(text)
            .map_err(|e| invalid(e.span(), e.message().trim_end().to_owned()))?;
        // Where each `[[fault]]` table is, for errors about a fault as a whole.
        let spans: FaultSpans = toml::from_str(text)
            .map_err(|e| invalid(e.span(), e.message().trim_end().to_owned()))?;
        let fault_spans: Vec<Range<usize>> = spans.faults.iter().map(Spanned::span).collect();
        scenario.check(&fault_spans).map_err(|(span, message)| invalid(Some(span), message))?;
        for (step, span) in scenario.faults.iter_mut().zip(&fault_spans) {
            if let Fault::Media(media) = &mut step.fault {
                media.load_trace(path).map_err(|message| invalid(Some(span.clone()), message))?;
            }
        }
        Ok(scenario)
    }

    /// The participant with this identity.
    pub fn participant(&self, identity: &str) -> Option<&ParticipantSpec> {
        self.participants.iter().find(|p| p.identity.get_ref() == identity)
    }

    /// The tracks `identity` publishes over the run: its `tracks`, then those its
    /// `publish-track` steps add.
    pub fn tracks_of(&self, identity: &str) -> Vec<TrackSpec> {
        let Some(p) = self.participant(identity) else { return Vec::new() };
        let mut tracks = p.tracks.clone();
        for step in &self.faults {
            let hits = match &step.target {
                Some(t) => t.get_ref() == identity,
                None => self.participants.len() == 1,
            };
            if let (Fault::PublishTrack { track }, true) = (&step.fault, hits) {
                tracks.push(*track);
            }
        }
        tracks
    }

    /// When the last fault heals (or starts, for one that lasts to the end).
    pub fn last_fault_end(&self) -> Duration {
        self.faults.iter().map(|f| f.at + f.duration.unwrap_or_default()).max().unwrap_or_default()
    }
}

fn all_lanes() -> Vec<Lane> {
    vec![Lane::Real, Lane::Sim]
}

fn default_settle() -> Duration {
    Duration::from_secs(2)
}
/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Sdk;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("s.toml"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(s) => panic!("expected an error, parsed {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = r#"
name = "t"
[[participant]]
identity = "alice"
[[participant]]
identity = "bob"
"#;

    #[test]
    fn parses_a_full_scenario() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{BASE}
[[fault]]
at = \"2s\"
for = \"500ms\"
target = \"alice\"
type = \"toxic\"
toxic = {{ kind = \"latency\", latency = \"300ms\" }}
stream = \"upstream\"

[[fault]]
at = \"3s\"
type = \"server-kill\"

[[expect]]
type = \"reconnected\"
participant = \"alice\"
within = \"8s\"
"
        ))?;
        assert_eq!(s.participants.len(), 2);
        assert_eq!(
            s.faults[0].fault,
            Fault::Toxic {
                toxic: ToxicKind::Latency { latency: 300, jitter: 0 },
                stream: Stream::Upstream,
                toxicity: 1.0
            }
        );
        assert_eq!(s.faults[0].duration, Some(Duration::from_millis(500)));
        assert_eq!(s.last_fault_end(), Duration::from_secs(3));
        assert_eq!(s.lanes, vec![Lane::Real, Lane::Sim]);
        Ok(())
    }

    #[test]
    fn unknown_field_names_file_line_and_allowed_fields() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\ntarget = \"bob\"\nduration = \"3s\"\n"));
        assert!(e.starts_with("s.toml:8:"), "{e}");
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn unknown_field_inside_a_fault_is_rejected() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"media\"\nlost = 5\n"
        ));
        assert!(e.starts_with("s.toml:8:") && e.contains("unknown field `lost`"), "{e}");
        assert!(e.contains("loss_percent"), "the allowed fields are listed: {e}");
    }

    #[test]
    fn unknown_fault_type_lists_the_allowed_ones() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"earthquake\"\n"
        ));
        assert!(
            e.contains("earthquake") && e.contains("partition") && e.contains("server-kill"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"soon\"\ntarget = \"bob\"\ntype = \"partition\"\n"
        ));
        assert!(e.contains("250ms, 3s, 2m"), "{e}");
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"3h\"\ntarget = \"bob\"\ntype = \"partition\"\n"
        ));
        assert!(e.contains("unknown unit `h`"), "{e}");
    }

    #[test]
    fn a_malformed_toxic_names_the_problem() {
        let toxic = |table: &str| {
            error(&format!(
                "{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"toxic\"\ntoxic = {table}\n"
            ))
        };
        let e = toxic("{ kind = \"earthquake\" }");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
        assert!(e.contains("unknown variant `earthquake`") && e.contains("`reset_peer`"), "{e}");
        let e = toxic("{ kind = \"bandwidth\", rate = 4 }");
        assert!(e.contains("unknown field `rate`, expected `rate_kbps`"), "{e}");
        let e = toxic("{ kind = \"latency\", latency = \"soon\" }");
        assert!(e.contains("`soon` is not a duration") && e.contains("250ms, 3s, 2m"), "{e}");
        assert!(toxic("{ kind = \"slicer\" }").contains("missing field `average_size`"));
        assert!(toxic("{ latency = \"300ms\" }").contains("missing field `kind`"));
    }

    #[test]
    fn unknown_participant_is_located_and_lists_the_declared_ones() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\ntarget = \"carol\"\n"
        ));
        assert!(e.starts_with("s.toml:11:"), "{e}");
        assert!(e.contains("unknown participant `carol`") && e.contains("alice, bob"), "{e}");
    }

    #[test]
    fn a_targeted_fault_needs_a_target_among_several_participants() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"partition\"\n"));
        assert!(e.contains("needs `target"), "{e}");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
        // The server is nobody's: no target needed.
        assert!(parse(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"server-kill\"\n")).is_ok());
    }

    #[test]
    fn ranges_and_combinations_are_checked() {
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"media\"\nloss_percent = 120.0\n"));
        assert!(e.contains("between 0 and 100") && e.starts_with("s.toml:8:"), "{e}");
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntarget = \"bob\"\ntype = \"signal-proxy\"\nmode = \"throttle\"\n"));
        assert!(e.contains("needs `rate`"), "{e}");
        let e = error(&format!(
            "{BASE}\n[[expect]]\ntype = \"data-delivered\"\nfrom = \"alice\"\nto = \"bob\"\n"
        ));
        assert!(e.contains("needs a `publish` block"), "{e}");
    }

    #[test]
    fn an_instant_fault_with_for_is_an_error() {
        let e = error(&format!(
            "{BASE}\n[[fault]]\nat = \"1s\"\nfor = \"2s\"\ntarget = \"bob\"\ntype = \"network-change\"\n"
        ));
        assert!(e.contains("happens at once") && e.contains("remove `for`"), "{e}");
        assert!(e.starts_with("s.toml:8:"), "located at the fault's table: {e}");
    }

    #[test]
    fn no_reconnect_names_its_participant() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{BASE}\n[[expect]]\ntype = \"no-reconnect\"\nparticipant = \"bob\"\n"
        ))?;
        assert_eq!(s.expectations[0].get_ref().participants(), vec!["bob"]);
        let e =
            error(&format!("{BASE}\n[[expect]]\ntype = \"no-reconnect\"\nparticipant = \"eve\"\n"));
        assert!(e.contains("unknown participant `eve`"), "{e}");
        Ok(())
    }

    #[test]
    fn each_participant_names_its_sdk_and_an_unknown_one_is_located() -> Result<(), ScenarioError> {
        let s = parse(
            "name = \"t\"\n[[participant]]\nidentity = \"a\"\nsdk = \"js\"\n\
             [[participant]]\nidentity = \"b\"\n",
        )?;
        assert_eq!(s.participants[0].sdk, Sdk::Js);
        assert_eq!(s.participants[1].sdk, Sdk::Faultline, "faultline is the default");
        let e = error("name = \"t\"\n[[participant]]\nidentity = \"a\"\nsdk = \"swift\"\n");
        assert!(e.starts_with("s.toml:4:"), "{e}");
        assert!(
            e.contains("\"swift\"") && e.contains("faultline, upstream-rust, js, go and driver"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn duplicate_and_missing_participants_are_errors() {
        let e = error(
            "name = \"t\"\n[[participant]]\nidentity = \"a\"\n[[participant]]\nidentity = \"a\"\n",
        );
        assert!(e.starts_with("s.toml:5:") && e.contains("declared twice"), "{e}");
        let e = error("name = \"t\"\nparticipant = []\n");
        assert!(e.contains("at least one [[participant]]"), "{e}");
    }

    #[test]
    fn malformed_toml_is_located() {
        let e = error("name = \"t\n");
        assert!(e.starts_with("s.toml:1:"), "{e}");
    }

    const CLUSTER: &str = r#"
name = "c"
lanes = ["real"]
[cluster]
nodes = 2
room_node = 0
[[participant]]
identity = "alice"
node = 1
"#;

    #[test]
    fn a_cluster_scenario_names_nodes_by_index_or_as_the_rooms() -> Result<(), ScenarioError> {
        let s = parse(&format!(
            "{CLUSTER}\n[[fault]]\nat = \"1s\"\nfor = \"2s\"\ntype = \"node-kill\"\nnode = \"room\"\n\
             [[fault]]\nat = \"4s\"\ntype = \"node-restart\"\nnode = 1\n\
             [[fault]]\nat = \"5s\"\nfor = \"3s\"\ntype = \"redis-kill\"\n"
        ))?;
        assert_eq!(s.cluster.as_ref().map(|c| *c.nodes.get_ref()), Some(2));
        assert_eq!(s.participants[0].node.as_ref().map(|n| *n.get_ref()), Some(1));
        assert_eq!(s.faults[0].fault.node(), Some(NodeRef::Room));
        assert_eq!(s.faults[1].fault.node(), Some(NodeRef::Index(1)));
        assert!(s.faults[1].fault.is_instant() && !s.faults[0].fault.is_instant());
        assert!(s.faults.iter().all(|f| !f.fault.needs_target()), "cluster faults hit everyone");
        Ok(())
    }

    #[test]
    fn cluster_mistakes_are_located_and_say_what_is_allowed() {
        let fault = |body: &str| format!("{CLUSTER}\n[[fault]]\nat = \"1s\"\n{body}\n");
        let e = error(&fault("type = \"node-kill\"\nnode = 2"));
        assert!(e.starts_with("s.toml:11:") && e.contains("nodes are 0 to 1"), "{e}");
        let e = error(&fault("type = \"node-kill\"\nnode = \"leader\""));
        assert!(e.contains("a node index (0, 1, …) or \"room\""), "{e}");
        let e = error(&fault("type = \"server-kill\""));
        assert!(e.contains("kill a node instead"), "{e}");
        let e = error(&fault("type = \"node-restart\"\nnode = 0\nfor = \"1s\""));
        assert!(e.contains("happens at once"), "{e}");
        let e = error(&CLUSTER.replace("nodes = 2", "nodes = 9"));
        assert!(e.contains("1 to 8 nodes") && e.starts_with("s.toml:5:"), "{e}");
        let e = error(&CLUSTER.replace("room_node = 0", "room_node = 5"));
        assert!(e.contains("`room_node` 5 does not exist"), "{e}");
        let e = error(&CLUSTER.replace("lanes = [\"real\"]\n", ""));
        assert!(e.contains("real lane only") && e.contains("lanes = [\"real\"]"), "{e}");
        let e = error(&format!("{BASE}\n[[fault]]\nat = \"1s\"\ntype = \"redis-kill\"\n"));
        assert!(e.contains("needs a `[cluster]` table"), "{e}");
        let e = error("name = \"t\"\n[[participant]]\nidentity = \"a\"\nnode = 0\n");
        assert!(e.starts_with("s.toml:4:") && e.contains("[cluster]"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn a_server_table_and_firewalls_are_checked_against_each_other() {
        let fault = "[[fault]]\nat = \"1s\"\ntarget = \"alice\"\ntype = \"firewall\"\n\
                     rule = \"relay-only\"\n";
        assert!(error(&format!("{BASE}{fault}")).contains("add `[server]` with `turn = true`"));
        let with_turn = format!("{BASE}{fault}[server]\nturn = true\n");
        assert!(parse(&with_turn).is_ok(), "{:?}", parse(&with_turn));
        let joined_behind =
            BASE.replace("identity = \"alice\"", "identity = \"alice\"\nfirewall = \"relay-only\"");
        assert!(error(&joined_behind).contains("turn = true"));
        let both =
            format!("lanes = [\"real\"]\n{BASE}[server]\nice_tcp = true\n[cluster]\nnodes = 2\n");
        assert!(error(&both).contains("remove one of the two tables"));
        let unknown = format!("{BASE}[server]\nudp = false\n");
        assert!(error(&unknown).contains("unknown field `udp`"));
    }
}
