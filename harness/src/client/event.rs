//! faultline's event vocabulary: what any client under test — faultline-sdk in process, or an
//! external SDK behind a driver — reports, in one shape the record, the judge and the
//! reports read.
//!
//! The names follow the upstream `livekit` crate's `RoomEvent`. `SignalReconnecting` is the
//! JavaScript SDK's: it starts a signalling-only resume with it *instead of* `Reconnecting`
//! (media may still flow), and ends that episode with `Reconnected`; when the resume fails it
//! escalates with `Reconnecting`, and may say `SignalReconnecting` again for a later resume
//! attempt of the same episode. So `SignalReconnecting` opens an episode when none is open
//! and is otherwise informational (see [`Lifecycle`]). Disconnect reasons are livekit-protocol's
//! [`DisconnectReason`], which every LiveKit SDK reports in its own spelling and each driver
//! translates (see `docs/driver-protocol.md`).

use std::sync::Arc;

use faultline_sdk::{ConnectionState, DisconnectReason, RoomEvent};

use crate::vocab::TrackSource;

/// What one subscribed track has delivered so far, in a [`ClientEvent::Media`] sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCount {
    /// The publisher's identity.
    pub from: String,
    /// The track's source.
    pub source: TrackSource,
    /// The track's sid (a new subscription, with a new sid, counts from 0).
    pub sid: String,
    /// Frames received since it was subscribed: video frames, or audio in 10 or 20 ms units
    /// (each driver says which); it advances while media flows and stops when it stops.
    pub frames: u64,
    /// Video frames decoded, where the client can tell (its decoder took what arrived).
    pub decoded: Option<u64>,
}

impl MediaCount {
    /// What each of a faultline-sdk room's subscriptions has delivered, in a set order
    /// (the SDK lists them from a hash map; sorted, the same run gives the same record).
    pub fn sample(room: &faultline_sdk::Room) -> Vec<MediaCount> {
        let mut tracks: Vec<MediaCount> = room
            .subscribed_tracks()
            .into_iter()
            .map(|(from, track)| MediaCount {
                from,
                source: track.source(),
                sid: track.sid().to_owned(),
                frames: track.stats().frames,
                decoded: None,
            })
            .collect();
        tracks.sort_by(|a, b| (&a.from, a.source, &a.sid).cmp(&(&b.from, b.source, &b.sid)));
        tracks
    }
}

