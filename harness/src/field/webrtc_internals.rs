//! Reads a chrome://webrtc-internals dump (the JSON of "Download the webrtc-internals dump")
//! into a [`Timeline`] of peer connections.
//!
//! The format (LIVEKIT-NOTES, "Evidence from the field"; checked on Chromium 156):
//! `{getUserMedia, PeerConnections, UserAgent, …}`; each `PeerConnections["<rid>-<lid>"]` has
//! `{pid, rtcConfiguration, stats, updateLog, url}`. A stats series is keyed
//! `"<reportId>-<statName>"` and holds `{startTime, endTime, statsType, values}`, `values`
//! being a JSON array encoded as a string (an array is accepted too); Chrome samples once a
//! second, keeps at most 1000 points, and (Chromium ≥ ~120) keeps a `<reportId>-timestamp`
//! series with each sample's time, else the samples are spread evenly from `startTime` to
//! `endTime`. `updateLog` entries are `{timestamp (ms) | time, type, value}`.
//!
//! What is read: the state changes of the updateLog; the transport's
//! `selectedCandidatePairId` and `iceLocalUsernameFragment`; the selected pair's
//! `bytesReceived`, `bytesSent`, `currentRoundTripTime` and `localCandidateId`; the local
//! candidate's `networkType`, `candidateType` and address (as a number per distinct address,
//! never the address); inbound-rtp `packetsLost` and `packetsReceived`. SDP, candidates,
//! the RTC configuration and the page URL are never read.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::redact::redact;
use super::{
    FieldError, LocalCandidate, PeerConnection, Sample, Source, StateChange, StateKind, Timeline,
};

/// How far a sample of one report may be from the transport's sample it is matched to.
const MATCH_WINDOW_MS: f64 = 1_500.0;

/// The values of a stats series: a JSON array encoded as a string (Chrome), or an array.
pub fn series_values(values: &Value) -> Option<Vec<Value>> {
    match values {
        Value::String(s) => match serde_json::from_str::<Value>(s).ok()? {
            Value::Array(a) => Some(a),
            _ => None,
        },
        Value::Array(a) => Some(a.clone()),
        _ => None,
    }
}

/// One stats series with a time per value.
#[derive(Debug, Clone)]
struct Series {
    stats_type: String,
    points: Vec<(f64, Value)>,
}

impl Series {
    /// The value nearest to `t_ms`, within [`MATCH_WINDOW_MS`].
    fn at(&self, t_ms: f64) -> Option<&Value> {
        self.points
            .iter()
            .filter(|(t, _)| (t - t_ms).abs() <= MATCH_WINDOW_MS)
            .min_by(|a, b| (a.0 - t_ms).abs().total_cmp(&(b.0 - t_ms).abs()))
            .map(|(_, v)| v)
    }

    fn number_at(&self, t_ms: f64) -> Option<f64> {
        self.at(t_ms).and_then(Value::as_f64)
    }

