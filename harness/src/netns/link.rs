//! One client's link to the server namespace — its veth pair, addresses and route — and the
//! faults put on it.
//!
//! Drops and loss are nftables rules on the **receiving** side, in a `netdev` ingress chain
//! of the receiving veth end (a drop in the sender's output hook would hand the sender an
//! `EPERM`, which no real network does): traffic to the server is dropped on the server
//! namespace's end (chain `c<i>` of its table `faultline`), traffic to the client on the
//! client's end (chain `eth0` of the client namespace's table `faultline`). Every rule
//! carries a comment naming the client, the fault and its direction; a heal flushes that
//! link's two chains, which hold nothing else. A rate limit is a `tc` qdisc on the
//! **sending** end's egress, where a real bottleneck queues (see `shape.rs`). Everything
//! else a link can do to packets — delay, jitter, reordering, duplication, bursty loss, a
//! queue, a replayed trace — is the user-space emulator's ([`Link::emulate`], `emulator.rs`).
//!
//! Directions are [`Direction`]s from the client's point of view, as for faultline-sdk's
//! socket wrappers: [`Direction::Outbound`] is client → server, [`Direction::Inbound`]
//! server → client.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use faultline_link::{Condition, PipeStats};

use super::command::{run, run_with_input};
use super::emulator::Emulator;
use super::error::{NetnsError, Tool};
use super::namespace::Namespace;
use super::plan::{Block, LINK_PREFIX};
use super::shape::{self, Egress, Shaping};
use super::{ICE_TCP_PORT, MEDIA_UDP_PORT, TABLE};
use crate::net::Direction;

/// The client's end of its link, in its namespace.
const CLIENT_DEVICE: &str = "eth0";

/// Which traffic of a link a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// The media path only: UDP to or from the server's media port
    /// ([`MEDIA_UDP_PORT`](super::MEDIA_UDP_PORT)) and TCP to or from its ICE/TCP port
    /// ([`ICE_TCP_PORT`](super::ICE_TCP_PORT)). Signalling still flows: the client learns of
    /// the outage from its media transport, not from a dead WebSocket.
    #[default]
    Media,
    /// Every IPv4 packet on the link: media, signalling (also to the proxies in the root
    /// namespace), anything. ARP still passes, so the link itself stays up.
    Link,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Media => "media",
            Scope::Link => "whole link",
        }
    }
}

/// One way of a link, resolved from a [`Direction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Way {
    /// Client → server.
    ToServer,
    /// Server → client.
    FromServer,
}

