//! What serde cannot check in a scenario: references between its parts (targets and
//! expectations name declared participants), ranges, combinations (a `for` on an instant
//! fault, a track fault against what its target publishes, cluster faults without a cluster).

use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;

use super::{Expectation, Fault, FaultStep, Firewall, Lane, NodeRef, Scenario, MAX_NODES};
use crate::vocab::TrackSpec;

impl Scenario {
    /// Checks what serde cannot: references, ranges, combinations. `fault_spans` locates
    /// each `[[fault]]` table.
    pub(super) fn check(&self, fault_spans: &[Range<usize>]) -> Result<(), (Range<usize>, String)> {
        let mut identities = BTreeSet::new();
        for p in &self.participants {
            if p.identity.get_ref().is_empty() {
                return Err((p.identity.span(), "participant identity must not be empty".into()));
            }
            if !identities.insert(p.identity.get_ref().as_str()) {
                return Err((
                    p.identity.span(),
                    format!("participant `{}` is declared twice", p.identity.get_ref()),
                ));
            }
        }
        if identities.is_empty() {
            return Err((0..0, "a scenario needs at least one [[participant]]".into()));
        }
        let known = |name: &str| -> Result<(), String> {
            if identities.contains(name) {
                Ok(())
            } else {
                Err(format!(
                    "unknown participant `{name}`; declared participants are: {}",
                    identities.iter().copied().collect::<Vec<_>>().join(", ")
                ))
            }
        };
        if let Some(field) = &self.field {
            known(&field.participant).map_err(|m| (0..0, format!("[field] participant: {m}")))?;
        }
        for (index, step) in self.faults.iter().enumerate() {
            let table = fault_spans.get(index).cloned().unwrap_or(0..0);
            match (&step.target, step.fault.needs_target()) {
                (Some(t), _) => known(t.get_ref()).map_err(|m| (t.span(), m))?,
                (None, true) if identities.len() > 1 => {
                    return Err((
                        table,
                        format!(
                            "a `{}` fault needs `target = \"<identity>\"` when there are \
                             several participants",
                            step.fault.kind()
                        ),
                    ))
                }
                (None, _) => {}
            }
            if step.duration.is_some() && step.fault.is_instant() {
                return Err((
                    table.clone(),
                    format!(
                        "a `{}` fault happens at once, so `for` means nothing on it; remove `for` \
                         (faults that last: partition, signal-proxy, toxic, media, mute, \
                         server-kill, node-kill, node-drain, redis-kill)",
                        step.fault.kind()
                    ),
                ));
            }
            step.fault.check().map_err(|m| (table.clone(), m))?;
            self.check_track_fault(step).map_err(|m| (table.clone(), m))?;
            self.check_cluster_fault(&step.fault).map_err(|m| (table, m))?;
        }
        self.check_cluster()?;
        self.check_server(fault_spans)?;
        for exp in &self.expectations {
            let span = exp.span();
            for name in exp.get_ref().participants() {
                known(name).map_err(|m| (span.clone(), m))?;
            }
            let publishes = |who: &str, track: &Option<TrackSpec>| {
                let tracks = self.tracks_of(who);
                match track {
                    Some(t) => tracks.contains(t),
                    None => !tracks.is_empty(),
                }
            };
            match exp.get_ref() {
                Expectation::MediaGap { from: who, track, .. }
                | Expectation::MediaFlowing { from: who, track, .. }
                | Expectation::TrackRepublished { participant: who, track }
                    if !publishes(who, track) =>
                {
                    let what = track.map_or("any track".to_owned(), |t| format!("a {t:?} track"));
                    return Err((
                        span,
                        format!(
                            "this expectation is about {what} of `{who}`, who publishes none: \
                             give `{who}` `tracks = [\"audio\", \"video\"]`"
                        ),
                    ));
                }
                _ => {}
            }
            if let Expectation::DataDelivered { from, .. } = exp.get_ref() {
                if self.participant(from).is_some_and(|p| p.publish.is_none()) {
                    return Err((
                        span,
                        format!("`data-delivered` from `{from}` needs a `publish` block on that participant"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks a `mute` or `publish-track` step against what its target publishes: a mute
    /// needs the track (from `tracks` or an earlier `publish-track`), a publish must be new.
    fn check_track_fault(&self, step: &FaultStep) -> Result<(), String> {
        let (track, publish) = match &step.fault {
            Fault::Mute { track } => (*track, false),
            Fault::PublishTrack { track } => (*track, true),
            _ => return Ok(()),
        };
        let target = match &step.target {
            Some(t) => self.participant(t.get_ref()),
            None => self.participants.first(),
        };
        let Some(target) = target else { return Ok(()) };
        let who = target.identity.get_ref();
        let published_before = self.faults.iter().any(|f| {
            f.at < step.at
                && f.fault == (Fault::PublishTrack { track })
                && f.target.as_ref().is_none_or(|t| t.get_ref() == who)
        });
        let has = target.tracks.contains(&track) || published_before;
        match (publish, has) {
            (false, false) => Err(format!(
                "`{who}` publishes no {track:?} track to mute: add it to its `tracks`, or \
                 publish it with an earlier `publish-track`"
            )),
            (true, true) => Err(format!(
                "`{who}` already publishes a {track:?} track (one per kind): remove it from its \
                 `tracks`, or drop this `publish-track`"
            )),
            _ => Ok(()),
        }
    }

    /// Checks the `[cluster]` table and the participants' `node`s.
    /// Checks the `[server]` table against a `[cluster]`, and that a relay-only firewall
    /// has a relay to let through.
    fn check_server(&self, fault_spans: &[Range<usize>]) -> Result<(), (Range<usize>, String)> {
        if let (Some(server), Some(_)) = (&self.server, &self.cluster) {
            return Err((
                server.span(),
                "`[server]` describes the one livekit-server of a run; a `[cluster]`'s nodes \
                 run on loopback with their defaults: remove one of the two tables"
                    .into(),
            ));
        }
        let turn = self.server.as_ref().is_some_and(|s| s.get_ref().turn);
        let relay_only = self
            .participants
            .iter()
            .filter(|p| p.firewall == Some(Firewall::RelayOnly))
            .map(|p| p.identity.span())
            .chain(
                self.faults
                    .iter()
                    .zip(fault_spans)
                    .filter(|(step, _)| {
                        step.fault == (Fault::Firewall { rule: Firewall::RelayOnly })
                    })
                    .map(|(_, span)| span.clone()),
            )
            .next();
        match relay_only {
            Some(span) if !turn => Err((
                span,
                "a `relay-only` firewall lets only the TURN relay through, and the server has \
                 none: add `[server]` with `turn = true`"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn check_cluster(&self) -> Result<(), (Range<usize>, String)> {
        let Some(cluster) = &self.cluster else {
            return match self.participants.iter().find_map(|p| p.node.as_ref()) {
                Some(node) => Err((
                    node.span(),
                    "`node` only means something in a scenario with a `[cluster]` table".into(),
                )),
                None => Ok(()),
            };
        };
        let nodes = *cluster.nodes.get_ref();
        if !(1..=MAX_NODES).contains(&nodes) {
            return Err((
                cluster.nodes.span(),
                format!("a cluster has 1 to {MAX_NODES} nodes, not {nodes}"),
            ));
        }
        let in_range = |n: &Spanned<usize>, what: &str| {
            if *n.get_ref() < nodes {
                Ok(())
            } else {
                Err((
                    n.span(),
                    format!(
                        "{what} {} does not exist: the cluster's nodes are 0 to {}",
                        n.get_ref(),
                        nodes - 1
                    ),
                ))
            }
        };
        if let Some(room_node) = &cluster.room_node {
            in_range(room_node, "`room_node`")?;
        }
        for node in self.participants.iter().filter_map(|p| p.node.as_ref()) {
            in_range(node, "node")?;
        }
        if self.lanes.contains(&Lane::Sim) {
            return Err((
                cluster.nodes.span(),
                "a `[cluster]` scenario runs on the real lane only (the simulation has one \
                 server): write `lanes = [\"real\"]`"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks that a cluster fault has a cluster and names one of its nodes, and that a
    /// cluster scenario does not use the single server's faults.
    fn check_cluster_fault(&self, fault: &Fault) -> Result<(), String> {
        match (&self.cluster, fault) {
            (None, f) if f.needs_cluster() => Err(format!(
                "a `{}` fault needs a `[cluster]` table (e.g. `[cluster]` with `nodes = 2`)",
                f.kind()
            )),
            (Some(_), Fault::ServerKill {}) => {
                Err("in a `[cluster]` scenario, kill a node instead: `type = \"node-kill\"` with \
                 `node = 0` (or `node = \"room\"`)"
                    .into())
            }
            (Some(cluster), f) => match f.node() {
                Some(NodeRef::Index(i)) if i >= *cluster.nodes.get_ref() => Err(format!(
                    "node {i} does not exist: the cluster's nodes are 0 to {}",
                    cluster.nodes.get_ref().saturating_sub(1)
                )),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}
