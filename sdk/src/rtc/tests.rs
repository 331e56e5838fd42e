//! Two [`PeerConnection`]s talking to each other over real UDP on 127.0.0.1: one offers as a
//! publisher, the other answers as a subscriber, candidates travel only by trickle (the test
//! strips them from the SDPs), and every wait is bounded.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use tokio::time::timeout;

use super::*;
use crate::net::TokioNetwork;

/// Generous bound for anything that happens on loopback.
const WAIT: Duration = Duration::from_secs(20);
/// How long a dead peer may take to be noticed: str0m's ICE timers plus `FAILED_AFTER`.
const NOTICE_DEATH: Duration = Duration::from_secs(60);
const FAILED_AFTER: Duration = Duration::from_secs(1);

/// One side of the test: the handle, its events, and events seen but not consumed yet.
struct Side {
    name: &'static str,
    pc: PeerConnection,
    events: mpsc::UnboundedReceiver<PcEvent>,
    unconsumed: VecDeque<PcEvent>,
}

impl Side {
    async fn new(name: &'static str, role: PcRole) -> anyhow::Result<Side> {
        let config = PcConfig { failed_after: FAILED_AFTER, ..PcConfig::new(role, Vec::new()) };
        let (pc, events) =
            PeerConnection::new(config, Arc::new(TokioNetwork), Ipv4Addr::LOCALHOST.into()).await?;
        Ok(Side { name, pc, events, unconsumed: VecDeque::new() })
    }

    /// The first event (seen earlier or arriving within `within`) that `wanted` accepts.
    async fn expect(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&PcEvent) -> bool,
    ) -> anyhow::Result<PcEvent> {
        if let Some(i) = self.unconsumed.iter().position(&wanted) {
            return Ok(self.unconsumed.remove(i).expect("index from position"));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if wanted(&event) => return Ok(event),
                Ok(Some(event)) => self.unconsumed.push_back(event),
                Ok(None) => bail!("{}: event stream ended while waiting for {what}", self.name),
                Err(_) => bail!(
                    "{}: expected {what} within {within:?}; saw {:?}; state {:?}",
                    self.name,
                    self.unconsumed,
                    self.pc.state()
                ),
            }
        }
    }

    async fn expect_state(&mut self, state: PcState, within: Duration) -> anyhow::Result<()> {
        self.expect(&format!("{state:?}"), within, |e| *e == PcEvent::StateChanged(state))
            .await
            .map(drop)
    }

    async fn local_candidate(&mut self) -> anyhow::Result<String> {
        match self
            .expect("a local candidate", WAIT, |e| matches!(e, PcEvent::LocalCandidate { .. }))
            .await?
        {
            PcEvent::LocalCandidate { candidate_init } => Ok(candidate_init),
            other => bail!("expected a local candidate, got {other:?}"),
        }
    }

    async fn expect_data(&mut self, kind: DataChannelKind, payload: &[u8]) -> anyhow::Result<()> {
        let what = format!("{payload:?} on {}", kind.label());
        self.expect(
            &what,
            WAIT,
            |e| matches!(e, PcEvent::Data { kind: k, payload: p } if *k == kind && p == payload),
        )
        .await
        .map(drop)
    }
}

/// Removes `a=candidate` lines, so that candidates can only arrive by trickle.
fn without_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n').filter(|line| !line.starts_with("a=candidate")).collect()
}

/// Offer, answer, trickle both ways; returns when both sides report `expected`.
async fn negotiate(
    publisher: &mut Side,
    subscriber: &mut Side,
    ice_restart: bool,
    expected: &[PcState],
) -> anyhow::Result<()> {
    for side in [&mut *publisher, &mut *subscriber] {
        side.unconsumed.retain(|e| !matches!(e, PcEvent::StateChanged(_)));
    }
    let offer = publisher.pc.create_offer(ice_restart).await?;
    let answer = subscriber.pc.answer_offer(without_candidates(&offer)).await?;
    publisher.pc.set_remote_answer(without_candidates(&answer)).await?;
    let from_publisher = publisher.local_candidate().await?;
    let from_subscriber = subscriber.local_candidate().await?;
    subscriber.pc.add_remote_candidate(from_publisher)?;
    publisher.pc.add_remote_candidate(from_subscriber)?;
    for state in expected {
        publisher.expect_state(*state, WAIT).await?;
        subscriber.expect_state(*state, WAIT).await?;
    }
    Ok(())
}

