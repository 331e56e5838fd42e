//! [`run_case`]: one [`Case`] in a [`Sim`] — the workload, the faults at their times, and
//! the settling that gives every room the chance to end its episode — recorded as a [`Run`]
//! whose [`RunRecord`] the judge reads like any lane's.
//!
//! The workload: participant `i` joins room [`ROOM`] at `i · 200 ms` and publishes a
//! sequenced reliable packet (`<identity>:<n>` on [`DATA_TOPIC`]) every 500 ms, whatever its
//! state, until told to stop. In a case with [`Case::media`] (or a participant with
//! [`Overrides::tracks`]) it also publishes a synthetic microphone and camera track
//! ([`VIDEO_FPS`]) once everyone has joined ([`TRACKS_AFTER_LAST_JOIN`]), and its host records a [`ClientEvent::Media`] sample
//! of its subscriptions every 100 ms of simulated time, as the real lane's client seam does. Network and server faults are applied between simulation steps;
//! `simulate` and `remove_participant` run in the participant's host at their time.
//!
//! After the last fault the run continues until every room has been `Connected` or
//! `Disconnected` and quiet for a while, at least [`SETTLE`] later (long enough for a
//! half-open link to be noticed by ping timeout); then publishing stops, in-flight data
//! drains for [`DRAIN`], and each room's final state is taken. The run never stops while a
//! room is `Reconnecting` within its episode's bound
//! ([`ParticipantRecord::reconnect_bound`]); one still `Reconnecting` when that bound passes
//! ends the run there, and the judge finds it stuck.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_sdk::{ConnectionState, DataPacket, LocalTrack, ReconnectPolicy, Room, RoomOptions};

use super::{Case, ExploreError};
use crate::client::{ClientEvent, MediaCount, Observed, MEDIA_SAMPLE_EVERY};
use crate::judge::reconnecting_since;
use crate::record::{
    data_payload, FaultRecord, ParticipantRecord, Published, RunRecord, DATA_TOPIC,
};
use crate::scenario::format::Lane;
use crate::sim::schedule::{Fault, Schedule, Step};
use crate::sim::server::ServerConfig;
use crate::sim::{ClientContext, Sim, SERVER_HOST};
use crate::token::TokenSpec;
use crate::vocab::TrackSpec;

/// The room every participant joins.
pub const ROOM: &str = "explore";
/// Participant `i` joins at `i` times this.
pub const JOIN_STAGGER: Duration = Duration::from_millis(200);
/// Tracks are published this long after the last participant's join began — once everyone
/// is in the room, as the real lane publishes them once everyone sees everyone, so each
/// participant sees the others' tracks published as on the real lane.
pub const TRACKS_AFTER_LAST_JOIN: Duration = Duration::from_secs(1);
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
/// The server's ping interval plus ping timeout: the longest a client may take to notice a
/// dead signalling link.
const PING_DETECTION: Duration = Duration::from_secs(20);
/// The frame rate of the simulation's synthetic video. Every frame is packetized,
/// encrypted, sent through turmoil, forwarded and decrypted by real str0m peer connections,
/// so it is what media costs per simulated second; see [`crate::vocab::VIDEO_FPS`] for the
/// real lane's.
pub const VIDEO_FPS: u32 = 30;

const RUNNING: u8 = 0;
const STOP_PUBLISHING: u8 = 1;
const FINISH: u8 = 2;

/// What one participant's workload ran into, beyond what the record says.
#[derive(Debug, Clone, Default)]
pub struct ParticipantRun {
    /// Its identity (and host name).
    pub identity: String,
    /// Why it could not join, if it could not.
    pub join_error: Option<String>,
    /// Things that went wrong in the workload without being violations.
    pub notes: Vec<String>,
}

