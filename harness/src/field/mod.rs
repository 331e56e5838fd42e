//! Evidence from the field, read into one typed timeline: the groundwork of `faultline
//! import`.
//!
//! Three kinds of file come in (see LIVEKIT-NOTES, "Evidence from the field"):
//! a chrome://webrtc-internals dump (its JSON; [`webrtc_internals`]), a livekit-client console
//! log (the js driver's log, or lines copied from a browser's console) and an upstream Rust SDK
//! log ([`logs`]). All three become a [`Timeline`]: per peer connection its state changes and
//! stats series, plus the client's lifecycle events; [`derive`] then finds what a scenario
//! needs from it (outages, the RTT and loss per second, ICE restarts, new peer connections,
//! network changes). Nothing here keeps an IP address, SDP or a token ([`redact`]): ids are
//! Chrome's random stats ids, and evidence strings name stats, times and log phrases only.
//!
//! Times are milliseconds since the Unix epoch (`f64`, as Chrome writes them), except in a
//! console log whose lines carry only a time of day: then they count from that day's midnight.
//! Only differences between times are meaningful to the importer.

pub mod derive;
pub mod import;
pub mod logs;
pub mod redact;
pub mod report;
pub mod webrtc_internals;

#[cfg(test)]
mod field_tests;

use std::path::Path;

use serde::Serialize;

/// What a field file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A chrome://webrtc-internals dump (JSON).
    WebrtcInternals,
    /// A livekit-client console log (the js driver's log or a browser console's).
    LivekitClientLog,
    /// An upstream Rust SDK (rust-sdks) log.
    RustSdkLog,
}

/// One value of a stats series at a time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample<T> {
    /// When it was measured (ms since the epoch).
    pub t_ms: f64,
    /// What was measured.
    pub value: T,
}

/// Which of a peer connection's states changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// `iceConnectionState` (`oniceconnectionstatechange`).
    IceConnection,
    /// `connectionState` (`onconnectionstatechange`).
    Connection,
    /// `iceGatheringState`.
    IceGathering,
    /// `signalingState`.
    Signaling,
}

/// A state change from a peer connection's `updateLog`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateChange {
    /// When (ms since the epoch).
    pub t_ms: f64,
    /// Which state.
    pub kind: StateKind,
    /// The new state, as Chrome names it (`checking`, `connected`, `disconnected`, …).
    pub state: String,
}

/// The local candidate of the selected pair at one sample: its kind, never its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalCandidate {
    /// Chrome's stats id of the candidate (random, no address in it).
    pub id: String,
    /// `networkType` (`wifi`, `cellular`, `ethernet`, …) where Chrome reports it.
    pub network_type: Option<String>,
    /// `candidateType` (`host`, `srflx`, `relay`, `prflx`).
    pub candidate_type: Option<String>,
    /// A number per distinct address seen in the dump (1, 2, …): an address change shows as
    /// a new number; the address itself is not kept.
    pub address_index: Option<u32>,
}

/// One peer connection of a webrtc-internals dump.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerConnection {
    /// The dump's key (`<renderer id>-<local id>`, e.g. `8-1`).
    pub id: String,
    /// Its first updateLog entry, if any (ms since the epoch).
    pub created_ms: Option<f64>,
    /// Its `close` updateLog entry, if any.
    pub closed_ms: Option<f64>,
    /// ICE, connection, gathering and signalling state changes, in time order.
    pub states: Vec<StateChange>,
    /// The transport's `selectedCandidatePairId` at each sample.
    pub selected_pair: Vec<Sample<String>>,
    /// The selected pair's `bytesReceived` at each sample (a new pair counts from 0).
    pub bytes_received: Vec<Sample<f64>>,
    /// The selected pair's `bytesSent` at each sample.
    pub bytes_sent: Vec<Sample<f64>>,
    /// The selected pair's `currentRoundTripTime`, seconds.
    pub rtt_s: Vec<Sample<f64>>,
    /// `packetsLost` summed over the inbound-rtp streams at each sample.
    pub packets_lost: Vec<Sample<f64>>,
    /// `packetsReceived` summed over the inbound-rtp streams at each sample.
    pub packets_received: Vec<Sample<f64>>,
    /// The selected pair's local candidate at each sample.
    pub local_candidate: Vec<Sample<LocalCandidate>>,
    /// The ICE generation at each sample: 0, then one more each time the transport's
    /// `iceLocalUsernameFragment` changed (the fragment itself is not kept).
    pub ice_generation: Vec<Sample<u32>>,
}

