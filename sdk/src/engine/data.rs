//! Reliable data bookkeeping: sequence numbers and the replay buffer on the sending side,
//! de-duplication on the receiving side.
//!
//! LiveKit (server v1.13) carries a per-sender `sequence` in every reliable `DataPacket`; the
//! server drops a packet whose sequence is not above the last it forwarded from that
//! participant (state kept per participant *session*, starting from 0), and tells a resuming
//! client that last sequence (`ReconnectResponse.last_message_seq`). It forwards the sequence
//! unchanged, with the sender's sid and identity.
//!
//! So the sender numbers its packets once for the room's lifetime — sequences continue
//! across a full reconnect, which the new server-side participant accepts — and keeps what
//! it sent in a bounded buffer (new packets wait while it is full) until it knows the server
//! has it: from the publisher PC's
//! SCTP acknowledgements ([`Outgoing::acked`]) or from a resume's `last_message_seq`. After a
//! resume it re-sends what the server lacks; after a full reconnect, everything still
//! unacknowledged, in order, before new data.
//!
//! Every reliable packet carries a message id in `UserPacket.nonce` (the protocol's field
//! "added by SDK to enable de-duping"), 16 bytes: [`MESSAGE_ID_TAG`], an 8-byte *origin* —
//! a hash of the sid of this client's first session, which stays with it across full
//! reconnects — two zero bytes and the sequence. livekit-server v1.13.5 reads a 16-byte
//! nonce as a message UUID and drops a repeat of one of the last 100 user packets of the room
//! (pkg/rtc/user_packet_deduper.go), before forwarding: so a packet replayed after a full
//! reconnect that the server had already forwarded reaches no receiver twice, whatever SDK
//! the receiver runs — as long as it is among the room's last 100 user packets.
//!
//! Past that window the server forwards a replay again, so receivers de-duplicate too: a
//! faultline-sdk receiver remembers the highest sequence delivered per *sender* and delivers
//! each packet once. A sender's sid changes with its full reconnect while its sequences go
//! on, so the sid cannot name it; its identity cannot either, since a new client with the
//! same identity (an app restart, a page reload) numbers from 1 again. So receivers key
//! packets by identity and the origin in the message id; packets without one (other SDKs,
//! which number each session from 1) by sid. Receivers on other SDKs key by sid and see a
//! replayed packet outside the server's window twice: the promise to them is exactly once
//! within that window, at most twice past it.

use std::collections::{BTreeMap, VecDeque};

/// The first bytes of a faultline-sdk message id (`UserPacket.nonce`): then the origin (8
/// bytes), two zero bytes and the sequence (big-endian), 16 bytes in all.
const MESSAGE_ID_TAG: &[u8; 2] = b"fl";

/// A 64-bit FNV-1a hash of `bytes`: a client's origin from the sid of its first session.
fn fnv64(bytes: &[u8]) -> [u8; 8] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.to_be_bytes()
}

/// The message id of the packet with `sequence` from the client with `origin`.
fn message_id(origin: [u8; 8], sequence: u32) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(MESSAGE_ID_TAG);
    id.extend_from_slice(&origin);
    id.extend_from_slice(&[0, 0]);
    id.extend_from_slice(&sequence.to_be_bytes());
    id
}

/// The origin in a faultline-sdk message id, if `nonce` is one.
fn origin_of(nonce: &[u8]) -> Option<&[u8]> {
    (nonce.len() == 16 && nonce.starts_with(MESSAGE_ID_TAG) && nonce[10..12] == [0, 0])
        .then(|| &nonce[2..10])
}

