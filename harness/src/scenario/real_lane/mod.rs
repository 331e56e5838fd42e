//! Running a scenario on the real lane: the real livekit-server, a fault path per
//! participant, the fault timeline on the wall clock, everything recorded.
//!
//! Each participant's signalling goes `FaultyNetwork(TokioNetwork) → [toxiproxy proxy] →
//! killable Proxy → livekit-server` (the toxiproxy hop only for participants a `toxic` fault
//! targets) and its media goes through the same `FaultyNetwork`. The runner joins everyone to
//! a fresh room, waits until everyone sees everyone, and takes that moment as the zero of the
//! timeline. It then starts each fault at its `at` and heals it at `at + for`, keeps watching
//! for `settle` after the last heal (and, while an expectation is still unmet, up to the
//! latest bound an expectation names), and judges the record ([`crate::judge`]). It never
//! stops while a participant is `Reconnecting` and its episode may still end within the
//! participant's bound ([`ParticipantRecord::reconnect_bound`]), and an episode that ends late
//! is watched for `settle` after its `Reconnected` (while an expectation is unmet), so the
//! verdict does not depend on the `settle` the file guessed. Once every room has ended (`Disconnected`) nothing more
//! can happen, so the run stops there.
//!
//! How each fault is done here:
//!
//! | fault | real lane |
//! |---|---|
//! | `partition` | the killable proxy pauses (bytes held, delivered at the heal), the socket wrapper refuses new signalling connections and drops all media |
//! | `signal-proxy` | the killable proxy's mode (`kill`, `black-hole`, `pause`, `refuse-new`) or throttle |
//! | `toxic` | the toxic on the participant's toxiproxy proxy, removed at the heal |
//! | `media` | loss and/or delay in the socket wrapper; the heal clears all of the target's media faults |
//! | `network-change` | the socket wrapper moves to a new local address (127.0.0.2, .3, …) |
//! | `server-kill` | SIGKILL; with `for`, a restart on the same ports at the heal (the run then uses a server of its own, never the shared one) |
//! | `remove-participant`, `delete-room` | RoomService calls |
//! | `simulate` | `Room::simulate_scenario` |
//! | `close` | `Room::close` |
//! | `node-kill`, `node-restart`, `node-drain`, `redis-kill` | on the `[cluster]` ([`crate::cluster`]): SIGKILL, kill and start again, SIGTERM; with `for`, a restart (a kill, for a drain) at the heal |
//!
//! In a `[cluster]` scenario the killable proxy is each participant's way into the cluster:
//! it sends new connections to the participant's node while that node is up, else to the
//! next one that is (a load balancer), and the record lists every change of node, route and
//! room placement ([`RunRecord::cluster`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_sdk::net::{Network, TokioNetwork};
use faultline_sdk::{ConnectionState, RoomOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod faults;

use super::backend::Backend;
use super::format::{
    Fault, FaultStep, Firewall, Lane, NodeRef, ParticipantSpec, ProxyMode, Scenario,
};
use super::lane::{label, lanes, Observer, Progress, RunError, RunOptions, QUIET_WAIT_CAP};
use crate::client::{Client, ClientError, ClientEvent, ClientOptions, Observed, Sdk};
use crate::cluster::ClusterEvent;
use crate::judge;
use crate::net::{self, FaultyNetwork, NetFaults};
use crate::netns::{Link, Namespace, NamespaceNetwork, Scope, Topology};
use crate::provision::ProvisionEnv;
use crate::proxy::Proxy;
use crate::record::ClusterRecord;
use crate::record::{
    data_payload, EventRecord, FaultRecord, ParticipantRecord, Published, RunRecord, DATA_TOPIC,
};
use crate::token::TokenSpec;
use crate::toxiproxy::{self, ToxicGuard, Toxiproxy};

/// How long joining everyone (and everyone seeing everyone) may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the runner re-judges while waiting for unmet expectations.
const RECHECK: Duration = Duration::from_millis(100);

/// Checks, before anything starts, that the real lane can run `scenario`: it must list the
/// lane. (The real lane can do every fault of the format; a server it cannot kill is found
/// once the server is known.)
pub fn check_real_lane(scenario: &Scenario, file: &Path) -> Result<(), RunError> {
    if !scenario.lanes.contains(&Lane::Real) {
        return Err(RunError::LaneNotListed {
            file: file.to_owned(),
            scenario: scenario.name.clone(),
            lane: Lane::Real,
            listed: lanes(scenario),
        });
    }
    check_sdks(scenario, file)
}

/// Checks that each participant's SDK can take what the scenario asks of it: a reconnect
/// policy, the faults aimed at it, the scenarios it is asked to simulate.
pub fn check_sdks(scenario: &Scenario, file: &Path) -> Result<(), RunError> {
    let refuse = |identity: &str, sdk: Sdk, what: String| RunError::SdkCannot {
        file: file.to_owned(),
        identity: identity.to_owned(),
        sdk,
        what,
    };
    for spec in &scenario.participants {
        let (identity, sdk) = (spec.identity.get_ref(), spec.sdk);
        if spec.reconnect.is_set() && !sdk.takes_reconnect_policy() {
            return Err(refuse(
                identity,
                sdk,
                "a `reconnect` policy, but its attempts and delays are constants of its engine; \
                 remove the participant's `reconnect` table"
                    .into(),
            ));
        }
    }
    for (index, step) in scenario.faults.iter().enumerate() {
        let Some(spec) = hit(scenario, step) else { continue };
        let (identity, sdk) = (spec.identity.get_ref(), spec.sdk);
        if on_sockets(&step.fault) && on_kernel(scenario, spec) {
            if scenario.cluster.is_some() {
                return Err(refuse(
                    identity,
                    sdk,
                    format!(
                        "fault #{index} (`{}`) in a `[cluster]` scenario: another SDK's \
                         connection, and any emulated link condition, is faulted in network \
                         namespaces, and the cluster's nodes run on loopback; fault the \
                         cluster instead (node-kill, node-drain, redis-kill), or run the \
                         participant with `sdk = \"faultline\"` and only `loss_percent` or \
                         `delay` on its media",
                        step.fault.kind()
                    ),
                ));
            }
            if let Err(e) = Topology::available() {
                return Err(refuse(
                    identity,
                    sdk,
                    format!(
                        "fault #{index} (`{}`) here: only faultline-sdk's own sockets can be \
                         wrapped (for loss and delay), and another SDK's link, or any other \
                         link condition, is faulted in network namespaces: {e}",
                        step.fault.kind()
                    ),
                ));
            }
        }
        if let Fault::Simulate { scenario: kind } = &step.fault {
            if let Some(why) = sdk.cannot_simulate(*kind) {
                return Err(refuse(
                    identity,
                    sdk,
                    format!("fault #{index} (simulate {kind:?}): {why}"),
                ));
            }
        }
    }
    Ok(())
}

/// One participant: its client (of any SDK) and its fault path.
struct Participant {
    identity: String,
    /// Its record so far (what it published is in `published` until the snapshot).
    record: ParticipantRecord,
    published: Arc<Mutex<Vec<Published>>>,
    client: Arc<Client>,
    /// Its sockets' fault wrapper: faultline-sdk's only (other SDKs own their sockets).
    net: Option<NetFaults>,
    /// Its client link in the run's topology (another SDK in a run with kernel faults).
    link: Option<usize>,
    proxy: Proxy,
    toxic_proxy: Option<toxiproxy::Proxy>,
    forwarder: JoinHandle<()>,
    /// Its state and sid as the SDK reported them when recording stopped.
    finished: Option<(ConnectionState, String)>,
}

/// A running scenario.
struct Runner<'a> {
    scenario: &'a Scenario,
    file: PathBuf,
    seed: u64,
    observer: Option<Observer>,
    quiet: Option<Duration>,
    backend: Backend,
    room: String,
    clients: Vec<Participant>,
    env: ProvisionEnv,
    /// The network namespaces of a run with kernel-level faults: participant `i` is on
    /// client link `i`.
    topology: Option<Topology>,
    started: Instant,
    zero: Option<Instant>,
    events: mpsc::UnboundedReceiver<EventRecord>,
    events_tx: mpsc::UnboundedSender<EventRecord>,
    recorded: Vec<EventRecord>,
    faults: Vec<FaultRecord>,
    toxics: Vec<(usize, ToxicGuard)>,
    networks_changed: AtomicU8,
    publishers: Vec<JoinHandle<()>>,
    /// The logs of the external SDKs' drivers (name, path).
    driver_logs: Vec<(String, PathBuf)>,
    /// The cluster's changes, as published (a `[cluster]` scenario only).
    cluster_events: Option<tokio::sync::broadcast::Receiver<ClusterEvent>>,
    cluster: Vec<ClusterRecord>,
    /// The node each cluster fault acted on (by fault index), for its heal.
    fault_nodes: Vec<(usize, usize)>,
}

