//! Property tests (issue #4): untrusted input never panics the webhook path
//! — signature verification, envelope parsing, normalization and
//! `client_state` decoding — and a real server answers any signed body with
//! 200 or 400, never 5xx, and stays up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use callbridge::normalize::{decode_client_state, event_name, normalize};
use callbridge::telnyx::{EnvelopeError, Signer, Verifier, VerifyError};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{json, Map, Value};

// ------------------------------------------------------------ strategies

/// Event types: those normalization knows, plus unknown and malformed ones.
const EVENT_TYPES: &[&str] = &[
    "call.initiated",
    "call.answered",
    "call.bridged",
    "call.hangup",
    "call.dtmf.received",
    "call.recording.saved",
    "call.machine.detection.ended",
    "call.machine.greeting.ended",
    "call.gather.ended",
    "call.recording.error",
    "call.speak.ended",
    "call.playback.ended",
    "call.ai_gather.ended",
    "call.enqueued",
    "call.dequeued",
    "call.refer.completed",
    "streaming.failed",
    "call.something.new",
];

/// Payload keys Telnyx sends (and normalization reads).
const PAYLOAD_KEYS: &[&str] = &[
    "call_control_id",
    "call_leg_id",
    "call_session_id",
    "connection_id",
    "direction",
    "from",
    "to",
    "state",
    "client_state",
    "caller_id_name",
    "start_time",
    "end_time",
    "hangup_cause",
    "hangup_source",
    "sip_hangup_cause",
    "digit",
    "digits",
    "status",
    "result",
    "recording_urls",
    "public_recording_urls",
    "recording_started_at",
    "recording_ended_at",
    "channels",
    "queue",
    "stream_id",
];

/// RFC 3339-ish timestamps, including extreme, invalid and leap-second ones.
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("9999-12-31T23:59:59.999999999Z".to_string()),
        Just("0000-01-01T00:00:00Z".to_string()),
        Just("9999-12-31T23:59:59-23:59".to_string()),
        Just("0000-01-01T00:00:00+23:59".to_string()),
        Just("2026-12-31T23:59:60Z".to_string()),
        Just("2026-02-30T10:00:00Z".to_string()),
        Just("2026-11-22T10:15:30.123456789012Z".to_string()),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:[0-9]{2})",
        "(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?Z",
    ]
}

/// Strings that mean something to normalization or routing.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        timestamp(),
        Just("incoming".to_string()),
        Just("outgoing".to_string()),
        "\\+?[0-9 ().-]{0,20}",
        any::<Vec<u8>>().prop_map(|b| STANDARD.encode(b)),
        any::<String>().prop_map(|s| URL_SAFE_NO_PAD.encode(s)),
        json_value_no_float(2).prop_map(|v| STANDARD.encode(v.to_string())),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
        interesting_string().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(PAYLOAD_KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON trees.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON without floats (those need not survive a text round trip exactly).
fn json_value_no_float(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[a-z0-9_-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A payload object: known Telnyx keys with arbitrary values, plus others.
fn payload() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(key(), json_value(), 0..12).prop_map(|m| m.into_iter().collect())
}

/// A Telnyx envelope that is well-formed: valid id and event type, a
/// payload object, optional `occurred_at`.
fn valid_envelope() -> impl Strategy<Value = Value> {
    (
        "[A-Za-z0-9-]{1,40}",
        prop_oneof![
            3 => prop::sample::select(EVENT_TYPES).prop_map(str::to_string),
            1 => "[a-z][a-z0-9_.-]{0,30}",
        ],
        proptest::option::of(timestamp()),
        payload(),
        proptest::option::of(json_value()),
    )
        .prop_map(|(id, event_type, occurred_at, payload, meta)| {
            let mut data = json!({
                "record_type": "event",
                "id": id,
                "event_type": event_type,
                "payload": Value::Object(payload),
            });
            if let Some(t) = occurred_at {
                data["occurred_at"] = json!(t);
            }
            let mut env = json!({ "data": data });
            if let Some(m) = meta {
                env["meta"] = m;
            }
            env
        })
}

/// Envelope-like JSON where any part may be of the wrong shape.
fn envelope_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![json_value(), "[A-Za-z0-9-]{1,40}".prop_map(Value::String)],
        prop_oneof![
            json_value(),
            prop::sample::select(EVENT_TYPES).prop_map(|t| Value::String(t.into()))
        ],
        prop_oneof![json_value(), timestamp().prop_map(Value::String)],
        prop_oneof![json_value(), payload().prop_map(Value::Object)],
        prop_oneof![Just(json!("event")), json_value()],
    )
        .prop_map(|(id, event_type, occurred_at, payload, record_type)| {
            json!({"data": {
                "id": id,
                "event_type": event_type,
                "occurred_at": occurred_at,
                "payload": payload,
                "record_type": record_type,
            }})
        })
}

