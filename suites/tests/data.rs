//! Reliable data across reconnection, against the real livekit-server: every packet sent
//! before, during and after an outage that ends in a resume or a full reconnect arrives
//! exactly once, in order (DESIGN.md invariant 5).

mod real_lane;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::check::EventLog;
use faultline::net::{Direction, FaultyNetwork, NetFaults};
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{DataPacket, DataPacketKind, Room, RoomEvent, RoomOptions, SimulateScenario};
use real_lane::{join, join_at, server, unique_room, WAIT};

/// Packets per phase (before, during, after the outage).
const PER_PHASE: u32 = 20;

/// Waits until the watcher knows the sender, so received packets can name it.
async fn sees_sender(watcher_log: &mut EventLog) -> Result<()> {
    watcher_log
        .wait_for(
            "the sender joining",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == "sender"),
        )
        .await?;
    Ok(())
}

async fn publish_range(room: &Room, range: std::ops::Range<u32>) -> Result<()> {
    for n in range {
        let packet = DataPacket {
            payload: n.to_be_bytes().to_vec(),
            topic: Some("seq".into()),
            ..Default::default()
        };
        room.local_participant()
            .publish_data(packet)
            .await
            .with_context(|| format!("publishing #{n}"))?;
    }
    Ok(())
}

/// Waits until `log` has received as many packets from `sender` as `expected` holds and
/// checks they are exactly `expected`: each once, in order, reliably.
async fn expect_exactly_once_in_order(
    log: &mut EventLog,
    sender: &str,
    expected: std::ops::Range<u32>,
) -> Result<()> {
    let expected: Vec<u32> = expected.collect();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let event = log
            .wait_for(
                &format!("data packet {} of {expected:?}", received.len()),
                WAIT,
                |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "seq"),
            )
            .await?;
        let RoomEvent::DataReceived { payload, kind, participant, .. } = event else { continue };
        ensure!(kind == DataPacketKind::Reliable, "sent reliably, received as {kind:?}");
        ensure!(
            participant.as_ref().map(|p| p.identity()) == Some(sender),
            "the packet names its sender: {participant:?}"
        );
        let bytes: [u8; 4] = payload.as_slice().try_into().context("a 4-byte payload")?;
        received.push(u32::from_be_bytes(bytes));
    }
    ensure!(received == expected, "expected {expected:?} exactly once in order, got {received:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_data_sent_across_a_resume_arrives_exactly_once_in_order() -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-resume");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let (sender, mut sender_log) = join(&server, &room, "sender").await?;
    sees_sender(&mut watcher_log).await?;

    publish_range(&sender, 0..PER_PHASE).await?;
    sender.simulate_scenario(SimulateScenario::SignalReconnect).await?;
    publish_range(&sender, PER_PHASE..2 * PER_PHASE).await?;
    sender_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    publish_range(&sender, 2 * PER_PHASE..3 * PER_PHASE).await?;

    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..3 * PER_PHASE).await?;
    sender_log.check(sender.connection_state())?;
    watcher_log.check(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_data_sent_into_a_media_outage_arrives_exactly_once_in_order() -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-outage");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 7);
    let faults: NetFaults = network.faults();
    let options = RoomOptions {
        network: Arc::new(network),
        pc_failed_after: Duration::from_secs(2),
        ..RoomOptions::default()
    };
    let (sender, mut sender_log) =
        join_at(&server, &server.ws_url(), &room, "sender", options).await?;
    sees_sender(&mut watcher_log).await?;
    publish_range(&sender, 0..PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..PER_PHASE).await?;
    let sid = sender.local_participant().sid();
    faults.partition_media(Direction::Both);
    publish_range(&sender, PER_PHASE..2 * PER_PHASE).await?;
    sender_log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    faults.heal_media();
    sender_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(
        sender.local_participant().sid() == sid,
        "the outage ended in a resume, not a new session"
    );
    publish_range(&sender, 2 * PER_PHASE..3 * PER_PHASE).await?;

    expect_exactly_once_in_order(&mut watcher_log, "sender", PER_PHASE..3 * PER_PHASE).await?;
    sender_log.check(sender.connection_state())?;
    watcher_log.check(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

/// Packets published into a dead media link, then a full reconnect: the old session's SCTP
/// never delivers them (the media path stays cut both ways until the server has dropped the
/// old session), so only the sender's replay on its new session can. The server accepts the new session's
/// sequences where the old one left off, and the watcher gets every packet exactly once, in
/// order, from the same identity under two sids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_data_sent_into_a_dead_link_survives_a_full_reconnect() -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-full");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 11);
    let faults: NetFaults = network.faults();
    let options = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    let (sender, mut sender_log) =
        join_at(&server, &server.ws_url(), &room, "sender", options).await?;
    sees_sender(&mut watcher_log).await?;
    publish_range(&sender, 0..PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..PER_PHASE).await?;
    let sid = sender.local_participant().sid();

    faults.partition_media(Direction::Both);
    publish_range(&sender, PER_PHASE..2 * PER_PHASE).await?;
    sender.simulate_scenario(SimulateScenario::FullReconnect).await?;
    sender_log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    publish_range(&sender, 2 * PER_PHASE..3 * PER_PHASE).await?;
    // Once the server has dropped the old session, nothing sent on it can arrive any more;
    // the new session's peer connections need the media path back.
    watcher_log
        .wait_for(
            "the sender's old session leaving",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.sid() == sid),
        )
        .await?;
    let is_data =
        |e: &RoomEvent| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "seq");
    ensure!(
        watcher_log.count(is_data) == PER_PHASE as usize,
        "nothing sent into the dead link should have arrived through the old session:\n{}",
        watcher_log.trace()
    );
    faults.heal_media();
    sender_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(
        sender.local_participant().sid() != sid,
        "the outage ended in a full reconnect (a new session), not a resume"
    );
    publish_range(&sender, 3 * PER_PHASE..4 * PER_PHASE).await?;

    expect_exactly_once_in_order(&mut watcher_log, "sender", PER_PHASE..4 * PER_PHASE).await?;
    sender_log.check(sender.connection_state())?;
    watcher_log.check(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

/// A new client with an identity the watcher has had packets from (an app restart) numbers
/// its packets from 1 again: the watcher delivers them, rather than taking them for the first
/// client's packets replayed after a full reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_with_a_known_identity_is_heard_from_its_first_packet() -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-new-client");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let (first, _first_log) = join(&server, &room, "sender").await?;
    sees_sender(&mut watcher_log).await?;
    publish_range(&first, 0..PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..PER_PHASE).await?;
    first.close().await?;
    watcher_log
        .wait_for(
            "the first client leaving",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == "sender"),
        )
        .await?;

    let (second, mut second_log) = join(&server, &room, "sender").await?;
    sees_sender(&mut watcher_log).await?;
    publish_range(&second, PER_PHASE..2 * PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", PER_PHASE..2 * PER_PHASE).await?;
    second_log.check(second.connection_state())?;
    watcher_log.check(watcher.connection_state())?;
    second.close().await?;
    watcher.close().await?;
    Ok(())
}

