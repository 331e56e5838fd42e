//! Running a scenario on the sim lane: the scenario becomes a [`Case`] of the simulation's
//! explorer ([`crate::sim::explore::run_case_with`]) — same seed, one simulated host per
//! participant named by its identity, the faults as a [`Schedule`] — and the explorer's record
//! of the run becomes the scenario's [`RunRecord`] (its faults as the file wrote them), judged
//! exactly as on the real lane.
//!
//! The explorer's workload is fixed: the `i`-th participant of the file joins at `i · 200 ms`
//! with the default room options (and the file's reconnect policy) and publishes its own
//! sequenced reliable data (so invariant 5 is judged); the run settles at least 25 simulated
//! seconds after the last fault, and until no room has changed state for 3 s. The timeline's
//! zero ("everyone connected") is put [`LEAD`] after the last join. What the lane can do:
//!
//! | fault | sim lane |
//! |---|---|
//! | `partition` | `offline` at the start, `online` at the heal: the participant's socket wrapper (the real lane's `FaultyNetwork`) holds its signalling streams, refuses new connections and drops its media both ways — what the real lane's paused proxy and media partition do |
//! | `media` | `media` at the start, `media_heal` at the heal: loss and/or delay in the participant's socket wrapper, as on the real lane |
//! | `signal-proxy` | `signal` at the start, `signal_heal` at the heal, in the participant's socket wrapper: `kill` resets its streams and refuses new connections, `black-hole` passes nothing (streams reset at the heal), `pause` holds, `refuse-new` refuses — what the real lane's killable proxy does; `throttle` is refused |
//! | `server-kill` | `crash` of the server host; with `for`, `restart` at the heal |
//! | `remove-participant` | the simulated server's RemoveParticipant |
//! | `simulate` | `Room::simulate_scenario` in the participant's host |
//! | `mute` | `LocalParticipant::set_track_muted` in the participant's host; with `for`, unmuted at the end |
//! | `publish-track` | `LocalParticipant::publish_track` in the participant's host (it may wait for an episode to end while the timeline goes on, as on the real lane) |
//!
//! A participant's `tracks` — a synthetic microphone and a camera at
//! [`crate::sim::explore::VIDEO_FPS`], forwarded by the simulated server — are published
//! once everyone has joined ([`crate::sim::explore::TRACKS_AFTER_LAST_JOIN`] after the last
//! join began), as the real lane publishes them once everyone sees everyone; and its
//! subscriptions are sampled every 100 ms of simulated time into `Media` events, as on the
//! real lane. The real lane starts the timeline once every subscriber receives frames of
//! every track; the simulation's times are fixed before it runs, so instead the run fails,
//! as the real lane's wait does, if some track delivered no frame by the timeline's zero.
//!
//! A participant's `reconnect` overrides apply as on the real lane, its `token_ttl` is the
//! lifetime of its token in simulated time (checked by the simulated server as livekit-server
//! checks it, a minute's leeway included), and its `publish` replaces its workload: packets
//! `0..count` from the timeline's zero, whatever its state, as on the real lane (so
//! `data-delivered` is judged the same way). Anything else — a throttle, toxics, network
//! changes, `delete-room`, `close` — is refused before anything runs, naming the file and what
//! to do. A network change cannot be expressed: turmoil gives a host one address, and
//! faultline-sdk recognises a new network by its signalling socket's new local address
//! (`PeerConnection::move_if_network_changed`), so in the simulation the old sockets would
//! die with no new address to move to — a different client behaviour, not the same one.

use std::path::Path;
use std::time::Duration;

use super::format::{Fault, Lane, ProxyMode, Scenario};
use super::lane::{label, lanes, RunError};
use crate::judge;
use crate::record::{FaultRecord, RunRecord};
use crate::sim::explore::{run_case_with, Case, Overrides, PublishPlan, JOIN_STAGGER};
use crate::sim::schedule::{self, Schedule, Step};

/// How long after the last participant's join the timeline starts.
pub const LEAD: Duration = Duration::from_secs(2);

