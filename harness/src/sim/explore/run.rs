//! [`run_case`]: one [`Case`] in a [`Sim`] — the workload, the faults at their times, and
//! the settling that gives every room the chance to end its episode — recorded as a [`Run`].
//!
//! The workload: participant `i` joins room [`ROOM`] at `i · 200 ms` and publishes a
//! reliable packet `"<identity>:<n>"` every 500 ms, whatever its state, until told to stop.
//! Network and server faults are applied between simulation steps; `simulate` and
//! `remove_participant` run in the participant's host at their time.
//!
//! After the last fault the run continues until every room has been `Connected` or
//! `Disconnected` and quiet for a while, at least [`SETTLE`] later (long enough for a
//! half-open link to be noticed by ping timeout); then publishing stops, in-flight data
//! drains for [`DRAIN`], and each room's final state is taken. A room still `Reconnecting`
//! at the liveness bound ([`liveness_bound`]) is reported and the run ends there.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_sdk::{ConnectionState, DataPacket, RoomEvent, RoomOptions};

use super::{Case, ExploreError};
use crate::sim::schedule::{Fault, Step};
use crate::sim::server::ServerConfig;
use crate::sim::{ClientContext, Sim, TraceEntry};

/// The room every participant joins.
pub const ROOM: &str = "explore";
/// Participant `i` joins at `i` times this.
const JOIN_STAGGER: Duration = Duration::from_millis(200);
/// How often each participant publishes a reliable packet.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// The least time after the last fault before a run may end: the server's ping interval and
/// timeout (5 s + 15 s, sent in every JoinResponse) plus margin, so a half-open signalling
/// link left by a partition is noticed before the run is judged.
pub const SETTLE: Duration = Duration::from_secs(25);
/// How long every room must have been free of lifecycle events before settling ends.
const QUIET: Duration = Duration::from_secs(3);
/// How long data may drain after publishing stops.
pub const DRAIN: Duration = Duration::from_secs(5);
/// Simulated time between checks of the rooms' states while settling.
const POLL: Duration = Duration::from_millis(500);
/// Bound on one publish call (it only queues the packet).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The server's ping interval plus ping timeout: the longest a client may take to notice a
/// dead signalling link.
const PING_DETECTION: Duration = Duration::from_secs(20);

const RUNNING: u8 = 0;
const STOP_PUBLISHING: u8 = 1;
const FINISH: u8 = 2;

/// What one participant did and ended in.
#[derive(Debug, Clone, Default)]
pub struct ParticipantRun {
    /// Its identity (and host name).
    pub identity: String,
    /// Its room's RNG seed (the backoff jitter draws replay from it).
    pub rng_seed: u64,
    /// Why it could not join, if it could not.
    pub join_error: Option<String>,
    /// Reliable packets published successfully.
    pub published: Vec<Published>,
    /// The local participant's sid when the run ended (it changes with a full reconnect).
    pub final_sid: String,
    /// `connection_state()` when the run ended (`None` if it never joined).
    pub final_state: Option<ConnectionState>,
    /// How many of its events it had received when `final_state` was taken; later ones
    /// (from tearing the room down) are not judged.
    pub events_judged: usize,
    /// Simulated time when the final state was taken.
    pub finished_at: Duration,
    /// Things that went wrong in the workload without being violations.
    pub notes: Vec<String>,
}

/// One reliable packet a participant published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its counter (the payload is `"<identity>:<counter>"`).
    pub counter: u32,
    /// When `publish_data` was called.
    pub at: Duration,
    /// The publisher's session (sid) then.
    pub sid: String,
}

