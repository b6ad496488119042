//! Event normalization (contract §5), end to end: a real Telnyx fixture is
//! signed and posted, and the frame the routed dialer receives is checked.

use crate::common::*;
use base64::Engine as _;
use callbridge::client::Wss;
use serde_json::{json, Map, Value};

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/telnyx")
}

fn load_fixture(event_type: &str) -> Value {
    let path = fixture_dir().join(format!("{event_type}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A server with user `u1` (no numbers, so only client_state routes to it) connected.
async fn server_with_u1() -> (Server, Wss) {
    server_with_user("u1", json!({"email":"u1@example.com"})).await
}

/// Post `env` and return the frame u1 receives; checks the ack.
async fn post_and_receive(s: &Server, ws: &mut Wss, env: &Value) -> Value {
    let id = env["data"]["id"].as_str().unwrap();
    let r = s.post_webhook(env).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"ok": true, "id": id, "duplicate": false}),
        "ack"
    );
    let ev = next_json(ws).await;
    assert_eq!(ev["id"], id, "{ev}");
    ev
}

/// Telnyx key → callbridge key of the fields every call event carries.
const COMMON: &[(&str, &str)] = &[
    ("call_control_id", "callControlId"),
    ("call_leg_id", "callLegId"),
    ("call_session_id", "callSessionId"),
    ("connection_id", "connectionId"),
    ("direction", "direction"),
    ("from", "from"),
    ("to", "to"),
    ("state", "state"),
    ("client_state", "clientState"),
];

/// Common fields present exactly when the payload had them, converted per §5.
fn check_common(data: &Value, payload: &Map<String, Value>, expected_client_state: &Value) {
    for (tk, ck) in COMMON {
        match payload.get(*tk) {
            Some(v) => {
                let want = match *tk {
                    "direction" => match v.as_str() {
                        Some("incoming") => json!("inbound"),
                        Some("outgoing") => json!("outbound"),
                        _ => v.clone(),
                    },
                    "client_state" => expected_client_state.clone(),
                    _ => v.clone(),
                };
                assert_eq!(data[*ck], want, "data.{ck} for payload.{tk} = {v}");
            }
            None => assert!(
                data.get(*ck).is_none(),
                "data.{ck} must be absent when payload has no {tk}: {data}"
            ),
        }
    }
}

/// §5 extras: (event type, [(Telnyx key, data key)]).
const EXTRAS: &[(&str, &[(&str, &str)])] = &[
    (
        "call.initiated",
        &[
            ("caller_id_name", "callerIdName"),
            ("start_time", "startTime"),
        ],
    ),
    ("call.answered", &[("start_time", "startTime")]),
    ("call.bridged", &[("start_time", "startTime")]),
    (
        "call.hangup",
        &[
            ("hangup_cause", "hangupCause"),
            ("hangup_source", "hangupSource"),
            ("sip_hangup_cause", "sipHangupCause"),
            ("start_time", "startTime"),
            ("end_time", "endTime"),
        ],
    ),
    ("call.dtmf.received", &[("digit", "digit")]),
    (
        "call.recording.saved",
        &[
            ("recording_urls", "recordingUrls"),
            ("public_recording_urls", "publicRecordingUrls"),
            ("recording_started_at", "recordingStartedAt"),
            ("recording_ended_at", "recordingEndedAt"),
            ("channels", "channels"),
        ],
    ),
    ("call.machine.detection.ended", &[("result", "result")]),
    ("call.machine.greeting.ended", &[("result", "result")]),
    (
        "call.gather.ended",
        &[("digits", "digits"), ("status", "status")],
    ),
];

/// Every §5 extra key, for the "only where §5 puts it" check.
const SECTION5_ONLY: &[&str] = &[
    "callerIdName",
    "hangupCause",
    "hangupSource",
    "sipHangupCause",
    "endTime",
    "durationSecs",
    "digit",
    "recordingUrls",
    "publicRecordingUrls",
    "recordingStartedAt",
    "recordingEndedAt",
    "channels",
    "digits",
];

