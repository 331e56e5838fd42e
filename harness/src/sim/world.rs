//! [`Sim`]: one seeded turmoil simulation with a simulated LiveKit server host and client
//! hosts, each client running a test closure with a [`ClientContext`] that connects
//! faultline-sdk `Room`s through [`TurmoilNetwork`] and records every event they emit, with
//! its simulated time and in the shared vocabulary, into a [`Trace`] of [`EventRecord`]s.
//!
//! Each client's sockets go through the harness's [`FaultyNetwork`] wrapper, the one the real
//! lane puts around the SDK's sockets, so a socket fault means the same thing in both lanes
//! ([`Sim::net_faults`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use faultline_sdk::{Room, RoomEvent, RoomOptions};
use tokio::sync::mpsc;

use super::schedule::Fault;
use super::server::{ServerConfig, ServerControl, SimServer};
use super::TurmoilNetwork;
use crate::client::ClientEvent;
use crate::net::{Direction, FaultyNetwork, NetFaults};
use crate::record::EventRecord;
use crate::scenario::format::ProxyMode;
use crate::token::{TokenError, TokenSpec};

/// The server host's name (clients reach it at `ws://livekit:7880`).
pub const SERVER_HOST: &str = "livekit";

/// The simulated wall clock starts here, so that times derived from it repeat run to run.
const EPOCH_SECS: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// The simulated wall clock (time since the Unix epoch), which tokens are minted and checked
/// against: [`EPOCH_SECS`] plus the simulated time elapsed, on a turmoil host; the epoch
/// itself elsewhere.
pub(crate) fn wall_clock() -> Duration {
    turmoil::since_epoch().unwrap_or(Duration::from_secs(EPOCH_SECS))
}

/// The default one-way latency of every simulated link.
const LATENCY: Duration = Duration::from_millis(1);

/// The simulation's step. Every step polls every host, and steps are what a run costs (a
/// profile of exploration: tokio's per-poll bookkeeping and turmoil's delivery, not set-up or
/// crypto), so the step is as long as fidelity allows: 4 ms gave 1722 schedules a minute
/// against 669 at 1 ms (`faultline bench sim`, 2 cores), with the library's sim-lane verdicts
/// and explorer results unchanged. Messages and timers land on step boundaries, so a hop takes
/// one step; that is far below any bound a scenario or invariant states (the shortest timer
/// the SDK keeps is its 500 ms path probe).
const TICK: Duration = Duration::from_millis(4);

/// Why a simulation could not run or a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A host's software failed or the simulation ran past its duration.
    #[error("the simulation with seed {seed} failed: {reason} (re-run with the same seed and RUST_LOG=debug to replay it)")]
    Run {
        /// The seed, to replay it.
        seed: u64,
        /// turmoil's or the host's error.
        reason: String,
    },
    /// A token could not be minted.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `Room::connect` failed.
    #[error("client {host} could not connect to the simulated server as {identity:?}: {source}")]
    Connect {
        /// The client host.
        host: String,
        /// The identity used.
        identity: String,
        /// The SDK's error.
        #[source]
        source: faultline_sdk::RoomError,
    },
}

/// Every event of every room connected through a [`ClientContext`], in emission order; each
/// record's participant is the identity the room connected as.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    entries: Arc<Mutex<Vec<EventRecord>>>,
}

impl Trace {
    fn push(&self, entry: EventRecord) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
    }

    /// A copy of the entries so far.
    pub fn entries(&self) -> Vec<EventRecord> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// What a client closure gets: where the server is, tokens, room options wired to the
/// simulation, the server's controls, and a recording `connect`.
#[derive(Debug, Clone)]
pub struct ClientContext {
    host: String,
    seed: u64,
    server: SimServer,
    trace: Trace,
    network: FaultyNetwork,
}

impl ClientContext {
    /// This client's host name (for `turmoil::partition` and friends).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Cuts every link between this host and the server, both ways (turmoil `partition`):
    /// datagrams and segments are dropped and new TCP connections are refused. TCP streams
    /// open across it stay dead even after [`Self::repair_to_server`] (turmoil has no retransmission).
    pub fn partition_from_server(&self) {
        turmoil::partition(self.host.as_str(), SERVER_HOST);
    }

    /// Restores the links cut by [`Self::partition_from_server`].
    pub fn repair_to_server(&self) {
        turmoil::repair(self.host.as_str(), SERVER_HOST);
    }

    /// The server's TURN relay address, if it runs one ([`ServerConfig::turn_port`]).
    pub fn relay_addr(&self) -> Option<std::net::SocketAddr> {
        let port = self.server.config().turn_port?;
        Some(std::net::SocketAddr::new(turmoil::lookup(SERVER_HOST), port))
    }

    /// The server's signalling URL.
    pub fn url(&self) -> String {
        format!("ws://{SERVER_HOST}:{}", self.server.config().http_port)
    }