/// What the client's log says happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LifecycleKind {
    /// The signalling WebSocket closed.
    SignalClosed,
    /// A ping went unanswered.
    PingTimeout,
    /// The SDK saw the network go away (livekit-client's `detected network interruption`).
    NetworkInterruption,
    /// A resume (signal reconnect with the same session), attempt `attempt`.
    Resume {
        /// Which attempt (as the SDK counts them; livekit-client from 0, rust-sdks from 0).
        attempt: u32,
    },
    /// livekit-client's `reconnecting, attempt: N` (resume or full, it does not say).
    ReconnectAttempt {
        /// Which attempt.
        attempt: u32,
    },
    /// A full reconnect (rust-sdks' `restarting connection`), attempt `attempt`.
    FullReconnect {
        /// Which attempt.
        attempt: u32,
    },
    /// The SDK recovered (rust-sdks' `RtcEngine successfully recovered`).
    Recovered,
    /// The SDK gave up after `attempts` attempts over `elapsed_ms`.
    GaveUp {
        /// How many attempts.
        attempts: u32,
        /// Over how long.
        elapsed_ms: u64,
    },
    /// The SDK started an ICE restart (livekit-client's `triggering ICE restart`).
    IceRestart,
    /// A peer connection failed (`peerconnection failed`, `Publisher pc state failed`).
    PeerConnectionFailed,
    /// The client left the room for good (rust-sdks' `Disconnected from room`).
    Disconnected,
    /// The client closed the room itself (livekit-client's `disconnect from room`, rust-sdks'
    /// `Disconnected from room … ClientInitiated`): the end of its session, not a failure.
    Closed,
    /// The room's connection state changed (`connection state changed: A -> B`).
    State {
        /// The state before.
        from: String,
        /// The state after.
        to: String,
    },
    /// The server closed the session or told the client to leave (rust-sdks' `received
    /// session close: reason`, livekit-client's `leave request received (action=N)`).
    SessionClosed {
        /// The reason as logged, redacted.
        reason: String,
    },
}

/// A lifecycle event from a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleEvent {
    /// When (ms since the epoch, or since midnight for a time-of-day-only console log).
    pub t_ms: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: LifecycleKind,
    /// Where it was read: the line number and the phrase that matched, redacted.
    pub evidence: String,
}

/// Everything read from one field file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// What the file was.
    pub source: Source,
    /// The dump's peer connections, in order of creation (empty for a log).
    pub peer_connections: Vec<PeerConnection>,
    /// The log's lifecycle events, in time order (empty for a dump).
    pub lifecycle: Vec<LifecycleEvent>,
}

/// Why a field file could not be read. Every message names what is missing and where, and
/// none quotes the file beyond stat names, ids and log phrases.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is gzip-compressed (Chrome's download is `webrtc_internals_dump.gz`).
    #[error(
        "the file is gzip-compressed (Chrome saves the dump as webrtc_internals_dump.gz): \
         unpack it first (`gunzip -c webrtc_internals_dump.gz > dump.json`)"
    )]
    Gzipped,
    /// The file is neither a dump nor a log faultline knows.
    #[error("not a webrtc-internals dump, a livekit-client log or a LiveKit Rust SDK log: {why}")]
    Unrecognised {
        /// What was looked for.
        why: String,
    },
    /// The dump is not valid JSON (a truncated download, most often).
    #[error("the webrtc-internals dump is not valid JSON (truncated?): {what}")]
    BadJson {
        /// serde_json's description (line and column; no content).
        what: String,
    },
    /// Something the dump must have is missing or has the wrong shape.
    #[error("{at} {what}")]
    Missing {
        /// Where in the dump (`PeerConnections["8-1"].stats`).
        at: String,
        /// What is missing, and what that usually means.
        what: String,
    },
    /// More than one client's evidence, or more than one file of a kind, given at once.
    #[error(
        "{dumps} dump(s) and {logs} log(s) given: import one client's evidence at a time (at \
         most one webrtc-internals dump and one SDK log, of the same session)"
    )]
    SeveralOfAKind {
        /// How many dumps.
        dumps: usize,
        /// How many logs.
        logs: usize,
    },
    /// Nothing to import.
    #[error("no evidence given: name a webrtc-internals dump, an SDK log, or one of each")]
    NoEvidence,
    /// A log had lines faultline knows, but none with a time it can read.
    #[error(
        "{log:?} log: {found} lifecycle line(s) but none with a timestamp at the start of the \
         line (in Chrome's DevTools console, turn on \"Show timestamps\" before saving)"
    )]
    NoTimestamps {
        /// Which log.
        log: Source,
        /// How many lines matched.
        found: usize,
    },
}