/// The most bytes of sent, unacknowledged reliable packets kept for replay. Nothing is ever
/// evicted: while the buffer is full, new packets wait ([`Outgoing::has_room_for`]) until
/// acknowledgements free it — backpressure the publisher sees, never a silent loss.
pub(crate) const REPLAY_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The sending side of a room's reliable data, across its sessions.
#[derive(Debug)]
pub(crate) struct Outgoing {
    next_sequence: u32,
    /// Sent and not known to have reached the server, by increasing sequence.
    sent: VecDeque<(u32, Vec<u8>)>,
    sent_bytes: usize,
    /// The lowest sequence of `sent` still to be (re-)sent on the current session before any
    /// new packet, if any.
    replay_from: Option<u32>,
    /// The sequences handed to the current session's reliable channel, in order, from the
    /// `handed_base`-th one on (what an acknowledgement count refers to).
    handed: VecDeque<u32>,
    handed_base: u64,
    /// This client's origin (a hash of its first session's sid), once that is known.
    origin: Option<[u8; 8]>,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self {
            next_sequence: 1,
            sent: VecDeque::new(),
            sent_bytes: 0,
            replay_from: None,
            handed: VecDeque::new(),
            handed_base: 0,
            origin: None,
        }
    }
}

impl Outgoing {
    /// The sequence number the next new packet gets (taken by [`Outgoing::sent`]).
    pub(crate) fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// The `UserPacket.nonce` of this client's reliable packet with `sequence`: its message
    /// id, whose origin is fixed by the sid of the first session it is asked with (`sid`).
    /// Empty (no id) while no sid is known.
    pub(crate) fn message_id(&mut self, sid: &str, sequence: u32) -> Vec<u8> {
        if self.origin.is_none() && sid.is_empty() {
            return Vec::new();
        }
        let origin = *self.origin.get_or_insert_with(|| fnv64(sid.as_bytes()));
        message_id(origin, sequence)
    }

    /// Remembers a new encoded packet with `sequence` that was handed to the current
    /// session's reliable channel.
    pub(crate) fn sent(&mut self, sequence: u32, encoded: Vec<u8>) {
        self.next_sequence = sequence.wrapping_add(1).max(1);
        self.sent_bytes += encoded.len();
        self.sent.push_back((sequence, encoded));
        self.handed.push_back(sequence);
    }

    /// Whether a new packet of `len` encoded bytes fits in the replay buffer now (an empty
    /// buffer takes any one packet, so a large packet waits for the others, never forever).
    pub(crate) fn has_room_for(&self, len: usize) -> bool {
        self.sent.is_empty() || self.sent_bytes + len <= REPLAY_BUFFER_BYTES
    }

    /// The next packet to re-send on the current session before any new one, if any.
    pub(crate) fn next_replay(&self) -> Option<(u32, &[u8])> {
        let from = self.replay_from?;
        self.sent
            .iter()
            .find(|(sequence, _)| *sequence >= from)
            .map(|(sequence, encoded)| (*sequence, encoded.as_slice()))
    }

    /// The packet from [`Outgoing::next_replay`] was handed to the current session.
    pub(crate) fn replayed(&mut self, sequence: u32) {
        self.handed.push_back(sequence);
        self.replay_from =
            self.sent.iter().map(|(buffered, _)| *buffered).find(|buffered| *buffered > sequence);
    }

    /// After a resume (same peer connections): forgets what the server already has
    /// (sequence ≤ `last_received`); the rest is to be sent again, oldest first.
    pub(crate) fn resumed(&mut self, last_received: u32) {
        self.forget_through(last_received);
        self.replay_from = self.sent.front().map(|(sequence, _)| *sequence);
    }

    /// After a full reconnect (a new publisher PC, whose acknowledgement counts start from
    /// zero): everything not known to have reached the server is to be sent again, oldest
    /// first. Sequences go on.
    pub(crate) fn rejoined(&mut self) {
        self.handed.clear();
        self.handed_base = 0;
        self.replay_from = self.sent.front().map(|(sequence, _)| *sequence);
    }

    /// The server's SCTP has the first `messages` reliable messages handed to the current
    /// session: forgets them (and every older sequence).
    pub(crate) fn acked(&mut self, messages: u64) {
        let mut highest = None;
        while self.handed_base < messages {
            let Some(sequence) = self.handed.pop_front() else { break };
            self.handed_base += 1;
            highest = highest.max(Some(sequence));
        }
        if let Some(highest) = highest {
            self.forget_through(highest);
        }
    }

