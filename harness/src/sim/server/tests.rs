//! The simulated server against a bare signalling client (no WebRTC): the protocol facts a
//! full SDK cannot show — refusals, the JoinResponse's fields, the join deadline, resumes of
//! unknown participants, and sockets closed before any peer connection connected.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{self as proto, signal_request, signal_response};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use turmoil::net::TcpStream;

use crate::sim::{ClientContext, Sim};

type Ws = WebSocketStream<TcpStream>;

async fn open(query: &str) -> anyhow::Result<Ws> {
    let stream = TcpStream::connect(("livekit", 7880)).await?;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://livekit:7880/rtc?{query}"), stream).await?;
    Ok(ws)
}

fn query(ctx: &ClientContext, room: &str, identity: &str, extra: &str) -> anyhow::Result<String> {
    Ok(format!("access_token={}&protocol=17{extra}", ctx.token(room, identity)?))
}

/// The next server message (control frames skipped); `None` once the socket closed.
async fn next(ws: &mut Ws) -> anyhow::Result<Option<signal_response::Message>> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    let response = proto::SignalResponse::decode(bytes.as_ref())?;
                    return Ok(response.message);
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), read).await.context("no server message")?
}

async fn send(ws: &mut Ws, message: signal_request::Message) -> anyhow::Result<()> {
    let bytes = proto::SignalRequest { message: Some(message) }.encode_to_vec();
    ws.send(WsMessage::Binary(bytes.into())).await?;
    Ok(())
}

async fn http_get(target: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("livekit", 7880)).await?;
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: livekit\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

fn run(seed: u64, test: impl std::future::Future<Output = anyhow::Result<()>> + 'static) {
    let mut sim = Sim::new(seed);
    sim.client("raw", |_| test);
    if let Err(e) = sim.run() {
        panic!("{e}");
    }
}

