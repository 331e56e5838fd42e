//! The room's media bookkeeping: the tracks this participant publishes (their `cid`s, the
//! sids the server gave them, mute state, who waits for the publish to finish), the tracks
//! remote participants publish, and which of those this participant is subscribed to
//! (which subscriber media line carries each).
//!
//! Pure state, no I/O: the engine feeds it server messages and offers and sends what it
//! returns (requests for the server, lines to offer, events for the room).

use std::collections::BTreeMap;

use livekit_protocol as proto;
use tokio::sync::oneshot;

use super::session::Line;
use crate::media::{
    LocalTrack, LocalTrackPublication, Received, RemoteTrack, TrackKind, TrackSource,
};
use crate::rtc::msid::OfferedTrack;
use crate::{RemoteParticipant, RoomError, RoomEvent};

/// Who waits for a publish to be accepted.
pub(crate) type PublishReply = oneshot::Sender<Result<LocalTrackPublication, RoomError>>;

/// What the engine does when the server accepts one of our tracks.
pub(crate) struct Accepted {
    /// The line to offer.
    pub line: Line,
    /// The room's event (`LocalTrackPublished`, or `LocalTrackRepublished`).
    pub event: RoomEvent,
    /// The MuteTrackRequest for a mute change made while the AddTrackRequest was in flight.
    pub mute: Option<proto::MuteTrackRequest>,
}

/// One local track.
struct Local {
    track: LocalTrack,
    /// The `cid` of its current AddTrackRequest (a new one for each session).
    cid: Option<String>,
    /// The server's sid for it in the current session, once accepted.
    sid: Option<String>,
    /// Its sid in the session before a full reconnect, until republished.
    previous_sid: Option<String>,
    muted: bool,
    /// The mute state the server was last told of in this session.
    muted_told: bool,
    waiters: Vec<PublishReply>,
}

impl Local {
    fn publication(&self) -> Option<LocalTrackPublication> {
        Some(LocalTrackPublication {
            sid: self.sid.clone()?,
            source: self.track.source,
            muted: self.muted,
        })
    }
}

/// A subscription: the track and whose it is.
#[derive(Debug, Clone)]
pub(crate) struct Subscribed {
    pub identity: String,
    pub track: RemoteTrack,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Tracks {
    local: Vec<Local>,
    next_cid: u64,
    /// Subscriptions by subscriber mid.
    subscribed: BTreeMap<String, Subscribed>,
    /// Offered lines whose track the room does not know yet (its participant update may
    /// come after the offer).
    unresolved: Vec<OfferedTrack>,
    /// The current subscriber connection's counters.
    received: Received,
}

impl Tracks {
    /// Takes `track` to publish; `reply` hears once the server accepted it. One track per
    /// source.
    pub(crate) fn publish(&mut self, track: LocalTrack, reply: PublishReply) {
        if self.local.iter().any(|l| l.track.source == track.source) {
            let _ = reply.send(Err(RoomError::TrackExists(track.source)));
            return;
        }
        self.local.push(Local {
            track,
            cid: None,
            sid: None,
            previous_sid: None,
            muted: false,
            muted_told: false,
            waiters: vec![reply],
        });
    }

    /// AddTrackRequests for local tracks not yet requested in this session.
    pub(crate) fn requests(&mut self, identity: &str) -> Vec<proto::AddTrackRequest> {
        let mut requests = Vec::new();
        for local in self.local.iter_mut().filter(|l| l.cid.is_none()) {
            self.next_cid += 1;
            let cid = format!("{identity}-{}-{}", local.track.source.name(), self.next_cid);
            local.cid = Some(cid.clone());
            local.muted_told = local.muted;
            let kind = match local.track.kind() {
                TrackKind::Audio => proto::TrackType::Audio,
                TrackKind::Video => proto::TrackType::Video,
            };
            requests.push(proto::AddTrackRequest {
                cid,
                name: local.track.name.clone(),
                r#type: kind as i32,
                source: local.track.source.to_proto() as i32,
                width: u32::from(local.track.width),
                height: u32::from(local.track.height),
                muted: local.muted,
                ..Default::default()
            });
        }
        requests
    }

    /// The server accepted a track: the line to offer, the room's event, and the request
    /// that tells the server of a mute or unmute made while the AddTrackRequest was in flight
    /// (it carried the state of its sending, and a track without a sid cannot be told).
    pub(crate) fn published(
        &mut self,
        response: &proto::TrackPublishedResponse,
    ) -> Option<Accepted> {
        let info = response.track.as_ref()?;
        let local = self.local.iter_mut().find(|l| l.cid.as_deref() == Some(&response.cid))?;
        local.sid = Some(info.sid.clone());
        let publication = local.publication()?;
        for waiter in local.waiters.drain(..) {
            let _ = waiter.send(Ok(publication.clone()));
        }
        let event = match local.previous_sid.take() {
            Some(previous_sid) => RoomEvent::LocalTrackRepublished { publication, previous_sid },
            None => RoomEvent::LocalTrackPublished { publication },
        };
        let line = (response.cid.clone(), local.track.clone(), local.muted);
        let source = local.track.source;
        Some(Accepted { line, event, mute: self.mute_request(source) })
    }