/// Bytes a webhook body might be: anything, any JSON, envelope-ish JSON,
/// a well-formed envelope, or one of those cut short.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        envelope_like().prop_map(|v| v.to_string().into_bytes()),
        valid_envelope().prop_map(|v| v.to_string().into_bytes()),
        (valid_envelope(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
            let s = v.to_string().into_bytes();
            let cut = i.index(s.len() + 1);
            s[..cut].to_vec()
        }),
    ]
}

/// A realistic "now" in ms (1970–2100).
fn now_ms() -> impl Strategy<Value = i64> {
    0i64..4_102_444_800_000
}

fn signer() -> &'static Signer {
    use std::sync::OnceLock;
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::generate().0)
}

const TOLERANCE: u64 = 300;

/// Sign `body` at `ts` and verify it with the right key.
fn signed_and_verified(body: &[u8], ts: i64) -> callbridge::telnyx::Verified {
    let sig = signer().sign(ts, body);
    Verifier::new(signer().public_key(), TOLERANCE)
        .verify(
            Some(sig.as_bytes()),
            Some(ts.to_string().as_bytes()),
            Bytes::copy_from_slice(body),
            ts,
        )
        .expect("a body signed with the right key verifies")
}

/// What normalization promises for any parsed envelope. `body` is what was
/// signed; it is compared as the daemon reads it (serde_json's default float
/// parsing is not exact, so not against the generated `Value`).
fn check_normalized(body: &[u8], env: &callbridge::telnyx::Envelope, now: i64) {
    let env_json: Value = serde_json::from_slice(body).expect("a parsed envelope is JSON");
    let n = normalize(env, now);
    let event_type = env_json["data"]["event_type"].as_str().unwrap();
    assert_eq!(n.event, event_name(event_type));
    if event_type != "call.dtmf.received" {
        assert!(!n.event.contains(['.', '_']), "{}", n.event);
    }
    assert_eq!(n.id, env_json["data"]["id"].as_str().unwrap());
    // `raw` is the payload unchanged (JSON null counts as empty).
    let payload = match &env_json["data"]["payload"] {
        Value::Null => Value::Object(Map::new()),
        p => p.clone(),
    };
    assert_eq!(n.data["raw"], payload);
    assert_eq!(n.data["occurredAt"], Value::String(n.ts.clone()));
    time::OffsetDateTime::parse(&n.ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("ts {:?} is not RFC 3339: {e}", n.ts));
    if let Some(d) = n.data.get("durationSecs") {
        assert!(d.as_i64().is_some_and(|d| d >= 0), "durationSecs {d}");
    }
    match payload.get("direction").and_then(Value::as_str) {
        Some("incoming") => assert_eq!(n.data["direction"], "inbound"),
        Some("outgoing") => assert_eq!(n.data["direction"], "outbound"),
        _ => {}
    }
    // The event data serializes (it is what goes over the wire).
    serde_json::to_string(&Value::Object(n.data)).unwrap();
}

