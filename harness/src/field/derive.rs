//! Finds in a [`Timeline`] what a scenario is written from: outages (the selected candidate
//! pair's `bytesReceived` flat for at least a second while its peer connection existed), the
//! RTT and loss per second, ICE restarts, network changes, new peer connections (a LiveKit
//! full reconnect) and the peer connections' state changes. Each finding carries its evidence:
//! the stat or updateLog entry it came from and its times, in seconds from the timeline's
//! origin (its earliest time); never an address.

use serde::Serialize;

use super::{PeerConnection, Sample, StateChange, Timeline};

/// The shortest flat stretch of `bytesReceived` counted as an outage: two samples a second
/// apart holding the same value, with a tenth of a second for Chrome's timer (it samples
/// every 1.0 s give or take a few milliseconds), so that a 2 s dead spot is not lost to a
/// sample landing 999 ms after the one before.
pub const MIN_OUTAGE_MS: f64 = 900.0;

/// A peer connection created this long after the first one is a new one (LiveKit creates
/// its publisher and subscriber together at a join).
pub const NEW_PC_AFTER_MS: f64 = 2_000.0;

/// A stretch with no bytes received on the selected pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outage {
    /// The peer connection's id.
    pub pc: String,
    /// When the bytes stopped: halfway between the last sample that still grew and the first
    /// flat one (Chrome samples once a second, so this is good to ±0.5 s).
    pub start_ms: f64,
    /// When they came back (halfway between the last flat sample and the next), or `None`
    /// when the series ends flat without the peer connection being closed.
    pub end_ms: Option<f64>,
    /// How far the true start can be from `start_ms`: half the time between the samples
    /// around it (0.5 s when Chrome sampled every second; more where it skipped samples).
    pub start_uncertainty_ms: f64,
    /// The same for `end_ms`.
    pub end_uncertainty_ms: f64,
    /// The stat, the value's samples and times it was read from.
    pub evidence: String,
}

/// The link's quality in one second of the timeline, over every peer connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    /// Seconds from the origin (this second is `[second, second + 1)`).
    pub second: u64,
    /// The mean `currentRoundTripTime` of the selected pairs sampled in it, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Inbound-rtp packets lost in it over packets expected (lost + received), percent.
    pub loss_percent: Option<f64>,
}

/// A change seen at one time on one peer connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// What kind of change.
    pub kind: ChangeKind,
    /// The peer connection's id.
    pub pc: String,
    /// When it was first seen (ms since the epoch).
    pub t_ms: f64,
    /// What changed, from which stat, when.
    pub evidence: String,
}

/// What a [`Change`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// The transport's ICE username fragment changed: an ICE restart.
    IceRestart,
    /// The transport's selected candidate pair changed.
    SelectedPair,
    /// The selected pair's local candidate changed address or network type: the client
    /// moved to another network.
    LocalCandidate,
    /// A peer connection appeared after the first ones: a full reconnect.
    NewPeerConnection,
}

/// What [`derive`] finds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Derived {
    /// The timeline's earliest time (ms since the epoch); evidence counts from it.
    pub origin_ms: f64,
    /// Outages, in time order.
    pub outages: Vec<Outage>,
    /// RTT and loss per second, from the first sampled second to the last.
    pub seconds: Vec<Second>,
    /// ICE restarts (`iceLocalUsernameFragment` changed).
    pub ice_restarts: Vec<Change>,
    /// Network changes: the selected pair, or its local candidate's address or network type,
    /// changed.
    pub network_changes: Vec<Change>,
    /// Peer connections created after the first ones (a full reconnect makes new ones).
    pub new_peer_connections: Vec<Change>,
    /// Every peer connection's ICE and connection state changes, in time order.
    pub state_changes: Vec<(String, StateChange)>,
}

/// Seconds from `origin`, for evidence.
fn rel(t_ms: f64, origin: f64) -> String {
    format!("+{:.1} s", (t_ms - origin) / 1000.0)
}

/// The timeline's earliest time.
pub fn origin_ms(timeline: &Timeline) -> f64 {
    let pcs = timeline.peer_connections.iter().flat_map(|pc| {
        pc.created_ms
            .into_iter()
            .chain(pc.selected_pair.first().map(|s| s.t_ms))
            .chain(pc.states.first().map(|s| s.t_ms))
    });
    let events = timeline.lifecycle.iter().map(|e| e.t_ms);
    pcs.chain(events).reduce(f64::min).unwrap_or(0.0)
}