/// What one participant's host reports while the simulation runs.
#[derive(Debug, Clone)]
struct Host {
    /// Its record: the default options' until the host starts, then its own (with its seed).
    record: ParticipantRecord,
    run: ParticipantRun,
    /// `connection_state()` when the run ended (`None` if it never joined).
    final_state: Option<ConnectionState>,
    /// How many of its recorded events it had received when `final_state` was taken; later
    /// ones (from tearing the room down) are not judged.
    events_judged: usize,
    /// Simulated time when the final state was taken.
    finished_at: Duration,
}

/// A recorded run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The case.
    pub case: Case,
    /// What happened, as every lane records it: each room's events up to its final state,
    /// the schedule's faults, the data published.
    pub record: RunRecord,
    /// Each participant's workload, in identity order.
    pub participants: Vec<ParticipantRun>,
    /// When the faults stopped (the last step, or the last join if later).
    pub faults_stopped: Duration,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl Run {
    /// The trace as text: faults and each room's events up to its final state, in time
    /// order, data compressed to `data <sender>:<n>`, media samples to the moments each
    /// received track started, stopped (no new frame for [`MEDIA_STOP`]) and flowed again.
    pub fn trace_text(&self) -> String {
        use std::fmt::Write as _;
        let mut lines: Vec<(Duration, String)> = self
            .case
            .schedule
            .steps
            .iter()
            .map(|step| (step.at(), format!("FAULT {}", describe(step))))
            .collect();
        for entry in &self.record.events {
            let event = match &entry.event {
                ClientEvent::DataReceived { payload, .. } => {
                    format!("data {}", String::from_utf8_lossy(payload))
                }
                ClientEvent::Media { .. } => continue,
                other => format!("{other:?}"),
            };
            lines.push((entry.at, format!("{:>4} {event}", entry.participant)));
        }
        for (key, flow) in crate::flow::flows(&self.record) {
            let line = |what: &str| {
                format!(
                    "{:>4} media from {}'s {}: {what}",
                    key.subscriber,
                    key.publisher,
                    key.source.name()
                )
            };
            let mut previous: Option<Duration> = None;
            for &at in &flow.advances {
                match previous {
                    None => lines.push((at, line("flowing"))),
                    Some(last) if at - last > MEDIA_STOP => {
                        lines.push((last, line("stopped")));
                        lines.push((at, line("flowing again")));
                    }
                    Some(_) => {}
                }
                previous = Some(at);
            }
            if let Some(last) = previous.filter(|last| self.record.ended - *last > MEDIA_STOP) {
                lines.push((last, line("stopped")));
            }
        }
        lines.sort_by_key(|(at, _)| *at);
        let mut out = String::new();
        for (at, line) in lines {
            let _ = writeln!(out, "  +{:>8.3}s {line}", at.as_secs_f64());
        }
        for (p, run) in self.record.participants.iter().zip(&self.participants) {
            let _ = writeln!(
                out,
                "  {} final state {:?}, {} packets published{}",
                p.identity,
                self.record.final_state(&p.identity),
                p.published.len(),
                run.join_error
                    .as_deref()
                    .map(|e| format!(", join failed: {e}"))
                    .unwrap_or_default()
            );
            for note in &run.notes {
                let _ = writeln!(out, "    note: {note}");
            }
        }
        out
    }
}

fn describe(step: &Step) -> String {
    let mut text = Schedule { steps: vec![step.clone()] }.to_string();
    // "  +1.000s partition …\n" → "partition …"
    text = text.trim().to_owned();
    text.split_once(' ').map(|(_, rest)| rest.to_owned()).unwrap_or(text)
}

