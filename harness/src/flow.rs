//! Media flow, read from a run record: for each (subscriber, publisher, source), the moments
//! the subscriber's counters showed new frames ([`ClientEvent::Media`] samples, every 100 ms),
//! the subscriptions it held, and the figures a person feels — how long a track stopped, how
//! soon frames came back after a heal. Keyed by identity and source, never by sid: a full
//! reconnect republishes a track with a new sid.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::client::ClientEvent;
use crate::record::{EventRecord, RunRecord};
use crate::vocab::TrackSource;

/// A received track: who receives whose track from which source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// The receiving participant.
    pub subscriber: String,
    /// The publishing participant.
    pub publisher: String,
    /// The track's source.
    pub source: TrackSource,
}

impl std::fmt::Display for TrackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ← {}'s {}", self.subscriber, self.publisher, self.source.name())
    }
}

/// What one subscriber received of one publisher's source over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flow {
    /// The sample times at which new frames had arrived since the sample before (from the
    /// start of the run), in order.
    pub advances: Vec<Duration>,
    /// The track sids it was subscribed to when the record ended (exactly one when all is
    /// well).
    pub live: BTreeSet<String>,
    /// The most sids it held at once after the timeline's zero, and when.
    pub most_live: (usize, Duration),
}

impl Flow {
    /// The first arrival after `at`.
    pub fn first_after(&self, at: Duration) -> Option<Duration> {
        self.advances.iter().copied().find(|t| *t > at)
    }

    /// Whether frames arrived within `window` before `end`.
    pub fn flowing_at(&self, end: Duration, window: Duration) -> bool {
        self.advances.iter().any(|t| *t <= end && *t + window >= end)
    }

    /// The longest time without new frames between `from` and `to` (a stop still open at
    /// `to` counts up to `to`), and when it began.
    pub fn longest_gap(&self, from: Duration, to: Duration) -> (Duration, Duration) {
        let mut previous = from;
        let mut longest = (Duration::ZERO, from);
        for t in self.advances.iter().copied().filter(|t| *t > from && *t <= to) {
            if t - previous > longest.0 {
                longest = (t - previous, previous);
            }
            previous = t;
        }
        if to.saturating_sub(previous) > longest.0 {
            longest = (to - previous, previous);
        }
        longest
    }
}

/// The flows of a record, by key.
pub fn flows(record: &RunRecord) -> BTreeMap<TrackKey, Flow> {
    flows_of(&record.events, record.timeline_zero)
}

/// The flows of `events`, tracking subscriptions held from `zero` on.
pub fn flows_of(events: &[EventRecord], zero: Duration) -> BTreeMap<TrackKey, Flow> {
    let mut flows: BTreeMap<TrackKey, Flow> = BTreeMap::new();
    // The last count seen per (subscriber, sid).
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let key = |subscriber: &str, publisher: &str, source: TrackSource| TrackKey {
        subscriber: subscriber.to_owned(),
        publisher: publisher.to_owned(),
        source,
    };
    for e in events {
        match &e.event {
            ClientEvent::Media { tracks } => {
                let mut advanced = BTreeSet::new();
                for t in tracks {
                    let seen = last.entry((e.participant.clone(), t.sid.clone())).or_default();
                    // A count below the last one restarted: the subscriber subscribed to the
                    // same sid again (after its own full reconnect) and counts from 0.
                    let base = if t.frames < *seen { 0 } else { *seen };
                    if t.frames > base {
                        advanced.insert(key(&e.participant, &t.from, t.source));
                    }
                    *seen = t.frames;
                }
                for k in advanced {
                    flows.entry(k).or_default().advances.push(e.at);
                }
            }
            ClientEvent::TrackSubscribed { from, source, sid } => {
                let flow = flows.entry(key(&e.participant, from, *source)).or_default();
                flow.live.insert(sid.clone());
                if e.at >= zero && flow.live.len() > flow.most_live.0 {
                    flow.most_live = (flow.live.len(), e.at);
                }
            }
            ClientEvent::TrackUnsubscribed { from, source, sid } => {
                flows.entry(key(&e.participant, from, *source)).or_default().live.remove(sid);
            }
            // A subscriber that is gone for good holds nothing any more.
            ClientEvent::Disconnected { .. } => {
                for (k, flow) in flows.iter_mut() {
                    if k.subscriber == e.participant {
                        flow.live.clear();
                    }
                }
            }
            _ => {}
        }
    }
    flows
}

