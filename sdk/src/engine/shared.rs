//! The room state the engine writes and the [`crate::Room`] handle reads: connection state,
//! room and participant info, and the event listeners.
//!
//! [`Shared::emit`] is the single door events go through. It updates the connection state
//! and sends under one lock, so `connection_state()` always agrees with the last lifecycle
//! event; after `Disconnected` it drops every listener (their streams end) and ignores any
//! later event.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use livekit_protocol as proto;
use tokio::sync::mpsc;

use crate::media::{LocalTrackPublication, RemoteTrack};
use crate::{ConnectionState, RemoteParticipant, RoomEvent};

/// The local participant's info.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalInfo {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
}

#[derive(Debug)]
struct State {
    connection_state: ConnectionState,
    ended: bool,
    room_name: String,
    room_sid: String,
    local: LocalInfo,
    /// Remote participants by identity.
    /// Keyed by identity, ordered so that events derived from it come out in the same order
    /// on every run (same seed, same trace).
    remotes: BTreeMap<String, RemoteParticipant>,
    listeners: Vec<mpsc::UnboundedSender<RoomEvent>>,
    /// The local publications, as the engine last reported them.
    local_tracks: Vec<LocalTrackPublication>,
    /// The subscriptions (publisher identity, track), as the engine last reported them.
    subscribed: Vec<(String, RemoteTrack)>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// State for a room that just joined with `join`.
    pub(crate) fn new(join: &proto::JoinResponse) -> Self {
        let shared = Self {
            state: Mutex::new(State {
                connection_state: ConnectionState::Connected,
                ended: false,
                room_name: String::new(),
                room_sid: String::new(),
                local: LocalInfo::default(),
                remotes: BTreeMap::new(),
                listeners: Vec::new(),
                local_tracks: Vec::new(),
                subscribed: Vec::new(),
            }),
        };
        shared.reset_from_join(join);
        let remotes = join.other_participants.iter().map(RemoteParticipant::from_info);
        shared.lock().remotes = remotes.map(|p| (p.identity.clone(), p)).collect();
        shared
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `event` to every listener (preceded by `ConnectionStateChanged` for a lifecycle
    /// event that changes the state). Nothing is sent after `Disconnected`.
    pub(crate) fn emit(&self, event: RoomEvent) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        if let Some(next) = event.resulting_state() {
            if next != state.connection_state || matches!(event, RoomEvent::Connected) {
                state.connection_state = next;
                let changed = RoomEvent::ConnectionStateChanged(next);
                state.listeners.retain(|l| l.send(changed.clone()).is_ok());
            }
        }
        let ends = matches!(event, RoomEvent::Disconnected { .. });
        state.listeners.retain(|l| l.send(event.clone()).is_ok());
        if ends {
            state.ended = true;
            state.listeners.clear();
        }
    }

    /// A new event stream (already ended if the room is).
    pub(crate) fn subscribe(&self) -> mpsc::UnboundedReceiver<RoomEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if !state.ended {
            state.listeners.push(tx);
        }
        rx
    }

    pub(crate) fn connection_state(&self) -> ConnectionState {
        self.lock().connection_state
    }

    pub(crate) fn room_name(&self) -> String {
        self.lock().room_name.clone()
    }

    pub(crate) fn room_sid(&self) -> String {
        self.lock().room_sid.clone()
    }

    pub(crate) fn local(&self) -> LocalInfo {
        self.lock().local.clone()
    }

    pub(crate) fn local_identity_and_sid(&self) -> (String, String) {
        let state = self.lock();
        (state.local.identity.clone(), state.local.sid.clone())
    }

