//! What a room tells its user: [`RoomEvent`], [`ConnectionState`], participants as seen from
//! outside, data packets, and the [`SimulateScenario`] a test can ask for.
//!
//! Names and shapes follow the upstream `livekit` crate where the two overlap.

use std::sync::Arc;
use std::time::Duration;

pub use livekit_protocol::DisconnectReason;

use crate::media::{LocalTrackPublication, RemoteTrack, RemoteTrackPublication};

/// The room's connection, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Not connected, and never going to be again (a room does not come back once it is
    /// disconnected).
    Disconnected,
    /// Connected: signalling and the primary peer connection are up.
    Connected,
    /// The connection was lost and the engine is trying to get it back.
    Reconnecting,
}

/// Whether a data packet is delivered reliably (ordered, retransmitted, replayed across a
/// resume) or lossily.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataPacketKind {
    /// Ordered and retransmitted ("_reliable" channel).
    Reliable,
    /// Unordered, no retransmission ("_lossy" channel).
    Lossy,
}

/// A user data packet to publish with [`crate::LocalParticipant::publish_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPacket {
    /// The bytes to deliver.
    pub payload: Vec<u8>,
    /// An optional topic receivers can filter on.
    pub topic: Option<String>,
    /// Reliable (default) or lossy delivery.
    pub reliable: bool,
    /// Identities to deliver to; empty means everyone in the room.
    pub destination_identities: Vec<String>,
}

impl Default for DataPacket {
    fn default() -> Self {
        Self {
            payload: Vec::new(),
            topic: None,
            reliable: true,
            destination_identities: Vec::new(),
        }
    }
}

impl DataPacket {
    /// The kind this packet is sent as.
    pub fn kind(&self) -> DataPacketKind {
        if self.reliable {
            DataPacketKind::Reliable
        } else {
            DataPacketKind::Lossy
        }
    }
}

/// Another participant in the room, as last reported by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteParticipant {
    pub(crate) sid: String,
    pub(crate) identity: String,
    pub(crate) name: String,
    pub(crate) metadata: String,
    /// The tracks it publishes (audio and video faultline knows), as last reported.
    pub(crate) tracks: Vec<RemoteTrackPublication>,
}

impl RemoteParticipant {
    pub(crate) fn from_info(info: &livekit_protocol::ParticipantInfo) -> Self {
        Self {
            sid: info.sid.clone(),
            identity: info.identity.clone(),
            name: info.name.clone(),
            metadata: info.metadata.clone(),
            tracks: info.tracks.iter().filter_map(RemoteTrackPublication::from_info).collect(),
        }
    }

    /// The tracks it publishes, as last reported by the server.
    pub fn track_publications(&self) -> &[RemoteTrackPublication] {
        &self.tracks
    }

    /// The server-assigned session id (changes when the participant reconnects fully).
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The identity from the participant's token (stable across reconnects).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Application metadata.
    pub fn metadata(&self) -> &str {
        &self.metadata
    }
}