/// Packets that reached the server but whose acknowledgements did not reach the sender (the
/// media path is cut towards the sender only), then a full reconnect: the sender replays them
/// on its new session, and the watcher — which has them already, from the old session —
/// delivers each exactly once. That takes the sender's origin, which livekit-server forwards
/// in `UserPacket.nonce`: the replays come under a new sid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_but_unacknowledged_packets_replayed_after_a_full_reconnect_arrive_once(
) -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-unacked");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 13);
    let faults: NetFaults = network.faults();
    let options = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    let (sender, mut sender_log) =
        join_at(&server, &server.ws_url(), &room, "sender", options).await?;
    sees_sender(&mut watcher_log).await?;
    let sid = sender.local_participant().sid();

    faults.partition_media(Direction::Inbound);
    publish_range(&sender, 0..PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..PER_PHASE).await?;
    sender.simulate_scenario(SimulateScenario::FullReconnect).await?;
    watcher_log
        .wait_for(
            "the sender's old session leaving",
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.sid() == sid),
        )
        .await?;
    faults.heal_media();
    sender_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(sender.local_participant().sid() != sid, "expected a full reconnect (a new sid)");
    publish_range(&sender, PER_PHASE..2 * PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", PER_PHASE..2 * PER_PHASE).await?;
    sender_log.check(sender.connection_state())?;
    watcher_log.check(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}
