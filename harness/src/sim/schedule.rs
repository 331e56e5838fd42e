//! Fault schedules for the simulation lane: what goes wrong, where, and at which simulated
//! time — a plain value that prints as TOML or JSON, reads back, and replays.
//!
//! A [`Schedule`] is a list of [`Step`]s, each a [`Fault`] at a simulated time. Hosts are
//! named as in the simulation: the server is [`SERVER_HOST`], each participant's host is
//! named after its identity. How each fault maps onto turmoil, and what a client sees:
//!
//! | fault | turmoil | what it models |
//! |---|---|---|
//! | `partition` (both ways or `oneway`) | `partition` / `partition_oneway` | a link that dies. turmoil has no TCP retransmission: a segment dropped by the partition is gone, so an established signalling stream **stays dead after `repair`** — a half-open link the client must notice by its ping timeout (or its peer connection failing) and replace. New connections are refused while it lasts. UDP (the media path, SCTP data) recovers after `repair` by str0m's own retransmission. |
//! | `repair` | `repair` / `repair_oneway` | the link works again for new traffic; what was dropped stays dropped |
//! | `hold` | `hold` | a stall that heals: messages both ways wait on the link (streams survive) |
//! | `release` | `release` | the stall ends; everything held is delivered |
//! | `latency` | `set_link_latency` | a fixed one-way latency on the link from now on |
//! | `fail_rate` | `set_link_fail_rate` | a flaky link: before each message the link breaks with this probability (dropping everything in flight on it) and heals at the next message. For TCP that is, again, a dead stream; 0 turns it off. It draws from turmoil's RNG once per message, so exact replay needs the message count to repeat (see the determinism note in [`super::explore`]). |
//! | `crash` | `crash` on the server host | the server process dies: state lost, sockets gone |
//! | `restart` | `bounce` on the server host | the server starts again with no memory of anyone (a running server is restarted) |
//! | `offline` | the participant's socket wrapper (`FaultyNetwork`) | the participant's network goes dark, as the real lane's `partition` makes it: open signalling streams stall with their bytes kept (a paused proxy), new connections are refused at once, media datagrams are lost both ways |
//! | `online` | the same wrapper | the network is back: held streams carry on, connections and media pass |
//! | `media` | the same wrapper | the participant's media path degrades: a share of datagrams lost and/or a fixed delay, one way or both (seeded: the same traffic loses the same datagrams) |
//! | `media_heal` | the same wrapper | every media fault of the participant ends |
//! | `signal` | the same wrapper | the participant's signalling as the real lane's killable proxy does it: `kill` (every stream reset, new connections refused), `black-hole` (streams pass nothing; reset when it ends), `pause` (streams held, bytes kept), `refuse-new`; not `throttle` |
//! | `signal_heal` | the same wrapper | the signalling fault ends |
//! | `remove_participant` | the server's `remove_participant` control | RoomService `RemoveParticipant`: `Leave{DISCONNECT}` to that participant |
//! | `simulate` | `Room::simulate_scenario` on that participant | the client asks for a `SimulateScenario` |
//! | `mute` | `LocalParticipant::set_track_muted` on that participant | the user mutes (`muted = true`) or unmutes one of its tracks |
//! | `publish_track` | `LocalParticipant::publish_track` on that participant | the user publishes a track it did not publish before |
//!
//! The network faults and server crashes are applied by the runner between simulation
//! steps; `remove_participant`, `simulate`, `mute` and `publish_track` run inside the
//! participant's host at their time (see [`Schedule::client_actions`]).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SERVER_HOST;
use crate::net::Direction;
use crate::vocab::{ProxyMode, TrackSpec};

/// The largest latency a schedule may set (longer ones are certainly typos).
pub const MAX_LATENCY_MS: u64 = 60_000;

