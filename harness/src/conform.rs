//! Whether the simulation says what the real server says: a scenario's two records (real lane,
//! sim lane) reduced to what each participant's client saw, times ignored, and compared
//! (`faultline conform`).
//!
//! What counts as seen, per participant: its lifecycle (`Connected`, `Reconnecting`,
//! `Reconnected`, `Disconnected` with the reason, in order), the joins and leaves it saw of
//! the others (in order, by identity), whether it ended on the session it joined with or on a
//! new one (which recovery path the episode took), its final state, and its track events —
//! per track key (publisher, source), never per sid, since a full reconnect changes sids:
//! `published`, `subscribed`, `unsubscribed`, `unpublished`, each with the ordinal of the sid
//! it was about (`subscribed#2`: the second track under that key), and apart from them
//! whether it last heard the track muted (key `<publisher>/<source> mutes`, `ends muted`;
//! no key when it ends unmuted or never heard a mute); and,
//! for the run, each verdict's pass or fail — so data delivery is compared through the
//! invariants' verdict (invariant 5) and the scenario's `data-delivered` expectations, and
//! media through invariant 6's verdict and the `media-*` expectations. Lifecycle, participant
//! and each key's track events are compared as separate sequences, not interleaved: when a
//! peer's rejoin is announced relative to one's own `Reconnected`, one track's subscription
//! relative to another's, or an unmute relative to a resubscription, depends on timing,
//! which a comparison ignores. Only a track's last mute state is compared: whether a peer hears
//! a mute and its unmute as events, or rejoins after both and finds the track already
//! unmuted, depends on when its own reconnect met the restarted server.
//!
//! The real lane's record must hold everything the room was going to say, so it is taken with
//! [`crate::scenario::RunOptions::quiet`]; the sim lane's run always ends once quiet.

use std::collections::BTreeMap;
use std::path::Path;

use crate::client::ClientEvent;
use crate::record::RunRecord;
use crate::scenario::format::Lane;
use crate::scenario::{run_real, run_sim, RunError, RunOptions, Scenario};

/// How long the real lane must see no lifecycle or participant event before its record is
/// taken for a comparison.
pub const QUIET: std::time::Duration = std::time::Duration::from_secs(5);

/// A scenario's two records and how they compare.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The real lane's record (taken once quiet).
    pub real: RunRecord,
    /// The sim lane's record.
    pub sim: RunRecord,
    /// The first difference in what the clients saw, if any ([`first_difference`]).
    pub difference: Option<String>,
}

/// Whether `scenario` lists both lanes, so that it can be compared.
pub fn lists_both_lanes(scenario: &Scenario) -> bool {
    scenario.lanes.contains(&Lane::Real) && scenario.lanes.contains(&Lane::Sim)
}

/// Runs `scenario` (read from `file`) on the real lane, watching until the room is quiet,
/// and in the simulation, both with `seed`, and compares what the clients saw.
pub async fn compare(scenario: &Scenario, file: &Path, seed: u64) -> Result<Comparison, RunError> {
    let options = RunOptions { seed, observer: None, quiet: Some(QUIET) };
    let real = run_real(scenario, file, options).await?;
    let (owned, path) = (scenario.clone(), file.to_owned());
    let sim = tokio::task::spawn_blocking(move || run_sim(&owned, &path, seed))
        .await
        .map_err(|e| RunError::Sim(format!("the simulation thread failed: {e}")))??;
    let difference = first_difference(&real, &sim);
    Ok(Comparison { real, sim, difference })
}

/// What one participant's client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Lifecycle events, in order (`Disconnected(SIGNAL_CLOSE)` with its reason).
    pub lifecycle: Vec<String>,
    /// Joins (`+bob`) and leaves (`-bob`) of the others, in order.
    pub participants: Vec<String>,
    /// `same session` or `new session`: whether the final sid is the one it joined with.
    pub session: &'static str,
    /// Its final connection state.
    pub final_state: String,
    /// Its track events by track key (`alice/camera`; its own as `self/camera`), each as
    /// `what#n` with `n` the ordinal of the sid under that key.
    pub tracks: BTreeMap<String, Vec<String>>,
}

