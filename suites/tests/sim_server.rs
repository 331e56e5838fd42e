//! What the simulated LiveKit server does, as faultline-sdk sees it: the server-driven
//! endings (duplicate identity, RoomService removal and deletion, server leave), the
//! SimulateScenarios that force a full reconnect, speaker updates, data forwarding, and the
//! media-failure timers, and ICE over TCP where the server has an ICE/TCP port. Each
//! expectation is the real server's behaviour (see `faultline::sim::server`).

use std::time::Duration;

use anyhow::{ensure, Context};
use faultline::event_log::EventLog;
use faultline::net::Direction;
use faultline::sim::server::ServerConfig;
use faultline::sim::{ClientContext, Sim};
use faultline_sdk::{
    ConnectionState, DataPacket, DataPacketKind, DisconnectReason, RoomEvent, SimulateScenario,
};

mod numbered;
use numbered::{numbered, receives};

const WAIT: Duration = Duration::from_secs(60);

fn disconnected(reason: DisconnectReason) -> impl Fn(&RoomEvent) -> bool {
    move |e| matches!(e, RoomEvent::Disconnected { reason: r } if *r == reason)
}

fn joined(identity: &'static str) -> impl Fn(&RoomEvent) -> bool {
    move |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == identity)
}

fn left(identity: &'static str) -> impl Fn(&RoomEvent) -> bool {
    move |e| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == identity)
}

/// How a test ends a room from the server side.
#[derive(Debug, Clone, Copy)]
enum Ending {
    ServerLeaveScenario,
    RemoveParticipant,
    DeleteRoom,
}