/// `decode_client_state` per contract §5.
fn expected_client_state(encoded: &str, decoded: &[u8]) -> Value {
    match std::str::from_utf8(decoded) {
        Ok(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        Err(_) => Value::String(encoded.into()),
    }
}

// ------------------------------------------------------------ verification

proptest! {
    #[test]
    fn verify_never_panics_on_arbitrary_input(
        key in any::<[u8; 32]>(),
        tolerance in any::<u64>(),
        signature in proptest::option::of(prop_oneof![
            any::<Vec<u8>>(),
            prop::collection::vec(any::<u8>(), 64).prop_map(|b| STANDARD.encode(b).into_bytes()),
            any::<Vec<u8>>().prop_map(|b| URL_SAFE.encode(b).into_bytes()),
        ]),
        timestamp in proptest::option::of(prop_oneof![
            any::<Vec<u8>>(),
            "[0-9]{0,14}".prop_map(String::into_bytes),
            "[ +-]?[0-9]{1,12} ?".prop_map(String::into_bytes),
        ]),
        body in any::<Vec<u8>>(),
        now in any::<i64>(),
    ) {
        let _ = Verifier::new(key, tolerance).verify(
            signature.as_deref(),
            timestamp.as_deref(),
            Bytes::from(body),
            now,
        );
    }

    #[test]
    fn only_the_signed_body_and_timestamp_verify(
        body in any::<Vec<u8>>(),
        flip in any::<prop::sample::Index>(),
        ts in 1_000_000_000i64..4_000_000_000,
        skew in -(TOLERANCE as i64)..=(TOLERANCE as i64),
        other_ts in 1_000_000_000i64..4_000_000_000,
    ) {
        let v = Verifier::new(signer().public_key(), TOLERANCE);
        let sig = signer().sign(ts, &body);
        let ts_s = ts.to_string();
        // Within the tolerance the signed body verifies, byte for byte.
        let ok = v.verify(Some(sig.as_bytes()), Some(ts_s.as_bytes()), Bytes::from(body.clone()), ts + skew);
        let ok = ok.expect("signed body verifies");
        prop_assert_eq!(ok.body().as_ref(), &body[..]);
        prop_assert_eq!(ok.timestamp(), ts);
        // One bit changed: refused.
        if !body.is_empty() {
            let mut altered = body.clone();
            let i = flip.index(altered.len());
            altered[i] ^= 0x01;
            let r = v.verify(Some(sig.as_bytes()), Some(ts_s.as_bytes()), Bytes::from(altered), ts);
            prop_assert_eq!(r.unwrap_err(), VerifyError::BadSignature);
        }
        // Another timestamp with the same signature: refused.
        if other_ts != ts {
            let o = other_ts.to_string();
            let r = v.verify(Some(sig.as_bytes()), Some(o.as_bytes()), Bytes::from(body.clone()), other_ts);
            prop_assert_eq!(r.unwrap_err(), VerifyError::BadSignature);
        }
    }

    #[test]
    fn parse_of_signed_arbitrary_bytes_never_panics(body in body_bytes(), now in now_ms()) {
        let verified = signed_and_verified(&body, 1_795_000_000);
        match verified.parse() {
            Ok(env) => {
                // Accepted envelopes satisfy the envelope checks.
                prop_assert!(!env.data.id.is_empty() && env.data.id.len() <= 128);
                prop_assert!(!env.data.event_type.is_empty());
                check_normalized(&body, &env, now);
            }
            Err(EnvelopeError::NotJson) => {
                prop_assert!(serde_json::from_slice::<Value>(&body).is_err());
            }
            Err(EnvelopeError::NotEnvelope(_)) => {}
        }
    }

    #[test]
    fn well_formed_envelopes_are_accepted_and_normalize(env in valid_envelope(), now in now_ms()) {
        let body = env.to_string();
        let verified = signed_and_verified(body.as_bytes(), 1_795_000_000);
        let parsed = verified.parse();
        prop_assert!(parsed.is_ok(), "well-formed envelope refused: {:?}", parsed.err());
        check_normalized(body.as_bytes(), &parsed.unwrap(), now);
    }

    #[test]
    fn normalize_never_panics_on_arbitrary_payloads(env in envelope_like(), now in now_ms()) {
        let body = env.to_string();
        let verified = signed_and_verified(body.as_bytes(), 1_795_000_000);
        if let Ok(parsed) = verified.parse() {
            check_normalized(body.as_bytes(), &parsed, now);
        }
    }

    #[test]
    fn client_state_of_any_string_decodes_without_panic(s in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9+/=_-]{0,64}",
    ]) {
        let v = decode_client_state(&s);
        // Not base64 at all: the original string.
        if callbridge::telnyx::decode_base64(&s).is_none() {
            prop_assert_eq!(v, Value::String(s));
        }
    }

    #[test]
    fn client_state_base64_decodes_per_contract(
        raw in prop_oneof![
            any::<Vec<u8>>(),
            any::<String>().prop_map(String::into_bytes),
            json_value().prop_map(|v| v.to_string().into_bytes()),
        ],
        alphabet in 0usize..4,
    ) {
        let engine = &[STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD][alphabet];
        let encoded = engine.encode(&raw);
        prop_assert_eq!(decode_client_state(&encoded), expected_client_state(&encoded, &raw));
    }
}

