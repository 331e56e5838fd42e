//! The user-space link emulator: what the kernel here cannot do to a client's packets
//! (delay, jitter, reordering, duplication, bursty loss, a replayed link), done by the
//! harness on real packets.
//!
//! One TUN device, [`DEVICE`], lives in the server namespace. Once a client's link is given
//! a [`Condition`] ([`Emulator::set`]), policy-routing rules send that client's traffic
//! into the device: what arrives from the client on its veth (`iif c<i>`; but for its
//! gateway's address, which ARP looks up), and what is routed to its /29 (from livekit-server or, through the root link, from the proxies). A
//! reader thread takes each packet, asks the [`Pipe`] of its client and way when it leaves
//! (`faultline-link`, a seeded model with no I/O), and a writer thread writes it back into
//! the device at that time; the kernel, seeing it arrive on [`DEVICE`] (the first rules send
//! that to the local and main tables), routes it on to where it was going. The local
//! table's rule moves behind the clients' (else what a client sends the server would be
//! delivered before it could be diverted), the device accepts packets from the server's
//! own address (`accept_local`), which it hands back on the way to a client, and early
//! demux is off in the namespace (it would tie a client's TCP segment to the server's
//! socket before routing sends it here, and the kernel drops such a packet). So the emulator adds to the
//! kernel path and replaces none of it: the veth's nftables drops and tc rate limits still
//! apply, after (towards the client) or before (towards the server) the emulator.
//!
//! Why a TUN and not veth + AF_PACKET (as `rattan` does): the server namespace already
//! routes every client's traffic, so one device and two rules per client put the emulator
//! in the path without new namespaces or bridges, and take it out again by deleting the
//! rules; a TUN hands over whole IP packets, which is what the model needs.
//!
//! Timing: the writer sleeps on a condition variable until the earliest departure (the
//! kernel's futex timeout, not tokio's 1 ms timer wheel), and a packet with nothing to wait
//! for and nothing queued is written by the reader at once. The writer asks for no timer
//! slack: by default the kernel may defer a sleeping thread's wakeup by 50 µs to batch
//! timers, which every delayed packet would inherit. On 2 cores, under `faultline bench
//! link`'s 50 ms delay at 1000 packets/s, the writer wrote a median 80 µs after the
//! departure with the default slack and 35–40 µs without; its p99 went from 0.3–0.6 ms to
//! about 0.15 ms. Spinning through the last 100 µs brought the median to 0 but cost a
//! twentieth of a core and lengthened the tail when the machine was busy: what is left of
//! the tail is the scheduler's.
//! The device, its rules and threads go when the [`Emulator`] is dropped; after a SIGKILL
//! the device goes with the process's descriptor and the rules with the namespace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use faultline_link::{Condition, Departures, Pipe, PipeStats};
use tun_rs::{DeviceBuilder, InterruptEvent, SyncDevice};

use super::command::run;
use super::error::{NetnsError, Tool};
use super::link::{Scope, Way};
use super::namespace::Namespace;
use super::plan::{Block, LINK_PREFIX, MAX_CLIENTS};
use super::{ICE_TCP_PORT, MEDIA_UDP_PORT};

/// The TUN device's name in the server namespace.
pub(super) const DEVICE: &str = "emu";
/// The routing table whose only route is into [`DEVICE`].
const TABLE: &str = "100";
/// The rules that hand what comes out of the emulator to the local table (the server's
/// address) and the main one (everything else): this one and the next. The clients' rules
/// come after them (three per client, from [`CLIENT_RULES`]).
const BACK_RULE: u32 = 100;
/// Where the local table's rule moves to (from 0): after every client's rules.
const LOCAL_RULE: u32 = CLIENT_RULES + 3 * MAX_CLIENTS as u32;
/// The first client rule's priority.
const CLIENT_RULES: u32 = 110;
/// The largest packet the device carries (its MTU, as the veths').
const MTU: u16 = 1500;

