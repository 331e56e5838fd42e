//! What the real lane runs a scenario against: one livekit-server — the process-wide shared
//! one, or one of its own when the scenario kills it or needs network namespaces — or, for a
//! scenario with a `[cluster]` table, a [`Cluster`] of nodes sharing Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use super::format::{Fault, Lane, NodeRef, Scenario};
use super::lane::RunError;
use crate::cluster::{Cluster, ClusterOptions};
use crate::netns::Topology;
use crate::room_service::RoomService;
use crate::server::{LiveKitServer, ServerOptions};
use crate::token::TokenSpec;

/// The server side of a run.
pub(crate) enum Backend {
    /// One livekit-server.
    Server(Arc<LiveKitServer>),
    /// Several nodes on Redis.
    Cluster(Cluster),
}

impl Backend {
    /// Starts what `scenario` (from `file`) needs, telling `say` what it does.
    pub(crate) async fn start(
        scenario: &Scenario,
        file: &std::path::Path,
        topology: Option<&Topology>,
        say: &mut dyn FnMut(&str),
    ) -> Result<Backend, RunError> {
        if let Some(spec) = &scenario.cluster {
            let nodes = *spec.nodes.get_ref();
            say(&format!("starting Redis and {nodes} livekit-server nodes"));
            let cluster =
                Cluster::start(ClusterOptions::new(nodes, &format!("scenario-{}", scenario.name)))
                    .await?;
            return Ok(Backend::Cluster(cluster));
        }
        let kills_server = scenario.faults.iter().any(|f| f.fault == Fault::ServerKill {});
        let spec = scenario.server.as_ref().map(|s| *s.get_ref()).unwrap_or_default();
        if !kills_server && topology.is_none() && scenario.server.is_none() {
            say("starting livekit-server");
            return Ok(Backend::Server(LiveKitServer::shared().await?));
        }
        say(match (topology.is_some(), kills_server) {
            (true, _) => "starting a livekit-server of its own, in its network namespace",
            (false, true) => "starting a livekit-server of its own (the scenario kills it)",
            (false, false) => "starting a livekit-server of its own, as its `[server]` table says",
        });
        let opts = ServerOptions {
            name: Some(format!("scenario-{}", scenario.name)),
            netns: topology.map(|t| t.server().clone()),
            turn: spec.turn,
            ice_tcp: spec.ice_tcp.unwrap_or(true),
            ..Default::default()
        };
        let server = Arc::new(LiveKitServer::start(opts).await?);
        if server.ports().is_none() {
            let index = scenario.faults.iter().position(|f| f.fault == Fault::ServerKill {});
            return Err(RunError::Unsupported {
                file: file.to_owned(),
                index: index.unwrap_or_default(),
                kind: "server-kill",
                lane: Lane::Real,
                why: "the livekit-server is external (LIVEKIT_URL is set), so faultline cannot \
                      kill or restart it; unset LIVEKIT_URL to let faultline run its own"
                    .into(),
            });
        }
        Ok(Backend::Server(server))
    }

    /// The single server (`None` for a cluster).
    pub(crate) fn server(&self) -> Option<&LiveKitServer> {
        match self {
            Backend::Server(server) => Some(server),
            Backend::Cluster(_) => None,
        }
    }

    /// Where the server's TURN relay listens, if it has one.
    pub(crate) fn relay(&self) -> Option<SocketAddr> {
        let server = self.server()?;
        let port = server.ports()?.turn?;
        Some(SocketAddr::new(server.signal_addr().ip(), port))
    }

    /// The cluster (`None` for a single server).
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match self {
            Backend::Server(_) => None,
            Backend::Cluster(cluster) => Some(cluster),
        }
    }

    /// Where the server-side logs are, for error messages.
    pub(crate) fn log(&self) -> String {
        let logs = self.logs();
        if logs.is_empty() {
            return "(external server: see its own logs)".into();
        }
        logs.iter().map(|(_, path)| path.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// The server-side log files (name, path).
    pub(crate) fn logs(&self) -> Vec<(String, PathBuf)> {
        match self {
            Backend::Server(server) => server
                .log_path()
                .map(|p| vec![("livekit-server".to_owned(), p.to_owned())])
                .unwrap_or_default(),
            Backend::Cluster(cluster) => cluster.logs(),
        }
    }

    /// A token as `spec` describes it, good on every node.
    pub(crate) fn token_with(&self, spec: &TokenSpec) -> Result<String, RunError> {
        match self {
            Backend::Server(server) => Ok(server.token_with(spec)?),
            Backend::Cluster(cluster) => Ok(cluster.token_with(spec)?),
        }
    }

    /// A RoomService client (on a node that is up, for a cluster).
    pub(crate) fn room_service(&self) -> Result<RoomService, RunError> {
        match self {
            Backend::Server(server) => Ok(server.room_service()),
            Backend::Cluster(cluster) => Ok(cluster.room_service()?),
        }
    }

    /// Where participant `index` (of `scenario`) sends its signalling: the server, or its
    /// route through the cluster (its `node`, else its position modulo the nodes).
    pub(crate) fn route(
        &self,
        scenario: &Scenario,
        index: usize,
    ) -> Result<watch::Receiver<SocketAddr>, RunError> {
        match self {
            Backend::Server(server) => Ok(watch::channel(server.signal_addr()).1),
            Backend::Cluster(cluster) => {
                let spec = &scenario.participants[index];
                let node = spec.node.as_ref().map_or(index % cluster.len(), |n| *n.get_ref());
                Ok(cluster.route(spec.identity.get_ref(), node)?)
            }
        }
    }

    /// Before anyone joins: places the room on the scenario's `room_node` and starts
    /// watching which node hosts it.
    pub(crate) async fn prepare_room(
        &self,
        scenario: &Scenario,
        room: &str,
    ) -> Result<(), RunError> {
        let Backend::Cluster(cluster) = self else { return Ok(()) };
        if let Some(node) = scenario.cluster.as_ref().and_then(|c| c.room_node.as_ref()) {
            cluster.place_room(room, *node.get_ref()).await?;
        }
        cluster.watch_room(room);
        Ok(())
    }

    /// The index of the node `node` names now (`Room`: the one hosting `room`).
    pub(crate) async fn resolve(&self, node: NodeRef, room: &str) -> Result<usize, String> {
        let Backend::Cluster(cluster) = self else {
            return Err("the run has no cluster".into());
        };
        match node {
            NodeRef::Index(i) => Ok(i),
            NodeRef::Room => cluster
                .room_node(room)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no node hosts room {room} (Redis has no entry for it)")),
        }
    }
}