fn with_context<F, Fut>(seed: u64, test: F)
where
    F: FnOnce(ClientContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + 'static,
{
    let mut sim = Sim::new(seed);
    sim.client("raw", test);
    if let Err(e) = sim.run() {
        panic!("{e}");
    }
}

#[test_log::test]
fn a_bad_token_is_refused_with_401_and_validate_says_why() {
    run(1, async {
        let refused = http_get("/rtc?access_token=not-a-jwt&protocol=17").await?;
        ensure!(refused.starts_with("HTTP/1.1 401"), "expected HTTP 401, got {refused:?}");
        let validated = http_get("/rtc/validate?access_token=not-a-jwt").await?;
        ensure!(
            validated.starts_with("HTTP/1.1 401") && validated.contains("invalid token"),
            "expected 401 with an explanation, got {validated:?}"
        );
        Ok(())
    });
}

#[test_log::test]
fn a_join_is_answered_like_the_real_server() {
    with_context(2, |ctx| async move {
        let mut ws = open(&query(&ctx, "raw-room", "raw", "")?).await?;
        let Some(signal_response::Message::Join(join)) = next(&mut ws).await? else {
            bail!("expected a JoinResponse first");
        };
        ensure!(join.subscriber_primary && join.ping_interval == 5 && join.ping_timeout == 15);
        let me = join.participant.context("participant")?;
        ensure!(me.identity == "raw" && me.sid.starts_with("PA_"), "participant {me:?}");
        ensure!(join.room.is_some_and(|r| r.name == "raw-room" && r.sid.starts_with("RM_")));
        ensure!(join.server_info.is_some_and(|s| s.version == "1.13.5"));
        // pkg/service/roommanager.go `rtcSessionWorker`: a fresh token as the session starts.
        let Some(signal_response::Message::RefreshToken(token)) = next(&mut ws).await? else {
            bail!("expected a RefreshToken after the JoinResponse");
        };
        let config = crate::sim::server::ServerConfig::default();
        let now = crate::sim::wall_clock();
        let claims = crate::token::verify_at(&token, &config.api_key, &config.api_secret, now)
            .map_err(anyhow::Error::msg)?;
        ensure!(claims.sub == "raw" && claims.video.room == "raw-room" && claims.video.room_join);
        // Ten minutes of simulated time from now.
        let expires = std::time::Duration::from_secs(u64::try_from(claims.exp)?);
        let ten_minutes = std::time::Duration::from_secs(600);
        ensure!(
            expires <= now + ten_minutes
                && now + ten_minutes < expires + std::time::Duration::from_secs(2),
            "expires at {expires:?}, read at {now:?}"
        );
        let Some(signal_response::Message::Offer(offer)) = next(&mut ws).await? else {
            bail!("expected the subscriber offer after the JoinResponse");
        };
        ensure!(offer.sdp.contains("m=application"), "a data-channel offer: {}", offer.sdp);
        let Some(signal_response::Message::Trickle(trickle)) = next(&mut ws).await? else {
            bail!("expected the server's candidate after the offer");
        };
        ensure!(trickle.target == proto::SignalTarget::Subscriber as i32);
        ensure!(trickle.candidate_init.contains("typ host"), "{}", trickle.candidate_init);
        send(&mut ws, signal_request::Message::PingReq(proto::Ping { timestamp: 1234, rtt: 0 }))
            .await?;
        let Some(signal_response::Message::PongResp(pong)) = next(&mut ws).await? else {
            bail!("expected a PongResp to a PingReq");
        };
        ensure!(pong.last_ping_timestamp == 1234);
        Ok(())
    });
}

#[test_log::test]
fn a_participant_whose_peer_connection_never_connects_is_removed_after_a_minute() {
    with_context(3, |ctx| async move {
        let mut ws = open(&query(&ctx, "stuck", "raw", "")?).await?;
        let joined = tokio::time::Instant::now();
        loop {
            match next(&mut ws).await? {
                Some(signal_response::Message::Leave(leave)) => {
                    ensure!(leave.action() == proto::leave_request::Action::Disconnect);
                    ensure!(leave.reason() == proto::DisconnectReason::JoinFailure);
                    break;
                }
                Some(_) => {}
                None => bail!("the socket closed without a Leave"),
            }
        }
        let waited = joined.elapsed();
        ensure!(
            (Duration::from_secs(60)..Duration::from_secs(61)).contains(&waited),
            "expected the JOIN_FAILURE leave a minute after the join, got it after {waited:?}"
        );
        ensure!(next(&mut ws).await?.is_none(), "the socket should close after the leave");
        ensure!(ctx.server().list_participants("stuck").await?.is_empty());
        Ok(())
    });
}

#[test_log::test]
fn closing_the_signal_socket_before_connecting_removes_the_participant_at_once() {
    with_context(4, |ctx| async move {
        let mut ws = open(&query(&ctx, "gone", "raw", "")?).await?;
        ensure!(matches!(next(&mut ws).await?, Some(signal_response::Message::Join(_))));
        ensure!(ctx.server().list_participants("gone").await?.len() == 1);
        ws.close(None).await?;
        // The server reads the close within a few ticks.
        for _ in 0..100 {
            if ctx.server().list_participants("gone").await?.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("the participant should be removed once its socket closed before connecting")
    });
}

#[test_log::test]
fn a_resume_of_an_unknown_participant_is_told_to_reconnect_fully() {
    with_context(5, |ctx| async move {
        let mut ws = open(&query(&ctx, "nobody", "raw", "&reconnect=1&sid=PA_unknown")?).await?;
        let Some(signal_response::Message::Leave(leave)) = next(&mut ws).await? else {
            bail!("expected a Leave to a resume of an unknown participant");
        };
        ensure!(leave.action() == proto::leave_request::Action::Reconnect);
        ensure!(leave.reason() == proto::DisconnectReason::StateMismatch);
        ensure!(next(&mut ws).await?.is_none(), "the socket should close after the leave");
        Ok(())
    });
}

/// The first message `pick` accepts, skipping the others.
async fn first<T>(
    ws: &mut Ws,
    what: &str,
    pick: impl Fn(signal_response::Message) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        match next(ws).await? {
            Some(message) => {
                if let Some(found) = pick(message) {
                    return Ok(found);
                }
            }
            None => bail!("the socket closed before {what}"),
        }
    }
}

/// A new session of `identity` in `room`: its socket and JoinResponse.
async fn join(
    ctx: &ClientContext,
    room: &str,
    identity: &str,
) -> anyhow::Result<(Ws, proto::JoinResponse)> {
    let mut ws = open(&query(ctx, room, identity, "")?).await?;
    let Some(signal_response::Message::Join(join)) = next(&mut ws).await? else {
        bail!("expected a JoinResponse first");
    };
    Ok((ws, join))
}

fn switch_candidate_protocol(protocol: proto::CandidateProtocol) -> signal_request::Message {
    signal_request::Message::Simulate(proto::SimulateScenario {
        scenario: Some(proto::simulate_scenario::Scenario::SwitchCandidateProtocol(
            protocol as i32,
        )),
    })
}

fn force_relay(config: Option<proto::ClientConfiguration>) -> Option<proto::ClientConfigSetting> {
    config.map(|c| c.force_relay())
}

/// ForceTls on a server without TURN (pkg/rtc/room.go → transportmanager.go `ICERestart`,
/// participant.go `OnICEConfigChanged`, roommanager.go `iceConfigCache`): the subscriber
/// restarts ICE with its UDP candidate (nothing is filtered), and the session's resume and
/// the identity's next join are told to force relay.
#[test_log::test]
fn forcing_tls_restarts_ice_with_every_candidate_and_forces_relay() {
    use proto::ClientConfigSetting::{Enabled, Unset};
    with_context(6, |ctx| async move {
        let (mut ws, joined) = join(&ctx, "tls", "raw").await?;
        ensure!(force_relay(joined.client_configuration) == Some(Unset));
        let sid = joined.participant.context("participant")?.sid;
        send(&mut ws, switch_candidate_protocol(proto::CandidateProtocol::Tls)).await?;
        first(&mut ws, "the ICE-restart offer", |m| {
            matches!(m, signal_response::Message::Offer(offer) if offer.id == 2).then_some(())
        })
        .await?;
        let Some(signal_response::Message::Trickle(trickle)) = next(&mut ws).await? else {
            bail!("expected the server's candidate after the ICE-restart offer");
        };
        ensure!(trickle.candidate_init.contains(" udp "), "{}", trickle.candidate_init);

        let mut resumed =
            open(&query(&ctx, "tls", "raw", &format!("&reconnect=1&sid={sid}"))?).await?;
        let Some(signal_response::Message::Reconnect(reconnect)) = next(&mut resumed).await? else {
            bail!("expected a ReconnectResponse first");
        };
        ensure!(force_relay(reconnect.client_configuration) == Some(Enabled));
        ensure!(reconnect.ice_servers.is_empty(), "no TURN: {:?}", reconnect.ice_servers);

        let (_ws, rejoined) = join(&ctx, "tls", "raw").await?;
        ensure!(force_relay(rejoined.client_configuration) == Some(Enabled));
        ensure!(rejoined.ice_servers.is_empty(), "no TURN: {:?}", rejoined.ice_servers);
        Ok(())
    });
}

/// The TLS preference ends when the identity switches back to UDP, or 5 minutes after it
/// was set (pkg/utils/iceconfigcache.go).
#[test_log::test]
fn a_forced_tls_preference_ends_with_udp_or_after_five_minutes() {
    use proto::ClientConfigSetting::{Enabled, Unset};
    with_context(7, |ctx| async move {
        let (mut ws, _) = join(&ctx, "tls-ends", "raw").await?;
        send(&mut ws, switch_candidate_protocol(proto::CandidateProtocol::Tls)).await?;
        let (mut ws, joined) = join(&ctx, "tls-ends", "raw").await?;
        ensure!(force_relay(joined.client_configuration) == Some(Enabled));
        send(&mut ws, switch_candidate_protocol(proto::CandidateProtocol::Udp)).await?;
        let (mut ws, joined) = join(&ctx, "tls-ends", "raw").await?;
        ensure!(force_relay(joined.client_configuration) == Some(Unset), "UDP clears it");

        send(&mut ws, switch_candidate_protocol(proto::CandidateProtocol::Tls)).await?;
        let forced = tokio::time::Instant::now();
        let (_ws, joined) = join(&ctx, "tls-ends", "raw").await?;
        ensure!(force_relay(joined.client_configuration) == Some(Enabled));
        tokio::time::sleep_until(forced + Duration::from_secs(5 * 60 + 1)).await;
        let (_ws, joined) = join(&ctx, "tls-ends", "raw").await?;
        ensure!(force_relay(joined.client_configuration) == Some(Unset), "expired");
        Ok(())
    });
}
