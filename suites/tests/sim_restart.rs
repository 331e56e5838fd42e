//! The server crashes and comes back with no memory of anyone (as a restarted
//! livekit-server): the client's resume meets STATE_MISMATCH and the episode escalates to a
//! full reconnect into a fresh room.

use std::time::Duration;

use anyhow::{ensure, Context};
use faultline::event_log::EventLog;
use faultline::sim::{Sim, SERVER_HOST};
use faultline_sdk::{ConnectionState, RoomEvent};

#[test_log::test]
fn a_restarted_server_is_joined_again_with_a_full_reconnect() -> anyhow::Result<()> {
    let mut sim = Sim::new(61);
    sim.client("client", |ctx| async move {
        let (room, events) = ctx.connect("restart", "p0").await?;
        let mut log = EventLog::new(events);
        let (before, room_before) = (room.local_participant().sid(), room.sid());
        log.wait_for("Reconnecting", Duration::from_secs(60), |e| {
            matches!(e, RoomEvent::Reconnecting)
        })
        .await?;
        log.wait_for("Reconnected", Duration::from_secs(90), |e| {
            matches!(e, RoomEvent::Reconnected)
        })
        .await?;
        ensure!(room.connection_state() == ConnectionState::Connected);
        let after = room.local_participant().sid();
        ensure!(before != after, "a restarted server cannot resume the old session {before}");
        ensure!(room.sid() != room_before, "the restarted server made a new room");
        let listed = ctx.server().list_participants("restart").await?;
        ensure!(
            listed.iter().map(|p| p.sid.as_str()).collect::<Vec<_>>() == [after.as_str()],
            "the restarted server should hold the new session only: {listed:?}"
        );
        log.judge(room.connection_state()).context("invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run_until(Duration::from_secs(5))?;
    sim.turmoil().crash(SERVER_HOST);
    sim.run_until(Duration::from_secs(8))?;
    sim.turmoil().bounce(SERVER_HOST);
    sim.run()?;
    Ok(())
}
