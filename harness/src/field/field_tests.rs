//! Tests of the field reader on small inputs written here, in the formats LIVEKIT-NOTES
//! describes (and Chromium 156 was seen to write): well-formed, malformed and partial dumps,
//! the three kinds of log, and redaction of everything the module puts out.

use serde_json::{json, Value};

use super::derive::derive;
use super::redact::{is_clean, redact_dump};
use super::{parse, FieldError, LifecycleKind, Source, StateKind, Timeline};

const T0: f64 = 1_796_615_000_000.0;
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ2aWRlbyI6eyJyb29tIjoiciJ9fQ.c2VjcmV0c2lnbmF0dXJl";
const SECRETS: &[&str] = &[
    "192.168.7.21",
    "203.0.113.77",
    "2001:db8:85a3::8a2e:370:7334",
    "a=candidate",
    "eyJhbGci",
    "turnsecretpassword",
    "ufragOne",
];

/// A stats series as Chrome writes it: values as a JSON array in a string.
fn series(kind: &str, values: &[Value]) -> Value {
    json!({
        "startTime": "2026-12-07T03:43:20.000Z",
        "endTime": "2026-12-07T03:43:40.000Z",
        "statsType": kind,
        "values": Value::Array(values.to_vec()).to_string(),
    })
}

fn times(n: usize, from_ms: f64) -> Vec<Value> {
    (0..n).map(|i| json!(from_ms + 1000.0 * i as f64)).collect()
}

/// A peer connection sampled once a second from `from_ms`: its selected pair each second,
/// the pair's bytesReceived, the local ufrag, and a second pair whose local candidate has
/// another address.
fn pc(from_ms: f64, pairs: &[&str], bytes: &[u64], ufrags: &[&str], closed: bool) -> Value {
    let n = bytes.len();
    let t = times(n, from_ms);
    let mut stats = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        stats.insert(k.to_owned(), v);
    };
    put("T01-timestamp", series("transport", &t));
    put(
        "T01-selectedCandidatePairId",
        series("transport", &pairs.iter().map(|p| json!(p)).collect::<Vec<_>>()),
    );
    put(
        "T01-iceLocalUsernameFragment",
        series("transport", &ufrags.iter().map(|u| json!(u)).collect::<Vec<_>>()),
    );
    for (pair, local, address, network) in [
        ("CPa", "Ia", "192.168.7.21", "wifi"),
        ("CPb", "Ib", "2001:db8:85a3::8a2e:370:7334", "cellular"),
    ] {
        put(&format!("{pair}-timestamp"), series("candidate-pair", &t));
        // The pair's own counter: the selected pair's bytes, 0 while another is selected.
        let own: Vec<Value> =
            bytes.iter().zip(pairs).map(|(b, p)| json!(if *p == pair { *b } else { 0 })).collect();
        put(&format!("{pair}-bytesReceived"), series("candidate-pair", &own));
        put(&format!("{pair}-bytesSent"), series("candidate-pair", &own));
        put(
            &format!("{pair}-currentRoundTripTime"),
            series("candidate-pair", &vec![json!(0.05); n]),
        );
        put(&format!("{pair}-localCandidateId"), series("candidate-pair", &vec![json!(local); n]));
        put(
            &format!("{pair}-[bytesReceived_in_bits/s]"),
            series("candidate-pair", &vec![json!(8); n]),
        );
        put(&format!("{local}-timestamp"), series("local-candidate", &t));
        put(&format!("{local}-address"), series("local-candidate", &vec![json!(address); n]));
        put(&format!("{local}-ip"), series("local-candidate", &vec![json!(address); n]));
        put(&format!("{local}-port"), series("local-candidate", &vec![json!(50_000); n]));
        put(&format!("{local}-networkType"), series("local-candidate", &vec![json!(network); n]));
        put(&format!("{local}-candidateType"), series("local-candidate", &vec![json!("host"); n]));
    }
    put("RI1-timestamp", series("remote-candidate", &t));
    put("RI1-address", series("remote-candidate", &vec![json!("203.0.113.77"); n]));
    // One inbound stream: 100 packets a second, 10 of them lost in the fourth second.
    put("IT01A1-timestamp", series("inbound-rtp", &t));
    let lost: Vec<Value> = (0..n).map(|i| json!(if i >= 4 { 10 } else { 0 })).collect();
    let received: Vec<Value> =
        (0..n).map(|i| json!(100 * i - if i >= 4 { 10 } else { 0 })).collect();
    put("IT01A1-packetsLost", series("inbound-rtp", &lost));
    put("IT01A1-packetsReceived", series("inbound-rtp", &received));
    let sdp = "v=0\r\no=- 1 2 IN IP4 203.0.113.77\r\na=candidate:1 1 udp 2122260223 192.168.7.21 50000 typ host\r\n";
    let mut log = vec![
        json!({"timestamp": from_ms - 300.0, "type": "setConfiguration",
               "value": "{iceServers: [turn:203.0.113.77:3478?transport=udp], credential: \"turnsecretpassword\"}"}),
        json!({"timestamp": from_ms - 200.0, "type": "setRemoteDescription", "value": json!({"type": "offer", "sdp": sdp}).to_string()}),
        json!({"timestamp": from_ms - 150.0, "type": "onicecandidate", "value": "candidate:1 1 udp 2122260223 192.168.7.21 50000 typ host"}),
        json!({"timestamp": from_ms - 100.0, "type": "oniceconnectionstatechange", "value": "\"checking\""}),
        json!({"timestamp": from_ms - 50.0, "type": "oniceconnectionstatechange", "value": "\"connected\""}),
        json!({"timestamp": from_ms - 40.0, "type": "onconnectionstatechange", "value": "\"connected\""}),
    ];
    if closed {
        log.push(json!({"timestamp": from_ms + 1000.0 * (n as f64 - 1.0) + 100.0, "type": "close", "value": ""}));
    }
    json!({
        "pid": 1234,
        "rtcConfiguration": "{iceServers: [{urls: [turn:203.0.113.77], username: u, credential: turnsecretpassword}]}",
        "url": format!("https://app.example.com/room?token={JWT}"),
        "stats": Value::Object(stats),
        "updateLog": log,
    })
}

