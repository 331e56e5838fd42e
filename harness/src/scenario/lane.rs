//! What both lanes of a scenario run share: how a run is watched ([`RunOptions`],
//! [`Progress`]), how it fails ([`RunError`]), and how a fault step and a scenario's lanes
//! are named in messages and records.

use std::path::PathBuf;
use std::time::Duration;

use super::format::{Fault, FaultStep, Lane, ProxyMode, Scenario};
use crate::client::{ClientError, Sdk};
use crate::cluster::ClusterError;
use crate::proxy::ProxyError;
use crate::record::{ClusterRecord, EventRecord, FaultRecord};
use crate::server::ServerError;
use crate::toxiproxy::ToxiproxyError;

/// Something the runner reports while it runs, for a live display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A step of setting up or tearing down (`starting livekit-server`, `joining alice`).
    Phase(&'a str),
    /// Everyone is connected: the fault timeline starts now, this long after the run
    /// started (event and fault times count from the start of the run).
    TimelineStarted(Duration),
    /// A fault took effect.
    FaultStarted(&'a FaultRecord),
    /// A fault was healed.
    FaultHealed(&'a FaultRecord),
    /// A participant's room reported an event.
    Event(&'a EventRecord),
    /// The cluster changed (a `[cluster]` scenario only).
    Cluster(&'a ClusterRecord),
}

/// Receives [`Progress`] as the run goes.
pub type Observer = Box<dyn FnMut(Progress<'_>) + Send>;

/// How to run a scenario.
pub struct RunOptions {
    /// Seed of the run's randomness: media loss and each room's backoff jitter.
    pub seed: u64,
    /// Told about every step, fault and event.
    pub observer: Option<Observer>,
    /// Keep watching until no participant has seen a lifecycle or participant event for this
    /// long (at most [`QUIET_WAIT_CAP`] past the usual end), so the record holds everything
    /// the room was going to say: what a comparison of lanes needs (`faultline conform`).
    pub quiet: Option<Duration>,
}

/// The longest a run keeps watching for [`RunOptions::quiet`].
pub const QUIET_WAIT_CAP: Duration = Duration::from_secs(30);

impl Default for RunOptions {
    fn default() -> Self {
        Self { seed: 1, observer: None, quiet: None }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions").field("seed", &self.seed).finish_non_exhaustive()
    }
}

/// A scenario that could not be run (as opposed to one that ran and failed its
/// expectations, which is a [`crate::record::RunRecord`] whose verdicts say so).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario does not list the lane.
    #[error(
        "{}: scenario `{scenario}` does not list the {lane} lane (it lists: {listed}); run it \
         with `--lane {listed}`, or add \"{lane}\" to its `lanes` if it can run there",
        file.display()
    )]
    LaneNotListed {
        /// The file.
        file: PathBuf,
        /// Its name.
        scenario: String,
        /// The lane asked for.
        lane: Lane,
        /// The lanes it lists.
        listed: String,
    },
    /// A fault the lane cannot do; found before anything started.
    #[error("{}: fault #{index} (`type = \"{kind}\"`): the {lane} lane cannot do it: {why}", file.display())]
    Unsupported {
        /// The file.
        file: PathBuf,
        /// The fault's position among the `[[fault]]`s (0-based).
        index: usize,
        /// Its type.
        kind: &'static str,
        /// The lane.
        lane: Lane,
        /// Why, and what to do instead.
        why: String,
    },
    /// A `[server]` table in the sim lane.
    #[error(
        "{}: its `[server]` table (ICE over TCP, a TURN relay) sets up the real livekit-server; \
         the simulated server has no such settings. Run the scenario with `--lane real`, or \
         list only \"real\" in its `lanes`",
        file.display()
    )]
    SimServer {
        /// The file.
        file: PathBuf,
    },
    /// A participant setting or expectation the sim lane cannot honour.
    #[error(
        "{}: participant `{identity}` has {what}, which the sim lane cannot honour (its \
         participants use the default room options and publish their own data); run the \
         scenario with `--lane real`, or list only \"real\" in its `lanes`",
        file.display()
    )]
    SimParticipant {
        /// The file.
        file: PathBuf,
        /// Who.
        identity: String,
        /// The setting.
        what: &'static str,
    },
    /// A participant's SDK cannot take what the scenario asks of it; found before anything
    /// started.
    #[error("{}: participant `{identity}` runs the {sdk} SDK, which cannot take {what}", file.display())]
    SdkCannot {
        /// The file.
        file: PathBuf,
        /// Who.
        identity: String,
        /// Its SDK.
        sdk: Sdk,
        /// What it cannot take, and what to do instead.
        what: String,
    },
    /// A participant's SDK cannot run on this machine (its message names the fix).
    #[error(transparent)]
    Client(ClientError),
    /// The network namespaces a run with kernel-level faults needs could not be made.
    #[error("kernel-level faults need network namespaces, which could not be made: {0}")]
    Kernel(#[from] crate::netns::NetnsError),
    /// The simulation failed.
    #[error("the simulation failed: {0}")]
    Sim(String),
    /// livekit-server could not be started or reached.
    #[error("cannot start livekit-server for the scenario: {0}")]
    Server(#[from] ServerError),
    /// The cluster could not be started or used.
    #[error("the scenario's cluster failed: {0}")]
    Cluster(#[from] ClusterError),
    /// toxiproxy could not be started or used.
    #[error("toxiproxy, needed for the scenario's toxics, failed: {0}")]
    Toxiproxy(#[from] ToxiproxyError),
    /// The killable proxy could not be started.
    #[error("cannot start the signalling proxy: {0}")]
    Proxy(#[from] ProxyError),
    /// A participant could not join.
    #[error("{identity} could not join room {room}: {why}; server log: {log}")]
    Join {
        /// Who.
        identity: String,
        /// The room.
        room: String,
        /// What went wrong.
        why: String,
        /// The server's log.
        log: String,
    },
    /// A fault could not be applied or healed.
    #[error("fault #{index} ({label}) could not be {action}: {why}; server log: {log}")]
    Fault {
        /// The fault's position.
        index: usize,
        /// Its description.
        label: String,
        /// "started" or "healed".
        action: &'static str,
        /// The error.
        why: String,
        /// The server's log.
        log: String,
    },
}

/// The lanes a scenario lists, comma-separated.
pub fn lanes(scenario: &Scenario) -> String {
    scenario.lanes.iter().map(Lane::to_string).collect::<Vec<_>>().join(", ")
}

/// A one-line description of a fault step.
pub fn label(step: &FaultStep) -> String {
    let what = match &step.fault {
        Fault::SignalProxy { mode: ProxyMode::Throttle, rate } => {
            format!("signal-proxy throttle {} B/s", rate.unwrap_or_default())
        }
        Fault::SignalProxy { mode, .. } => format!("signal-proxy {mode}"),
        Fault::Toxic { toxic, stream, toxicity } => {
            let share =
                if *toxicity < 1.0 { format!(", toxicity {toxicity}") } else { String::new() };
            format!("toxic {toxic} {stream}{share}")
        }
        Fault::Media(media) => media.describe(),
        Fault::Firewall { rule } => format!("firewall {}", rule.name()),
        Fault::Simulate { scenario } => format!("simulate {scenario}"),
        Fault::Mute { track } => format!("mute {}", track.source().name()),
        Fault::PublishTrack { track } => format!("publish-track {}", track.source().name()),
        other => other.kind().to_owned(),
    };
    match &step.target {
        Some(t) => format!("{what} → {}", t.get_ref()),
        None => what,
    }
}