/// Everything the importer needs from `timeline`.
pub fn derive(timeline: &Timeline) -> Derived {
    let origin = origin_ms(timeline);
    let mut out = Derived {
        origin_ms: origin,
        outages: Vec::new(),
        seconds: seconds(&timeline.peer_connections, origin),
        ice_restarts: Vec::new(),
        network_changes: Vec::new(),
        new_peer_connections: Vec::new(),
        state_changes: Vec::new(),
    };
    let first_created =
        timeline.peer_connections.iter().filter_map(|pc| pc.created_ms).reduce(f64::min);
    for pc in &timeline.peer_connections {
        out.outages.extend(outages(pc, origin));
        out.ice_restarts.extend(ice_restarts(pc, origin));
        out.network_changes.extend(network_changes(pc, origin));
        if let (Some(first), Some(created)) = (first_created, pc.created_ms) {
            if created - first >= NEW_PC_AFTER_MS {
                out.new_peer_connections.push(Change {
                    kind: ChangeKind::NewPeerConnection,
                    pc: pc.id.clone(),
                    t_ms: created,
                    evidence: format!(
                        "PeerConnections[{:?}] first appears in its updateLog at {}, {:.1} s \
                         after the first peer connection",
                        pc.id,
                        rel(created, origin),
                        (created - first) / 1000.0
                    ),
                });
            }
        }
        out.state_changes.extend(pc.states.iter().cloned().map(|s| (pc.id.clone(), s)));
    }
    out.outages.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    out.ice_restarts.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    out.network_changes.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    out.new_peer_connections.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    out.state_changes.sort_by(|a, b| a.1.t_ms.total_cmp(&b.1.t_ms));
    out
}

/// The selected pair at `t_ms` (samples are taken at the same times as bytesReceived).
fn pair_at(pc: &PeerConnection, t_ms: f64) -> Option<&str> {
    pc.selected_pair.iter().find(|s| s.t_ms == t_ms).map(|s| s.value.as_str())
}

/// Flat stretches of the selected pair's bytesReceived, after the first bytes arrived.
pub fn outages(pc: &PeerConnection, origin: f64) -> Vec<Outage> {
    let samples: Vec<&Sample<f64>> =
        pc.bytes_received.iter().filter(|s| pc.closed_ms.is_none_or(|c| s.t_ms <= c)).collect();
    let mut out = Vec::new();
    let mut flowing = false;
    let mut i = 0;
    while i < samples.len() {
        // The flat run that starts at i: same value, same pair.
        let mut j = i;
        while j + 1 < samples.len()
            && samples[j + 1].value == samples[i].value
            && pair_at(pc, samples[j + 1].t_ms) == pair_at(pc, samples[i].t_ms)
        {
            j += 1;
        }
        if i > 0 && samples[i].value > samples[i - 1].value {
            flowing = true;
        }
        let flat_ms = samples[j].t_ms - samples[i].t_ms;
        if flowing && j > i && flat_ms >= MIN_OUTAGE_MS {
            let start =
                if i > 0 { (samples[i - 1].t_ms + samples[i].t_ms) / 2.0 } else { samples[i].t_ms };
            let end = samples.get(j + 1).map(|next| (samples[j].t_ms + next.t_ms) / 2.0);
            // A series that ends flat because the connection was closed is not an outage.
            let closed_soon = pc.closed_ms.is_some_and(|c| c - samples[i].t_ms < MIN_OUTAGE_MS);
            if end.is_some() || !closed_soon {
                let start_uncertainty_ms =
                    if i > 0 { (samples[i].t_ms - samples[i - 1].t_ms) / 2.0 } else { 0.0 };
                let end_uncertainty_ms =
                    samples.get(j + 1).map_or(0.0, |next| (next.t_ms - samples[j].t_ms) / 2.0);
                out.push(Outage {
                    pc: pc.id.clone(),
                    start_ms: start,
                    end_ms: end,
                    start_uncertainty_ms,
                    end_uncertainty_ms,
                    evidence: format!(
                        "PeerConnections[{:?}] selected candidate pair bytesReceived flat at {} \
                         from {} to {} ({} samples){}",
                        pc.id,
                        samples[i].value,
                        rel(samples[i].t_ms, origin),
                        rel(samples[j].t_ms, origin),
                        j - i + 1,
                        match samples.get(j + 1) {
                            Some(next) => format!(", growing again at {}", rel(next.t_ms, origin)),
                            None => ", to the end of the series".into(),
                        }
                    ),
                });
            }
        }
        i = j + 1;
    }
    out
}