/// Runs `scenario` (read from `file`) on the real lane and returns what happened, judged.
/// Starts livekit-server (the process-wide shared one, or one of its own when the scenario
/// kills the server) and toxiproxy (only if a toxic is used).
pub async fn run_real(
    scenario: &Scenario,
    file: &Path,
    options: RunOptions,
) -> Result<RunRecord, RunError> {
    check_real_lane(scenario, file)?;
    let env = ProvisionEnv::from_env();
    let mut sdks: Vec<Sdk> = scenario.participants.iter().map(|p| p.sdk).collect();
    sdks.sort();
    sdks.dedup();
    for sdk in sdks {
        sdk.readiness(&env).map_err(RunError::Client)?;
    }
    let started = Instant::now();
    let mut observer = options.observer;
    let mut say = |text: &str| {
        if let Some(o) = observer.as_mut() {
            o(Progress::Phase(text));
        }
    };
    let topology = if needs_kernel(scenario) {
        say("creating network namespaces (kernel-level faults for SDKs faultline does not own)");
        let topology =
            Topology::create(scenario.participants.len()).await.map_err(RunError::Kernel)?;
        Some(topology)
    } else {
        None
    };
    let backend = Backend::start(scenario, file, topology.as_ref(), &mut say).await?;
    let cluster_events = backend.cluster().map(crate::cluster::Cluster::subscribe);
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut runner = Runner {
        scenario,
        file: file.to_owned(),
        seed: options.seed,
        observer,
        quiet: options.quiet,
        backend,
        room: unique_room(&scenario.name),
        clients: Vec::new(),
        env,
        topology,
        started,
        zero: None,
        events,
        events_tx,
        recorded: Vec::new(),
        faults: Vec::new(),
        toxics: Vec::new(),
        networks_changed: AtomicU8::new(0),
        publishers: Vec::new(),
        driver_logs: Vec::new(),
        cluster_events,
        cluster: Vec::new(),
        fault_nodes: Vec::new(),
    };
    let result = runner.run().await;
    runner.teardown().await;
    result
}

