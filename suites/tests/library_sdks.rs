//! Each library scenario (`fixtures/scenarios/`) for the upstream Rust SDK, livekit-client
//! and the Go SDK, on the real lane, as `faultline matrix` runs it: every participant on that
//! SDK, judged by the scenario's own expectations and the invariants.
//!
//! Faults on a participant's own connection reach these SDKs through the kernel (network
//! namespaces), so these tests need Linux and root like `suites/tests/netns.rs`; elsewhere
//! such a cell is refused and the test fails naming why.
//!
//! The table below is what each SDK does today. An SDK that cannot take what a scenario asks
//! is refused before anything starts (and the refusal must keep naming why); where an SDK
//! behaves differently from what a scenario expects, the difference is named and must keep
//! happening exactly so — a difference that goes away, or a new one, fails the test, so the
//! table (and the README's matrix) stays true.

mod at_once;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Result};
use faultline::client::Sdk;
use faultline::matrix::{run_cell, Cell};
use faultline::scenario::Scenario;
use rstest::rstest;

/// What an SDK does with a library scenario.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused before it starts; the reason names this.
    Refused(&'static str),
    /// Every verdict passes.
    Passes,
    /// The verdicts whose descriptions start with these fail, one each; every other passes.
    FailsOnly(&'static [&'static str]),
    /// The verdicts whose descriptions start with these may fail (their outcome depends on
    /// timing the SDK does not control); every other passes.
    MayFail(&'static [&'static str]),
    /// The first list fails, one each, as [`Expect::FailsOnly`]; the second may fail too, as
    /// [`Expect::MayFail`]; every other passes.
    FailsAndMayFail(&'static [&'static str], &'static [&'static str]),
    /// Reliable data from `from` to `to` is lost: `data-delivered` fails (`always`) or may
    /// fail (otherwise), and the receiver's invariant 5 may fail too, naming only packets of
    /// `from` (which of the lost packets it holds the receiver to depends on when the receiver
    /// was back); nothing else fails.
    LosesData { from: &'static str, to: &'static str, always: bool },
    /// Media may come back later than invariant 6's bound after a `Reconnected` said too
    /// early: the invariants verdicts may fail, naming only invariant 6's "came back only …"
    /// (no other invariant, no missing track); nothing else fails.
    MediaMayLagTheReconnected,
    /// Media may stop at a `Reconnected` and come back late or never: the verdicts whose
    /// descriptions start with these may fail, and so may each participant's invariants
    /// verdict, naming only invariant 6 (frames due within 10 s of a `Reconnected`); nothing
    /// else fails.
    MediaMayNotComeBack(&'static [&'static str]),
    /// The track the scenario unmuted while the SDK was publishing it again stays muted on
    /// the server: `media-flowing` fails (`always`) or may fail (otherwise) — and only with
    /// the judge's evidence that the unmute came after the reconnect began and before the
    /// server accepted the republished track; nothing else fails.
    LosesAnUnmuteWhileRepublishing { always: bool },
    /// The SDK cannot join the room the scenario sets up: the run stops at the join, with an
    /// error naming this.
    CannotJoin(&'static str),
}

/// The upstream SDKs do not send again the reliable data that was in flight, or published,
/// while a crashed node took their session away: what alice published across the crash never
/// reaches bob (faultline-sdk sends it again on the new session). bob's invariant 5 holds him
/// to what was published after his own `Reconnected`, so it fails as well when he was back
/// (once Redis shows node 0 gone, 3–5 s after the crash) while alice, yet to notice the crash
/// by its silence, was still publishing into her dead session; on a slower machine bob is back
/// after her last packet and only `data-delivered` fails.
const LOSES_DATA_ACROSS_A_NODE_CRASH: Expect =
    Expect::LosesData { from: "alice", to: "bob", always: true };

/// The upstream Rust SDK and livekit-client notice a handover (old sockets dead, a new
/// address) only at their ping or ICE timeout, about 15 s later, then resume: back some 16–17 s
/// after the change, where cellular-handover expects 2 s (faultline-sdk moves its peer
/// connections to the new address as its resume begins).
const SLOW_HANDOVER: Expect = Expect::FailsOnly(&["reconnected: phone"]);

