//! Media tracks in the simulated server: publication (AddTrack, the publisher's media
//! lines, mute, unpublish when the session ends) and subscription (every other participant
//! gets a downtrack on its subscriber PC, fed with the publisher's frames behind a key-frame
//! gate). It is the core's bookkeeping for tracks, split from `core.rs`; the frames
//! themselves go through the peer connections of `media`.
//!
//! Each behaviour names the file of livekit/livekit v1.13.5 it follows:
//! - pkg/rtc/participant.go `AddTrack`: a request becomes a pending track with a new
//!   `TR_` sid, answered at once with `TrackPublishedResponse{cid, track}`; a repeated cid is
//!   answered with the same track.
//! - pkg/rtc/participant.go `mediaTrackReceived` / `getPendingTrack`: the publisher's media
//!   line is matched to the pending track whose cid is the line's msid track id (else the
//!   first pending track of the same kind); the track is published when its first media
//!   arrives (pion's `OnTrack`), and the room broadcasts the publisher's
//!   `ParticipantInfo` with it (pkg/rtc/room.go `onTrackPublished`).
//! - pkg/rtc/room.go `onTrackPublished` with `auto_subscribe`: every other participant
//!   subscribes; pkg/rtc/subscriptionmanager.go + pkg/rtc/mediatrack.go `AddSubscriber`:
//!   a send-only line on its subscriber PC with msid `<PA_sid>|<TR_sid> <TR_sid>`, negotiated
//!   by a server offer. A participant that joins later (a full reconnect among them) gets
//!   the room's published tracks in its first offer.
//! - pkg/sfu/downtrack.go + pkg/sfu/forwarder.go: a video downtrack forwards nothing until it
//!   has locked onto a key frame, and while it waits it asks the publisher for one with a PLI
//!   every `keyFrameIntervalMin`-to-`keyFrameIntervalMax` (2 × RTT, at least 200 ms: the sim's
//!   RTT makes it 200 ms) once it is writable (`keyFrameRequester`). It waits again after its
//!   subscriber PC restarts ICE (a resume, a candidate switch) and when the publisher unmutes
//!   (the forwarder's `PubMute(false)` resync). Audio is forwarded as it comes.
//! - pkg/rtc/participant.go `SetTrackMuted` (MuteTrackRequest): the track's `muted` changes
//!   and the room broadcasts the publisher's info.
//! - pkg/rtc/participant.go `Close` / pkg/rtc/room.go `RemoveParticipant`: a session that
//!   ends (leave, removal, a duplicate identity's full reconnect, a failed resume window)
//!   takes its tracks with it: the departure's `ParticipantInfo` lists none, and every
//!   subscriber's line for them turns inactive in its next offer (LiveKit reuses such lines
//!   for later tracks; this double adds new lines).
//!
//! Nothing is republished by the server: after a full reconnect the client must publish its
//! tracks again in the new session.
//!
//! Simplified, and to be checked against the real server by `faultline conform` once media
//! scenarios list both lanes: the waits for a key frame after a subscriber's ICE restart and
//! after an unmute are this double's reading of the forwarder (a resync point after a gap);
//! the key-frame request interval is the minimum (the sim's RTT is far below 100 ms);
//! publication waits for the first depacketized frame (pion's `OnTrack` fires on the first
//! RTP packet), except for a track muted in its AddTrackRequest, which sends nothing and is
//! published with its negotiated line: livekit-server announces such a track (muted) before
//! any of its media arrives, as `faultline conform` showed on muted-during-outage (a camera
//! republished muted after a full reconnect reached the other participant, muted, at once).

use std::time::Duration;

use livekit_protocol::{self as proto, signal_response};
use str0m::format::CodecExtra;
use str0m::media::{MediaData, MediaKind, Mid};
use tokio::time::Instant;

use super::participant::{Deadline, Participant};
use super::{Core, PlantedBug};

/// pkg/sfu/downtrack.go `keyFrameIntervalMin` (ms): how often a downtrack waiting for a key
/// frame asks the publisher for one (2 × RTT, at least this; the sim's RTT is a few ms).
pub(super) const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(200);

/// A track a participant publishes in this session.
#[derive(Debug, Clone)]
pub(super) struct Publication {
    /// What the room is told of it (`sid`, type, source, name, muted…).
    pub info: proto::TrackInfo,
    /// The client's id for it in its AddTrackRequest (and its media line's msid track id).
    pub cid: String,
    /// Its line on the publisher PC, once the client's offer carried it.
    pub mid: Option<Mid>,
    /// Its first media arrived: it is in the participant's info and others subscribe.
    pub live: bool,
}