/// The full §5 check of one fixture, delivered to u1 through client_state.
async fn check_fixture(event_type: &str, expected_name: &str) {
    let mut env = load_fixture(event_type);
    assert_eq!(env["data"]["event_type"], event_type);
    let id = uuid::Uuid::new_v4().to_string();
    env["data"]["id"] = json!(id);
    env["data"]["payload"]["client_state"] = json!(client_state_for("u1"));
    let payload = env["data"]["payload"].as_object().unwrap().clone();
    let occurred_at = env["data"]["occurred_at"].as_str().unwrap().to_string();

    let (s, mut ws) = server_with_u1().await;
    let ev = post_and_receive(&s, &mut ws, &env).await;

    assert_eq!(ev["event"], expected_name, "{ev}");
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["ts"], occurred_at.as_str(), "ts is occurred_at");
    assert_eq!(ev["seq"], 1);
    let data = &ev["data"];
    assert!(data.is_object(), "{ev}");
    assert_eq!(
        data["raw"],
        Value::Object(payload.clone()),
        "raw is the payload unchanged"
    );
    assert_eq!(data["occurredAt"], occurred_at.as_str());
    assert_eq!(data["userIds"], json!(["u1"]));
    check_common(data, &payload, &json!({"userId": "u1"}));

    let extras = EXTRAS
        .iter()
        .find(|(t, _)| *t == event_type)
        .map_or(&[][..], |(_, f)| *f);
    for (tk, ck) in extras {
        match payload.get(*tk) {
            Some(v) => assert_eq!(&data[*ck], v, "{event_type}: data.{ck}"),
            None => assert!(data.get(*ck).is_none(), "{event_type}: {ck} not sent"),
        }
    }
    if event_type == "call.hangup" {
        // 10:15:30.123456 → 10:17:42.654321 is 132.53 s: whole seconds, floor.
        assert_eq!(data["durationSecs"], json!(132), "{data}");
    }
    // Extras §5 gives to specific events do not show up on the others.
    for key in SECTION5_ONLY {
        let owned = extras.iter().any(|(_, ck)| ck == key)
            || (*key == "durationSecs" && event_type == "call.hangup");
        if !owned {
            assert!(
                data.get(*key).is_none(),
                "{event_type}: unexpected {key} in {data}"
            );
        }
    }
    expect_silence(&mut ws, SILENCE).await;
    s.stop().await;
}

macro_rules! fixture_tests {
    ($($test:ident: $file:literal => $name:literal,)*) => {
        /// Every fixture this file has a test for.
        const COVERED: &[&str] = &[$($file),*];
        $(
            #[tokio::test]
            async fn $test() {
                check_fixture($file, $name).await;
            }
        )*
    };
}

fixture_tests! {
    fixture_call_ai_gather_ended: "call.ai_gather.ended" => "call-ai-gather-ended",
    fixture_call_answered: "call.answered" => "call-answered",
    fixture_call_bridged: "call.bridged" => "call-bridged",
    fixture_call_dequeued: "call.dequeued" => "call-dequeued",
    fixture_call_dtmf_received: "call.dtmf.received" => "dtmf-received",
    fixture_call_enqueued: "call.enqueued" => "call-enqueued",
    fixture_call_fork_started: "call.fork.started" => "call-fork-started",
    fixture_call_fork_stopped: "call.fork.stopped" => "call-fork-stopped",
    fixture_call_gather_ended: "call.gather.ended" => "call-gather-ended",
    fixture_call_hangup: "call.hangup" => "call-hangup",
    fixture_call_initiated: "call.initiated" => "call-initiated",
    fixture_call_left_queue: "call.left.queue" => "call-left-queue",
    fixture_call_machine_detection_ended: "call.machine.detection.ended" => "call-machine-detection-ended",
    fixture_call_machine_greeting_ended: "call.machine.greeting.ended" => "call-machine-greeting-ended",
    fixture_call_playback_ended: "call.playback.ended" => "call-playback-ended",
    fixture_call_playback_started: "call.playback.started" => "call-playback-started",
    fixture_call_recording_error: "call.recording.error" => "call-recording-error",
    fixture_call_recording_saved: "call.recording.saved" => "call-recording-saved",
    fixture_call_refer_completed: "call.refer.completed" => "call-refer-completed",
    fixture_call_refer_failed: "call.refer.failed" => "call-refer-failed",
    fixture_call_refer_started: "call.refer.started" => "call-refer-started",
    fixture_call_speak_ended: "call.speak.ended" => "call-speak-ended",
    fixture_call_speak_started: "call.speak.started" => "call-speak-started",
    fixture_streaming_started: "streaming.started" => "streaming-started",
    fixture_streaming_stopped: "streaming.stopped" => "streaming-stopped",
}

#[test]
fn every_fixture_file_has_a_test() {
    let mut files: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()?.to_str()? == "json")
                .then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    files.sort();
    let mut covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    covered.sort();
    assert_eq!(files, covered, "a test per fixture file");
}

// ------------------------------------------------------------ specific values