/// A schedule that cannot be applied to a simulation.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    /// A step names a host that is not in the simulation.
    #[error("step {step} ({fault}) names host {host:?}, which is not in the simulation; expected {SERVER_HOST:?} or a participant ({known})")]
    UnknownHost {
        /// Index of the step.
        step: usize,
        /// The fault's name.
        fault: &'static str,
        /// The unknown name.
        host: String,
        /// The hosts that exist, comma-separated.
        known: String,
    },
    /// A link fault names the same host twice.
    #[error("step {step} ({fault}) names {host:?} at both ends of the link; a link joins two different hosts")]
    SameHost {
        /// Index of the step.
        step: usize,
        /// The fault's name.
        fault: &'static str,
        /// The host.
        host: String,
    },
    /// A value is out of range.
    #[error("step {step} ({fault}): {what}")]
    OutOfRange {
        /// Index of the step.
        step: usize,
        /// The fault's name.
        fault: &'static str,
        /// What is wrong and what is allowed.
        what: String,
    },
    /// The text is not a schedule.
    #[error("cannot read the schedule: {0}; expected `[[step]]` tables with `at_ms` and `fault` (see faultline::sim::schedule)")]
    Parse(String),
}

/// One fault at one simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Simulated milliseconds since the simulation started.
    pub at_ms: u64,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

impl Step {
    /// When it happens.
    pub fn at(&self) -> Duration {
        Duration::from_millis(self.at_ms)
    }
}

/// What can go wrong (see the module documentation for what each models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Cut the link between `a` and `b` (only `a` → `b` when `oneway`).
    Partition {
        /// One end (the sender, for a one-way partition).
        a: String,
        /// The other end.
        b: String,
        /// Only traffic from `a` to `b` is cut.
        #[serde(default)]
        oneway: bool,
    },
    /// Undo a partition (only `a` → `b` when `oneway`).
    Repair {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Only traffic from `a` to `b` is restored.
        #[serde(default)]
        oneway: bool,
    },
    /// Stall the link: messages wait, both ways.
    Hold {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// End a stall and deliver what waited.
    Release {
        /// One end.
        a: String,
        /// The other end.
        b: String,
    },
    /// Set the link's one-way latency.
    Latency {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Milliseconds, at most [`MAX_LATENCY_MS`].
        ms: u64,
    },
    /// Make the link flaky: it breaks before a message with probability `rate`.
    FailRate {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// In `[0, 1)`; 0 turns it off.
        rate: f64,
    },
    /// Crash the server host.
    Crash,
    /// Start the server host again (restarts it if it is running).
    Restart,
    /// The participant's network goes dark (see the module documentation).
    Offline {
        /// The participant's identity.
        participant: String,
    },
    /// Ends an `offline`.
    Online {
        /// The participant's identity.
        participant: String,
    },
    /// Degrade the participant's media path.
    Media {
        /// The participant's identity.
        participant: String,
        /// Which way (default both).
        #[serde(default)]
        direction: Direction,
        /// Share of datagrams lost, 0 to 100.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loss_percent: Option<f64>,
        /// Fixed delay added to every datagram, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
    },
    /// End every media fault of the participant.
    MediaHeal {
        /// The participant's identity.
        participant: String,
    },
    /// Fault the participant's signalling (not `throttle`).
    Signal {
        /// The participant's identity.
        participant: String,
        /// What happens to its streams and new connections.
        mode: ProxyMode,
    },
    /// End the participant's signalling fault.
    SignalHeal {
        /// The participant's identity.
        participant: String,
    },
    /// The server removes this participant (RoomService `RemoveParticipant`).
    RemoveParticipant {
        /// The participant's identity.
        participant: String,
    },
    /// The participant's room asks for a scenario.
    Simulate {
        /// The participant's identity.
        participant: String,
        /// Which one.
        scenario: SimulateKind,
    },
    /// The participant mutes or unmutes one of its tracks.
    Mute {
        /// The participant's identity.
        participant: String,
        /// Which of its tracks.
        track: TrackSpec,
        /// Muted (or unmuted).
        muted: bool,
    },
    /// The participant publishes a track.
    PublishTrack {
        /// The participant's identity.
        participant: String,
        /// Which track.
        track: TrackSpec,
    },
}