fn dump(pcs: Vec<(&str, Value)>) -> String {
    let pcs: serde_json::Map<String, Value> =
        pcs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    json!({"getUserMedia": [], "PeerConnections": pcs, "UserAgent": "test"}).to_string()
}

/// A call with a 3 s outage (seconds 4–6 flat), an ICE restart at 7 s, a network change to
/// pair b at 10 s, and a full reconnect (a second PC 15 s in).
fn field_dump() -> String {
    let pairs: Vec<&str> = (0..12).map(|i| if i < 10 { "CPa" } else { "CPb" }).collect();
    let bytes = [0, 100, 200, 300, 400, 400, 400, 400, 500, 600, 50, 100];
    let ufrags: Vec<&str> = (0..12).map(|i| if i < 7 { "ufragOne" } else { "ufragTwo" }).collect();
    let second_pc = pc(T0 + 15_000.0, &["CPa"; 5], &[0, 10, 20, 30, 40], &["ufragOne"; 5], false);
    dump(vec![("8-1", pc(T0, &pairs, &bytes, &ufrags, true)), ("8-2", second_pc)])
}

fn read(text: &str) -> Timeline {
    match parse(text.as_bytes()) {
        Ok(t) => t,
        Err(e) => panic!("the dump should parse: {e}"),
    }
}