/// The emulator of one topology; see the [module docs](self).
pub(super) struct Emulator {
    shared: Arc<Shared>,
    interrupt: Arc<InterruptEvent>,
    threads: Vec<JoinHandle<()>>,
    namespace: Namespace,
    block: Block,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// What the reader and writer threads share.
struct Shared {
    device: SyncDevice,
    block: Block,
    state: Mutex<State>,
    /// Signalled when the queue's head changes or the emulator stops.
    due: Condvar,
}

/// The pipes and the packets waiting to leave.
struct State {
    epoch: Instant,
    pipes: HashMap<(usize, Way), (Scope, Pipe)>,
    /// Clients whose traffic is routed through the device.
    routed: Vec<usize>,
    queue: BinaryHeap<Reverse<Held>>,
    /// Breaks ties in the queue: equal departures leave in arrival order.
    sequence: u64,
    stop: bool,
}

/// A packet waiting for its departure.
struct Held {
    at: Instant,
    sequence: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

impl Emulator {
    /// Creates the device in the server namespace, the table and rule that route what
    /// leaves it, and starts its threads. No client's traffic passes it yet.
    pub(super) async fn start(server: &Namespace, block: Block) -> Result<Emulator, NetnsError> {
        let ns = server.name().to_string();
        let enter = |source| NetnsError::Enter { namespace: ns.clone(), source };
        let device = server
            .run(|| -> std::io::Result<SyncDevice> {
                let device = DeviceBuilder::new().name(DEVICE).mtu(MTU).build_sync()?;
                // The packets it hands back come from the clients' addresses, which the
                // kernel routes through other devices, and from the server's own.
                let conf = |name: &str, key: &str, value: &str| {
                    std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/{key}"), value)
                };
                conf("all", "rp_filter", "0")?;
                conf(DEVICE, "rp_filter", "0")?;
                conf(DEVICE, "accept_local", "1")?;
                // Early demux hands a packet for a local TCP connection its socket before
                // routing; routed here instead, the kernel drops it ("forwarding a packet
                // that has a socket"), and every established ICE/TCP flow would die.
                std::fs::write("/proc/sys/net/ipv4/ip_early_demux", "0")?;
                Ok(device)
            })?
            .map_err(enter)?;
        let (back, back_main) = (BACK_RULE.to_string(), (BACK_RULE + 1).to_string());
        let local = LOCAL_RULE.to_string();
        let commands: [&[&str]; 6] = [
            &["-n", &ns, "link", "set", DEVICE, "up"],
            &["-n", &ns, "route", "add", "default", "dev", DEVICE, "table", TABLE],
            &["-n", &ns, "rule", "add", "priority", &back, "iif", DEVICE, "lookup", "local"],
            &["-n", &ns, "rule", "add", "priority", &back_main, "iif", DEVICE, "lookup", "main"],
            // The local table's rule comes first by default, and would deliver what a
            // client sends the server before the clients' rules could send it here.
            &["-n", &ns, "rule", "add", "priority", &local, "lookup", "local"],
            &["-n", &ns, "rule", "del", "priority", "0", "lookup", "local"],
        ];
        for args in commands {
            run(Tool::Ip, args).await?;
        }
        let shared = Arc::new(Shared {
            device,
            block,
            state: Mutex::new(State {
                epoch: Instant::now(),
                pipes: HashMap::new(),
                routed: Vec::new(),
                queue: BinaryHeap::new(),
                sequence: 0,
                stop: false,
            }),
            due: Condvar::new(),
        });
        let interrupt = Arc::new(InterruptEvent::new().map_err(enter)?);
        let spawn = |name: &str, body: fn(&Shared, &InterruptEvent)| {
            let (shared, interrupt) = (Arc::clone(&shared), Arc::clone(&interrupt));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&shared, &interrupt))
                .map_err(enter)
        };
        let threads = vec![spawn("link-emu-read", read)?, spawn("link-emu-write", write)?];
        Ok(Emulator { shared, interrupt, threads, namespace: server.clone(), block })
    }

    /// Gives client `index`'s traffic of `scope` going `way` this condition from now on
    /// (replacing the one it had; packets already queued keep their departures), and
    /// routes the client's traffic through the device if it was not yet. `seed` seeds the
    /// pipe's randomness the first time that way is set.
    pub(super) async fn set(
        &self,
        index: usize,
        way: Way,
        scope: Scope,
        condition: Condition,
        seed: u64,
    ) -> Result<(), NetnsError> {
        condition.validate().map_err(|e| NetnsError::InvalidFault(e.to_string()))?;
        let unrouted = {
            let mut state = self.shared.lock();
            let now = state.epoch.elapsed();
            match state.pipes.get_mut(&(index, way)) {
                Some((old_scope, pipe)) => {
                    *old_scope = scope;
                    pipe.set(condition, now)
                }
                // A pipe's clock starts at zero: a trace or delay series must count from
                // now, so the pipe starts perfect and is given the condition now.
                None => Pipe::new(Condition::default(), seed).and_then(|mut pipe| {
                    pipe.set(condition, now)?;
                    state.pipes.insert((index, way), (scope, pipe));
                    Ok(())
                }),
            }
            .map_err(|e| NetnsError::InvalidFault(e.to_string()))?;
            !state.routed.contains(&index)
        };
        if unrouted {
            self.route(index).await?;
            self.shared.lock().routed.push(index);
        }
        Ok(())
    }

    /// Takes every condition of client `index` away (its traffic still passes the device,
    /// untouched).
    pub(super) fn clear(&self, index: usize) {
        self.shared.lock().pipes.retain(|(client, _), _| *client != index);
    }

    /// The counters of client `index`'s pipe going `way`, if it was ever set.
    pub(super) fn stats(&self, index: usize, way: Way) -> Option<PipeStats> {
        self.shared.lock().pipes.get(&(index, way)).map(|(_, pipe)| pipe.stats())
    }

