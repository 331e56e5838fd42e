//! The names and addresses of one topology (the layout is explained in the
//! [module docs](super)): unique names per process and run, and a /24 of the RFC 2544
//! benchmarking range 198.18.0.0/15 that no one else routes in the root namespace.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::command::run;
use super::error::{NetnsError, Tool};

/// Clients one topology holds: each gets a /29 of the block, after the root link's.
pub const MAX_CLIENTS: usize = 30;
/// The prefix length of every link (root–server, server–client): a /29.
pub(super) const LINK_PREFIX: u8 = 29;
/// How many /24 blocks 198.18.0.0/15 holds.
const BLOCKS: u32 = 512;
/// 198.18.0.0 as a number.
const RANGE_START: u32 = 0xC612_0000;
/// The client addresses one link rotates through on address changes (hosts 2..=6 of its /29).
const CLIENT_ADDRESSES: u8 = 5;
/// Linux's longest interface name.
const IFNAMSIZ_MAX: usize = 15;

static RUNS: AtomicU32 = AtomicU32::new(0);

/// The names of one run's namespaces and its root-side veth.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// `fl<pid>-<n>`: the root-side veth's name and every namespace's prefix.
    pub prefix: String,
}

impl Names {
    /// The next run's names in this process.
    pub(super) fn next() -> Result<Names, NetnsError> {
        let count = RUNS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("fl{}-{count}", std::process::id());
        if prefix.len() > IFNAMSIZ_MAX {
            return Err(NetnsError::TooManyTopologies { count });
        }
        Ok(Names { prefix })
    }

    /// The server's namespace.
    pub(super) fn server(&self) -> String {
        format!("{}-srv", self.prefix)
    }

    /// Client `index`'s namespace.
    pub(super) fn client(&self, index: usize) -> String {
        format!("{}-c{index}", self.prefix)
    }
}

/// One topology's /24 of 198.18.0.0/15.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    index: u32,
}

impl Block {
    fn host(self, host: u32) -> Ipv4Addr {
        Ipv4Addr::from(RANGE_START + self.index * 256 + host)
    }

    /// The block's network address (x.y.z.0; the block is a /24).
    pub(super) fn network(self) -> Ipv4Addr {
        self.host(0)
    }

    /// The root namespace's end of the root link.
    pub(super) fn root(self) -> Ipv4Addr {
        self.host(1)
    }

    /// The server namespace's end of the root link (the root's gateway to the block).
    pub(super) fn server_uplink(self) -> Ipv4Addr {
        self.host(2)
    }

    /// The server's own address, on `lo` in its namespace: what it binds and advertises.
    pub(super) fn server(self) -> Ipv4Addr {
        self.host(254)
    }

    /// The server namespace's end of client `index`'s link (the client's gateway).
    pub(super) fn client_gateway(self, index: usize) -> Ipv4Addr {
        self.host(client_base(index) + 1)
    }

    /// Client `index`'s address after `changes` address changes.
    pub(super) fn client_address(self, index: usize, changes: u32) -> Ipv4Addr {
        self.host(client_base(index) + 2 + changes % u32::from(CLIENT_ADDRESSES))
    }

    /// The first address of client `index`'s /29 (its network address).
    pub(super) fn client_subnet(self, index: usize) -> Ipv4Addr {
        self.host(client_base(index))
    }

    /// The client whose /29 holds `address`, if any.
    pub(super) fn client_of(self, address: Ipv4Addr) -> Option<usize> {
        let host = u32::from(address).checked_sub(RANGE_START + self.index * 256)?;
        let index = (host / 8).checked_sub(1)? as usize;
        (host < 256 && index < MAX_CLIENTS).then_some(index)
    }
}

/// Client `index`'s /29 starts at host 8·(index+1): the first /29 is the root link's, the
/// last (248–255) holds the server's address.
fn client_base(index: usize) -> u32 {
    debug_assert!(index < MAX_CLIENTS);
    8 * (index as u32 + 1)
}