/// livekit-client keys remote participants by identity: a peer that reconnects fully comes
/// back under a new sid in the same server update that retires the old one (the server
/// batches a non-publisher's updates), so a livekit-client watcher swaps the sid in place and
/// reports neither a leave nor a join. `peer-saw-rejoin` expects both. A publisher's full
/// reconnect goes the same way (publisher-full-reconnect): the watcher reports the old tracks
/// unsubscribed and unpublished and the new ones published and subscribed, and its media
/// comes back, but no leave or join.
const JS_SEES_NO_REJOIN: Expect = Expect::FailsOnly(&["peer-saw-rejoin"]);

/// middlebox-rst on livekit-client: the missing rejoin (JS_SEES_NO_REJOIN), and a bound its
/// jittered retries may miss. Its retry delays (0.3, 1.2, 2.7, 4.8 s, each ±50 %) decide
/// whether an attempt falls inside the 6 s of resets and how long the next one waits: back
/// 5.08 s after the heal in the matrix run, 8.65 s in a loaded CI trial, where the file allows
/// 8 s. faultline-sdk's bound in the same file stays checked.
const JS_SEES_NO_REJOIN_AND_MAY_RETRY_LATE: Expect =
    Expect::FailsAndMayFail(&["peer-saw-rejoin"], &["reconnected: laptop"]);

/// livekit-client after a server restart: its retries wait 0, 0.3, 1.2, 2.7, 4.8 and then 7 s,
/// so whether it is back within sfu-restart's 15 s of the server's return depends on which
/// retry first meets a server that is up again — for either participant, both on
/// livekit-client here (bob at 15.45 s in one CI trial on a loaded machine, alice at 15.31 s in
/// another, within the bound in the others). faultline-sdk's bound in the same file stays
/// checked.
const JS_RETRY_MEETS_THE_RESTART: Expect =
    Expect::MayFail(&["reconnected: bob", "reconnected: alice"]);

/// The upstream Rust SDK's video after a signalling resume (resume-keeps-tracks): back within
/// 0.1 s on an idle machine, but in a CI run with the other tests' load both cameras stopped
/// for 5.1 and 6.0 s from the resume (the microphones kept flowing), where the file allows 2 s.
/// libwebrtc's encoder and bandwidth estimation decide when video resumes; faultline-sdk's and
/// livekit-client's bounds in the same file stay checked.
const UPSTREAM_VIDEO_AFTER_A_RESUME_UNDER_LOAD: Expect = Expect::MayFail(&["media-gap"]);

/// livekit-client ends an exhausted episode with `UNKNOWN_REASON`, not the reason that began
/// it (the signal link closed: `SIGNAL_CLOSE`), which outage-exhaustion expects.
const JS_EXHAUSTION_REASON: Expect = Expect::FailsOnly(&["disconnected: laptop"]);

/// livekit-client in the tunnel: it notices the dark link only at its ping timeout, about
/// 14 s in, where train-tunnel expects 10 s (faultline-sdk probes a link quiet on both
/// signalling and media and gives up on it 7 s after the last thing heard); and, in an
/// outage longer than one full-reconnect attempt, it goes back to a signalling resume
/// (`SignalReconnecting`) and then to another full reconnect, saying `Reconnecting` a second
/// time in the same episode: invariant 1 ("one Reconnecting per episode") breaks.
const JS_IN_THE_TUNNEL: Expect =
    Expect::FailsOnly(&["reconnecting: laptop", "invariants of laptop"]);

/// livekit-client answers a ForceTcp or ForceTls request with a full reconnect of its own
/// (its `simulateScenario` ends the session after asking), and does not send again the
/// reliable data published while that reconnect ran: what the laptop published in the ~2 s
/// after the request never reaches the peer (faultline-sdk and the upstream Rust SDK switch
/// transport without losing any).
const JS_LOSES_DATA_IN_ITS_OWN_FULL_RECONNECT: Expect =
    Expect::LosesData { from: "laptop", to: "peer", always: true };

/// livekit-client when the server's resume request (15 s into media-dead-after-resume's black
/// hole) arrives before Chromium has marked its peer connection disconnected: no
/// "peerconnection failed" line precedes the resume in its log, and it says `Reconnected` 2 s
/// after its ICE restart began, while UDP is still dropped (11.6 s before the heal, with two
/// CPU hogs beside the test here). Media comes back at the heal, 11.6–15.6 s after that
/// `Reconnected` (here and in two CI trials), beyond invariant 6's 10 s: the "reconnected,
/// but not really" the file exists to catch. On an idle machine Chromium marks the connection
/// disconnected first and the `Reconnected` waits for the heal, so the invariant holds.
const JS_RECONNECTED_BEFORE_ITS_MEDIA_UNDER_LOAD: Expect = Expect::MediaMayLagTheReconnected;