/// Something a client under test reported.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The room joined (the first event of every room).
    Connected,
    /// The JavaScript SDK's signalling-only resume began (media may still flow): opens a
    /// reconnect episode when none is open.
    SignalReconnecting,
    /// The connection was lost; the client is reconnecting. Once per episode.
    Reconnecting,
    /// The episode ended well.
    Reconnected,
    /// The room is gone for good.
    Disconnected {
        /// Why, as livekit-protocol names it.
        reason: DisconnectReason,
    },
    /// A participant joined.
    ParticipantConnected {
        /// Its identity.
        identity: String,
        /// Its server-assigned session id.
        sid: String,
    },
    /// A participant left.
    ParticipantDisconnected {
        /// Its identity.
        identity: String,
        /// Its server-assigned session id.
        sid: String,
    },
    /// A user data packet arrived.
    DataReceived {
        /// The bytes sent.
        payload: Arc<Vec<u8>>,
        /// The sender's topic, if any.
        topic: Option<String>,
        /// Whether it came over the reliable channel (`None` when the SDK does not say: the
        /// Go SDK).
        reliable: Option<bool>,
        /// The sender's identity, if the client knew the sender.
        from: Option<String>,
    },
    /// The set of active speakers changed.
    ActiveSpeakersChanged {
        /// Identities of those now speaking.
        speakers: Vec<String>,
    },
    /// The server accepted a track this client published; again, with a new sid, after a
    /// full reconnect (`previous_sid` names the old one where the SDK reports a republish as
    /// such; a new sid for the same source means the same either way).
    LocalTrackPublished {
        /// Its source.
        source: TrackSource,
        /// Its sid now.
        sid: String,
        /// Its sid before a republish, if the SDK said.
        previous_sid: Option<String>,
    },
    /// A track of this client's was unpublished.
    LocalTrackUnpublished {
        /// Its source.
        source: TrackSource,
        /// Its sid.
        sid: String,
    },
    /// A remote participant published a track.
    TrackPublished {
        /// The publisher.
        from: String,
        /// Its source.
        source: TrackSource,
        /// Its sid.
        sid: String,
    },
    /// A remote participant's track was unpublished.
    TrackUnpublished {
        /// The publisher.
        from: String,
        /// Its source.
        source: TrackSource,
        /// Its sid.
        sid: String,
    },
    /// This client subscribed to a remote track.
    TrackSubscribed {
        /// The publisher.
        from: String,
        /// Its source.
        source: TrackSource,
        /// Its sid.
        sid: String,
    },
    /// A subscription ended.
    TrackUnsubscribed {
        /// The publisher.
        from: String,
        /// Its source.
        source: TrackSource,
        /// Its sid.
        sid: String,
    },
    /// A remote participant muted or unmuted a track.
    TrackMuted {
        /// The publisher.
        from: String,
        /// Its source.
        source: TrackSource,
        /// Muted (or unmuted).
        muted: bool,
    },
    /// What each subscribed track has delivered so far: a sample taken every 100 ms while
    /// anything is subscribed.
    Media {
        /// One count per subscribed track.
        tracks: Vec<MediaCount>,
    },
}

/// The events the invariants are about.
///
/// An episode opens with `Reconnecting` or `SignalReconnecting` and ends with `Reconnected`
/// or `Disconnected`. Inside it, `Reconnecting` may come at most once (after a
/// `SignalReconnecting`: the escalation from a signalling-only resume to a full reconnect)
/// and `SignalReconnecting` is informational.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// `Connected`.
    Connected,
    /// `SignalReconnecting` (JavaScript SDK).
    SignalReconnecting,
    /// `Reconnecting`.
    Reconnecting,
    /// `Reconnected`.
    Reconnected,
    /// `Disconnected`.
    Disconnected,
}

impl Lifecycle {
    /// Whether this step can open a reconnect episode.
    pub fn opens_episode(self) -> bool {
        matches!(self, Lifecycle::Reconnecting | Lifecycle::SignalReconnecting)
    }

    /// The connection state this event leaves the room in.
    pub fn resulting_state(self) -> ConnectionState {
        match self {
            Lifecycle::Connected | Lifecycle::Reconnected => ConnectionState::Connected,
            Lifecycle::Reconnecting | Lifecycle::SignalReconnecting => {
                ConnectionState::Reconnecting
            }
            Lifecycle::Disconnected => ConnectionState::Disconnected,
        }
    }
}

/// An event a client reported in its own type, which the judge can read once it is put in
/// the shared vocabulary.
pub trait Observed: Clone + std::fmt::Debug {
    /// The event in the shared vocabulary, if the vocabulary carries it.
    fn client_event(&self) -> Option<ClientEvent>;

    /// The lifecycle step this event is, if it is one.
    fn lifecycle(&self) -> Option<Lifecycle> {
        self.client_event()?.lifecycle()
    }
}

impl Observed for ClientEvent {
    fn client_event(&self) -> Option<ClientEvent> {
        Some(self.clone())
    }

    fn lifecycle(&self) -> Option<Lifecycle> {
        match self {
            ClientEvent::Connected => Some(Lifecycle::Connected),
            ClientEvent::SignalReconnecting => Some(Lifecycle::SignalReconnecting),
            ClientEvent::Reconnecting => Some(Lifecycle::Reconnecting),
            ClientEvent::Reconnected => Some(Lifecycle::Reconnected),
            ClientEvent::Disconnected { .. } => Some(Lifecycle::Disconnected),
            _ => None,
        }
    }
}

