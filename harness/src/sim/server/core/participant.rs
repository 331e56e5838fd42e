//! The core's records of who is where: a participant (its signalling link, its two peer
//! connections, its tracks, its deadlines) and a room (its participants, its data cache,
//! the simulate scenarios armed in it), with what each says about itself in protocol terms.

use std::collections::BTreeMap;

use livekit_protocol::{self as proto, signal_response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::data_cache::{DataCache, JoiningHold};
use super::super::link::ToLink;
use super::super::media::ServerPc;
use super::tracks::{DownTrack, Publication};
use super::{DEPARTURE_TIMEOUT, JOIN_DEADLINE, PC_FAILED_AFTER, REFRESHED_TOKEN_TTL};

/// pkg/rtc/transportmanager.go `ICEConfig`: the candidate type a participant's ICE config
/// prefers, set by SimulateScenario's `switch_candidate_protocol` (UDP clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IcePreference {
    /// `ICT_TCP`: `SetPreferTCP` filters every candidate but TCP.
    Tcp,
    /// `ICT_TLS`: no candidate is filtered (`SetPreferTCP(false)`); the client is told to
    /// force relay (pkg/rtc/participant.go `ClientConf.ForceRelay`), and a server with a
    /// TURN/TLS port would list only that (pkg/service/roommanager.go
    /// `iceServersForParticipant`; this one has no TURN/TLS, so it lists its TURN/UDP relay,
    /// if any, as livekit falls back to).
    Tls,
}

impl IcePreference {
    /// pkg/rtc/room.go: the scenario's `CandidateProtocol` as an ICE candidate type;
    /// `None` for UDP (`ICT_NONE`).
    pub(super) fn from_protocol(protocol: i32) -> Option<Self> {
        match proto::CandidateProtocol::try_from(protocol) {
            Ok(proto::CandidateProtocol::Tcp) => Some(Self::Tcp),
            Ok(proto::CandidateProtocol::Tls) => Some(Self::Tls),
            _ => None,
        }
    }
}

/// One connected participant.
pub(super) struct Participant {
    pub(super) sid: String,
    pub(super) identity: String,
    pub(super) name: String,
    pub(super) metadata: String,
    pub(super) state: proto::participant_info::State,
    pub(super) joined_at: Instant,
    pub(super) joined_at_secs: i64,
    /// The open signalling link: connection id and its sender.
    pub(super) link: Option<(u64, mpsc::UnboundedSender<ToLink>)>,
    pub(super) publisher: ServerPc,
    pub(super) subscriber: ServerPc,
    /// Offer ids of the subscriber PC (SessionDescription.id).
    pub(super) next_offer_id: u32,
    /// When the participant is removed unless something happens first, and why.
    pub(super) remove_at: Option<(Instant, proto::DisconnectReason)>,
    /// When the transport ended under a connected participant (it counts as failed).
    pub(super) pc_fails_at: Option<Instant>,
    /// When a simulated speaker update ends.
    pub(super) speaking_until: Option<Instant>,
    /// The highest reliable data sequence received from this participant.
    pub(super) last_reliable_seq: u32,
    /// [`PlantedBug::LoseFirstDataAfterResume`] is armed: the next reliable packet is lost.
    pub(super) lose_next_reliable: bool,
    /// When the server next sends it a fresh token.
    pub(super) refresh_at: Instant,
    /// When the server last heard this participant's signalling (pkg/rtc/transportmanager.go
    /// `LastSeenSignalAt`).
    pub(super) last_signal_at: Instant,
    /// The departures the server told this participant of, with when (pkg/rtc/participant.go
    /// `updateCache`, of which only the departures matter here); the last [`DEPARTURES_KEPT`].
    pub(super) departures: Vec<(Instant, proto::ParticipantInfo)>,
    /// Reliable data held back until its primary transport is fully established.
    pub(super) hold: JoiningHold,
    /// The candidate preference of this session's ICE config, if any.
    pub(super) ice_preference: Option<IcePreference>,
    /// The tracks it publishes in this session (`tracks`).
    pub(super) tracks: Vec<Publication>,
    /// Its subscriptions: one downtrack per other participant's published track.
    pub(super) downtracks: Vec<DownTrack>,
}

/// What a participant's timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// `remove_at`: the participant is removed with the stored reason.
    Removal,
    /// pkg/rtc/room.go `Join`: not connected a minute after joining (JOIN_FAILURE).
    Join,
    /// `pc_fails_at`: a transport ended under a connected participant.
    PcFailed,
    /// The media path has been silent for pion's ICE timeouts.
    MediaSilent,
    /// A simulated speaker update ends.
    SpeakingEnds,
    /// The next token refresh.
    TokenRefresh,
    /// A downtrack waiting for a key frame asks the publisher for one (`tracks`).
    KeyframeRequest,
}

/// How many departures a participant's update cache keeps (the real cache is an LRU of
/// participants; a room here never has more).
pub(super) const DEPARTURES_KEPT: usize = 64;