/// Something that happened to the room.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RoomEvent {
    /// The room joined (the first event of every room).
    Connected,
    /// [`crate::Room::connection_state`] changed; sent just before the lifecycle event
    /// (`Connected`, `Reconnecting`, `Reconnected`, `Disconnected`) that caused it.
    ConnectionStateChanged(ConnectionState),
    /// The connection was lost; the engine is reconnecting. Once per episode.
    Reconnecting,
    /// The episode ended well: signalling and media are back.
    Reconnected,
    /// The room is gone for good. The last event: the event stream ends after it.
    Disconnected {
        /// Why: the server's reason, `ClientInitiated` after `close()`, or the reason that
        /// began a reconnect episode that ran out of attempts.
        reason: DisconnectReason,
    },
    /// A participant joined.
    ///
    /// After this room's own full reconnect, only what changed is reported: a remote
    /// participant missing from the new session's list gets `ParticipantDisconnected`, one
    /// that is new or came back as a new session (a new sid) gets `ParticipantConnected`
    /// (after its old session's `ParticipantDisconnected`), and one present in both with the
    /// same sid gets nothing. This differs on purpose from the upstream `livekit` crate, which
    /// reports every remote participant disconnected and everyone in the new list connected:
    /// here an event always means someone really came or went, so an app keyed by identity
    /// does not flicker and a peer's "did they leave?" has one answer.
    ParticipantConnected(RemoteParticipant),
    /// A participant left (see [`RoomEvent::ParticipantConnected`] for a full reconnect).
    ParticipantDisconnected(RemoteParticipant),
    /// A participant's metadata changed.
    ParticipantMetadataChanged {
        /// The participant, with its new metadata.
        participant: RemoteParticipant,
        /// The metadata before the change.
        old_metadata: String,
    },
    /// A participant's name changed.
    ParticipantNameChanged {
        /// The participant, with its new name.
        participant: RemoteParticipant,
        /// The name before the change.
        old_name: String,
    },
    /// The set of active speakers changed (identities; may include the local participant).
    ActiveSpeakersChanged {
        /// Identities of those now speaking.
        speakers: Vec<String>,
    },
    /// The server accepted a track this participant published.
    LocalTrackPublished {
        /// The publication (its sid).
        publication: LocalTrackPublication,
    },
    /// After a full reconnect, a track this participant had published was published again
    /// in the new session, with a new sid.
    LocalTrackRepublished {
        /// The publication in the new session.
        publication: LocalTrackPublication,
        /// Its sid in the session before.
        previous_sid: String,
    },
    /// A remote participant published a track (also sent for the tracks of a participant
    /// who joins, after its `ParticipantConnected`).
    TrackPublished {
        /// The track as the server describes it.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// A remote participant's track is no longer published (also when it leaves).
    TrackUnpublished {
        /// The track.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// This participant is subscribed to a remote track: its media can arrive, and
    /// [`RemoteTrack::stats`] counts what does.
    TrackSubscribed {
        /// The track, to read what it delivers.
        track: RemoteTrack,
        /// Its publication.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// A subscription ended (the track was unpublished, its publisher left, the server
    /// moved the media line to another track, or this room reconnected fully).
    TrackUnsubscribed {
        /// The track.
        track: RemoteTrack,
        /// Its publication.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// A remote participant muted a track.
    TrackMuted {
        /// The track.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// A remote participant unmuted a track.
    TrackUnmuted {
        /// The track.
        publication: RemoteTrackPublication,
        /// Its publisher.
        participant: RemoteParticipant,
    },
    /// A user data packet arrived.
    DataReceived {
        /// The bytes sent.
        payload: Arc<Vec<u8>>,
        /// The sender's topic, if any.
        topic: Option<String>,
        /// How it was sent.
        kind: DataPacketKind,
        /// The sender, if it is a known remote participant.
        participant: Option<RemoteParticipant>,
    },
}

impl RoomEvent {
    /// Whether this event moves the room's lifecycle (the events the invariants are about).
    pub fn is_lifecycle(&self) -> bool {
        matches!(
            self,
            RoomEvent::Connected
                | RoomEvent::Reconnecting
                | RoomEvent::Reconnected
                | RoomEvent::Disconnected { .. }
        )
    }

    /// The connection state a lifecycle event leaves the room in.
    pub fn resulting_state(&self) -> Option<ConnectionState> {
        match self {
            RoomEvent::Connected | RoomEvent::Reconnected => Some(ConnectionState::Connected),
            RoomEvent::Reconnecting => Some(ConnectionState::Reconnecting),
            RoomEvent::Disconnected { .. } => Some(ConnectionState::Disconnected),
            _ => None,
        }
    }
}

/// A failure a test can ask for with [`crate::Room::simulate_scenario`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulateScenario {
    /// Close our signalling socket: the engine resumes.
    SignalReconnect,
    /// Force a full reconnect (new session) from the client side.
    FullReconnect,
    /// Ask the server to drop the signalling link of the next resume after answering it, then
    /// close our socket: the resume fails and the episode escalates to a full reconnect.
    DisconnectSignalOnResume,
    /// Ask the server to drop the next resumes' signalling link before answering, then close
    /// our socket: the resume fails and the episode escalates to a full reconnect.
    DisconnectSignalOnResumeNoMessages,
    /// Ask the server to drop us without a leave (as if its node died): our resume finds no
    /// session (STATE_MISMATCH) and the episode escalates to a full reconnect.
    NodeFailure,
    /// Ask the server to simulate a migration. Open-source livekit-server has no cross-node
    /// participant migration (on one node or a cluster): it closes the participant, so this
    /// goes like `NodeFailure`.
    Migration,
    /// Ask the server to send `Leave{DISCONNECT, SERVER_SHUTDOWN}`: the room disconnects.
    ServerLeave,
    /// Ask the server for an ICE restart restricted to TCP candidates (and to remember the
    /// restriction for this identity in this room for 5 minutes). faultline-sdk speaks ICE
    /// over TCP, so where the server listens for it the peer connections follow the restart
    /// onto TCP in the same session, without an episode. Where it does not (livekit-server's
    /// `rtc.tcp_port: 0`, as on faultline's loopback servers) there are no TCP candidates:
    /// neither the resume nor full reconnects can connect, and the room reconnects until its
    /// policy runs out and ends with one `Disconnected`.
    ForceTcp,
    /// Ask the server for an ICE restart preferring TLS (TURN/TLS) candidates. livekit-server
    /// filters no candidate for it: the subscriber restarts ICE with all of them and the
    /// session goes on (over UDP where the server has no TURN/TLS, as faultline's servers).
    /// The preference is remembered for this identity in this room for 5 minutes: its next
    /// JoinResponses and ReconnectResponses carry `force_relay = ENABLED`. faultline-sdk, as
    /// upstream does, then uses relayed candidates only — from the next resume on, in the
    /// same session — on the TURN relay the response lists. It speaks TURN over UDP only, to
    /// a relay named by IP address (livekit-server's embedded one); where no such relay is
    /// listed (only `turns:`, as with TURN/TLS configured, or none) it keeps its host
    /// candidates and logs a warning, where upstream, relay-only with no usable relay,
    /// cannot connect.
    ForceTls,
    /// Ask the server to report us as speaking for this long (whole seconds).
    Speaker(Duration),
}