    /// A token joining `room` as `identity`, signed with the server's keys, valid for an
    /// hour of simulated time from now.
    pub fn token(&self, room: &str, identity: &str) -> Result<String, TokenError> {
        self.mint(&TokenSpec::join(room, identity))
    }

    /// `spec` signed with the server's keys, valid from now in simulated time.
    pub fn mint(&self, spec: &TokenSpec) -> Result<String, TokenError> {
        let config = self.server.config();
        spec.mint_at(&config.api_key, &config.api_secret, wall_clock())
    }

    /// Default room options with simulated sockets (through this host's fault wrapper, see
    /// [`Sim::net_faults`]) and a seed derived from the simulation's seed and this host.
    pub fn options(&self) -> RoomOptions {
        RoomOptions {
            network: Arc::new(self.network.clone()),
            rng_seed: Some(self.seed),
            ..RoomOptions::default()
        }
    }

    /// The server's RoomService-like controls.
    pub fn server(&self) -> ServerControl {
        self.server.control()
    }

    /// Records `event` of `participant` in the trace at the current simulated time (for what
    /// a room does not emit itself, such as [`ClientEvent::Media`] samples).
    pub fn record(&self, participant: &str, event: ClientEvent) {
        self.trace.push(EventRecord {
            participant: participant.to_owned(),
            at: turmoil::sim_elapsed().unwrap_or_default(),
            event,
        });
    }

    /// This host's socket faults, as [`Sim::net_faults`] gives them from outside.
    pub fn net_faults(&self) -> NetFaults {
        self.network.faults()
    }

    /// Connects to `room` as `identity` with [`Self::options`].
    pub async fn connect(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>), SimError> {
        self.connect_with(room, identity, self.options()).await
    }

    /// Connects with the given options; every event the room emits is recorded in the
    /// trace (if the shared vocabulary carries it) before it reaches the returned stream.
    pub async fn connect_with(
        &self,
        room: &str,
        identity: &str,
        options: RoomOptions,
    ) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>), SimError> {
        self.connect_as(&TokenSpec::join(room, identity), options).await
    }

    /// Connects with a token minted from `spec` (its room and identity) and the given
    /// options, recording events as [`Self::connect_with`] does.
    pub async fn connect_as(
        &self,
        spec: &TokenSpec,
        options: RoomOptions,
    ) -> Result<(Room, mpsc::UnboundedReceiver<RoomEvent>), SimError> {
        let (identity, token) = (spec.identity.as_str(), self.mint(spec)?);
        let (room, mut events) =
            Room::connect(&self.url(), &token, options).await.map_err(|source| {
                SimError::Connect { host: self.host.clone(), identity: identity.to_owned(), source }
            })?;
        let (forward, recorded) = mpsc::unbounded_channel();
        let (trace, identity) = (self.trace.clone(), identity.to_owned());
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Some(shared) = ClientEvent::from_room_event(&event) {
                    trace.push(EventRecord {
                        participant: identity.clone(),
                        at: turmoil::sim_elapsed().unwrap_or_default(),
                        event: shared,
                    });
                }
                // The test may have stopped listening; keep recording.
                let _ = forward.send(event);
            }
        });
        Ok((room, recorded))
    }
}

/// A seeded simulation: a [`SimServer`] on host [`SERVER_HOST`] and client hosts.
pub struct Sim<'a> {
    seed: u64,
    sim: turmoil::Sim<'a>,
    server: SimServer,
    trace: Trace,
    clients: u64,
    /// Each client host's socket faults, by host name.
    nets: std::collections::BTreeMap<String, NetFaults>,
}

impl<'a> Sim<'a> {
    /// A simulation with `seed`: 4 ms steps (`TICK`), up to 15 simulated minutes, a fixed epoch, a
    /// fixed 1 ms link latency, the default server configuration.
    ///
    /// Why a fixed latency: turmoil draws each message's latency from its seeded RNG, but
    /// str0m's stack (sctp-proto, dimpl, fastrand) draws from OS randomness, which can change
    /// how many datagrams a run sends and so shift every later draw. With a fixed latency the
    /// same seed replays the same trace; a test that wants jitter configures it with
    /// [`Sim::with`] and gets the same event order but not always the same times.
    pub fn new(seed: u64) -> Self {
        Self::with(seed, ServerConfig::default(), |_| {})
    }