impl Way {
    fn of(direction: Direction) -> &'static [Way] {
        match direction {
            Direction::Outbound => &[Way::ToServer],
            Direction::Inbound => &[Way::FromServer],
            Direction::Both => &[Way::ToServer, Way::FromServer],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Way::ToServer => "to-server",
            Way::FromServer => "from-server",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// What a link's operations change together; the lock serializes them.
#[derive(Debug, Default)]
struct State {
    /// Address changes so far.
    changes: u32,
}

/// A client namespace's link to the server namespace, and its faults.
#[derive(Debug)]
pub struct Link {
    index: usize,
    namespace: Namespace,
    server_namespace: String,
    server_device: String,
    block: Block,
    address: Mutex<Ipv4Addr>,
    state: tokio::sync::Mutex<State>,
    emulator: Arc<Emulator>,
}

impl Link {
    /// Wires client `index`'s namespace (which exists) to the server namespace (which has
    /// its nftables table): veth pair, addresses, the route to the block, an empty ingress
    /// chain on each end.
    pub(super) async fn create(
        index: usize,
        namespace: Namespace,
        server_namespace: &str,
        block: Block,
        emulator: Arc<Emulator>,
    ) -> Result<Link, NetnsError> {
        let (client, server) = (namespace.name().to_string(), server_namespace);
        let client = client.as_str();
        let server_device = format!("c{index}");
        let gateway = format!("{}/{LINK_PREFIX}", block.client_gateway(index));
        let address = block.client_address(index, 0);
        let address_cidr = format!("{address}/{LINK_PREFIX}");
        let commands: [&[&str]; 6] = [
            &[
                "-n",
                server,
                "link",
                "add",
                &server_device,
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_DEVICE,
                "netns",
                client,
            ],
            &["-n", server, "addr", "add", &gateway, "dev", &server_device],
            &["-n", server, "link", "set", &server_device, "up"],
            &["-n", client, "link", "set", "lo", "up"],
            &["-n", client, "addr", "add", &address_cidr, "dev", CLIENT_DEVICE],
            &["-n", client, "link", "set", CLIENT_DEVICE, "up"],
        ];
        for args in commands {
            run(Tool::Ip, args).await?;
        }
        let link = Link {
            index,
            server_namespace: server.to_string(),
            server_device,
            block,
            address: Mutex::new(address),
            state: tokio::sync::Mutex::new(State::default()),
            namespace,
            emulator,
        };
        link.route().await?;
        nft(server, &format!("add chain netdev {TABLE} {}", link.chain_spec(Way::ToServer)))
            .await?;
        nft(
            link.namespace.name(),
            &format!(
                "add table netdev {TABLE}\nadd chain netdev {TABLE} {}",
                link.chain_spec(Way::FromServer)
            ),
        )
        .await?;
        Ok(link)
    }

    /// Which client this is (its position in [`Topology::clients`](super::Topology::clients)).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The client's namespace: run the client in it.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The client's current address (it changes with [`Link::change_address`]).
    pub fn address(&self) -> Ipv4Addr {
        *self.address_slot()
    }

    /// Drops every packet of `scope` both ways: a partition.
    pub async fn partition(&self, scope: Scope) -> Result<(), NetnsError> {
        self.drop_all(Direction::Both, scope).await
    }

    /// Drops every packet of `scope` going `direction` (one way, or both).
    pub async fn drop_all(&self, direction: Direction, scope: Scope) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        for &way in Way::of(direction) {
            self.add_rule(way, scope, "drop", "").await?;
        }
        Ok(())
    }

    /// A firewall that blocks UDP both ways — every datagram between the client and anyone,
    /// signalling over TCP untouched — but, with `relay_port`, datagrams to and from the
    /// server's relay port (its TURN relay). Adds to what is already blocked.
    pub async fn block_udp(&self, relay_port: Option<u16>) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        for way in [Way::ToServer, Way::FromServer] {
            let port = match way {
                Way::ToServer => "dport",
                Way::FromServer => "sport",
            };
            // Only the server listens on the relay's port in the topology.
            let matching = match relay_port {
                None => "meta protocol ip meta l4proto udp".to_string(),
                Some(relay) => format!("meta protocol ip udp {port} != {relay}"),
            };
            let fault =
                if relay_port.is_some() { "udp blocked but the relay" } else { "udp blocked" };
            self.add_drop(way, fault, &matching).await?;
        }
        Ok(())
    }

    /// Drops `percent` % of the packets of `scope` going `direction`, each independently at
    /// random (nftables `numgen random`); 100 % drops every packet (`numgen` counts 0–99, so
    /// `< 100` is no valid rule), 0 % drops none.
    pub async fn loss(
        &self,
        direction: Direction,
        scope: Scope,
        percent: u8,
    ) -> Result<(), NetnsError> {
        if percent > 100 {
            return Err(NetnsError::InvalidFault(format!(
                "loss is a percentage, 0 to 100; got {percent}"
            )));
        }
        if percent == 0 {
            return Ok(());
        }
        let matcher = if percent == 100 {
            String::new()
        } else {
            format!("numgen random mod 100 < {percent}")
        };
        let _state = self.state.lock().await;
        for &way in Way::of(direction) {
            self.add_rule(way, scope, &format!("loss {percent}%"), &matcher).await?;
        }
        Ok(())
    }

    /// Caps the traffic of `scope` going `direction` at `bits_per_sec` (tbf on the sending
    /// end's egress; what does not fit in 300 ms of queue is dropped). Replaces an earlier
    /// rate of that direction.
    pub async fn rate_limit(
        &self,
        direction: Direction,
        scope: Scope,
        bits_per_sec: u64,
    ) -> Result<(), NetnsError> {
        if bits_per_sec == 0 {
            return Err(NetnsError::InvalidFault(
                "a rate limit must allow at least 1 bit per second; use drop_all to stop the \
                 traffic"
                    .into(),
            ));
        }
        self.shape(direction, Some(Shaping { scope, rate: bits_per_sec })).await
    }