    /// Drops buffered packets with sequence ≤ `sequence`.
    fn forget_through(&mut self, sequence: u32) {
        while self.sent.front().is_some_and(|(buffered, _)| *buffered <= sequence) {
            if let Some((_, dropped)) = self.sent.pop_front() {
                self.sent_bytes -= dropped.len();
            }
        }
        self.forget_unbuffered_handed();
    }

    /// Keeps `handed` bounded: entries older than the buffer can no longer trim anything.
    fn forget_unbuffered_handed(&mut self) {
        let oldest = self.sent.front().map_or(self.next_sequence, |(sequence, _)| *sequence);
        while self.handed.front().is_some_and(|handed| *handed < oldest) {
            self.handed.pop_front();
            self.handed_base += 1;
        }
    }
}

/// The receiving side: the highest reliable sequence delivered per sender.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    /// By sender (identity and origin, or sid): the last sequence delivered, and the sid of
    /// the sender session it came from.
    last: BTreeMap<String, (u32, String)>,
}

/// One sender of a received packet, as far as de-duplication goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sender<'a> {
    /// The sender's identity.
    pub identity: &'a str,
    /// The sender's session.
    pub sid: &'a str,
    /// The packet's `UserPacket.nonce`.
    pub nonce: &'a [u8],
}

impl Sender<'_> {
    /// What names the sender across its sessions (see the module documentation).
    fn key(&self) -> Option<String> {
        match origin_of(self.nonce) {
            Some(origin) if !self.identity.is_empty() => {
                let hex: String = origin.iter().map(|b| format!("{b:02x}")).collect();
                Some(format!("{}\u{0}{hex}", self.identity))
            }
            _ => (!self.sid.is_empty()).then(|| self.sid.to_owned()),
        }
    }
}

impl Incoming {
    /// Whether a reliable packet with `sequence` from `sender` is new (and records it).
    /// Packets without a sequence or sender cannot be de-duplicated and always count as new.
    pub(crate) fn accept(&mut self, sender: Sender<'_>, sequence: u32) -> bool {
        let Some(key) = sender.key().filter(|_| sequence != 0) else { return true };
        let last = self.last.entry(key).or_insert_with(|| (0, String::new()));
        if sequence <= last.0 {
            return false;
        }
        *last = (sequence, sender.sid.to_owned());
        true
    }

    /// The last sequence delivered per sender session sid, for `SyncState` on resume.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&str, u32)> {
        self.last
            .values()
            .filter(|(_, sid)| !sid.is_empty())
            .map(|(sequence, sid)| (sid.as_str(), *sequence))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Sends `n` new packets (payload = low byte of the sequence) on the current session.
    fn send(outgoing: &mut Outgoing, n: usize) {
        for _ in 0..n {
            let sequence = outgoing.next_sequence();
            outgoing.sent(sequence, vec![sequence as u8]);
        }
    }

    /// Hands every packet due for replay to the current session; returns their sequences.
    fn replay(outgoing: &mut Outgoing) -> Vec<u32> {
        let mut replayed = Vec::new();
        while let Some((sequence, encoded)) = outgoing.next_replay() {
            assert_eq!(encoded, [sequence as u8], "the packet sent before is replayed as is");
            replayed.push(sequence);
            outgoing.replayed(sequence);
        }
        replayed
    }

    fn buffered(outgoing: &Outgoing) -> Vec<u32> {
        outgoing.sent.iter().map(|(sequence, _)| *sequence).collect()
    }

    #[test]
    fn sequences_start_at_one_and_grow() {
        let mut outgoing = Outgoing::default();
        assert_eq!(outgoing.next_sequence(), 1);
        assert_eq!(outgoing.next_sequence(), 1, "peeking does not take the number");
        outgoing.sent(1, vec![1]);
        assert_eq!(outgoing.next_sequence(), 2);
    }