    /// Mutes or unmutes the local track of `source`: returns its `cid` and, if the server
    /// knows the track and was told otherwise, the request that tells it.
    pub(crate) fn set_muted(
        &mut self,
        source: TrackSource,
        muted: bool,
    ) -> Result<(Option<String>, Option<proto::MuteTrackRequest>), RoomError> {
        let local = self
            .local
            .iter_mut()
            .find(|l| l.track.source == source)
            .ok_or(RoomError::NoSuchTrack(source))?;
        local.muted = muted;
        Ok((local.cid.clone(), self.mute_request(source)))
    }

    /// The MuteTrackRequest that brings the server in line with the local mute state of
    /// `source`, if it is behind (marked told).
    fn mute_request(&mut self, source: TrackSource) -> Option<proto::MuteTrackRequest> {
        let local = self.local.iter_mut().find(|l| l.track.source == source)?;
        let sid = local.sid.clone()?;
        if local.muted_told == local.muted {
            return None;
        }
        local.muted_told = local.muted;
        Some(proto::MuteTrackRequest { sid, muted: local.muted })
    }

    /// After a resume: the mute changes made while reconnecting, and the lines to offer
    /// again that the resume's offer rolled back (`sending`: the cids the publisher has).
    pub(crate) fn resumed(
        &mut self,
        sending: &[String],
    ) -> (Vec<proto::MuteTrackRequest>, Vec<Line>) {
        let sources: Vec<TrackSource> = self.local.iter().map(|l| l.track.source).collect();
        let mutes = sources.into_iter().filter_map(|s| self.mute_request(s)).collect();
        let lines = self
            .local
            .iter()
            .filter(|l| l.sid.is_some())
            .filter_map(|l| {
                let cid = l.cid.clone()?;
                (!sending.contains(&cid)).then(|| (cid, l.track.clone(), l.muted))
            })
            .collect();
        (mutes, lines)
    }

    /// After a full reconnect: the new session has none of our tracks (each is to be
    /// published again, its old sid kept for `LocalTrackRepublished`) and a new subscriber
    /// connection (`received`); every subscription ends.
    pub(crate) fn restarted(
        &mut self,
        received: Received,
        remotes: &BTreeMap<String, RemoteParticipant>,
    ) -> Vec<RoomEvent> {
        for local in &mut self.local {
            if let Some(sid) = local.sid.take() {
                local.previous_sid = Some(sid);
            }
            local.cid = None;
        }
        self.received = received;
        self.unresolved.clear();
        std::mem::take(&mut self.subscribed)
            .into_values()
            .map(|s| unsubscribed(s, remotes))
            .collect()
    }

    /// The subscriber connection's counters (set at the join).
    pub(crate) fn set_received(&mut self, received: Received) {
        self.received = received;
    }

    /// The server's offer says which lines carry which tracks now.
    pub(crate) fn offered(
        &mut self,
        offered: Vec<OfferedTrack>,
        remotes: &BTreeMap<String, RemoteParticipant>,
    ) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        let still: Vec<String> = self
            .subscribed
            .iter()
            .filter(|(mid, s)| {
                offered.iter().any(|o| o.mid == **mid && o.track_sid == s.track.sid())
            })
            .map(|(mid, _)| mid.clone())
            .collect();
        for (mid, gone) in std::mem::take(&mut self.subscribed) {
            if still.contains(&mid) {
                self.subscribed.insert(mid, gone);
            } else {
                events.push(unsubscribed(gone, remotes));
            }
        }
        self.unresolved = offered.into_iter().filter(|o| !still.contains(&o.mid)).collect();
        events.extend(self.resolve(remotes));
        events
    }

