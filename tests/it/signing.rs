//! Signed client messages (contract §9) on the real server: what
//! `connected` announces, signed messages applied, every refusal answered
//! and not applied, the key following an `auth` refresh, and a signature
//! made by an independent implementation (Python's `hmac`) accepted.

use std::process::Command;

use crate::common::*;
use callbridge::client::Wss;
use callbridge::clock::now_ms;
use callbridge::signing::{envelope_json, sign};
use serde_json::{json, Value};

/// Connect as `user` with a fresh token: (socket, token, connected).
async fn connect_with_token(s: &Server, user: &str) -> (Wss, String, Value) {
    let token = s.token(user);
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    let (connected, _) = read_connected(&mut ws).await;
    (ws, token, connected)
}

fn nonce(i: u8) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([i; 16])
}

fn signed_with(token: &str, user: &str, inner: &str, ts: i64, nonce: &str) -> Value {
    json!({"signed": inner, "timestamp": ts, "nonce": nonce,
           "signature": sign(token, user, inner, ts, nonce)})
}

async fn expect_error(ws: &mut Wss, code: &str) -> Value {
    let e = next_json(ws).await;
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["data"]["code"], code, "{e}");
    e["data"].clone()
}

async fn status_of(s: &Server, user: &str) -> Value {
    s.admin("GET", &format!("/api/users/{user}"), None)
        .await
        .json()["status"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_announces_signing_only_when_on() {
    for (mode, want) in [
        ("off", None),
        (
            "optional",
            Some(json!({"alg":"HMAC-SHA256","required":false,"windowSecs":300})),
        ),
        (
            "required",
            Some(json!({"alg":"HMAC-SHA256","required":true,"windowSecs":300})),
        ),
    ] {
        let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", mode)]).await;
        s.put_users(&["u1"]).await;
        let (_ws, connected, _) = s.connect("u1").await;
        let data = connected["data"].as_object().unwrap();
        match want {
            None => assert!(!data.contains_key("signing"), "{connected}"),
            Some(w) => assert_eq!(data["signing"], w, "{mode}"),
        }
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_applies_signed_messages_and_refuses_the_rest() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", "required")]).await;
    s.put_users(&["u1", "u2"]).await;
    let (mut ws, token, _) = connect_with_token(&s, "u1").await;
    let (mut other, _, _) = s.connect("u1").await;
    let (mut u2, _, _) = s.connect("u2").await;

    // ping and auth may stay unsigned.
    assert_alive(&mut ws).await;
    // Unsigned status and send: refused, not applied.
    send_json(&mut ws, json!({"type":"status","status":"busy"})).await;
    expect_error(&mut ws, "signature-required").await;
    send_json(
        &mut ws,
        json!({"type":"send","to":"u2","payload":1,"ref":"plain"}),
    )
    .await;
    let e = expect_error(&mut ws, "signature-required").await;
    assert_eq!(e["ref"], "plain");
    assert_eq!(status_of(&s, "u1").await, "available");

    // Signed: applied as if sent plainly.
    let inner = r#"{"type":"status","status":"busy"}"#;
    send_json(
        &mut ws,
        signed_with(&token, "u1", inner, now_ms(), &nonce(1)),
    )
    .await;
    let changed = next_json(&mut other).await;
    assert_eq!(changed["event"], "status-changed");
    assert_eq!(changed["data"]["status"], "busy");
    let inner = r#"{"type":"send","to":"u2","payload":"signed hi","ref":"s1"}"#;
    send_json(
        &mut ws,
        signed_with(&token, "u1", inner, now_ms(), &nonce(2)),
    )
    .await;
    let m = next_json(&mut u2).await;
    assert_eq!(
        (m["event"].as_str(), m["data"]["payload"].as_str()),
        (Some("message"), Some("signed hi"))
    );
    expect_silence(&mut u2, SILENCE).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signing_refusal_is_answered_and_not_applied() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", "optional")]).await;
    s.put_users(&["u1"]).await;
    let (mut ws, token, _) = connect_with_token(&s, "u1").await;
    let busy = r#"{"type":"status","status":"busy"}"#;
    let now = now_ms();

    // Wrong key: another token's, and another user's.
    let other_token = token_for("u1", 600);
    assert_ne!(other_token, token);
    send_json(
        &mut ws,
        signed_with(&other_token, "u1", busy, now, &nonce(1)),
    )
    .await;
    expect_error(&mut ws, "bad-signature").await;
    send_json(&mut ws, signed_with(&token, "u2", busy, now, &nonce(2))).await;
    expect_error(&mut ws, "bad-signature").await;
    // The signed text changed after signing.
    let mut tampered = signed_with(&token, "u1", busy, now, &nonce(3));
    tampered["signed"] = json!(r#"{"type":"status","status":"away"}"#);
    send_json(&mut ws, tampered).await;
    expect_error(&mut ws, "bad-signature").await;
    // `signed` not a JSON object, correctly signed: JSON of another kind,
    // and text that is not JSON at all.
    send_json(&mut ws, signed_with(&token, "u1", "[1,2]", now, &nonce(4))).await;
    expect_error(&mut ws, "bad-signature").await;
    send_json(&mut ws, signed_with(&token, "u1", "{oops", now, &nonce(8))).await;
    expect_error(&mut ws, "bad-signature").await;
    // Old and future timestamps, correctly signed for them.
    let old = now - 301_000;
    send_json(&mut ws, signed_with(&token, "u1", busy, old, &nonce(5))).await;
    expect_error(&mut ws, "stale").await;
    send_json(
        &mut ws,
        signed_with(&token, "u1", busy, now + 301_000, &nonce(6)),
    )
    .await;
    expect_error(&mut ws, "stale").await;
    assert_eq!(
        status_of(&s, "u1").await,
        "available",
        "nothing refused was applied"
    );
    // A stale `send` whose signature verified echoes its `ref`; one whose
    // signature does not verify does not (nothing in it is trusted).
    let send = r#"{"type":"send","to":"u1","payload":1,"ref":"late"}"#;
    send_json(&mut ws, signed_with(&token, "u1", send, old, &nonce(10))).await;
    assert_eq!(expect_error(&mut ws, "stale").await["ref"], "late");
    send_json(
        &mut ws,
        signed_with(&other_token, "u1", send, now, &nonce(11)),
    )
    .await;
    assert!(expect_error(&mut ws, "bad-signature")
        .await
        .get("ref")
        .is_none());

    // A nonce used once is refused the second time.
    let away = r#"{"type":"status","status":"away"}"#;
    let once = signed_with(&token, "u1", away, now, &nonce(7));
    send_json(&mut ws, once.clone()).await;
    assert_alive(&mut ws).await;
    assert_eq!(status_of(&s, "u1").await, "away");
    let replay_of_busy = {
        let mut v = signed_with(&token, "u1", busy, now, &nonce(7));
        v["timestamp"] = json!(now);
        v
    };
    send_json(&mut ws, replay_of_busy).await;
    expect_error(&mut ws, "replayed").await;
    send_json(&mut ws, once).await;
    expect_error(&mut ws, "replayed").await;
    assert_eq!(status_of(&s, "u1").await, "away");

    // A malformed envelope is a bad request; the connection stays open.
    send_json(&mut ws, json!({"signed": busy, "timestamp": "soon"})).await;
    expect_error(&mut ws, "bad-request").await;
    assert_alive(&mut ws).await;
    let metrics = text(&s.get("/metrics").await.unwrap());
    for (reason, n) in [("bad-signature", 6), ("stale", 3), ("replayed", 2)] {
        let line = format!("callbridge_signature_failures_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_auth_refresh_the_new_tokens_key_signs() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", "required")]).await;
    s.put_users(&["u1"]).await;
    let (mut ws, old_token, _) = connect_with_token(&s, "u1").await;
    // A token minted a second later differs (its iat and exp).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new_token = token_for("u1", 3600);
    assert_ne!(new_token, old_token);
    send_json(&mut ws, json!({"type":"auth","token":new_token})).await;
    assert_alive(&mut ws).await;
    let away = r#"{"type":"status","status":"away"}"#;
    send_json(
        &mut ws,
        signed_with(&old_token, "u1", away, now_ms(), &nonce(1)),
    )
    .await;
    expect_error(&mut ws, "bad-signature").await;
    let frame = envelope_json(&new_token, "u1", away, now_ms());
    ws_send_text(&mut ws, frame).await;
    assert_alive(&mut ws).await;
    assert_eq!(status_of(&s, "u1").await, "away");
    s.stop().await;
}

async fn ws_send_text(ws: &mut Wss, text: String) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
}

/// The signature from Python's standard library, computed exactly as
/// contract §9 words it, is accepted by the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_made_with_python_hmac_is_accepted() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_SIGNING", "required")]).await;
    s.put_users(&["u1", "u2"]).await;
    let (mut ws, token, _) = connect_with_token(&s, "u1").await;
    let (mut u2, _, _) = s.connect("u2").await;
    let inner = r#"{"type":"send","to":"u2","payload":{"t":"h\u00e9 ☎"},"ref":"py"}"#;
    let ts = now_ms();
    let nonce = nonce(9);
    let script = r#"
import base64, hashlib, hmac, sys
token, user, ts, nonce, signed = sys.argv[1:6]
key = hashlib.sha256(f"{token}:{user}:{int(ts) // 300000}".encode()).hexdigest()
mac = hmac.new(key.encode(), f"{ts}.{nonce}.{signed}".encode(), hashlib.sha256)
print(base64.b64encode(mac.digest()).decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script, &token, "u1", &ts.to_string(), &nonce, inner])
        .output()
        .expect("python3 runs (scripts/test.sh needs it for SecantusDB)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signature = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(signature, sign(&token, "u1", inner, ts, &nonce));
    send_json(
        &mut ws,
        json!({"signed": inner, "timestamp": ts, "nonce": nonce, "signature": signature}),
    )
    .await;
    let m = next_json(&mut u2).await;
    assert_eq!(m["data"]["payload"], json!({"t":"hé ☎"}));
    assert_eq!(m["data"]["ref"], "py");
    s.stop().await;
}

/// Arbitrary envelopes against the live server (required mode): each is
/// answered with an error, none is applied, the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_envelopes_never_apply_and_never_close() {
    use crate::common::edges::Rng;
    use base64::Engine as _;
    let s = Server::start_with(&[
        ("CALLBRIDGE_CLIENT_SIGNING", "required"),
        ("CALLBRIDGE_CLIENT_RATE_PER_MIN", "100000"),
    ])
    .await;
    s.put_users(&["u1"]).await;
    let (mut ws, token, _) = connect_with_token(&s, "u1").await;
    let mut rng = Rng::new(0x5eed_0011);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let inners = [
        r#"{"type":"status","status":"busy"}"#,
        r#"{"type":"send","to":"u1","payload":"x"}"#,
        "[]",
        "not json",
        "",
    ];
    for i in 0..200u64 {
        let inner = inners[(rng.next_u64() % inners.len() as u64) as usize];
        let ts = now_ms() + (rng.next_u64() % 1_000_000) as i64 - 500_000;
        let nonce_len = (rng.next_u64() % 24) as usize;
        let nonce = b64(&rng.bytes(nonce_len));
        // A signature: random bytes, or a real one with the wrong key or
        // for different text.
        let signature = match i % 3 {
            0 => b64(&rng.bytes(32)),
            1 => sign(&format!("{token}x"), "u1", inner, ts, &nonce),
            _ => sign(&token, "u1", &format!("{inner} "), ts, &nonce),
        };
        let env = json!({"signed": inner, "timestamp": ts, "nonce": nonce, "signature": signature});
        send_json(&mut ws, env).await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["event"], "error", "{e}");
        assert_eq!(e["data"]["code"], "bad-signature", "{e}");
    }
    assert_alive(&mut ws).await;
    assert_eq!(status_of(&s, "u1").await, "available");
    let (_, connected, _) = s.connect("u1").await;
    assert_eq!(connected["data"]["lastSeq"], 0, "no message was stored");
    s.stop().await;
}
