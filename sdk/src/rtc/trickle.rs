//! Trickle ICE on the LiveKit wire: our host candidate as an `RTCIceCandidateInit` JSON string,
//! the server's trickled `candidateInit` JSON back into a str0m [`Candidate`], and the two facts
//! of an SDP that trickling needs (the ICE username fragment and the data m-line).
//!
//! LiveKit carries candidates as the browser's `RTCIceCandidateInit` serialised to JSON:
//! `{"candidate":"candidate:…","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"…"}`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use str0m::net::{Protocol, TcpType};
use str0m::Candidate;

use super::RtcError;

/// The browser's `RTCIceCandidateInit`, as LiveKit puts it on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit {
    candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    sdp_m_line_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username_fragment: Option<String>,
}

/// What trickling needs to know about a session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct SdpFacts {
    /// The first `a=ice-ufrag` (LiveKit's SDPs are BUNDLEd: one set of credentials).
    pub ufrag: Option<String>,
    /// The `a=mid` and index of the `m=application` line, if the SDP has one.
    pub data_line: Option<(String, u32)>,
}

impl SdpFacts {
    /// Reads the ICE ufrag and the data m-line out of an SDP; absent facts stay `None`.
    pub(super) fn of(sdp: &str) -> Self {
        let mut facts = SdpFacts::default();
        let mut line_index: Option<u32> = None;
        let mut in_application = false;
        for line in sdp.lines().map(str::trim) {
            if let Some(media) = line.strip_prefix("m=") {
                line_index = Some(line_index.map_or(0, |i| i + 1));
                in_application = media.starts_with("application");
            } else if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
                facts.ufrag.get_or_insert_with(|| ufrag.to_owned());
            } else if let (Some(mid), Some(index)) = (line.strip_prefix("a=mid:"), line_index) {
                if in_application && facts.data_line.is_none() {
                    facts.data_line = Some((mid.to_owned(), index));
                }
            }
        }
        facts
    }
}

/// Serialises our local candidate for the data m-line described by `facts`.
pub(super) fn candidate_init_json(candidate: &Candidate, facts: &SdpFacts) -> String {
    let (sdp_mid, sdp_m_line_index) = match &facts.data_line {
        Some((mid, index)) => (Some(mid.clone()), Some(*index)),
        None => (None, None),
    };
    let init = CandidateInit {
        candidate: candidate.to_sdp_string(),
        sdp_mid,
        sdp_m_line_index,
        username_fragment: facts.ufrag.clone(),
    };
    // A struct of strings and integers always serialises.
    serde_json::to_string(&init).unwrap_or_default()
}