fn ice_restarts(pc: &PeerConnection, origin: f64) -> Vec<Change> {
    pc.ice_generation
        .windows(2)
        .filter(|w| w[1].value != w[0].value)
        .map(|w| Change {
            kind: ChangeKind::IceRestart,
            pc: pc.id.clone(),
            t_ms: w[1].t_ms,
            evidence: format!(
                "PeerConnections[{:?}] transport iceLocalUsernameFragment changed between {} \
                 and {} (ICE generation {})",
                pc.id,
                rel(w[0].t_ms, origin),
                rel(w[1].t_ms, origin),
                w[1].value
            ),
        })
        .collect()
}

fn network_changes(pc: &PeerConnection, origin: f64) -> Vec<Change> {
    let mut out = Vec::new();
    for w in pc.selected_pair.windows(2) {
        if w[1].value != w[0].value {
            out.push(Change {
                kind: ChangeKind::SelectedPair,
                pc: pc.id.clone(),
                t_ms: w[1].t_ms,
                evidence: format!(
                    "PeerConnections[{:?}] transport selectedCandidatePairId changed between {} \
                     and {}",
                    pc.id,
                    rel(w[0].t_ms, origin),
                    rel(w[1].t_ms, origin)
                ),
            });
        }
    }
    for w in pc.local_candidate.windows(2) {
        let (a, b) = (&w[0].value, &w[1].value);
        let mut what = Vec::new();
        if a.address_index != b.address_index {
            what.push("address");
        }
        if a.network_type != b.network_type {
            what.push("networkType");
        }
        if !what.is_empty() {
            out.push(Change {
                kind: ChangeKind::LocalCandidate,
                pc: pc.id.clone(),
                t_ms: w[1].t_ms,
                evidence: format!(
                    "PeerConnections[{:?}] the selected pair's local candidate's {} changed \
                     between {} and {}",
                    pc.id,
                    what.join(" and "),
                    rel(w[0].t_ms, origin),
                    rel(w[1].t_ms, origin)
                ),
            });
        }
    }
    out
}

/// RTT and loss per second over every peer connection.
fn seconds(pcs: &[PeerConnection], origin: f64) -> Vec<Second> {
    use std::collections::BTreeMap;
    let bucket = |t: f64| -> u64 {
        let s = ((t - origin) / 1000.0).floor();
        if s <= 0.0 {
            0
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let s = s as u64;
            s
        }
    };
    // second → (rtt sum, rtt count, lost, received)
    let mut acc: BTreeMap<u64, (f64, u32, f64, f64)> = BTreeMap::new();
    for pc in pcs {
        for s in &pc.rtt_s {
            let e = acc.entry(bucket(s.t_ms)).or_default();
            e.0 += s.value * 1000.0;
            e.1 += 1;
        }
        let pairs = pc.packets_lost.iter().zip(&pc.packets_received);
        let pairs: Vec<_> = pairs.collect();
        for w in pairs.windows(2) {
            let ((l0, r0), (l1, r1)) = (w[0], w[1]);
            let lost = (l1.value - l0.value).max(0.0);
            let received = (r1.value - r0.value).max(0.0);
            let e = acc.entry(bucket(l1.t_ms)).or_default();
            e.2 += lost;
            e.3 += received;
        }
    }
    let (Some(first), Some(last)) = (acc.keys().next().copied(), acc.keys().next_back().copied())
    else {
        return Vec::new();
    };
    (first..=last)
        .map(|second| {
            let e = acc.get(&second).copied().unwrap_or_default();
            Second {
                second,
                rtt_ms: (e.1 > 0).then(|| e.0 / f64::from(e.1)),
                loss_percent: (e.2 + e.3 > 0.0).then(|| 100.0 * e.2 / (e.2 + e.3)),
            }
        })
        .collect()
}
