//! DESIGN.md invariant 5 in the simulation lane: reliable data published before and during
//! an outage that ends in `Reconnected` arrives exactly once, in order.

use std::time::Duration;

use anyhow::ensure;
use faultline::event_log::EventLog;
use faultline::sim::Sim;
use faultline_sdk::{DataPacket, RoomEvent, SimulateScenario};

const WAIT: Duration = Duration::from_secs(60);
const COUNT: u32 = 15;

fn packet(n: u32) -> DataPacket {
    DataPacket { payload: n.to_string().into_bytes(), ..Default::default() }
}

fn reliable_data_survives(seed: u64, scenario: SimulateScenario) -> anyhow::Result<()> {
    let mut sim = Sim::new(seed);
    sim.client("alice", move |ctx| async move {
        let (room, events) = ctx.connect("inv5", "alice").await?;
        let mut log = EventLog::new(events);
        // bob says hello once his room is up.
        log.wait_for("bob's hello", WAIT, |e| matches!(e, RoomEvent::DataReceived { .. })).await?;
        let me = room.local_participant();
        for n in 1..=5 {
            me.publish_data(packet(n)).await?;
        }
        room.simulate_scenario(scenario).await?;
        log.wait_for("Reconnecting", WAIT, |e| matches!(e, RoomEvent::Reconnecting)).await?;
        for n in 6..=10 {
            me.publish_data(packet(n)).await?;
        }
        log.wait_for("Reconnected", WAIT, |e| matches!(e, RoomEvent::Reconnected)).await?;
        for n in 11..=COUNT {
            me.publish_data(packet(n)).await?;
        }
        log.wait_for("bob's thanks", WAIT, |e| {
            matches!(e, RoomEvent::DataReceived { payload, .. } if payload.as_slice() == b"thanks")
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (room, events) = ctx.connect("inv5", "bob").await?;
        let mut log = EventLog::new(events);
        let hello = DataPacket { payload: b"hello".to_vec(), ..Default::default() };
        room.local_participant().publish_data(hello).await?;
        let mut received = Vec::new();
        while received.last() != Some(&COUNT) {
            let event = log
                .wait_for("data from alice", WAIT, |e| matches!(e, RoomEvent::DataReceived { .. }))
                .await?;
            if let RoomEvent::DataReceived { payload, .. } = event {
                received.push(String::from_utf8_lossy(&payload).parse::<u32>()?);
            }
        }
        // Give duplicates time to show up before judging.
        tokio::time::sleep(Duration::from_secs(5)).await;
        log.poll();
        let total = log.count(|e| matches!(e, RoomEvent::DataReceived { .. }));
        let expected: Vec<u32> = (1..=COUNT).collect();
        ensure!(
            received == expected && total == COUNT as usize,
            "expected 1..={COUNT} exactly once in order, got {received:?} ({total} packets)"
        );
        let thanks = DataPacket { payload: b"thanks".to_vec(), ..Default::default() };
        room.local_participant().publish_data(thanks).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn reliable_data_survives_a_resume_exactly_once_in_order() -> anyhow::Result<()> {
    reliable_data_survives(51, SimulateScenario::SignalReconnect)
}

#[test_log::test]
fn reliable_data_survives_a_full_reconnect_exactly_once_in_order() -> anyhow::Result<()> {
    reliable_data_survives(52, SimulateScenario::FullReconnect)
}
