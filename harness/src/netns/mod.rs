//! Kernel-level faults for clients whose sockets faultline does not own: livekit-server in a
//! network namespace of its own, each client in another, joined by veth pairs whose
//! traffic the kernel drops, loses, rate-limits, takes down, or re-addresses.
//!
//! faultline-sdk's sockets can be wrapped ([`crate::net`]); an external client (the upstream
//! Rust SDK, a browser) cannot, so its media faults come from the kernel. faultline-sdk can
//! run in a client namespace too ([`NamespaceNetwork`]), to check that the wrappers agree
//! with the kernel; [`Namespace::run`] makes any socket there.
//!
//! # Topology
//!
//! ```text
//!  root namespace                    fl<pid>-<n>-srv                      fl<pid>-<n>-c0
//!  (harness, Proxy,                  livekit-server on B.254 (lo)         the client
//!   toxiproxy)                       ip_forward = 1
//!  fl<pid>-<n>  B.1/29 ── veth ──  uplink  B.2/29
//!  route B.0/24 via B.2              c0  B.9/29  ─────────── veth ─────  eth0  B.10/29
//!                                    c1  B.17/29 ── veth ── …             route B.0/24 via B.9
//! ```
//!
//! `B` is one /24 of the RFC 2544 benchmarking range 198.18.0.0/15, never routed outside a
//! machine. Each topology claims its own block by adding its route in the root namespace,
//! which fails with "File exists" when another run holds it (`plan.rs`); blocks that
//! overlap any other route there are skipped. Inside the block: the root link is the first
//! /29, client `i`'s link is the /29 at host 8·(i+1) (so at most [`MAX_CLIENTS`]), and the
//! server's address is B.254.
//!
//! Why this shape:
//! - **The server's address is on `lo` of its namespace**, not on one of its veths: it has
//!   one veth per client and one to the root, and must be one address for all of them
//!   (`rtc.node_ip` rewrites every ICE candidate to it). Every client namespace and the root
//!   route the block through their link, so each reaches B.254 over its own veth — and a
//!   fault on one client's veth touches no one else.
//! - **A namespace of its own for the server** contains what binds every interface:
//!   livekit-server's ICE/TCP listener ignores `bind_addresses` (so ICE/TCP is on here, on
//!   [`ICE_TCP_PORT`], unlike on loopback). Its ports are fixed ([`SIGNAL_PORT`],
//!   [`MEDIA_UDP_PORT`], [`ICE_TCP_PORT`]) since nothing else lives there, which also lets
//!   the media-only faults know the media ports before the server starts.
//! - **One veth from the root**: the harness reaches the server (readiness, RoomService)
//!   at B.254, and clients reach what listens in the root namespace — the killable
//!   [`Proxy`](crate::proxy::Proxy) started with `start_on`, toxiproxy — at B.1, through the
//!   server namespace, which forwards. Signalling through a proxy therefore crosses the
//!   client's link too, and a [`Scope::Link`] fault cuts it with the media.
//! - **No default route anywhere in the topology**: a client can reach the block and
//!   nothing else ("Network is unreachable"), so no traffic leaves these namespaces, the
//!   root's end of the root link, and loopback.
//!
//! Names: namespaces `fl<pid>-<n>-srv` and `fl<pid>-<n>-c<i>`, the root-side veth
//! `fl<pid>-<n>` (at most 15 characters), `n` counting topologies in this process: parallel
//! tests and processes never collide. Inside the namespaces the names are fixed: `uplink`,
//! `c<i>` (server side), `eth0` (client side).
//!
//! # Faults
//!
//! Per client [`Link`], in a [`Scope`] (media only, the default, or the whole link) and a
//! [`Direction`](crate::net::Direction) seen from the client: partition, one-way drop, random
//! loss (nftables on the receiving side), rate limit (tbf on the sending side), link
//! down/up, address change (a handover), heal — and, for what the kernel here cannot do
//! (it has no netem), a user-space link emulator in the server namespace
//! ([`Link::emulate`], `emulator.rs`): delay with jitter, reordering, duplication, random
//! and Gilbert–Elliott loss, a bounded queue at a rate, a replayed Mahimahi trace, each
//! per direction and changeable at any time. [`probe`] streams numbered, timestamped UDP
//! datagrams through a link, to see what it did to them.
//!
//! # Cleanup, and refusal
//!
//! Everything is removed when the [`Topology`] (and every [`Namespace`] cloned from it) is
//! dropped, and by a watchdog when the process is SIGKILLed (`cleanup.rs`).
//! [`Topology::available`] says up front, with the cause and the fix, when this machine
//! cannot build topologies (not Linux, not root, `ip`/`nft`/`tc` missing): a scenario that
//! needs kernel faults is refused then, never run without them.
//!
//! # Inspecting by hand
//!
//! `ip netns list`; `ip -n fl<pid>-<n>-c0 addr`; `ip -n fl<pid>-<n>-srv route`;
//! `ip netns exec fl<pid>-<n>-c0 nft -a list ruleset`; `tc -n fl<pid>-<n>-c0 qdisc show`.
//! `faultline server --netns N` builds a topology with a server in it and prints its names.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