/// Reads a field file, whichever of the three kinds it is.
pub fn read(path: &Path) -> Result<Timeline, FieldError> {
    let bytes = std::fs::read(path)
        .map_err(|source| FieldError::Io { path: path.display().to_string(), source })?;
    parse(&bytes)
}

/// Reads a field file's bytes, whichever of the three kinds it is: JSON starting with `{` is a
/// dump, anything else text is a log.
pub fn parse(bytes: &[u8]) -> Result<Timeline, FieldError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(FieldError::Gzipped);
    }
    let text = String::from_utf8_lossy(bytes);
    let start = text.trim_start_matches('\u{feff}').trim_start();
    if start.is_empty() {
        return Err(FieldError::Unrecognised { why: "the file is empty".into() });
    }
    if start.starts_with("RTCStatsDump") {
        return Err(FieldError::Unrecognised {
            why: "this is Chrome's rtcstats dump (\"Download the rtcstats dump\", \
                  line-delimited), which faultline does not read yet: save \"Download the \
                  webrtc-internals dump\" instead"
                .into(),
        });
    }
    if start.starts_with('{') {
        webrtc_internals::parse(start)
    } else {
        logs::parse(start)
    }
}

/// Milliseconds since the epoch for an RFC 3339 time (`2026-12-07T03:44:31.347Z`, with
/// `T` or a space, `Z` or an offset, or no zone for UTC), or `None`.
pub fn parse_rfc3339_ms(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let secs_of_day = time_of_day_ms(s.get(11..)?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let (ms_of_day, rest) = secs_of_day;
    let offset_ms = match rest.as_bytes().first() {
        None | Some(b'Z') | Some(b'z') => 0.0,
        Some(sign @ (b'+' | b'-')) => {
            let h: f64 = rest.get(1..3)?.parse().ok()?;
            let m: f64 = rest.get(rest.len().saturating_sub(2)..)?.parse().ok()?;
            let o = (h * 60.0 + m) * 60_000.0;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        Some(_) => 0.0,
    };
    #[allow(clippy::cast_precision_loss)]
    let day_ms = days as f64 * 86_400_000.0;
    Some(day_ms + ms_of_day - offset_ms)
}

/// `HH:MM:SS[.fff]` at the start of `s`: milliseconds since midnight and the rest of `s`.
pub fn time_of_day_ms(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let two = |i: usize| -> Option<f64> {
        let p = s.get(i..i + 2)?;
        if p.bytes().all(|c| c.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    let (h, m, sec) = (two(0)?, two(3)?, two(6)?);
    if h >= 24.0 || m >= 60.0 || sec > 60.0 {
        return None;
    }
    let mut end = 8;
    let mut frac = 0.0;
    if b.get(8) == Some(&b'.') {
        let digits = s[9..].bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let d = &s[9..9 + digits];
            frac = format!("0.{d}").parse().unwrap_or(0.0);
            end = 9 + digits;
        }
    }
    Some((((h * 60.0 + m) * 60.0 + sec + frac) * 1000.0, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339_ms("1970-01-02T00:00:01.5Z"), Some(86_401_500.0));
        // 2026-12-07T03:43:35.263Z as Chrome's own timestamps put it.
        let t = parse_rfc3339_ms("2026-12-07T03:43:35.263Z").map(|t| t.round());
        assert_eq!(t, Some(1_796_615_015_263.0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T05:43:35.263+02:00"),
            parse_rfc3339_ms("2026-12-07T03:43:35.263Z")
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(parse_rfc3339_ms("2026-13-07T03:43:35Z"), None);
    }

    #[test]
    fn gzip_and_empty_files_are_named() {
        let e = parse(&[0x1f, 0x8b, 8, 0]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("gunzip"), "{e}");
        let e = parse(b"  \n").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("empty"), "{e}");
    }
}
