//! Access tokens for the harness's servers: what a token grants ([`TokenSpec`]), minting it,
//! and checking one as livekit-server does ([`verify_at`]) — both on a clock the caller gives,
//! so the simulation mints and checks tokens in simulated time.
//!
//! The claims are `livekit-api`'s; signing is HS256 through `jsonwebtoken`, as `livekit-api`
//! does it, but `livekit-api`'s `AccessToken` and `TokenVerifier` read the wall clock.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use livekit_api::access_token::{AccessTokenError, Claims, VideoGrants};

/// How long past its expiry (and before its start) livekit-server still accepts a token: one
/// minute (livekit/protocol `auth/verifier.go`, `tokenLeeway`). Measured on v1.13.5:
/// `/rtc/validate` accepts a token 55 s past its `exp` and answers 401 at 65 s.
pub const SERVER_LEEWAY: Duration = Duration::from_secs(60);

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

    /// Signs the token with `api_key` / `api_secret`, valid from now (the wall clock).
    pub fn mint(&self, api_key: &str, api_secret: &str) -> Result<String, TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.mint_at(api_key, api_secret, now)
    }

    /// Signs the token as if the clock read `now` (time since the Unix epoch): valid from
    /// `now` for its TTL.
    pub fn mint_at(
        &self,
        api_key: &str,
        api_secret: &str,
        now: Duration,
    ) -> Result<String, TokenError> {
        let refused = |source| TokenError { identity: self.identity.clone(), source };
        if api_key.is_empty() || api_secret.is_empty() {
            return Err(refused(AccessTokenError::InvalidKeys));
        }
        if self.grants.room_join && (self.identity.is_empty() || self.grants.room.is_empty()) {
            return Err(refused(AccessTokenError::InvalidClaims(
                "a room-join token needs an identity and a room",
            )));
        }
        let seconds = |d: Duration| usize::try_from(d.as_secs()).unwrap_or(usize::MAX);
        let claims = Claims {
            exp: seconds(now.saturating_add(self.ttl)),
            iss: api_key.to_owned(),
            nbf: seconds(now),
            sub: self.identity.clone(),
            name: self.name.clone(),
            video: self.grants.clone(),
            metadata: self.metadata.clone(),
            attributes: self.attributes.clone(),
            ..Claims::default()
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(api_secret.as_bytes()),
        )
        .map_err(|e| refused(AccessTokenError::Encoding(e)))
    }
}

/// Checks `token` as livekit-server does — HS256 signed with `api_secret`, issued by
/// `api_key`, with an expiry, within its lifetime give or take [`SERVER_LEEWAY`] — with the
/// clock reading `now` (time since the Unix epoch). Returns its claims, or why it is refused
/// (in the words of an HTTP 401 body; the token itself is never quoted).
pub fn verify_at(
    token: &str,
    api_key: &str,
    api_secret: &str,
    now: Duration,
) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    // The lifetime is checked below against `now`; jsonwebtoken would read the wall clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[api_key]);
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(api_secret.as_bytes()),
        &validation,
    )
    .map_err(|e| format!("invalid token: {e}"))?
    .claims;
    let at = |secs: usize| Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX));
    if now > at(claims.exp).saturating_add(SERVER_LEEWAY) {
        return Err("invalid token: token has invalid claims: token is expired".to_owned());
    }
    if now.saturating_add(SERVER_LEEWAY) < at(claims.nbf) {
        return Err("invalid token: token has invalid claims: token is not valid yet".to_owned());
    }
    Ok(claims)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY: &str = "devkey";
    const SECRET: &str = "secret";
    /// 2026-01-01T00:00:00Z.
    const NOW: Duration = Duration::from_secs(1_767_225_600);

    fn three_seconds() -> String {
        TokenSpec::join("room", "laptop")
            .with_ttl(Duration::from_secs(3))
            .mint_at(KEY, SECRET, NOW)
            .unwrap()
    }

    #[test]
    fn a_token_is_accepted_until_a_minute_past_its_expiry_and_refused_after() {
        let token = three_seconds();
        let claims = verify_at(&token, KEY, SECRET, NOW).unwrap();
        assert_eq!((claims.sub.as_str(), claims.video.room.as_str()), ("laptop", "room"));
        let expiry = NOW + Duration::from_secs(3);
        assert!(verify_at(&token, KEY, SECRET, expiry + Duration::from_secs(59)).is_ok());
        let late = verify_at(&token, KEY, SECRET, expiry + Duration::from_secs(61)).unwrap_err();
        assert!(late.contains("expired"), "{late}");
        let early = verify_at(&token, KEY, SECRET, NOW - Duration::from_secs(61)).unwrap_err();
        assert!(early.contains("not valid yet"), "{early}");
    }

    #[test]
    fn another_secret_or_issuer_is_refused_without_quoting_the_token() {
        let token = three_seconds();
        for refused in [
            verify_at(&token, KEY, "other-secret", NOW),
            verify_at(&token, "other-key", SECRET, NOW),
            verify_at("not.a.token", KEY, SECRET, NOW),
        ] {
            let why = refused.unwrap_err();
            assert!(why.starts_with("invalid token"), "{why}");
            assert!(!why.contains(&token[..20]), "{why}");
        }
    }

    #[test]
    fn a_token_minted_now_is_what_livekit_api_accepts() {
        let token =
            TokenSpec::join("room", "laptop").with_name("Laptop").mint(KEY, SECRET).unwrap();
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&token)
            .unwrap();
        assert_eq!(claims.name, "Laptop");
        assert!(claims.video.room_join && claims.video.can_publish_data == Some(true));
    }

    #[test]
    fn a_room_join_token_without_an_identity_is_not_minted() {
        let error = TokenSpec::join("room", "").mint_at(KEY, SECRET, NOW).unwrap_err();
        assert!(error.to_string().contains("identity"), "{error}");
    }
}