impl Publication {
    fn kind(&self) -> MediaKind {
        if self.info.r#type == proto::TrackType::Video as i32 {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }
}

/// One subscriber's copy of another participant's track (pkg/sfu/downtrack.go).
#[derive(Debug, Clone)]
pub(super) struct DownTrack {
    /// The publisher's identity.
    pub publisher: String,
    /// The track's sid.
    pub track_sid: String,
    pub video: bool,
    /// Video that forwards nothing until a key frame (the forwarder is not locked).
    pub awaiting_keyframe: bool,
    /// When it next asks the publisher for a key frame, while it waits for one (`None`: it
    /// does not ask).
    pub next_pli: Option<Instant>,
}

/// A media line of a publisher's offer that sends, with its msid track id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SendingLine {
    mid: String,
    kind: MediaKind,
    track_id: Option<String>,
}

/// The audio and video lines of the client's publisher offer `sdp` that send (sendonly or
/// sendrecv, not rejected), with their msid track ids.
fn sending_lines(sdp: &str) -> Vec<SendingLine> {
    let mut found = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines();
        let header = lines.next().unwrap_or_default();
        let kind = if header.starts_with("audio") {
            MediaKind::Audio
        } else if header.starts_with("video") {
            MediaKind::Video
        } else {
            continue;
        };
        if header.split_whitespace().nth(1) == Some("0") {
            continue;
        }
        let (mut mid, mut track_id, mut sends) = (None, None, true);
        for line in lines.map(str::trim) {
            if let Some(value) = line.strip_prefix("a=mid:") {
                mid = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("a=msid:") {
                track_id = value.split_whitespace().nth(1).map(str::to_owned);
            } else if line == "a=inactive" || line == "a=recvonly" {
                sends = false;
            }
        }
        if let (Some(mid), true) = (mid, sends) {
            found.push(SendingLine { mid, kind, track_id });
        }
    }
    found
}

/// The new pending track of an AddTrackRequest, with sid `sid`.
fn publication(sid: String, request: &proto::AddTrackRequest) -> Publication {
    let video = request.r#type == proto::TrackType::Video as i32;
    Publication {
        info: proto::TrackInfo {
            sid,
            r#type: request.r#type,
            name: request.name.clone(),
            muted: request.muted,
            width: request.width,
            height: request.height,
            source: request.source,
            mime_type: if video { "video/VP8" } else { "audio/opus" }.to_owned(),
            stream: request.stream.clone(),
            ..Default::default()
        },
        cid: request.cid.clone(),
        mid: None,
        live: false,
    }
}

impl Core {
    /// pkg/rtc/participant.go `AddTrack`: a pending track, answered with its sid.
    pub(super) fn add_track(
        &mut self,
        room: &str,
        identity: &str,
        request: proto::AddTrackRequest,
    ) {
        let known = self
            .participant(room, identity)
            .and_then(|p| p.tracks.iter().find(|t| t.cid == request.cid).map(|t| t.info.clone()));
        let info = match known {
            Some(info) => info,
            None => {
                let sid = self.sid("TR");
                let Some(p) = self.participant(room, identity) else { return };
                let added = publication(sid, &request);
                let info = added.info.clone();
                p.tracks.push(added);
                info
            }
        };
        let Some(p) = self.participant(room, identity) else { return };
        p.send(signal_response::Message::TrackPublished(proto::TrackPublishedResponse {
            cid: request.cid,
            track: Some(info),
        }));
    }

    /// The client's publisher offer `sdp` was accepted: its sending lines are matched to the
    /// participant's tracks (pkg/rtc/participant.go `getPendingTrack`), and a muted one is
    /// published at once (see the module's notes).
    pub(super) fn publisher_offered(&mut self, room: &str, identity: &str, sdp: &str) {
        let Some(p) = self.participant(room, identity) else { return };
        let lines = sending_lines(sdp);
        for line in &lines {
            let by_cid =
                line.track_id.as_deref().and_then(|id| p.tracks.iter().position(|t| t.cid == id));
            let fallback = || {
                p.tracks.iter().position(|t| {
                    t.mid.is_none()
                        && t.kind() == line.kind
                        && !lines.iter().any(|l| l.track_id.as_deref() == Some(t.cid.as_str()))
                })
            };
            if let Some(index) = by_cid.or_else(fallback) {
                p.tracks[index].mid = Some(Mid::from(line.mid.as_str()));
            }
        }
        // A muted track sends nothing to wait for: it is published with its line.
        let silent: Vec<Publication> = p
            .tracks
            .iter_mut()
            .filter(|t| !t.live && t.info.muted && t.mid.is_some())
            .map(|t| {
                t.live = true;
                t.clone()
            })
            .collect();
        for track in &silent {
            self.track_published(room, identity, track);
        }
    }