    #[test]
    fn a_resume_replays_only_what_the_server_lacks_in_order() {
        let mut outgoing = Outgoing::default();
        send(&mut outgoing, 5);
        outgoing.resumed(3);
        assert_eq!(replay(&mut outgoing), [4, 5]);
        outgoing.resumed(5);
        assert!(replay(&mut outgoing).is_empty());
        assert!(buffered(&outgoing).is_empty());
    }

    #[test]
    fn acknowledgements_trim_the_buffer_by_message_count() {
        let mut outgoing = Outgoing::default();
        send(&mut outgoing, 5);
        outgoing.acked(2);
        assert_eq!(buffered(&outgoing), [3, 4, 5]);
        outgoing.acked(2);
        assert_eq!(buffered(&outgoing), [3, 4, 5], "a repeated count changes nothing");
        outgoing.acked(1);
        assert_eq!(buffered(&outgoing), [3, 4, 5], "a stale count changes nothing");
        outgoing.acked(5);
        assert!(buffered(&outgoing).is_empty());
        outgoing.acked(9);
        assert!(buffered(&outgoing).is_empty(), "a count beyond what was sent is harmless");
    }

    #[test]
    fn a_full_reconnect_replays_everything_unacknowledged_and_sequences_go_on() {
        let mut outgoing = Outgoing::default();
        send(&mut outgoing, 6);
        outgoing.acked(2);
        outgoing.rejoined();
        assert_eq!(replay(&mut outgoing), [3, 4, 5, 6]);
        assert_eq!(outgoing.next_sequence(), 7, "sequences do not restart");
        send(&mut outgoing, 1);
        // The new peer connection counts from its own first message: 3, 4, 5, 6, 7.
        outgoing.acked(3);
        assert_eq!(buffered(&outgoing), [6, 7]);
        outgoing.acked(5);
        assert!(buffered(&outgoing).is_empty());
    }

    #[test]
    fn counts_after_a_resume_include_the_replayed_messages() {
        let mut outgoing = Outgoing::default();
        send(&mut outgoing, 4);
        // The server got 1 and 2; 3 and 4 go again on the same peer connection, which has
        // now carried 1, 2, 3, 4, 3, 4.
        outgoing.resumed(2);
        assert_eq!(replay(&mut outgoing), [3, 4]);
        send(&mut outgoing, 1);
        outgoing.acked(4);
        assert_eq!(buffered(&outgoing), [5], "the 4th message was sequence 4");
        outgoing.acked(7);
        assert!(buffered(&outgoing).is_empty());
    }

    #[test]
    fn a_full_buffer_takes_no_new_packet_until_acknowledgements_free_it() {
        let mut outgoing = Outgoing::default();
        let half = REPLAY_BUFFER_BYTES / 2;
        assert!(outgoing.has_room_for(REPLAY_BUFFER_BYTES * 2), "an empty buffer takes anything");
        for _ in 0..2 {
            assert!(outgoing.has_room_for(half));
            let sequence = outgoing.next_sequence();
            outgoing.sent(sequence, vec![0; half]);
        }
        assert!(!outgoing.has_room_for(1), "full: the next packet must wait");
        outgoing.rejoined();
        let mut replayed = Vec::new();
        while let Some((sequence, _)) = outgoing.next_replay() {
            replayed.push(sequence);
            outgoing.replayed(sequence);
        }
        assert_eq!(replayed, [1, 2], "nothing was dropped to make room");
        outgoing.acked(1);
        assert!(outgoing.has_room_for(half), "an acknowledgement frees room");
        assert!(!outgoing.has_room_for(half + 1));
    }

