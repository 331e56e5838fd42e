//! The seed's reconnection checks (`/work/shared/seed/reconnection_test.rs.txt`) in the
//! simulation lane: resume, full reconnect, a resume that fails and escalates, and a
//! partition that never heals exhausting the default reconnect policy. Plus replay: the
//! same seed gives the same event trace.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use faultline::event_log::EventLog;
use faultline::record::EventRecord;
use faultline::sim::{ClientContext, Sim};
use faultline_sdk::{ConnectionState, ReconnectPolicy, RoomEvent, SimulateScenario};
use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Generous bound on one recovery, in simulated time.
const RECOVERY: Duration = Duration::from_secs(30);

/// Joins, triggers `scenario`, and expects `Reconnecting` then `Reconnected`, back to
/// `Connected`. Returns the local participant's sid before and after.
async fn recovers(
    ctx: ClientContext,
    scenario: SimulateScenario,
) -> anyhow::Result<(String, String)> {
    let (room, events) = ctx.connect("seed-room", "p0").await?;
    let mut log = EventLog::new(events);
    ensure!(room.connection_state() == ConnectionState::Connected);
    let before = room.local_participant().sid();
    room.simulate_scenario(scenario).await.context("simulate_scenario")?;
    log.wait_for("Reconnecting", RECOVERY, |e| matches!(e, RoomEvent::Reconnecting)).await?;
    log.wait_for("Reconnected", RECOVERY, |e| matches!(e, RoomEvent::Reconnected)).await?;
    ensure!(
        room.connection_state() == ConnectionState::Connected,
        "room should be Connected after recovery; trace:\n{}",
        log.trace()
    );
    // Still connected a while later (the recovered session really works).
    tokio::time::sleep(Duration::from_secs(20)).await;
    log.judge(room.connection_state()).context("invariants")?;
    ensure!(
        log.count(|e| matches!(e, RoomEvent::Reconnecting)) == 1,
        "one episode expected; trace:\n{}",
        log.trace()
    );
    let participants = ctx.server().list_participants("seed-room").await?;
    let after = room.local_participant().sid();
    ensure!(
        participants.iter().map(|p| p.sid.as_str()).collect::<Vec<_>>() == [after.as_str()],
        "the server should hold exactly the recovered session {after}, it holds {participants:?}"
    );
    Ok((before, after))
}