    /// A frame from `identity`'s publisher PC: the first one of a track publishes it; the
    /// rest go to every downtrack of it that is not waiting for a key frame.
    pub(super) fn on_frame(&mut self, room: &str, identity: &str, frame: &MediaData) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(p) = r.participants.get_mut(identity) else { return };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == Some(frame.mid)) else {
            return;
        };
        if !track.live {
            track.live = true;
            let published = track.clone();
            self.track_published(room, identity, &published);
            return;
        }
        let track_sid = track.info.sid.clone();
        let keyframe = matches!(&frame.codec_extra, CodecExtra::Vp8(extra) if extra.is_keyframe);
        for (other, q) in &mut r.participants {
            if other == identity {
                continue;
            }
            let Some(down) = q.downtracks.iter_mut().find(|d| d.track_sid == track_sid) else {
                continue;
            };
            if down.awaiting_keyframe && !keyframe {
                continue;
            }
            if q.subscriber.write(&track_sid, frame) && down.awaiting_keyframe {
                down.awaiting_keyframe = false;
                down.next_pli = None;
            }
        }
    }

    /// pkg/rtc/room.go `onTrackPublished`: the room hears of the track and everyone else
    /// subscribes to it.
    fn track_published(&mut self, room: &str, identity: &str, track: &Publication) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(p) = r.participants.get(identity) else { return };
        let (info, publisher_sid) = (p.info(), p.sid.clone());
        r.broadcast(
            None,
            &signal_response::Message::Update(proto::ParticipantUpdate {
                participants: vec![info],
            }),
        );
        let mut subscribers = Vec::new();
        for (other, q) in &mut r.participants {
            if other != identity {
                subscribe(q, identity, &publisher_sid, track, now);
                subscribers.push(other.clone());
            }
        }
        for other in subscribers {
            self.offer_subscriber(room, &other, false);
        }
    }

    /// A participant that just joined subscribes to every track published in the room (its
    /// first offer carries them).
    pub(super) fn subscribe_to_room(&mut self, room: &str, identity: &str) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let published: Vec<(String, String, Publication)> = r
            .participants
            .iter()
            .filter(|(other, _)| *other != identity)
            .flat_map(|(other, q)| {
                q.tracks
                    .iter()
                    .filter(|t| t.live)
                    .map(|t| (other.clone(), q.sid.clone(), t.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let Some(p) = r.participants.get_mut(identity) else { return };
        for (publisher, publisher_sid, track) in &published {
            subscribe(p, publisher, publisher_sid, track, now);
        }
    }

    /// pkg/rtc/participant.go `SetTrackMuted`: the room hears of the change; an unmuted
    /// video track is locked onto a key frame again by each of its downtracks.
    pub(super) fn mute_track(
        &mut self,
        room: &str,
        identity: &str,
        request: &proto::MuteTrackRequest,
    ) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(p) = r.participants.get_mut(identity) else { return };
        let Some(track) = p.tracks.iter_mut().find(|t| t.info.sid == request.sid) else { return };
        if track.info.muted == request.muted {
            return;
        }
        track.info.muted = request.muted;
        if !track.live {
            return;
        }
        let info = p.info();
        r.broadcast(
            None,
            &signal_response::Message::Update(proto::ParticipantUpdate {
                participants: vec![info],
            }),
        );
        if !request.muted {
            for q in r.participants.values_mut() {
                for down in q.downtracks.iter_mut().filter(|d| d.track_sid == request.sid) {
                    relock(down, now);
                }
            }
        }
    }

    /// The session of `identity` ended with `tracks` published: every subscriber's
    /// downtrack of them ends and its line turns inactive in its next offer.
    pub(super) fn unpublish(&mut self, room: &str, tracks: &[Publication]) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        let mut renegotiate = Vec::new();
        for (other, q) in &mut r.participants {
            let mut ended = false;
            for track in tracks {
                q.downtracks.retain(|d| d.track_sid != track.info.sid);
                ended |= q.subscriber.end_line(&track.info.sid);
            }
            if ended {
                renegotiate.push(other.clone());
            }
        }
        for other in renegotiate {
            self.offer_subscriber(room, &other, false);
        }
    }

    /// `identity`'s subscriber PC restarted ICE: each video downtrack waits for a key frame
    /// again and asks for one (unless [`PlantedBug::NoKeyframeRequestAfterResume`] is
    /// planted and this is a resume).
    pub(super) fn relock_downtracks(&mut self, room: &str, identity: &str, resume: bool) {
        let now = Instant::now();
        let silent = resume && self.planted_bug == Some(PlantedBug::NoKeyframeRequestAfterResume);
        let Some(p) = self.participant(room, identity) else { return };
        for down in p.downtracks.iter_mut().filter(|d| d.video) {
            relock(down, now);
            if silent {
                down.next_pli = None;
            }
        }
    }

    /// pkg/sfu/downtrack.go `Bind` → `postKeyFrameRequestEvent`: an answer bound new lines,
    /// so each downtrack of `identity` that waits for a key frame and asks for one asks now.
    pub(super) fn downtracks_bound(&mut self, room: &str, identity: &str) {
        let now = Instant::now();
        let Some(p) = self.participant(room, identity) else { return };
        for down in p.downtracks.iter_mut().filter(|d| d.awaiting_keyframe) {
            down.next_pli = down.next_pli.map(|at| at.min(now));
        }
    }

    /// pkg/sfu/downtrack.go `keyFrameRequester`: each downtrack of `identity` whose request
    /// is due asks its publisher for a key frame — when it is writable (its line negotiated,
    /// its transport connected) — and asks again an interval later.
    pub(super) fn request_keyframes(&mut self, room: &str, identity: &str) {
        let now = Instant::now();
        let Some(r) = self.rooms.get_mut(room) else { return };
        let Some(q) = r.participants.get_mut(identity) else { return };
        let mut asks = Vec::new();
        for down in &mut q.downtracks {
            if down.next_pli.is_some_and(|at| at <= now) {
                down.next_pli = Some(now + KEYFRAME_REQUEST_INTERVAL);
                if q.subscriber.writable(&down.track_sid) {
                    asks.push((down.publisher.clone(), down.track_sid.clone()));
                }
            }
        }
        for (publisher, track_sid) in asks {
            let Some(p) = r.participants.get_mut(&publisher) else { continue };
            let mid = p.tracks.iter().find(|t| t.info.sid == track_sid).and_then(|t| t.mid);
            if let Some(mid) = mid {
                p.publisher.request_keyframe(mid);
            }
        }
    }
}