/// What each participant saw in `record`, by identity.
pub fn seen(record: &RunRecord) -> BTreeMap<String, Seen> {
    record
        .participants
        .iter()
        .map(|p| {
            let mut lifecycle = Vec::new();
            let mut participants = Vec::new();
            let mut tracks = TrackEvents::default();
            for e in record.events_of(&p.identity) {
                tracks.note(&e.event);
                match &e.event {
                    ClientEvent::Disconnected { reason } => {
                        lifecycle.push(format!("Disconnected({})", reason.as_str_name()));
                    }
                    ClientEvent::ParticipantConnected { identity, .. } => {
                        participants.push(format!("+{identity}"));
                    }
                    ClientEvent::ParticipantDisconnected { identity, .. } => {
                        participants.push(format!("-{identity}"));
                    }
                    event => {
                        if let Some(step) = crate::client::Observed::lifecycle(event) {
                            lifecycle.push(format!("{step:?}"));
                        }
                    }
                }
            }
            let session = if p.final_sid.is_empty() || p.final_sid == p.joined_sid {
                "same session"
            } else {
                "new session"
            };
            let final_state = record
                .final_state(&p.identity)
                .map_or_else(|| "never joined".to_owned(), |s| format!("{s:?}"));
            let tracks = tracks.finish();
            (p.identity.clone(), Seen { lifecycle, participants, session, final_state, tracks })
        })
        .collect()
}

/// One client's track events as [`Seen::tracks`] holds them, with the sids numbered per key.
#[derive(Default)]
struct TrackEvents {
    by_key: BTreeMap<String, Vec<String>>,
    sids: BTreeMap<String, Vec<String>>,
    /// The last mute state heard per track key.
    muted: BTreeMap<String, bool>,
}

impl TrackEvents {
    fn note(&mut self, event: &ClientEvent) {
        let (from, source, what, sid) = match event {
            ClientEvent::LocalTrackPublished { source, sid, .. } => {
                ("self", source, "published", sid)
            }
            ClientEvent::LocalTrackUnpublished { source, sid } => {
                ("self", source, "unpublished", sid)
            }
            ClientEvent::TrackPublished { from, source, sid } => {
                (from.as_str(), source, "published", sid)
            }
            ClientEvent::TrackUnpublished { from, source, sid } => {
                (from.as_str(), source, "unpublished", sid)
            }
            ClientEvent::TrackSubscribed { from, source, sid } => {
                (from.as_str(), source, "subscribed", sid)
            }
            ClientEvent::TrackUnsubscribed { from, source, sid } => {
                (from.as_str(), source, "unsubscribed", sid)
            }
            ClientEvent::TrackMuted { from, source, muted } => {
                self.muted.insert(format!("{from}/{} mutes", source.name()), *muted);
                return;
            }
            _ => return,
        };
        let key = format!("{from}/{}", source.name());
        let sids = self.sids.entry(key.clone()).or_default();
        let n = match sids.iter().position(|s| s == sid) {
            Some(i) => i + 1,
            None => {
                sids.push(sid.clone());
                sids.len()
            }
        };
        self.by_key.entry(key).or_default().push(format!("{what}#{n}"));
    }

    /// The events by key, with each track last heard muted under its `mutes` key.
    fn finish(mut self) -> BTreeMap<String, Vec<String>> {
        for (key, muted) in self.muted {
            if muted {
                self.by_key.insert(key, vec!["ends muted".to_owned()]);
            }
        }
        self.by_key
    }
}