/// The schedule's faults as the record shows them: a partition, hold, offline, media, signal,
/// crash or mute from its step to the step that undoes it (repair, release, online,
/// media_heal, signal_heal, restart, the unmute of the same track), everything else an
/// instant. An offline, or a two-way partition between a participant and the server, refuses
/// its connections — unless a hold on that link overlaps it.
fn fault_records(schedule: &Schedule) -> Vec<FaultRecord> {
    let same_link = |x: Option<(&str, &str)>, y: Option<(&str, &str)>| match (x, y) {
        (Some((a, b)), Some((c, d))) => (a, b) == (c, d) || (a, b) == (d, c),
        (x, y) => x.is_none() && y.is_none(),
    };
    let mut out: Vec<(FaultRecord, Option<(&str, &str)>)> = Vec::new();
    for (index, step) in schedule.steps.iter().enumerate() {
        let at = step.at();
        let link = step.fault.link();
        let undone = match step.fault {
            Fault::Repair { .. } => Some("partition"),
            Fault::Release { .. } => Some("hold"),
            Fault::Online { .. } => Some("offline"),
            Fault::MediaHeal { .. } => Some("media"),
            Fault::SignalHeal { .. } => Some("signal"),
            Fault::Restart => Some("crash"),
            Fault::Mute { muted: false, .. } => Some("mute"),
            _ => None,
        };
        let mutes = match step.fault {
            Fault::Mute { track, .. } => Some(track.source()),
            _ => None,
        };
        if let Some(kind) = undone {
            for (f, l) in &mut out {
                let same_place = same_link(*l, link)
                    && f.target.as_deref() == step.fault.participant().or(f.target.as_deref())
                    && f.mutes == mutes;
                if f.kind == kind && f.healed.is_none() && same_place {
                    f.healed = Some(at);
                }
            }
            continue;
        }
        let target = step.fault.participant().or(match link {
            Some((a, b)) if a == SERVER_HOST => Some(b),
            other => other.map(|(a, _)| a),
        });
        let lasts = matches!(
            step.fault,
            Fault::Partition { .. }
                | Fault::Hold { .. }
                | Fault::Crash
                | Fault::Offline { .. }
                | Fault::Media { .. }
                | Fault::Signal { .. }
                | Fault::Mute { muted: true, .. }
        );
        let refuses_connections = matches!(step.fault, Fault::Offline { .. })
            || (matches!(step.fault, Fault::Partition { oneway: false, .. })
                && link.is_some_and(|(a, b)| a == SERVER_HOST || b == SERVER_HOST));
        let record = FaultRecord {
            index,
            kind: step.fault.name(),
            label: describe(step),
            target: target.map(str::to_owned),
            started: at,
            healed: (!lasts).then_some(at),
            refuses_connections,
            mutes,
        };
        out.push((record, link));
    }
    // A hold on the same link while a partition lasts makes new connections wait (turmoil
    // holds the SYN) instead of failing at once: that partition no longer refuses them.
    let holds: Vec<_> = out.iter().filter(|(f, _)| f.kind == "hold").cloned().collect();
    for (f, link) in &mut out {
        let overlaps = |(hold, hold_link): &(FaultRecord, _)| {
            same_link(*hold_link, *link)
                && f.healed.is_none_or(|end| hold.started < end)
                && hold.healed.is_none_or(|end| end > f.started)
        };
        if f.refuses_connections && holds.iter().any(overlaps) {
            f.refuses_connections = false;
        }
    }
    out.into_iter().map(|(f, _)| f).collect()
}

/// Runs `case` and records what happened. Errors only when the case cannot run (a bad
/// schedule, a simulation failure); broken invariants are for [`crate::judge::violations`].
pub fn run_case(case: &Case) -> Result<Run, ExploreError> {
    run_case_with(case, &Overrides::default())
}

/// What a run of a scenario file changes in the explorer's participants, by identity.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// A reconnect policy in place of the default one.
    pub reconnect: BTreeMap<String, ReconnectPolicy>,
    /// A fixed publishing plan in place of the workload's steady publishing.
    pub publish: BTreeMap<String, PublishPlan>,
    /// The lifetime of the participant's token, in simulated time, in place of an hour.
    pub token_ttl: BTreeMap<String, Duration>,
    /// The tracks the participant publishes after joining, in place of the case's
    /// ([`Case::media`]: audio and video, or none).
    pub tracks: BTreeMap<String, Vec<TrackSpec>>,
}