mod cleanup;
mod command;
mod emulator;
mod error;
mod link;
mod namespace;
mod network;
mod plan;
pub mod probe;
mod shape;

pub use error::{NetnsError, Tool};
pub use link::{Link, Scope};
pub use namespace::Namespace;
pub use network::NamespaceNetwork;
pub use plan::MAX_CLIENTS;

use cleanup::Cleanup;
use command::run;
use plan::{Names, LINK_PREFIX};

/// livekit-server's HTTP/WebSocket port inside its namespace.
pub const SIGNAL_PORT: u16 = 7880;
/// livekit-server's ICE/TCP port inside its namespace.
pub const ICE_TCP_PORT: u16 = 7881;
/// livekit-server's UDP media port inside its namespace.
pub const MEDIA_UDP_PORT: u16 = 7882;
/// The embedded TURN relay's UDP port of a server in a namespace (livekit's usual one).
pub const TURN_UDP_PORT: u16 = 3478;

/// The nftables table (family `netdev`) faultline adds to each namespace.
const TABLE: &str = "faultline";
/// The server namespace's end of the root link.
const UPLINK: &str = "uplink";

/// Where a server runs in a topology: the namespace and the address it binds there.
#[derive(Debug, Clone)]
pub struct ServerSite {
    namespace: Namespace,
    address: Ipv4Addr,
}

impl ServerSite {
    /// The server's namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The address to bind and advertise, reachable from the root and every client.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }
}

/// One run's namespaces: a server namespace, client namespaces, and the links between them
/// and to the root namespace; see the [module docs](self). Removed when dropped.
#[derive(Debug)]
pub struct Topology {
    server: ServerSite,
    root_link: String,
    root_address: Ipv4Addr,
    clients: Vec<Link>,
}

impl Topology {
    /// Ok when this machine can build topologies; otherwise why not and what to do.
    pub fn available() -> Result<(), NetnsError> {
        command::check_available()
    }