    /// Gives the traffic of `scope` going `direction` the `condition` (delay with jitter,
    /// reordering, loss models, duplication, a queue, a replayed trace), in the user-space
    /// emulator, from now on: it replaces the condition that way had there (packets already
    /// in flight keep their departures). The first call routes the client's traffic through
    /// the emulator. `seed` seeds the condition's randomness (each way draws its own).
    pub async fn emulate(
        &self,
        direction: Direction,
        scope: Scope,
        condition: Condition,
        seed: u64,
    ) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        for &way in Way::of(direction) {
            let seed = seed ^ (way.slot() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            self.emulator.set(self.index, way, scope, condition.clone(), seed).await?;
            tracing::info!(
                client = self.index,
                way = way.name(),
                scope = scope.name(),
                ?condition,
                "netns emulated condition"
            );
        }
        Ok(())
    }

    /// What the emulator did to the traffic going `direction` (one way: `Outbound` or
    /// `Inbound`) since it was first given a condition; `None` if it never was.
    pub fn emulated(&self, direction: Direction) -> Option<PipeStats> {
        let way = Way::of(direction).first().copied()?;
        self.emulator.stats(self.index, way)
    }

    /// Takes the client's end of the link down, as when Wi-Fi is switched off: the client
    /// gets "Network is unreachable" for the server and the proxies, and nothing arrives.
    pub async fn set_down(&self) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        run(Tool::Ip, &["-n", self.namespace.name(), "link", "set", CLIENT_DEVICE, "down"]).await?;
        tracing::info!(client = self.index, "netns link down");
        Ok(())
    }

    /// Brings the client's end of the link up again, with its route.
    pub async fn set_up(&self) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        self.bring_up().await?;
        tracing::info!(client = self.index, "netns link up");
        Ok(())
    }

    /// A handover: the client gets a new address on its link and loses the old one, so
    /// that flows from the old address break (the server's answers go to an address no one
    /// has; a socket bound or connected from it can no longer send) while new ones work.
    /// Returns the new address.
    pub async fn change_address(&self) -> Result<Ipv4Addr, NetnsError> {
        let mut state = self.state.lock().await;
        let ns = self.namespace.name();
        let old = format!("{}/{LINK_PREFIX}", self.address());
        let new = self.block.client_address(self.index, state.changes + 1);
        // Delete first: deleting a primary address also deletes the secondaries of its subnet.
        run(Tool::Ip, &["-n", ns, "addr", "del", &old, "dev", CLIENT_DEVICE]).await?;
        let new_cidr = format!("{new}/{LINK_PREFIX}");
        run(Tool::Ip, &["-n", ns, "addr", "add", &new_cidr, "dev", CLIENT_DEVICE]).await?;
        state.changes += 1;
        *self.address_slot() = new;
        // Losing the last address flushed the route through the link.
        self.route().await?;
        tracing::info!(client = self.index, %old, %new, "netns address changed");
        Ok(new)
    }

    /// Removes every fault of this link: its drop and loss rules, its rate limits, its
    /// emulated conditions, and a link taken down comes up. (An address change is not undone: it is a move, not a fault.)
    pub async fn heal(&self) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        for way in [Way::ToServer, Way::FromServer] {
            let (ns, chain) = self.chain(way);
            nft(ns, &format!("flush chain netdev {TABLE} {chain}")).await?;
            shape::apply(self.egress(way), None).await?;
        }
        self.emulator.clear(self.index);
        self.bring_up().await?;
        tracing::info!(client = self.index, "netns link healed");
        Ok(())
    }

    fn address_slot(&self) -> MutexGuard<'_, Ipv4Addr> {
        self.address.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn bring_up(&self) -> Result<(), NetnsError> {
        run(Tool::Ip, &["-n", self.namespace.name(), "link", "set", CLIENT_DEVICE, "up"]).await?;
        // Taking the link down flushed its route.
        self.route().await
    }

    /// The client's one route: the whole block (server, proxies) through its gateway. No
    /// default route, so nothing the client sends can leave the topology.
    async fn route(&self) -> Result<(), NetnsError> {
        let block = format!("{}/24", self.block.network());
        let gateway = self.block.client_gateway(self.index).to_string();
        run(
            Tool::Ip,
            &[
                "-n",
                self.namespace.name(),
                "route",
                "replace",
                &block,
                "via",
                &gateway,
                "dev",
                CLIENT_DEVICE,
            ],
        )
        .await
        .map(drop)
    }

    /// The namespace and chain where packets going `way` are received.
    fn chain(&self, way: Way) -> (&str, &str) {
        match way {
            Way::ToServer => (&self.server_namespace, &self.server_device),
            Way::FromServer => (self.namespace.name(), CLIENT_DEVICE),
        }
    }

    /// `<chain> { type filter hook ingress device "<dev>" priority filter; }`: each chain is
    /// named after the device whose ingress it hooks.
    fn chain_spec(&self, way: Way) -> String {
        let (_, device) = self.chain(way);
        format!("{device} {{ type filter hook ingress device \"{device}\" priority filter; }}")
    }

    /// Where packets going `way` are sent from.
    fn egress(&self, way: Way) -> Egress<'_> {
        match way {
            Way::ToServer => Egress {
                namespace: self.namespace.name(),
                device: CLIENT_DEVICE,
                media_port_field: "dport",
            },
            Way::FromServer => Egress {
                namespace: &self.server_namespace,
                device: &self.server_device,
                media_port_field: "sport",
            },
        }
    }

    /// Adds `<scope match> <matcher> counter drop` to the ingress chain receiving `way`.
    async fn add_rule(
        &self,
        way: Way,
        scope: Scope,
        fault: &str,
        matcher: &str,
    ) -> Result<(), NetnsError> {
        let server = self.block.server();
        let scope_match = match (scope, way) {
            (Scope::Link, _) => "meta protocol ip".to_string(),
            (Scope::Media, Way::ToServer) => format!(
                "meta protocol ip ip daddr {server} meta l4proto . th dport \
                 {{ udp . {MEDIA_UDP_PORT}, tcp . {ICE_TCP_PORT} }}"
            ),
            (Scope::Media, Way::FromServer) => format!(
                "meta protocol ip ip saddr {server} meta l4proto . th sport \
                 {{ udp . {MEDIA_UDP_PORT}, tcp . {ICE_TCP_PORT} }}"
            ),
        };
        self.add_drop(
            way,
            &format!("{fault} {}", scope.name()),
            &format!("{scope_match} {matcher}"),
        )
        .await
    }

    /// Adds `<matching> counter drop` to the ingress chain receiving `way`, its comment
    /// naming the client, `fault` and the way.
    async fn add_drop(&self, way: Way, fault: &str, matching: &str) -> Result<(), NetnsError> {
        let (ns, chain) = self.chain(way);
        let comment = format!("faultline client {}: {fault} {}", self.index, way.name());
        nft(
            ns,
            &format!(
                "add rule netdev {TABLE} {chain} {matching} counter drop comment \"{comment}\""
            ),
        )
        .await?;
        tracing::info!(client = self.index, fault, way = way.name(), "netns fault");
        Ok(())
    }

    /// Sets the rate limit of each way of `direction`, replacing the one it had.
    async fn shape(
        &self,
        direction: Direction,
        shaping: Option<Shaping>,
    ) -> Result<(), NetnsError> {
        let _state = self.state.lock().await;
        for &way in Way::of(direction) {
            shape::apply(self.egress(way), shaping).await?;
            tracing::info!(client = self.index, way = way.name(), ?shaping, "netns shaping");
        }
        Ok(())
    }
}

/// Runs an nftables script inside `namespace` (nft itself has no namespace option).
async fn nft(namespace: &str, script: &str) -> Result<(), NetnsError> {
    run_with_input(Tool::Ip, &["netns", "exec", namespace, "nft", "-f", "-"], Some(script))
        .await
        .map(drop)
}