impl Overrides {
    /// What is overridden for `identity`.
    fn of(&self, identity: &str, case: &Case) -> Own {
        let media = if case.media { vec![TrackSpec::Audio, TrackSpec::Video] } else { Vec::new() };
        Own {
            policy: self.reconnect.get(identity).cloned(),
            publish: self.publish.get(identity).copied(),
            token_ttl: self.token_ttl.get(identity).copied(),
            tracks: self.tracks.get(identity).cloned().unwrap_or(media),
            samples_media: case.media || self.tracks.values().any(|t| !t.is_empty()),
        }
    }
}

/// One participant's part of the [`Overrides`].
struct Own {
    policy: Option<ReconnectPolicy>,
    publish: Option<PublishPlan>,
    token_ttl: Option<Duration>,
    tracks: Vec<TrackSpec>,
    /// Whether anyone in the run publishes tracks: then every participant samples what it
    /// receives, publisher or not.
    samples_media: bool,
}

/// Sequenced reliable packets `0..count`, packet `n` published at `start + n · every` (or
/// as soon as the previous call returned, if later), whatever the room's state — as the real
/// lane's `publish` does; the first refused publish ends the plan.
#[derive(Debug, Clone, Copy)]
pub struct PublishPlan {
    /// Simulated time of packet 0.
    pub start: Duration,
    /// Between packets.
    pub every: Duration,
    /// How many.
    pub count: u32,
}

