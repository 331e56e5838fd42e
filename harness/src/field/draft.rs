//! A first, minimal scenario draft from field evidence: each outage of a dump as a
//! `partition` of the field client, and what its log says it did as expectations. The lead's
//! `faultline import` grows this (the RTT/loss profile as a replayed link, network changes,
//! ICE restarts, server leaves); what is here is checked to be a scenario file the harness
//! accepts, and to hold nothing but evidence that [`super::redact::is_clean`] passes.
//!
//! Time zero: a replay's fault timeline starts once everyone is connected and receiving, so
//! the draft counts from the dump's first growing `bytesReceived` sample (the first PC's
//! media flowing), not from its first updateLog entry.

use std::fmt::Write as _;

use super::derive::Derived;
use super::redact::redact;
use super::{LifecycleKind, Timeline};

/// The field client's identity in a draft, and its peer's.
pub const FIELD: &str = "field";
/// The other participant a draft puts in the room, so that media flows both ways.
pub const PEER: &str = "peer";

/// The time (ms since the epoch) a replay's timeline zero stands for: the first sample at
/// which a peer connection's selected pair received more bytes than at the one before.
pub fn zero_ms(dump: &Timeline) -> Option<f64> {
    dump.peer_connections
        .iter()
        .filter_map(|pc| {
            pc.bytes_received.windows(2).find(|w| w[1].value > w[0].value).map(|w| w[1].t_ms)
        })
        .reduce(f64::min)
}

fn secs(ms: f64) -> String {
    format!("{:.1}s", (ms / 1000.0).max(0.0))
}

/// A scenario's text from a dump's findings and, optionally, the same client's log.
pub fn draft(name: &str, dump: &Timeline, derived: &Derived, log: Option<&Timeline>) -> String {
    let zero = zero_ms(dump).unwrap_or(derived.origin_ms);
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut out = String::new();
    let _ = writeln!(out, "# Drafted by faultline from field evidence (a webrtc-internals dump");
    let _ = writeln!(out, "# and, where given, the client's log). Times count from the dump's");
    let _ = writeln!(
        out,
        "# first media bytes ({:.1} s after its first entry).",
        (zero - derived.origin_ms) / 1000.0
    );
    let _ = writeln!(out, "name = {:?}", redact(&name));
    let _ = writeln!(
        out,
        "description = \"Imported from field evidence: {} outage(s).\"",
        derived.outages.len()
    );
    let _ =
        writeln!(out, "\n[[participant]]\nidentity = {FIELD:?}\ntracks = [\"audio\", \"video\"]");
    let _ =
        writeln!(out, "\n[[participant]]\nidentity = {PEER:?}\ntracks = [\"audio\", \"video\"]");
    for o in &derived.outages {
        // An outage the dump does not see end lasts to the next PC's first bytes, if any.
        let end = o.end_ms.or_else(|| {
            dump.peer_connections
                .iter()
                .filter(|pc| pc.created_ms.is_some_and(|c| c > o.start_ms))
                .filter_map(|pc| {
                    pc.bytes_received
                        .windows(2)
                        .find(|w| w[1].value > w[0].value)
                        .map(|w| w[1].t_ms)
                })
                .reduce(f64::min)
        });
        let _ = writeln!(out, "\n# evidence: {}", redact(&o.evidence));
        let Some(end) = end else {
            let _ = writeln!(out, "# (no end in the dump: left out)");
            continue;
        };
        if o.end_ms.is_none() {
            let _ = writeln!(out, "# ends at a new peer connection's first bytes");
        }
        let _ = writeln!(
            out,
            "[[fault]]\nat = {:?}\nfor = {:?}\ntarget = {FIELD:?}\ntype = \"partition\"",
            secs(o.start_ms - zero),
            secs(end - o.start_ms)
        );
    }
    let _ = writeln!(out);
    expectations(&mut out, log);
    out
}

/// What the log says the client did, as expectations.
fn expectations(out: &mut String, log: Option<&Timeline>) {
    let Some(log) = log else {
        let _ = writeln!(out, "# no client log: the field client's own states are unknown");
        let _ = writeln!(
            out,
            "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = \"connected\""
        );
        return;
    };
    let events = &log.lifecycle;
    let reconnecting = events.iter().find(|e| {
        matches!(&e.kind, LifecycleKind::State { to, .. } if to.contains("econnecting"))
            || matches!(e.kind, LifecycleKind::Resume { .. } | LifecycleKind::FullReconnect { .. })
    });
    let gave_up = events.iter().find(|e| matches!(e.kind, LifecycleKind::GaveUp { .. }));
    let back = reconnecting.and_then(|r| {
        events.iter().find(|e| {
            e.t_ms > r.t_ms
                && (matches!(&e.kind, LifecycleKind::State { from, to } if to == "connected" && from.contains("econnecting"))
                    || e.kind == LifecycleKind::Recovered)
        })
    });
    match (reconnecting, back, gave_up) {
        (None, _, None) => {
            let _ = writeln!(out, "# the log shows no reconnect");
            let _ = writeln!(out, "[[expect]]\ntype = \"no-reconnect\"\nparticipant = {FIELD:?}\n");
            let _ = writeln!(out, "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = \"connected\"");
        }
        (Some(r), Some(b), _) => {
            let took = (b.t_ms - r.t_ms) / 1000.0;
            let _ = writeln!(
                out,
                "# evidence: {} then {}: Reconnecting, back after {took:.1} s",
                redact(&r.evidence),
                redact(&b.evidence)
            );
            let _ = writeln!(
                out,
                "[[expect]]\ntype = \"reconnected\"\nparticipant = {FIELD:?}\nwithin = \"{}s\"\n",
                took.ceil().max(1.0) + 5.0
            );
            let _ = writeln!(out, "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = \"connected\"");
        }
        (_, _, Some(g)) | (Some(g), None, None) => {
            let _ = writeln!(out, "# evidence: {}: ended Disconnected", redact(&g.evidence));
            let _ = writeln!(out, "[[expect]]\ntype = \"final-state\"\nparticipant = {FIELD:?}\nstate = \"disconnected\"");
        }
    }
}