impl Fault {
    /// The fault's name as written in a schedule file.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::Repair { .. } => "repair",
            Fault::Hold { .. } => "hold",
            Fault::Release { .. } => "release",
            Fault::Latency { .. } => "latency",
            Fault::FailRate { .. } => "fail_rate",
            Fault::Crash => "crash",
            Fault::Restart => "restart",
            Fault::Offline { .. } => "offline",
            Fault::Online { .. } => "online",
            Fault::Media { .. } => "media",
            Fault::MediaHeal { .. } => "media_heal",
            Fault::Signal { .. } => "signal",
            Fault::SignalHeal { .. } => "signal_heal",
            Fault::RemoveParticipant { .. } => "remove_participant",
            Fault::Simulate { .. } => "simulate",
            Fault::Mute { .. } => "mute",
            Fault::PublishTrack { .. } => "publish_track",
        }
    }

    /// The link it acts on, if it is a link fault.
    pub fn link(&self) -> Option<(&str, &str)> {
        match self {
            Fault::Partition { a, b, .. }
            | Fault::Repair { a, b, .. }
            | Fault::Hold { a, b }
            | Fault::Release { a, b }
            | Fault::Latency { a, b, .. }
            | Fault::FailRate { a, b, .. } => Some((a, b)),
            _ => None,
        }
    }

    /// The participant it names, if it is about one participant.
    pub fn participant(&self) -> Option<&str> {
        match self {
            Fault::Offline { participant }
            | Fault::Online { participant }
            | Fault::Media { participant, .. }
            | Fault::MediaHeal { participant }
            | Fault::Signal { participant, .. }
            | Fault::SignalHeal { participant } => Some(participant),
            other => other.performer(),
        }
    }

    /// The participant whose host performs it, for faults that run inside a client host.
    pub fn performer(&self) -> Option<&str> {
        match self {
            Fault::RemoveParticipant { participant }
            | Fault::Simulate { participant, .. }
            | Fault::Mute { participant, .. }
            | Fault::PublishTrack { participant, .. } => Some(participant),
            _ => None,
        }
    }

    /// Applies a network or server fault to `sim` (between steps). Faults a client host
    /// performs ([`Fault::performer`]) and those on a participant's sockets
    /// (`offline`, `online`, `media`, `signal` and their heals: see
    /// [`crate::sim::Sim::apply`]) are left alone. Hosts must exist
    /// (see [`Schedule::validate`]); turmoil panics on unknown ones.
    pub fn apply(&self, sim: &mut turmoil::Sim<'_>) {
        match self {
            Fault::Partition { a, b, oneway: false } => sim.partition(a.as_str(), b.as_str()),
            Fault::Partition { a, b, oneway: true } => sim.partition_oneway(a.as_str(), b.as_str()),
            Fault::Repair { a, b, oneway: false } => sim.repair(a.as_str(), b.as_str()),
            Fault::Repair { a, b, oneway: true } => sim.repair_oneway(a.as_str(), b.as_str()),
            Fault::Hold { a, b } => sim.hold(a.as_str(), b.as_str()),
            Fault::Release { a, b } => sim.release(a.as_str(), b.as_str()),
            Fault::Latency { a, b, ms } => {
                sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms))
            }
            Fault::FailRate { a, b, rate } => sim.set_link_fail_rate(a.as_str(), b.as_str(), *rate),
            Fault::Crash => sim.crash(SERVER_HOST),
            Fault::Restart => sim.bounce(SERVER_HOST),
            Fault::RemoveParticipant { .. }
            | Fault::Simulate { .. }
            | Fault::Mute { .. }
            | Fault::PublishTrack { .. }
            | Fault::Offline { .. }
            | Fault::Online { .. }
            | Fault::Media { .. }
            | Fault::MediaHeal { .. }
            | Fault::Signal { .. }
            | Fault::SignalHeal { .. } => {}
        }
    }
}

/// The `SimulateScenario`s a schedule can ask for: the shared vocabulary's.
pub use crate::vocab::SimulateKind;

/// Faults at simulated times, in time order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The steps (`[[step]]` in TOML).
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
}

impl Schedule {
    /// A schedule of `steps`, sorted by time (stable: equal times keep their order).
    pub fn new(mut steps: Vec<Step>) -> Self {
        steps.sort_by_key(|step| step.at_ms);
        Self { steps }
    }