#[test_log::test]
fn signal_reconnect_resumes_the_same_session() -> anyhow::Result<()> {
    let mut sim = Sim::new(11);
    sim.client("client", |ctx| async move {
        let (before, after) = recovers(ctx, SimulateScenario::SignalReconnect).await?;
        ensure!(before == after, "a resume keeps the session: sid {before} became {after}");
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn full_reconnect_recovers_with_a_new_session() -> anyhow::Result<()> {
    let mut sim = Sim::new(12);
    sim.client("client", |ctx| async move {
        let (before, after) = recovers(ctx, SimulateScenario::FullReconnect).await?;
        ensure!(before != after, "a full reconnect makes a new session, sid stayed {before}");
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn disconnect_signal_on_resume_escalates_to_a_full_reconnect() -> anyhow::Result<()> {
    let mut sim = Sim::new(13);
    sim.client("client", |ctx| async move {
        let (before, after) = recovers(ctx, SimulateScenario::DisconnectSignalOnResume).await?;
        ensure!(
            before != after,
            "the failed resume must escalate to a full reconnect (new sid), sid stayed {before}"
        );
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// A partition between client and server that never heals: `Reconnecting`, every attempt
/// of the DEFAULT policy fails, then exactly one `Disconnected` and the stream ends.
#[test_log::test]
fn a_partition_that_never_heals_exhausts_the_default_policy() -> anyhow::Result<()> {
    let wall = Instant::now();
    let mut sim = Sim::new(14);
    sim.client("client", |ctx| async move {
        let options = ctx.options();
        ensure!(options.reconnect == ReconnectPolicy::default());
        let bound = options.reconnect_bound();
        // The room's RNG draws one delay per attempt after the first: replay the draws.
        let mut rng = SmallRng::seed_from_u64(options.seed());
        let delays: Duration =
            (1..=options.reconnect.attempts).map(|a| options.reconnect.delay(a, &mut rng)).sum();
        let (room, events) = ctx.connect("seed-room", "p0").await?;
        let mut log = EventLog::new(events);
        ctx.partition_from_server();
        log.wait_for("Reconnecting", Duration::from_secs(60), |e| {
            matches!(e, RoomEvent::Reconnecting)
        })
        .await?;
        let began = tokio::time::Instant::now();
        log.wait_for("Disconnected", bound, |e| matches!(e, RoomEvent::Disconnected { .. }))
            .await?;
        // Every attempt is refused at once (turmoil refuses connects across a partition), so
        // the episode lasts the policy's delays, plus at most a second for the first (resume)
        // attempt to let go of the dead signalling socket. Fewer attempts would end sooner.
        let episode = began.elapsed();
        eprintln!("episode: {episode:?}; the policy's ten drawn delays sum to {delays:?}");
        ensure!(
            episode >= delays && episode <= delays + Duration::from_secs(2),
            "expected the episode to last the policy's delays ({delays:?}) plus at most 2 s, \
             it lasted {episode:?}; trace:\n{}",
            log.trace()
        );
        log.wait_ended(Duration::from_secs(5)).await?;
        ensure!(room.connection_state() == ConnectionState::Disconnected);
        ensure!(
            log.count(|e| matches!(e, RoomEvent::Disconnected { .. })) == 1,
            "exactly one Disconnected expected; trace:\n{}",
            log.trace()
        );
        ensure!(
            log.count(|e| matches!(e, RoomEvent::Reconnected)) == 0,
            "nothing can reconnect through the partition; trace:\n{}",
            log.trace()
        );
        log.judge(room.connection_state()).context("invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    eprintln!("exhaustion under a permanent partition took {:?} of wall time", wall.elapsed());
    Ok(())
}

/// Two participants exchanging data through a resume, run twice with the same seed:
/// the (simulated time, event) traces are identical.
#[test_log::test]
fn the_same_seed_gives_the_same_trace() -> anyhow::Result<()> {
    fn run(seed: u64) -> anyhow::Result<Vec<EventRecord>> {
        let mut sim = Sim::new(seed);
        sim.client("alice", |ctx| async move {
            let (room, events) = ctx.connect("replay", "alice").await?;
            let mut log = EventLog::new(events);
            log.wait_for("bob", RECOVERY, |e| matches!(e, RoomEvent::ParticipantConnected(_)))
                .await?;
            room.simulate_scenario(SimulateScenario::SignalReconnect).await?;
            log.wait_for("Reconnected", RECOVERY, |e| matches!(e, RoomEvent::Reconnected)).await?;
            log.wait_for("data from bob", RECOVERY, |e| {
                matches!(e, RoomEvent::DataReceived { .. })
            })
            .await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            room.close().await?;
            Ok::<_, anyhow::Error>(())
        });
        sim.client("bob", |ctx| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (room, events) = ctx.connect("replay", "bob").await?;
            let _log = EventLog::new(events);
            tokio::time::sleep(Duration::from_secs(10)).await;
            room.local_participant()
                .publish_data(faultline_sdk::DataPacket {
                    payload: b"hello".to_vec(),
                    ..Default::default()
                })
                .await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            room.close().await?;
            Ok::<_, anyhow::Error>(())
        });
        Ok(sim.run()?.entries())
    }
    let first = run(21)?;
    let second = run(21)?;
    ensure!(first.len() > 4, "the run should record events, got {first:?}");
    ensure!(first == second, "same seed, different traces:\n{first:#?}\nvs\n{second:#?}");
    Ok(())
}