#[test]
fn client_state_json_object_round_trips() {
    let mut runner = TestRunner::new(RunnerConfig::with_cases(256));
    runner
        .run(&json_value_no_float(3), |v| {
            let encoded = STANDARD.encode(v.to_string());
            prop_assert_eq!(decode_client_state(&encoded), v);
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------ real server

/// A body for the real server: anything from `body_bytes`, or a
/// well-formed envelope routed to `u1` through its client_state.
fn server_body() -> impl Strategy<Value = (Vec<u8>, bool)> {
    prop_oneof![
        body_bytes().prop_map(|b| (b, false)),
        valid_envelope().prop_map(|v| (v.to_string().into_bytes(), true)),
        (valid_envelope(), any::<bool>()).prop_map(|(mut v, user_id)| {
            let key = if user_id { "userId" } else { "user_id" };
            v["data"]["payload"]["client_state"] =
                json!(STANDARD.encode(json!({ key: "u1" }).to_string()));
            (v.to_string().into_bytes(), true)
        }),
    ]
}

#[test]
// The lock is taken inside `block_on` on this thread only; nothing else
// contends for it across the await.
#[allow(clippy::await_holding_lock)]
fn real_server_answers_signed_arbitrary_bodies_with_200_or_400() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(crate::common::Server::start());
    rt.block_on(s.put_user("u1", json!({"phoneNumbers":["+15551230001"]})));
    let (ws, _, _) = rt.block_on(s.connect("u1"));
    let poster = Mutex::new(rt.block_on(crate::common::edges::Poster::connect(&s)));
    let mut config = RunnerConfig::with_cases(64);
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let (ok, bad) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let result = runner.run(&server_body(), |(body, well_formed)| {
        let r = rt.block_on(async {
            let mut p = poster.lock().unwrap();
            tokio::time::timeout(crate::common::WAIT, p.post(&s.signer, &body))
                .await
                .expect("webhook answered in time")
        });
        let text = String::from_utf8_lossy(&r.body).to_string();
        prop_assert!(
            r.status == 200 || r.status == 400,
            "status {} for a signed body: {}",
            r.status,
            text
        );
        if well_formed {
            prop_assert_eq!(r.status, 200, "well-formed envelope refused: {}", text);
        }
        let v = r.json();
        [&ok, &bad][usize::from(r.status != 200)].fetch_add(1, Ordering::Relaxed);
        if r.status == 200 {
            prop_assert_eq!(&v["ok"], &json!(true), "{}", text);
        } else {
            prop_assert!(v["error"].is_string(), "error body: {}", text);
        }
        Ok(())
    });
    eprintln!(
        "signed bodies: {} answered 200, {} answered 400",
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed)
    );
    // The server is still up and the connected client still served.
    rt.block_on(async {
        let mut ws = ws;
        let h = s.get("/health").await.expect("/health after the run");
        assert_eq!(h.status, 200);
        crate::common::send_json(&mut ws, json!({"type":"ping","data":{}})).await;
        loop {
            let m = crate::common::next_json(&mut ws).await;
            if m["event"] == "pong" {
                break;
            }
            assert!(m.get("seq").is_some(), "unexpected message {m}");
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(s.stop());
}

/// Payload shapes a document store may choke on: keys with `$`, `.`, NUL,
/// an empty key, deep nesting, large numbers. A signed, well-formed
/// envelope is answered 200 (never 5xx) and its `raw` reaches the user
/// unchanged.
#[tokio::test]
async fn store_hostile_payloads_are_stored_and_delivered() {
    let s = crate::common::Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let mut deep = json!("bottom");
    for _ in 0..110 {
        deep = json!({ "d": deep });
    }
    let cases = [
        ("dollar key", json!({"$where": "1", "$set": {"x": 1}})),
        ("dotted key", json!({"a.b": 1, "sip.headers": {"x.y": "z"}})),
        ("NUL in key", json!({"nul\u{0}key": 1})),
        ("empty key", json!({"": 1})),
        ("deep nesting", json!({ "nested": deep })),
        (
            "big numbers",
            json!({"u": u64::MAX, "i": i64::MIN, "f": 1.5e300}),
        ),
        ("NUL in value", json!({"v": "a\u{0}b"})),
    ];
    for (label, extra) in cases {
        let mut p = crate::common::call_payload(label, "+15559990000", "+15557770000");
        p["client_state"] = json!(crate::common::client_state_for("u1"));
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let env = crate::common::envelope("call.speak.ended", p.clone());
        let r = s.post_webhook(&env).await;
        assert_eq!(
            r.status,
            200,
            "{label}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let ev = crate::common::next_json(&mut ws).await;
        assert_eq!(ev["id"], env["data"]["id"], "{label}");
        assert_eq!(ev["data"]["raw"], p, "{label}: raw unchanged");
    }
    // And a resume reads them all back from the store.
    let mut again = s
        .ws_raw(&format!("token={}&since=0", s.token("u1")), &[])
        .await;
    assert_eq!(
        crate::common::next_json(&mut again).await["event"],
        "connected"
    );
    for seq in 1..=7u64 {
        let ev = crate::common::next_json(&mut again).await;
        assert_eq!(ev["seq"], seq, "{ev}");
    }
    assert_eq!(
        crate::common::next_json(&mut again).await["event"],
        "resumed"
    );
    s.stop().await;
}

/// `raw` is "the Telnyx payload object unchanged" (contract §5): numbers
/// keep their exact value. A float that needs all 17 significant digits
/// must come out as the same number, not a neighbouring one.
#[tokio::test]
async fn raw_keeps_float_values_exactly() {
    use futures_util::StreamExt;
    let s = crate::common::Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let literals = [
        "-1.9085990296536638e+86",
        "0.30000000000000004",
        "2.2250738585072014e-308",
    ];
    let mut p = crate::common::call_payload("c1", "+15559990000", "+15557770000");
    p["client_state"] = json!(crate::common::client_state_for("u1"));
    let payload_text = p.to_string();
    let extra: Vec<String> = literals
        .iter()
        .enumerate()
        .map(|(i, l)| format!("\"f{i}\":{l}"))
        .collect();
    let payload_text = format!(
        "{},{}}}",
        &payload_text[..payload_text.len() - 1],
        extra.join(",")
    );
    let body = format!(
        r#"{{"data":{{"record_type":"event","id":"float-1","event_type":"call.speak.ended","payload":{payload_text}}}}}"#
    );
    let r = s.post_signed(body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = loop {
        match tokio::time::timeout(crate::common::WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    let wrong: Vec<&str> = literals
        .iter()
        .copied()
        .filter(|l| !text.contains(l))
        .collect();
    assert!(
        wrong.is_empty(),
        "raw changed the values of {wrong:?}; frame: {text}"
    );
    s.stop().await;
}