/// [`run_case`], with `overrides` for some participants.
pub fn run_case_with(case: &Case, overrides: &Overrides) -> Result<Run, ExploreError> {
    let policies = &overrides.reconnect;
    let identities = case.identities();
    if case.participants == 0 || case.participants > super::generate::MAX_PARTICIPANTS {
        return Err(ExploreError::Participants {
            got: case.participants,
            max: super::generate::MAX_PARTICIPANTS,
        });
    }
    if !case.names.is_empty() {
        let distinct: std::collections::BTreeSet<&String> = case.names.iter().collect();
        if case.names.len() != case.participants
            || distinct.len() != case.names.len()
            || distinct.iter().any(|name| *name == SERVER_HOST)
        {
            return Err(ExploreError::Names {
                names: case.names.clone(),
                participants: case.participants,
            });
        }
    }
    case.schedule.validate(&identities)?;
    let server = ServerConfig { planted_bug: case.planted_bug, ..ServerConfig::default() };
    let mut sim = Sim::with(case.seed, server, |_| {});
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let defaults = RoomOptions::default();
    let options_of = |identity: &str| RoomOptions {
        reconnect: policies.get(identity).cloned().unwrap_or_default(),
        ..RoomOptions::default()
    };
    let hosts: Arc<Mutex<Vec<Host>>> = Arc::new(Mutex::new(
        identities
            .iter()
            .map(|identity| Host {
                record: ParticipantRecord::faultline(identity, &options_of(identity)),
                run: ParticipantRun { identity: identity.clone(), ..Default::default() },
                final_state: None,
                events_judged: 0,
                finished_at: Duration::ZERO,
            })
            .collect(),
    ));
    let lock = || hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let identities_len = identities.len();
    for (index, identity) in identities.iter().enumerate() {
        let actions = case.schedule.client_actions(identity);
        let (phase, hosts) = (phase.clone(), hosts.clone());
        let own = overrides.of(identity, case);
        sim.client(identity, move |ctx| async move {
            participant(ctx, index, identities_len, own, actions, phase, hosts).await;
            Ok::<_, std::convert::Infallible>(())
        });
    }
    let trace = sim.trace();
    for step in &case.schedule.steps {
        sim.run_until(step.at())?;
        sim.apply(&step.fault);
    }
    let plans_end = overrides
        .publish
        .values()
        .map(|p| p.start + p.every * p.count.saturating_sub(1))
        .max()
        .unwrap_or_default();
    let faults_stopped =
        case.schedule.last_at().max(JOIN_STAGGER * case.participants as u32).max(plans_end);
    let longest = lock().iter().map(|h| h.record.reconnect_bound).max().unwrap_or_default();
    // Noticing a dead link (ping timeout, or the peer connection failing), then an episode.
    let cap = faults_stopped + PING_DETECTION.max(defaults.pc_failed_after) + longest;
    // Runs until every room is settled, no earlier than `earliest`; or until `until` has
    // passed with no episode that may still end within its bound; or until an episode's bound
    // passes (stuck: true). Never past `until` plus the longest bound.
    let watch = |sim: &mut Sim<'_>, earliest: Duration, until: Duration| loop {
        let now = sim.elapsed();
        let entries = trace.entries();
        let deadlines: Vec<Duration> = lock()
            .iter()
            .filter_map(|h| {
                reconnecting_since(&entries, &h.record.identity)
                    .map(|began| began + h.record.reconnect_bound)
            })
            .collect();
        if deadlines.iter().any(|deadline| now >= *deadline) {
            return Ok::<_, ExploreError>(true);
        }
        let last_lifecycle =
            entries.iter().filter(|e| e.event.lifecycle().is_some()).map(|e| e.at).max();
        let settled = now >= earliest
            && deadlines.is_empty()
            && last_lifecycle.is_none_or(|at| now >= at + QUIET);
        if settled || (now >= until && deadlines.is_empty()) || now >= until + longest {
            return Ok(false);
        }
        advance(sim, POLL)?;
    };
    let stuck = watch(&mut sim, faults_stopped + SETTLE, cap)?;
    if !stuck {
        phase.store(STOP_PUBLISHING, Ordering::SeqCst);
        let drained = sim.elapsed() + DRAIN;
        watch(&mut sim, drained, cap + DRAIN)?;
    }
    phase.store(FINISH, Ordering::SeqCst);
    let finishing = sim.elapsed();
    let trace = sim.run()?;
    let hosts = lock().clone();
    let simulated = hosts.iter().map(|h| h.finished_at).fold(finishing, Duration::max);
    // Events after a room's final state come from tearing it down: not judged. Media
    // samples are not room events: they are kept up to the moment the final state was taken.
    let mut left: BTreeMap<&str, (usize, Duration)> = hosts
        .iter()
        .map(|h| (h.record.identity.as_str(), (h.events_judged, h.finished_at)))
        .collect();
    let events = trace
        .entries()
        .into_iter()
        .filter(|e| match (left.get_mut(e.participant.as_str()), &e.event) {
            (Some((_, until)), ClientEvent::Media { .. }) => e.at <= *until,
            (Some((n, _)), _) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .collect();
    let record = RunRecord {
        scenario: format!("explore case {}", case.seed),
        description: String::new(),
        file: std::path::PathBuf::new(),
        lane: Lane::Sim,
        seed: case.seed,
        room: ROOM.into(),
        participants: hosts.iter().map(|h| h.record.clone()).collect(),
        timeline_zero: Duration::ZERO,
        ended: simulated,
        faults: fault_records(&case.schedule),
        events,
        final_states: hosts
            .iter()
            .filter_map(|h| Some((h.record.identity.clone(), h.final_state?)))
            .collect(),
        verdicts: Vec::new(),
        logs: Vec::new(),
        cluster: Vec::new(),
    };
    Ok(Run {
        case: case.clone(),
        record,
        participants: hosts.into_iter().map(|h| h.run).collect(),
        faults_stopped,
        simulated,
    })
}

/// Publishes sequenced reliable packet `seq` from `identity`, waiting at most `timeout`
/// (a call made during a reconnect returns with the episode); what was sent, or why not.
async fn publish_sequenced(
    room: &faultline_sdk::Room,
    identity: &str,
    seq: u32,
    timeout: Duration,
) -> Result<Published, String> {
    let at = turmoil::sim_elapsed().unwrap_or_default();
    let sid = room.local_participant().sid();
    let packet = DataPacket {
        payload: data_payload(identity, seq),
        topic: Some(DATA_TOPIC.into()),
        ..Default::default()
    };
    match tokio::time::timeout(timeout, room.local_participant().publish_data(packet)).await {
        Ok(Ok(())) => Ok(Published { seq, at, sid }),
        Ok(Err(e)) => Err(format!("publish #{seq} at +{at:?} refused: {e}")),
        Err(_) => Err(format!("publish #{seq} at +{at:?} did not return in {timeout:?}")),
    }
}

/// Publishes `tracks` from `room` (each in its own task: a publish returns once the server
/// accepted it, which a fault may delay until the room is back); a refusal is noted.
fn publish_tracks(
    room: &Arc<Room>,
    tracks: &[TrackSpec],
    hosts: &Arc<Mutex<Vec<Host>>>,
    index: usize,
) {
    for track in tracks {
        let local = match track {
            TrackSpec::Audio => LocalTrack::audio("microphone"),
            TrackSpec::Video => LocalTrack::video("camera", VIDEO_FPS),
        };
        let (room, hosts) = (room.clone(), hosts.clone());
        tokio::spawn(async move {
            if let Err(e) = room.local_participant().publish_track(local).await {
                let at = turmoil::sim_elapsed().unwrap_or_default();
                hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index]
                    .run
                    .notes
                    .push(format!("publishing a track failed at +{at:?}: {e}"));
            }
        });
    }
}

