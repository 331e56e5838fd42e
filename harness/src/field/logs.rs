//! Reads a client's log into the [`Timeline`]'s lifecycle events: a livekit-client console
//! log (the js driver's stderr, whose page lines read `… js-driver: [page info] <message>`, or
//! lines saved from a browser's console with timestamps on) and an upstream Rust SDK log
//! (rust-sdks' `livekit::rtc_engine` lines, through env_logger, tracing or the Python wheel's
//! logging).
//!
//! A line counts when it holds one of the phrases the SDKs log around a reconnect (listed in
//! LIVEKIT-NOTES, "Evidence from the field", and checked against the logs of this machine's
//! runs); its time is the RFC 3339 time or `HH:MM:SS[.fff]` time of day at its start (after
//! an optional `[`), or, for a line without one, the last time seen above it. Only the phrase
//! that matched goes into an event's evidence, redacted.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::redact::redact;
use super::{FieldError, LifecycleEvent, LifecycleKind, Source, Timeline};

/// Which SDK a phrase belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sdk {
    Js,
    Rust,
}

struct Phrase {
    sdk: Sdk,
    re: Option<Regex>,
    make: fn(&Captures<'_>) -> LifecycleKind,
}

fn number(c: &Captures<'_>, i: usize) -> u32 {
    c.get(i).and_then(|m| m.as_str().parse().ok()).unwrap_or(0)
}

fn phrase(sdk: Sdk, re: &str, make: fn(&Captures<'_>) -> LifecycleKind) -> Phrase {
    Phrase { sdk, re: Regex::new(re).ok(), make }
}

/// At most 120 characters of `s` (already redacted: cutting first could leave half an
/// address the redaction no longer recognises).
fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

/// The phrases, most specific first: the first that matches a line decides it.
static PHRASES: LazyLock<Vec<Phrase>> = LazyLock::new(|| {
    use LifecycleKind as K;
    vec![
        // rust-sdks (livekit 0.7/0.8, as the FFI wheel logs it).
        phrase(Sdk::Rust, r"resuming connection\.\.\. attempt: (\d+)", |c| K::Resume {
            attempt: number(c, 1),
        }),
        phrase(Sdk::Rust, r"restarting connection\.\.\. attempt: (\d+)", |c| K::FullReconnect {
            attempt: number(c, 1),
        }),
        phrase(Sdk::Rust, r"RtcEngine successfully recovered", |_| K::Recovered),
        phrase(Sdk::Rust, r"received session close: (.*)", |c| K::SessionClosed {
            reason: short(&redact(c.get(1).map_or("", |m| m.as_str()).trim())),
        }),
        phrase(Sdk::Rust, r"Publisher pc state failed", |_| K::PeerConnectionFailed),
        phrase(Sdk::Rust, r"Disconnected from room .*reason: ClientInitiated", |_| K::Closed),
        phrase(Sdk::Rust, r"Disconnected from room", |_| K::Disconnected),
        // livekit-client 2.2x.
        phrase(Sdk::Js, r"resuming signal connection, attempt (\d+)", |c| K::Resume {
            attempt: number(c, 1),
        }),
        phrase(Sdk::Js, r"reconnecting, attempt: (\d+)", |c| K::ReconnectAttempt {
            attempt: number(c, 1),
        }),
        phrase(
            Sdk::Js,
            r"could not recover connection after (\d+) attempts, (\d+)ms\. giving up",
            |c| K::GaveUp { attempts: number(c, 1), elapsed_ms: u64::from(number(c, 2)) },
        ),
        phrase(Sdk::Js, r"connection state changed: (\w+) -> (\w+)", |c| K::State {
            from: c.get(1).map_or("", |m| m.as_str()).to_owned(),
            to: c.get(2).map_or("", |m| m.as_str()).to_owned(),
        }),
        phrase(Sdk::Js, r"detected network interruption", |_| K::NetworkInterruption),
        phrase(Sdk::Js, r"ping timeout triggered", |_| K::PingTimeout),
        phrase(Sdk::Js, r"(?i)leave request received \(action=(\d+)\)", |c| K::SessionClosed {
            reason: format!("leave request (action={})", number(c, 1)),
        }),
        phrase(Sdk::Js, r"Received leave request while trying to \(re\)connect", |_| {
            K::SessionClosed { reason: "leave request while reconnecting".into() }
        }),
        phrase(Sdk::Js, r"triggering ICE restart", |_| K::IceRestart),
        phrase(Sdk::Js, r"\bdisconnect from room\b", |_| K::Closed),
        phrase(Sdk::Js, r"peerconnection failed", |_| K::PeerConnectionFailed),
        phrase(Sdk::Js, r"websocket (?:connection )?closed", |_| K::SignalClosed),
    ]
});

/// The time at the start of `line`: RFC 3339 (ms since the epoch) or a time of day (ms since
/// midnight).
fn leading_time(line: &str) -> Option<f64> {
    let s = line.trim_start().trim_start_matches('[').trim_start();
    let b = s.as_bytes();
    if b.len() >= 19 && b[4] == b'-' && (b[10] == b'T' || b[10] == b' ') {
        // The time runs to the first character that cannot be part of it.
        let mut end = 19;
        while end < b.len() && (b[end].is_ascii_digit() || b[end] == b'.') {
            end += 1;
        }
        if end < b.len() && (b[end] == b'Z' || b[end] == b'z') {
            end += 1;
        } else if end + 6 <= b.len() && (b[end] == b'+' || b[end] == b'-') && b[end + 3] == b':' {
            end += 6;
        }
        return super::parse_rfc3339_ms(s.get(..end)?);
    }
    super::time_of_day_ms(s).map(|(t, _)| t)
}

/// Reads a log's text.
pub fn parse(text: &str) -> Result<Timeline, FieldError> {
    let mut events = Vec::new();
    let mut untimed = 0usize;
    let mut last_time: Option<f64> = None;
    let mut day_ms = 0.0;
    let (mut js, mut rust) = (0usize, 0usize);
    for (i, line) in text.lines().enumerate() {
        if let Some(mut t) = leading_time(line) {
            // A time-of-day log that runs past midnight.
            if t < 86_400_000.0 {
                t += day_ms;
                if last_time.is_some_and(|l| t + 43_200_000.0 < l) {
                    day_ms += 86_400_000.0;
                    t += 86_400_000.0;
                }
            }
            last_time = Some(t);
        }
        let Some((p, caps)) = PHRASES
            .iter()
            .find_map(|p| p.re.as_ref().and_then(|re| re.captures(line)).map(|c| (p, c)))
        else {
            continue;
        };
        match p.sdk {
            Sdk::Js => js += 1,
            Sdk::Rust => rust += 1,
        }
        let Some(t_ms) = last_time else {
            untimed += 1;
            continue;
        };
        let matched = caps.get(0).map_or("", |m| m.as_str());
        events.push(LifecycleEvent {
            t_ms,
            kind: (p.make)(&caps),
            evidence: format!("line {}: `{}`", i + 1, short(&redact(matched.trim()))),
        });
    }
    let source = if rust > js { Source::RustSdkLog } else { Source::LivekitClientLog };
    if js + rust == 0 {
        return Err(FieldError::Unrecognised {
            why: "no line holds a livekit-client or LiveKit Rust SDK reconnect phrase \
                  (`connection state changed`, `resuming signal connection`, `websocket closed`, \
                  `resuming connection... attempt`, `received session close`, …); was the log \
                  saved at info level?"
                .into(),
        });
    }
    if events.is_empty() {
        return Err(FieldError::NoTimestamps { log: source, found: untimed });
    }
    events.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    Ok(Timeline { source, peer_connections: Vec::new(), lifecycle: events })
}