    /// The time of the last step (zero for an empty schedule).
    pub fn last_at(&self) -> Duration {
        self.steps.last().map(Step::at).unwrap_or_default()
    }

    /// Checks that every host exists among [`SERVER_HOST`] and `participants`, links join
    /// two different hosts, values are in range, and steps are in time order.
    pub fn validate(&self, participants: &[String]) -> Result<(), ScheduleError> {
        let hosts: BTreeSet<&str> =
            participants.iter().map(String::as_str).chain([SERVER_HOST]).collect();
        let known = || hosts.iter().copied().collect::<Vec<_>>().join(", ");
        let mut previous = 0;
        for (index, step) in self.steps.iter().enumerate() {
            let fault = step.fault.name();
            let out_of_range =
                |what: String| ScheduleError::OutOfRange { step: index, fault, what };
            if step.at_ms < previous {
                return Err(out_of_range(format!(
                    "at_ms {} is before the previous step's {previous}; steps must be in time order",
                    step.at_ms
                )));
            }
            previous = step.at_ms;
            let mut named: Vec<&str> = step.fault.participant().into_iter().collect();
            if let Some((a, b)) = step.fault.link() {
                if a == b {
                    return Err(ScheduleError::SameHost { step: index, fault, host: a.to_owned() });
                }
                named.extend([a, b]);
            }
            if let Some(host) = named.into_iter().find(|host| !hosts.contains(host)) {
                return Err(ScheduleError::UnknownHost {
                    step: index,
                    fault,
                    host: host.to_owned(),
                    known: known(),
                });
            }
            if step.fault.participant() == Some(SERVER_HOST) {
                return Err(out_of_range(format!(
                    "{SERVER_HOST:?} is the server, not a participant"
                )));
            }
            match step.fault {
                Fault::Latency { ms, .. } if ms > MAX_LATENCY_MS => {
                    return Err(out_of_range(format!(
                        "latency {ms} ms is above the maximum {MAX_LATENCY_MS} ms"
                    )))
                }
                Fault::Media { loss_percent: Some(loss), .. } if !(0.0..=100.0).contains(&loss) => {
                    return Err(out_of_range(format!(
                        "media loss {loss} % is outside 0 to 100"
                    )))
                }
                Fault::Media { delay_ms: Some(ms), .. } if ms > MAX_LATENCY_MS => {
                    return Err(out_of_range(format!(
                        "media delay {ms} ms is above the maximum {MAX_LATENCY_MS} ms"
                    )))
                }
                Fault::Signal { mode: ProxyMode::Throttle, .. } => {
                    return Err(out_of_range(
                        "the simulation cannot throttle signalling (kill, black-hole, pause or \
                         refuse-new)"
                            .into(),
                    ))
                }
                Fault::FailRate { rate, .. } if !(0.0..1.0).contains(&rate) => {
                    return Err(out_of_range(format!(
                        "fail rate {rate} is outside [0, 1) (1 would cut the link for good: use partition)"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether any step names `host` (as a link end or as the participant acting).
    pub fn mentions(&self, host: &str) -> bool {
        self.steps.iter().any(|step| {
            step.fault.participant() == Some(host)
                || step.fault.link().is_some_and(|(a, b)| a == host || b == host)
        })
    }

    /// The steps `participant`'s own host performs, in time order.
    pub fn client_actions(&self, participant: &str) -> Vec<Step> {
        self.steps
            .iter()
            .filter(|step| step.fault.performer() == Some(participant))
            .cloned()
            .collect()
    }

    /// Reads a schedule from TOML.
    pub fn from_toml(text: &str) -> Result<Self, ScheduleError> {
        toml::from_str(text).map_err(|e| ScheduleError::Parse(e.to_string()))
    }

    /// Writes the schedule as TOML.
    pub fn to_toml(&self) -> String {
        // A schedule is plain tables of strings and numbers: it always serialises.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the schedule: {e}\n"))
    }
}

impl std::fmt::Display for Schedule {
    /// One line per step: `+3.000s partition a=p0 b=livekit`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.steps.is_empty() {
            return writeln!(f, "  (no faults)");
        }
        for step in &self.steps {
            let detail = match &step.fault {
                Fault::Partition { a, b, oneway } | Fault::Repair { a, b, oneway } => {
                    format!("{a} {} {b}", if *oneway { "->" } else { "<->" })
                }
                Fault::Hold { a, b } | Fault::Release { a, b } => format!("{a} <-> {b}"),
                Fault::Latency { a, b, ms } => format!("{a} <-> {b} {ms} ms"),
                Fault::FailRate { a, b, rate } => format!("{a} <-> {b} {rate}"),
                Fault::Crash | Fault::Restart => SERVER_HOST.to_owned(),
                Fault::RemoveParticipant { participant }
                | Fault::Offline { participant }
                | Fault::Online { participant }
                | Fault::MediaHeal { participant }
                | Fault::SignalHeal { participant } => participant.clone(),
                Fault::Signal { participant, mode } => format!("{participant} {mode:?}"),
                Fault::Media { participant, direction, loss_percent, delay_ms } => {
                    let loss = loss_percent.map(|p| format!(" loss {p} %")).unwrap_or_default();
                    let delay = delay_ms.map(|ms| format!(" delay {ms} ms")).unwrap_or_default();
                    format!("{participant} {direction:?}{loss}{delay}")
                }
                Fault::Simulate { participant, scenario } => format!("{participant} {scenario:?}"),
                Fault::Mute { participant, track, muted } => {
                    format!("{participant} {track:?} {}", if *muted { "muted" } else { "unmuted" })
                }
                Fault::PublishTrack { participant, track } => format!("{participant} {track:?}"),
            };
            writeln!(f, "  +{:.3}s {} {detail}", step.at().as_secs_f64(), step.fault.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn participants() -> Vec<String> {
        vec!["p0".into(), "p1".into()]
    }

    fn sample() -> Schedule {
        Schedule::new(vec![
            Step {
                at_ms: 3000,
                fault: Fault::Partition { a: "p0".into(), b: SERVER_HOST.into(), oneway: true },
            },
            Step { at_ms: 500, fault: Fault::Hold { a: "p1".into(), b: SERVER_HOST.into() } },
            Step {
                at_ms: 4000,
                fault: Fault::Simulate {
                    participant: "p1".into(),
                    scenario: SimulateKind::Speaker { secs: 2 },
                },
            },
            Step { at_ms: 5000, fault: Fault::Crash },
        ])
    }

    #[test]
    fn a_schedule_round_trips_through_toml_and_json_in_time_order() {
        let schedule = sample();
        assert_eq!(schedule.steps[0].at_ms, 500, "steps are sorted by time");
        let toml = schedule.to_toml();
        assert!(toml.contains("fault = \"partition\""), "{toml}");
        assert_eq!(Schedule::from_toml(&toml), Ok(schedule.clone()));
        let json = serde_json::to_string(&schedule).expect("serialises");
        assert_eq!(serde_json::from_str::<Schedule>(&json).expect("parses"), schedule);
        assert!(schedule.validate(&participants()).is_ok());
    }

    #[test]
    fn bad_schedules_are_refused_with_the_step_and_the_fix() {
        let step = |fault| Schedule { steps: vec![Step { at_ms: 1, fault }] };
        let unknown = step(Fault::Hold { a: "p9".into(), b: SERVER_HOST.into() });
        let error = unknown.validate(&participants()).expect_err("p9 does not exist");
        assert!(error.to_string().contains("p0, p1"), "{error}");
        let same = step(Fault::Partition { a: "p0".into(), b: "p0".into(), oneway: false });
        assert!(matches!(same.validate(&participants()), Err(ScheduleError::SameHost { .. })));
        let rate = step(Fault::FailRate { a: "p0".into(), b: SERVER_HOST.into(), rate: 1.0 });
        assert!(matches!(rate.validate(&participants()), Err(ScheduleError::OutOfRange { .. })));
        let server = step(Fault::RemoveParticipant { participant: SERVER_HOST.into() });
        assert!(server.validate(&participants()).is_err());
        let garbage = Schedule::from_toml("[[step]]\nat_ms = 1\nfault = \"explode\"\n");
        assert!(matches!(garbage, Err(ScheduleError::Parse(_))), "{garbage:?}");
    }
}