/// `subscriber` subscribes to `track` of `publisher` (participant sid `publisher_sid`).
fn subscribe(
    subscriber: &mut Participant,
    publisher: &str,
    publisher_sid: &str,
    track: &Publication,
    now: Instant,
) {
    if subscriber.downtracks.iter().any(|d| d.track_sid == track.info.sid) {
        return;
    }
    let video = track.kind() == MediaKind::Video;
    subscriber.subscriber.add_line(publisher_sid, &track.info.sid, track.kind());
    let mut down = DownTrack {
        publisher: publisher.to_owned(),
        track_sid: track.info.sid.clone(),
        video,
        awaiting_keyframe: false,
        next_pli: None,
    };
    if video {
        relock(&mut down, now);
    }
    subscriber.downtracks.push(down);
}

/// A video downtrack waits for a key frame and asks for one now.
fn relock(down: &mut DownTrack, now: Instant) {
    if down.video {
        down.awaiting_keyframe = true;
        down.next_pli = Some(now);
    }
}

/// The next key-frame request among `downtracks`, as a participant deadline.
pub(super) fn next_keyframe_request(downtracks: &[DownTrack]) -> (Deadline, Option<Instant>) {
    (Deadline::KeyframeRequest, downtracks.iter().filter_map(|d| d.next_pli).min())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_offer_names_its_sending_lines_and_their_cids() {
        let sdp = "v=0\r\ns=-\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=msid:a a-microphone-1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:a a-camera-2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\na=msid:a old\r\n";
        assert_eq!(
            sending_lines(sdp),
            vec![
                SendingLine {
                    mid: "1".into(),
                    kind: MediaKind::Audio,
                    track_id: Some("a-microphone-1".into())
                },
                SendingLine {
                    mid: "2".into(),
                    kind: MediaKind::Video,
                    track_id: Some("a-camera-2".into())
                },
            ]
        );
    }
}
