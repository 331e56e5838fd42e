//! The cluster lane: Redis and several real livekit-server nodes on loopback, a routing proxy
//! per client in front of them (a load balancer), and the faults only a cluster has — the
//! node hosting the room dies, a client's signalling node dies while the room lives
//! elsewhere, a node drains for a deploy, Redis goes away.

mod real_lane;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{ensure, Context, Result};
use faultline::cluster::{Cluster, ClusterOptions, NodeChange, NodeState};
use faultline::event_log::EventLog;
use faultline::provision::ProvisionEnv;
use faultline::proxy::Proxy;
use faultline_sdk::{ConnectionState, Room, RoomEvent, RoomOptions};
use real_lane::{join_at, unique_room, WAIT};

/// A client of the cluster: its room, its events and the proxy its signalling goes through.
struct Member {
    room: Room,
    log: EventLog,
    _proxy: Proxy,
}

/// A two-node cluster (logs named `name`) and a fresh room placed on node 0.
async fn two_nodes_room_on_0(name: &str) -> Result<(Cluster, String)> {
    let cluster = Cluster::start(ClusterOptions::new(2, name)).await?;
    let room = unique_room(name);
    cluster.place_room(&room, 0).await?;
    Ok((cluster, room))
}

/// Joins `room` as `identity` through a routed proxy that prefers node `node`.
async fn join_via(cluster: &Cluster, node: usize, room: &str, identity: &str) -> Result<Member> {
    let route = cluster.route(identity, node)?;
    let proxy = Proxy::start_routed(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), route).await?;
    let (joined, log) =
        join_at(cluster.node(node)?, &proxy.ws_url(), room, identity, RoomOptions::default())
            .await?;
    Ok(Member { room: joined, log, _proxy: proxy })
}

/// Waits until `member` lists `identity` among the room's participants.
async fn sees(member: &mut Member, identity: &str) -> Result<()> {
    if member.room.remote_participants().contains_key(identity) {
        return Ok(());
    }
    member
        .log
        .wait_for(
            &format!("{identity} joining"),
            WAIT,
            |e| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == identity),
        )
        .await?;
    Ok(())
}

/// The room's sid as the cluster lists it.
async fn room_sid(cluster: &Cluster, room: &str) -> Result<String> {
    let rooms = cluster.room_service()?.list_rooms().await?;
    rooms
        .into_iter()
        .find(|r| r.name == room)
        .map(|r| r.sid)
        .with_context(|| format!("the cluster does not list room {room}"))
}

/// Waits until `member` has seen `identity` leave and then join again (however much of
/// that was recorded by earlier waits).
async fn sees_rejoin(member: &mut Member, identity: &str) -> Result<()> {
    let left = |e: &RoomEvent| matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == identity);
    let joined =
        |e: &RoomEvent| matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == identity);
    member.log.poll();
    let seen = member.log.events();
    match seen.iter().position(|r| left(&r.event)) {
        Some(i) if seen[i..].iter().any(|r| joined(&r.event)) => return Ok(()),
        Some(_) => {}
        None => {
            member.log.wait_for(&format!("{identity} leaving"), WAIT, left).await?;
        }
    }
    member.log.wait_for(&format!("{identity} joining again"), WAIT, joined).await?;
    Ok(())
}

