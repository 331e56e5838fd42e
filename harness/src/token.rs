//! Access tokens for the harness's servers: what a token grants ([`TokenSpec`]) and minting
//! it with `livekit-api`'s access-token support.

use std::collections::HashMap;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, AccessTokenError, VideoGrants};

/// What a participant token grants. [`TokenSpec::join`] gives the usual room-join token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSpec {
    /// Participant identity (`sub`).
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Participant metadata.
    pub metadata: String,
    /// Participant attributes.
    pub attributes: HashMap<String, String>,
    /// Lifetime from now. A zero TTL gives an already-expired token (for 401 tests).
    pub ttl: Duration,
    /// The video grants; `grants.room` is the room.
    pub grants: VideoGrants,
}

impl TokenSpec {
    /// A token joining `room` as `identity`, able to publish, subscribe and send data,
    /// valid for one hour.
    pub fn join(room: &str, identity: &str) -> Self {
        Self {
            identity: identity.to_string(),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            ttl: Duration::from_secs(3600),
            grants: VideoGrants {
                room_join: true,
                room: room.to_string(),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..VideoGrants::default()
            },
        }
    }

    /// A server-side token for RoomService calls: `room_list`, `room_create`, and
    /// `room_admin` over `room` (livekit-server checks that the admin grant names the room a
    /// call acts on; `""` for calls on no particular room), valid for ten minutes.
    pub fn admin(room: &str) -> Self {
        Self {
            identity: "faultline-admin".to_string(),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            ttl: Duration::from_secs(600),
            grants: VideoGrants {
                room_admin: true,
                room_list: true,
                room_create: true,
                room: room.to_string(),
                ..VideoGrants::default()
            },
        }
    }

    /// Sets the display name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: &str) -> Self {
        self.metadata = metadata.to_string();
        self
    }

    /// Sets the lifetime.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Signs the token with `api_key` / `api_secret`.
    pub fn mint(&self, api_key: &str, api_secret: &str) -> Result<String, TokenError> {
        let mut token = AccessToken::with_api_key(api_key, api_secret)
            .with_identity(&self.identity)
            .with_ttl(self.ttl)
            .with_grants(self.grants.clone())
            .with_metadata(&self.metadata)
            .with_attributes(self.attributes.clone());
        if !self.name.is_empty() {
            token = token.with_name(&self.name);
        }
        token.to_jwt().map_err(|source| TokenError { identity: self.identity.clone(), source })
    }
}

/// A token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mint a token for identity {identity:?}: {source}")]
pub struct TokenError {
    /// The identity the token was for.
    pub identity: String,
    /// What livekit-api reported.
    #[source]
    pub source: AccessTokenError,
}
