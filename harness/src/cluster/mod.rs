//! A multi-node LiveKit cluster for tests: one Redis ([`redis`]) and N livekit-server nodes
//! sharing it, each on its own loopback ports, with one API key and secret, so a token is
//! good on every node.
//!
//! In front of the nodes sits what a load balancer would do: [`Cluster::route`] gives each
//! client a route — the address its signalling proxy ([`crate::proxy::Proxy::start_routed`])
//! sends new connections to — pointing at the client's preferred node while that node is up
//! and taking new connections, else at the next one that is. Media does not pass the
//! balancer: each node advertises its own UDP port, as in production.
//!
//! Every node can be SIGKILLed ([`Cluster::kill`]), restarted on its ports
//! ([`Cluster::restart`]) or drained with SIGTERM ([`Cluster::drain`]: livekit-server then
//! stops taking rooms and exits once its participants have left); Redis can be killed and
//! restarted (empty). Each change, each re-route and each move of a watched room to another
//! node is published with its time ([`Cluster::subscribe`]), so a run can show which node
//! everyone was on.
//!
//! Which node hosts a room is Redis's `room_node_map`; a node is known by the id it
//! registers in Redis's `nodes` hash when it starts (a new id at every start).
//!
//! Open-source livekit-server has no cross-node participant migration: a client whose node
//! dies or drains away gets a new session on another node (a full reconnect), never its old
//! one moved.
//!
//! Like the single server, nothing here outlives the test process: the nodes and Redis are
//! killed when the [`Cluster`] is dropped, and by their watchdogs if the process is killed.

pub mod redis;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::provision::ProvisionEnv;
use crate::room_service::{RoomService, RoomServiceError};
use crate::server::{LiveKitServer, ServerError, ServerOptions};
use crate::token::TokenSpec;
use redis::{Redis, RedisError};

/// Bound on a started node appearing in Redis's `nodes` hash after it answers `GET /`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a watched room's node and a draining node's process are looked at.
const POLL: Duration = Duration::from_millis(200);

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many livekit-server nodes (at least 1).
    pub nodes: usize,
    /// A name for the log files.
    pub name: String,
    /// Options every node starts with (version, provisioning, readiness bound); the
    /// cluster sets each node's ports, Redis, secret and name.
    pub server: ServerOptions,
}

impl ClusterOptions {
    /// `nodes` nodes of the default server, logs named after `name`.
    pub fn new(nodes: usize, name: &str) -> Self {
        Self { nodes, name: name.to_owned(), server: ServerOptions::default() }
    }
}

/// A cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis could not be had, started or asked.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A node could not be started or acted on.
    #[error("cluster node {node}: {source}")]
    Node {
        /// The node's index.
        node: usize,
        /// What went wrong.
        #[source]
        source: ServerError,
    },
    /// A node answered `GET /` but never registered in Redis.
    #[error(
        "cluster node {node} answers but did not register in Redis (hash `nodes`) within \
         {timeout:?}; is Redis up? node log: {log}; Redis log: {redis_log}"
    )]
    NotRegistered {
        /// The node's index.
        node: usize,
        /// The bound waited.
        timeout: Duration,
        /// The node's log.
        log: String,
        /// Redis's log.
        redis_log: String,
    },
    /// A node index out of range.
    #[error("there is no node {node}: the cluster has nodes 0 to {}", nodes - 1)]
    NoSuchNode {
        /// The index asked for.
        node: usize,
        /// How many nodes there are.
        nodes: usize,
    },
    /// No node is up to serve a request.
    #[error("no node of the cluster is up (every node was killed or drained)")]
    NoNodeUp,
    /// A cluster needs a node.
    #[error("a cluster needs at least one node")]
    Empty,
    /// A RoomService call failed.
    #[error(transparent)]
    RoomService(#[from] RoomServiceError),
}

/// What a node is doing, as the load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running and taking new connections.
    Up,
    /// SIGTERMed: still serving its participants, taking no new connections.
    Draining,
    /// Not running (killed, or exited after draining).
    Down,
}