/// Runs one client and expects the room to end with `reason` after `ending`.
fn ends_with(seed: u64, ending: Ending, reason: DisconnectReason) -> anyhow::Result<()> {
    let mut sim = Sim::new(seed);
    sim.client("client", move |ctx| async move {
        let (room, events) = ctx.connect("ending", "p0").await?;
        let mut log = EventLog::new(events);
        match ending {
            Ending::ServerLeaveScenario => {
                room.simulate_scenario(SimulateScenario::ServerLeave).await?
            }
            Ending::RemoveParticipant => {
                ensure!(ctx.server().remove_participant("ending", "p0").await?);
                ensure!(ctx.server().list_participants("ending").await?.is_empty());
            }
            Ending::DeleteRoom => ensure!(ctx.server().delete_room("ending").await?),
        }
        log.wait_for(&format!("Disconnected({reason:?})"), WAIT, disconnected(reason)).await?;
        log.wait_ended(Duration::from_secs(5)).await?;
        ensure!(room.connection_state() == ConnectionState::Disconnected);
        ensure!(
            log.count(|e| matches!(e, RoomEvent::Reconnecting)) == 0,
            "a server-side ending is final, no reconnect episode; trace:\n{}",
            log.trace()
        );
        log.judge(room.connection_state()).context("invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn the_server_leave_scenario_disconnects_with_server_shutdown() -> anyhow::Result<()> {
    ends_with(31, Ending::ServerLeaveScenario, DisconnectReason::ServerShutdown)
}

#[test_log::test]
fn removing_a_participant_disconnects_it_with_participant_removed() -> anyhow::Result<()> {
    ends_with(32, Ending::RemoveParticipant, DisconnectReason::ParticipantRemoved)
}

#[test_log::test]
fn deleting_the_room_disconnects_with_room_deleted() -> anyhow::Result<()> {
    ends_with(33, Ending::DeleteRoom, DisconnectReason::RoomDeleted)
}

/// The same identity joining from elsewhere evicts the first session.
#[test_log::test]
fn a_second_join_under_the_same_identity_evicts_the_first() -> anyhow::Result<()> {
    let mut sim = Sim::new(34);
    sim.client("first", |ctx| async move {
        let (room, events) = ctx.connect("dup", "same").await?;
        let mut log = EventLog::new(events);
        log.wait_for(
            "Disconnected(DuplicateIdentity)",
            WAIT,
            disconnected(DisconnectReason::DuplicateIdentity),
        )
        .await?;
        ensure!(room.connection_state() == ConnectionState::Disconnected);
        Ok::<_, anyhow::Error>(())
    });
    sim.client("second", |ctx| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (room, _events) = ctx.connect("dup", "same").await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(room.connection_state() == ConnectionState::Connected);
        let listed = ctx.server().list_participants("dup").await?;
        ensure!(
            listed.len() == 1 && listed[0].sid == room.local_participant().sid(),
            "only the second session should remain, the server lists {listed:?}"
        );
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// Scenarios after which the session cannot be resumed: the episode must escalate to a full
/// reconnect (a new sid) and recover.
fn escalates(seed: u64, scenario: SimulateScenario) -> anyhow::Result<()> {
    let mut sim = Sim::new(seed);
    sim.client("client", move |ctx| async move {
        let (room, events) = ctx.connect("escalate", "p0").await?;
        let mut log = EventLog::new(events);
        let before = room.local_participant().sid();
        room.simulate_scenario(scenario).await?;
        log.wait_for("Reconnecting", WAIT, |e| matches!(e, RoomEvent::Reconnecting)).await?;
        log.wait_for("Reconnected", WAIT, |e| matches!(e, RoomEvent::Reconnected)).await?;
        let after = room.local_participant().sid();
        ensure!(
            before != after,
            "{scenario:?}: expected a full reconnect (new sid), sid stayed {before}"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        ensure!(room.connection_state() == ConnectionState::Connected);
        log.judge(room.connection_state()).context("invariants")?;
        let listed = ctx.server().list_participants("escalate").await?;
        ensure!(
            listed.iter().map(|p| p.sid.as_str()).collect::<Vec<_>>() == [after.as_str()],
            "the server should hold only the new session {after}: {listed:?}"
        );
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn node_failure_escalates_to_a_full_reconnect() -> anyhow::Result<()> {
    escalates(41, SimulateScenario::NodeFailure)
}

#[test_log::test]
fn migration_on_one_node_escalates_to_a_full_reconnect() -> anyhow::Result<()> {
    escalates(42, SimulateScenario::Migration)
}

#[test_log::test]
fn a_refused_resume_escalates_to_a_full_reconnect() -> anyhow::Result<()> {
    escalates(43, SimulateScenario::DisconnectSignalOnResumeNoMessages)
}

/// ForceTcp: the server restarts ICE with TCP candidates only and remembers that for this
/// identity in this room for 5 minutes. A server without an ICE/TCP port (the default, as
/// faultline's loopback servers) has no TCP candidates, so the client can neither resume
/// nor rejoin: one `Disconnected` within the policy's bound (as in the real lane). Once the
/// preference has expired, the identity can join again.
#[test_log::test]
fn forcing_tcp_without_ice_tcp_ends_in_one_disconnected_until_it_expires() -> anyhow::Result<()> {
    let mut sim = Sim::new(44);
    sim.client("client", |ctx| async move {
        let options = ctx.options();
        let bound = options.reconnect_bound();
        let (room, events) = ctx.connect("force-tcp", "p0").await?;
        let mut log = EventLog::new(events);
        room.simulate_scenario(SimulateScenario::ForceTcp).await?;
        let forced = tokio::time::Instant::now();
        log.wait_for("Reconnecting", WAIT, |e| matches!(e, RoomEvent::Reconnecting)).await?;
        log.wait_for("Disconnected", bound, |e| matches!(e, RoomEvent::Disconnected { .. }))
            .await?;
        log.wait_ended(Duration::from_secs(5)).await?;
        ensure!(
            log.count(|e| matches!(e, RoomEvent::Reconnected)) == 0,
            "a server without ICE/TCP offers no TCP candidates to connect to; trace:\n{}",
            log.trace()
        );
        ensure!(room.connection_state() == ConnectionState::Disconnected);
        log.judge(room.connection_state()).context("invariants")?;
        // The preference lasts 5 minutes from the scenario.
        tokio::time::sleep_until(forced + Duration::from_secs(5 * 60 + 1)).await;
        let (again, _events) = ctx.connect("force-tcp", "p0").await?;
        ensure!(again.connection_state() == ConnectionState::Connected);
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// bob's side of a transport change of alice's: once alice says go, he sends her packets
/// `bob` 0..10, receives her `alice` 0..10, never sees her leave, says goodbye (`done`) and
/// stays until she leaves.
async fn bob_answers_alices_go(ctx: ClientContext, room_name: &'static str) -> anyhow::Result<()> {
    let (room, events) = ctx.connect(room_name, "bob").await?;
    let mut log = EventLog::new(events);
    log.wait_for(
        "alice's go",
        WAIT,
        |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "go"),
    )
    .await?;
    for n in 0..10 {
        room.local_participant().publish_data(numbered("bob", n)).await?;
    }
    receives(&mut log, "alice", 10, WAIT).await?;
    ensure!(log.count(left("alice")) == 0, "bob saw alice leave:\n{}", log.trace());
    room.local_participant().publish_data(numbered("done", 0)).await?;
    log.judge(room.connection_state()).context("bob's invariants")?;
    // Stay until alice has the goodbye: she leaves first.
    log.wait_for("alice leaving", WAIT, left("alice")).await?;
    Ok(())
}

/// ForceTcp on a server with an ICE/TCP port (livekit-server's `rtc.tcp_port`; the real
/// lane's `ice_tcp.rs`): alice's subscriber follows the ICE restart onto TCP in the same
/// session. With nothing reaching her over UDP any more, bob's packets still arrive (over
/// TCP), hers reach bob after, and bob never sees her leave.
#[test_log::test]
fn forcing_tcp_with_ice_tcp_keeps_the_session_and_the_data() -> anyhow::Result<()> {
    let config = ServerConfig { ice_tcp_port: Some(7881), ..ServerConfig::default() };
    let mut sim = Sim::with(46, config, |_| {});
    sim.client("alice", |ctx| async move {
        let (room, events) = ctx.connect("tcp", "alice").await?;
        let mut log = EventLog::new(events);
        log.wait_for("bob", WAIT, joined("bob")).await?;
        let session = room.local_participant().sid();
        room.simulate_scenario(SimulateScenario::ForceTcp).await?;
        let faults = ctx.net_faults();
        faults.block_udp(Direction::Inbound);
        // Bob publishes when told to.
        room.local_participant().publish_data(numbered("go", 0)).await?;
        receives(&mut log, "bob", 10, WAIT).await?;
        faults.heal();
        for n in 0..10 {
            room.local_participant().publish_data(numbered("alice", n)).await?;
        }
        log.wait_for(
            "bob's goodbye",
            WAIT,
            |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "done"),
        )
        .await?;
        ensure!(room.local_participant().sid() == session, "a new session:\n{}", log.trace());
        ensure!(room.connection_state() == ConnectionState::Connected, "{}", log.trace());
        log.judge(room.connection_state()).context("alice's invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| bob_answers_alices_go(ctx, "tcp"));
    sim.run()?;
    Ok(())
}

/// ForceTls on a server without TURN (the default, as faultline's loopback servers; the
/// real lane's `forcing_tls_on_a_server_without_turn_keeps_the_session`): livekit-server
/// filters no candidate for TLS, so alice's subscriber restarts ICE with its UDP candidate
/// and the session goes on past the server's ICE timeouts, with no episode: bob's packets
/// reach her, hers reach bob, and bob never sees her leave.
#[test_log::test]
fn forcing_tls_without_turn_keeps_the_session_and_the_data() -> anyhow::Result<()> {
    let mut sim = Sim::new(48);
    sim.client("alice", |ctx| async move {
        let (room, events) = ctx.connect("tls", "alice").await?;
        let mut log = EventLog::new(events);
        log.wait_for("bob", WAIT, joined("bob")).await?;
        let session = room.local_participant().sid();
        room.simulate_scenario(SimulateScenario::ForceTls).await?;
        // Longer than the server's ICE timeouts (15 s), which a path without candidates
        // would not outlive.
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Bob publishes when told to.
        room.local_participant().publish_data(numbered("go", 0)).await?;
        receives(&mut log, "bob", 10, WAIT).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("alice", n)).await?;
        }
        log.wait_for(
            "bob's goodbye",
            WAIT,
            |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "done"),
        )
        .await?;
        ensure!(room.local_participant().sid() == session, "a new session:\n{}", log.trace());
        ensure!(log.count(|e| *e == RoomEvent::Reconnecting) == 0, "{}", log.trace());
        ensure!(room.connection_state() == ConnectionState::Connected, "{}", log.trace());
        log.judge(room.connection_state()).context("alice's invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| bob_answers_alices_go(ctx, "tls"));
    sim.run()?;
    Ok(())
}

/// A client whose UDP is blocked before it joins gets in over ICE/TCP and exchanges data
/// (the real lane's `a_client_without_udp_joins_over_ice_tcp`).
#[test_log::test]
fn a_client_without_udp_joins_over_ice_tcp() -> anyhow::Result<()> {
    let config = ServerConfig { ice_tcp_port: Some(7881), ..ServerConfig::default() };
    let mut sim = Sim::with(47, config, |_| {});
    sim.client("alice", |ctx| async move {
        ctx.net_faults().block_udp(Direction::Both);
        let (room, events) = ctx.connect("tcp-only", "alice").await?;
        let mut log = EventLog::new(events);
        log.wait_for("bob", WAIT, joined("bob")).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("alice", n)).await?;
        }
        receives(&mut log, "bob", 10, WAIT).await?;
        let stats = ctx.net_faults().stats();
        ensure!(
            stats.datagrams_sent > 0 && stats.datagrams_sent == stats.datagrams_sent_dropped,
            "every datagram alice sent was dropped, yet data flowed: {stats:?}"
        );
        ensure!(log.count(|e| *e == RoomEvent::Reconnecting) == 0, "{}", log.trace());
        log.wait_for("bob leaving", WAIT, left("bob")).await?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| async move {
        let (room, events) = ctx.connect("tcp-only", "bob").await?;
        let mut log = EventLog::new(events);
        receives(&mut log, "alice", 10, WAIT).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("bob", n)).await?;
        }
        room.close().await?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// The simulated server's TURN relay port (livekit's usual one).
const TURN_PORT: u16 = 3478;

/// A client whose firewall lets only the TURN relay through joins through it and exchanges
/// data (the real lane's `turn.rs`, `a_client_that_can_reach_only_the_relay_joins_through_it`).
#[test_log::test]
fn a_client_that_can_reach_only_the_relay_joins_through_it() -> anyhow::Result<()> {
    let config = ServerConfig { turn_port: Some(TURN_PORT), ..ServerConfig::default() };
    let mut sim = Sim::with(49, config, |_| {});
    sim.client("alice", |ctx| async move {
        ctx.net_faults().block_udp_except(ctx.relay_addr().context("a relay")?);
        let (room, events) = ctx.connect("relay-only", "alice").await?;
        let mut log = EventLog::new(events);
        log.wait_for("bob", WAIT, joined("bob")).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("alice", n)).await?;
        }
        receives(&mut log, "bob", 10, WAIT).await?;
        let stats = ctx.net_faults().stats();
        ensure!(stats.datagrams_sent_dropped > 0, "no direct datagram was cut: {stats:?}");
        ensure!(log.count(|e| *e == RoomEvent::Reconnecting) == 0, "{}", log.trace());
        log.wait_for("bob leaving", WAIT, left("bob")).await?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| async move {
        let (room, events) = ctx.connect("relay-only", "bob").await?;
        let mut log = EventLog::new(events);
        receives(&mut log, "alice", 10, WAIT).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("bob", n)).await?;
        }
        room.close().await?;
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// After ForceTls, the resume's ReconnectResponse carries force_relay: alice moves onto the
/// relay in the same session, so once only the relay is reachable bob's packets still reach
/// her, hers reach bob, and bob never sees her leave (the real lane's `turn.rs`,
/// `after_force_tls_the_next_resume_moves_the_client_onto_the_relay`).
#[test_log::test]
fn after_force_tls_the_next_resume_moves_the_client_onto_the_relay() -> anyhow::Result<()> {
    let config = ServerConfig { turn_port: Some(TURN_PORT), ..ServerConfig::default() };
    let mut sim = Sim::with(50, config, |_| {});
    sim.client("alice", |ctx| async move {
        let (room, events) = ctx.connect("force-relay", "alice").await?;
        let mut log = EventLog::new(events);
        log.wait_for("bob", WAIT, joined("bob")).await?;
        let session = room.local_participant().sid();
        room.simulate_scenario(SimulateScenario::ForceTls).await?;
        room.simulate_scenario(SimulateScenario::SignalReconnect).await?;
        log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
        ctx.net_faults().block_udp_except(ctx.relay_addr().context("a relay")?);
        // Bob publishes when told to.
        room.local_participant().publish_data(numbered("go", 0)).await?;
        receives(&mut log, "bob", 10, WAIT).await?;
        for n in 0..10 {
            room.local_participant().publish_data(numbered("alice", n)).await?;
        }
        log.wait_for(
            "bob's goodbye",
            WAIT,
            |e| matches!(e, RoomEvent::DataReceived { topic: Some(t), .. } if t == "done"),
        )
        .await?;
        ensure!(room.local_participant().sid() == session, "a new session:\n{}", log.trace());
        ensure!(log.count(|e| *e == RoomEvent::Reconnecting) == 1, "{}", log.trace());
        ensure!(room.connection_state() == ConnectionState::Connected, "{}", log.trace());
        log.judge(room.connection_state()).context("alice's invariants")?;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| bob_answers_alices_go(ctx, "force-relay"));
    sim.run()?;
    Ok(())
}

#[test_log::test]
fn a_speaker_update_reports_the_speaker_then_silence() -> anyhow::Result<()> {
    let mut sim = Sim::new(45);
    sim.client("client", |ctx| async move {
        let (room, events) = ctx.connect("speak", "p0").await?;
        let mut log = EventLog::new(events);
        room.simulate_scenario(SimulateScenario::Speaker(Duration::from_secs(3))).await?;
        let speaking = |who: &'static [&'static str]| {
            move |e: &RoomEvent| matches!(e, RoomEvent::ActiveSpeakersChanged { speakers } if speakers == who)
        };
        log.wait_for("p0 speaking", WAIT, speaking(&["p0"])).await?;
        let started = tokio::time::Instant::now();
        log.wait_for("nobody speaking", WAIT, speaking(&[])).await?;
        let lasted = started.elapsed();
        ensure!(
            lasted >= Duration::from_secs(3) && lasted < Duration::from_secs(4),
            "the speaker update should last 3 s, it lasted {lasted:?}"
        );
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}

/// Data goes to everyone else, or only to the destinations, stamped with the sender.
#[test_log::test]
fn data_is_forwarded_to_the_others_or_only_to_its_destinations() -> anyhow::Result<()> {
    let mut sim = Sim::new(46);
    sim.client("alice", |ctx| async move {
        let (room, events) = ctx.connect("data", "alice").await?;
        let mut log = EventLog::new(events);
        // Each of the others says "ready" (to alice only) once its room is connected.
        for _ in 0..2 {
            log.wait_for("a ready message", WAIT, |e| {
                matches!(e, RoomEvent::DataReceived { payload, .. } if payload.as_slice() == b"ready")
            })
            .await?;
        }
        let me = room.local_participant();
        me.publish_data(DataPacket { payload: b"all".to_vec(), ..Default::default() }).await?;
        me.publish_data(DataPacket {
            payload: b"lossy".to_vec(),
            reliable: false,
            ..Default::default()
        })
        .await?;
        me.publish_data(DataPacket {
            payload: b"bob only".to_vec(),
            destination_identities: vec!["bob".into()],
            ..Default::default()
        })
        .await?;
        log.wait_for("bob leaving", WAIT, left("bob")).await?;
        log.wait_for("carol leaving", WAIT, left("carol")).await?;
        room.close().await?;
        Ok::<_, anyhow::Error>(())
    });
    for (host, expected) in
        [("bob", &["all", "lossy", "bob only"][..]), ("carol", &["all", "lossy"][..])]
    {
        sim.client(host, move |ctx| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (room, events) = ctx.connect("data", host).await?;
            let mut log = EventLog::new(events);
            room.local_participant()
                .publish_data(DataPacket {
                    payload: b"ready".to_vec(),
                    destination_identities: vec!["alice".into()],
                    ..Default::default()
                })
                .await?;
            // Everything alice sends arrives within a few simulated seconds.
            tokio::time::sleep(Duration::from_secs(10)).await;
            log.poll();
            let received: Vec<(String, DataPacketKind, Option<String>)> = log
                .events()
                .iter()
                .filter_map(|r| match &r.event {
                    RoomEvent::DataReceived { payload, kind, participant, .. } => Some((
                        String::from_utf8_lossy(payload).into_owned(),
                        *kind,
                        participant.as_ref().map(|p| p.identity().to_owned()),
                    )),
                    _ => None,
                })
                .collect();
            let payloads: Vec<&str> = received.iter().map(|(p, _, _)| p.as_str()).collect();
            ensure!(payloads == expected, "{host} expected {expected:?}, received {received:?}");
            ensure!(
                received.iter().all(|(_, _, from)| from.as_deref() == Some("alice")),
                "every packet should name alice as its sender: {received:?}"
            );
            ensure!(
                received[1].1 == DataPacketKind::Lossy && received[0].1 == DataPacketKind::Reliable
            );
            room.close().await?;
            Ok::<_, anyhow::Error>(())
        });
    }
    sim.run()?;
    Ok(())
}

/// A client cut off from the server: the server notices the silent media path after pion's
/// ICE timeouts (15 s after the last datagram, which came at most a keepalive interval
/// before the cut), waits 5 s for a resume, then removes it — which the others see.
#[test_log::test]
fn the_server_removes_a_participant_whose_media_went_silent() -> anyhow::Result<()> {
    const CUT_AFTER: Duration = Duration::from_secs(10);
    let mut sim = Sim::new(47);
    sim.client("alice", |ctx| async move {
        let (_room, _events) = ctx.connect("silence", "alice").await?;
        tokio::time::sleep(CUT_AFTER).await;
        ctx.partition_from_server();
        tokio::time::sleep(Duration::from_secs(40)).await;
        Ok::<_, anyhow::Error>(())
    });
    sim.client("bob", |ctx| async move {
        let (room, events) = ctx.connect("silence", "bob").await?;
        let connected = tokio::time::Instant::now();
        let mut log = EventLog::new(events);
        // alice is either in bob's JoinResponse or joins right after.
        if !room.remote_participants().contains_key("alice") {
            log.wait_for("alice", WAIT, joined("alice")).await?;
        }
        log.wait_for("alice leaving", WAIT, left("alice")).await?;
        let after_cut = connected.elapsed().saturating_sub(CUT_AFTER);
        ensure!(
            after_cut >= Duration::from_secs(17) && after_cut <= Duration::from_millis(20_500),
            "expected alice removed 17–20.5 s after the cut, it took {after_cut:?}; trace:\n{}",
            log.trace()
        );
        Ok::<_, anyhow::Error>(())
    });
    sim.run()?;
    Ok(())
}