fn error(text: &str) -> String {
    match parse(text.as_bytes()) {
        Ok(t) => panic!("should not parse; got {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_dump_becomes_a_timeline() {
    let t = read(&field_dump());
    assert_eq!(t.source, Source::WebrtcInternals);
    let ids: Vec<&str> = t.peer_connections.iter().map(|pc| pc.id.as_str()).collect();
    assert_eq!(ids, ["8-1", "8-2"], "in order of creation");
    let pc = &t.peer_connections[0];
    assert_eq!(pc.bytes_received.len(), 12);
    assert_eq!(pc.bytes_received[0].t_ms, T0);
    assert_eq!(pc.rtt_s[0].value, 0.05);
    assert_eq!(pc.created_ms, Some(T0 - 300.0));
    assert_eq!(pc.closed_ms, Some(T0 + 11_100.0));
    let states: Vec<(StateKind, &str)> =
        pc.states.iter().map(|s| (s.kind, s.state.as_str())).collect();
    assert_eq!(
        states,
        [
            (StateKind::IceConnection, "checking"),
            (StateKind::IceConnection, "connected"),
            (StateKind::Connection, "connected"),
        ]
    );
    let generations: Vec<u32> = pc.ice_generation.iter().map(|s| s.value).collect();
    assert_eq!(generations, [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    let local: Vec<(Option<u32>, Option<&str>)> = pc
        .local_candidate
        .iter()
        .map(|s| (s.value.address_index, s.value.network_type.as_deref()))
        .collect();
    assert_eq!(local[9], (Some(1), Some("wifi")));
    assert_eq!(local[10], (Some(2), Some("cellular")));
}

#[test]
fn outages_restarts_network_changes_and_new_pcs_are_found() {
    let d = derive(&read(&field_dump()));
    assert_eq!(d.origin_ms, T0 - 300.0);
    // Flat at 400 from 4 s to 7 s: stopped between 3 s and 4 s, back between 7 s and 8 s.
    assert_eq!(d.outages.len(), 1, "{:?}", d.outages);
    let o = &d.outages[0];
    assert_eq!((o.start_ms - T0, o.end_ms.map(|e| e - T0)), (3_500.0, Some(7_500.0)));
    assert!(o.evidence.contains("bytesReceived flat at 400"), "{}", o.evidence);
    // The leading zeros (nothing received yet) and the second PC's short life are not outages.
    assert_eq!(d.ice_restarts.len(), 1);
    assert_eq!(d.ice_restarts[0].t_ms, T0 + 7_000.0);
    assert!(d.ice_restarts[0].evidence.contains("iceLocalUsernameFragment"));
    let changes: Vec<f64> = d.network_changes.iter().map(|c| c.t_ms - T0).collect();
    assert_eq!(changes, [10_000.0, 10_000.0], "{:?}", d.network_changes);
    assert!(d.network_changes.iter().any(|c| c.evidence.contains("address and networkType")));
    assert_eq!(d.new_peer_connections.len(), 1);
    assert_eq!(d.new_peer_connections[0].pc, "8-2");
    // 10 of 100 packets lost in each PC's fifth sample; 50 ms RTT throughout.
    let lossy: Vec<u64> = d
        .seconds
        .iter()
        .filter(|s| s.loss_percent.is_some_and(|l| l > 0.0))
        .map(|s| s.second)
        .collect();
    assert_eq!(lossy, [4, 19], "each PC loses 10 packets in its fourth second");
    assert!(d.seconds.iter().filter_map(|s| s.rtt_ms).all(|r| (r - 50.0).abs() < 1e-9));
    let connected = d.state_changes.iter().filter(|(_, s)| s.state == "connected").count();
    assert_eq!(connected, 4);
}

#[test]
fn a_flat_tail_before_close_is_not_an_outage_but_one_without_close_is() {
    let bytes = [0, 100, 200, 300, 300, 300];
    let closed = dump(vec![("1-1", pc(T0, &["CPa"; 6], &bytes, &["u"; 6], true))]);
    // Closed 100 ms after its last sample, flat for 2 s before: still an outage (the
    // connection lived through it), but open-ended.
    let d = derive(&read(&closed));
    assert_eq!(d.outages.len(), 1);
    assert_eq!(d.outages[0].end_ms, None);
    assert!(d.outages[0].evidence.contains("to the end of the series"));
    let short = [0, 100, 200, 300, 300];
    let just_closed = dump(vec![("1-1", pc(T0, &["CPa"; 5], &short, &["u"; 5], true))]);
    assert_eq!(derive(&read(&just_closed)).outages.len(), 1, "flat for 1 s");
    let one_sample = [0, 100, 200, 300];
    let none = dump(vec![("1-1", pc(T0, &["CPa"; 4], &one_sample, &["u"; 4], true))]);
    assert!(derive(&read(&none)).outages.is_empty());
}

#[test]
fn without_timestamp_series_samples_are_spread_from_start_to_end() {
    let mut v: Value = serde_json::from_str(&field_dump()).unwrap_or_default();
    if let Some(stats) = v.pointer_mut("/PeerConnections/8-1/stats").and_then(Value::as_object_mut)
    {
        stats.retain(|k, _| !k.ends_with("-timestamp"));
    }
    let t = read(&v.to_string());
    let pc = &t.peer_connections[0];
    let start = super::parse_rfc3339_ms("2026-12-07T03:43:20.000Z").unwrap_or_default();
    let end = super::parse_rfc3339_ms("2026-12-07T03:43:40.000Z").unwrap_or_default();
    assert_eq!(pc.bytes_received.first().map(|s| s.t_ms), Some(start));
    assert_eq!(pc.bytes_received.last().map(|s| s.t_ms), Some(end));
}

#[test]
fn malformed_and_partial_dumps_say_what_is_missing() {
    let full = field_dump();
    let e = error(&full[..full.len() / 2]);
    assert!(e.contains("not valid JSON (truncated?)"), "{e}");
    let e = error(r#"{"UserAgent": "x"}"#);
    assert!(e.contains("no `PeerConnections`"), "{e}");
    let e = error(r#"{"PeerConnections": {}}"#);
    assert!(e.contains("?keepRemovedConnections"), "{e}");
    let e = error(r#"{"PeerConnections": {"3-1": {"stats": {}}}}"#);
    assert!(e.contains(r#"PeerConnections["3-1"].updateLog is missing"#), "{e}");
    let e = error(r#"{"PeerConnections": {"3-1": {"updateLog": []}}}"#);
    assert!(e.contains(r#"PeerConnections["3-1"].stats is missing"#), "{e}");
    // A PC that never connected: no transport with a selected pair.
    let e = error(r#"{"PeerConnections": {"3-1": {"updateLog": [], "stats": {}}}}"#);
    assert!(
        e.contains(r#"PeerConnections["3-1"].stats has no series for the selected candidate pair"#)
            && e.contains("before the call connected?"),
        "{e}"
    );
    let e =
        error(r#"{"PeerConnections": {"3-1": {"updateLog": [{"type": "close"}], "stats": {}}}}"#);
    assert!(e.contains(r#"PeerConnections["3-1"].updateLog[0] has no `timestamp`"#), "{e}");
    let bad_values = json!({"PeerConnections": {"3-1": {"updateLog": [], "stats": {
        "T01-selectedCandidatePairId": {"statsType": "transport", "values": "not an array"}}}}});
    let e = error(&bad_values.to_string());
    assert!(e.contains(r#"["T01-selectedCandidatePairId"] has no `values` array"#), "{e}");
    // The selected pair's own series cut off.
    let mut v: Value = serde_json::from_str(&full).unwrap_or_default();
    for pc in ["8-1", "8-2"] {
        if let Some(stats) =
            v.pointer_mut(&format!("/PeerConnections/{pc}/stats")).and_then(Value::as_object_mut)
        {
            stats.retain(|k, _| !k.starts_with("CP"));
        }
    }
    let e = error(&v.to_string());
    assert!(e.contains("no `bytesReceived` series"), "{e}");
}

#[test]
fn js_driver_and_browser_console_logs_become_lifecycle_events() {
    let driver_log = "\
2026-12-07T03:44:30.963Z js-driver: connect ws://198.19.169.1:36733 (options {})
2026-12-07T03:44:31.037Z js-driver: [page info] signal connecting to ws://198.19.169.1:36733/rtc/v1?access_token=<redacted>&join_request=CAES
2026-12-07T03:44:31.347Z js-driver: [page info] connection state changed: connecting -> connected {room: r, participant: laptop}
2026-12-07T03:44:40.100Z js-driver: [page warning] ping timeout triggered. last pong received at: Mon Dec 07 2026
2026-12-07T03:44:40.101Z js-driver: [page info] websocket connection closed: ping timeout {room: r}
2026-12-07T03:44:40.110Z js-driver: [page info] connection state changed: connected -> signalReconnecting {room: r}
2026-12-07T03:44:40.111Z js-driver: [page info] resuming signal connection, attempt 0 {room: r}
2026-12-07T03:44:42.500Z js-driver: [page info] reconnecting, attempt: 1 {room: r}
2026-12-07T03:44:50.000Z js-driver: [page info] leave request received (action=1) {room: r}
2026-12-07T03:45:10.000Z js-driver: [page warning] could not recover connection after 10 attempts, 30000ms. giving up
2026-12-07T03:45:10.001Z js-driver: [page info] connection state changed: reconnecting -> disconnected {room: r}
";
    let t = read(driver_log);
    assert_eq!(t.source, Source::LivekitClientLog);
    let kinds: Vec<&LifecycleKind> = t.lifecycle.iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [
            &LifecycleKind::State { from: "connecting".into(), to: "connected".into() },
            &LifecycleKind::PingTimeout,
            &LifecycleKind::SignalClosed,
            &LifecycleKind::State { from: "connected".into(), to: "signalReconnecting".into() },
            &LifecycleKind::Resume { attempt: 0 },
            &LifecycleKind::ReconnectAttempt { attempt: 1 },
            &LifecycleKind::SessionClosed { reason: "leave request (action=1)".into() },
            &LifecycleKind::GaveUp { attempts: 10, elapsed_ms: 30_000 },
            &LifecycleKind::State { from: "reconnecting".into(), to: "disconnected".into() },
        ]
    );
    let start = super::parse_rfc3339_ms("2026-12-07T03:44:31.347Z").unwrap_or_default();
    assert_eq!(t.lifecycle[0].t_ms, start);
    assert_eq!(
        t.lifecycle[0].evidence,
        "line 3: `connection state changed: connecting -> connected`"
    );

    // DevTools' console saved with "Show timestamps": a time of day, then the source.
    let console = "\
23:59:59.500 livekit-client.esm.mjs:1 connection state changed: connected -> reconnecting
livekit-client.esm.mjs:1 detected network interruption
00:00:01.250 livekit-client.esm.mjs:1 connection state changed: reconnecting -> connected
";
    let t = read(console);
    let times: Vec<f64> = t.lifecycle.iter().map(|e| e.t_ms).collect();
    assert_eq!(times, [86_399_500.0, 86_399_500.0, 86_401_250.0], "past midnight, and carried");
    assert_eq!(t.lifecycle[1].kind, LifecycleKind::NetworkInterruption);
}

#[test]
fn rust_sdk_logs_become_lifecycle_events() {
    let log = "\
21:53:38.930 WARNING livekit: livekit::rtc_engine:643:livekit::rtc_engine - received session close: \"signal client closed: \\\"stream closed\\\"\" UnknownReason Resume
21:53:38.938 ERROR livekit: livekit::rtc_engine:1041:livekit::rtc_engine - resuming connection... attempt: 1
21:53:38.970 ERROR livekit: livekit::rtc_engine:1068:livekit::rtc_engine - resuming connection failed: signal failure: IO error at 10.1.2.3:7880
21:53:39.159 ERROR livekit: livekit::rtc_engine:995:livekit::rtc_engine - restarting connection... attempt: 2
[2026-12-07T21:53:41.000Z INFO  livekit::rtc_engine] RtcEngine successfully recovered
2026-12-07 21:53:50.5 INFO livekit::room: Disconnected from room with reason ClientInitiated
";
    let t = read(log);
    assert_eq!(t.source, Source::RustSdkLog);
    let kinds: Vec<&LifecycleKind> = t.lifecycle.iter().map(|e| &e.kind).collect();
    assert!(
        matches!(kinds[0], LifecycleKind::SessionClosed { reason } if reason.contains("stream closed"))
    );
    assert_eq!(kinds[1], &LifecycleKind::Resume { attempt: 1 });
    assert_eq!(kinds[2], &LifecycleKind::FullReconnect { attempt: 2 });
    // The first four lines have a time of day only; the last two a date.
    assert_eq!(kinds[3..], [&LifecycleKind::Recovered, &LifecycleKind::Disconnected]);
}

#[test]
fn logs_without_lifecycle_lines_or_times_are_refused_by_name() {
    let e = error("hello\nworld\n");
    assert!(
        e.contains("no line holds a livekit-client or LiveKit Rust SDK reconnect phrase"),
        "{e}"
    );
    let e = error("livekit-client.esm.mjs:1 connection state changed: connected -> reconnecting\n");
    assert!(e.contains("none with a timestamp") && e.contains("Show timestamps"), "{e}");
}

#[test]
fn nothing_the_module_puts_out_holds_an_address_sdp_or_token() {
    let text = field_dump();
    for s in SECRETS {
        assert!(text.contains(s), "the test dump should hold {s}");
    }
    let t = read(&text);
    let d = derive(&t);
    let log = format!(
        "2026-12-07T03:44:40.101Z connect wss://203.0.113.77:7880/rtc?access_token={JWT}\n\
         2026-12-07T03:44:40.102Z received session close: {JWT} from 192.168.7.21 at 2001:db8:85a3::8a2e:370:7334\n\
         2026-12-07T03:44:40.103Z websocket closed a=candidate:1 1 udp 1 192.168.7.21 5 typ host\n"
    );
    let l = read(&log);
    let outputs = [
        serde_json::to_string(&t).unwrap_or_default(),
        format!("{t:?}"),
        serde_json::to_string(&d).unwrap_or_default(),
        format!("{d:?}"),
        serde_json::to_string(&l).unwrap_or_default(),
        format!("{l:?}"),
    ];
    for out in &outputs {
        assert!(out.len() > 50, "something was put out: {out}");
        assert!(is_clean(out), "not clean: {out}");
        for s in SECRETS {
            assert!(!out.contains(s), "{s} survived into {out}");
        }
    }
    // Errors name places, never content.
    let mut v: Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(pcs) = v.get_mut("PeerConnections").and_then(Value::as_object_mut) {
        let pc = pcs.remove("8-1").unwrap_or_default();
        pcs.insert("192.168.7.21".into(), pc);
        if let Some(log) = pcs.get_mut("192.168.7.21").and_then(|p| p.get_mut("updateLog")) {
            *log = json!([{"type": "x", "value": "a=candidate 192.168.7.21"}]);
        }
    }
    let e = error(&v.to_string());
    assert!(is_clean(&e) && !e.contains("192.168.7.21"), "{e}");
}

#[test]
fn a_redacted_dump_is_clean_and_reads_the_same() {
    let original: Value = serde_json::from_str(&field_dump()).unwrap_or_default();
    for trim in [false, true] {
        let redacted = redact_dump(&original, trim);
        let text = redacted.to_string();
        assert!(is_clean(&text), "trim={trim}: {text}");
        for s in SECRETS.iter().filter(|s| **s != "ufragOne") {
            assert!(!text.contains(s), "trim={trim}: {s} survived");
        }
        assert!(!text.contains("\"192.168.7.21\""));
        let (before, after) = (derive(&read(&original.to_string())), derive(&read(&text)));
        assert_eq!(before, after, "trim={trim}: the redacted dump reads differently");
    }
    let trimmed = redact_dump(&original, true).to_string();
    assert!(!trimmed.contains("bytesReceived_in_bits") && !trimmed.contains("-port"));
}

#[test]
fn errors_are_typed() {
    assert!(matches!(parse(b"\x1f\x8b\x08"), Err(FieldError::Gzipped)));
    assert!(matches!(parse(b"{\"a\":"), Err(FieldError::BadJson { .. })));
    assert!(matches!(parse(b"{}"), Err(FieldError::Missing { .. })));
    assert!(matches!(parse(b"nothing here"), Err(FieldError::Unrecognised { .. })));
    // Chromium 156's other download (seen here): named, not misread as a log.
    let rtcstats =
        "RTCStatsDump\n{\"fileFormat\":3}\n[\"create\",\"8-1\",{},\"about:blank\",149.6]\n";
    let e = error(rtcstats);
    assert!(e.contains("rtcstats dump") && e.contains("webrtc-internals dump"), "{e}");
}

/// Real dumps and driver logs from this machine (fixtures/field/README.md says how they
/// were made): the findings match what the scenarios did.
mod real_fixtures {
    pub(super) const WIFI_DUMP: &str =
        include_str!("../../../fixtures/field/wifi-drop.js.webrtc-internals.json");
    pub(super) const WIFI_LOG: &str =
        include_str!("../../../fixtures/field/wifi-drop.js.driver.log");
    pub(super) const SFU_DUMP: &str =
        include_str!("../../../fixtures/field/sfu-restart-video.js.webrtc-internals.json");
    pub(super) const SFU_LOG: &str =
        include_str!("../../../fixtures/field/sfu-restart-video.js.driver.log");
    pub(super) const SFU_RUST_LOG: &str =
        include_str!("../../../fixtures/field/sfu-restart-video.upstream-rust.driver.log");
}

mod real {
    use super::real_fixtures::*;
    use super::*;

    #[test]
    fn every_fixture_is_redacted() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/field");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") || name.ends_with(".log") {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                assert!(is_clean(&text), "{name} holds an address, SDP or a token");
                checked += 1;
            }
        }
        assert!(checked >= 9, "only {checked} fixtures in {}", dir.display());
    }

    #[test]
    fn the_upstream_sdk_resumes_once_then_restarts_until_it_recovers() {
        let log = read(SFU_RUST_LOG);
        assert_eq!(log.source, Source::RustSdkLog);
        let kinds: Vec<&LifecycleKind> = log.lifecycle.iter().map(|e| &e.kind).collect();
        assert!(
            matches!(kinds[0], LifecycleKind::SessionClosed { reason } if reason.contains("stream closed"))
        );
        assert_eq!(kinds[1], &LifecycleKind::Resume { attempt: 1 });
        let restarts: Vec<u32> = kinds
            .iter()
            .filter_map(|k| match k {
                LifecycleKind::FullReconnect { attempt } => Some(*attempt),
                _ => None,
            })
            .collect();
        let sticky: Vec<u32> = (2..2 + restarts.len() as u32).collect();
        assert!(
            restarts.len() >= 2 && restarts == sticky,
            "one resume, then full reconnects: {restarts:?}"
        );
        assert_eq!(kinds[kinds.len() - 2..], [&LifecycleKind::Recovered, &LifecycleKind::Closed]);
    }

    #[test]
    fn wifi_drop_shows_one_3_s_outage_and_no_reconnect() {
        // The scenario: a 3 s partition of the laptop (its harness log: from +1.00 s to
        // +4.05 s), shorter than every detector.
        let d = derive(&read(WIFI_DUMP));
        assert_eq!(d.outages.len(), 1, "{:?}", d.outages);
        let o = &d.outages[0];
        let length = o.end_ms.map(|e| (e - o.start_ms) / 1000.0);
        assert!(length.is_some_and(|l| (2.5..=3.5).contains(&l)), "{o:?}");
        assert!(d.new_peer_connections.is_empty() && d.ice_restarts.is_empty());
        let lossy = d.seconds.iter().filter(|s| s.loss_percent.is_some_and(|l| l > 10.0)).count();
        assert!(lossy >= 1, "the partition's lost packets show once they are counted");
        let log = read(WIFI_LOG);
        assert!(log
            .lifecycle
            .iter()
            .all(|e| matches!(e.kind, LifecycleKind::State { .. } | LifecycleKind::Closed)));
    }

    #[test]
    fn sfu_restart_shows_an_outage_then_a_new_peer_connection() {
        let dump = read(SFU_DUMP);
        let d = derive(&dump);
        assert_eq!(d.new_peer_connections.len(), 1, "the full reconnect's new PC");
        let outage = d.outages.first().map(|o| (o.pc.clone(), o.start_ms, o.end_ms));
        let Some((pc, start, None)) = outage else {
            panic!("one open-ended outage on the old PC: {:?}", d.outages)
        };
        assert_eq!(pc, "8-1");
        let log = read(SFU_LOG);
        let closed = log.lifecycle.iter().find(|e| e.kind == LifecycleKind::SignalClosed);
        // The media stopped with the server, within a second of the signalling noticing.
        let closed = closed.map(|e| e.t_ms).unwrap_or_default();
        assert!((closed - start).abs() < 1000.0, "outage at {start}, websocket closed at {closed}");
        // The new PC appears at the log's full reconnect.
        let attempt = log
            .lifecycle
            .iter()
            .find(|e| matches!(e.kind, LifecycleKind::ReconnectAttempt { .. }))
            .map(|e| e.t_ms)
            .unwrap_or_default();
        let created = d.new_peer_connections[0].t_ms;
        assert!((created - attempt).abs() < 1000.0, "new PC at {created}, attempt at {attempt}");
        let to: Vec<&str> = log
            .lifecycle
            .iter()
            .filter_map(|e| match &e.kind {
                LifecycleKind::State { to, .. } => Some(to.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            to,
            [
                "connecting",
                "connected",
                "signalReconnecting",
                "reconnecting",
                "connected",
                "disconnected"
            ]
        );
    }
}

/// `faultline import` on the real fixtures and on timelines written here: scenario files the
/// harness accepts, each fault where the evidence put it, nothing but evidence in them.
mod imports {
    use super::real_fixtures::*;
    use super::*;
    use crate::field::import::{import, Imported};
    use crate::field::{PeerConnection, Sample};
    use crate::scenario::format::Fault;
    use crate::scenario::Scenario;

    fn scenario(imported: &Imported) -> (Scenario, String) {
        let text = imported.scenario("imported");
        assert!(is_clean(&text), "{text}");
        match Scenario::parse(&text, std::path::Path::new("imported.toml")) {
            Ok(s) => (s, text),
            Err(e) => panic!("the import is not a scenario: {e}\n{text}"),
        }
    }

    fn imported(files: &[&str]) -> Imported {
        let timelines: Vec<Timeline> = files.iter().map(|f| read(f)).collect();
        match import(&timelines) {
            Ok(i) => i,
            Err(e) => panic!("import failed: {e}"),
        }
    }

    fn kinds(s: &Scenario) -> Vec<&'static str> {
        s.faults.iter().map(|f| f.fault.kind()).collect()
    }

    #[test]
    fn wifi_drop_imports_3_s_of_lost_media_and_no_reconnect() {
        let i = imported(&[WIFI_DUMP, WIFI_LOG]);
        let (s, text) = scenario(&i);
        // The log shows no reconnect: the signalling held, only the media is replayed as lost.
        assert_eq!(kinds(&s), ["media"], "{text}");
        assert!(text.contains("loss_percent = 100.0"), "{text}");
        // Without the log, whether the signalling held is unknown: a partition, said so.
        let (s, text) = scenario(&imported(&[WIFI_DUMP]));
        assert_eq!(kinds(&s), ["partition"], "{text}");
        let (s, text) = scenario(&i);
        let lasted = s.faults[0].duration.map(|d| d.as_secs_f64()).unwrap_or_default();
        assert!((2.5..=3.5).contains(&lasted), "{text}");
        assert!(text.contains("type = \"no-reconnect\""), "{text}");
        assert!(text.contains("# PeerConnections[") && text.contains("bytesReceived flat"));
        let field = s.field.as_ref().map(|f| (f.participant.as_str(), f.outages.len()));
        assert_eq!(field, Some(("field", 1)), "{text}");
    }

    #[test]
    fn sfu_restart_imports_a_server_kill_held_until_the_client_got_back_in() {
        let i = imported(&[SFU_DUMP, SFU_LOG]);
        let (s, text) = scenario(&i);
        assert_eq!(kinds(&s), ["server-kill"], "{text}");
        // Down for less than the outage: the server was back before the client's last
        // attempt, which then took its full reconnect's time.
        let (outage_s, down_s) =
            (i.outages[0].for_s, s.faults[0].duration.map(|d| d.as_secs_f64()).unwrap_or_default());
        assert!(down_s > 0.5 && down_s < outage_s, "down {down_s} s of {outage_s} s: {text}");
        assert!(text.contains("type = \"reconnected\""), "{text}");
        let states: Vec<&str> = i.lifecycle.iter().map(|m| m.state).collect();
        assert_eq!(states, ["Reconnecting", "Reconnected"], "the close at the end is the run's");
        // Without the log the cause is unknown: a partition, said so.
        let (s, text) = scenario(&imported(&[SFU_DUMP]));
        assert_eq!(kinds(&s), ["partition"], "{text}");
        assert!(text.contains("without the client's log"), "{text}");
    }

    #[test]
    fn a_log_alone_imports_its_episodes_as_partitions_from_their_reconnecting() {
        let i = imported(&[SFU_LOG]);
        let (s, text) = scenario(&i);
        assert_eq!(kinds(&s), ["partition"], "{text}");
        assert!(text.contains("a log alone says when the client noticed"), "{text}");
        let i = imported(&[SFU_RUST_LOG]);
        assert_eq!(i.sources, [Source::RustSdkLog]);
        let states: Vec<&str> = i.lifecycle.iter().map(|m| m.state).collect();
        assert_eq!(states[..2], ["Reconnecting", "Reconnected"], "{:?}", i.lifecycle);
        scenario(&i);
    }

    #[test]
    fn two_dumps_are_refused_naming_one_client_at_a_time() {
        let dumps = [read(WIFI_DUMP), read(SFU_DUMP)];
        let e = import(&dumps).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("one client's evidence at a time"), "{e}");
    }

    /// A dump of 20 s whose selected pair had `rtt_s` RTT and `lost` packets in 100 for its
    /// first 10 s, then 20 ms and none; media flowing throughout.
    fn link(rtt_s: f64, lost: f64) -> Timeline {
        let t = |i: u32| T0 + 1000.0 * f64::from(i);
        let n = 20;
        let pc = PeerConnection {
            id: "8-1".into(),
            created_ms: Some(T0),
            closed_ms: None,
            states: Vec::new(),
            selected_pair: (0..n).map(|i| Sample { t_ms: t(i), value: "CPa".into() }).collect(),
            bytes_received: (0..n)
                .map(|i| Sample { t_ms: t(i), value: f64::from(i) * 10_000.0 })
                .collect(),
            bytes_sent: Vec::new(),
            rtt_s: (0..n)
                .map(|i| Sample { t_ms: t(i), value: if i < 10 { rtt_s } else { 0.02 } })
                .collect(),
            packets_lost: (0..n)
                .map(|i| Sample { t_ms: t(i), value: f64::from(i.min(10)) * lost })
                .collect(),
            packets_received: (0..n)
                .map(|i| Sample {
                    t_ms: t(i),
                    value: f64::from(i.min(10)) * (100.0 - lost)
                        + f64::from(i.saturating_sub(10)) * 100.0,
                })
                .collect(),
            local_candidate: Vec::new(),
            ice_generation: Vec::new(),
        };
        Timeline {
            source: Source::WebrtcInternals,
            peer_connections: vec![pc],
            lifecycle: Vec::new(),
        }
    }

    #[test]
    fn rtt_and_loss_become_a_replayed_link_where_they_matter() {
        let i = match import(&[link(0.2, 5.0)]) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        let (s, text) = scenario(&i);
        assert_eq!(kinds(&s), ["media"], "only the slow, lossy stretch: {text}");
        let Fault::Media(media) = &s.faults[0].fault else { panic!("{text}") };
        assert_eq!(media.delay, Some(std::time::Duration::from_millis(100)), "{text}");
        assert_eq!(media.loss_percent, Some(5.0), "{text}");
        let lasted = s.faults[0].duration.map(|d| d.as_secs_f64()).unwrap_or_default();
        assert!((8.0..=10.0).contains(&lasted), "{text}");
        assert!(text.contains("currentRoundTripTime"), "{text}");
    }

    #[test]
    fn a_signalling_loss_with_media_flowing_replays_as_the_proxy_killing_it() {
        // Media flows for 20 s (from 03:43:20); the WebSocket closed 5 s in, two resumes, back
        // at 9 s.
        let line =
            |t: &str, what: &str| format!("2026-12-07T03:43:{t}Z js-driver: [page info] {what}\n");
        let log = [
            line("20.500", "connection state changed: connecting -> connected"),
            line("25.000", "websocket closed {reason: 1006}"),
            line("25.100", "resuming signal connection, attempt 0"),
            line("25.100", "connection state changed: connected -> signalReconnecting"),
            line("27.000", "resuming signal connection, attempt 1"),
            line("29.000", "connection state changed: signalReconnecting -> connected"),
        ]
        .concat();
        let timelines = [link(0.002, 0.0), read(&log)];
        let i = match import(&timelines) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        let (s, text) = scenario(&i);
        assert_eq!(kinds(&s), ["signal-proxy"], "{text}");
        let Fault::SignalProxy { mode, .. } = &s.faults[0].fault else { panic!("{text}") };
        assert_eq!(mode.to_string(), "kill");
        // At the close, 4 s after the first bytes (21 s); refusing until halfway between the
        // refused resume (25.1 s) and the one the server answered (27 s, back at 29 s).
        assert_eq!(s.faults[0].at.as_secs_f64(), 4.0, "{text}");
        assert!(text.contains("the signalling connection was lost alone"), "{text}");
        let states: Vec<&str> = i.lifecycle.iter().map(|m| m.state).collect();
        assert_eq!(states, ["Reconnecting", "Reconnected"]);
    }
}