    fn text_at(&self, t_ms: f64) -> Option<String> {
        match self.at(t_ms)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// A PC's stats, by report id, then stat name.
type Reports = BTreeMap<String, BTreeMap<String, Series>>;

/// Reads a dump's text.
pub fn parse(text: &str) -> Result<Timeline, FieldError> {
    let dump: Value = serde_json::from_str(text).map_err(|e| FieldError::BadJson {
        // serde_json's message names a line and column, never the content.
        what: e.to_string(),
    })?;
    let pcs = dump.get("PeerConnections").ok_or_else(|| FieldError::Missing {
        at: "the dump".into(),
        what: "has no `PeerConnections` object: is this a chrome://webrtc-internals dump \
               (\"Download the webrtc-internals dump\")?"
            .into(),
    })?;
    let pcs = pcs.as_object().ok_or_else(|| FieldError::Missing {
        at: "`PeerConnections`".into(),
        what: "is not an object".into(),
    })?;
    if pcs.is_empty() {
        return Err(FieldError::Missing {
            at: "`PeerConnections`".into(),
            what: "is empty: the dump was made with no call in the page, or after the call \
                   ended (closed connections are dropped unless chrome://webrtc-internals was \
                   opened with ?keepRemovedConnections)"
                .into(),
        });
    }
    let mut addresses: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (key, pc) in pcs {
        out.push(peer_connection(key, pc, &mut addresses)?);
    }
    if out.iter().all(|pc| pc.selected_pair.is_empty()) {
        let keys: Vec<String> = out.iter().map(|pc| format!("{:?}", pc.id)).collect();
        return Err(FieldError::Missing {
            at: format!("PeerConnections[{}].stats", keys.join(", ")),
            what: "has no series for the selected candidate pair (no transport with \
                   `selectedCandidatePairId`); this dump was made before the call connected?"
                .into(),
        });
    }
    if let Some(pc) =
        out.iter().find(|pc| !pc.selected_pair.is_empty() && pc.bytes_received.is_empty())
    {
        return Err(FieldError::Missing {
            at: format!("PeerConnections[{:?}].stats", pc.id),
            what: "has a selected candidate pair but no `bytesReceived` series for it \
                   (a partial dump, or the pair's stats were cut off?)"
                .into(),
        });
    }
    out.sort_by(|a, b| {
        a.created_ms.unwrap_or(f64::MAX).total_cmp(&b.created_ms.unwrap_or(f64::MAX))
    });
    Ok(Timeline { source: Source::WebrtcInternals, peer_connections: out, lifecycle: Vec::new() })
}

fn peer_connection(
    key: &str,
    pc: &Value,
    addresses: &mut Vec<String>,
) -> Result<PeerConnection, FieldError> {
    let id = redact(key);
    let at = |what: &str| format!("PeerConnections[{id:?}].{what}");
    let pc = pc.as_object().ok_or_else(|| FieldError::Missing {
        at: format!("PeerConnections[{id:?}]"),
        what: "is not an object".into(),
    })?;
    let log = pc.get("updateLog").and_then(Value::as_array).ok_or_else(|| FieldError::Missing {
        at: at("updateLog"),
        what: "is missing or not an array".into(),
    })?;
    let mut states = Vec::new();
    let mut created_ms = None;
    let mut closed_ms = None;
    for (i, entry) in log.iter().enumerate() {
        let t_ms = entry_time(entry).ok_or_else(|| FieldError::Missing {
            at: at(&format!("updateLog[{i}]")),
            what: "has no `timestamp` (ms) or `time` Chrome could have written".into(),
        })?;
        created_ms = Some(created_ms.map_or(t_ms, |c: f64| c.min(t_ms)));
        let kind = entry.get("type").and_then(Value::as_str).unwrap_or("");
        let kind = kind.strip_prefix("on").unwrap_or(kind);
        let state_kind = match kind {
            "iceconnectionstatechange" => Some(StateKind::IceConnection),
            "connectionstatechange" => Some(StateKind::Connection),
            "icegatheringstatechange" => Some(StateKind::IceGathering),
            "signalingstatechange" => Some(StateKind::Signaling),
            "close" => {
                closed_ms = Some(t_ms);
                None
            }
            _ => None,
        };
        if let Some(kind) = state_kind {
            let value = entry.get("value").and_then(Value::as_str).unwrap_or("");
            let state = value.trim().trim_matches('"').to_owned();
            states.push(StateChange { t_ms, kind, state: redact(&state) });
        }
    }
    states.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let stats = pc.get("stats").and_then(Value::as_object).ok_or_else(|| FieldError::Missing {
        at: at("stats"),
        what: "is missing or not an object".into(),
    })?;
    let reports = reports(stats, &at("stats"))?;
    let mut out = PeerConnection {
        id: id.clone(),
        created_ms,
        closed_ms,
        states,
        selected_pair: Vec::new(),
        bytes_received: Vec::new(),
        bytes_sent: Vec::new(),
        rtt_s: Vec::new(),
        packets_lost: Vec::new(),
        packets_received: Vec::new(),
        local_candidate: Vec::new(),
        ice_generation: Vec::new(),
    };
    // The transport whose selected pair has the most samples (LiveKit bundles: one a PC).
    let Some(transport) = reports
        .values()
        .filter_map(|r| r.get("selectedCandidatePairId").map(|s| (r, s)))
        .max_by_key(|(_, s)| s.points.iter().filter(|(_, v)| v.as_str().is_some()).count())
    else {
        return Ok(out);
    };
    let (transport, selected) = transport;
    let mut last_ufrag: Option<String> = None;
    let mut generation = 0u32;
    for (t_ms, pair) in &selected.points {
        let t_ms = *t_ms;
        let Some(pair) = pair.as_str().filter(|p| !p.is_empty()) else { continue };
        out.selected_pair.push(Sample { t_ms, value: redact(pair) });
        if let Some(ufrag) = transport.get("iceLocalUsernameFragment").and_then(|s| s.text_at(t_ms))
        {
            if last_ufrag.as_ref().is_some_and(|l| *l != ufrag) {
                generation += 1;
            }
            last_ufrag = Some(ufrag);
            out.ice_generation.push(Sample { t_ms, value: generation });
        }
        let Some(pair) = reports.get(pair) else { continue };
        let number = |stat: &str| pair.get(stat).and_then(|s| s.number_at(t_ms));
        if let Some(v) = number("bytesReceived") {
            out.bytes_received.push(Sample { t_ms, value: v });
        }
        if let Some(v) = number("bytesSent") {
            out.bytes_sent.push(Sample { t_ms, value: v });
        }
        if let Some(v) = number("currentRoundTripTime") {
            out.rtt_s.push(Sample { t_ms, value: v });
        }
        if let Some(local) = pair.get("localCandidateId").and_then(|s| s.text_at(t_ms)) {
            let candidate = reports.get(&local);
            let text =
                |stat: &str| candidate.and_then(|c| c.get(stat)).and_then(|s| s.text_at(t_ms));
            let address_index = text("address").or_else(|| text("ip")).map(|a| {
                let i = addresses.iter().position(|x| *x == a).unwrap_or_else(|| {
                    addresses.push(a);
                    addresses.len() - 1
                });
                u32::try_from(i + 1).unwrap_or(u32::MAX)
            });
            out.local_candidate.push(Sample {
                t_ms,
                value: LocalCandidate {
                    id: redact(&local),
                    network_type: text("networkType").map(|s| redact(&s)),
                    candidate_type: text("candidateType").map(|s| redact(&s)),
                    address_index,
                },
            });
        }
        // Inbound RTP, summed over the streams sampled at this time.
        let inbound: Vec<&BTreeMap<String, Series>> = reports
            .values()
            .filter(|r| r.values().next().is_some_and(|s| s.stats_type == "inbound-rtp"))
            .collect();
        if !inbound.is_empty() {
            let sum = |stat: &str| -> Option<f64> {
                let v: Vec<f64> =
                    inbound.iter().filter_map(|r| r.get(stat)?.number_at(t_ms)).collect();
                (!v.is_empty()).then(|| v.iter().sum())
            };
            if let (Some(lost), Some(received)) = (sum("packetsLost"), sum("packetsReceived")) {
                out.packets_lost.push(Sample { t_ms, value: lost });
                out.packets_received.push(Sample { t_ms, value: received });
            }
        }
    }
    Ok(out)
}

/// An updateLog entry's time: `timestamp` in ms (Chrome ≥ ~90), or `time` as RFC 3339 text
/// or a number.
fn entry_time(entry: &Value) -> Option<f64> {
    if let Some(t) = entry.get("timestamp").and_then(Value::as_f64) {
        return Some(t);
    }
    match entry.get("time")? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => super::parse_rfc3339_ms(s),
        _ => None,
    }
}

/// Groups a PC's stats series by report id, each with a time per value.
fn reports(stats: &Map<String, Value>, at: &str) -> Result<Reports, FieldError> {
    // First the raw series, then their times (which need the report's `timestamp` series).
    let mut raw: HashMap<String, Vec<(String, &Value)>> = HashMap::new();
    for (name, series) in stats {
        let Some((report, stat)) = name.rsplit_once('-') else { continue };
        raw.entry(report.to_owned()).or_default().push((stat.to_owned(), series));
    }
    let mut out = Reports::new();
    for (report, series) in raw {
        let times: Option<Vec<f64>> = series
            .iter()
            .find(|(stat, _)| stat == "timestamp")
            .and_then(|(_, s)| s.get("values"))
            .and_then(series_values)
            .map(|v| v.iter().filter_map(Value::as_f64).collect());
        let mut by_stat = BTreeMap::new();
        for (stat, s) in series {
            if stat == "timestamp" || stat.starts_with('[') {
                continue;
            }
            let where_ = || format!("{at}[\"{}-{stat}\"]", redact(&report));
            let values =
                s.get("values").and_then(series_values).ok_or_else(|| FieldError::Missing {
                    at: where_(),
                    what: "has no `values` array (or a string that is not one)".into(),
                })?;
            let stats_type =
                s.get("statsType").and_then(Value::as_str).unwrap_or_default().to_owned();
            let points: Vec<(f64, Value)> = match &times {
                Some(t) if t.len() == values.len() => t.iter().copied().zip(values).collect(),
                _ => {
                    let start = s.get("startTime").and_then(time_value);
                    let end = s.get("endTime").and_then(time_value);
                    let (Some(start), Some(end)) = (start, end) else {
                        return Err(FieldError::Missing {
                            at: where_(),
                            what: "has neither a `timestamp` series of its length nor a \
                                   readable `startTime` and `endTime`"
                                .into(),
                        });
                    };
                    let n = values.len();
                    values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| {
                            #[allow(clippy::cast_precision_loss)]
                            let f = if n > 1 { i as f64 / (n - 1) as f64 } else { 1.0 };
                            (start + (end - start) * f, v)
                        })
                        .collect()
                }
            };
            by_stat.insert(stat, Series { stats_type, points });
        }
        out.insert(report, by_stat);
    }
    Ok(out)
}

fn time_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => super::parse_rfc3339_ms(s),
        _ => None,
    }
}