#[tokio::test]
async fn initiated_fixture_values() {
    let mut env = load_fixture("call.initiated");
    env["data"]["id"] = json!(uuid::Uuid::new_v4().to_string());
    env["data"]["payload"]["client_state"] = json!(client_state_for("u1"));
    let (s, mut ws) = server_with_u1().await;
    let ev = post_and_receive(&s, &mut ws, &env).await;
    let d = &ev["data"];
    assert_eq!(ev["event"], "call-initiated");
    assert_eq!(d["callControlId"], "v3:fixture-control-1");
    assert_eq!(d["callLegId"], "fixture-leg-1");
    assert_eq!(d["callSessionId"], "fixture-session-1");
    assert_eq!(d["connectionId"], "1684641123236054244");
    assert_eq!(d["direction"], "inbound");
    assert_eq!(d["from"], "+15551230001");
    assert_eq!(d["to"], "+15559870002");
    assert_eq!(d["state"], "parked");
    assert_eq!(d["callerIdName"], "JANE DOE");
    assert_eq!(d["startTime"], "2026-11-22T10:15:30.123456Z");
    assert_eq!(d["occurredAt"], "2026-11-22T10:15:30.123456Z");
    assert_eq!(d["clientState"], json!({"userId": "u1"}));
    s.stop().await;
}

#[tokio::test]
async fn hangup_fixture_values() {
    let mut env = load_fixture("call.hangup");
    env["data"]["id"] = json!(uuid::Uuid::new_v4().to_string());
    env["data"]["payload"]["client_state"] = json!(client_state_for("u1"));
    let (s, mut ws) = server_with_u1().await;
    let ev = post_and_receive(&s, &mut ws, &env).await;
    let d = &ev["data"];
    assert_eq!(ev["event"], "call-hangup");
    assert_eq!(d["hangupCause"], "normal_clearing");
    assert_eq!(d["hangupSource"], "caller");
    assert_eq!(d["sipHangupCause"], "unspecified");
    assert_eq!(d["startTime"], "2026-11-22T10:15:30.123456Z");
    assert_eq!(d["endTime"], "2026-11-22T10:17:42.654321Z");
    assert_eq!(d["durationSecs"], json!(132));
    assert_eq!(d["state"], "hangup");
    assert!(d.get("direction").is_none(), "fixture has no direction");
    s.stop().await;
}

#[tokio::test]
async fn recording_saved_fixture_values() {
    let mut env = load_fixture("call.recording.saved");
    env["data"]["id"] = json!(uuid::Uuid::new_v4().to_string());
    env["data"]["payload"]["client_state"] = json!(client_state_for("u1"));
    let (s, mut ws) = server_with_u1().await;
    let ev = post_and_receive(&s, &mut ws, &env).await;
    let d = &ev["data"];
    assert_eq!(ev["event"], "call-recording-saved");
    assert_eq!(
        d["recordingUrls"],
        json!({
            "mp3": "https://recordings.example.com/fixture-session-1/7d1f3c2e.mp3?X-Amz-Expires=600",
            "wav": "https://recordings.example.com/fixture-session-1/7d1f3c2e.wav?X-Amz-Expires=600"
        })
    );
    assert_eq!(
        d["publicRecordingUrls"],
        json!({
            "mp3": "https://public.recordings.example.com/fixture-session-1.mp3",
            "wav": "https://public.recordings.example.com/fixture-session-1.wav"
        })
    );
    assert_eq!(d["recordingStartedAt"], "2026-11-22T10:15:34.610250Z");
    assert_eq!(d["recordingEndedAt"], "2026-11-22T10:17:42.654321Z");
    assert_eq!(d["channels"], "dual");
    assert!(d.get("from").is_none() && d.get("to").is_none());
    s.stop().await;
}

#[tokio::test]
async fn dtmf_machine_and_gather_values() {
    let (s, mut ws) = server_with_u1().await;
    for (t, name, key, want) in [
        ("call.dtmf.received", "dtmf-received", "digit", json!("2")),
        (
            "call.machine.detection.ended",
            "call-machine-detection-ended",
            "result",
            json!("human"),
        ),
        (
            "call.machine.greeting.ended",
            "call-machine-greeting-ended",
            "result",
            json!("beep_detected"),
        ),
        (
            "call.gather.ended",
            "call-gather-ended",
            "digits",
            json!("2401"),
        ),
    ] {
        let mut env = load_fixture(t);
        env["data"]["id"] = json!(uuid::Uuid::new_v4().to_string());
        env["data"]["payload"]["client_state"] = json!(client_state_for("u1"));
        let ev = post_and_receive(&s, &mut ws, &env).await;
        assert_eq!(ev["event"], name);
        assert_eq!(ev["data"][key], want, "{t}");
        if t == "call.gather.ended" {
            assert_eq!(ev["data"]["status"], "valid");
        }
    }
    s.stop().await;
}