/// The upstream Rust SDK and livekit-client send a republished track's AddTrackRequest with
/// the mute state of that moment and never tell the server of a mute change made before the
/// answer came (livekit-client 2.23.0 sends it under the track's old sid, unknown to the new
/// session; nothing re-sends it once `track.sid` is set): the server keeps the camera muted and
/// bob never sees it again, though alice unmuted it. unmute-during-republish holds the window
/// open with signalling latency, so they lose the unmute every time (faultline-sdk tells the
/// server under the new sid once it has it).
const LOSES_AN_UNMUTE_WHILE_REPUBLISHING: Expect =
    Expect::LosesAnUnmuteWhileRepublishing { always: true };

/// The same loss in muted-during-outage, by chance: livekit-client's retries after the server
/// restart carry ±50 % random jitter, so its full reconnect lands anywhere from about 5 to 20 s
/// after the kill, and when its republish of the camera (about 0.5 s) spans the unmute at 9 s,
/// the unmute is lost (1 run in 5 here, on an idle machine, and in the last CI run).
const JS_RETRY_MAY_MEET_THE_UNMUTE: Expect =
    Expect::LosesAnUnmuteWhileRepublishing { always: false };

/// The Go SDK (server-sdk-go v2.19.0) sends no signalling pings (its signalling has no
/// ping/pong at all): a signalling path that goes silent without closing is never noticed.
/// In redis-outage the nodes stop relaying for 10 s and each participant stays `Connected`
/// through it unless its node closes its session itself, where the file expects both to
/// reconnect: alice stayed `Connected` in 8 runs of 9 here; bob stayed in most and
/// reconnected in at least one (a CI trial).
const GO_HAS_NO_PING: Expect = Expect::MayFail(&["reconnected: alice", "reconnected: bob"]);

/// latency-spike-during-resume on the Go SDK: the phone's resume under 1.5 s of signalling
/// latency each way says `Reconnected`, and in 2 of 10 runs here media in one direction never
/// came back (the peer's at the phone once, with invariant 6; the phone's at the peer once,
/// its last frames at +8.15 s) — with no ping and no further episode, nothing brought it
/// back. In the other runs it flowed again within the bounds.
const GO_MAY_LOSE_MEDIA_AFTER_A_SLOW_RESUME: Expect =
    Expect::MediaMayNotComeBack(&["media-flowing: "]);

/// The Go SDK keys remote participants by identity (`Room.OnParticipantUpdate`): a peer's
/// new session replaces the old one's sid in place, with neither a leave nor a join, where
/// `peer-saw-rejoin` expects both (as JS_SEES_NO_REJOIN, but for publishers too).
const GO_SEES_NO_REJOIN_OF_ALICE: Expect = Expect::FailsOnly(&["peer-saw-rejoin: bob sees alice"]);

/// [`GO_SEES_NO_REJOIN_OF_ALICE`], both ways (sfu-restart: both rejoin).
const GO_SEES_NO_REJOIN_EITHER_WAY: Expect =
    Expect::FailsOnly(&["peer-saw-rejoin: alice sees bob", "peer-saw-rejoin: bob sees alice"]);

/// node-crash on the Go SDK: no rejoin seen either way ([`GO_SEES_NO_REJOIN_OF_ALICE`]), and
/// alice's data across the crash lost ([`LOSES_DATA_ACROSS_A_NODE_CRASH`]); bob's invariant 5
/// may hold him to some of it, by when he was back.
const GO_NODE_CRASH: Expect = Expect::FailsAndMayFail(
    &[
        "peer-saw-rejoin: alice sees bob",
        "peer-saw-rejoin: bob sees alice",
        "data-delivered: alice → bob",
    ],
    &["invariants of bob"],
);

/// When a resume fails, server-sdk-go v2.19.0 goes on to full reconnects without calling its
/// `OnRestarting` (engine.go resets its attempt counter to 0 and `continue`s, and the `for`
/// loop's post statement makes it 1, so the `reconnectCount == 0` callbacks are skipped): the
/// remote participants are not cleared, and one who left during the outage stays listed after
/// the rejoin — the phone never sees the guest leave. (v2.20.0 rewrote that loop.)
const GO_KEEPS_A_GHOST_AFTER_A_FAILED_RESUME: Expect =
    Expect::FailsOnly(&["peer-saw-leave: phone sees guest"]);