/// A recorded run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The case.
    pub case: Case,
    /// Every room event, in emission order.
    pub entries: Vec<TraceEntry>,
    /// Each participant, in identity order.
    pub participants: Vec<ParticipantRun>,
    /// When the faults stopped (the last step, or the last join if later).
    pub faults_stopped: Duration,
    /// The liveness bound after `faults_stopped`.
    pub bound: Duration,
    /// Participants still `Reconnecting` when the bound passed.
    pub stuck: Vec<String>,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl Run {
    /// The events `identity`'s room emitted up to its final state.
    pub fn events_of(&self, identity: &str) -> Vec<&TraceEntry> {
        let judged = self
            .participants
            .iter()
            .find(|p| p.identity == identity)
            .map_or(0, |p| p.events_judged);
        self.entries.iter().filter(|e| e.identity == identity).take(judged).collect()
    }

    /// The trace as text: faults and each room's events up to its final state, in time
    /// order, data compressed to `data <sender>:<n>`.
    pub fn trace_text(&self) -> String {
        use std::fmt::Write as _;
        let mut lines: Vec<(Duration, String)> = self
            .case
            .schedule
            .steps
            .iter()
            .map(|step| (step.at(), format!("FAULT {}", describe(step))))
            .collect();
        let mut left: std::collections::BTreeMap<&str, usize> =
            self.participants.iter().map(|p| (p.identity.as_str(), p.events_judged)).collect();
        for entry in &self.entries {
            // Events after a room's final state come from tearing it down: not shown.
            match left.get_mut(entry.identity.as_str()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => continue,
            }
            let event = match &entry.event {
                RoomEvent::DataReceived { payload, .. } => {
                    format!("data {}", String::from_utf8_lossy(payload))
                }
                RoomEvent::ConnectionStateChanged(_) => continue,
                other => format!("{other:?}"),
            };
            lines.push((entry.at, format!("{:>4} {event}", entry.identity)));
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::new();
        for (at, line) in lines {
            let _ = writeln!(out, "  +{:>8.3}s {line}", at.as_secs_f64());
        }
        for p in &self.participants {
            let _ = writeln!(
                out,
                "  {} final state {:?}, {} packets published{}",
                p.identity,
                p.final_state,
                p.published.len(),
                p.join_error.as_deref().map(|e| format!(", join failed: {e}")).unwrap_or_default()
            );
            for note in &p.notes {
                let _ = writeln!(out, "    note: {note}");
            }
        }
        out
    }
}

fn describe(step: &Step) -> String {
    let mut text = crate::sim::schedule::Schedule { steps: vec![step.clone()] }.to_string();
    // "  +1.000s partition …\n" → "partition …"
    text = text.trim().to_owned();
    text.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or(text)
}

/// How long after the faults stop a room may still be `Reconnecting`: noticing a dead link
/// (ping interval + timeout, or the peer connection failing) plus the policy's
/// [`RoomOptions::reconnect_bound`] (every delay at its cap, every attempt using all its
/// timeouts).
pub fn liveness_bound(options: &RoomOptions) -> Duration {
    PING_DETECTION.max(options.pc_failed_after) + options.reconnect_bound()
}

/// Runs `case` and records what happened. Errors only when the case cannot run (a bad
/// schedule, a simulation failure); broken invariants are for [`super::judge`].
pub fn run_case(case: &Case) -> Result<Run, ExploreError> {
    let identities = case.identities();
    if case.participants == 0 || case.participants > super::generate::MAX_PARTICIPANTS {
        return Err(ExploreError::Participants {
            got: case.participants,
            max: super::generate::MAX_PARTICIPANTS,
        });
    }
    case.schedule.validate(&identities)?;
    let server = ServerConfig { planted_bug: case.planted_bug, ..ServerConfig::default() };
    let mut sim = Sim::with(case.seed, server, |_| {});
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let records: Arc<Mutex<Vec<ParticipantRun>>> = Arc::new(Mutex::new(
        identities
            .iter()
            .map(|identity| ParticipantRun { identity: identity.clone(), ..Default::default() })
            .collect(),
    ));
    for (index, identity) in identities.iter().enumerate() {
        let actions = case.schedule.client_actions(identity);
        let (phase, records) = (phase.clone(), records.clone());
        sim.client(identity, move |ctx| async move {
            participant(ctx, index, actions, phase, records).await;
            Ok::<_, std::convert::Infallible>(())
        });
    }
    let trace = sim.trace();
    for step in &case.schedule.steps {
        sim.run_until(step.at())?;
        step.fault.apply(sim.turmoil());
    }
    let faults_stopped = case.schedule.last_at().max(JOIN_STAGGER * case.participants as u32);
    let bound = liveness_bound(&RoomOptions::default());
    let deadline = faults_stopped + bound;
    let settled = |sim: &Sim<'_>, earliest: Duration| {
        let now = sim.elapsed();
        let entries = trace.entries();
        let last_lifecycle = entries.iter().filter(|e| e.event.is_lifecycle()).map(|e| e.at).max();
        now >= earliest
            && reconnecting(&entries, &identities).is_empty()
            && last_lifecycle.is_none_or(|at| now >= at + QUIET)
    };
    let earliest = faults_stopped + SETTLE;
    while !settled(&sim, earliest) && sim.elapsed() < deadline {
        advance(&mut sim, POLL)?;
    }
    let mut stuck = Vec::new();
    if sim.elapsed() >= deadline {
        stuck = reconnecting(&trace.entries(), &identities);
    }
    if stuck.is_empty() {
        phase.store(STOP_PUBLISHING, Ordering::SeqCst);
        let drained = sim.elapsed() + DRAIN;
        while !settled(&sim, drained) && sim.elapsed() < deadline + DRAIN {
            advance(&mut sim, POLL)?;
        }
    }
    phase.store(FINISH, Ordering::SeqCst);
    let finishing = sim.elapsed();
    let trace = sim.run()?;
    let participants = records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let simulated = participants.iter().map(|p| p.finished_at).fold(finishing, Duration::max);
    Ok(Run {
        case: case.clone(),
        entries: trace.entries(),
        participants,
        faults_stopped,
        bound,
        stuck,
        simulated,
    })
}