/// Checks, before anything runs, that the sim lane can run `scenario`.
pub fn check_sim_lane(scenario: &Scenario, file: &Path) -> Result<(), RunError> {
    let unsupported = |index: usize, kind: &'static str, why: String| RunError::Unsupported {
        file: file.to_owned(),
        index,
        kind,
        lane: Lane::Sim,
        why,
    };
    if !scenario.lanes.contains(&Lane::Sim) {
        return Err(RunError::LaneNotListed {
            file: file.to_owned(),
            scenario: scenario.name.clone(),
            lane: Lane::Sim,
            listed: lanes(scenario),
        });
    }
    if scenario.server.is_some() {
        return Err(RunError::SimServer { file: file.to_owned() });
    }
    for p in &scenario.participants {
        let what = if !p.sdk.in_process() {
            Some("an SDK other than faultline (the simulation runs faultline-sdk only)")
        } else if p.firewall.is_some() {
            Some("a `firewall` (the simulation's links drop and delay packets only)")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(RunError::SimParticipant {
                file: file.to_owned(),
                identity: p.identity.get_ref().clone(),
                what,
            });
        }
    }
    for (index, step) in scenario.faults.iter().enumerate() {
        match &step.fault {
            Fault::Media(media) if media.needs_emulator() => {
                return Err(unsupported(
                    index,
                    "media",
                    format!(
                        "the simulation's links drop and delay packets only, and this one asks \
                         for more ({}); run it with `--lane real` (the link emulator), or list \
                         only \"real\" in the scenario's `lanes`",
                        media.describe()
                    ),
                ))
            }
            Fault::Partition {}
            | Fault::Media(_)
            | Fault::SignalProxy {
                mode:
                    ProxyMode::Kill | ProxyMode::BlackHole | ProxyMode::Pause | ProxyMode::RefuseNew,
                ..
            }
            | Fault::ServerKill {}
            | Fault::RemoveParticipant {}
            | Fault::Simulate { .. }
            | Fault::Mute { .. }
            | Fault::PublishTrack { .. } => {}
            other => {
                return Err(unsupported(
                    index,
                    other.kind(),
                    "the simulation has no such fault (it can do partition, media, signal-proxy \
                     other than throttle, server-kill, remove-participant, simulate, mute and \
                     publish-track); run the scenario with `--lane real`, or list only \"real\" \
                     in its `lanes`"
                        .into(),
                ))
            }
        }
    }
    Ok(())
}

/// Runs `scenario` (read from `file`) in the simulation with `seed` and judges it. Blocking:
/// the simulation runs on the calling thread (call it from `spawn_blocking` in async code).
pub fn run_sim(scenario: &Scenario, file: &Path, seed: u64) -> Result<RunRecord, RunError> {
    check_sim_lane(scenario, file)?;
    let identities: Vec<String> =
        scenario.participants.iter().map(|p| p.identity.get_ref().clone()).collect();
    let zero = JOIN_STAGGER * identities.len().saturating_sub(1) as u32 + LEAD;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut steps = Vec::new();
    let mut faults = Vec::new();
    for (index, step) in scenario.faults.iter().enumerate() {
        let target = step
            .target
            .as_ref()
            .map(|t| t.get_ref().clone())
            .or_else(|| step.fault.needs_target().then(|| identities[0].clone()));
        let who = target.clone().unwrap_or_default();
        let start = zero + step.at;
        let end = step.duration.filter(|_| !step.fault.is_instant()).map(|d| start + d);
        let (begin, heal) = match &step.fault {
            Fault::Partition {} => (
                schedule::Fault::Offline { participant: who.clone() },
                Some(schedule::Fault::Online { participant: who.clone() }),
            ),
            Fault::Media(media) => (
                schedule::Fault::Media {
                    participant: who.clone(),
                    direction: media.direction,
                    loss_percent: media.loss_percent,
                    delay_ms: media.delay.map(ms),
                },
                Some(schedule::Fault::MediaHeal { participant: who.clone() }),
            ),
            Fault::SignalProxy { mode, .. } => (
                schedule::Fault::Signal { participant: who.clone(), mode: *mode },
                Some(schedule::Fault::SignalHeal { participant: who.clone() }),
            ),
            Fault::ServerKill {} => (schedule::Fault::Crash, Some(schedule::Fault::Restart)),
            Fault::RemoveParticipant {} => {
                (schedule::Fault::RemoveParticipant { participant: who.clone() }, None)
            }
            Fault::Simulate { scenario: kind } => {
                (schedule::Fault::Simulate { participant: who.clone(), scenario: *kind }, None)
            }
            Fault::Mute { track } => {
                let mute = |muted| schedule::Fault::Mute {
                    participant: who.clone(),
                    track: *track,
                    muted,
                };
                (mute(true), Some(mute(false)))
            }
            Fault::PublishTrack { track } => {
                (schedule::Fault::PublishTrack { participant: who.clone(), track: *track }, None)
            }
            _ => unreachable!("check_sim_lane refused it"),
        };
        steps.push(Step { at_ms: ms(start), fault: begin });
        if let (Some(heal), Some(end)) = (heal, end) {
            steps.push(Step { at_ms: ms(end), fault: heal });
        }
        faults.push(FaultRecord {
            index,
            kind: step.fault.kind(),
            label: label(step),
            target,
            started: start,
            healed: if step.fault.is_instant() { Some(start) } else { end },
            // As the real lane judges it (see `FaultRecord::refuses_connections`).
            refuses_connections: step.fault == Fault::Partition {},
            mutes: step.fault.mutes(),
        });
    }
    let case = Case {
        seed,
        participants: identities.len(),
        names: identities.clone(),
        planted_bug: None,
        media: false,
        schedule: Schedule::new(steps),
    };
    let mut overrides = Overrides::default();
    for p in &scenario.participants {
        let identity = p.identity.get_ref();
        if p.reconnect.is_set() {
            overrides.reconnect.insert(identity.clone(), p.reconnect.policy());
        }
        if let Some(publish) = &p.publish {
            let plan = PublishPlan { start: zero, every: publish.every, count: publish.count };
            overrides.publish.insert(identity.clone(), plan);
        }
        if let Some(ttl) = p.token_ttl {
            overrides.token_ttl.insert(identity.clone(), ttl);
        }
        overrides.tracks.insert(identity.clone(), p.tracks.clone());
    }
    let run = run_case_with(&case, &overrides).map_err(|e| RunError::Sim(e.to_string()))?;
    if let Some((p, why)) = run.participants.iter().find_map(|p| Some((p, p.join_error.as_ref()?)))
    {
        return Err(RunError::Join {
            identity: p.identity.clone(),
            room: crate::sim::explore::ROOM.into(),
            why: why.clone(),
            log: "(the simulation keeps no log; re-run with RUST_LOG=debug)".into(),
        });
    }
    if let Some(why) = media_missing_at(scenario, &run.record, zero) {
        return Err(RunError::Join {
            identity: why.0,
            room: crate::sim::explore::ROOM.into(),
            why: why.1,
            log: "(the simulation keeps no log; re-run with RUST_LOG=debug)".into(),
        });
    }
    let mut record = run.record;
    record.scenario = scenario.name.clone();
    record.description = scenario.description.clone();
    record.file = file.to_owned();
    record.timeline_zero = zero;
    record.faults = faults;
    record.verdicts = judge::judge(scenario, &record);
    Ok(record)
}