/// The same skipped callback after a resume that succeeded but did not last: the engine goes
/// on to a full reconnect in the same worker and says `Reconnected` again with no
/// `Reconnecting` before it (invariant 1), and media, dead since the resume, comes back later
/// than invariant 6's 10 s after the first `Reconnected`, on both sides.
const GO_RECONNECTED_TWICE_AFTER_A_DEAD_RESUME: Expect =
    Expect::FailsAndMayFail(&["invariants of laptop"], &["invariants of peer"]);

/// The Go SDK refuses a publish while it reconnects (`PublishTrack`: "peer connection not
/// established") instead of holding it for the new session: alice's camera, published during
/// the SFU restart, never reaches bob.
const GO_REFUSES_A_PUBLISH_WHILE_RECONNECTING: Expect =
    Expect::FailsOnly(&["media-flowing: alice"]);

/// The Go SDK says `Reconnected` 24 ms into a signalling resume, before the ICE restart that
/// follows it, and whether media then flows on is pion's and the server's timing, not the
/// scenario's: in one run here media from bob stopped at alice for 10.02 s (where
/// resume-keeps-tracks allows 2 s), in another (one of four in a row) it never came back
/// (invariant 6, with nothing to start a further episode); in most it kept flowing.
const GO_MEDIA_MAY_STALL_AFTER_A_RESUME: Expect = Expect::MediaMayNotComeBack(&["media-gap"]);

/// pion has no active ICE-TCP candidates (the SDK's own SimulateForceTCP says so): with UDP
/// blocked the Go SDK cannot reach livekit-server's TCP candidates, where the other SDKs fall
/// back to them.
const GO_NEEDS_UDP_TO_JOIN: Expect = Expect::CannotJoin("could not connect after timeout");

/// [`GO_NEEDS_UDP_TO_JOIN`] mid-call: it never gets its media back, ends `Reconnecting`, and
/// (the skipped callback of [`GO_KEEPS_A_GHOST_AFTER_A_FAILED_RESUME`]) may say `Reconnected`
/// twice in the episode.
const GO_NEEDS_UDP_MID_CALL: Expect = Expect::FailsAndMayFail(
    &[
        "final-state: laptop",
        "media-flowing: laptop",
        "media-flowing: peer",
        "invariants of laptop",
        "invariants of peer",
    ],
    &[],
);

/// A cellular handover on the Go SDK: like the others it notices the dead address only at
/// its ICE timeout (no ping, [`GO_HAS_NO_PING`]), about 16 s in; its resume then fails and it
/// joins again (back 20.9 s after the change), and the peer never gets what the phone
/// published across the handover (the Go SDK does not send it again). Whether the peer, on
/// the Go SDK too, reports the phone's leave depends on how the server batched it
/// ([`GO_SEES_NO_REJOIN_OF_ALICE`]): it did in one run of two.
const GO_HANDOVER: Expect = Expect::FailsAndMayFail(
    &["reconnected: phone", "data-delivered: phone → peer"],
    &["peer-saw-no-leave: peer", "invariants of peer"],
);

/// muted-during-outage on the Go SDK, in one run of three here: after the SFU restart bob
/// (on the Go SDK too, rejoining from the same restart) got alice's republished microphone for
/// 1.2 s and then nothing, and her camera, republished muted, was announced to him once she
/// unmuted it but never subscribed. Both had rejoined through the escalation that skips
/// `OnRestarting` ([`GO_KEEPS_A_GHOST_AFTER_A_FAILED_RESUME`]); in the other runs everything
/// flowed.
const GO_MAY_LOSE_MEDIA_AFTER_A_RESTART: Expect = Expect::MayFail(&["media-flowing: alice"]);

/// The Go SDK answers force-tls's request with a full reconnect (livekit-server sends it a
/// leave with the reconnect action) and says `Reconnected` before its new session's peer
/// connection is up; a packet published in that window is held about 2 s, accepted, and in
/// one run of the column in about ten here never reached the peer (the others lost none).
const GO_MAY_LOSE_DATA_IN_ITS_OWN_FULL_RECONNECT: Expect =
    Expect::LosesData { from: "laptop", to: "peer", always: false };

/// The Go SDK's full reconnect, asked for by the scenario, is not one it can simulate here.
const GO_CANNOT_SIMULATE_A_FULL_RECONNECT: Expect =
    Expect::Refused("the Go SDK's only full-reconnect simulation");

fn library(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios").join(file)
}