/// Parses a trickled `candidateInit` JSON string.
///
/// Returns `Ok(None)` for candidates that are well formed but that this client cannot use
/// (TCP other than passive, SSL-TCP, mDNS `.local` names, another address family than
/// `local`, end-of-candidates) — they
/// are logged at debug level and skipped. Malformed input is an [`RtcError::Candidate`].
pub(super) fn parse_candidate_init(
    json: &str,
    local: SocketAddr,
) -> Result<Option<Candidate>, RtcError> {
    let init: CandidateInit = serde_json::from_str(json).map_err(|e| {
        RtcError::Candidate(format!(
            "expected an RTCIceCandidateInit JSON object like \
             {{\"candidate\":\"candidate:…\",\"sdpMid\":\"0\"}}, got {json:?}: {e}"
        ))
    })?;
    let line = init.candidate.trim();
    let line = line.strip_prefix("a=").unwrap_or(line);
    if line.is_empty() {
        tracing::debug!("remote end-of-candidates");
        return Ok(None);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    if let Some(proto) = fields.get(2) {
        if !proto.eq_ignore_ascii_case("udp") && !proto.eq_ignore_ascii_case("tcp") {
            tracing::debug!(candidate = line, "skipping a remote candidate of another protocol");
            return Ok(None);
        }
    }
    if fields.get(4).is_some_and(|address| address.ends_with(".local")) {
        tracing::debug!(candidate = line, "skipping an mDNS remote candidate");
        return Ok(None);
    }
    let mut candidate = Candidate::from_sdp_string(line).map_err(|e| {
        RtcError::Candidate(format!(
            "expected an ICE candidate attribute \
             (\"candidate:<foundation> 1 udp <priority> <ip> <port> typ host\"), got {line:?}: {e}"
        ))
    })?;
    let usable = match candidate.proto() {
        Protocol::Udp => true,
        // Ours is active (ice_tcp.rs): only a passive candidate accepts its connection.
        Protocol::Tcp => candidate.tcptype() == Some(TcpType::Passive),
        _ => false,
    };
    if !usable {
        tracing::debug!(candidate = line, "skipping a remote candidate this client cannot reach");
        return Ok(None);
    }
    if candidate.addr().is_ipv4() != local.is_ipv4() {
        tracing::debug!(candidate = line, %local, "skipping a remote candidate of another IP family");
        return Ok(None);
    }
    if let (None, Some(ufrag)) = (candidate.ufrag(), init.username_fragment.as_deref()) {
        if !ufrag.is_empty() {
            candidate.set_ufrag(ufrag);
        }
    }
    Ok(Some(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:5000";

    fn local() -> SocketAddr {
        LOCAL.parse().expect("a socket address literal")
    }

    #[test]
    fn server_candidate_with_ufrag_is_parsed() {
        let json = r#"{"candidate":"candidate:1410842232 1 udp 2130706431 127.0.0.1 7882 typ host generation 0","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"AbCd"}"#;
        let candidate = parse_candidate_init(json, local()).expect("valid").expect("usable");
        assert_eq!(candidate.addr(), "127.0.0.1:7882".parse().expect("literal"));
        assert_eq!(candidate.ufrag(), Some("AbCd"));
    }

    #[test]
    fn unusable_candidates_are_skipped_not_errors() {
        for line in [
            "candidate:1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
            "candidate:1 1 tcp 1518280447 127.0.0.1 7881 typ host",
            "candidate:1 1 ssltcp 1518280447 127.0.0.1 443 typ host",
            "candidate:1 1 udp 2130706431 4d3c2b1a-aaaa.local 50000 typ host",
            "candidate:1 1 udp 2130706431 ::1 7882 typ host",
            "",
        ] {
            let json = serde_json::json!({ "candidate": line, "sdpMid": "0" }).to_string();
            assert!(
                parse_candidate_init(&json, local()).expect("well formed").is_none(),
                "{line:?} should have been skipped"
            );
        }
    }

    #[test]
    fn a_passive_tcp_candidate_is_kept_for_ice_over_tcp() {
        let json = r#"{"candidate":"candidate:2 1 tcp 1671430143 127.0.0.1 7881 typ host tcptype passive","sdpMid":"0"}"#;
        let candidate = parse_candidate_init(json, local()).expect("valid").expect("usable");
        assert_eq!(candidate.proto(), Protocol::Tcp);
        assert_eq!(candidate.addr(), "127.0.0.1:7881".parse().expect("literal"));
    }

    #[test]
    fn malformed_candidates_are_errors() {
        for json in [
            "not json",
            r#"{"sdpMid":"0"}"#,
            r#"{"candidate":"candidate:1 1 udp 1 not-an-ip 7882 typ host"}"#,
            r#"{"candidate":"hello"}"#,
        ] {
            let result = parse_candidate_init(json, local());
            assert!(matches!(result, Err(RtcError::Candidate(_))), "{json}: {result:?}");
        }
    }

    #[test]
    fn facts_find_ufrag_and_data_line() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\na=ice-ufrag:uF1\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d1\r\n\
                   a=ice-ufrag:uF1\r\n";
        let facts = SdpFacts::of(sdp);
        assert_eq!(facts.ufrag.as_deref(), Some("uF1"));
        assert_eq!(facts.data_line, Some(("d1".to_owned(), 1)));
    }

    #[test]
    fn local_candidate_json_names_the_data_line() {
        let candidate =
            Candidate::host(local(), "udp").expect("a host candidate for a literal address");
        let facts = SdpFacts { ufrag: Some("me".to_owned()), data_line: Some(("0".to_owned(), 0)) };
        let json: serde_json::Value =
            serde_json::from_str(&candidate_init_json(&candidate, &facts)).expect("JSON");
        assert_eq!(json["sdpMid"], "0");
        assert_eq!(json["sdpMLineIndex"], 0);
        assert_eq!(json["usernameFragment"], "me");
        let line = json["candidate"].as_str().expect("a string");
        assert!(
            line.starts_with("candidate:") && line.contains("127.0.0.1 5000 typ host"),
            "{line}"
        );
    }
}