    /// Builds a topology with `clients` client namespaces.
    pub async fn create(clients: usize) -> Result<Topology, NetnsError> {
        Self::available()?;
        if clients > MAX_CLIENTS {
            return Err(NetnsError::TooManyClients { asked: clients, max: MAX_CLIENTS });
        }
        let names = Names::next()?;
        let server_ns = names.server();
        let client_ns: Vec<String> = (0..clients).map(|i| names.client(i)).collect();
        let every_ns = std::iter::once(server_ns.clone()).chain(client_ns.iter().cloned());
        let cleanup = Arc::new(Cleanup::start(every_ns.collect(), names.prefix.clone())?);
        for ns in std::iter::once(&server_ns).chain(&client_ns) {
            run(Tool::Ip, &["netns", "add", ns]).await?;
        }

        let root_link = names.prefix.as_str();
        run(
            Tool::Ip,
            &[
                "link", "add", root_link, "type", "veth", "peer", "name", UPLINK, "netns",
                &server_ns,
            ],
        )
        .await?;
        run(Tool::Ip, &["link", "set", root_link, "up"]).await?;
        let mut seed = DefaultHasher::new();
        names.prefix.hash(&mut seed);
        let block = plan::claim_block(root_link, seed.finish() as u32).await?;
        let cidr = |addr: Ipv4Addr, len: u8| format!("{addr}/{len}");
        let commands: [&[&str]; 5] = [
            &["addr", "add", &cidr(block.root(), LINK_PREFIX), "dev", root_link],
            &[
                "-n",
                &server_ns,
                "addr",
                "add",
                &cidr(block.server_uplink(), LINK_PREFIX),
                "dev",
                UPLINK,
            ],
            &["-n", &server_ns, "link", "set", UPLINK, "up"],
            &["-n", &server_ns, "addr", "add", &cidr(block.server(), 32), "dev", "lo"],
            &["-n", &server_ns, "link", "set", "lo", "up"],
        ];
        for args in commands {
            run(Tool::Ip, args).await?;
        }
        let server = Namespace::new(server_ns.clone(), Arc::clone(&cleanup));
        // Clients reach the root namespace's proxies through the server namespace.
        server
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|source| NetnsError::Enter { namespace: server_ns.clone(), source })?;
        command::run_with_input(
            Tool::Ip,
            &["netns", "exec", &server_ns, "nft", "-f", "-"],
            Some(&format!("add table netdev {TABLE}")),
        )
        .await?;

        let emulator = Arc::new(emulator::Emulator::start(&server, block).await?);
        let mut links = Vec::with_capacity(clients);
        for (index, ns) in client_ns.into_iter().enumerate() {
            let namespace = Namespace::new(ns, Arc::clone(&cleanup));
            let emulator = Arc::clone(&emulator);
            links.push(Link::create(index, namespace, &server_ns, block, emulator).await?);
        }
        tracing::info!(prefix = %names.prefix, block = %block.network(), clients, "netns topology created");
        Ok(Topology {
            server: ServerSite { namespace: server, address: block.server() },
            root_link: names.prefix,
            root_address: block.root(),
            clients: links,
        })
    }

    /// Where the server goes: pass it as
    /// [`ServerOptions::netns`](crate::server::ServerOptions::netns).
    pub fn server(&self) -> &ServerSite {
        &self.server
    }

    /// The root namespace's address on the root link: what listens here (a proxy started
    /// with [`Proxy::start_on`](crate::proxy::Proxy::start_on)) is reachable from every
    /// client namespace.
    pub fn root_address(&self) -> Ipv4Addr {
        self.root_address
    }

    /// The root-side veth's name, `fl<pid>-<n>`, which prefixes every namespace's name.
    pub fn name(&self) -> &str {
        &self.root_link
    }

    /// The client links, in order.
    pub fn clients(&self) -> &[Link] {
        &self.clients
    }
}

/// For test suites: `Ok(true)` when namespaces can be used here, else the reason as an
/// error — unless `FAULTLINE_SKIP_NETNS` says why this machine runs without them (macOS, a
/// developer without root): then that reason and the error are printed and it is
/// `Ok(false)`. A kernel test never passes by not running unless someone said so.
pub fn usable_in_tests() -> Result<bool, NetnsError> {
    match Topology::available() {
        Ok(()) => Ok(true),
        Err(e) => match std::env::var("FAULTLINE_SKIP_NETNS") {
            Ok(why) if !why.trim().is_empty() => {
                eprintln!("kernel-fault test not run: FAULTLINE_SKIP_NETNS says {why:?} ({e})");
                Ok(false)
            }
            _ => Err(e),
        },
    }
}