#[rstest]
#[case::upstream_cellular_handover("cellular-handover.toml", Sdk::UpstreamRust, SLOW_HANDOVER)]
#[case::upstream_expired_token("expired-token.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_half_open_socket("half-open-socket.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_latency_spike_during_resume(
    "latency-spike-during-resume.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_lossy_3g("lossy-3g.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_media_only_loss("media-only-loss.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_middlebox_rst("middlebox-rst.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_migration("migration.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_node_crash("node-crash.toml", Sdk::UpstreamRust, LOSES_DATA_ACROSS_A_NODE_CRASH)]
#[case::upstream_node_drain("node-drain.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_outage_exhaustion(
    "outage-exhaustion.toml",
    Sdk::UpstreamRust,
    Expect::Refused("cannot take a `reconnect` policy")
)]
#[case::upstream_peer_left_during_outage(
    "peer-left-during-outage.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_rejoin_while_receiving(
    "rejoin-while-receiving.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_redis_outage("redis-outage.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_removed_by_moderator(
    "removed-by-moderator.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_server_leave("server-leave.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_signal_node_crash("signal-node-crash.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_sfu_restart("sfu-restart.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_train_tunnel(
    "train-tunnel.toml",
    Sdk::UpstreamRust,
    Expect::Refused("cannot take a `reconnect` policy")
)]
#[case::upstream_wifi_drop("wifi-drop.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_publisher_full_reconnect(
    "publisher-full-reconnect.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_sfu_restart_video("sfu-restart-video.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_muted_during_outage("muted-during-outage.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_unmute_during_republish(
    "unmute-during-republish.toml",
    Sdk::UpstreamRust,
    LOSES_AN_UNMUTE_WHILE_REPUBLISHING
)]
#[case::upstream_publish_during_reconnect(
    "publish-during-reconnect.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_resume_keeps_tracks(
    "resume-keeps-tracks.toml",
    Sdk::UpstreamRust,
    UPSTREAM_VIDEO_AFTER_A_RESUME_UNDER_LOAD
)]
#[case::upstream_media_dead_after_resume(
    "media-dead-after-resume.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_udp_blocked_from_join(
    "udp-blocked-from-join.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_udp_blocked_mid_call(
    "udp-blocked-mid-call.toml",
    Sdk::UpstreamRust,
    Expect::Passes
)]
#[case::upstream_force_tcp("force-tcp.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_force_tls("force-tls.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::upstream_cellular_drive("cellular-drive.toml", Sdk::UpstreamRust, Expect::Passes)]
#[case::js_cellular_handover("cellular-handover.toml", Sdk::Js, SLOW_HANDOVER)]
#[case::js_expired_token("expired-token.toml", Sdk::Js, JS_SEES_NO_REJOIN)]
#[case::js_half_open_socket("half-open-socket.toml", Sdk::Js, Expect::Passes)]
#[case::js_latency_spike_during_resume("latency-spike-during-resume.toml", Sdk::Js, Expect::Passes)]
#[case::js_lossy_3g("lossy-3g.toml", Sdk::Js, Expect::Passes)]
#[case::js_media_only_loss("media-only-loss.toml", Sdk::Js, Expect::Passes)]
#[case::js_middlebox_rst("middlebox-rst.toml", Sdk::Js, JS_SEES_NO_REJOIN_AND_MAY_RETRY_LATE)]
// The migrated laptop publishes tracks: its leave and join are not batched, so a
// livekit-client watcher reports both (see JS_SEES_NO_REJOIN).
#[case::js_migration("migration.toml", Sdk::Js, Expect::Passes)]
#[case::js_node_crash("node-crash.toml", Sdk::Js, LOSES_DATA_ACROSS_A_NODE_CRASH)]
#[case::js_node_drain("node-drain.toml", Sdk::Js, Expect::Passes)]
#[case::js_outage_exhaustion("outage-exhaustion.toml", Sdk::Js, JS_EXHAUSTION_REASON)]
#[case::js_peer_left_during_outage("peer-left-during-outage.toml", Sdk::Js, Expect::Passes)]
#[case::js_rejoin_while_receiving("rejoin-while-receiving.toml", Sdk::Js, Expect::Passes)]
#[case::js_redis_outage("redis-outage.toml", Sdk::Js, Expect::Passes)]
#[case::js_removed_by_moderator("removed-by-moderator.toml", Sdk::Js, Expect::Passes)]
#[case::js_server_leave("server-leave.toml", Sdk::Js, Expect::Passes)]
#[case::js_signal_node_crash("signal-node-crash.toml", Sdk::Js, Expect::Passes)]
#[case::js_sfu_restart("sfu-restart.toml", Sdk::Js, JS_RETRY_MEETS_THE_RESTART)]
#[case::js_train_tunnel("train-tunnel.toml", Sdk::Js, JS_IN_THE_TUNNEL)]
#[case::js_wifi_drop("wifi-drop.toml", Sdk::Js, Expect::Passes)]
#[case::js_publisher_full_reconnect("publisher-full-reconnect.toml", Sdk::Js, JS_SEES_NO_REJOIN)]
#[case::js_sfu_restart_video("sfu-restart-video.toml", Sdk::Js, Expect::Passes)]
#[case::js_muted_during_outage("muted-during-outage.toml", Sdk::Js, JS_RETRY_MAY_MEET_THE_UNMUTE)]
#[case::js_unmute_during_republish(
    "unmute-during-republish.toml",
    Sdk::Js,
    LOSES_AN_UNMUTE_WHILE_REPUBLISHING
)]
#[case::js_publish_during_reconnect("publish-during-reconnect.toml", Sdk::Js, Expect::Passes)]
#[case::js_resume_keeps_tracks("resume-keeps-tracks.toml", Sdk::Js, Expect::Passes)]
#[case::js_media_dead_after_resume(
    "media-dead-after-resume.toml",
    Sdk::Js,
    JS_RECONNECTED_BEFORE_ITS_MEDIA_UNDER_LOAD
)]
#[case::js_udp_blocked_from_join("udp-blocked-from-join.toml", Sdk::Js, Expect::Passes)]
#[case::js_udp_blocked_mid_call("udp-blocked-mid-call.toml", Sdk::Js, Expect::Passes)]
#[case::js_force_tcp("force-tcp.toml", Sdk::Js, JS_LOSES_DATA_IN_ITS_OWN_FULL_RECONNECT)]
#[case::js_force_tls("force-tls.toml", Sdk::Js, JS_LOSES_DATA_IN_ITS_OWN_FULL_RECONNECT)]
#[case::js_cellular_drive("cellular-drive.toml", Sdk::Js, Expect::Passes)]
#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 2))]
async fn library_scenario_on_each_sdk(
    #[case] file: &str,
    #[case] sdk: Sdk,
    #[case] expected: Expect,
) -> Result<()> {
    check(file, sdk, expected).await
}