    pub(crate) fn remotes(&self) -> HashMap<String, RemoteParticipant> {
        self.lock().remotes.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The remote participants by identity, in order.
    pub(crate) fn remotes_by_identity(&self) -> BTreeMap<String, RemoteParticipant> {
        self.lock().remotes.clone()
    }

    /// Records the media state for the room's readers.
    pub(crate) fn set_media(
        &self,
        local_tracks: Vec<LocalTrackPublication>,
        subscribed: Vec<(String, RemoteTrack)>,
    ) {
        let mut state = self.lock();
        state.local_tracks = local_tracks;
        state.subscribed = subscribed;
    }

    /// The local publications.
    pub(crate) fn local_tracks(&self) -> Vec<LocalTrackPublication> {
        self.lock().local_tracks.clone()
    }

    /// The subscriptions: (publisher identity, track).
    pub(crate) fn subscribed(&self) -> Vec<(String, RemoteTrack)> {
        self.lock().subscribed.clone()
    }

    pub(crate) fn remote(&self, identity: &str) -> Option<RemoteParticipant> {
        self.lock().remotes.get(identity).cloned()
    }

    /// Takes room and local participant info from a JoinResponse.
    pub(crate) fn reset_from_join(&self, join: &proto::JoinResponse) {
        let mut state = self.lock();
        if let Some(room) = &join.room {
            state.room_name = room.name.clone();
            state.room_sid = room.sid.clone();
        }
        if let Some(me) = &join.participant {
            state.local = LocalInfo {
                sid: me.sid.clone(),
                identity: me.identity.clone(),
                name: me.name.clone(),
                metadata: me.metadata.clone(),
            };
        }
    }

    /// Takes room info from a RoomUpdate.
    pub(crate) fn set_room(&self, room: &proto::Room) {
        let mut state = self.lock();
        state.room_name = room.name.clone();
        if !room.sid.is_empty() {
            state.room_sid = room.sid.clone();
        }
    }

    /// Replaces the remote participants after a full reconnect; returns the events for those
    /// that left (or came back as a new session) and those that are new.
    pub(crate) fn replace_remotes(&self, present: Vec<RemoteParticipant>) -> Vec<RoomEvent> {
        let mut state = self.lock();
        let mut events = Vec::new();
        let new: BTreeMap<String, RemoteParticipant> =
            present.into_iter().map(|p| (p.identity.clone(), p)).collect();
        for (identity, old) in &state.remotes {
            if new.get(identity).is_none_or(|p| p.sid != old.sid) {
                events.push(RoomEvent::ParticipantDisconnected(old.clone()));
            }
        }
        for (identity, participant) in &new {
            if state.remotes.get(identity).is_none_or(|old| old.sid != participant.sid) {
                events.push(RoomEvent::ParticipantConnected(participant.clone()));
            }
        }
        state.remotes = new;
        events
    }

    /// Applies a ParticipantUpdate; returns the events it implies.
    pub(crate) fn apply_participants(&self, infos: &[proto::ParticipantInfo]) -> Vec<RoomEvent> {
        let mut state = self.lock();
        let mut events = Vec::new();
        for info in infos {
            let gone = info.state == proto::participant_info::State::Disconnected as i32;
            if info.identity == state.local.identity {
                if info.sid == state.local.sid {
                    state.local.name = info.name.clone();
                    state.local.metadata = info.metadata.clone();
                }
                continue;
            }
            let updated = RemoteParticipant::from_info(info);
            match state.remotes.get(&info.identity).cloned() {
                Some(known) if known.sid == info.sid => {
                    if gone {
                        state.remotes.remove(&info.identity);
                        events.push(RoomEvent::ParticipantDisconnected(known));
                        continue;
                    }
                    if known.metadata != updated.metadata {
                        events.push(RoomEvent::ParticipantMetadataChanged {
                            participant: updated.clone(),
                            old_metadata: known.metadata.clone(),
                        });
                    }
                    if known.name != updated.name {
                        events.push(RoomEvent::ParticipantNameChanged {
                            participant: updated.clone(),
                            old_name: known.name.clone(),
                        });
                    }
                    state.remotes.insert(info.identity.clone(), updated);
                }
                // The update is about an older session of this identity: already replaced.
                Some(_) if gone => {}
                Some(known) => {
                    events.push(RoomEvent::ParticipantDisconnected(known));
                    events.push(RoomEvent::ParticipantConnected(updated.clone()));
                    state.remotes.insert(info.identity.clone(), updated);
                }
                None if gone => {}
                None => {
                    events.push(RoomEvent::ParticipantConnected(updated.clone()));
                    state.remotes.insert(info.identity.clone(), updated);
                }
            }
        }
        events
    }

    /// Removes every remote participant `roster` does not name (by identity); returns a
    /// `ParticipantDisconnected` for each.
    pub(crate) fn keep_only(&self, roster: &[proto::ParticipantInfo]) -> Vec<RoomEvent> {
        let mut state = self.lock();
        let gone: Vec<String> = state
            .remotes
            .keys()
            .filter(|identity| !roster.iter().any(|p| p.identity == **identity))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|identity| state.remotes.remove(&identity))
            .map(RoomEvent::ParticipantDisconnected)
            .collect()
    }