impl Participant {
    pub(super) fn info(&self) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: self.sid.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            metadata: self.metadata.clone(),
            state: self.state as i32,
            joined_at: self.joined_at_secs,
            joined_at_ms: self.joined_at_secs * 1000,
            permission: Some(proto::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                ..Default::default()
            }),
            // pkg/rtc/participant.go `ToProto`: the published tracks (pending ones are not).
            tracks: self.tracks.iter().filter(|t| t.live).map(|t| t.info.clone()).collect(),
            ..Default::default()
        }
    }

    /// pkg/rtc/participant.go `GetClientConfiguration`: `force_relay` is ENABLED while the
    /// ICE config prefers TLS, UNSET otherwise (`OnICEConfigChanged`).
    pub(super) fn client_configuration(&self) -> proto::ClientConfiguration {
        let force_relay = if self.ice_preference == Some(IcePreference::Tls) {
            proto::ClientConfigSetting::Enabled
        } else {
            proto::ClientConfigSetting::Unset
        };
        proto::ClientConfiguration { force_relay: force_relay as i32, ..Default::default() }
    }

    pub(super) fn send(&self, message: signal_response::Message) {
        if let Some((_, link)) = &self.link {
            let _ = link.send(ToLink::Send(Box::new(message)));
        }
    }

    pub(super) fn close_link(&mut self) {
        if let Some((_, link)) = self.link.take() {
            let _ = link.send(ToLink::Close);
        }
    }

    /// pkg/rtc/participant.go `HasConnected`: either peer connection has connected.
    pub(super) fn has_connected(&self) -> bool {
        self.subscriber.has_connected() || self.publisher.has_connected()
    }

    /// Every timer of this participant and when it fires (`None`: not armed), listed once
    /// for both [`Core::next_timer`] and [`Core::on_timers`]; a removal comes first (once
    /// due, nothing else matters).
    pub(super) fn deadlines(&self) -> [(Deadline, Option<Instant>); 7] {
        [
            (Deadline::Removal, self.remove_at.map(|(at, _)| at)),
            (Deadline::Join, (!self.has_connected()).then_some(self.joined_at + JOIN_DEADLINE)),
            (Deadline::PcFailed, self.pc_fails_at),
            (Deadline::MediaSilent, self.media_deadline()),
            (Deadline::SpeakingEnds, self.speaking_until),
            (Deadline::TokenRefresh, Some(self.refresh_at)),
            super::tracks::next_keyframe_request(&self.downtracks),
        ]
    }

    /// A fresh token for this participant in `room` (pkg/service/roommanager.go
    /// `refreshToken`: the same grants, a new lifetime), signed with `keys`.
    pub(super) fn refreshed_token(&self, room: &str, keys: &(String, String)) -> Option<String> {
        crate::token::TokenSpec::join(room, &self.identity)
            .with_name(&self.name)
            .with_metadata(&self.metadata)
            .with_ttl(REFRESHED_TOKEN_TTL)
            .mint_at(&keys.0, &keys.1, crate::sim::wall_clock())
            .ok()
    }

    /// When the media path counts as failed if the client stays silent: pion's ICE
    /// timeouts after the last datagram of a connected PC. `None` while a removal is
    /// already scheduled.
    pub(super) fn media_deadline(&self) -> Option<Instant> {
        if self.remove_at.is_some() {
            return None;
        }
        let silent_since = [self.publisher.last_heard(), self.subscriber.last_heard()]
            .into_iter()
            .flatten()
            .min()?;
        Some(Instant::from_std(silent_since) + PC_FAILED_AFTER)
    }

    pub(super) fn pc(&mut self, target: i32) -> &mut ServerPc {
        if target == proto::SignalTarget::Subscriber as i32 {
            &mut self.subscriber
        } else {
            &mut self.publisher
        }
    }
}

/// One room.
pub(super) struct Room {
    pub(super) sid: String,
    pub(super) creation_time: i64,
    pub(super) participants: BTreeMap<String, Participant>,
    /// pkg/rtc/room.go `disconnectSignalOnResumeParticipants`: identity → until when.
    pub(super) drop_on_resume: BTreeMap<String, Instant>,
    /// pkg/rtc/room.go `disconnectSignalOnResumeNoMessagesParticipants`.
    pub(super) refuse_resume: BTreeMap<String, Instant>,
    /// When the room closes because it stayed empty.
    pub(super) closes_at: Option<Instant>,
    /// Recent sequenced reliable packets, for participants still being set up.
    pub(super) data: DataCache,
}

impl Room {
    pub(super) fn info(&self, name: &str) -> proto::Room {
        proto::Room {
            sid: self.sid.clone(),
            name: name.to_owned(),
            empty_timeout: 300,
            departure_timeout: DEPARTURE_TIMEOUT.as_secs() as u32,
            creation_time: self.creation_time,
            creation_time_ms: self.creation_time * 1000,
            num_participants: self.participants.len() as u32,
            ..Default::default()
        }
    }

    /// Sends `message` to everyone except `except`.
    pub(super) fn broadcast(&self, except: Option<&str>, message: &signal_response::Message) {
        for (identity, participant) in &self.participants {
            if Some(identity.as_str()) != except {
                participant.send(message.clone());
            }
        }
    }
}