    /// A simulation with `seed`, `server` configuration, and `configure` applied to the
    /// turmoil builder after faultline's defaults.
    pub fn with(
        seed: u64,
        server: ServerConfig,
        configure: impl FnOnce(&mut turmoil::Builder),
    ) -> Self {
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(seed)
            .tick_duration(TICK)
            .min_message_latency(LATENCY)
            .max_message_latency(LATENCY)
            .simulation_duration(Duration::from_secs(15 * 60))
            .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS));
        configure(&mut builder);
        let mut sim = builder.build();
        let server = SimServer::new(server);
        let software = server.clone();
        sim.host(SERVER_HOST, move || {
            let server = software.clone();
            async move { server.serve().await.map_err(Into::into) }
        });
        Self {
            seed,
            sim,
            server,
            trace: Trace::default(),
            clients: 0,
            nets: std::collections::BTreeMap::new(),
        }
    }

    /// The server's controls.
    pub fn server(&self) -> ServerControl {
        self.server.control()
    }

    /// The events recorded so far (shared: it keeps filling as the simulation runs).
    pub fn trace(&self) -> Trace {
        self.trace.clone()
    }

    /// Simulated time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// The underlying turmoil simulation (faults between steps, `crash`, `bounce`…).
    pub fn turmoil(&mut self) -> &mut turmoil::Sim<'a> {
        &mut self.sim
    }

    /// Adds a client host named `host` running `test`.
    ///
    /// The host stops when `test` returns, and with it every task the SDK spawned there: a
    /// `Leave` that `Room::close()` queued but its signalling task had not written yet is
    /// lost, as it would be if a process exited right after `close()`. The server then
    /// notices the closed transports instead (removal 5 s later).
    pub fn client<F, Fut, E>(&mut self, host: &str, test: F)
    where
        F: FnOnce(ClientContext) -> Fut,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Into<Box<dyn std::error::Error>> + 'static,
    {
        self.clients += 1;
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.clients);
        let network = FaultyNetwork::new(Arc::new(TurmoilNetwork), seed);
        self.nets.insert(host.to_owned(), network.faults());
        let context = ClientContext {
            host: host.to_owned(),
            seed,
            server: self.server.clone(),
            trace: self.trace.clone(),
            network,
        };
        let future = test(context);
        self.sim.client(host, async move { future.await.map_err(Into::into) });
    }

    /// The socket faults of client host `host` (`None` for an unknown host): the same
    /// switches the real lane has on a participant's sockets.
    pub fn net_faults(&self, host: &str) -> Option<NetFaults> {
        self.nets.get(host).cloned()
    }

    /// Applies a network or server fault of a schedule (between steps). `offline`/`online`
    /// act on the participant's socket faults, the rest on turmoil ([`Fault::apply`]).
    pub fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Offline { participant } => {
                if let Some(net) = self.net_faults(participant) {
                    net.hold_signalling();
                    net.refuse_new_signalling();
                    net.partition_media(Direction::Both);
                }
            }
            Fault::Online { participant } => {
                if let Some(net) = self.net_faults(participant) {
                    net.heal();
                }
            }
            Fault::Media { participant, direction, loss_percent, delay_ms } => {
                if let Some(net) = self.net_faults(participant) {
                    if let Some(percent) = loss_percent {
                        // In range: the schedule was validated.
                        let _ = net.set_media_loss(*direction, *percent);
                    }
                    if let Some(ms) = delay_ms {
                        net.set_media_delay(*direction, Duration::from_millis(*ms));
                    }
                }
            }
            Fault::MediaHeal { participant } => {
                if let Some(net) = self.net_faults(participant) {
                    net.heal_media();
                }
            }
            Fault::Signal { participant, mode } => {
                if let Some(net) = self.net_faults(participant) {
                    match mode {
                        ProxyMode::Kill => {
                            net.refuse_new_signalling();
                            net.sever_signalling();
                        }
                        ProxyMode::BlackHole => net.black_hole_signalling(),
                        ProxyMode::Pause => net.hold_signalling(),
                        ProxyMode::RefuseNew => net.refuse_new_signalling(),
                        // Refused by the schedule's validation.
                        ProxyMode::Throttle => {}
                    }
                }
            }
            Fault::SignalHeal { participant } => {
                if let Some(net) = self.net_faults(participant) {
                    net.heal_signalling();
                }
            }
            other => other.apply(&mut self.sim),
        }
    }

    /// Runs the simulation until `elapsed` simulated time has passed (or every client
    /// finished), so a test can act between steps: `crash`/`bounce` the server through
    /// [`Self::turmoil`], partition hosts, and so on.
    pub fn run_until(&mut self, elapsed: Duration) -> Result<(), SimError> {
        let seed = self.seed;
        while self.sim.elapsed() < elapsed {
            let finished =
                self.sim.step().map_err(|e| SimError::Run { seed, reason: e.to_string() })?;
            if finished {
                break;
            }
        }
        Ok(())
    }

    /// Runs until every client finished; returns the recorded trace.
    pub fn run(mut self) -> Result<Trace, SimError> {
        let seed = self.seed;
        self.sim.run().map_err(|e| SimError::Run { seed, reason: e.to_string() })?;
        Ok(self.trace)
    }
}
