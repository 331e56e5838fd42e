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
//! it sent in a bounded buffer until it knows the server has it: from the publisher PC's
//! SCTP acknowledgements ([`Outgoing::acked`]) or from a resume's `last_message_seq`. After a
//! resume it re-sends what the server lacks; after a full reconnect, everything still
//! unacknowledged, in order, before new data.
//!
//! A receiver remembers the highest sequence delivered per *sender* and delivers each packet
//! once. A sender's sid changes with its full reconnect while its sequences go on, so the sid
//! cannot name it; its identity cannot either, since a new client with the same identity (an
//! app restart, a page reload) numbers from 1 again. So every reliable packet carries its
//! client's origin in `UserPacket.nonce` (the protocol's field "added by SDK to enable
//! de-duping"): [`ORIGIN_TAG`] and the sid of that client's first session. Receivers key
//! packets by identity and origin; packets without an origin (other SDKs, which number each
//! session from 1) by sid. livekit-server v1.13.5 forwards the nonce untouched; it reads a
//! nonce of exactly 16 bytes as a per-message UUID and drops repeats room-wide
//! (pkg/rtc/user_packet_deduper.go), and ignores other lengths — an origin is always longer
//! than the tag's 17 bytes, so it is never taken for one.

use std::collections::{BTreeMap, VecDeque};

/// Marks a `UserPacket.nonce` as faultline-sdk's origin: this tag, then the sid of the
/// sending client's first session.
const ORIGIN_TAG: &[u8] = b"faultline-origin:";

/// Bytes of sent reliable packets kept for replay.
const REPLAY_BUFFER_BYTES: usize = 4 * 1024 * 1024;

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
    /// The `UserPacket.nonce` naming this client, once its first session is known.
    origin: Option<Vec<u8>>,
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

    /// The `UserPacket.nonce` for this client's packets: its origin, fixed by the sid of the
    /// first session it is asked with (`sid`). Empty (no origin) while no sid is known.
    pub(crate) fn origin_nonce(&mut self, sid: &str) -> Vec<u8> {
        if self.origin.is_none() && sid.is_empty() {
            return Vec::new();
        }
        self.origin.get_or_insert_with(|| [ORIGIN_TAG, sid.as_bytes()].concat()).clone()
    }

    /// Remembers a new encoded packet with `sequence` that was handed to the current
    /// session's reliable channel.
    pub(crate) fn sent(&mut self, sequence: u32, encoded: Vec<u8>) {
        self.next_sequence = sequence.wrapping_add(1).max(1);
        self.sent_bytes += encoded.len();
        self.sent.push_back((sequence, encoded));
        self.handed.push_back(sequence);
        while self.sent_bytes > REPLAY_BUFFER_BYTES {
            match self.sent.pop_front() {
                Some((_, dropped)) => self.sent_bytes -= dropped.len(),
                None => break,
            }
        }
        self.forget_unbuffered_handed();
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
        match self.nonce.strip_prefix(ORIGIN_TAG) {
            Some(origin) if !self.identity.is_empty() => {
                Some(format!("{}\u{0}{}", self.identity, String::from_utf8_lossy(origin)))
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
    fn packets_evicted_from_the_bounded_buffer_are_not_replayed() {
        let mut outgoing = Outgoing::default();
        for _ in 0..5 {
            let sequence = outgoing.next_sequence();
            outgoing.sent(sequence, vec![0; REPLAY_BUFFER_BYTES / 2]);
        }
        assert!(outgoing.sent_bytes <= REPLAY_BUFFER_BYTES);
        assert_eq!(buffered(&outgoing), [4, 5]);
        assert!(outgoing.handed.len() <= 2, "the count bookkeeping is bounded too");
        outgoing.rejoined();
        let mut replayed = Vec::new();
        while let Some((sequence, _)) = outgoing.next_replay() {
            replayed.push(sequence);
            outgoing.replayed(sequence);
        }
        assert_eq!(replayed, [4, 5]);
        outgoing.acked(1);
        assert_eq!(buffered(&outgoing), [5]);
    }

    fn from<'a>(identity: &'a str, sid: &'a str, nonce: &'a [u8]) -> Sender<'a> {
        Sender { identity, sid, nonce }
    }

    #[test]
    fn the_origin_is_the_first_sessions_sid_for_good() {
        let mut outgoing = Outgoing::default();
        let first = outgoing.origin_nonce("PA_first");
        assert_eq!(first, b"faultline-origin:PA_first");
        assert_eq!(outgoing.origin_nonce("PA_second"), first, "a full reconnect keeps it");
        assert!(Outgoing::default().origin_nonce("").is_empty(), "no session, no origin");
    }

    #[test]
    fn receivers_deliver_each_sequence_once_per_sender() {
        let mut incoming = Incoming::default();
        let (a, b) = (b"faultline-origin:PA_a".as_slice(), b"faultline-origin:PA_b".as_slice());
        assert!(incoming.accept(from("alice", "PA_a", a), 1));
        assert!(!incoming.accept(from("alice", "PA_a", a), 1));
        assert!(incoming.accept(from("bob", "PA_b", b), 1));
        assert!(incoming.accept(from("alice", "PA_a", a), 2));
        assert!(!incoming.accept(from("alice", "PA_a", a), 2));
        assert!(incoming.accept(from("", "", b""), 0), "unsequenced packets pass");
        let mut states: Vec<_> = incoming.states().collect();
        states.sort();
        assert_eq!(states, [("PA_a", 2), ("PA_b", 1)]);
    }

    #[test]
    fn a_senders_full_reconnect_keeps_its_sequences_deduplicated() {
        let mut incoming = Incoming::default();
        let origin = b"faultline-origin:PA_old".as_slice();
        assert!(incoming.accept(from("alice", "PA_old", origin), 1));
        assert!(incoming.accept(from("alice", "PA_old", origin), 2));
        // Alice rejoined as a new session: it replays 1 and 2 (unacknowledged), then sends 3.
        assert!(!incoming.accept(from("alice", "PA_new", origin), 1), "a replayed duplicate");
        assert!(!incoming.accept(from("alice", "PA_new", origin), 2), "a replayed duplicate");
        assert!(incoming.accept(from("alice", "PA_new", origin), 3));
        let states: Vec<_> = incoming.states().collect();
        assert_eq!(states, [("PA_new", 3)], "SyncState names the sender's current session");
    }

    #[test]
    fn a_new_client_with_the_same_identity_starts_afresh() {
        let mut incoming = Incoming::default();
        let old = b"faultline-origin:PA_old".as_slice();
        for sequence in 1..=5 {
            assert!(incoming.accept(from("alice", "PA_old", old), sequence));
        }
        // Alice's app restarted: a new client, numbering from 1.
        let new = b"faultline-origin:PA_new".as_slice();
        assert!(incoming.accept(from("alice", "PA_new", new), 1));
        assert!(incoming.accept(from("alice", "PA_new", new), 2));
        assert!(!incoming.accept(from("alice", "PA_new", new), 1));
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