async fn connected_pair() -> anyhow::Result<(Side, Side)> {
    let mut publisher = Side::new("publisher", PcRole::Publisher).await?;
    let mut subscriber = Side::new("subscriber", PcRole::Subscriber).await?;
    negotiate(&mut publisher, &mut subscriber, false, &[PcState::Connecting, PcState::Connected])
        .await?;
    for side in [&mut publisher, &mut subscriber] {
        for kind in [DataChannelKind::Reliable, DataChannelKind::Lossy] {
            side.expect(&format!("{} open", kind.label()), WAIT, |e| {
                *e == PcEvent::ChannelOpen(kind)
            })
            .await?;
        }
    }
    Ok((publisher, subscriber))
}

/// Sends a batch each way on both channels and checks it all arrives (reliable: in order).
async fn exchange(publisher: &mut Side, subscriber: &mut Side, tag: &str) -> anyhow::Result<()> {
    for i in 0..50 {
        publisher.pc.send_data(DataChannelKind::Reliable, format!("{tag} p{i}").into_bytes())?;
        subscriber.pc.send_data(DataChannelKind::Reliable, format!("{tag} s{i}").into_bytes())?;
    }
    publisher.pc.send_data(DataChannelKind::Lossy, format!("{tag} lossy p").into_bytes())?;
    subscriber.pc.send_data(DataChannelKind::Lossy, format!("{tag} lossy s").into_bytes())?;
    for i in 0..50 {
        let next = |e: &PcEvent| matches!(e, PcEvent::Data { kind: DataChannelKind::Reliable, .. });
        let got = subscriber.expect("reliable data", WAIT, next).await?;
        let want = PcEvent::Data {
            kind: DataChannelKind::Reliable,
            payload: format!("{tag} p{i}").into_bytes(),
        };
        anyhow::ensure!(got == want, "subscriber: expected {want:?} next, got {got:?}");
        let got = publisher.expect("reliable data", WAIT, next).await?;
        let want = PcEvent::Data {
            kind: DataChannelKind::Reliable,
            payload: format!("{tag} s{i}").into_bytes(),
        };
        anyhow::ensure!(got == want, "publisher: expected {want:?} next, got {got:?}");
    }
    subscriber.expect_data(DataChannelKind::Lossy, format!("{tag} lossy p").as_bytes()).await?;
    publisher.expect_data(DataChannelKind::Lossy, format!("{tag} lossy s").as_bytes()).await?;
    Ok(())
}

/// Waits until the remote SCTP is reported to have all of the first `messages` reliable
/// messages (earlier, smaller counts may come first).
async fn expect_acked(side: &mut Side, messages: u64) -> anyhow::Result<()> {
    let what = format!("ReliableAcked {{ messages: {messages} }}");
    side.expect(&what, WAIT, |e| *e == PcEvent::ReliableAcked { messages }).await.map(drop)
}