/// One change in the cluster, published by [`Cluster::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// When it happened (`tokio::time`).
    pub at: Instant,
    /// What changed.
    pub change: NodeChange,
}

/// What a [`ClusterEvent`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChange {
    /// A node started (or restarted) and registered in Redis under `id`.
    NodeUp {
        /// The node's index.
        node: usize,
        /// Its livekit node id for this start.
        id: String,
    },
    /// A node was SIGKILLed.
    NodeKilled {
        /// The node's index.
        node: usize,
    },
    /// A node was sent SIGTERM and drains.
    NodeDraining {
        /// The node's index.
        node: usize,
    },
    /// A draining node exited.
    NodeExited {
        /// The node's index.
        node: usize,
    },
    /// Redis was killed.
    RedisKilled,
    /// Redis was restarted (empty).
    RedisRestarted,
    /// A route's new connections now go to `node`.
    Routed {
        /// The route's name (a participant's identity).
        route: String,
        /// The node.
        node: usize,
    },
    /// A watched room's node changed in Redis (`None`: Redis has no node for it).
    RoomHosted {
        /// The room.
        room: String,
        /// The node hosting it.
        node: Option<usize>,
    },
}

impl NodeChange {
    /// A short kebab-case name of the change, for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeChange::NodeUp { .. } => "node-up",
            NodeChange::NodeKilled { .. } => "node-killed",
            NodeChange::NodeDraining { .. } => "node-draining",
            NodeChange::NodeExited { .. } => "node-exited",
            NodeChange::RedisKilled => "redis-killed",
            NodeChange::RedisRestarted => "redis-restarted",
            NodeChange::Routed { .. } => "routed",
            NodeChange::RoomHosted { .. } => "room-hosted",
        }
    }

    /// The node the change is about, if one.
    pub fn node(&self) -> Option<usize> {
        match self {
            NodeChange::NodeUp { node, .. }
            | NodeChange::NodeKilled { node }
            | NodeChange::NodeDraining { node }
            | NodeChange::NodeExited { node }
            | NodeChange::Routed { node, .. } => Some(*node),
            NodeChange::RoomHosted { node, .. } => *node,
            NodeChange::RedisKilled | NodeChange::RedisRestarted => None,
        }
    }
}

impl std::fmt::Display for NodeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeChange::NodeUp { node, id } => write!(f, "node {node} up ({id})"),
            NodeChange::NodeKilled { node } => write!(f, "node {node} killed (SIGKILL)"),
            NodeChange::NodeDraining { node } => write!(f, "node {node} draining (SIGTERM)"),
            NodeChange::NodeExited { node } => write!(f, "node {node} exited after draining"),
            NodeChange::RedisKilled => f.write_str("redis killed"),
            NodeChange::RedisRestarted => f.write_str("redis restarted (empty)"),
            NodeChange::Routed { route, node } => {
                write!(f, "{route}'s new connections go to node {node}")
            }
            NodeChange::RoomHosted { room, node: Some(node) } => {
                write!(f, "room {room} hosted on node {node}")
            }
            NodeChange::RoomHosted { room, node: None } => {
                write!(f, "room {room} placed on no node (Redis has no entry for it)")
            }
        }
    }
}

/// One client's way in: its preferred node and where its new connections go now.
struct Route {
    name: String,
    preferred: usize,
    node: usize,
    tx: watch::Sender<SocketAddr>,
}

/// What the balancer knows, behind one lock.
struct State {
    nodes: Vec<NodeState>,
    /// Every livekit node id each node has registered under, oldest first.
    ids: Vec<Vec<String>>,
    routes: Vec<Route>,
}

struct Inner {
    redis: Redis,
    nodes: Vec<LiveKitServer>,
    state: Mutex<State>,
    events: broadcast::Sender<ClusterEvent>,
}

