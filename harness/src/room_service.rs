//! A minimal RoomService client (Twirp over JSON on the server's loopback HTTP port): list,
//! create and delete rooms, list and remove participants. Enough for tests to look at and
//! act on the server's view of a session.

use std::time::Duration;

use livekit_protocol as proto;
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use crate::supervise::{Liveness, ProcessDied};
use crate::token::{TokenError, TokenSpec};

/// Bound on one RoomService call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A RoomService client for one server. Obtain it from `LiveKitServer::room_service`.
#[derive(Clone)]
pub struct RoomService {
    base: Url,
    api_key: String,
    api_secret: String,
    liveness: Option<Liveness>,
}

impl std::fmt::Debug for RoomService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomService")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// A RoomService call failed.
#[derive(Debug, thiserror::Error)]
pub enum RoomServiceError {
    /// The server answered that the room or participant does not exist.
    #[error("RoomService {method}: not found: {msg}")]
    NotFound {
        /// The Twirp method.
        method: &'static str,
        /// The server's message.
        msg: String,
    },
    /// The server answered with another Twirp error.
    #[error("RoomService {method}: HTTP {status}, code {code:?}: {msg}")]
    Twirp {
        /// The Twirp method.
        method: &'static str,
        /// The HTTP status.
        status: u16,
        /// The Twirp error code (`permission_denied`, `invalid_argument`, …).
        code: String,
        /// The server's message.
        msg: String,
    },
    /// The server process the call was meant for is not running.
    #[error("RoomService {method}: {died}")]
    ServerDied {
        /// The Twirp method.
        method: &'static str,
        /// What happened to the server, with its log.
        died: ProcessDied,
    },
    /// The request could not be sent or the response not read.
    #[error("RoomService {method} at {url}: {reason}")]
    Transport {
        /// The Twirp method.
        method: &'static str,
        /// The URL called.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The admin token could not be minted.
    #[error(transparent)]
    Token(#[from] TokenError),
}

#[derive(serde::Deserialize)]
struct TwirpError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

impl RoomService {
    /// A client for the server whose HTTP base URL is `http_url`.
    pub fn new(http_url: &Url, api_key: &str, api_secret: &str) -> Self {
        Self {
            base: http_url.clone(),
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
            liveness: None,
        }
    }

    /// Attaches the server process, so failures can report a dead server and its log.
    pub(crate) fn watching(mut self, liveness: Liveness) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Lists every room.
    pub async fn list_rooms(&self) -> Result<Vec<proto::Room>, RoomServiceError> {
        let response: proto::ListRoomsResponse =
            self.call("ListRooms", "", &proto::ListRoomsRequest::default()).await?;
        Ok(response.rooms)
    }

    /// Creates a room (or returns the existing one) with the given empty timeout in seconds.
    pub async fn create_room(
        &self,
        name: &str,
        empty_timeout: u32,
    ) -> Result<proto::Room, RoomServiceError> {
        let request = proto::CreateRoomRequest {
            name: name.to_string(),
            empty_timeout,
            ..Default::default()
        };
        self.call("CreateRoom", name, &request).await
    }

    /// Creates a room on the cluster node with this livekit node id (CreateRoom's `node_id`,
    /// which livekit-server honours while that node is available).
    pub async fn create_room_on(
        &self,
        name: &str,
        node_id: &str,
    ) -> Result<proto::Room, RoomServiceError> {
        let request = proto::CreateRoomRequest {
            name: name.to_string(),
            node_id: node_id.to_string(),
            ..Default::default()
        };
        self.call("CreateRoom", name, &request).await
    }

    /// Deletes a room, disconnecting everyone in it (they get `ROOM_DELETED`).
    pub async fn delete_room(&self, room: &str) -> Result<(), RoomServiceError> {
        let request = proto::DeleteRoomRequest { room: room.to_string() };
        let _: proto::DeleteRoomResponse = self.call("DeleteRoom", room, &request).await?;
        Ok(())
    }

    /// Lists the participants of a room.
    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<proto::ParticipantInfo>, RoomServiceError> {
        let request = proto::ListParticipantsRequest { room: room.to_string() };
        let response: proto::ListParticipantsResponse =
            self.call("ListParticipants", room, &request).await?;
        Ok(response.participants)
    }

    /// Removes a participant (it gets `PARTICIPANT_REMOVED`).
    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<(), RoomServiceError> {
        let request = proto::RoomParticipantIdentity {
            room: room.to_string(),
            identity: identity.to_string(),
            ..Default::default()
        };
        let _: proto::RemoveParticipantResponse =
            self.call("RemoveParticipant", room, &request).await?;
        Ok(())
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &'static str,
        room: &str,
        request: &Req,
    ) -> Result<Resp, RoomServiceError> {
        let url = format!("{}twirp/livekit.RoomService/{method}", self.base);
        let token = TokenSpec::admin(room).mint(&self.api_key, &self.api_secret)?;
        let transport =
            |reason: String| RoomServiceError::Transport { method, url: url.clone(), reason };
        let client = crate::http::client(CALL_TIMEOUT).map_err(|e| transport(e.to_string()))?;
        let sent = client.post(&url).bearer_auth(token).json(request).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                if let Some(Err(died)) = self.liveness.as_ref().map(Liveness::check) {
                    return Err(RoomServiceError::ServerDied { method, died });
                }
                return Err(transport(crate::http::error_chain(&e)));
            }
        };
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport(crate::http::error_chain(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                transport(format!(
                    "cannot decode the response ({e}): {}",
                    String::from_utf8_lossy(&body)
                ))
            });
        }
        let error: TwirpError = serde_json::from_slice(&body).unwrap_or_else(|_| TwirpError {
            code: String::new(),
            msg: String::from_utf8_lossy(&body).into_owned(),
        });
        if error.code == "not_found" {
            Err(RoomServiceError::NotFound { method, msg: error.msg })
        } else {
            Err(RoomServiceError::Twirp {
                method,
                status: status.as_u16(),
                code: error.code,
                msg: error.msg,
            })
        }
    }
}
