//! Reliable data across reconnection, against the real livekit-server: every packet sent
//! before, during and after an outage that ends in a resume or a full reconnect arrives
//! exactly once, in order (DESIGN.md invariant 5); and `publish_data` never reports success
//! for a packet it will not send.

mod real_lane;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use faultline::event_log::EventLog;
use faultline::net::{Direction, FaultyNetwork, NetFaults};
use faultline::proxy::Proxy;
use faultline_sdk::net::TokioNetwork;
use faultline_sdk::{
    DataPacket, DataPacketKind, DisconnectReason, Room, RoomError, RoomEvent, RoomOptions,
    SimulateScenario,
};
use real_lane::{fast_options, join, join_at, server, unique_room, WAIT};

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

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
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
    sender_log.judge(sender.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
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
    sender_log.judge(sender.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

/// Packets published into a dead media link, then a full reconnect: the old session's SCTP
/// never delivers them (the media path stays cut both ways until the server has dropped the
/// old session), so only the sender's replay on its new session can. The server accepts the new session's
/// sequences where the old one left off, and the watcher gets every packet exactly once, in
/// order, from the same identity under two sids.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn reliable_data_sent_into_a_dead_link_survives_a_full_reconnect() -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-full");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 11);
    let faults: NetFaults = network.faults();
    let options = RoomOptions { network: Arc::new(network), ..RoomOptions::default() };
    let (sender, mut sender_log) =
        join_at(&server, &server.ws_url(), &room, "sender", options).await?;
    let sender = Arc::new(sender);
    sees_sender(&mut watcher_log).await?;
    publish_range(&sender, 0..PER_PHASE).await?;
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..PER_PHASE).await?;
    let sid = sender.local_participant().sid();

    faults.partition_media(Direction::Both);
    publish_range(&sender, PER_PHASE..2 * PER_PHASE).await?;
    sender.simulate_scenario(SimulateScenario::FullReconnect).await?;
    sender_log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    // Published while reconnecting: these calls return once the room is back.
    let during = {
        let sender = sender.clone();
        tokio::spawn(async move { publish_range(&sender, 2 * PER_PHASE..3 * PER_PHASE).await })
    };
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
    tokio::time::timeout(WAIT, during)
        .await
        .context("the publishes made while reconnecting")???;
    publish_range(&sender, 3 * PER_PHASE..4 * PER_PHASE).await?;

    expect_exactly_once_in_order(&mut watcher_log, "sender", PER_PHASE..4 * PER_PHASE).await?;
    sender_log.judge(sender.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

/// A new client with an identity the watcher has had packets from (an app restart) numbers
/// its packets from 1 again: the watcher delivers them, rather than taking them for the first
/// client's packets replayed after a full reconnect.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
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
    second_log.judge(second.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    second.close().await?;
    watcher.close().await?;
    Ok(())
}

/// Starts publishing reliable packet `n` from `room` (the call returns once it is sent, or
/// never will be), then makes a lossy publish, which the room answers in order after it:
/// once that returns, the reliable packet's command has reached the room. Returns the
/// reliable call and the lossy call's result.
async fn publish_reliable_then_lossy(
    room: &Arc<Room>,
    n: u32,
) -> Result<(tokio::task::JoinHandle<Result<(), RoomError>>, Result<(), RoomError>)> {
    let publisher = room.clone();
    let reliable = tokio::spawn(async move {
        let packet = DataPacket {
            payload: n.to_be_bytes().to_vec(),
            topic: Some("seq".into()),
            ..Default::default()
        };
        publisher.local_participant().publish_data(packet).await
    });
    let lossy = DataPacket { payload: b"now".to_vec(), reliable: false, ..Default::default() };
    let answered = tokio::time::timeout(WAIT, room.local_participant().publish_data(lossy))
        .await
        .context("a lossy publish while reconnecting must be answered at once")?;
    Ok((reliable, answered))
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn publishing_while_reconnecting_sends_reliable_data_once_back_and_refuses_lossy_data(
) -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-publish-reconnecting");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let proxy = Proxy::start(server.signal_addr()).await?;
    let (sender, mut sender_log) =
        join_at(&server, &proxy.ws_url(), &room, "sender", RoomOptions::default()).await?;
    let sender = Arc::new(sender);
    sees_sender(&mut watcher_log).await?;

    proxy.kill().await?;
    sender_log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    let (reliable, lossy) = publish_reliable_then_lossy(&sender, 0).await?;
    ensure!(
        matches!(lossy, Err(RoomError::NotConnected)),
        "lossy data is not kept across a reconnect: expected NotConnected, got {lossy:?}"
    );
    ensure!(
        !reliable.is_finished(),
        "a reliable publish made while reconnecting must wait for the episode's outcome"
    );
    proxy.heal().await?;
    sender_log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    let sent = tokio::time::timeout(WAIT, reliable).await.context("the publish returns")??;
    ensure!(sent.is_ok(), "sent on the recovered connection: {sent:?}");
    expect_exactly_once_in_order(&mut watcher_log, "sender", 0..1).await?;
    sender_log.judge(sender.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_reliable_publish_into_an_episode_that_ends_disconnected_reports_it_was_not_sent(
) -> Result<()> {
    let server = server().await?;
    let room = unique_room("data-publish-lost");
    let proxy = Proxy::start(server.signal_addr()).await?;
    let (sender, mut sender_log) =
        join_at(&server, &proxy.ws_url(), &room, "sender", fast_options()).await?;
    let sender = Arc::new(sender);

    proxy.kill().await?;
    sender_log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    let (reliable, _) = publish_reliable_then_lossy(&sender, 0).await?;
    sender_log
        .wait_for("Disconnected", WAIT, |e| matches!(e, RoomEvent::Disconnected { .. }))
        .await?;
    let answer = tokio::time::timeout(WAIT, reliable).await.context("the publish returns")??;
    ensure!(
        matches!(answer, Err(RoomError::NotSent { reason: DisconnectReason::SignalClose })),
        "the packet was never sent: expected NotSent(SignalClose), got {answer:?}"
    );
    sender_log.judge(sender.connection_state())?;
    Ok(())
}

/// Packets that reached the server but whose acknowledgements did not reach the sender (the
/// media path is cut towards the sender only), then a full reconnect: the sender replays them
/// on its new session, and the watcher — which has them already, from the old session —
/// delivers each exactly once: livekit-server drops the replays it has forwarded already, by
/// their message ids, and past its window the watcher's own de-duplication (by the origin in
/// the message id: the replays come under a new sid) would.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
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
    sender_log.judge(sender.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    sender.close().await?;
    watcher.close().await?;
    Ok(())
}

/// While nothing the sender sends is acknowledged (its inbound media is cut, so SCTP's
/// acknowledgements never arrive), `publish_data` accepts reliable packets until 4 MiB wait
/// unacknowledged, then makes the caller wait instead of dropping the oldest; once the path
/// heals, the waiting call completes and every packet arrives exactly once, in order.
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_full_replay_buffer_makes_publishers_wait_and_loses_nothing() -> Result<()> {
    const SIZE: usize = 16 * 1024;
    const BUFFER: usize = 4 * 1024 * 1024;
    let server = server().await?;
    let room = unique_room("data-backpressure");
    let (watcher, mut watcher_log) = join(&server, &room, "watcher").await?;
    let network = FaultyNetwork::new(Arc::new(TokioNetwork), 17);
    let faults: NetFaults = network.faults();
    // No episode while the acknowledgements are away: the test is about the buffer.
    let options = RoomOptions {
        network: Arc::new(network),
        pc_failed_after: Duration::from_secs(60),
        ..RoomOptions::default()
    };
    let (sender, mut sender_log) =
        join_at(&server, &server.ws_url(), &room, "sender", options).await?;
    let sender = Arc::new(sender);
    sees_sender(&mut watcher_log).await?;

    let big = |n: u32| {
        let mut payload = vec![0u8; SIZE];
        payload[..4].copy_from_slice(&n.to_be_bytes());
        DataPacket { payload, topic: Some("big".into()), ..Default::default() }
    };
    faults.partition_media(Direction::Inbound);
    // Far more than fits; each call returns once its packet is handed over, so the first one
    // that does not return within a few seconds is the one waiting for room.
    let mut waiting = None;
    let mut accepted = 0u32;
    for n in 0..(2 * BUFFER / SIZE) as u32 {
        let publisher = sender.clone();
        let mut call =
            tokio::spawn(async move { publisher.local_participant().publish_data(big(n)).await });
        match tokio::time::timeout(Duration::from_secs(5), &mut call).await {
            Ok(done) => {
                done.context("the publish task")?.with_context(|| format!("publishing #{n}"))?;
                accepted += 1;
            }
            Err(_) => {
                waiting = Some(call);
                break;
            }
        }
    }
    let waiting = waiting.context("no publish ever waited: the buffer is not bounded")?;
    let accepted_bytes = accepted as usize * SIZE;
    ensure!(
        accepted_bytes + 2 * SIZE >= BUFFER && accepted_bytes <= BUFFER,
        "publishers must wait only once about 4 MiB is unacknowledged; {accepted} packets \
         ({accepted_bytes} bytes) went first"
    );
    faults.heal_media();
    let done = tokio::time::timeout(WAIT, waiting).await.context("the waiting publish returns")?;
    done.context("the publish task")?.context("the waiting publish")?;
    let total = accepted + 1;
    let mut received = Vec::new();
    while received.len() < total as usize {
        let event = watcher_log
            .wait_for(
                &format!("big packet {} of {total}", received.len()),
                WAIT,
                |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "big"),
            )
            .await?;
        if let RoomEvent::DataReceived { payload, .. } = event {
            let head: [u8; 4] = payload[..4].try_into().context("a numbered payload")?;
            received.push(u32::from_be_bytes(head));
        }
    }
    ensure!(
        received == (0..total).collect::<Vec<_>>(),
        "every packet exactly once, in order: got {} packets, first out of place at {:?}",
        received.len(),
        received.iter().enumerate().find(|(i, n)| **n != *i as u32)
    );
    sender_log.judge(sender.connection_state())?;
    watcher_log.judge(watcher.connection_state())?;
    Ok(())
}