/// Routes a block of 198.18.0.0/15 through `root_link` to the server namespace, which
/// claims it: `ip route add` of a prefix the root namespace routes already fails with
/// "File exists", so two runs never get the same block, however they race. Blocks that
/// overlap anything else routed in the root namespace (by someone else) are skipped.
pub(super) async fn claim_block(root_link: &str, seed: u32) -> Result<Block, NetnsError> {
    let routes = run(Tool::Ip, &["-j", "-4", "route", "show", "table", "all"]).await?;
    let taken = blocks_in_use(&routes);
    for offset in 0..BLOCKS {
        let block = Block { index: (seed.wrapping_add(offset)) % BLOCKS };
        if taken.contains(&block.index) {
            continue;
        }
        let prefix = format!("{}/24", block.network());
        let via = block.server_uplink().to_string();
        let added =
            run(Tool::Ip, &["route", "add", &prefix, "via", &via, "dev", root_link, "onlink"])
                .await;
        match added {
            Ok(_) => return Ok(block),
            Err(NetnsError::Command { stderr, .. }) if stderr.contains("File exists") => continue,
            Err(e) => return Err(e),
        }
    }
    Err(NetnsError::NoFreeBlock)
}

/// The blocks touched by the routes in `ip -j -4 route show table all` (routes broader than
/// the range, such as the default route, touch none).
fn blocks_in_use(json: &str) -> HashSet<u32> {
    let routes: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    let mut taken = HashSet::new();
    for dst in routes.iter().filter_map(|r| r.get("dst").and_then(|d| d.as_str())) {
        let (addr, len) = dst.split_once('/').unwrap_or((dst, "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            continue;
        };
        if !(15..=32).contains(&len) {
            continue;
        }
        // A /32 has no host bits: shifting by 32 would overflow.
        let host_bits = u32::MAX.checked_shr(len).unwrap_or(0);
        let start = u32::from(addr) & !host_bits;
        let end = start | host_bits;
        let range_end = RANGE_START + BLOCKS * 256 - 1;
        if end < RANGE_START || start > range_end {
            continue;
        }
        let first = (start.max(RANGE_START) - RANGE_START) / 256;
        let last = (end.min(range_end) - RANGE_START) / 256;
        taken.extend(first..=last);
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_stays_inside_the_block_and_the_benchmarking_range() {
        let last = Block { index: BLOCKS - 1 };
        assert_eq!(last.network(), Ipv4Addr::new(198, 19, 255, 0));
        assert_eq!(last.server(), Ipv4Addr::new(198, 19, 255, 254));
        let first = Block { index: 0 };
        assert_eq!(first.root(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(first.client_gateway(0), Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(first.client_address(0, 0), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(first.client_address(0, 4), Ipv4Addr::new(198, 18, 0, 14));
        assert_eq!(first.client_address(0, 5), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(first.client_address(MAX_CLIENTS - 1, 4), Ipv4Addr::new(198, 18, 0, 246));
    }

    #[test]
    fn an_address_belongs_to_the_client_whose_slash29_holds_it() {
        let block = Block { index: 3 };
        for index in [0, 1, MAX_CLIENTS - 1] {
            assert_eq!(block.client_of(block.client_address(index, 0)), Some(index));
            assert_eq!(block.client_of(block.client_address(index, 4)), Some(index));
            assert_eq!(block.client_of(block.client_subnet(index)), Some(index));
        }
        assert_eq!(block.client_of(block.root()), None);
        assert_eq!(block.client_of(block.server()), None);
        assert_eq!(block.client_of(Block { index: 4 }.client_address(0, 0)), None);
        assert_eq!(block.client_of(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn routes_mark_the_blocks_they_overlap() {
        let json = r#"[{"dst":"default"},{"dst":"198.18.3.0/24"},{"dst":"198.18.8.7"},
            {"dst":"198.19.0.0/23"},{"dst":"10.0.0.0/8"},{"dst":"198.16.0.0/12"}]"#;
        let mut taken: Vec<u32> = blocks_in_use(json).into_iter().collect();
        taken.sort();
        assert_eq!(taken, [3, 8, 256, 257]);
        let whole = blocks_in_use(r#"[{"dst":"198.18.0.0/15"}]"#);
        assert_eq!(whole.len(), BLOCKS as usize);
    }
}
