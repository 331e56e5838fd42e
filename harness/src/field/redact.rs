//! Keeps addresses, SDP and credentials out of everything the field importer produces.
//!
//! Field evidence is full of things that must not reach a scenario file or a report: the
//! user's IP addresses (in candidates, stats and log lines), whole SDP blobs, access tokens
//! in signalling URLs, TURN credentials in the RTC configuration. [`redact`] scrubs one piece
//! of text; [`is_clean`] says whether a text still holds any of them (the tests hold every
//! output to it); [`redact_dump`] turns a whole chrome://webrtc-internals dump into one that
//! may be kept as a fixture, optionally trimmed to the series the parser reads.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// One pattern and what replaces its matches. Built once; the patterns are constants, so
/// a failure to compile one is a bug caught by the tests (it then matches nothing).
struct Rule {
    pattern: Option<Regex>,
    with: &'static str,
}

fn rule(pattern: &str, with: &'static str) -> Rule {
    Rule { pattern: Regex::new(pattern).ok(), with }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // Whole SDP bodies (with real or JSON-escaped line ends).
        rule(r"v=0(?:\r\n|\n|\\r\\n)(?:[a-z]=[^\r\n\\]*(?:\r\n|\n|\\r\\n)?)*", "<sdp>"),
        // SDP candidate lines and ICE candidate strings (they carry addresses and ports).
        rule(r"a=candidate:[^\r\n]*", "a=<candidate>"),
        rule(r"candidate:[0-9A-Za-z+/]+ \d+ (?i:udp|tcp)[^\r\n\x22,}]*", "<candidate>"),
        // Tokens: JWTs anywhere, and access_token/token query parameters.
        rule(r"eyJ[\w-]+\.[\w-]+\.[\w-]*", "<jwt>"),
        rule(r"(?i)(access_token|token)=[^&\s'\x22]+", "$1=<redacted>"),
        // URLs (hosts, query strings): the scheme is kept, the rest is not.
        rule(r"(?i)\b(wss?|https?|turns?|stuns?)://[^\s'\x22,}\]]+", "$1://<host>"),
        rule(r"(?i)\b(turns?|stuns?):[^\s'\x22,}\]]+", "$1:<host>"),
        // IPv6 before IPv4 (an IPv4-mapped IPv6 address holds both).
        rule(
            r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}\b|(?:\d{1,3}\.){3}\d{1,3}\b)?|::(?:[0-9a-f]{1,4}:){0,6}(?:[0-9a-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})\b",
            "<ip>",
        ),
        rule(r"\b(?:\d{1,3}\.){3}\d{1,3}\b", "<ip>"),
    ]
});

static DIRTY: LazyLock<Vec<Option<Regex>>> = LazyLock::new(|| {
    [
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
        r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b",
        r"(?i)\b[0-9a-f]{1,4}::",
        r"(?i)::[0-9a-f]{1,4}\b",
        r"a=candidate",
        r"candidate:[0-9A-Za-z+/]+ \d+ (?i:udp|tcp)",
        r"eyJ[\w-]+\.[\w-]+",
        r"(?i)access_token=[^&<]",
        r"\r\n(?:v=0|o=|m=)",
        r"(?m)^v=0$",
        r"(?i)\b(?:turns?|stuns?):[^<\s]",
        r"(?i)\b(?:wss?|https?)://[^<]",
    ]
    .into_iter()
    .map(|p| Regex::new(p).ok())
    .collect()
});

/// `text` with every address, candidate, URL and token in it replaced by a placeholder.
pub fn redact(text: &str) -> String {
    let mut s = text.to_owned();
    for Rule { pattern, with } in RULES.iter() {
        if let Some(re) = pattern {
            s = re.replace_all(&s, *with).into_owned();
        }
    }
    s
}

/// Whether `text` holds nothing [`redact`] would remove: no IPv4 or IPv6 address, no SDP
/// or candidate line, no JWT or access token.
pub fn is_clean(text: &str) -> bool {
    DIRTY.iter().flatten().all(|re| !re.is_match(text))
}

/// Stat names whose values are addresses, ports or URLs: dropped from a redacted dump.
const ADDRESS_STATS: &[&str] =
    &["address", "ip", "port", "relatedAddress", "relatedPort", "url", "usernameFragment"];

/// updateLog entry types whose value is kept (a state's name); every other value (SDP,
/// candidates, `setConfiguration`'s TURN credentials, candidate errors with their URLs) is
/// dropped.
fn keeps_value(kind: &str) -> bool {
    let k = kind.strip_prefix("on").unwrap_or(kind);
    matches!(
        k,
        "iceconnectionstatechange"
            | "connectionstatechange"
            | "icegatheringstatechange"
            | "signalingstatechange"
    )
}

/// Stat names the parser reads (see [`super::webrtc_internals`]); with `trim`, every other
/// series is dropped, which makes a real dump a tenth of its size.
const USED_STATS: &[&str] = &[
    "timestamp",
    "selectedCandidatePairId",
    "iceLocalUsernameFragment",
    "bytesReceived",
    "bytesSent",
    "currentRoundTripTime",
    "localCandidateId",
    "networkType",
    "candidateType",
    "packetsLost",
    "packetsReceived",
];

