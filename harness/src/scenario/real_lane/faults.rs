//! The real lane's faults: how each fault of a scenario is started and healed on the real
//! server, the killable proxies, toxiproxy, the socket wrappers and the kernel links (the
//! table in the [`super`] module doc).

use super::*;

impl Runner<'_> {
    /// A participant's client link, when the kernel carries its faults.
    pub(super) fn link(&self, c: &Participant) -> Option<&Link> {
        Some(&self.topology.as_ref()?.clients()[c.link?])
    }

    pub(super) fn client(&self, step: &FaultStep) -> Option<&Participant> {
        match &step.target {
            Some(t) => self.clients.iter().find(|c| c.identity == *t.get_ref()),
            None => self.clients.first(),
        }
    }

    pub(super) async fn start_fault(&mut self, index: usize) -> Result<(), RunError> {
        let step = &self.scenario.faults[index];
        let label = label(step);
        let fail = |why: String, log: String| RunError::Fault {
            index,
            label: label.clone(),
            action: "started",
            why,
            log,
        };
        let log = self.server_log();
        // Stamped before acting: what the fault causes can be recorded while it is applied.
        let at = self.started.elapsed();
        let client = self.client(step);
        let on_kernel = client.is_some_and(|c| c.link.is_some());
        let target = |what: &str| {
            client.ok_or_else(|| fail(format!("{what} needs a target participant"), log.clone()))
        };
        match &step.fault {
            Fault::Partition {} => {
                let c = target("a partition")?;
                if let Some(link) = self.link(c) {
                    // The kernel drops everything on the client's link: signalling and media.
                    link.partition(Scope::Link)
                        .await
                        .map_err(|e| fail(e.to_string(), log.clone()))?;
                } else {
                    let net = sockets(c).map_err(|why| fail(why, log.clone()))?;
                    c.proxy.pause().await.map_err(|e| fail(e.to_string(), log.clone()))?;
                    net.refuse_new_signalling();
                    net.partition_media(net::Direction::Both);
                }
            }
            Fault::SignalProxy { mode, rate } => {
                let c = target("a signal-proxy fault")?;
                let done = match mode {
                    ProxyMode::Kill => c.proxy.kill().await,
                    ProxyMode::BlackHole => c.proxy.black_hole().await,
                    ProxyMode::Pause => c.proxy.pause().await,
                    ProxyMode::RefuseNew => c.proxy.refuse_new().await,
                    ProxyMode::Throttle => c.proxy.throttle(*rate),
                };
                done.map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::Toxic { toxic, stream, toxicity } => {
                let c = target("a toxic")?;
                let proxy = c.toxic_proxy.as_ref().ok_or_else(|| {
                    fail("the participant has no toxiproxy proxy".into(), log.clone())
                })?;
                let toxic = toxiproxy::Toxic::new(toxic.clone(), *stream)
                    .named(&format!("fault-{index}"))
                    .with_toxicity(*toxicity);
                let guard =
                    proxy.add_toxic(toxic).await.map_err(|e| fail(e.to_string(), log.clone()))?;
                self.toxics.push((index, guard));
            }
            Fault::Media(media) => {
                let c = target("a media fault")?;
                let direction = media.direction;
                if let Some(link) = self.link(c) {
                    if media.needs_emulator() || media.delay.is_some() {
                        // The whole condition, loss included, in the user-space emulator.
                        let seed = self.seed.wrapping_add(index as u64);
                        link.emulate(direction, Scope::Media, media.condition(), seed)
                            .await
                            .map_err(|e| fail(e.to_string(), log.clone()))?;
                    } else if let Some(percent) = media.loss_percent {
                        // Whole percent: nftables draws numgen mod 100.
                        let percent = percent.round().clamp(0.0, 100.0) as u8;
                        link.loss(direction, Scope::Media, percent)
                            .await
                            .map_err(|e| fail(e.to_string(), log.clone()))?;
                    }
                } else {
                    let net = sockets(c).map_err(|why| fail(why, log.clone()))?;
                    if let Some(percent) = media.loss_percent {
                        net.set_media_loss(direction, percent)
                            .map_err(|e| fail(e.to_string(), log.clone()))?;
                    }
                    if let Some(delay) = media.delay {
                        net.set_media_delay(direction, delay);
                    }
                }
            }
            Fault::Firewall { rule } => {
                let c = target("a firewall")?;
                self.firewall(self.link(c), c.net.as_ref(), *rule)
                    .await
                    .map_err(|why| fail(why, log.clone()))?;
            }
            Fault::NetworkChange {} => {
                let c = target("a network change")?;
                if let Some(link) = self.link(c) {
                    link.change_address().await.map_err(|e| fail(e.to_string(), log.clone()))?;
                } else {
                    let net = sockets(c).map_err(|why| fail(why, log.clone()))?;
                    let changes = self.networks_changed.fetch_add(1, Ordering::Relaxed);
                    let ip = Ipv4Addr::new(127, 0, 0, changes.saturating_add(2));
                    net.change_network(IpAddr::V4(ip));
                }
            }
            Fault::ServerKill {} => {
                let server = self.backend.server().ok_or_else(|| {
                    fail("a cluster scenario kills nodes, not the server".into(), log.clone())
                })?;
                server.kill().await.map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::NodeKill { .. } | Fault::NodeRestart { .. } | Fault::NodeDrain { .. } => {
                let named = step.fault.node().unwrap_or(NodeRef::Room);
                let node = self
                    .backend
                    .resolve(named, &self.room)
                    .await
                    .map_err(|why| fail(why, log.clone()))?;
                if let Fault::NodeRestart { .. } = step.fault {
                    self.say(&format!("restarting node {node} on its ports"));
                }
                let cluster = self
                    .backend
                    .cluster()
                    .ok_or_else(|| fail("the run has no cluster".into(), log.clone()))?;
                let done = match &step.fault {
                    Fault::NodeKill { .. } => cluster.kill(node).await,
                    Fault::NodeDrain { .. } => cluster.drain(node).await,
                    _ => cluster.restart(node).await,
                };
                done.map_err(|e| fail(e.to_string(), log.clone()))?;
                self.fault_nodes.push((index, node));
            }
            Fault::RedisKill {} => {
                let cluster = self
                    .backend
                    .cluster()
                    .ok_or_else(|| fail("the run has no cluster".into(), log.clone()))?;
                cluster.kill_redis();
            }
            Fault::RemoveParticipant {} => {
                let c = target("remove-participant")?;
                self.backend
                    .room_service()
                    .map_err(|e| fail(e.to_string(), log.clone()))?
                    .remove_participant(&self.room, &c.identity)
                    .await
                    .map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::DeleteRoom {} => {
                self.backend
                    .room_service()
                    .map_err(|e| fail(e.to_string(), log.clone()))?
                    .delete_room(&self.room)
                    .await
                    .map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::Simulate { scenario } => {
                let c = target("simulate")?;
                c.client.simulate(*scenario).await.map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::Close {} => {
                let c = target("close")?;
                c.client.close().await.map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::Mute { track } => {
                let c = target("mute")?;
                c.client
                    .mute_track(track.source(), true)
                    .await
                    .map_err(|e| fail(e.to_string(), log.clone()))?;
            }
            Fault::PublishTrack { track } => {
                let c = target("publish-track")?;
                // An SDK may hold the call until an episode under way ends: the timeline goes
                // on, and the record shows when the track was published.
                let client = c.client.clone();
                let (source, who) = (track.source(), c.identity.clone());
                tokio::spawn(async move {
                    if let Err(error) = client.publish_track(source).await {
                        tracing::warn!(%who, source = source.name(), %error, "publish-track failed");
                    }
                });
            }
        }
        if let (Fault::PublishTrack { track }, Some(who)) = (&step.fault, &step.target) {
            if let Some(c) = self.clients.iter_mut().find(|c| c.identity == *who.get_ref()) {
                c.record.tracks.push(track.source());
            }
        }
        let record = FaultRecord {
            index,
            kind: step.fault.kind(),
            label,
            target: step.target.as_ref().map(|t| t.get_ref().clone()),
            started: at,
            healed: step.fault.is_instant().then_some(at),
            // The socket wrapper refuses the target's new signalling connections at once (a
            // kernel partition drops them instead).
            refuses_connections: step.fault == Fault::Partition {} && !on_kernel,
            mutes: step.fault.mutes(),
        };
        if let Some(o) = self.observer.as_mut() {
            o(Progress::FaultStarted(&record));
        }
        self.faults.push(record);
        Ok(())
    }

    pub(super) async fn heal_fault(&mut self, index: usize) -> Result<(), RunError> {
        let step = &self.scenario.faults[index];
        let label = label(step);
        let log = self.server_log();
        let fail = |why: String| RunError::Fault {
            index,
            label: label.clone(),
            action: "healed",
            why,
            log: log.clone(),
        };
        let client = self.client(step);
        match (&step.fault, client) {
            (Fault::Partition {} | Fault::Media { .. } | Fault::Firewall { .. }, Some(c))
                if self.link(c).is_some() =>
            {
                if let Some(link) = self.link(c) {
                    // What the emulator did, said before the heal clears its counters.
                    let done = emulated(link);
                    link.heal().await.map_err(|e| fail(e.to_string()))?;
                    if let Some(done) = done {
                        self.say(&format!("link emulator on {}'s media: {done}", c.identity));
                    }
                }
            }
            (Fault::Partition {}, Some(c)) => {
                let net = sockets(c).map_err(&fail)?;
                net.heal_signalling();
                net.heal_media();
                c.proxy.resume().await.map_err(|e| fail(e.to_string()))?;
            }
            (Fault::SignalProxy { mode: ProxyMode::Throttle, .. }, Some(c)) => {
                c.proxy.throttle(None).map_err(|e| fail(e.to_string()))?;
            }
            (Fault::SignalProxy { .. }, Some(c)) => {
                c.proxy.heal().await.map_err(|e| fail(e.to_string()))?;
            }
            (Fault::Toxic { .. }, _) => {
                if let Some(pos) = self.toxics.iter().position(|(i, _)| *i == index) {
                    let (_, guard) = self.toxics.remove(pos);
                    guard.remove().await.map_err(|e| fail(e.to_string()))?;
                }
            }
            (Fault::Media { .. } | Fault::Firewall { .. }, Some(c)) => {
                sockets(c).map_err(&fail)?.heal_media()
            }
            (Fault::Mute { track }, Some(c)) => {
                c.client
                    .mute_track(track.source(), false)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
            (Fault::ServerKill {}, _) => {
                self.say("restarting livekit-server on the same ports");
                let server = self
                    .backend
                    .server()
                    .ok_or_else(|| fail("a cluster scenario kills nodes, not the server".into()))?;
                server.restart().await.map_err(|e| fail(e.to_string()))?;
            }
            (Fault::NodeKill { .. } | Fault::NodeDrain { .. }, _) => {
                let node = self.fault_nodes.iter().find(|(i, _)| *i == index).map(|(_, n)| *n);
                let Some(node) = node else {
                    return Err(fail("the fault's node is unknown".into()));
                };
                let restart = matches!(step.fault, Fault::NodeKill { .. });
                if restart {
                    self.say(&format!("restarting node {node} on its ports"));
                }
                let cluster =
                    self.backend.cluster().ok_or_else(|| fail("the run has no cluster".into()))?;
                if restart {
                    cluster.restart(node).await.map_err(|e| fail(e.to_string()))?;
                } else if cluster.node(node).is_ok_and(|n| n.ensure_running().is_ok()) {
                    // The grace period is over and participants are still there.
                    cluster.kill(node).await.map_err(|e| fail(e.to_string()))?;
                }
            }
            (Fault::RedisKill {}, _) => {
                self.say("restarting Redis (empty) on its port");
                let cluster =
                    self.backend.cluster().ok_or_else(|| fail("the run has no cluster".into()))?;
                cluster.restart_redis().await.map_err(|e| fail(e.to_string()))?;
            }
            _ => {}
        }
        let at = self.started.elapsed();
        if let Some(pos) = self.faults.iter().position(|f| f.index == index) {
            self.faults[pos].healed = Some(at);
            let record = self.faults[pos].clone();
            if let Some(o) = self.observer.as_mut() {
                o(Progress::FaultHealed(&record));
            }
        }
        Ok(())
    }
}

/// The fault wrapper of a participant's sockets (faultline-sdk's only; [`check_sdks`]
/// refuses socket faults for other SDKs before a run starts).
impl Runner<'_> {
    /// Puts up a firewall on a participant's network: on its link in the kernel, else on
    /// its sockets.
    pub(super) async fn firewall(
        &self,
        link: Option<&Link>,
        net: Option<&NetFaults>,
        rule: Firewall,
    ) -> Result<(), String> {
        let relay = match rule {
            Firewall::UdpBlocked => None,
            Firewall::RelayOnly => Some(self.backend.relay().ok_or_else(|| {
                "a relay-only firewall needs the server's TURN relay, and it has none".to_string()
            })?),
        };
        match (link, net) {
            (Some(link), _) => {
                link.block_udp(relay.map(|r| r.port())).await.map_err(|e| e.to_string())
            }
            (None, Some(net)) => {
                match relay {
                    Some(relay) => net.block_udp_except(relay),
                    None => net.block_udp(net::Direction::Both),
                }
                Ok(())
            }
            (None, None) => Err("the participant has neither a link nor wrapped sockets".into()),
        }
    }
}

fn sockets(c: &Participant) -> Result<&NetFaults, String> {
    c.net.as_ref().ok_or_else(|| {
        format!(
            "{} runs the {} SDK, whose sockets faultline does not own",
            c.identity,
            c.client.sdk()
        )
    })
}

/// What the link emulator did to a link's traffic, both ways, in a line; `None` if it never
/// touched the link.
fn emulated(link: &Link) -> Option<String> {
    let ways = [(net::Direction::Outbound, "to the server"), (net::Direction::Inbound, "from it")];
    let parts: Vec<String> = ways
        .into_iter()
        .filter_map(|(direction, name)| {
            let s = link.emulated(direction)?;
            let share = |n: u64| 100.0 * n as f64 / s.offered.max(1) as f64;
            Some(format!(
                "{name} {} packets, {} lost ({:.1} %), {} dropped by the queue, {} duplicated",
                s.offered,
                s.lost,
                share(s.lost),
                s.queue_dropped,
                s.duplicated
            ))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}