#[test_log::test(tokio::test)]
async fn connects_exchanges_data_and_survives_an_ice_restart() -> anyhow::Result<()> {
    let (mut publisher, mut subscriber) = connected_pair().await?;
    assert_eq!(publisher.pc.state(), PcState::Connected);
    let mut labels: Vec<String> =
        publisher.pc.data_channels().await.into_iter().map(|(label, _)| label).collect();
    labels.sort();
    assert_eq!(labels, ["_lossy", "_reliable"]);
    assert!(matches!(publisher.pc.local_description().await, Some((SdpKind::Offer, _))));
    assert!(matches!(subscriber.pc.local_description().await, Some((SdpKind::Answer, _))));

    exchange(&mut publisher, &mut subscriber, "before").await?;
    expect_acked(&mut publisher, 50).await?;

    let ufrag =
        |sdp: Option<(SdpKind, String)>| sdp.and_then(|(_, s)| trickle::SdpFacts::of(&s).ufrag);
    let old_ufrag = ufrag(publisher.pc.local_description().await);
    negotiate(&mut publisher, &mut subscriber, true, &[PcState::Connecting, PcState::Connected])
        .await
        .context("ICE restart")?;
    let new_ufrag = ufrag(publisher.pc.local_description().await);
    assert_ne!(old_ufrag, new_ufrag, "an ICE restart offer carries new credentials");

    exchange(&mut publisher, &mut subscriber, "after").await?;
    expect_acked(&mut publisher, 100).await.context("counts go on across an ICE restart")?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn messages_the_remote_never_received_are_not_reported_acknowledged() -> anyhow::Result<()> {
    let (mut publisher, mut subscriber) = connected_pair().await?;
    exchange(&mut publisher, &mut subscriber, "before").await?;
    expect_acked(&mut publisher, 50).await?;
    drop(subscriber);
    for i in 0..5 {
        publisher
            .pc
            .send_data(DataChannelKind::Reliable, format!("into the void {i}").into_bytes())?;
    }
    publisher.expect_state(PcState::Disconnected, NOTICE_DEATH).await?;
    let acked_beyond =
        |e: &PcEvent| matches!(e, PcEvent::ReliableAcked { messages } if *messages > 50);
    assert!(
        !publisher.unconsumed.iter().any(acked_beyond),
        "messages sent to a vanished peer were reported acknowledged: {:?}",
        publisher.unconsumed
    );
    Ok(())
}

#[test_log::test(tokio::test)]
async fn a_vanished_peer_makes_the_other_disconnected_then_failed() -> anyhow::Result<()> {
    let (mut publisher, subscriber) = connected_pair().await?;
    drop(subscriber);
    publisher.expect_state(PcState::Disconnected, NOTICE_DEATH).await?;
    publisher.expect_state(PcState::Failed, FAILED_AFTER + WAIT).await?;
    assert_eq!(publisher.pc.state(), PcState::Failed);
    Ok(())
}

#[test_log::test(tokio::test)]
async fn close_ends_with_closed_and_the_remote_fails() -> anyhow::Result<()> {
    let (mut publisher, mut subscriber) = connected_pair().await?;
    publisher.pc.close();
    publisher.expect_state(PcState::Closed, WAIT).await?;
    // The task is gone: the stream ends, nothing follows Closed.
    let rest = timeout(WAIT, async {
        let mut rest = Vec::new();
        while let Some(event) = publisher.events.recv().await {
            rest.push(event);
        }
        rest
    })
    .await
    .context("the event stream should end after Closed")?;
    assert!(rest.iter().all(|e| !matches!(e, PcEvent::StateChanged(_))), "after Closed: {rest:?}");
    assert!(matches!(
        publisher.pc.send_data(DataChannelKind::Reliable, b"late".to_vec()),
        Err(RtcError::Closed)
    ));
    assert!(matches!(publisher.pc.create_offer(true).await, Err(RtcError::Closed)));
    subscriber.expect_state(PcState::Failed, WAIT).await?;
    Ok(())
}

#[test_log::test(tokio::test)]
async fn bad_input_is_an_error_not_a_panic() -> anyhow::Result<()> {
    let publisher = Side::new("publisher", PcRole::Publisher).await?;
    let subscriber = Side::new("subscriber", PcRole::Subscriber).await?;

    assert!(matches!(subscriber.pc.answer_offer("not sdp".into()).await, Err(RtcError::Sdp(_))));
    assert!(matches!(
        publisher.pc.set_remote_answer("v=0\r\n".into()).await,
        Err(RtcError::Sdp(_))
    ));
    assert!(matches!(
        publisher.pc.answer_offer(String::new()).await,
        Err(RtcError::WrongRole { .. })
    ));
    assert!(matches!(subscriber.pc.create_offer(false).await, Err(RtcError::WrongRole { .. })));
    assert!(matches!(
        publisher.pc.send_data(DataChannelKind::Lossy, vec![1]),
        Err(RtcError::ChannelNotOpen(DataChannelKind::Lossy))
    ));
    assert!(matches!(
        publisher.pc.add_remote_candidate("{\"candidate\":\"bogus\"}".into()),
        Err(RtcError::Candidate(_))
    ));

    // An offer without a fingerprint is refused, and str0m gives up on the session.
    let offer = publisher.pc.create_offer(false).await?;
    let no_fingerprint: String =
        offer.split_inclusive('\n').filter(|l| !l.starts_with("a=fingerprint")).collect();
    assert!(matches!(subscriber.pc.answer_offer(no_fingerprint).await, Err(RtcError::Sdp(_))));
    assert_eq!(subscriber.pc.state(), PcState::Failed);

    // The publisher is unharmed: a good answer still applies.
    let mut subscriber = Side::new("subscriber 2", PcRole::Subscriber).await?;
    let answer = subscriber.pc.answer_offer(offer).await?;
    publisher.pc.set_remote_answer(answer).await?;
    subscriber.expect_state(PcState::Connected, WAIT).await?;
    Ok(())
}
