//! Reliable data bookkeeping: sequence numbers and the replay buffer on the sending side,
//! de-duplication on the receiving side.
//!
//! LiveKit (server v1.13) carries a per-sender `sequence` in every reliable `DataPacket`; the
//! server drops a packet whose sequence is not above the last it forwarded from that sender,
//! and tells a resuming client that last sequence (`ReconnectResponse.last_message_seq`).
//! So the sender keeps what it sent in a bounded buffer, and after a resume re-sends, in
//! order, only what the server never got. A receiver remembers the highest sequence seen per
//! sender and delivers each packet once.

use std::collections::{BTreeMap, VecDeque};

/// Bytes of sent reliable packets kept for replay after a resume.
const REPLAY_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The sending side of one session's reliable data.
#[derive(Debug)]
pub(crate) struct Outgoing {
    next_sequence: u32,
    sent: VecDeque<(u32, Vec<u8>)>,
    sent_bytes: usize,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self { next_sequence: 1, sent: VecDeque::new(), sent_bytes: 0 }
    }
}

impl Outgoing {
    /// The sequence number the next packet gets (taken by [`Outgoing::sent`]).
    pub(crate) fn next_sequence(&self) -> u32 {
        self.next_sequence
    }

    /// Remembers an encoded packet with `sequence` that was handed to the data channel.
    pub(crate) fn sent(&mut self, sequence: u32, encoded: Vec<u8>) {
        self.next_sequence = sequence.wrapping_add(1).max(1);
        self.sent_bytes += encoded.len();
        self.sent.push_back((sequence, encoded));
        while self.sent_bytes > REPLAY_BUFFER_BYTES {
            match self.sent.pop_front() {
                Some((_, dropped)) => self.sent_bytes -= dropped.len(),
                None => break,
            }
        }
    }

    /// After a resume: forgets what the server already has (sequence ≤ `last_received`) and
    /// returns the rest, oldest first, to send again.
    pub(crate) fn replay_after(&mut self, last_received: u32) -> Vec<(u32, Vec<u8>)> {
        while self.sent.front().is_some_and(|(sequence, _)| *sequence <= last_received) {
            if let Some((_, dropped)) = self.sent.pop_front() {
                self.sent_bytes -= dropped.len();
            }
        }
        self.sent.iter().cloned().collect()
    }
}

/// The receiving side: the highest reliable sequence delivered per sender sid.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    last: BTreeMap<String, u32>,
}

impl Incoming {
    /// Whether a reliable packet from `sender_sid` with `sequence` is new (and records it).
    /// Packets without a sequence or sender cannot be de-duplicated and always count as new.
    pub(crate) fn accept(&mut self, sender_sid: &str, sequence: u32) -> bool {
        if sequence == 0 || sender_sid.is_empty() {
            return true;
        }
        let last = self.last.entry(sender_sid.to_owned()).or_insert(0);
        if sequence <= *last {
            return false;
        }
        *last = sequence;
        true
    }

    /// The last sequence delivered per sender, for `SyncState` on resume.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&str, u32)> {
        self.last.iter().map(|(sid, seq)| (sid.as_str(), *seq))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sequences_start_at_one_and_grow() {
        let mut outgoing = Outgoing::default();
        assert_eq!(outgoing.next_sequence(), 1);
        assert_eq!(outgoing.next_sequence(), 1, "peeking does not take the number");
        outgoing.sent(1, vec![1]);
        assert_eq!(outgoing.next_sequence(), 2);
    }

    #[test]
    fn replay_sends_only_what_the_server_lacks_in_order() {
        let mut outgoing = Outgoing::default();
        for _ in 0..5 {
            let sequence = outgoing.next_sequence();
            outgoing.sent(sequence, vec![sequence as u8]);
        }
        let replay: Vec<u32> = outgoing.replay_after(3).into_iter().map(|(s, _)| s).collect();
        assert_eq!(replay, [4, 5]);
        let again: Vec<u32> = outgoing.replay_after(5).into_iter().map(|(s, _)| s).collect();
        assert!(again.is_empty());
    }

    #[test]
    fn the_replay_buffer_is_bounded() {
        let mut outgoing = Outgoing::default();
        for _ in 0..5 {
            let sequence = outgoing.next_sequence();
            outgoing.sent(sequence, vec![0; REPLAY_BUFFER_BYTES / 2]);
        }
        assert!(outgoing.sent_bytes <= REPLAY_BUFFER_BYTES);
        assert_eq!(outgoing.replay_after(0).len(), 2);
    }

    #[test]
    fn receivers_deliver_each_sequence_once_per_sender() {
        let mut incoming = Incoming::default();
        assert!(incoming.accept("PA_a", 1));
        assert!(!incoming.accept("PA_a", 1));
        assert!(incoming.accept("PA_b", 1));
        assert!(incoming.accept("PA_a", 2));
        assert!(!incoming.accept("PA_a", 2));
        assert!(incoming.accept("", 0), "unsequenced packets pass");
        let mut states: Vec<_> = incoming.states().collect();
        states.sort();
        assert_eq!(states, [("PA_a", 2), ("PA_b", 1)]);
    }
}