/// The first difference between what the clients saw on the real lane and in the
/// simulation, described for a person; `None` when they agree.
pub fn first_difference(real: &RunRecord, sim: &RunRecord) -> Option<String> {
    let (real_seen, sim_seen) = (seen(real), seen(sim));
    let list = |items: &[String]| format!("[{}]", items.join(", "));
    for (identity, r) in &real_seen {
        let Some(s) = sim_seen.get(identity) else {
            return Some(format!("{identity} is not in the simulation's record"));
        };
        if r.lifecycle != s.lifecycle {
            return Some(format!(
                "{identity}'s lifecycle: real {}, sim {}",
                list(&r.lifecycle),
                list(&s.lifecycle)
            ));
        }
        if r.participants != s.participants {
            return Some(format!(
                "what {identity} saw of the others: real {}, sim {}",
                list(&r.participants),
                list(&s.participants)
            ));
        }
        if r.session != s.session {
            return Some(format!(
                "{identity} ended on the {} on the real server, on the {} in the simulation",
                r.session, s.session
            ));
        }
        let keys: std::collections::BTreeSet<&String> =
            r.tracks.keys().chain(s.tracks.keys()).collect();
        for key in keys {
            let (on_real, on_sim) = (r.tracks.get(key), s.tracks.get(key));
            if on_real != on_sim {
                let none = Vec::new();
                return Some(format!(
                    "{identity}'s events of track {key}: real {}, sim {}",
                    list(on_real.unwrap_or(&none)),
                    list(on_sim.unwrap_or(&none))
                ));
            }
        }
        if r.final_state != s.final_state {
            return Some(format!(
                "{identity}'s final state: real {}, sim {}",
                r.final_state, s.final_state
            ));
        }
    }
    if let Some(extra) = sim_seen.keys().find(|k| !real_seen.contains_key(*k)) {
        return Some(format!("{extra} is only in the simulation's record"));
    }
    // `invariants of alice (DESIGN.md 1–4)`: which invariants were judged depends on whether
    // sequenced data was published, which the sim lane always does; the verdict is compared.
    let key = |what: &str| what.split(" (DESIGN.md").next().unwrap_or(what).to_owned();
    let verdict = |record: &RunRecord, what: &str| {
        record.verdicts.iter().find(|v| key(&v.what) == key(what)).map(|v| v.passed)
    };
    for v in &real.verdicts {
        let mark = |passed: Option<bool>| match passed {
            Some(true) => "passes",
            Some(false) => "fails",
            None => "is not judged",
        };
        let on_sim = verdict(sim, &v.what);
        if on_sim != Some(v.passed) {
            return Some(format!(
                "`{}` {} on the real server and {} in the simulation",
                v.what,
                mark(Some(v.passed)),
                mark(on_sim)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::record::{EventRecord, ParticipantRecord};
    use faultline_sdk::{ConnectionState, DisconnectReason, RoomOptions, TrackSource};

    fn record(events: &[(&str, ClientEvent)], final_sid: &str) -> RunRecord {
        let mut alice = ParticipantRecord::faultline("alice", &RoomOptions::default());
        alice.joined_sid = "PA_1".into();
        alice.final_sid = final_sid.into();
        RunRecord {
            participants: vec![alice],
            events: events
                .iter()
                .enumerate()
                .map(|(i, (who, event))| EventRecord {
                    participant: (*who).into(),
                    at: Duration::from_millis(i as u64 * 100),
                    event: event.clone(),
                })
                .collect(),
            final_states: vec![("alice".into(), ConnectionState::Connected)],
            scenario: "t".into(),
            description: String::new(),
            file: "t.toml".into(),
            lane: Lane::Real,
            seed: 1,
            room: "r".into(),
            timeline_zero: Duration::ZERO,
            ended: Duration::from_secs(10),
            faults: Vec::new(),
            verdicts: Vec::new(),
            logs: Vec::new(),
            cluster: Vec::new(),
        }
    }

    fn joined(identity: &str) -> ClientEvent {
        ClientEvent::ParticipantConnected { identity: identity.into(), sid: "PA_x".into() }
    }

    #[test]
    fn times_and_the_interleaving_of_the_two_sequences_do_not_matter() {
        let real = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", ClientEvent::Reconnecting),
                ("alice", ClientEvent::Reconnected),
                ("alice", joined("bob")),
            ],
            "PA_1",
        );
        let sim = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", ClientEvent::Reconnecting),
                ("alice", joined("bob")),
                ("alice", ClientEvent::Reconnected),
            ],
            "PA_1",
        );
        assert_eq!(first_difference(&real, &sim), None);
    }

    #[test]
    fn track_events_compare_per_key_by_sid_ordinal_not_by_sid_or_across_keys() {
        let event = |from: &str, source, sid: &str, subscribed: bool| {
            let (from, sid) = (from.into(), sid.into());
            if subscribed {
                ClientEvent::TrackSubscribed { from, source, sid }
            } else {
                ClientEvent::TrackUnsubscribed { from, source, sid }
            }
        };
        let (mic, cam) = (TrackSource::Microphone, TrackSource::Camera);
        let real = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", event("bob", mic, "TR_a", true)),
                ("alice", event("bob", cam, "TR_b", true)),
                ("alice", event("bob", cam, "TR_b", false)),
                ("alice", event("bob", cam, "TR_c", true)),
            ],
            "PA_1",
        );
        // Other sids, and the two keys interleaved otherwise: the same.
        let sim = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", event("bob", cam, "TR_7", true)),
                ("alice", event("bob", cam, "TR_7", false)),
                ("alice", event("bob", mic, "TR_6", true)),
                ("alice", event("bob", cam, "TR_9", true)),
            ],
            "PA_1",
        );
        assert_eq!(first_difference(&real, &sim), None);
        // The old camera never unsubscribed (a ghost): a difference.
        let ghost = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", event("bob", mic, "TR_6", true)),
                ("alice", event("bob", cam, "TR_7", true)),
                ("alice", event("bob", cam, "TR_9", true)),
            ],
            "PA_1",
        );
        let said = first_difference(&real, &ghost).expect("a difference");
        assert_eq!(
            said,
            "alice's events of track bob/camera: real [subscribed#1, unsubscribed#1, \
             subscribed#2], sim [subscribed#1, subscribed#2]"
        );
    }

    #[test]
    fn only_the_last_mute_state_heard_counts_so_a_missing_unmute_is_a_difference() {
        let (from, source) = ("bob".to_owned(), TrackSource::Camera);
        let subscribed = |sid: &str| ClientEvent::TrackSubscribed {
            from: from.clone(),
            source,
            sid: sid.into(),
        };
        let unmuted = ClientEvent::TrackMuted { from: from.clone(), source, muted: false };
        let muted = ClientEvent::TrackMuted { from: from.clone(), source, muted: true };
        let real = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", muted.clone()),
                ("alice", unmuted.clone()),
                ("alice", subscribed("TR_a")),
            ],
            "PA_1",
        );
        let sim = record(
            &[
                ("alice", ClientEvent::Connected),
                ("alice", muted.clone()),
                ("alice", subscribed("TR_7")),
                ("alice", unmuted),
            ],
            "PA_1",
        );
        assert_eq!(first_difference(&real, &sim), None);
        // Back after both: the republished track was already unmuted, no event.
        let rejoined_after_the_unmute =
            record(&[("alice", ClientEvent::Connected), ("alice", subscribed("TR_7"))], "PA_1");
        assert_eq!(first_difference(&real, &rejoined_after_the_unmute), None);
        let never_unmuted = record(
            &[("alice", ClientEvent::Connected), ("alice", muted), ("alice", subscribed("TR_7"))],
            "PA_1",
        );
        assert_eq!(
            first_difference(&real, &never_unmuted).as_deref(),
            Some("alice's events of track bob/camera mutes: real [], sim [ends muted]")
        );
    }

    #[test]
    fn a_missing_announcement_a_reason_and_a_new_session_are_differences() {
        let base = [("alice", ClientEvent::Connected), ("alice", joined("bob"))];
        let real = record(&base, "PA_1");
        let quiet = record(&base[..1], "PA_1");
        let said = first_difference(&real, &quiet).expect("a difference");
        assert_eq!(said, "what alice saw of the others: real [+bob], sim []");

        let ended = |reason| {
            record(
                &[
                    ("alice", ClientEvent::Connected),
                    ("alice", ClientEvent::Disconnected { reason }),
                ],
                "PA_1",
            )
        };
        let said = first_difference(
            &ended(DisconnectReason::SignalClose),
            &ended(DisconnectReason::ServerShutdown),
        )
        .expect("a difference");
        assert!(said.contains("Disconnected(SIGNAL_CLOSE)"), "{said}");

        let resumed = record(&base, "PA_1");
        let rejoined = record(&base, "PA_2");
        let said = first_difference(&resumed, &rejoined).expect("a difference");
        assert!(said.contains("same session on the real server, on the new session"), "{said}");
    }
}
