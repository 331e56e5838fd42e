//! What other participants see of a reconnecting peer, in the simulation lane (the same
//! expectations as `participants.rs` against the real server): a resume is invisible to
//! them; a full reconnect is a leave and a join of a new session.

use std::time::Duration;

use anyhow::ensure;
use faultline::event_log::EventLog;
use faultline::sim::Sim;
use faultline_sdk::{DataPacket, RoomEvent, SimulateScenario};

const WAIT: Duration = Duration::from_secs(60);

fn peer_membership(event: &RoomEvent) -> bool {
    matches!(event,
        RoomEvent::ParticipantConnected(p) | RoomEvent::ParticipantDisconnected(p)
            if p.identity() == "peer")
}

/// The peer reconnects with `scenario`, then sends a marker; the watcher reports the
/// peer's membership events up to the marker and the peer's sids before and after.
fn watch(seed: u64, scenario: SimulateScenario) -> anyhow::Result<()> {
    let mut sim = Sim::new(seed);
    let full = scenario == SimulateScenario::FullReconnect;
    sim.client("watcher", move |ctx| async move {
        let (room, events) = ctx.connect("watched", "watcher").await?;
        let mut log = EventLog::new(events);
        log.wait_for("the peer joining", WAIT, peer_membership).await?;
        let old_sid = room.remote_participants()["peer"].sid().to_owned();
        log.wait_for("the peer's marker", WAIT, |e| {
            matches!(e, RoomEvent::DataReceived { payload, .. } if payload.as_slice() == b"after")
        })
        .await?;
        let membership: Vec<String> = log
            .events()
            .iter()
            .filter(|r| peer_membership(&r.event))
            .map(|r| match &r.event {
                RoomEvent::ParticipantConnected(p) => format!("+{}", p.sid()),
                RoomEvent::ParticipantDisconnected(p) => format!("-{}", p.sid()),
                _ => String::new(),
            })
            .collect();
        let new_sid = room.remote_participants()["peer"].sid().to_owned();
        if full {
            ensure!(old_sid != new_sid, "a full reconnect makes a new session");
            let (left, joined) = (format!("-{old_sid}"), format!("+{new_sid}"));
            ensure!(
                membership.len() == 3 && membership.contains(&left) && membership.contains(&joined),
                "expected the join, the old session leaving and the new one joining: {membership:?}"
            );
        } else {
            ensure!(old_sid == new_sid, "a resume keeps the session");
            ensure!(
                membership.len() == 1,
                "a resume must not look like a leave or a join: {membership:?}"
            );
        }
        log.judge(room.connection_state())?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("peer", move |ctx| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (room, events) = ctx.connect("watched", "peer").await?;
        let mut log = EventLog::new(events);
        tokio::time::sleep(Duration::from_secs(2)).await;
        room.simulate_scenario(scenario).await?;
        log.wait_for("Reconnected", WAIT, |e| matches!(e, RoomEvent::Reconnected)).await?;
        let marker = DataPacket { payload: b"after".to_vec(), ..Default::default() };
        room.local_participant().publish_data(marker).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn a_resumed_peer_neither_leaves_nor_joins() -> anyhow::Result<()> {
    watch(71, SimulateScenario::SignalReconnect)
}

#[test_log::test]
fn a_fully_reconnected_peer_leaves_and_joins_again() -> anyhow::Result<()> {
    watch(72, SimulateScenario::FullReconnect)
}
