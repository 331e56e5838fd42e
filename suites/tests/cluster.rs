//! The cluster lane: Redis and several real livekit-server nodes on loopback, a routing proxy
//! per client in front of them (a load balancer), and the faults only a cluster has — the
//! node hosting the room dies, a client's signalling node dies while the room lives
//! elsewhere, a node drains for a deploy, Redis goes away.

mod real_lane;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{ensure, Context, Result};
use faultline::check::EventLog;
use faultline::cluster::{Cluster, ClusterOptions};
use faultline::proxy::Proxy;
use faultline_sdk::{ConnectionState, Room, RoomEvent, RoomOptions};
use real_lane::{join_at, unique_room, WAIT};

/// A client of the cluster: its room, its events and the proxy its signalling goes through.
struct Member {
    room: Room,
    log: EventLog,
    _proxy: Proxy,
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
        .wait_for(&format!("{identity} joining"), WAIT, |e| {
            matches!(e, RoomEvent::ParticipantConnected(p) if p.identity() == identity)
        })
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
    let left = |e: &RoomEvent| {
        matches!(e, RoomEvent::ParticipantDisconnected(p) if p.identity() == identity)
    };
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
    member.log.check(member.room.connection_state())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_node_hosting_the_room_dies_everyone_recovers_on_another_node() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::new(2, "room-node-dies")).await?;
    let room = unique_room("room-node-dies");
    cluster.place_room(&room, 0).await?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_signal_node_dies() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::new(2, "explore-signal")).await?;
    let room = unique_room("explore-signal");
    cluster.place_room(&room, 0).await?;
    let mut alice = join_via(&cluster, 1, &room, "alice").await?;
    let mut bob = join_via(&cluster, 0, &room, "bob").await?;
    sees(&mut alice, "bob").await?;
    sees(&mut bob, "alice").await?;
    let sid = alice.room.local_participant().sid();
    cluster.kill(1).await?;
    let r = tokio::time::timeout(std::time::Duration::from_secs(40), recovers(&mut alice)).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    alice.log.poll();
    bob.log.poll();
    eprintln!("RESULT {r:?}\nsid kept {}\nALICE\n{}\nBOB\n{}", alice.room.local_participant().sid() == sid, alice.log.trace(), bob.log.trace());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_drain() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::new(2, "explore-drain")).await?;
    let room = unique_room("explore-drain");
    cluster.place_room(&room, 0).await?;
    let mut alice = join_via(&cluster, 0, &room, "alice").await?;
    let mut bob = join_via(&cluster, 1, &room, "bob").await?;
    sees(&mut alice, "bob").await?;
    sees(&mut bob, "alice").await?;
    cluster.drain(0).await?;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    let carol = join_via(&cluster, 0, &room, "carol").await;
    eprintln!("carol joined: {:?}", carol.as_ref().map(|c| c.room.remote_participants().keys().cloned().collect::<Vec<_>>()));
    eprintln!("room node {:?} state0 {:?}", cluster.room_node(&room).await, cluster.state(0));
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    alice.log.poll();
    bob.log.poll();
    eprintln!("ALICE\n{}\nBOB\n{}", alice.log.trace(), bob.log.trace());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_redis() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::new(2, "explore-redis")).await?;
    let room = unique_room("explore-redis");
    cluster.place_room(&room, 0).await?;
    let mut alice = join_via(&cluster, 0, &room, "alice").await?;
    let mut bob = join_via(&cluster, 1, &room, "bob").await?;
    sees(&mut alice, "bob").await?;
    sees(&mut bob, "alice").await?;
    cluster.kill_redis();
    let early = join_via(&cluster, 1, &unique_room("during"), "dave").await;
    eprintln!("join during outage: {:?}", early.as_ref().err());
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    cluster.restart_redis().await?;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let carol = join_via(&cluster, 1, &room, "carol").await;
    eprintln!("carol joined: {:?}", carol.as_ref().map(|c| c.room.remote_participants().keys().cloned().collect::<Vec<_>>()));
    let erin = join_via(&cluster, 0, &unique_room("after"), "erin").await;
    eprintln!("erin new room: {:?}", erin.as_ref().err());
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    alice.log.poll();
    bob.log.poll();
    eprintln!("ALICE {:?}\n{}\nBOB {:?}\n{}", alice.room.connection_state(), alice.log.trace(), bob.room.connection_state(), bob.log.trace());
    Ok(())
}