/// A copy of a chrome://webrtc-internals dump fit to keep: no addresses, SDP, TURN
/// credentials or page URLs; every remaining string passed through [`redact`]. Address
/// series are not removed blindly: a candidate's address is replaced by a stable label
/// (`addr-1`, `addr-2`, … in order of appearance) so that an address *change* still shows.
/// With `trim`, only the series the parser reads are kept.
pub fn redact_dump(dump: &Value, trim: bool) -> Value {
    let mut out = dump.clone();
    let mut labels: Vec<String> = Vec::new();
    if let Some(pcs) = out.get_mut("PeerConnections").and_then(Value::as_object_mut) {
        for pc in pcs.values_mut() {
            let Some(pc) = pc.as_object_mut() else { continue };
            pc.insert("url".into(), Value::String("<page>".into()));
            pc.insert("rtcConfiguration".into(), Value::String("<redacted>".into()));
            pc.remove("constraints");
            if let Some(log) = pc.get_mut("updateLog").and_then(Value::as_array_mut) {
                for entry in log.iter_mut().filter_map(Value::as_object_mut) {
                    let kind = entry.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
                    if !keeps_value(&kind) && entry.contains_key("value") {
                        entry.insert("value".into(), Value::String("<redacted>".into()));
                    }
                }
            }
            if let Some(stats) = pc.get_mut("stats").and_then(Value::as_object_mut) {
                redact_stats(stats, trim, &mut labels);
            }
        }
    }
    if let Some(o) = out.as_object_mut() {
        o.remove("getUserMedia");
        o.insert("getUserMedia".into(), Value::Array(Vec::new()));
    }
    scrub_strings(&mut out);
    out
}

fn redact_stats(stats: &mut Map<String, Value>, trim: bool, labels: &mut Vec<String>) {
    let names: Vec<String> = stats.keys().cloned().collect();
    for name in names {
        let stat = name.rsplit_once('-').map_or(name.as_str(), |(_, s)| s);
        let certificate = stats
            .get(&name)
            .and_then(|s| s.get("statsType"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "certificate");
        let used = USED_STATS.contains(&stat);
        if certificate || (trim && !used && stat != "address") {
            stats.remove(&name);
            continue;
        }
        if stat == "address" {
            // A stable label per distinct address, so that a change of address survives.
            if let Some(series) = stats.get_mut(&name).and_then(Value::as_object_mut) {
                let labelled = series
                    .get("values")
                    .and_then(super::webrtc_internals::series_values)
                    .map(|values| {
                        values
                            .iter()
                            .map(|v| {
                                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                                let index = match labels.iter().position(|l| *l == text) {
                                    Some(i) => i,
                                    None => {
                                        labels.push(text);
                                        labels.len() - 1
                                    }
                                };
                                Value::String(format!("addr-{}", index + 1))
                            })
                            .collect::<Vec<_>>()
                    });
                if let Some(values) = labelled {
                    series.insert("values".into(), Value::String(Value::Array(values).to_string()));
                }
            }
        } else if ADDRESS_STATS.contains(&stat) {
            stats.remove(&name);
        }
    }
}

fn scrub_strings(v: &mut Value) {
    match v {
        Value::String(s) if !is_clean(s) => *s = redact(s),
        Value::Array(a) => a.iter_mut().for_each(scrub_strings),
        Value::Object(o) => o.values_mut().for_each(scrub_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        assert!(RULES.iter().all(|r| r.pattern.is_some()));
        assert!(DIRTY.iter().all(Option::is_some));
    }

    #[test]
    fn addresses_candidates_and_tokens_are_removed() {
        let dirty = [
            "connect ws://198.19.169.1:36733/rtc?access_token=abc.def&x=1",
            "peer at 10.0.0.7 and 2001:db8::1 and fe80::1ff:fe23:4567:890a%eth0",
            "::ffff:192.0.2.128 said hi",
            "a=candidate:842163049 1 udp 1677729535 203.0.113.9 46154 typ srflx",
            "{\"candidate\":\"candidate:1 1 UDP 2122260223 192.168.1.2 5000 typ host\"}",
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsYXB0b3AifQ.c2lnbmF0dXJl here",
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n",
            "turn:turn.example.com:3478?transport=udp",
        ];
        for d in dirty {
            assert!(!is_clean(d), "{d:?} should count as dirty");
            let r = redact(d);
            assert!(is_clean(&r), "{d:?} → {r:?} still dirty");
        }
    }

    #[test]
    fn plain_evidence_is_left_alone() {
        for s in [
            "resuming signal connection, attempt 1",
            "connection state changed: connected -> reconnecting",
            "T01-selectedCandidatePairId at 12.0 s",
            "received session close: ping timeout",
            "2026-12-07T03:44:31.347Z ERROR livekit::rtc_engine: resuming connection... attempt: 1",
            "livekit_api::access_token: minted",
        ] {
            assert!(is_clean(s));
            assert_eq!(redact(s), s);
        }
    }
}