/// The sids a participant's own tracks had over the run, by source, in order (a new sid per
/// republish).
pub fn published_sids(record: &RunRecord, identity: &str) -> BTreeMap<TrackSource, Vec<String>> {
    let mut sids: BTreeMap<TrackSource, Vec<String>> = BTreeMap::new();
    for e in record.events_of(identity) {
        if let ClientEvent::LocalTrackPublished { source, sid, .. } = &e.event {
            let list = sids.entry(*source).or_default();
            if !list.contains(sid) {
                list.push(sid.clone());
            }
        }
    }
    sids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::MediaCount;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(at: u64, counts: &[(&str, u64)]) -> EventRecord {
        EventRecord {
            participant: "bob".into(),
            at: ms(at),
            event: ClientEvent::Media {
                tracks: counts
                    .iter()
                    .map(|(sid, frames)| MediaCount {
                        from: "alice".into(),
                        source: TrackSource::Camera,
                        sid: (*sid).into(),
                        frames: *frames,
                        decoded: None,
                    })
                    .collect(),
            },
        }
    }

    fn subscribed(at: u64, sid: &str, on: bool) -> EventRecord {
        let (from, source, sid) = ("alice".to_owned(), TrackSource::Camera, sid.to_owned());
        EventRecord {
            participant: "bob".into(),
            at: ms(at),
            event: if on {
                ClientEvent::TrackSubscribed { from, source, sid }
            } else {
                ClientEvent::TrackUnsubscribed { from, source, sid }
            },
        }
    }

    #[test]
    fn frames_advancing_make_a_flow_and_a_stop_makes_a_gap() {
        let events = vec![
            subscribed(0, "TR_1", true),
            sample(100, &[("TR_1", 3)]),
            sample(200, &[("TR_1", 6)]),
            sample(300, &[("TR_1", 6)]),
            sample(1200, &[("TR_1", 6)]),
            // A full reconnect: the old track goes, a new sid counts from 0.
            subscribed(1250, "TR_2", true),
            subscribed(1260, "TR_1", false),
            sample(1300, &[("TR_2", 0)]),
            sample(1400, &[("TR_2", 2)]),
            sample(1500, &[("TR_2", 5)]),
            // bob's own full reconnect: subscribed to TR_2 again, counting from 0 again.
            sample(1700, &[("TR_2", 1)]),
        ];
        let flows = flows_of(&events, Duration::ZERO);
        let flow = &flows[&TrackKey {
            subscriber: "bob".into(),
            publisher: "alice".into(),
            source: TrackSource::Camera,
        }];
        assert_eq!(flow.advances, vec![ms(100), ms(200), ms(1400), ms(1500), ms(1700)]);
        assert_eq!(flow.longest_gap(ms(0), ms(1500)), (ms(1200), ms(200)));
        assert_eq!(flow.longest_gap(ms(0), ms(3500)), (ms(1800), ms(1700)), "an open stop counts");
        assert_eq!(flow.first_after(ms(1250)), Some(ms(1400)));
        assert!(flow.flowing_at(ms(1500), ms(500)) && !flow.flowing_at(ms(1000), ms(500)));
        assert!(flow.flowing_at(ms(1700), ms(100)), "a restarted count is new frames");
        assert_eq!(flow.live, BTreeSet::from(["TR_2".to_owned()]));
        assert_eq!(flow.most_live, (2, ms(1250)), "old and new held at once, briefly");
    }
}