/// The Go SDK's column: each library file and what the Go SDK does with it.
const GO_COLUMN: &[(&str, Expect)] = &[
    ("cellular-drive.toml", Expect::Passes),
    ("cellular-handover.toml", GO_HANDOVER),
    ("expired-token.toml", GO_CANNOT_SIMULATE_A_FULL_RECONNECT),
    ("force-tcp.toml", Expect::Refused("SimulateForceTCP does nothing")),
    ("force-tls.toml", GO_MAY_LOSE_DATA_IN_ITS_OWN_FULL_RECONNECT),
    ("half-open-socket.toml", Expect::Passes),
    ("latency-spike-during-resume.toml", GO_MAY_LOSE_MEDIA_AFTER_A_SLOW_RESUME),
    ("lossy-3g.toml", Expect::Passes),
    ("media-dead-after-resume.toml", GO_RECONNECTED_TWICE_AFTER_A_DEAD_RESUME),
    ("media-only-loss.toml", Expect::Passes),
    ("middlebox-rst.toml", Expect::Passes),
    ("migration.toml", Expect::Passes),
    ("muted-during-outage.toml", GO_MAY_LOSE_MEDIA_AFTER_A_RESTART),
    ("node-crash.toml", GO_NODE_CRASH),
    ("node-drain.toml", GO_SEES_NO_REJOIN_OF_ALICE),
    ("outage-exhaustion.toml", Expect::Refused("cannot take a `reconnect` policy")),
    ("peer-left-during-outage.toml", GO_KEEPS_A_GHOST_AFTER_A_FAILED_RESUME),
    ("publish-during-reconnect.toml", GO_REFUSES_A_PUBLISH_WHILE_RECONNECTING),
    ("publisher-full-reconnect.toml", GO_CANNOT_SIMULATE_A_FULL_RECONNECT),
    ("redis-outage.toml", GO_HAS_NO_PING),
    ("rejoin-while-receiving.toml", GO_CANNOT_SIMULATE_A_FULL_RECONNECT),
    ("removed-by-moderator.toml", Expect::Passes),
    ("resume-keeps-tracks.toml", GO_MEDIA_MAY_STALL_AFTER_A_RESUME),
    ("server-leave.toml", Expect::Passes),
    ("sfu-restart-video.toml", Expect::Passes),
    ("sfu-restart.toml", GO_SEES_NO_REJOIN_EITHER_WAY),
    ("signal-node-crash.toml", Expect::Passes),
    ("train-tunnel.toml", Expect::Refused("cannot take a `reconnect` policy")),
    ("udp-blocked-from-join.toml", GO_NEEDS_UDP_TO_JOIN),
    ("udp-blocked-mid-call.toml", GO_NEEDS_UDP_MID_CALL),
    ("unmute-during-republish.toml", GO_CANNOT_SIMULATE_A_FULL_RECONNECT),
    ("wifi-drop.toml", Expect::Passes),
];