    /// The rules that send client `index`'s traffic into the device: what it sends (but
    /// for its gateway's own address, which ARP must find local) and what is sent to it.
    async fn route(&self, index: usize) -> Result<(), NetnsError> {
        let ns = self.namespace.name();
        let first = CLIENT_RULES + 3 * index as u32;
        let [gateway_rule, from_client, to_client] =
            [first, first + 1, first + 2].map(|p| p.to_string());
        let veth = format!("c{index}");
        let gateway = self.block.client_gateway(index).to_string();
        let subnet = format!("{}/{LINK_PREFIX}", self.block.client_subnet(index));
        let rules: [&[&str]; 3] = [
            &[
                "-n",
                ns,
                "rule",
                "add",
                "priority",
                &gateway_rule,
                "iif",
                &veth,
                "to",
                &gateway,
                "lookup",
                "local",
            ],
            &["-n", ns, "rule", "add", "priority", &from_client, "iif", &veth, "lookup", TABLE],
            &["-n", ns, "rule", "add", "priority", &to_client, "to", &subnet, "lookup", TABLE],
        ];
        for args in rules {
            run(Tool::Ip, args).await?;
        }
        tracing::info!(client = index, "link emulator in the client's path");
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.due.notify_all();
        if let Err(e) = self.interrupt.trigger() {
            tracing::warn!(error = %e, "could not wake the link emulator's reader");
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The reader thread: each packet from the device gets its departures.
fn read(shared: &Shared, interrupt: &InterruptEvent) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = match shared.device.recv_intr(&mut buf, interrupt) {
            Ok(len) => len,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                if shared.lock().stop {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "the link emulator cannot read its device; it stops");
                return;
            }
        };
        let packet = &buf[..len];
        let arrived = Instant::now();
        let mut state = shared.lock();
        let since_epoch = arrived.duration_since(state.epoch);
        let key = classify(packet, shared.block);
        tracing::trace!(len, ?key, "link emulator packet");
        let departures = match key {
            Some((index, way, media)) => match state.pipes.get_mut(&(index, way)) {
                Some((scope, pipe)) if media || *scope == Scope::Link => {
                    Some(pipe.offer(since_epoch, len))
                }
                _ => None,
            },
            None => None,
        };
        match departures {
            // Untouched, and nothing queued that it could overtake: out at once.
            None if state.queue.is_empty() => {
                drop(state);
                send(shared, packet);
            }
            None => hold(&mut state, shared, arrived, packet),
            Some(departures) => {
                let epoch = state.epoch;
                for at in Departures::iter(&departures) {
                    hold(&mut state, shared, epoch + at, packet);
                }
            }
        }
    }
}

/// Queues `packet` to leave at `at`, waking the writer if it is now the first to go.
fn hold(state: &mut State, shared: &Shared, at: Instant, packet: &[u8]) {
    let first = state.queue.peek().is_none_or(|Reverse(head)| at < head.at);
    state.sequence += 1;
    state.queue.push(Reverse(Held { at, sequence: state.sequence, packet: packet.to_vec() }));
    if first {
        shared.due.notify_one();
    }
}

/// The writer thread: each queued packet back into the device at its departure.
fn write(shared: &Shared, _interrupt: &InterruptEvent) {
    let mut leaving = Vec::new();
    // 1 ns, the least there is: wake at the departure, not up to 50 µs after it.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::set_current_timer_slack(Some(std::num::NonZeroU64::MIN)) {
        tracing::warn!(error = %e, "the link emulator's writer keeps the default timer slack");
    }
    loop {
        let mut state = shared.lock();
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            match state.queue.peek() {
                None => {
                    state = shared.due.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                Some(Reverse(head)) if head.at > now => {
                    let wait = head.at - now;
                    state =
                        shared.due.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
                }
                Some(_) => break,
            }
        }
        let now = Instant::now();
        while state.queue.peek().is_some_and(|Reverse(head)| head.at <= now) {
            if let Some(Reverse(held)) = state.queue.pop() {
                leaving.push(held.packet);
            }
        }
        drop(state);
        for packet in leaving.drain(..) {
            send(shared, &packet);
        }
    }
}

fn send(shared: &Shared, packet: &[u8]) {
    if let Err(e) = shared.device.send(packet) {
        // The kernel refuses what it cannot route (a client's address gone in a handover):
        // a lost packet, as on the real path.
        tracing::debug!(error = %e, "link emulator could not write a packet back");
    }
}

/// Which client and way a packet belongs to, and whether it is media (UDP to or from the
/// server's media port, TCP to or from its ICE/TCP port); `None` when it is no client's.
fn classify(packet: &[u8], block: Block) -> Option<(usize, Way, bool)> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else { return None };
    let (source, destination) = (ip.header().source_addr(), ip.header().destination_addr());
    let (index, way) = match (block.client_of(source), block.client_of(destination)) {
        (Some(index), _) => (index, Way::ToServer),
        (None, Some(index)) => (index, Way::FromServer),
        (None, None) => return None,
    };
    let ports = match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => Some((17, udp.source_port(), udp.destination_port())),
        Some(TransportSlice::Tcp(tcp)) => Some((6, tcp.source_port(), tcp.destination_port())),
        _ => None,
    };
    let server_port = |(protocol, source, destination): (u8, u16, u16)| match way {
        Way::ToServer => (protocol, destination),
        Way::FromServer => (protocol, source),
    };
    let media =
        matches!(ports.map(server_port), Some((17, MEDIA_UDP_PORT)) | Some((6, ICE_TCP_PORT)));
    Some((index, way, media))
}
