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
//! unacknowledged, in order, before new data. A receiver remembers the highest sequence seen
//! per sender *identity* (stable across that sender's full reconnects, unlike its sid) and
//! delivers each packet once.

use std::collections::{BTreeMap, VecDeque};

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
        }
    }
}

impl Outgoing {
    /// The sequence number the next new packet gets (taken by [`Outgoing::sent`]).
    pub(crate) fn next_sequence(&self) -> u32 {
        self.next_sequence
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
    /// By sender identity (its sid when it has none): the last sequence delivered, and the
    /// sid of the sender session it came from.
    last: BTreeMap<String, (u32, String)>,
}

impl Incoming {
    /// Whether a reliable packet with `sequence` from the participant `sender_identity`
    /// (session `sender_sid`) is new (and records it). Packets without a sequence or sender
    /// cannot be de-duplicated and always count as new.
    pub(crate) fn accept(
        &mut self,
        sender_identity: &str,
        sender_sid: &str,
        sequence: u32,
    ) -> bool {
        let key = if sender_identity.is_empty() { sender_sid } else { sender_identity };
        if sequence == 0 || key.is_empty() {
            return true;
        }
        let last = self.last.entry(key.to_owned()).or_insert_with(|| (0, String::new()));
        if sequence <= last.0 {
            return false;
        }
        *last = (sequence, sender_sid.to_owned());
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

    #[test]
    fn receivers_deliver_each_sequence_once_per_sender() {
        let mut incoming = Incoming::default();
        assert!(incoming.accept("alice", "PA_a", 1));
        assert!(!incoming.accept("alice", "PA_a", 1));
        assert!(incoming.accept("bob", "PA_b", 1));
        assert!(incoming.accept("alice", "PA_a", 2));
        assert!(!incoming.accept("alice", "PA_a", 2));
        assert!(incoming.accept("", "", 0), "unsequenced packets pass");
        let mut states: Vec<_> = incoming.states().collect();
        states.sort();
        assert_eq!(states, [("PA_a", 2), ("PA_b", 1)]);
    }

    #[test]
    fn a_senders_full_reconnect_keeps_its_sequences_deduplicated() {
        let mut incoming = Incoming::default();
        assert!(incoming.accept("alice", "PA_old", 1));
        assert!(incoming.accept("alice", "PA_old", 2));
        // Alice rejoined as a new session and replays 2 (unacknowledged) and sends 3.
        assert!(!incoming.accept("alice", "PA_new", 2), "the replayed duplicate is dropped");
        assert!(incoming.accept("alice", "PA_new", 3));
        let states: Vec<_> = incoming.states().collect();
        assert_eq!(states, [("PA_new", 3)], "SyncState names the sender's current session");
    }

    #[test]
    fn senders_without_identity_are_keyed_by_sid() {
        let mut incoming = Incoming::default();
        assert!(incoming.accept("", "PA_h", 4));
        assert!(!incoming.accept("", "PA_h", 4));
        assert_eq!(incoming.states().collect::<Vec<_>>(), [("PA_h", 4)]);
    }
}