/// A running cluster; see the [module docs](self).
pub struct Cluster {
    inner: Arc<Inner>,
    watchers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.inner.redis)
            .field("nodes", &self.inner.nodes)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Provisions Redis and livekit-server, starts Redis, then each node in turn, returning
    /// once every node answers `GET /` and has registered in Redis.
    pub async fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        if options.nodes == 0 {
            return Err(ClusterError::Empty);
        }
        let env: &ProvisionEnv = &options.server.env;
        let (source, _) = redis::provision(env, false).await?;
        let redis = Redis::start(&source, &options.name).await?;
        let secret = crate::server::random_secret();
        let mut nodes = Vec::with_capacity(options.nodes);
        let mut ids = Vec::with_capacity(options.nodes);
        for node in 0..options.nodes {
            let known = redis.hkeys("nodes").await?;
            let server = LiveKitServer::start(ServerOptions {
                name: Some(format!("{}-node{node}", options.name)),
                redis: Some(redis.addr()),
                api_secret: Some(secret.clone()),
                http_port: None,
                netns: None,
                ..options.server.clone()
            })
            .await
            .map_err(|source| ClusterError::Node { node, source })?;
            if server.ports().is_none() {
                // LIVEKIT_URL names one external server; a cluster needs its own nodes.
                return Err(ClusterError::Node {
                    node,
                    source: ServerError::External {
                        operation: "a cluster",
                        url: server.http_url(),
                    },
                });
            }
            let id = registered(&redis, &known, node, &server).await?;
            ids.push(vec![id]);
            nodes.push(server);
        }
        let (events, _) = broadcast::channel(1024);
        let now = Instant::now();
        for (node, id) in ids.iter().enumerate() {
            let _ = events.send(ClusterEvent {
                at: now,
                change: NodeChange::NodeUp { node, id: id[0].clone() },
            });
        }
        let state = State { nodes: vec![NodeState::Up; options.nodes], ids, routes: Vec::new() };
        Ok(Cluster {
            inner: Arc::new(Inner { redis, nodes, state: Mutex::new(state), events }),
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Whether the cluster has no nodes (never: [`Cluster::start`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.inner.nodes.is_empty()
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> Result<&LiveKitServer, ClusterError> {
        self.inner
            .nodes
            .get(index)
            .ok_or(ClusterError::NoSuchNode { node: index, nodes: self.inner.nodes.len() })
    }

    /// What node `index` is doing.
    pub fn state(&self, index: usize) -> Result<NodeState, ClusterError> {
        self.node(index)?;
        Ok(self.inner.lock().nodes[index])
    }

    /// The Redis the nodes share.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// The log files: Redis's, then each node's (name, path).
    pub fn logs(&self) -> Vec<(String, std::path::PathBuf)> {
        let mut logs = vec![("redis-server".to_owned(), self.inner.redis.log_path().to_owned())];
        for (i, node) in self.inner.nodes.iter().enumerate() {
            if let Some(path) = node.log_path() {
                logs.push((format!("livekit-server node {i}"), path.to_owned()));
            }
        }
        logs
    }

    /// A token for `spec`, good on every node.
    pub fn token_with(&self, spec: &TokenSpec) -> Result<String, ClusterError> {
        self.inner.nodes[0]
            .token_with(spec)
            .map_err(|source| ClusterError::Node { node: 0, source })
    }

    /// A RoomService client on the first node that is up (rooms live in Redis, so any node
    /// answers for all of them).
    pub fn room_service(&self) -> Result<RoomService, ClusterError> {
        let state = self.inner.lock();
        let up =
            state.nodes.iter().position(|s| *s == NodeState::Up).ok_or(ClusterError::NoNodeUp)?;
        Ok(self.inner.nodes[up].room_service())
    }

    /// Publishes every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    /// A route named `name` (for the trace: a participant's identity) that prefers node
    /// `preferred`: where a signalling proxy sends its new connections. It follows the nodes:
    /// away from a node that is killed or drains, back when the node is up again.
    pub fn route(
        &self,
        name: &str,
        preferred: usize,
    ) -> Result<watch::Receiver<SocketAddr>, ClusterError> {
        self.node(preferred)?;
        let mut state = self.inner.lock();
        let node = pick(&state.nodes, preferred);
        let (tx, rx) = watch::channel(self.inner.nodes[node].signal_addr());
        state.routes.push(Route { name: name.to_owned(), preferred, node, tx });
        self.inner.publish(NodeChange::Routed { route: name.to_owned(), node });
        Ok(rx)
    }

    /// Places `room` on node `index` (CreateRoom with that node's id), before anyone joins.
    pub async fn place_room(&self, room: &str, index: usize) -> Result<(), ClusterError> {
        let id = self.current_id(index)?;
        self.node(index)?
            .room_service()
            .create_room_on(room, &id)
            .await
            .map(drop)
            .map_err(ClusterError::from)
    }

    /// Which node hosts `room`, from Redis (`None` when no node holds it).
    pub async fn room_node(&self, room: &str) -> Result<Option<usize>, ClusterError> {
        let id = self.inner.redis.hget("room_node_map", room).await?;
        Ok(id.and_then(|id| self.inner.index_of(&id)))
    }

    /// Publishes [`NodeChange::RoomHosted`] whenever `room`'s node changes, until the
    /// cluster is dropped.
    pub fn watch_room(&self, room: &str) {
        let inner = Arc::clone(&self.inner);
        let room = room.to_owned();
        let task = tokio::spawn(async move {
            let mut last: Option<Option<usize>> = None;
            loop {
                // While Redis does not answer, nothing is known to have changed.
                let Ok(id) = inner.redis.hget("room_node_map", &room).await else {
                    tokio::time::sleep(POLL).await;
                    continue;
                };
                let now = id.and_then(|id| inner.index_of(&id));
                if last != Some(now) {
                    inner.publish(NodeChange::RoomHosted { room: room.clone(), node: now });
                    last = Some(now);
                }
                tokio::time::sleep(POLL).await;
            }
        });
        self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
    }

    /// SIGKILLs node `index` (a crash: no leave messages, its sockets reset) and routes its
    /// clients' new connections elsewhere.
    ///
    /// The routes change first: a client whose signalling the kill resets tries again at
    /// once, and must find the balancer already sending it elsewhere rather than race the
    /// reroute to the dead node (which it lost in one CI trial: its resume failed, and a
    /// failed resume escalates to a full reconnect).
    pub async fn kill(&self, index: usize) -> Result<(), ClusterError> {
        let node = self.node(index)?;
        let before = self.inner.lock().nodes[index];
        self.inner.set_state(index, NodeState::Down);
        self.inner.reroute();
        if let Err(source) = node.kill().await {
            self.inner.set_state(index, before);
            self.inner.reroute();
            return Err(ClusterError::Node { node: index, source });
        }
        self.inner.publish(NodeChange::NodeKilled { node: index });
        Ok(())
    }

    /// Starts node `index` again on its ports (killing it first if it runs), waits until
    /// it has registered in Redis, and routes its preferring clients back to it.
    pub async fn restart(&self, index: usize) -> Result<(), ClusterError> {
        let node = self.node(index)?;
        if node.ensure_running().is_ok() {
            self.kill(index).await?;
        }
        let known = self.inner.redis.hkeys("nodes").await?;
        node.restart().await.map_err(|source| ClusterError::Node { node: index, source })?;
        let id = registered(&self.inner.redis, &known, index, node).await?;
        self.inner.lock().ids[index].push(id.clone());
        self.inner.set_state(index, NodeState::Up);
        self.inner.publish(NodeChange::NodeUp { node: index, id });
        self.inner.reroute();
        Ok(())
    }

    /// SIGTERMs node `index`: it drains (keeps serving its participants, takes no new
    /// rooms) and exits once they have left. New connections go elsewhere at once; its exit
    /// is published as [`NodeChange::NodeExited`].
    pub async fn drain(&self, index: usize) -> Result<(), ClusterError> {
        let node = self.node(index)?;
        node.terminate().map_err(|source| ClusterError::Node { node: index, source })?;
        self.inner.set_state(index, NodeState::Draining);
        self.inner.publish(NodeChange::NodeDraining { node: index });
        self.inner.reroute();
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                if inner.lock().nodes[index] != NodeState::Draining {
                    return;
                }
                if inner.nodes[index].ensure_running().is_err() {
                    inner.set_state(index, NodeState::Down);
                    inner.publish(NodeChange::NodeExited { node: index });
                    inner.reroute();
                    return;
                }
            }
        });
        self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(task);
        Ok(())
    }

    /// SIGKILLs Redis: every node loses its routing store at once.
    pub fn kill_redis(&self) {
        self.inner.redis.kill();
        self.inner.publish(NodeChange::RedisKilled);
    }

    /// Starts Redis again on its port, empty.
    pub async fn restart_redis(&self) -> Result<(), ClusterError> {
        self.inner.redis.restart().await?;
        self.inner.publish(NodeChange::RedisRestarted);
        Ok(())
    }

    /// The id node `index` registered under at its latest start.
    fn current_id(&self, index: usize) -> Result<String, ClusterError> {
        self.node(index)?;
        Ok(self.inner.lock().ids[index].last().cloned().unwrap_or_default())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in
            self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..)
        {
            task.abort();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, change: NodeChange) {
        tracing::info!(%change, "cluster");
        let _ = self.events.send(ClusterEvent { at: Instant::now(), change });
    }

    fn set_state(&self, index: usize, to: NodeState) {
        self.lock().nodes[index] = to;
    }

    /// The node that registered under `id` (at any of its starts).
    fn index_of(&self, id: &str) -> Option<usize> {
        self.lock().ids.iter().position(|ids| ids.iter().any(|known| known == id))
    }

    /// Points every route at its pick for the nodes' current states.
    fn reroute(&self) {
        let mut changed = Vec::new();
        {
            let mut state = self.lock();
            let nodes = state.nodes.clone();
            for route in &mut state.routes {
                let node = pick(&nodes, route.preferred);
                if node != route.node {
                    route.node = node;
                    route.tx.send_replace(self.nodes[node].signal_addr());
                    changed.push(NodeChange::Routed { route: route.name.clone(), node });
                }
            }
        }
        for change in changed {
            self.publish(change);
        }
    }
}