    /// Subscribes the offered lines whose track is now known.
    fn resolve(&mut self, remotes: &BTreeMap<String, RemoteParticipant>) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        let baseline = |received: &Received, mid: &str| {
            received
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(mid)
                .copied()
                .unwrap_or_default()
        };
        for offered in std::mem::take(&mut self.unresolved) {
            let found = remotes.values().find_map(|p| {
                let publication = p.tracks.iter().find(|t| t.sid == offered.track_sid)?;
                Some((p.clone(), publication.clone()))
            });
            let Some((participant, publication)) = found else {
                self.unresolved.push(offered);
                continue;
            };
            let track = RemoteTrack {
                publication: publication.clone(),
                baseline: baseline(&self.received, &offered.mid),
                mid: offered.mid.clone(),
                received: self.received.clone(),
            };
            self.subscribed.insert(
                offered.mid,
                Subscribed { identity: participant.identity.clone(), track: track.clone() },
            );
            events.push(RoomEvent::TrackSubscribed { track, publication, participant });
        }
        events
    }

    /// The remote participants changed from `before` to `after`: publications that came and
    /// went, mute changes, subscriptions that ended with their publication, and offered
    /// lines that can now be named.
    pub(crate) fn remotes_changed(
        &mut self,
        before: &BTreeMap<String, RemoteParticipant>,
        after: &BTreeMap<String, RemoteParticipant>,
    ) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        let published = |map: &BTreeMap<String, RemoteParticipant>, sid: &str| {
            map.values().any(|p| p.tracks.iter().any(|t| t.sid == sid))
        };
        let ended: Vec<String> = self
            .subscribed
            .iter()
            .filter(|(_, s)| !published(after, s.track.sid()))
            .map(|(mid, _)| mid.clone())
            .collect();
        for mid in ended {
            if let Some(gone) = self.subscribed.remove(&mid) {
                events.push(unsubscribed(gone, before));
            }
        }
        for participant in before.values() {
            for publication in &participant.tracks {
                if !published(after, &publication.sid) {
                    events.push(RoomEvent::TrackUnpublished {
                        publication: publication.clone(),
                        participant: participant.clone(),
                    });
                }
            }
        }
        for participant in after.values() {
            for publication in &participant.tracks {
                let old = before
                    .values()
                    .find_map(|p| p.tracks.iter().find(|t| t.sid == publication.sid));
                let (publication, participant) = (publication.clone(), participant.clone());
                match old {
                    None => events.push(RoomEvent::TrackPublished { publication, participant }),
                    Some(old) if old.muted != publication.muted => {
                        events.push(if publication.muted {
                            RoomEvent::TrackMuted { publication, participant }
                        } else {
                            RoomEvent::TrackUnmuted { publication, participant }
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        events.extend(self.resolve(after));
        events
    }

    /// Each local track's `cid` in this session and whether it is muted.
    pub(crate) fn mute_states(&self) -> Vec<(String, bool)> {
        self.local.iter().filter_map(|l| Some((l.cid.clone()?, l.muted))).collect()
    }

    /// The local publications, in publish order (accepted ones only).
    pub(crate) fn local_publications(&self) -> Vec<LocalTrackPublication> {
        self.local.iter().filter_map(Local::publication).collect()
    }

    /// The subscriptions, by mid.
    pub(crate) fn subscriptions(&self) -> Vec<Subscribed> {
        self.subscribed.values().cloned().collect()
    }

    /// The room ended: everyone still waiting for a publish hears why.
    pub(crate) fn fail_waiters(&mut self, error: impl Fn() -> RoomError) {
        for local in &mut self.local {
            for waiter in local.waiters.drain(..) {
                let _ = waiter.send(Err(error()));
            }
        }
    }
}

/// The event for a subscription that ended (the participant as last known, or a bare one).
fn unsubscribed(gone: Subscribed, remotes: &BTreeMap<String, RemoteParticipant>) -> RoomEvent {
    let participant = remotes.get(&gone.identity).cloned().unwrap_or_else(|| RemoteParticipant {
        sid: String::new(),
        identity: gone.identity.clone(),
        name: String::new(),
        metadata: String::new(),
        tracks: Vec::new(),
    });
    let publication = gone.track.publication.clone();
    RoomEvent::TrackUnsubscribed { track: gone.track, publication, participant }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(cid: &str, sid: &str) -> proto::TrackPublishedResponse {
        proto::TrackPublishedResponse {
            cid: cid.to_owned(),
            track: Some(proto::TrackInfo { sid: sid.to_owned(), ..Default::default() }),
        }
    }

    /// The user unmutes while the republish's AddTrackRequest (sent muted) is in flight: the
    /// server must hear the unmute under the new sid once it accepts the track, or it keeps
    /// the track muted and the peers never see it again (what `unmute-during-republish`
    /// catches on the real server).
    #[test]
    fn a_mute_change_while_publishing_is_told_under_the_new_sid() {
        let mut tracks = Tracks::default();
        let (reply, _waiting) = oneshot::channel();
        tracks.publish(LocalTrack::video("camera", 30), reply);
        tracks.set_muted(TrackSource::Camera, true).expect("the camera is ours");
        let first = tracks.requests("alice");
        assert!(first[0].muted);
        let told = tracks.published(&accepted(&first[0].cid, "TR_1")).expect("our track accepted");
        assert_eq!(told.mute, None, "the AddTrackRequest already said muted");

        tracks.restarted(Received::default(), &BTreeMap::new());
        let again = tracks.requests("alice");
        assert!(again[0].muted, "republished as it is: muted");
        let (_, request) =
            tracks.set_muted(TrackSource::Camera, false).expect("the camera is ours");
        assert_eq!(request, None, "no sid in the new session yet: nothing to tell");
        let told =
            tracks.published(&accepted(&again[0].cid, "TR_2")).expect("our track republished");
        assert!(!told.line.2, "the line is offered unmuted");
        assert_eq!(told.mute, Some(proto::MuteTrackRequest { sid: "TR_2".into(), muted: false }));
    }
}