/// Runs `sim` for `step` more simulated time.
fn advance(sim: &mut Sim<'_>, step: Duration) -> Result<(), ExploreError> {
    let target = sim.elapsed() + step;
    sim.run_until(target)?;
    Ok(())
}

/// The identities whose last lifecycle event is `Reconnecting`.
fn reconnecting(entries: &[TraceEntry], identities: &[String]) -> Vec<String> {
    identities
        .iter()
        .filter(|identity| {
            entries
                .iter()
                .rev()
                .find(|e| &e.identity == *identity && e.event.is_lifecycle())
                .is_some_and(|e| e.event == RoomEvent::Reconnecting)
        })
        .cloned()
        .collect()
}

/// One participant's host: join, run its scheduled actions, publish until told to stop,
/// then record its final state.
async fn participant(
    ctx: ClientContext,
    index: usize,
    actions: Vec<Step>,
    phase: Arc<AtomicU8>,
    records: Arc<Mutex<Vec<ParticipantRun>>>,
) {
    let update = |f: &dyn Fn(&mut ParticipantRun)| {
        let mut records = records.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut records[index]);
    };
    let identity = ctx.host().to_owned();
    tokio::time::sleep(JOIN_STAGGER * index as u32).await;
    let rng_seed = ctx.options().seed();
    update(&|p| p.rng_seed = rng_seed);
    let (room, mut events) = match ctx.connect(ROOM, &identity).await {
        Ok(joined) => joined,
        Err(e) => {
            let error = e.to_string();
            update(&|p| p.join_error = Some(error.clone()));
            while phase.load(Ordering::SeqCst) != FINISH {
                tokio::time::sleep(PUBLISH_EVERY).await;
            }
            return;
        }
    };
    let room = Arc::new(room);
    let performer = {
        let (room, ctx, records) = (room.clone(), ctx.clone(), records.clone());
        tokio::spawn(async move {
            for step in actions {
                let now = turmoil::sim_elapsed().unwrap_or_default();
                tokio::time::sleep(step.at().saturating_sub(now)).await;
                let result = match &step.fault {
                    Fault::Simulate { scenario, .. } => {
                        room.simulate_scenario((*scenario).into()).await.map_err(|e| e.to_string())
                    }
                    Fault::RemoveParticipant { participant } => ctx
                        .server()
                        .remove_participant(ROOM, participant)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    let note =
                        format!("{} at +{:?} did not happen: {e}", step.fault.name(), step.at());
                    records.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index]
                        .notes
                        .push(note);
                }
            }
        })
    };
    let mut counter = 0_u32;
    while phase.load(Ordering::SeqCst) != FINISH {
        if phase.load(Ordering::SeqCst) == RUNNING
            && room.connection_state() != ConnectionState::Disconnected
        {
            counter += 1;
            let at = turmoil::sim_elapsed().unwrap_or_default();
            let sid = room.local_participant().sid();
            let packet = DataPacket {
                payload: format!("{identity}:{counter}").into_bytes(),
                ..Default::default()
            };
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                room.local_participant().publish_data(packet),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    update(&|p| p.published.push(Published { counter, at, sid: sid.clone() }))
                }
                Ok(Err(e)) => {
                    let note = format!("publish #{counter} at +{at:?} refused: {e}");
                    update(&|p| p.notes.push(note.clone()));
                }
                Err(_) => {
                    let note = format!(
                        "publish #{counter} at +{at:?} did not return in {PUBLISH_TIMEOUT:?}"
                    );
                    update(&|p| p.notes.push(note.clone()));
                }
            }
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    performer.abort();
    // Take the state once every event that led to it has been forwarded: the room updates
    // its state before the recorder sees the event.
    let mut seen = 0;
    let state = loop {
        let state = room.connection_state();
        tokio::time::sleep(Duration::from_millis(50)).await;
        while events.try_recv().is_ok() {
            seen += 1;
        }
        if room.connection_state() == state {
            break state;
        }
    };
    let finished_at = turmoil::sim_elapsed().unwrap_or_default();
    let final_sid = room.local_participant().sid();
    update(&|p| {
        p.final_sid = final_sid.clone();
        p.final_state = Some(state);
        p.events_judged = seen;
        p.finished_at = finished_at;
    });
}
