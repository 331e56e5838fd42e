//! [`generate`]: a random [`Case`] from a seed — one to four fault windows (a fault and,
//! usually, its undoing) starting between 2 s and 22 s, on random participants' links to the
//! server, the server itself, or the participants' rooms — and, in a share of cases, media
//! (every participant publishes audio and video; in half of those one participant also mutes
//! a track for a while, or for good, as a user does). Whether a case has media, and the mute,
//! are drawn from their own generator, so a seed's faults are the same whatever the share.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::Case;
use crate::sim::schedule::{Fault, Schedule, SimulateKind, Step};
use crate::sim::server::PlantedBug;
use crate::sim::SERVER_HOST;
use crate::vocab::TrackSpec;

/// The most participants a case may have.
pub const MAX_PARTICIPANTS: usize = 8;
/// Faults start no earlier than this (every participant has joined by then).
const FIRST_FAULT: Duration = Duration::from_secs(2);
/// …and no later than this much after.
const FAULT_SPAN: Duration = Duration::from_secs(20);

/// Mixed into a case's seed to draw whether it has media.
const MEDIA_STREAM: u64 = 0x6d65_6469_6121;

/// A random case: `participants` participants, faults drawn with `seed` (which is also the
/// simulation's seed). `fail_rate` faults only with `flaky_links`; media in about
/// `media_percent` % of cases.
pub fn generate(
    seed: u64,
    participants: usize,
    flaky_links: bool,
    planted_bug: Option<PlantedBug>,
    media_percent: u8,
) -> Case {
    let mut media_rng = SmallRng::seed_from_u64(seed ^ MEDIA_STREAM);
    let media = media_rng.random_range(0..100_u8) < media_percent;
    let mut rng = SmallRng::seed_from_u64(seed);
    let windows = rng.random_range(1..=4);
    let mut steps = Vec::new();
    for _ in 0..windows {
        let at =
            FIRST_FAULT.as_millis() as u64 + rng.random_range(0..FAULT_SPAN.as_millis() as u64);
        let who = format!("p{}", rng.random_range(0..participants.max(1)));
        let lasts = |rng: &mut SmallRng, max_ms: u64| at + rng.random_range(200..=max_ms);
        let heals = |rng: &mut SmallRng| rng.random_bool(0.9);
        let link = (who.clone(), SERVER_HOST.to_owned());
        let kinds = if flaky_links { 8 } else { 7 };
        match rng.random_range(0..kinds) {
            0 => {
                let oneway = rng.random_bool(0.3);
                let (a, b) = if oneway && rng.random_bool(0.5) {
                    (link.1.clone(), link.0.clone())
                } else {
                    link.clone()
                };
                steps.push(Step {
                    at_ms: at,
                    fault: Fault::Partition { a: a.clone(), b: b.clone(), oneway },
                });
                if heals(&mut rng) {
                    let end = lasts(&mut rng, 20_000);
                    steps.push(Step { at_ms: end, fault: Fault::Repair { a, b, oneway } });
                }
            }
            1 => {
                let (a, b) = link;
                steps.push(Step { at_ms: at, fault: Fault::Hold { a: a.clone(), b: b.clone() } });
                if heals(&mut rng) {
                    let end = lasts(&mut rng, 12_000);
                    steps.push(Step { at_ms: end, fault: Fault::Release { a, b } });
                }
            }
            2 => {
                let (a, b) = link;
                let ms = [50, 200, 1_000, 3_000, 8_000][rng.random_range(0..5)];
                steps.push(Step {
                    at_ms: at,
                    fault: Fault::Latency { a: a.clone(), b: b.clone(), ms },
                });
                let end = lasts(&mut rng, 15_000);
                steps.push(Step { at_ms: end, fault: Fault::Latency { a, b, ms: 1 } });
            }
            3 => {
                steps.push(Step { at_ms: at, fault: Fault::Crash });
                if heals(&mut rng) {
                    steps.push(Step { at_ms: lasts(&mut rng, 12_000), fault: Fault::Restart });
                }
            }
            4 => steps.push(Step { at_ms: at, fault: Fault::Restart }),
            5 => {
                steps.push(Step { at_ms: at, fault: Fault::RemoveParticipant { participant: who } })
            }
            6 => {
                let scenario = match rng.random_range(0..12) {
                    0..=2 => SimulateKind::SignalReconnect,
                    3..=4 => SimulateKind::FullReconnect,
                    5 => SimulateKind::DisconnectSignalOnResume,
                    6 => SimulateKind::DisconnectSignalOnResumeNoMessages,
                    7 => SimulateKind::NodeFailure,
                    8 => SimulateKind::Migration,
                    9 => SimulateKind::ServerLeave,
                    10 => SimulateKind::ForceTcp,
                    _ => SimulateKind::Speaker { secs: rng.random_range(1..5) },
                };
                steps.push(Step {
                    at_ms: at,
                    fault: Fault::Simulate { participant: who, scenario },
                });
            }
            _ => {
                let (a, b) = link;
                let rate = [0.01, 0.05, 0.2][rng.random_range(0..3)];
                steps.push(Step {
                    at_ms: at,
                    fault: Fault::FailRate { a: a.clone(), b: b.clone(), rate },
                });
                let end = lasts(&mut rng, 10_000);
                steps.push(Step { at_ms: end, fault: Fault::FailRate { a, b, rate: 0.0 } });
            }
        }
    }
    if media && media_rng.random_bool(0.5) {
        steps.extend(user_mute(&mut media_rng, participants));
    }
    Case {
        seed,
        participants,
        names: Vec::new(),
        planted_bug,
        media,
        schedule: Schedule::new(steps),
    }
}

/// A participant mutes its microphone or camera somewhere in the fault span and, usually,
/// unmutes it up to 10 s later.
fn user_mute(rng: &mut SmallRng, participants: usize) -> Vec<Step> {
    let participant = format!("p{}", rng.random_range(0..participants.max(1)));
    let track = if rng.random_bool(0.5) { TrackSpec::Audio } else { TrackSpec::Video };
    let at = FIRST_FAULT.as_millis() as u64 + rng.random_range(0..FAULT_SPAN.as_millis() as u64);
    let mute = |muted| Fault::Mute { participant: participant.clone(), track, muted };
    let mut steps = vec![Step { at_ms: at, fault: mute(true) }];
    if rng.random_bool(0.8) {
        steps.push(Step { at_ms: at + rng.random_range(200..=10_000), fault: mute(false) });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_generates_the_same_valid_case() {
        for seed in 0..200 {
            let case = generate(seed, 3, true, None, 50);
            assert_eq!(case, generate(seed, 3, true, None, 50));
            let without = generate(seed, 3, true, None, 0);
            let faults = |s: &Schedule| {
                let mut steps = s.steps.clone();
                steps.retain(|step| !matches!(step.fault, Fault::Mute { .. }));
                steps
            };
            assert_eq!(faults(&case.schedule), without.schedule.steps, "media adds only mutes");
            assert!(without.schedule.steps.iter().all(|s| !matches!(s.fault, Fault::Mute { .. })));
            assert!(!without.media && generate(seed, 3, true, None, 100).media);
            assert!(!case.schedule.steps.is_empty());
            let valid = case.schedule.validate(&case.identities());
            assert!(valid.is_ok(), "seed {seed}: {valid:?}\n{}", case.schedule);
        }
        assert_ne!(generate(1, 3, false, None, 0), generate(2, 3, false, None, 0));
        let with_media = (0..200).filter(|s| generate(*s, 2, false, None, 50).media).count();
        assert!((60..140).contains(&with_media), "{with_media} of 200 cases have media");
    }
}