/// Records a [`ClientEvent::Media`] sample of `room`'s subscriptions every
/// [`MEDIA_SAMPLE_EVERY`] of simulated time while it has any (as the real lane's client seam
/// does), until the room is disconnected or the run finishes.
async fn sample_media(room: std::sync::Weak<Room>, ctx: ClientContext, phase: Arc<AtomicU8>) {
    let mut tick = tokio::time::interval(MEDIA_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while phase.load(Ordering::SeqCst) != FINISH {
        tick.tick().await;
        let Some(room) = room.upgrade() else { return };
        // The real lane's samples end with the room's events.
        if room.connection_state() == ConnectionState::Disconnected {
            return;
        }
        let tracks = MediaCount::sample(&room);
        if !tracks.is_empty() {
            ctx.record(ctx.host(), ClientEvent::Media { tracks });
        }
    }
}

/// How long a received track may go without new frames before the trace text says it
/// stopped (three samples).
const MEDIA_STOP: Duration = Duration::from_millis(300);

/// Runs `sim` for `step` more simulated time.
fn advance(sim: &mut Sim<'_>, step: Duration) -> Result<(), ExploreError> {
    let target = sim.elapsed() + step;
    sim.run_until(target)?;
    Ok(())
}

/// One participant's host: join, run its scheduled actions, publish until told to stop,
/// then record its final state.
async fn participant(
    ctx: ClientContext,
    index: usize,
    participants: usize,
    own: Own,
    actions: Vec<Step>,
    phase: Arc<AtomicU8>,
    hosts: Arc<Mutex<Vec<Host>>>,
) {
    let update = |f: &dyn Fn(&mut Host)| {
        let mut hosts = hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut hosts[index]);
    };
    let identity = ctx.host().to_owned();
    let mut options = ctx.options();
    if let Some(policy) = own.policy {
        options.reconnect = policy;
    }
    let record = ParticipantRecord::faultline(&identity, &options);
    // A publish returns once its packet is sent; one that meets a reconnect waits for the
    // episode's end, which comes within the participant's bound.
    let publish_timeout = record.reconnect_bound;
    update(&|h| h.record = record.clone());
    tokio::time::sleep(JOIN_STAGGER * index as u32).await;
    let mut token = TokenSpec::join(ROOM, &identity);
    if let Some(ttl) = own.token_ttl {
        token = token.with_ttl(ttl);
    }
    let (room, mut events) = match ctx.connect_as(&token, options).await {
        Ok(joined) => joined,
        Err(e) => {
            let error = e.to_string();
            update(&|h| h.run.join_error = Some(error.clone()));
            while phase.load(Ordering::SeqCst) != FINISH {
                tokio::time::sleep(PUBLISH_EVERY).await;
            }
            return;
        }
    };
    let joined_sid = room.local_participant().sid();
    update(&|h| h.record.joined_sid = joined_sid.clone());
    let room = Arc::new(room);
    if !own.tracks.is_empty() {
        let sources: Vec<_> = own.tracks.iter().map(|t| t.source()).collect();
        update(&|h| h.record.tracks = sources.clone());
        let (publisher, tracks, hosts) = (room.clone(), own.tracks.clone(), hosts.clone());
        let at = JOIN_STAGGER * participants.saturating_sub(1) as u32 + TRACKS_AFTER_LAST_JOIN;
        tokio::spawn(async move {
            let now = turmoil::sim_elapsed().unwrap_or_default();
            tokio::time::sleep(at.saturating_sub(now)).await;
            publish_tracks(&publisher, &tracks, &hosts, index);
        });
    }
    let sampler = own
        .samples_media
        .then(|| tokio::spawn(sample_media(Arc::downgrade(&room), ctx.clone(), phase.clone())));
    let performer = {
        let (room, ctx, hosts) = (room.clone(), ctx.clone(), hosts.clone());
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
                    Fault::Mute { track, muted, .. } => room
                        .local_participant()
                        .set_track_muted(track.source(), *muted)
                        .await
                        .map_err(|e| e.to_string()),
                    Fault::PublishTrack { track, .. } => {
                        // As the real lane: the publish may wait for an episode to end
                        // while the timeline goes on.
                        hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index]
                            .record
                            .tracks
                            .push(track.source());
                        publish_tracks(&room, &[*track], &hosts, index);
                        Ok(())
                    }
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    let note =
                        format!("{} at +{:?} did not happen: {e}", step.fault.name(), step.at());
                    hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index]
                        .run
                        .notes
                        .push(note);
                }
            }
        })
    };
    let mut counter = 0_u32;
    if let Some(plan) = own.publish {
        for n in 0..plan.count {
            let now = turmoil::sim_elapsed().unwrap_or_default();
            tokio::time::sleep((plan.start + plan.every * n).saturating_sub(now)).await;
            if phase.load(Ordering::SeqCst) == FINISH {
                break;
            }
            match publish_sequenced(&room, &identity, n, publish_timeout).await {
                Ok(sent) => update(&|h| h.record.published.push(sent.clone())),
                Err(why) => {
                    update(&|h| h.run.notes.push(format!("{why}; the plan stops")));
                    break;
                }
            }
        }
    }
    while phase.load(Ordering::SeqCst) != FINISH {
        if own.publish.is_none()
            && phase.load(Ordering::SeqCst) == RUNNING
            && room.connection_state() == ConnectionState::Connected
        {
            counter += 1;
            match publish_sequenced(&room, &identity, counter, publish_timeout).await {
                Ok(sent) => update(&|h| h.record.published.push(sent.clone())),
                Err(why) => update(&|h| h.run.notes.push(why.clone())),
            }
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    performer.abort();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    // Take the state once every event that led to it has been forwarded: the room updates
    // its state before the recorder sees the event. Only the events the trace records (those
    // the shared vocabulary carries) count.
    let mut seen = 0;
    let state = loop {
        let state = room.connection_state();
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(event) = events.try_recv() {
            if ClientEvent::from_room_event(&event).is_some() {
                seen += 1;
            }
        }
        if room.connection_state() == state {
            break state;
        }
    };
    let finished_at = turmoil::sim_elapsed().unwrap_or_default();
    let final_sid = room.local_participant().sid();
    update(&|h| {
        h.record.final_sid = final_sid.clone();
        h.final_state = Some(state);
        h.events_judged = seen;
        h.finished_at = finished_at;
    });
}