    /// Identities for participant sids (local or remote), skipping unknown ones.
    pub(crate) fn identities_of(&self, sids: &[String]) -> Vec<String> {
        let state = self.lock();
        sids.iter()
            .filter_map(|sid| {
                if *sid == state.local.sid {
                    return Some(state.local.identity.clone());
                }
                state.remotes.values().find(|p| p.sid == *sid).map(|p| p.identity.clone())
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::DisconnectReason;

    fn info(
        identity: &str,
        sid: &str,
        state: proto::participant_info::State,
    ) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            identity: identity.into(),
            sid: sid.into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn joined() -> Shared {
        let join = proto::JoinResponse {
            participant: Some(info("me", "PA_me", proto::participant_info::State::Joined)),
            other_participants: vec![info("bob", "PA_b1", proto::participant_info::State::Active)],
            ..Default::default()
        };
        Shared::new(&join)
    }

    #[test]
    fn nothing_is_emitted_after_disconnected_and_streams_end() {
        let shared = joined();
        let mut events = shared.subscribe();
        shared.emit(RoomEvent::Disconnected { reason: DisconnectReason::ClientInitiated });
        shared.emit(RoomEvent::Reconnected);
        assert_eq!(
            events.try_recv().unwrap(),
            RoomEvent::ConnectionStateChanged(ConnectionState::Disconnected)
        );
        assert!(matches!(events.try_recv().unwrap(), RoomEvent::Disconnected { .. }));
        assert!(matches!(events.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert_eq!(shared.connection_state(), ConnectionState::Disconnected);
        assert!(matches!(
            shared.subscribe().try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn lifecycle_events_move_the_state_first() {
        let shared = joined();
        let mut events = shared.subscribe();
        shared.emit(RoomEvent::Reconnecting);
        assert_eq!(shared.connection_state(), ConnectionState::Reconnecting);
        assert_eq!(
            events.try_recv().unwrap(),
            RoomEvent::ConnectionStateChanged(ConnectionState::Reconnecting)
        );
        assert_eq!(events.try_recv().unwrap(), RoomEvent::Reconnecting);
    }

    #[test]
    fn participant_updates_become_join_leave_and_rejoin_events() {
        let shared = joined();
        let events = shared.apply_participants(&[
            info("carol", "PA_c", proto::participant_info::State::Joined),
            info("bob", "PA_b1", proto::participant_info::State::Disconnected),
            info("me", "PA_me", proto::participant_info::State::Active),
        ]);
        let kinds: Vec<_> = events
            .iter()
            .map(|e| match e {
                RoomEvent::ParticipantConnected(p) => format!("+{}", p.identity()),
                RoomEvent::ParticipantDisconnected(p) => format!("-{}", p.identity()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["+carol", "-bob"]);
        let rejoin = shared.apply_participants(&[info(
            "carol",
            "PA_c2",
            proto::participant_info::State::Joined,
        )]);
        assert_eq!(rejoin.len(), 2, "a new session of carol is a leave and a join: {rejoin:?}");
        let stale = shared.apply_participants(&[info(
            "carol",
            "PA_c",
            proto::participant_info::State::Disconnected,
        )]);
        assert!(stale.is_empty(), "the old session leaving changes nothing: {stale:?}");
    }

    #[test]
    fn a_roster_removes_whoever_it_does_not_name() {
        let shared = joined();
        shared.apply_participants(&[
            info("carol", "PA_c", proto::participant_info::State::Active),
            info("dave", "PA_d", proto::participant_info::State::Active),
        ]);
        let roster = [
            info("me", "PA_me", proto::participant_info::State::Active),
            info("bob", "PA_b1", proto::participant_info::State::Active),
            info("carol", "PA_c", proto::participant_info::State::Active),
        ];
        let events = shared.keep_only(&roster);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], RoomEvent::ParticipantDisconnected(p) if p.identity() == "dave")
        );
        assert!(shared.remote("dave").is_none());
        assert!(shared.remote("carol").is_some());
        assert!(shared.keep_only(&roster).is_empty(), "a second roster changes nothing");
    }

    #[test]
    fn a_full_reconnect_reports_only_what_changed() {
        let shared = joined();
        let events = shared.replace_remotes(vec![RemoteParticipant {
            sid: "PA_d".into(),
            identity: "dave".into(),
            name: String::new(),
            metadata: String::new(),
            tracks: Vec::new(),
        }]);
        assert_eq!(events.len(), 2);
        assert!(
            matches!(&events[0], RoomEvent::ParticipantDisconnected(p) if p.identity() == "bob")
        );
        assert!(matches!(&events[1], RoomEvent::ParticipantConnected(p) if p.identity() == "dave"));
    }
}