/// How many of the Go column's cells run at once. The Go SDK is light (its driver is one
/// small process, no browser, no libwebrtc): with two of its cells running the machine was 84 %
/// idle (median of `vmstat 5`), and 81 % with four, so its column runs as one test, six cells at
/// a time, beside whichever other cell libtest runs.
const GO_CELLS_AT_ONCE: usize = 6;

#[test_log::test(tokio::test(flavor = "multi_thread", worker_threads = 4))]
async fn library_scenario_on_the_go_sdk() -> Result<()> {
    at_once::check_each(
        "the Go SDK's library cells (its column)",
        GO_COLUMN,
        GO_CELLS_AT_ONCE,
        |(file, _)| (*file).to_owned(),
        |(file, expected)| check(file, Sdk::Go, *expected),
    )
    .await
}

/// Runs `file` on `sdk` and checks the cell against `expected`; a cell that ran and failed
/// names where its run's logs are.
async fn check(file: &str, sdk: Sdk, expected: Expect) -> Result<()> {
    let path = library(file);
    let scenario = Scenario::load(&path)?;
    let cell = run_cell(&scenario, &path, sdk, 1).await;
    let logs = match &cell {
        Cell::Ran(outcome) => outcome.logs.clone(),
        _ => Vec::new(),
    };
    judge(file, sdk, expected, cell).map_err(|e| {
        let logs: Vec<String> =
            logs.iter().map(|(name, path)| format!("  {name}: {}", path.display())).collect();
        if logs.is_empty() {
            e
        } else {
            anyhow!("{e:#}\nlogs of the run:\n{}", logs.join("\n"))
        }
    })
}

/// The violations an invariants verdict's `seen` lists, each starting "invariant N: ".
fn violations(seen: &str) -> impl Iterator<Item = String> + '_ {
    seen.split("; invariant ").enumerate().map(|(i, v)| {
        if i == 0 {
            v.to_owned()
        } else {
            format!("invariant {v}")
        }
    })
}