/// The first (subscriber, why) for which a publisher's track had delivered no frame by
/// `zero` — what the real lane's wait for media before the timeline refuses.
fn media_missing_at(
    scenario: &Scenario,
    record: &crate::record::RunRecord,
    zero: Duration,
) -> Option<(String, String)> {
    use crate::client::ClientEvent;
    for publisher in &scenario.participants {
        let from = publisher.identity.get_ref();
        for track in &publisher.tracks {
            let source = track.source();
            for subscriber in &scenario.participants {
                let to = subscriber.identity.get_ref();
                let received = record.events_of(to).any(|e| {
                    e.at <= zero
                        && matches!(&e.event, ClientEvent::Media { tracks } if tracks
                            .iter()
                            .any(|t| t.from == *from && t.source == source && t.frames > 0))
                });
                if to != from && !received {
                    return Some((
                        to.clone(),
                        format!(
                            "{to} received no frame of {from}'s {} track by the timeline's zero \
                             ({:.1} s simulated)",
                            source.name(),
                            zero.as_secs_f64()
                        ),
                    ));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> String {
        let scenario = Scenario::parse(text, Path::new("s.toml")).expect("valid");
        match check_sim_lane(&scenario, Path::new("s.toml")) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    const ONE: &str = "name = \"t\"\n[[participant]]\nidentity = \"a\"\n";

    #[test]
    fn what_the_simulation_cannot_do_is_refused_naming_file_and_fault() {
        let toxic = format!(
            "{ONE}[[fault]]\nat = \"1s\"\ntype = \"toxic\"\ntoxic = {{ kind = \"latency\", latency = \"1s\" }}\n"
        );
        let e = check(&toxic);
        assert!(
            e.starts_with("s.toml: fault #0 (`type = \"toxic\"`): the sim lane cannot do it"),
            "{e}"
        );
        assert!(e.contains("--lane real"), "{e}");
        let js = ONE.replace("identity = \"a\"\n", "identity = \"a\"\nsdk = \"js\"\n");
        let e = check(&js);
        assert!(e.contains("participant `a` has an SDK other than faultline"), "{e}");
        let real_only = ONE.replace("name = \"t\"\n", "name = \"t\"\nlanes = [\"real\"]\n");
        assert!(check(&real_only).contains("does not list the sim lane"));
    }

    #[test]
    fn what_the_simulation_can_do_passes_the_check() {
        let policy = ONE.replace(
            "identity = \"a\"\n",
            "identity = \"a\"\nreconnect = { attempts = 2 }\ntoken_ttl = \"3s\"\n",
        );
        let text = format!(
            "{policy}[[fault]]\nat = \"1s\"\nfor = \"2s\"\ntype = \"partition\"\n\
             [[fault]]\nat = \"4s\"\ntype = \"simulate\"\nscenario = \"migration\"\n\
             [[fault]]\nat = \"6s\"\nfor = \"1s\"\ntype = \"server-kill\"\n"
        );
        assert_eq!(check(&text), "ok");
    }
}
