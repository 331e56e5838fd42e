//! Media in the simulation lane: the simulated server answers AddTrack, forwards each
//! publisher's frames to every subscriber behind a key-frame gate, and republishes nothing
//! itself; a scenario's `tracks` run on the sim lane, sampled and judged (invariant 6) as on
//! the real lane. What a user would notice: after a resume and after a full reconnect, the
//! other participant's audio and video come back.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use faultline::client::ClientEvent;
use faultline::flow::{flows, TrackKey};
use faultline::record::RunRecord;
use faultline::scenario::format::Scenario;
use faultline::scenario::run_sim;
use faultline::vocab::TrackSource;

/// alice resumes (a signal reconnect: the server restarts ICE on her subscriber PC, whose
/// video downtracks must lock onto a new key frame), then bob reconnects fully (a new
/// session: his tracks are unpublished with the old one, and he must publish them again).
const SCENARIO: &str = r#"
name = "sim-media-comes-back"
description = "a resume, then a full reconnect, with audio and video both ways"
lanes = ["sim"]
settle = "3s"

[[participant]]
identity = "alice"
tracks = ["audio", "video"]

[[participant]]
identity = "bob"
tracks = ["audio", "video"]

[[fault]]
at = "1s"
target = "alice"
type = "simulate"
scenario = "signal-reconnect"

[[fault]]
at = "6s"
target = "bob"
type = "simulate"
scenario = "full-reconnect"

[[expect]]
type = "reconnected"
participant = "alice"
within = "10s"

[[expect]]
type = "reconnected"
participant = "bob"
within = "10s"

[[expect]]
type = "track-republished"
participant = "bob"

[[expect]]
type = "media-flowing"
from = "alice"
to = "bob"

[[expect]]
type = "media-flowing"
from = "bob"
to = "alice"
"#;

/// When `who` said `Reconnected`, in order.
fn reconnected(record: &RunRecord, who: &str) -> Vec<Duration> {
    record
        .events_of(who)
        .filter(|e| matches!(e.event, ClientEvent::Reconnected))
        .map(|e| e.at)
        .collect()
}

/// How long after `at` frames of `publisher`'s `source` next reached `subscriber`.
fn back_after(
    record: &RunRecord,
    subscriber: &str,
    publisher: &str,
    source: TrackSource,
    at: Duration,
) -> anyhow::Result<Duration> {
    let key = TrackKey { subscriber: subscriber.into(), publisher: publisher.into(), source };
    let all = flows(record);
    let flow = all.get(&key).with_context(|| format!("{key}: never received"))?;
    let back = flow.first_after(at).with_context(|| format!("{key}: nothing after {at:?}"))?;
    Ok(back - at)
}

#[test_log::test]
fn a_resume_and_a_full_reconnect_bring_audio_and_video_back() -> anyhow::Result<()> {
    let path = Path::new("sim-media-comes-back.toml");
    let scenario = Scenario::parse(SCENARIO, path)?;
    let record = run_sim(&scenario, path, 3)?;
    let failed: Vec<_> = record.verdicts.iter().filter(|v| !v.passed).collect();
    ensure!(failed.is_empty(), "failed verdicts: {failed:#?}\n{}", record.summary());

    let alice_back = *reconnected(&record, "alice").first().context("alice resumed")?;
    let bob_back = *reconnected(&record, "bob").first().context("bob reconnected")?;
    // Within a second each: a key-frame round trip after the resume; a republish, a new
    // subscription and a key frame after the full reconnect.
    for (subscriber, publisher, at) in [
        ("alice", "bob", alice_back),
        ("bob", "alice", alice_back),
        ("alice", "bob", bob_back),
        ("bob", "alice", bob_back),
    ] {
        for source in [TrackSource::Microphone, TrackSource::Camera] {
            let gap = back_after(&record, subscriber, publisher, source, at)?;
            ensure!(
                gap <= Duration::from_secs(1),
                "{subscriber} ← {publisher}'s {}: frames came back {gap:?} after +{at:?}\n{}",
                source.name(),
                record.summary()
            );
        }
    }
    // The full reconnect gave bob's tracks new sids: alice holds one live subscription per
    // source of his, the new one.
    let all = flows(&record);
    for source in [TrackSource::Microphone, TrackSource::Camera] {
        let key = TrackKey { subscriber: "alice".into(), publisher: "bob".into(), source };
        let live = &all.get(&key).context("alice receives bob")?.live;
        ensure!(live.len() == 1, "{key}: live subscriptions {live:?}");
    }
    Ok(())
}

/// The same seed gives the same record: every event at the same simulated time, media
/// samples with the same counts. Only the order of one participant's events of one instant
/// may differ: str0m draws media line ids (mids) from OS randomness and faultline-sdk keeps
/// its subscriptions by mid, so the `TrackUnsubscribed`s of a departing publisher come in
/// either order (see `faultline::sim::explore`'s determinism note).
#[test_log::test]
fn media_in_the_simulation_replays_by_seed() -> anyhow::Result<()> {
    let path = Path::new("sim-media-comes-back.toml");
    let scenario = Scenario::parse(SCENARIO, path)?;
    let first = run_sim(&scenario, path, 9)?;
    let second = run_sim(&scenario, path, 9)?;
    let events = |r: &RunRecord| -> Vec<String> {
        let mut all: Vec<String> = r
            .events
            .iter()
            .map(|e| format!("{:>12?} {} {:?}", e.at, e.participant, e.event))
            .collect();
        all.sort();
        all
    };
    let (a, b) = (events(&first), events(&second));
    if let Some(i) = (0..a.len().max(b.len())).find(|i| a.get(*i) != b.get(*i)) {
        anyhow::bail!("two runs of seed 9 differ at event #{i}: {:?} vs {:?}", a.get(i), b.get(i));
    }
    Ok(())
}