/// The node a client preferring `preferred` is sent to: that one while it is up, else the
/// next one up after it (wrapping), else — nothing is up — the preferred one (its
/// connections are refused, as they would be behind a balancer with no backend).
fn pick(nodes: &[NodeState], preferred: usize) -> usize {
    (0..nodes.len())
        .map(|k| (preferred + k) % nodes.len())
        .find(|&i| nodes[i] == NodeState::Up)
        .unwrap_or(preferred)
}

/// Waits for a node id not in `known` to appear in Redis's `nodes` hash: the one `server`
/// (node `node`) registered under.
async fn registered(
    redis: &Redis,
    known: &[String],
    node: usize,
    server: &LiveKitServer,
) -> Result<String, ClusterError> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    loop {
        let now = redis.hkeys("nodes").await?;
        if let Some(id) = now.into_iter().find(|id| !known.contains(id)) {
            return Ok(id);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotRegistered {
                node,
                timeout: REGISTER_TIMEOUT,
                log: server.log_path().map_or("(none)".into(), |p| p.display().to_string()),
                redis_log: redis.log_path().display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_prefers_its_node_and_otherwise_takes_the_next_one_up() {
        use NodeState::{Down, Draining, Up};
        assert_eq!(pick(&[Up, Up, Up], 1), 1);
        assert_eq!(pick(&[Up, Down, Up], 1), 2);
        assert_eq!(pick(&[Up, Draining, Down], 1), 0, "wraps around, skips draining");
        assert_eq!(pick(&[Down, Down], 1), 1, "nothing up: the preferred one");
    }
}