/// Whether the cell `file` × `sdk` did what `expected` says.
fn judge(file: &str, sdk: Sdk, expected: Expect, cell: Cell) -> Result<()> {
    match (expected, cell) {
        (Expect::Refused(why), Cell::NotApplicable(said)) => {
            ensure!(said.contains(why), "{file} × {sdk} refused, but not for {why:?}: {said}");
        }
        (Expect::Passes, Cell::Ran(outcome)) => ensure!(
            outcome.ok(),
            "{file} × {sdk}: {} of {} verdicts failed: {:#?}",
            outcome.failures.len(),
            outcome.total,
            outcome.failures
        ),
        (Expect::FailsOnly(known), Cell::Ran(outcome)) => {
            let failed: Vec<&str> = outcome.failures.iter().map(|(w, _, _)| w.as_str()).collect();
            ensure!(
                failed.len() == known.len()
                    && known.iter().all(|k| failed.iter().any(|f| f.starts_with(k))),
                "{file} × {sdk} should fail only {known:?} (known SDK differences); failed: \
                 {:#?}",
                outcome.failures
            );
        }
        (Expect::MayFail(allowed), Cell::Ran(outcome)) => {
            let unexpected: Vec<_> = outcome
                .failures
                .iter()
                .filter(|(what, _, _)| !allowed.iter().any(|a| what.starts_with(a)))
                .collect();
            ensure!(
                unexpected.is_empty(),
                "{file} × {sdk} may fail only {allowed:?} (timing the SDK does not control); \
                 failed: {unexpected:#?}"
            );
        }
        (Expect::FailsAndMayFail(known, allowed), Cell::Ran(outcome)) => {
            let failed: Vec<&str> = outcome.failures.iter().map(|(w, _, _)| w.as_str()).collect();
            let all_known_failed = known.iter().all(|k| failed.iter().any(|f| f.starts_with(k)));
            let only_these =
                failed.iter().all(|f| known.iter().chain(allowed.iter()).any(|k| f.starts_with(k)));
            ensure!(
                all_known_failed && only_these,
                "{file} × {sdk} should fail {known:?} (known SDK differences) and may fail \
                 {allowed:?} (timing the SDK does not control), nothing else; failed: {:#?}",
                outcome.failures
            );
        }
        (Expect::LosesData { from, to, always }, Cell::Ran(outcome)) => {
            let data = format!("data-delivered: {from} → {to}");
            let invariants = format!("invariants of {to} ");
            let lost = format!("invariant 5: never received {from}'s reliable packet");
            let only_the_loss = (!always || outcome.failures.iter().any(|(w, _, _)| *w == data))
                && outcome.failures.iter().all(|(what, _, seen)| {
                    *what == data
                        || (what.starts_with(&invariants)
                            && seen.starts_with(&lost)
                            && !seen.contains("; invariant "))
                });
            ensure!(
                only_the_loss,
                "{file} × {sdk} should {} fail only {data:?} (a known SDK difference), and at \
                 most {to}'s invariant 5 over {from}'s packets; failed: {:#?}",
                if always { "always" } else { "at most" },
                outcome.failures
            );
        }
        (Expect::MediaMayLagTheReconnected, Cell::Ran(outcome)) => {
            let only_late_media = outcome.failures.iter().all(|(what, _, seen)| {
                what.starts_with("invariants of ")
                    && violations(seen)
                        .all(|v| v.starts_with("invariant 6: ") && v.contains("but came back only"))
            });
            ensure!(
                only_late_media,
                "{file} × {sdk} may fail only invariant 6 by media coming back late after a \
                 Reconnected (a known SDK difference under load); failed: {:#?}",
                outcome.failures
            );
        }
        (Expect::MediaMayNotComeBack(allowed), Cell::Ran(outcome)) => {
            let unexpected: Vec<_> = outcome
                .failures
                .iter()
                .filter(|(what, _, seen)| {
                    let allowed = allowed.iter().any(|a| what.starts_with(a));
                    let media_only = what.starts_with("invariants of ")
                        && violations(seen).all(|v| v.starts_with("invariant 6: "));
                    !allowed && !media_only
                })
                .collect();
            ensure!(
                unexpected.is_empty(),
                "{file} × {sdk} may fail only {allowed:?} and invariant 6 (media not back after a \
                 Reconnected: timing the SDK does not control); failed: {unexpected:#?}"
            );
        }
        (Expect::LosesAnUnmuteWhileRepublishing { always }, Cell::Ran(outcome)) => {
            let lost = |(what, _, seen): &(String, String, String)| {
                what.starts_with("media-flowing")
                    && seen.contains("unmuted it at")
                    && seen.contains("while publishing it again")
            };
            ensure!(
                outcome.failures.iter().all(lost) && (!always || !outcome.failures.is_empty()),
                "{file} × {sdk} should {} fail media-flowing, and only with an unmute made while \
                 the track was being republished (a known SDK difference); failed: {:#?}",
                if always { "always" } else { "at most" },
                outcome.failures
            );
        }
        (Expect::CannotJoin(why), Cell::CouldNotRun(said)) => ensure!(
            said.contains("could not join") && said.contains(why),
            "{file} × {sdk} should fail to join with {why:?}: {said}"
        ),
        (expected, cell) => bail!("{file} × {sdk}: expected {expected:?}, got {cell:#?}"),
    }
    Ok(())
}

#[test_log::test]
fn every_library_file_is_in_the_table_for_each_external_sdk() -> Result<()> {
    let table = include_str!("library_sdks.rs");
    for entry in std::fs::read_dir(library(""))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".toml") {
            continue;
        }
        ensure!(
            GO_COLUMN.iter().any(|(file, _)| *file == name),
            "{name} has no row in library_sdks.rs's GO_COLUMN"
        );
        for sdk in ["Sdk::UpstreamRust", "Sdk::Js"] {
            ensure!(
                table.contains(&format!("\"{name}\", {sdk},"))
                    || table.contains(&format!("\"{name}\",\n    {sdk},")),
                "{name} has no case for {sdk} in library_sdks.rs"
            );
        }
    }
    Ok(())
}
