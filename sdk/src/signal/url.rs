//! Signalling URLs: the `/rtc` URL a join or resume connects to, the `/rtc/validate` URL
//! asked for the reason of a failed join, and a token-free form of either for logs and errors.

use url::Url;

use super::SignalError;

/// The LiveKit signalling protocol version spoken (the upstream Rust SDK's).
pub(crate) const PROTOCOL_VERSION: u32 = 17;

/// What the query of a join or resume carries besides the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinParams {
    /// Query `auto_subscribe`.
    pub auto_subscribe: bool,
    /// Query `adaptive_stream`.
    pub adaptive_stream: bool,
    /// For a resume: the participant sid and the reconnect reason.
    pub resume: Option<ResumeParams>,
}

/// The resume part of a signalling query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumeParams {
    /// Our participant sid.
    pub sid: String,
    /// `livekit_protocol::ReconnectReason` as its number.
    pub reason: i32,
}

/// Checks a user-supplied server URL (ws, wss, http or https, optionally with a path) and
/// returns it with a WebSocket scheme.
pub(crate) fn parse_base(url: &str) -> Result<Url, SignalError> {
    let mut parsed = Url::parse(url).map_err(|e| SignalError::InvalidUrl {
        url: url.to_owned(),
        reason: format!("{e}; expected e.g. ws://127.0.0.1:7880"),
    })?;
    let scheme = match parsed.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => {
            return Err(SignalError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("unsupported scheme {other:?}; use ws, wss, http or https"),
            })
        }
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(SignalError::InvalidUrl { url: url.to_owned(), reason: "no host".into() });
    }
    parsed.set_scheme(scheme).map_err(|()| SignalError::InvalidUrl {
        url: url.to_owned(),
        reason: "cannot use a WebSocket scheme with this URL".into(),
    })?;
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

/// The `/rtc` URL for a join (or, with `params.resume`, a resume).
pub(crate) fn rtc_url(base: &Url, token: &str, params: &JoinParams) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push("rtc");
    }
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("access_token", token)
            .append_pair("auto_subscribe", bool_param(params.auto_subscribe))
            .append_pair("adaptive_stream", bool_param(params.adaptive_stream))
            .append_pair("protocol", &PROTOCOL_VERSION.to_string())
            .append_pair("sdk", "rust")
            .append_pair("version", env!("CARGO_PKG_VERSION"))
            .append_pair("os", std::env::consts::OS);
        if let Some(resume) = &params.resume {
            query
                .append_pair("reconnect", "1")
                .append_pair("sid", &resume.sid)
                .append_pair("reconnect_reason", &resume.reason.to_string());
        }
    }
    url
}

/// The `/rtc/validate` URL (HTTP scheme) for an `/rtc` URL.
pub(crate) fn validate_url(rtc: &Url) -> Url {
    let mut url = rtc.clone();
    // Both schemes are special, so switching between them cannot fail.
    let _ = url.set_scheme(if rtc.scheme() == "wss" { "https" } else { "http" });
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push("validate");
    }
    url
}

/// `url` with the `access_token` value replaced, for logs and error messages.
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "access_token" { "<redacted>".to_owned() } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        return shown.to_string();
    }
    shown.query_pairs_mut().clear().extend_pairs(pairs);
    shown.to_string()
}

fn bool_param(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params() -> JoinParams {
        JoinParams { auto_subscribe: true, adaptive_stream: false, resume: None }
    }

    #[test]
    fn http_schemes_become_websocket_schemes() {
        assert_eq!(parse_base("http://h:1").unwrap().scheme(), "ws");
        assert_eq!(parse_base("https://h").unwrap().scheme(), "wss");
        assert_eq!(parse_base("wss://h/base/").unwrap().as_str(), "wss://h/base/");
    }

    #[test]
    fn bad_urls_are_rejected_with_the_reason() {
        for bad in ["", "127.0.0.1:7880", "ftp://h", "ws://", "not a url"] {
            let err = parse_base(bad).unwrap_err();
            assert!(matches!(err, SignalError::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_join_url_carries_the_v0_query() {
        let url = rtc_url(&parse_base("ws://h:7880").unwrap(), "tok", &params());
        assert_eq!(url.path(), "/rtc");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("access_token"), Some("tok"));
        assert_eq!(get("protocol"), Some("17"));
        assert_eq!(get("sdk"), Some("rust"));
        assert_eq!(get("auto_subscribe"), Some("1"));
        assert_eq!(get("reconnect"), None);
    }

    #[test]
    fn the_resume_url_names_the_session() {
        let resume =
            JoinParams { resume: Some(ResumeParams { sid: "PA_x".into(), reason: 1 }), ..params() };
        let url = rtc_url(&parse_base("ws://h/prefix").unwrap(), "tok", &resume);
        assert_eq!(url.path(), "/prefix/rtc");
        let query = url.query().unwrap();
        assert!(query.contains("reconnect=1&sid=PA_x&reconnect_reason=1"), "{query}");
    }

    #[test]
    fn validate_appends_to_the_rtc_path_with_an_http_scheme() {
        let rtc = rtc_url(&parse_base("wss://h").unwrap(), "tok", &params());
        let validate = validate_url(&rtc);
        assert_eq!(validate.scheme(), "https");
        assert_eq!(validate.path(), "/rtc/validate");
    }

    #[test]
    fn redaction_hides_the_token_only() {
        let url = rtc_url(&parse_base("ws://h").unwrap(), "secret-token", &params());
        let shown = redact(&url);
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("access_token=%3Credacted%3E"), "{shown}");
        assert!(shown.contains("sdk=rust"), "{shown}");
    }
}