    fn from<'a>(identity: &'a str, sid: &'a str, nonce: &'a [u8]) -> Sender<'a> {
        Sender { identity, sid, nonce }
    }

    /// The message id of `sid`'s client's packet `sequence`.
    fn id(sid: &str, sequence: u32) -> Vec<u8> {
        Outgoing::default().message_id(sid, sequence)
    }

    #[test]
    fn a_message_id_is_a_16_byte_uuid_whose_origin_is_the_first_sessions_for_good() {
        let mut outgoing = Outgoing::default();
        let first = outgoing.message_id("PA_first", 7);
        assert_eq!(first.len(), 16, "livekit-server de-duplicates 16-byte nonces only");
        assert_eq!(&first[..2], b"fl");
        assert_eq!(&first[12..], 7u32.to_be_bytes());
        assert_eq!(origin_of(&first), Some(&first[2..10]));
        let later = outgoing.message_id("PA_second", 8);
        assert_eq!(origin_of(&later), origin_of(&first), "a full reconnect keeps the origin");
        assert_ne!(later, first, "each message has its own id");
        assert_ne!(origin_of(&id("PA_other", 7)), origin_of(&first), "another client, another");
        assert!(Outgoing::default().message_id("", 1).is_empty(), "no session, no id");
        assert_eq!(origin_of(b"another SDK's 16"), None, "a foreign nonce names no origin");
    }

    #[test]
    fn receivers_deliver_each_sequence_once_per_sender() {
        let mut incoming = Incoming::default();
        let (a1, a2, b1) = (id("PA_a", 1), id("PA_a", 2), id("PA_b", 1));
        assert!(incoming.accept(from("alice", "PA_a", &a1), 1));
        assert!(!incoming.accept(from("alice", "PA_a", &a1), 1));
        assert!(incoming.accept(from("bob", "PA_b", &b1), 1));
        assert!(incoming.accept(from("alice", "PA_a", &a2), 2));
        assert!(!incoming.accept(from("alice", "PA_a", &a2), 2));
        assert!(incoming.accept(from("", "", b""), 0), "unsequenced packets pass");
        let mut states: Vec<_> = incoming.states().collect();
        states.sort();
        assert_eq!(states, [("PA_a", 2), ("PA_b", 1)]);
    }

    #[test]
    fn a_senders_full_reconnect_keeps_its_sequences_deduplicated() {
        let mut incoming = Incoming::default();
        let mut alice = Outgoing::default();
        let (one, two) = (alice.message_id("PA_old", 1), alice.message_id("PA_old", 2));
        assert!(incoming.accept(from("alice", "PA_old", &one), 1));
        assert!(incoming.accept(from("alice", "PA_old", &two), 2));
        // Alice rejoined as a new session: it replays 1 and 2 (unacknowledged), then sends 3.
        assert!(!incoming.accept(from("alice", "PA_new", &one), 1), "a replayed duplicate");
        assert!(!incoming.accept(from("alice", "PA_new", &two), 2), "a replayed duplicate");
        let three = alice.message_id("PA_new", 3);
        assert!(incoming.accept(from("alice", "PA_new", &three), 3));
        let states: Vec<_> = incoming.states().collect();
        assert_eq!(states, [("PA_new", 3)], "SyncState names the sender's current session");
    }

    #[test]
    fn a_new_client_with_the_same_identity_starts_afresh() {
        let mut incoming = Incoming::default();
        for sequence in 1..=5 {
            assert!(incoming.accept(from("alice", "PA_old", &id("PA_old", sequence)), sequence));
        }
        // Alice's app restarted: a new client, numbering from 1.
        assert!(incoming.accept(from("alice", "PA_new", &id("PA_new", 1)), 1));
        assert!(incoming.accept(from("alice", "PA_new", &id("PA_new", 2)), 2));
        assert!(!incoming.accept(from("alice", "PA_new", &id("PA_new", 1)), 1));
    }

    #[test]
    fn senders_without_an_origin_are_keyed_by_sid() {
        let mut incoming = Incoming::default();
        assert!(incoming.accept(from("carol", "PA_1", b"another SDK's nonce"), 4));
        assert!(!incoming.accept(from("carol", "PA_1", b""), 4));
        assert!(incoming.accept(from("carol", "PA_2", b""), 1), "a new session numbers anew");
        let mut states: Vec<_> = incoming.states().collect();
        states.sort();
        assert_eq!(states, [("PA_1", 4), ("PA_2", 1)]);
    }
}