/// A room name no other run (in any process) uses.
fn unique_room(scenario: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name: String =
        scenario.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{name}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Runner<'_> {
    fn say(&mut self, text: &str) {
        if let Some(o) = self.observer.as_mut() {
            o(Progress::Phase(text));
        }
    }

    fn server_log(&self) -> String {
        self.backend.log()
    }

    async fn run(&mut self) -> Result<RunRecord, RunError> {
        let toxiproxy =
            if self.scenario.faults.iter().any(|f| matches!(f.fault, Fault::Toxic { .. })) {
                self.say("starting toxiproxy");
                Some(Toxiproxy::shared().await?)
            } else {
                None
            };
        self.backend.prepare_room(self.scenario, &self.room).await?;
        for (index, spec) in self.scenario.participants.iter().enumerate() {
            let identity = spec.identity.get_ref().clone();
            self.say(&format!("joining {identity} to room {}", self.room));
            let toxic_target = self.scenario.faults.iter().any(|f| {
                matches!(f.fault, Fault::Toxic { .. })
                    && f.target.as_ref().is_none_or(|t| *t.get_ref() == identity)
            });
            // In a run with namespaces the proxies listen where the client namespaces reach
            // them: the root namespace's end of the topology.
            let listen = self
                .topology
                .as_ref()
                .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |t| IpAddr::V4(t.root_address()));
            let route = self.backend.route(self.scenario, index)?;
            let proxy = Proxy::start_routed(SocketAddr::new(listen, 0), route).await?;
            let (toxic_proxy, url) = match (&toxiproxy, toxic_target) {
                (Some(tp), true) => {
                    let name = format!("{}-{identity}", self.room);
                    let upstream = proxy.local_addr().to_string();
                    let p = tp
                        .client()
                        .create_proxy_on(&name, &SocketAddr::new(listen, 0).to_string(), &upstream)
                        .await?;
                    let url = format!("ws://{}", p.listen_addr()?);
                    (Some(p), url)
                }
                _ => (None, proxy.ws_url()),
            };
            let seed = self.seed.wrapping_add(index as u64);
            let sdk = spec.sdk;
            // The topology has a client link per participant, in file order.
            let link = (self.topology.is_some() && on_kernel(self.scenario, spec)).then_some(index);
            let namespace =
                link.zip(self.topology.as_ref()).map(|(i, t)| t.clients()[i].namespace().clone());
            let (mut options, net) = client_options(spec, seed, namespace.clone());
            if !sdk.in_process() {
                options.namespace = namespace;
                self.say(&format!("starting the {sdk} client for {identity}"));
            }
            let mut token_spec = TokenSpec::join(&self.room, &identity);
            if let Some(ttl) = spec.token_ttl {
                token_spec = token_spec.with_ttl(ttl);
            }
            if let Some(rule) = spec.firewall {
                self.say(&format!("putting {identity} behind a {} firewall", rule.name()));
            }
            let join_error = |why: String| RunError::Join {
                identity: identity.clone(),
                room: self.room.clone(),
                why,
                log: self.server_log(),
            };
            let mut record = match sdk {
                Sdk::Faultline => ParticipantRecord::faultline(&identity, &options.faultline),
                _ => ParticipantRecord::external(&identity, sdk, &options),
            };
            record.tracks = spec.tracks.iter().map(|t| t.source()).collect();
            if let Some(rule) = spec.firewall {
                let link = link.and_then(|i| self.topology.as_ref().map(|t| &t.clients()[i]));
                self.firewall(link, net.as_ref(), rule).await.map_err(&join_error)?;
            }
            // A first use builds or installs the SDK: not on the join's clock.
            sdk.prepare(&self.env).await.map_err(RunError::Client)?;
            let token = self.backend.token_with(&token_spec)?;
            let connect = Client::connect(sdk, &url, &token, options, &self.env);
            let (client, mut events) = match tokio::time::timeout(JOIN_TIMEOUT, connect).await {
                Err(_) => return Err(join_error(format!("no answer within {JOIN_TIMEOUT:?}"))),
                Ok(Err(
                    e @ (ClientError::Unavailable { .. }
                    | ClientError::LocalBuild { .. }
                    | ClientError::Version { .. }),
                )) => return Err(RunError::Client(e)),
                Ok(Err(e)) => return Err(join_error(e.to_string())),
                Ok(Ok(joined)) => joined,
            };
            record.build = client.build();
            record.joined_sid =
                client.state().await.map_err(|e| join_error(e.to_string()))?.local_sid;
            let tx = self.events_tx.clone();
            let started = self.started;
            let who = identity.clone();
            let forwarder = tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let record =
                        EventRecord { participant: who.clone(), at: started.elapsed(), event };
                    if tx.send(record).is_err() {
                        break;
                    }
                }
            });
            if let Some(log) = client.log_path() {
                self.driver_logs.push((format!("{identity} ({sdk} driver)"), log.to_owned()));
            }
            self.clients.push(Participant {
                identity,
                record,
                published: Arc::default(),
                client: Arc::new(client),
                net,
                link,
                proxy,
                toxic_proxy,
                forwarder,
                finished: None,
            });
        }
        self.wait_everyone_sees_everyone().await?;
        self.publish_tracks().await?;
        self.wait_media_flowing().await?;
        let zero = Instant::now();
        self.zero = Some(zero);
        if let Some(o) = self.observer.as_mut() {
            o(Progress::TimelineStarted(zero - self.started));
        }
        self.start_publishers(zero);
        let mut steps: Vec<(Duration, bool, usize)> = Vec::new();
        for (index, step) in self.scenario.faults.iter().enumerate() {
            steps.push((step.at, true, index));
            if let (Some(lasts), false) = (step.duration, step.fault.is_instant()) {
                steps.push((step.at + lasts, false, index));
            }
        }
        // At the same moment, heal before starting the next fault.
        steps.sort_by_key(|(at, start, index)| (*at, *start, *index));
        for (at, start, index) in steps {
            self.pump_until(zero + at).await;
            if self.all_disconnected() {
                break;
            }
            if start {
                self.start_fault(index).await?;
            } else {
                self.heal_fault(index).await?;
            }
        }
        let publish_end = self
            .scenario
            .participants
            .iter()
            .filter_map(|p| p.publish.as_ref())
            .map(|p| p.every * p.count.saturating_sub(1))
            .max()
            .unwrap_or_default();
        let watch_until =
            zero + self.scenario.last_fault_end().max(publish_end) + self.scenario.settle;
        while Instant::now() < watch_until && !self.all_disconnected() {
            self.pump_until((Instant::now() + RECHECK).min(watch_until)).await;
        }
        let hard_end = watch_until.max(zero + judge::latest_bound(self.scenario) + RECHECK);
        // Past `hard_end` only while an open episode may still end within its bound; never
        // longer than the longest bound past it.
        let longest = self.clients.iter().map(|c| c.record.reconnect_bound).max();
        let last_end = hard_end + longest.unwrap_or_default();
        loop {
            // Media that must come back (invariant 6) may keep the run a little longer.
            let media_by = judge::media_pending_until(&self.snapshot())
                .map(|at| (self.started + at).min(last_end + judge::MEDIA_BOUND));
            // An episode that ended late is watched for `settle` after its `Reconnected`, as
            // the heal was: what the file expects once things are back (media flowing, data
            // delivered) must not hang on when a retry happened to meet the server.
            let late = self.last_reconnected().map(|at| (at + self.scenario.settle).min(last_end));
            let end = self
                .open_episodes_end()
                .map_or(hard_end, |by| hard_end.max(by))
                .min(last_end)
                .max(media_by.unwrap_or(hard_end))
                .max(late.unwrap_or(hard_end));
            if Instant::now() >= end || judge::settled(self.scenario, &self.snapshot()) {
                break;
            }
            self.pump_until((Instant::now() + RECHECK).min(end)).await;
        }
        if let Some(quiet) = self.quiet {
            let cap = Instant::now() + QUIET_WAIT_CAP;
            loop {
                let last = self
                    .recorded
                    .iter()
                    .filter(|e| e.event.lifecycle().is_some() || e.event.is_participant_change())
                    .map(|e| self.started + e.at)
                    .max();
                let until = last.map_or(cap, |at| at + quiet).min(cap);
                if Instant::now() >= until || self.all_disconnected() {
                    break;
                }
                self.pump_until(until).await;
            }
        }
        self.finish().await;
        let mut record = self.snapshot();
        record.verdicts = judge::judge(self.scenario, &record);
        Ok(record)
    }

    /// When the last open episode's bound passes (its `Reconnecting` plus its participant's
    /// bound), if anyone is reconnecting.
    /// When the last `Reconnected` of anyone was recorded.
    fn last_reconnected(&self) -> Option<Instant> {
        self.recorded
            .iter()
            .filter(|e| matches!(e.event, ClientEvent::Reconnected))
            .map(|e| self.started + e.at)
            .max()
    }

    fn open_episodes_end(&self) -> Option<Instant> {
        self.clients
            .iter()
            .filter_map(|c| {
                let began = judge::reconnecting_since(&self.recorded, &c.identity)?;
                Some(self.started + began + c.record.reconnect_bound)
            })
            .max()
    }

    /// Whether every room has ended: nothing more can happen, so the run can stop early.
    fn all_disconnected(&self) -> bool {
        self.clients.iter().all(|c| self.state_of(c) == ConnectionState::Disconnected)
    }

    /// A participant's connection state now: faultline-sdk's own, another SDK's as its
    /// last lifecycle event left it (asking a driver on every event would slow the run; the
    /// SDK's own answer is taken once, when recording stops, and judged against the events).
    fn state_of(&self, c: &Participant) -> ConnectionState {
        if let Some((state, _)) = &c.finished {
            return *state;
        }
        if let Some(room) = c.client.room() {
            return room.connection_state();
        }
        self.recorded
            .iter()
            .rev()
            .filter(|e| e.participant == c.identity)
            .find_map(|e| e.event.lifecycle())
            .map_or(ConnectionState::Connected, |step| step.resulting_state())
    }

    /// Records events until everyone's room lists every other participant.
    async fn wait_everyone_sees_everyone(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let mut missing = None;
            for c in &self.clients {
                let remotes = match c.client.state().await {
                    Ok(state) => state.remotes,
                    Err(e) => {
                        return Err(RunError::Join {
                            identity: c.identity.clone(),
                            room: self.room.clone(),
                            why: e.to_string(),
                            log: self.server_log(),
                        })
                    }
                };
                let absent = self.clients.iter().find(|o| {
                    o.identity != c.identity && !remotes.iter().any(|(who, _)| *who == o.identity)
                });
                if let Some(o) = absent {
                    missing = Some((c.identity.clone(), o.identity.clone()));
                    break;
                }
            }
            let Some((who, whom)) = missing else { return Ok(()) };
            if Instant::now() >= deadline {
                return Err(RunError::Join {
                    identity: who.clone(),
                    room: self.room.clone(),
                    why: format!("{who} did not see {whom} in the room within {JOIN_TIMEOUT:?}"),
                    log: self.server_log(),
                });
            }
            self.pump_until(Instant::now() + Duration::from_millis(20)).await;
        }
    }

    /// Each participant publishes the tracks its spec lists.
    async fn publish_tracks(&mut self) -> Result<(), RunError> {
        let scenario = self.scenario;
        for (index, spec) in scenario.participants.iter().enumerate() {
            for track in &spec.tracks {
                let identity = self.clients[index].identity.clone();
                self.say(&format!("{identity} publishes its {} track", track.source().name()));
                let c = &self.clients[index];
                if let Err(e) = c.client.publish_track(track.source()).await {
                    return Err(RunError::Join {
                        identity: c.identity.clone(),
                        room: self.room.clone(),
                        why: format!("publishing its {track:?} track failed: {e}"),
                        log: self.server_log(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Records events until every participant receives frames of every other participant's
    /// tracks (the scenario's media is flowing before its faults start).
    async fn wait_media_flowing(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            let missing = self.scenario.participants.iter().find_map(|publisher| {
                publisher.tracks.iter().find_map(|track| {
                    let from = publisher.identity.get_ref();
                    let source = track.source();
                    let receiving = |to: &str| {
                        self.recorded.iter().any(|e| {
                            e.participant == to
                                && matches!(&e.event, ClientEvent::Media { tracks } if tracks
                                    .iter()
                                    .any(|t| t.from == *from && t.source == source && t.frames > 0))
                        })
                    };
                    self.clients
                        .iter()
                        .find(|c| c.identity != *from && !receiving(&c.identity))
                        .map(|c| (c.identity.clone(), from.clone(), source))
                })
            });
            let Some((who, from, source)) = missing else { return Ok(()) };
            if Instant::now() >= deadline {
                return Err(RunError::Join {
                    identity: who.clone(),
                    room: self.room.clone(),
                    why: format!(
                        "{who} received no frame of {from}'s {} track within {JOIN_TIMEOUT:?}",
                        source.name()
                    ),
                    log: self.server_log(),
                });
            }
            self.pump_until(Instant::now() + Duration::from_millis(20)).await;
        }
    }

    fn start_publishers(&mut self, zero: Instant) {
        for (spec, client) in self.scenario.participants.iter().zip(&self.clients) {
            let Some(publish) = spec.publish.clone() else { continue };
            let local = client.client.clone();
            let identity = client.identity.clone();
            let published = client.published.clone();
            let started = self.started;
            self.publishers.push(tokio::spawn(async move {
                for n in 0..publish.count {
                    tokio::time::sleep_until(zero + publish.every * n).await;
                    let at = started.elapsed();
                    let sid = match local.room() {
                        Some(room) => room.local_participant().sid(),
                        None => local.state().await.map(|s| s.local_sid).unwrap_or_default(),
                    };
                    let payload = data_payload(&identity, n);
                    if let Err(error) =
                        local.publish(&payload, Some(DATA_TOPIC), true, &[]).await
                    {
                        tracing::warn!(%identity, n, %error, "publishing scenario data failed; stopping");
                        break;
                    }
                    published
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(Published { seq: n, at, sid });
                }
            }));
        }
    }

    /// Records events (telling the observer) until `deadline`, or until every room has ended.
    async fn pump_until(&mut self, deadline: Instant) {
        loop {
            let cluster_changed = async {
                match self.cluster_events.as_mut() {
                    Some(events) => events.recv().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => {
                        self.drain_cluster();
                        self.record(event);
                        if self.all_disconnected() {
                            return;
                        }
                    }
                    None => {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                },
                Some(change) = cluster_changed => {
                    self.record_cluster(change);
                    self.drain_cluster();
                }
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Asks each SDK for its state and sid once recording stops (the judge compares the state
    /// with the last lifecycle event), then records what arrived meanwhile.
    async fn finish(&mut self) {
        self.drain();
        for c in &mut self.clients {
            let answer = c.client.state().await;
            c.finished = Some(match answer {
                Ok(state) => (state.connection_state, state.local_sid),
                // A driver that no longer answers has no room left.
                Err(error) => {
                    tracing::warn!(identity = %c.identity, %error, "reading the final state");
                    (ConnectionState::Disconnected, String::new())
                }
            });
        }
        self.drain();
    }

    /// Records whatever has arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.record(event);
        }
        self.drain_cluster();
    }

    /// Records the cluster's changes published so far.
    fn drain_cluster(&mut self) {
        let Some(events) = self.cluster_events.as_mut() else { return };
        let mut got = Vec::new();
        loop {
            match events.try_recv() {
                Ok(event) => got.push(event),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the run fell behind the cluster's changes");
                }
                Err(_) => break,
            }
        }
        for event in got {
            self.record_cluster(event);
        }
    }

    fn record_cluster(&mut self, event: ClusterEvent) {
        let record = ClusterRecord {
            at: event.at.saturating_duration_since(self.started),
            change: event.change,
        };
        if let Some(o) = self.observer.as_mut() {
            o(Progress::Cluster(&record));
        }
        self.cluster.push(record);
    }

    fn record(&mut self, event: EventRecord) {
        if let Some(o) = self.observer.as_mut() {
            o(Progress::Event(&event));
        }
        self.recorded.push(event);
    }

    fn snapshot(&self) -> RunRecord {
        let now = self.started.elapsed();
        let mut logs = self.backend.logs();
        logs.extend(self.driver_logs.iter().cloned());
        RunRecord {
            scenario: self.scenario.name.clone(),
            description: self.scenario.description.clone(),
            file: self.file.clone(),
            lane: Lane::Real,
            seed: self.seed,
            room: self.room.clone(),
            participants: self
                .clients
                .iter()
                .map(|c| ParticipantRecord {
                    final_sid: match (&c.finished, c.client.room()) {
                        (Some((_, sid)), _) => sid.clone(),
                        (None, Some(room)) => room.local_participant().sid(),
                        (None, None) => String::new(),
                    },
                    published: c
                        .published
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                    ..c.record.clone()
                })
                .collect(),
            timeline_zero: self.zero.map_or(now, |z| z - self.started),
            ended: now,
            faults: self.faults.clone(),
            events: self.recorded.clone(),
            final_states: self
                .clients
                .iter()
                .map(|c| (c.identity.clone(), self.state_of(c)))
                .collect(),
            verdicts: Vec::new(),
            logs,
            cluster: self.cluster.clone(),
        }
    }

    /// Stops recording, closes every room and removes every proxy and toxic.
    async fn teardown(&mut self) {
        for p in self.publishers.drain(..) {
            p.abort();
        }
        for (_, guard) in self.toxics.drain(..) {
            if let Err(error) = guard.remove().await {
                tracing::warn!(%error, "removing a toxic after the run");
            }
        }
        for client in self.clients.drain(..) {
            client.forwarder.abort();
            if let Err(error) = client.client.close().await {
                tracing::warn!(identity = %client.identity, %error, "closing a room after the run");
            }
            if let Some(p) = client.toxic_proxy {
                if let Err(error) = p.delete().await {
                    tracing::warn!(%error, "deleting a toxiproxy proxy after the run");
                }
            }
            drop(client.proxy);
        }
    }
}

/// Whether `fault` acts on the client's own connection (sockets or, for another SDK, its
/// link in the kernel).
fn on_sockets(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Partition {}
            | Fault::Media { .. }
            | Fault::NetworkChange {}
            | Fault::Firewall { .. }
    )
}

/// The participant a fault step acts on: its target, else the first participant (as the
/// runner applies it).
fn hit<'a>(scenario: &'a Scenario, step: &FaultStep) -> Option<&'a ParticipantSpec> {
    match &step.target {
        Some(target) => scenario.participant(target.get_ref()),
        None => scenario.participants.first(),
    }
}

/// Whether a run of `scenario` needs network namespaces: a participant's connection is
/// faulted there.
fn needs_kernel(scenario: &Scenario) -> bool {
    let ice_tcp = scenario.server.as_ref().is_some_and(|s| s.get_ref().ice_tcp == Some(true));
    ice_tcp || scenario.participants.iter().any(|p| on_kernel(scenario, p))
}

/// Whether `participant`'s connection is faulted in a network namespace (the kernel and the
/// link emulator) rather than by faultline-sdk's socket wrappers: another SDK's whenever a
/// fault acts on its connection; faultline-sdk's when a `media` fault asks it for more than
/// the wrappers do (loss and delay). Another SDK behind a `firewall` from its join too.
fn on_kernel(scenario: &Scenario, participant: &ParticipantSpec) -> bool {
    if participant.firewall.is_some() && !participant.sdk.in_process() {
        return true;
    }
    let hits = |step: &&FaultStep| {
        hit(scenario, step).is_some_and(|p| p.identity.get_ref() == participant.identity.get_ref())
    };
    scenario.faults.iter().filter(hits).any(|step| match &step.fault {
        Fault::Media(media) if media.needs_emulator() => true,
        fault => on_sockets(fault) && !participant.sdk.in_process(),
    })
}

/// How a participant connects: faultline-sdk through a fault wrapper on its sockets with
/// the run's seed and the file's policy overrides; another SDK with the overrides as a
/// policy of its own, if the file sets any.
fn client_options(
    spec: &ParticipantSpec,
    seed: u64,
    namespace: Option<Namespace>,
) -> (ClientOptions, Option<NetFaults>) {
    let overrides = &spec.reconnect;
    let policy = overrides.policy();
    if spec.sdk.in_process() {
        let inner: Arc<dyn Network> = match namespace {
            Some(namespace) => Arc::new(NamespaceNetwork::new(namespace)),
            None => Arc::new(TokioNetwork),
        };
        let network = FaultyNetwork::new(inner, seed);
        let net = network.faults();
        let faultline = RoomOptions {
            network: Arc::new(network),
            rng_seed: Some(seed),
            reconnect: policy,
            ..RoomOptions::default()
        };
        (ClientOptions { reconnect: None, faultline, namespace: None }, Some(net))
    } else {
        let reconnect = overrides.is_set().then_some(policy);
        (ClientOptions { reconnect, ..ClientOptions::default() }, None)
    }
}
