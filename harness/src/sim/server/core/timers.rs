//! The core's clock: the earliest deadline of any room or participant, and what happens when
//! deadlines pass (pings missed, a join never completed, a peer connection failed, a resume
//! window closed, an empty room closed, a token refreshed, a speaker gone quiet).

use livekit_protocol::{self as proto, signal_response};
use tokio::time::Instant;

use super::participant::Deadline;
use super::signalling::leave_message;
use super::{speakers, Core, RESUME_WINDOW, TOKEN_REFRESH_INTERVAL};

impl Core {
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.rooms
            .values()
            .flat_map(|r| {
                let participants = r.participants.values();
                r.closes_at.into_iter().chain(
                    participants.flat_map(|p| p.deadlines().into_iter().filter_map(|(_, at)| at)),
                )
            })
            .min()
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut removals = Vec::new();
        let mut failures = Vec::new();
        let mut keyframe_requests = Vec::new();
        let mut closed_rooms = Vec::new();
        for (name, r) in &mut self.rooms {
            if r.closes_at.is_some_and(|at| at <= now) {
                closed_rooms.push(name.clone());
                continue;
            }
            let mut silent = Vec::new();
            for (identity, p) in &mut r.participants {
                p.publisher.tick(std_now);
                p.subscriber.tick(std_now);
                let due =
                    p.deadlines().into_iter().filter(|(_, at)| at.is_some_and(|at| at <= now));
                for (deadline, _) in due {
                    match deadline {
                        Deadline::Removal => {
                            if let Some((_, reason)) = p.remove_at {
                                removals.push((name.clone(), identity.clone(), reason, None));
                            }
                            break;
                        }
                        Deadline::Join => {
                            removals.push((
                                name.clone(),
                                identity.clone(),
                                proto::DisconnectReason::JoinFailure,
                                Some(proto::leave_request::Action::Disconnect),
                            ));
                            break;
                        }
                        Deadline::PcFailed | Deadline::MediaSilent => {
                            p.pc_fails_at = None;
                            let failed = (name.clone(), identity.clone());
                            if !failures.contains(&failed) {
                                failures.push(failed);
                            }
                        }
                        Deadline::SpeakingEnds => {
                            p.speaking_until = None;
                            silent.push(p.sid.clone());
                        }
                        Deadline::TokenRefresh => {
                            p.refresh_at = now + TOKEN_REFRESH_INTERVAL;
                            if let Some(token) = p.refreshed_token(name, &self.keys) {
                                p.send(signal_response::Message::RefreshToken(token));
                            }
                        }
                        Deadline::KeyframeRequest => {
                            keyframe_requests.push((name.clone(), identity.clone()))
                        }
                    }
                }
            }
            for sid in silent {
                r.broadcast(None, &speakers(sid, false));
            }
        }
        for name in closed_rooms {
            self.rooms.remove(&name);
        }
        for (room, identity) in keyframe_requests {
            self.request_keyframes(&room, &identity);
        }
        for (room, identity, reason, leave) in removals {
            self.remove(&room, &identity, reason, leave);
        }
        for (room, identity) in failures {
            // pkg/rtc/participant.go `onAnyTransportFailed`: the server asks the client to
            // resume, closes the signal connection, and gives it a while to come back
            // (`setupDisconnectTimer`).
            let Some(p) = self.participant(&room, &identity) else { continue };
            tracing::debug!(%room, %identity, "simulated server: peer connection failed");
            p.send(leave_message(
                proto::leave_request::Action::Resume,
                proto::DisconnectReason::ConnectionTimeout,
            ));
            p.close_link();
            p.remove_at = Some((now + RESUME_WINDOW, proto::DisconnectReason::ConnectionTimeout));
        }
    }
}