// ------------------------------------------------------------ synthetic events

/// A call payload to u1's number (+15551230001), routed by number.
async fn server_with_u1_number() -> (Server, Wss) {
    server_with_user("u1", json!({"phoneNumbers":["+15551230001"]})).await
}

#[tokio::test]
async fn unknown_event_type_is_normalized_and_delivered() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    payload["brand_new_field"] = json!({"x": [1, 2, 3]});
    let env = envelope("call.something_new.happened", payload.clone());
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["event"], "call-something-new-happened");
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["ts"], env["data"]["occurred_at"]);
    let d = &ev["data"];
    assert_eq!(d["raw"], payload);
    assert_eq!(d["userIds"], json!(["u1"]));
    check_common(d, payload.as_object().unwrap(), &Value::Null);
    assert_eq!(d["occurredAt"], env["data"]["occurred_at"]);
    s.stop().await;
}

#[tokio::test]
async fn non_call_prefixed_unknown_type_keeps_dashes_rule() {
    let (s, mut ws) = server_with_u1_number().await;
    let env = envelope(
        "conference.participant_joined.v2",
        call_payload("c1", "+15559990000", "+15551230001"),
    );
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["event"], "conference-participant-joined-v2");
    s.stop().await;
}

#[tokio::test]
async fn client_state_plain_text_is_decoded() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    payload["client_state"] = json!(b64("hello"));
    let env = envelope("call.answered", payload.clone());
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["data"]["clientState"], "hello");
    assert_eq!(ev["data"]["raw"], payload, "raw keeps the base64 text");
    assert_eq!(ev["data"]["userIds"], json!(["u1"]));
    s.stop().await;
}

#[tokio::test]
async fn client_state_not_base64_is_kept_as_sent() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    payload["client_state"] = json!("%%%");
    let env = envelope("call.answered", payload.clone());
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["data"]["clientState"], "%%%");
    assert_eq!(ev["data"]["raw"], payload);
    s.stop().await;
}

#[tokio::test]
async fn client_state_json_other_than_user_is_parsed() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    payload["client_state"] = json!(b64(r#"{"campaign":"spring","n":3}"#));
    let env = envelope("call.answered", payload);
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(
        ev["data"]["clientState"],
        json!({"campaign": "spring", "n": 3})
    );
    s.stop().await;
}

#[tokio::test]
async fn outgoing_direction_is_outbound() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15551230001", "+15559990000");
    payload["direction"] = json!("outgoing");
    let env = envelope("call.initiated", payload);
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["data"]["direction"], "outbound");
    s.stop().await;
}

#[tokio::test]
async fn hangup_duration_rounds_down_to_whole_seconds() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    // 2.8 s: rounding would give 3, floor gives 2.
    payload["start_time"] = json!("2026-11-22T10:00:00.100Z");
    payload["end_time"] = json!("2026-11-22T10:00:02.900Z");
    payload["hangup_cause"] = json!("normal_clearing");
    let env = envelope("call.hangup", payload);
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["data"]["durationSecs"], json!(2), "{ev}");
    assert_eq!(ev["data"]["startTime"], "2026-11-22T10:00:00.100Z");
    assert_eq!(ev["data"]["endTime"], "2026-11-22T10:00:02.900Z");
    assert!(ev["data"].get("hangupSource").is_none(), "not sent");
    s.stop().await;
}

#[tokio::test]
async fn hangup_without_end_time_has_no_duration() {
    let (s, mut ws) = server_with_u1_number().await;
    let mut payload = call_payload("c1", "+15559990000", "+15551230001");
    payload["start_time"] = json!("2026-11-22T10:00:00Z");
    payload["hangup_cause"] = json!("user_busy");
    let env = envelope("call.hangup", payload);
    let ev = post_and_receive(&s, &mut ws, &env).await;
    assert_eq!(ev["data"]["hangupCause"], "user_busy");
    assert!(ev["data"].get("durationSecs").is_none(), "{ev}");
    assert!(ev["data"].get("endTime").is_none(), "{ev}");
    s.stop().await;
}

#[tokio::test]
async fn event_frame_has_exactly_the_contract_keys() {
    let (s, mut ws) = server_with_u1_number().await;
    let env = envelope(
        "call.initiated",
        call_payload("c1", "+15559990000", "+15551230001"),
    );
    let ev = post_and_receive(&s, &mut ws, &env).await;
    let mut keys: Vec<&str> = ev.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["data", "event", "id", "seq", "ts"], "{ev}");
    s.stop().await;
}
