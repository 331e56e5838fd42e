//! Reliable data for a participant whose connection is still being set up: the room keeps
//! every sequenced reliable packet for a short while, and a participant holds back the
//! reliable packets meant for it until its primary transport is fully established, then gets
//! them from that cache — livekit-server v1.13.5's `dataMessageCache` (pkg/rtc/room.go) and
//! `joiningMessage*` / `replayJoiningReliableMessages` (pkg/rtc/participant.go).
//!
//! Without it a receiver that has just rejoined (a full reconnect) loses what was sent to it
//! between the server adding it to the room and its data channels opening.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// pkg/rtc/room.go `dataMessageCacheTTL`: entries older than this go at the next prune, and
/// a prune runs at this interval from the room's start (`cleanDataMessageTicker`).
const TTL: Duration = Duration::from_secs(2);

/// pkg/rtc/room.go `dataMessageCacheSize`: the oldest entries go once the encoded packets
/// add up to more than this.
const MAX_BYTES: usize = 100_000;

/// One cached reliable packet, as the room sent it on.
struct Cached {
    added: Instant,
    /// The sender's sid.
    sender: String,
    seq: u32,
    /// The `DataPacket` as forwarded (sender stamped).
    encoded: Vec<u8>,
    /// Its `destination_identities` (empty: everyone).
    destinations: Vec<String>,
}

/// A room's cache of recent sequenced reliable packets (utils.TimeSizeCache).
pub(super) struct DataCache {
    started: Instant,
    pruned_at: Instant,
    items: VecDeque<Cached>,
    bytes: usize,
}

impl DataCache {
    /// An empty cache for a room that starts at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self { started: now, pruned_at: now, items: VecDeque::new(), bytes: 0 }
    }

    /// Keeps `encoded` (the packet `seq` from `sender`, for `destinations`).
    pub(super) fn add(
        &mut self,
        now: Instant,
        sender: &str,
        seq: u32,
        encoded: &[u8],
        destinations: &[String],
    ) {
        self.prune(now);
        self.items.push_back(Cached {
            added: now,
            sender: sender.to_owned(),
            seq,
            encoded: encoded.to_vec(),
            destinations: destinations.to_vec(),
        });
        self.bytes += encoded.len();
        while self.bytes > MAX_BYTES {
            let Some(oldest) = self.items.pop_front() else { break };
            self.bytes -= oldest.encoded.len();
        }
    }

    /// Runs the prunes the room's ticker would have run by `now`: at each multiple of
    /// [`TTL`] since the start, everything added more than [`TTL`] before it goes.
    fn prune(&mut self, now: Instant) {
        let ticks = (now - self.started).as_nanos() / TTL.as_nanos();
        let last_tick = self.started + TTL * u32::try_from(ticks).unwrap_or(u32::MAX);
        if last_tick <= self.pruned_at {
            return;
        }
        self.pruned_at = last_tick;
        let threshold = last_tick.checked_sub(TTL).unwrap_or(self.started);
        while self.items.front().is_some_and(|c| c.added < threshold) {
            if let Some(old) = self.items.pop_front() {
                self.bytes -= old.encoded.len();
            }
        }
    }
}

/// A participant's side: whether reliable packets may be written to it yet, which packets
/// it missed while they could not, and which were replayed (so the live copy is not sent
/// again).
#[derive(Default)]
pub(super) struct JoiningHold {
    /// `canWriteReliable`: the primary transport was fully established.
    open: bool,
    /// Per sender sid, the first sequence held back.
    first: BTreeMap<String, u32>,
    /// Per sender sid, the last sequence written by the replay.
    last_written: BTreeMap<String, u32>,
}

impl JoiningHold {
    /// pkg/rtc/participant.go `SendDataMessage`: whether the reliable packet `seq` from
    /// `sender` is written now. Before the transport is established it is held back (its
    /// sequence noted for the replay); after, a packet the replay already wrote is not
    /// written again.
    pub(super) fn admit(&mut self, sender: &str, seq: u32) -> bool {
        if !self.open {
            self.first.entry(sender.to_owned()).or_insert(seq);
            return false;
        }
        match self.last_written.get(sender) {
            Some(last) if seq <= *last => false,
            Some(_) => {
                self.last_written.remove(sender);
                true
            }
            None => true,
        }
    }

    /// pkg/rtc/participant.go `replayJoiningReliableMessages`, when the primary transport is
    /// fully established: the cached packets from each held-back sender, from its first
    /// held-back sequence on, that are for `identity`, in the order the room sent them. From
    /// then on packets are written as they come.
    pub(super) fn open(
        &mut self,
        cache: &mut DataCache,
        now: Instant,
        identity: &str,
    ) -> Vec<Vec<u8>> {
        if self.open {
            return Vec::new();
        }
        cache.prune(now);
        let mut replay = Vec::new();
        for c in &cache.items {
            let Some(first) = self.first.get(&c.sender) else { continue };
            if c.seq < *first
                || !(c.destinations.is_empty() || c.destinations.iter().any(|d| d == identity))
            {
                continue;
            }
            let last = self.last_written.entry(c.sender.clone()).or_insert(c.seq);
            *last = (*last).max(c.seq);
            replay.push(c.encoded.clone());
        }
        self.first.clear();
        self.open = true;
        replay
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn what_was_held_back_is_replayed_once_in_order_when_the_transport_is_up() {
        let now = Instant::now();
        let mut cache = DataCache::new(now);
        let mut hold = JoiningHold::default();
        cache.add(now, "PA_a", 1, b"a1", &[]);
        // Sent to everyone while the joiner's channels are still opening: held back.
        for (seq, data) in [(2, b"a2"), (3, b"a3")] {
            cache.add(now, "PA_a", seq, data, &[]);
            assert!(!hold.admit("PA_a", seq));
        }
        cache.add(now, "PA_a", 4, b"a4", &["someone-else".to_owned()]);
        let replayed = hold.open(&mut cache, now, "joiner");
        assert_eq!(replayed, vec![b"a2".to_vec(), b"a3".to_vec()]);
        // Live copies of what was replayed are not written again; later ones are.
        assert!(!hold.admit("PA_a", 3));
        assert!(hold.admit("PA_a", 5));
        assert!(hold.open(&mut cache, now, "joiner").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn packets_older_than_the_last_prune_are_not_replayed() {
        let start = Instant::now();
        let mut cache = DataCache::new(start);
        cache.add(start, "PA_a", 1, b"a1", &[]);
        cache.add(start + Duration::from_millis(2500), "PA_a", 2, b"a2", &[]);
        let replay_at = |cache: &mut DataCache, ms: u64| {
            let mut hold = JoiningHold::default();
            assert!(!hold.admit("PA_a", 1));
            hold.open(cache, start + Duration::from_millis(ms), "joiner")
        };
        // The prune at 2 s keeps a1 (not older than 2 s then); the one at 4 s drops it.
        assert_eq!(replay_at(&mut cache, 3900), vec![b"a1".to_vec(), b"a2".to_vec()]);
        assert_eq!(replay_at(&mut cache, 4100), vec![b"a2".to_vec()]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_keeps_at_most_its_size_in_bytes() {
        let now = Instant::now();
        let mut cache = DataCache::new(now);
        let big = vec![0u8; 40_000];
        for seq in 1..=3 {
            cache.add(now, "PA_a", seq, &big, &[]);
        }
        assert_eq!(cache.items.len(), 2);
        assert_eq!(cache.items.front().map(|c| c.seq), Some(2));
    }
}