/// Waits for `Reconnecting` then `Reconnected` and checks the room is `Connected` and the
/// invariants hold.
async fn recovers(member: &mut Member) -> Result<()> {
    member.log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    member.log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
    ensure!(
        member.room.connection_state() == ConnectionState::Connected,
        "after Reconnected the room must be Connected, it is {:?}\n{}",
        member.room.connection_state(),
        member.log.trace()
    );
    member.log.judge(member.room.connection_state())?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn when_the_node_hosting_the_room_dies_everyone_recovers_on_another_node() -> Result<()> {
    let (cluster, room) = two_nodes_room_on_0("room-node-dies").await?;
    // alice signals through the room's node, bob through the other one.
    let mut alice = join_via(&cluster, 0, &room, "alice").await?;
    let mut bob = join_via(&cluster, 1, &room, "bob").await?;
    sees(&mut alice, "bob").await?;
    let sid = room_sid(&cluster, &room).await?;
    let alice_sid = alice.room.local_participant().sid();
    ensure!(cluster.room_node(&room).await? == Some(0), "the room was placed on node 0");

    cluster.kill(0).await?;
    recovers(&mut alice).await?;
    recovers(&mut bob).await?;
    ensure!(
        alice.room.local_participant().sid() != alice_sid,
        "no node has alice's old session: she must come back as a new one"
    );
    sees_rejoin(&mut bob, "alice").await?;
    sees_rejoin(&mut alice, "bob").await?;
    ensure!(cluster.room_node(&room).await? == Some(1), "the room moved to the surviving node");
    ensure!(room_sid(&cluster, &room).await? == sid, "the room keeps its sid across the move");
    alice.room.close().await?;
    bob.room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn when_a_clients_signalling_node_dies_it_resumes_through_another_node() -> Result<()> {
    let (cluster, room) = two_nodes_room_on_0("signal-node-dies").await?;
    // alice's signalling is relayed by node 1; her session lives on node 0 with the room.
    let mut alice = join_via(&cluster, 1, &room, "alice").await?;
    let mut bob = join_via(&cluster, 0, &room, "bob").await?;
    sees(&mut alice, "bob").await?;
    sees(&mut bob, "alice").await?;
    let sid = alice.room.local_participant().sid();

    cluster.kill(1).await?;
    recovers(&mut alice).await?;
    ensure!(
        alice.room.local_participant().sid() == sid,
        "her session lives on: a resume keeps the sid"
    );
    let listed = cluster.room_service()?.list_participants(&room).await?;
    ensure!(
        listed.iter().any(|p| p.identity == "alice" && p.sid == sid),
        "the room's node still lists alice's session {sid}: {listed:?}"
    );
    bob.log.poll();
    ensure!(
        bob.log.count(|e| matches!(
            e,
            RoomEvent::ParticipantDisconnected(_) | RoomEvent::Reconnecting
        )) == 0,
        "bob's node was untouched: he must see no leave and no reconnect\n{}",
        bob.log.trace()
    );
    alice.room.close().await?;
    bob.room.close().await?;
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn a_draining_node_keeps_its_room_sends_newcomers_elsewhere_and_exits_when_it_is_empty(
) -> Result<()> {
    let (cluster, room) = two_nodes_room_on_0("node-drains").await?;
    let mut changes = cluster.subscribe();
    let mut alice = join_via(&cluster, 0, &room, "alice").await?;
    let mut bob = join_via(&cluster, 1, &room, "bob").await?;
    sees(&mut alice, "bob").await?;

    cluster.drain(0).await?;
    ensure!(cluster.state(0)? == NodeState::Draining, "SIGTERM leaves the node draining");
    // carol prefers node 0, but the balancer sends her to node 1; she joins the same room,
    // which stays on the draining node for as long as it has participants.
    let carol = join_via(&cluster, 0, &room, "carol").await?;
    for who in ["alice", "bob"] {
        ensure!(carol.room.remote_participants().contains_key(who), "carol sees {who} in the room");
    }
    sees(&mut alice, "carol").await?;
    sees(&mut bob, "carol").await?;
    ensure!(cluster.room_node(&room).await? == Some(0), "the room stays on the draining node");
    for member in [&mut alice, &mut bob] {
        member.log.poll();
        ensure!(
            member.log.count(|e| *e == RoomEvent::Reconnecting) == 0,
            "a drain does not disturb the calls on the node\n{}",
            member.log.trace()
        );
    }

    for member in [alice, bob, carol] {
        member.room.close().await?;
    }
    let exited = tokio::time::timeout(WAIT, async {
        loop {
            match changes.recv().await {
                Ok(c) if c.change == NodeChange::NodeExited { node: 0 } => return Ok(()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    ensure!(
        matches!(exited, Ok(Ok(()))),
        "the draining node must exit once its participants have left (within {WAIT:?}); log: {:?}",
        cluster.node(0)?.log_path()
    );
    ensure!(cluster.state(0)? == NodeState::Down, "an exited node is down");
    Ok(())
}

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn through_a_redis_outage_joins_fail_clearly_clients_retry_and_the_cluster_serves_again(
) -> Result<()> {
    let (cluster, room) = two_nodes_room_on_0("redis-outage").await?;
    let mut alice = join_via(&cluster, 0, &room, "alice").await?;
    let mut bob = join_via(&cluster, 1, &room, "bob").await?;
    sees(&mut alice, "bob").await?;

    cluster.kill_redis();
    // A join while Redis is away is refused with an error, not left hanging.
    let refused =
        tokio::time::timeout(WAIT, join_via(&cluster, 1, &unique_room("during"), "dave")).await;
    match refused {
        Ok(Err(e)) => ensure!(format!("{e:#}").contains("HTTP 500"), "the node answers 500: {e:#}"),
        Ok(Ok(_)) => anyhow::bail!("a join succeeded while Redis was down"),
        Err(_) => anyhow::bail!("a join during the outage hung for {WAIT:?} instead of failing"),
    }
    // The nodes relay signalling over Redis: the clients lose it and start retrying.
    for member in [&mut alice, &mut bob] {
        member.log.wait_for("Reconnecting", WAIT, |e| *e == RoomEvent::Reconnecting).await?;
    }
    cluster.restart_redis().await?;
    for member in [&mut alice, &mut bob] {
        member.log.wait_for("Reconnected", WAIT, |e| *e == RoomEvent::Reconnected).await?;
        ensure!(member.room.connection_state() == ConnectionState::Connected, "back Connected");
        member.log.judge(member.room.connection_state())?;
    }
    // The cluster serves joins again: into the old room and into a new one.
    let carol = join_via(&cluster, 1, &room, "carol").await?;
    ensure!(
        carol.room.connection_state() == ConnectionState::Connected,
        "carol joins the old room"
    );
    let erin = join_via(&cluster, 0, &unique_room("after"), "erin").await?;
    ensure!(erin.room.connection_state() == ConnectionState::Connected, "erin opens a new room");
    Ok(())
}

#[test_log::test(tokio::test)]
async fn without_redis_the_cluster_says_how_to_install_it() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let mut options = ClusterOptions::new(2, "no-redis");
    options.server.env = ProvisionEnv::isolated(cache.path());
    let error = Cluster::start(options).await.err().context("a cluster started without Redis")?;
    let message = error.to_string();
    for needle in ["redis-server", "REDIS_SERVER_BIN", "PATH", "docker", "install it with"] {
        ensure!(message.contains(needle), "the error names {needle}: {message}");
    }
    let mut options = ClusterOptions::new(2, "not-redis");
    options.server.env = ProvisionEnv::isolated(cache.path());
    options.server.env.redis_server_bin = Some("/bin/true".into());
    let error = Cluster::start(options).await.err().context("/bin/true taken for Redis")?;
    ensure!(
        error.to_string().contains("/bin/true --version printed no version"),
        "a binary that is not Redis is named as such: {error}"
    );
    Ok(())
}
