//! The simulation lane's basics: faultline-sdk, unchanged, joins the simulated LiveKit
//! server inside turmoil over real ICE + DTLS on simulated UDP, and stays connected.

use std::time::Duration;

use anyhow::{ensure, Context};
use faultline::event_log::EventLog;
use faultline::sim::Sim;
use faultline_sdk::{ConnectionState, RoomEvent};

/// A participant joins and is still Connected 120 simulated seconds later: pings answered,
/// ICE consent kept fresh, no reconnect episode.
#[test_log::test]
fn a_participant_stays_connected_for_two_simulated_minutes() -> anyhow::Result<()> {
    let mut sim = Sim::new(1);
    sim.client("alice", |ctx| async move {
        let (room, events) = ctx.connect("sim-room", "alice").await?;
        let mut log = EventLog::new(events);
        ensure!(room.connection_state() == ConnectionState::Connected);
        let participants = ctx.server().list_participants("sim-room").await?;
        ensure!(
            participants.iter().any(|p| p.identity == "alice"),
            "the server should list alice, it lists {participants:?}"
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        log.poll();
        ensure!(
            log.count(|e| matches!(e, RoomEvent::Reconnecting | RoomEvent::Disconnected { .. }))
                == 0,
            "expected no reconnect episode in 120 s, got:\n{}",
            log.trace()
        );
        ensure!(room.connection_state() == ConnectionState::Connected);
        let participants = ctx.server().list_participants("sim-room").await?;
        ensure!(
            participants.len() == 1
                && participants[0].sid == room.local_participant().sid()
                && participants[0].state
                    == livekit_protocol::participant_info::State::Active as i32,
            "after 120 s the server should still hold alice's session, active: {participants:?}"
        );
        log.judge(room.connection_state()).context("invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}