impl Observed for RoomEvent {
    fn client_event(&self) -> Option<ClientEvent> {
        ClientEvent::from_room_event(self)
    }
}

impl ClientEvent {
    /// Whether it says a remote participant joined or left.
    pub fn is_participant_change(&self) -> bool {
        matches!(
            self,
            ClientEvent::ParticipantConnected { .. } | ClientEvent::ParticipantDisconnected { .. }
        )
    }

    /// faultline-sdk's event in the shared vocabulary; `None` for what the vocabulary does
    /// not carry (state-change notifications, which repeat the lifecycle events, and name or
    /// metadata changes).
    pub fn from_room_event(event: &RoomEvent) -> Option<ClientEvent> {
        Some(match event {
            RoomEvent::Connected => ClientEvent::Connected,
            RoomEvent::Reconnecting => ClientEvent::Reconnecting,
            RoomEvent::Reconnected => ClientEvent::Reconnected,
            RoomEvent::Disconnected { reason } => ClientEvent::Disconnected { reason: *reason },
            RoomEvent::ParticipantConnected(p) => ClientEvent::ParticipantConnected {
                identity: p.identity().to_owned(),
                sid: p.sid().to_owned(),
            },
            RoomEvent::ParticipantDisconnected(p) => ClientEvent::ParticipantDisconnected {
                identity: p.identity().to_owned(),
                sid: p.sid().to_owned(),
            },
            RoomEvent::DataReceived { payload, topic, kind, participant } => {
                ClientEvent::DataReceived {
                    payload: payload.clone(),
                    topic: topic.clone(),
                    reliable: Some(*kind == faultline_sdk::DataPacketKind::Reliable),
                    from: participant.as_ref().map(|p| p.identity().to_owned()),
                }
            }
            RoomEvent::ActiveSpeakersChanged { speakers } => {
                ClientEvent::ActiveSpeakersChanged { speakers: speakers.clone() }
            }
            RoomEvent::LocalTrackPublished { publication } => ClientEvent::LocalTrackPublished {
                source: publication.source(),
                sid: publication.sid().to_owned(),
                previous_sid: None,
            },
            RoomEvent::LocalTrackRepublished { publication, previous_sid } => {
                ClientEvent::LocalTrackPublished {
                    source: publication.source(),
                    sid: publication.sid().to_owned(),
                    previous_sid: Some(previous_sid.clone()),
                }
            }
            RoomEvent::TrackPublished { publication, participant } => ClientEvent::TrackPublished {
                from: participant.identity().to_owned(),
                source: publication.source(),
                sid: publication.sid().to_owned(),
            },
            RoomEvent::TrackUnpublished { publication, participant } => {
                ClientEvent::TrackUnpublished {
                    from: participant.identity().to_owned(),
                    source: publication.source(),
                    sid: publication.sid().to_owned(),
                }
            }
            RoomEvent::TrackSubscribed { publication, participant, .. } => {
                ClientEvent::TrackSubscribed {
                    from: participant.identity().to_owned(),
                    source: publication.source(),
                    sid: publication.sid().to_owned(),
                }
            }
            RoomEvent::TrackUnsubscribed { publication, participant, .. } => {
                ClientEvent::TrackUnsubscribed {
                    from: participant.identity().to_owned(),
                    source: publication.source(),
                    sid: publication.sid().to_owned(),
                }
            }
            RoomEvent::TrackMuted { publication, participant } => ClientEvent::TrackMuted {
                from: participant.identity().to_owned(),
                source: publication.source(),
                muted: true,
            },
            RoomEvent::TrackUnmuted { publication, participant } => ClientEvent::TrackMuted {
                from: participant.identity().to_owned(),
                source: publication.source(),
                muted: false,
            },
            _ => return None,
        })
    }
}
