//! WebSocket protocol messages, resume, limits, privacy and broadcast
//! (contract §3 `/api/broadcast` and §4).

use std::time::Duration;

use crate::common::*;
use callbridge::client::Wss;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ------------------------------------------------------------------ helpers

async fn connect_token(s: &Server, token: &str) -> (Wss, Value, Value) {
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    let (c, snap) = read_connected(&mut ws).await;
    (ws, c, snap)
}

/// Text frames received before the close frame, and the close.
async fn texts_until_close(ws: &mut Wss) -> (Vec<Value>, u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut texts = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for close");
        match msg {
            Some(Ok(Message::Text(t))) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return (texts, u16::from(f.code), f.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return (texts, 1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of close frame: {e}"),
            None => panic!("stream ended without close frame"),
        }
    }
}

fn assert_ts(v: &Value) {
    let ts = v["ts"].as_str().unwrap_or_else(|| panic!("no ts in {v}"));
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("ts {ts:?} is not RFC 3339: {e}"));
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Post a `call.initiated` routed to `user` through its client_state;
/// returns the Telnyx event id.
async fn post_for(s: &Server, user: &str, call: &str) -> String {
    let mut p = call_payload(call, "+15559990000", "+15557770000");
    p["client_state"] = json!(client_state_for(user));
    let env = envelope("call.initiated", p);
    let r = s.post_webhook(&env).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["duplicate"], false);
    env["data"]["id"].as_str().unwrap().to_string()
}

/// Post `n` events for `user`; their ids in order.
async fn post_n(s: &Server, user: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(post_for(s, user, &format!("{user}-call-{i}")).await);
    }
    ids
}

/// Read stored events `from..=to` in order, checking seq and id.
async fn expect_events(ws: &mut Wss, ids: &[String], from: u64, to: u64) {
    for seq in from..=to {
        let ev = next_json(ws).await;
        assert_eq!(ev["event"], "call-initiated", "{ev}");
        assert_eq!(ev["seq"], seq, "{ev}");
        assert_eq!(ev["id"], ids[(seq - 1) as usize], "{ev}");
        assert_ts(&ev);
    }
}

async fn broadcast(s: &Server, body: Value) -> callbridge::client::HttpResponse {
    s.admin("POST", "/api/broadcast", Some(body)).await
}

// -------------------------------------------------------------- messages

#[tokio::test]
async fn ping_gets_pong_with_current_timestamp() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let before = now_ms();
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    let pong = next_json(&mut ws).await;
    let after = now_ms();
    assert_eq!(pong["event"], "pong", "{pong}");
    let t = pong["data"]["timestamp"]
        .as_i64()
        .unwrap_or_else(|| panic!("timestamp is not an integer: {pong}"));
    // Milliseconds since the epoch, near now (generous bounds).
    assert!(
        t >= before - 30_000 && t <= after + 30_000,
        "timestamp {t} not near {before}..{after}"
    );
    assert!(pong.get("seq").is_none(), "{pong}");
    assert_ts(&pong);
    // `data` may be omitted.
    send_json(&mut ws, json!({"type":"ping"})).await;
    assert_eq!(next_json(&mut ws).await["event"], "pong");
}

#[tokio::test]
async fn malformed_messages_get_bad_request_and_connection_stays_open() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let bad: Vec<(&str, Message)> = vec![
        ("not JSON", Message::text("this is not json")),
        ("JSON array", Message::text("[1,2,3]")),
        ("JSON string", Message::text("\"ping\"")),
        ("no type", Message::text(r#"{"data":{}}"#)),
        (
            "unknown type",
            Message::text(r#"{"type":"dance","data":{}}"#),
        ),
        ("non-string type", Message::text(r#"{"type":7}"#)),
        (
            "bad status",
            Message::text(r#"{"type":"status","status":"asleep"}"#),
        ),
        (
            "bad resume",
            Message::text(r#"{"type":"resume","since":"x"}"#),
        ),
        ("binary frame", Message::binary(vec![1u8, 2, 3, 4])),
    ];
    for (what, msg) in bad {
        ws.send(msg).await.unwrap();
        let err = next_json(&mut ws).await;
        assert_eq!(err["event"], "error", "{what}: {err}");
        assert_eq!(err["data"]["code"], "bad-request", "{what}: {err}");
        assert!(
            err["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {err}"
        );
        // The connection stays open.
        assert_alive(&mut ws).await;
    }
    // A bad status did not change the stored status.
    let u = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(u["status"], "available", "{u}");
}

#[tokio::test]
async fn status_is_stored_and_sent_to_other_connections_only() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, snap) = s.connect("u1").await;
    assert_eq!(snap["data"]["status"], "available", "{snap}");
    let (mut b, _, _) = s.connect("u1").await;
    let (mut other, _, _) = s.connect("u2").await;

    send_json(&mut a, json!({"type":"status","status":"away"})).await;
    let changed = next_json(&mut b).await;
    assert_eq!(changed["event"], "status-changed", "{changed}");
    assert_eq!(changed["data"]["status"], "away", "{changed}");
    assert!(changed.get("seq").is_none(), "{changed}");
    assert_ts(&changed);
    // Not echoed to the sender, not sent to another user.
    expect_silence(&mut a, SILENCE).await;
    expect_silence(&mut other, SILENCE).await;

    let u = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(u["status"], "away", "{u}");
    let u2 = s.admin("GET", "/api/users/u2", None).await.json();
    assert_eq!(u2["status"], "available", "{u2}");

    // A new connection's snapshot shows it.
    let (_c, _, snap) = s.connect("u1").await;
    assert_eq!(snap["data"]["status"], "away", "{snap}");

    // From the other connection this time.
    send_json(&mut b, json!({"type":"status","status":"busy"})).await;
    let changed = next_json(&mut a).await;
    assert_eq!(changed["event"], "status-changed", "{changed}");
    assert_eq!(changed["data"]["status"], "busy", "{changed}");
    let u = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(u["status"], "busy", "{u}");
}

// ------------------------------------------------------------ connected

#[tokio::test]
async fn connected_fields_with_token_email() {
    let s = Server::start_with(&[("CALLBRIDGE_PING_INTERVAL_SECS", "7")]).await;
    s.put_user("u1", json!({"email":"stored@example.com"}))
        .await;
    post_n(&s, "u1", 2).await;
    let token = callbridge::auth::mint(
        JWT_SECRET.as_bytes(),
        "u1",
        Some("token@example.com"),
        3600,
        now_secs(),
    )
    .unwrap();
    let (_ws, c, snap) = connect_token(&s, &token).await;
    let d = &c["data"];
    let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "clientId",
            "heartbeatSecs",
            "lastSeq",
            "protocol",
            "user",
            "userId"
        ],
        "{c}"
    );
    assert!(
        d["clientId"].as_str().is_some_and(|id| !id.is_empty()),
        "{c}"
    );
    assert_eq!(d["user"], "token@example.com", "{c}");
    assert_eq!(d["userId"], "u1", "{c}");
    assert_eq!(d["protocol"], 1, "{c}");
    assert_eq!(d["heartbeatSecs"], 7, "{c}");
    assert_eq!(d["lastSeq"], 2, "{c}");
    assert!(c.get("seq").is_none() && c.get("id").is_none(), "{c}");
    assert_ts(&c);
    assert_ts(&snap);
    assert_eq!(snap["data"]["status"], "available");
    assert_eq!(snap["data"]["activeCalls"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn connected_user_falls_back_to_stored_email_then_id() {
    let s = Server::start().await;
    s.put_user("u1", json!({"email":"stored@example.com"}))
        .await;
    s.put_user("u2", json!({"name":"No Email"})).await;
    let (_a, c1, _) = s.connect("u1").await;
    assert_eq!(c1["data"]["user"], "stored@example.com", "{c1}");
    assert_eq!(c1["data"]["userId"], "u1", "{c1}");
    assert_eq!(c1["data"]["lastSeq"], 0, "{c1}");
    assert_eq!(
        c1["data"]["heartbeatSecs"], 25,
        "default ping interval: {c1}"
    );
    let (_b, c2, _) = s.connect("u2").await;
    assert_eq!(c2["data"]["user"], "u2", "{c2}");
    assert_eq!(c2["data"]["userId"], "u2", "{c2}");
    // Each connection has its own clientId.
    let (_c, c3, _) = s.connect("u1").await;
    assert_ne!(c1["data"]["clientId"], c3["data"]["clientId"]);
}

// ---------------------------------------------------------------- resume

#[tokio::test]
async fn resume_with_since_query_replays_missing_events_in_order() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let ids = post_n(&s, "u1", 5).await;
    let mut ws = s
        .ws_raw(&format!("token={}&since=2", s.token("u1")), &[])
        .await;
    let c = next_json(&mut ws).await;
    assert_eq!(c["event"], "connected", "{c}");
    assert_eq!(c["data"]["lastSeq"], 5, "{c}");
    expect_events(&mut ws, &ids, 3, 5).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"], json!({"from":2,"to":5,"gap":false}));
    assert_ts(&resumed);
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["event"], "snapshot", "{snap}");
    assert_eq!(snap["data"]["activeCalls"].as_array().unwrap().len(), 5);
    expect_silence(&mut ws, SILENCE).await;

    // Live delivery continues right after, without duplicates.
    let id6 = post_for(&s, "u1", "u1-call-6").await;
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["seq"], 6, "{ev}");
    assert_eq!(ev["id"], id6.as_str(), "{ev}");
    expect_silence(&mut ws, SILENCE).await;
}

#[tokio::test]
async fn resume_since_zero_replays_everything() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let ids = post_n(&s, "u1", 3).await;
    let mut ws = s
        .ws_raw(&format!("token={}&since=0", s.token("u1")), &[])
        .await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    expect_events(&mut ws, &ids, 1, 3).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"], json!({"from":0,"to":3,"gap":false}));
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
}

#[tokio::test]
async fn resume_message_mid_session_replays_then_snapshot() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let ids = post_n(&s, "u1", 5).await;
    let (mut ws, c, _) = s.connect("u1").await;
    assert_eq!(c["data"]["lastSeq"], 5);
    // Without since, nothing is replayed.
    expect_silence(&mut ws, SILENCE).await;

    send_json(&mut ws, json!({"type":"resume","since":3})).await;
    expect_events(&mut ws, &ids, 4, 5).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"], json!({"from":3,"to":5,"gap":false}));
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["event"], "snapshot", "{snap}");
    assert_eq!(snap["data"]["activeCalls"].as_array().unwrap().len(), 5);
    expect_silence(&mut ws, SILENCE).await;

    // Again from 0: everything, even though it was delivered before.
    send_json(&mut ws, json!({"type":"resume","since":0})).await;
    expect_events(&mut ws, &ids, 1, 5).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["data"], json!({"from":0,"to":5,"gap":false}));
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
}

#[tokio::test]
async fn resume_since_at_or_beyond_last_seq_sends_no_events() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    post_n(&s, "u1", 3).await;

    // since == lastSeq: nothing missing.
    let mut ws = s
        .ws_raw(&format!("token={}&since=3", s.token("u1")), &[])
        .await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"], json!({"from":3,"to":3,"gap":false}));
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");

    // since beyond lastSeq: no events, still `resumed` then `snapshot`.
    let mut ws = s
        .ws_raw(&format!("token={}&since=10", s.token("u1")), &[])
        .await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"]["from"], 10, "{resumed}");
    assert!(resumed["data"]["to"].is_u64(), "{resumed}");
    assert!(resumed["data"]["gap"].is_boolean(), "{resumed}");
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");

    // Same with the message.
    send_json(&mut ws, json!({"type":"resume","since":10})).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"]["from"], 10, "{resumed}");
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
    expect_silence(&mut ws, SILENCE).await;
}

#[tokio::test]
async fn since_with_auth_message_replays_after_connected() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let ids = post_n(&s, "u1", 3).await;
    let mut ws = s.ws_raw("since=1", &[]).await;
    assert_eq!(next_json(&mut ws).await["event"], "auth-required");
    send_json(&mut ws, json!({"type":"auth","token":s.token("u1")})).await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    expect_events(&mut ws, &ids, 2, 3).await;
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["data"], json!({"from":1,"to":3,"gap":false}));
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn too_many_connections_closes_the_new_one_with_4008() {
    let s = Server::start_with(&[("CALLBRIDGE_MAX_CONNECTIONS_PER_USER", "2")]).await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u1").await;
    let mut third = s.ws_raw(&format!("token={}", s.token("u1")), &[]).await;
    let (texts, code, reason) = texts_until_close(&mut third).await;
    assert_eq!(code, 4008, "reason {reason:?}");
    assert!(
        texts.iter().all(|t| t["event"] != "connected"),
        "the refused connection was told it is connected: {texts:?}"
    );
    assert_alive(&mut a).await;
    assert_alive(&mut b).await;
    // The limit is per user.
    let (mut other, _, _) = s.connect("u2").await;
    assert_alive(&mut other).await;

    // Once one closes, a new connection fits again.
    a.close(None).await.unwrap();
    while let Some(Ok(_)) = a.next().await {}
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut ws = s.ws_raw(&format!("token={}", s.token("u1")), &[]).await;
        let first = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no answer")
            .expect("stream ended")
            .expect("ws error");
        if let Message::Text(t) = first {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["event"], "connected", "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never freed: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn rate_limit_closes_with_4029() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_RATE_PER_MIN", "5")]).await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    for _ in 0..6 {
        send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    }
    let (texts, code, reason) = texts_until_close(&mut ws).await;
    assert_eq!(code, 4029, "reason {reason:?}");
    let pongs = texts.iter().filter(|t| t["event"] == "pong").count();
    assert_eq!(pongs, 5, "{texts:?}");
}

#[tokio::test]
async fn rate_limit_counts_the_auth_message() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_RATE_PER_MIN", "5")]).await;
    s.put_user("u1", json!({})).await;
    let mut ws = s.ws_raw("", &[]).await;
    assert_eq!(next_json(&mut ws).await["event"], "auth-required");
    send_json(&mut ws, json!({"type":"auth","token":s.token("u1")})).await;
    read_connected(&mut ws).await;
    // auth + 4 pings = 5 allowed; the 5th ping is the 6th message.
    for _ in 0..5 {
        send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    }
    let (texts, code, reason) = texts_until_close(&mut ws).await;
    assert_eq!(code, 4029, "reason {reason:?}");
    assert_eq!(
        texts.iter().filter(|t| t["event"] == "pong").count(),
        4,
        "{texts:?}"
    );
}

#[tokio::test]
async fn rate_limit_applies_before_authentication() {
    let s = Server::start_with(&[("CALLBRIDGE_CLIENT_RATE_PER_MIN", "5")]).await;
    let mut ws = s.ws_raw("", &[]).await;
    assert_eq!(next_json(&mut ws).await["event"], "auth-required");
    for _ in 0..6 {
        send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    }
    let (texts, code, reason) = texts_until_close(&mut ws).await;
    assert_eq!(code, 4029, "reason {reason:?}");
    assert!(texts.is_empty(), "ignored messages got replies: {texts:?}");
}

#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let s = Server::start_with(&[("CALLBRIDGE_MAX_CLIENT_MESSAGE_BYTES", "1024")]).await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // Under the limit: fine.
    let small = json!({"type":"ping","data":{"pad":"x".repeat(900)}}).to_string();
    assert!(small.len() < 1024);
    ws.send(Message::text(small)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["event"], "pong");
    // Over it.
    let big = json!({"type":"ping","data":{"pad":"x".repeat(2000 - 35)}}).to_string();
    assert!(big.len() >= 2000 - 5 && big.len() > 1024, "{}", big.len());
    ws.send(Message::text(big)).await.unwrap();
    let (texts, code, reason) = texts_until_close(&mut ws).await;
    assert_eq!(code, 1009, "reason {reason:?}");
    assert!(
        texts.iter().all(|t| t["event"] != "pong"),
        "oversized message was answered: {texts:?}"
    );
}

// ------------------------------------------------------------------ privacy

#[tokio::test]
async fn events_for_one_user_never_reach_another() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let id = post_for(&s, "u1", "private-call").await;
    let ev = next_json(&mut a).await;
    assert_eq!(ev["event"], "call-initiated", "{ev}");
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["data"]["userIds"], json!(["u1"]));
    expect_silence(&mut b, Duration::from_millis(400)).await;

    // Nor through resume or snapshot.
    send_json(&mut b, json!({"type":"resume","since":0})).await;
    let resumed = next_json(&mut b).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(resumed["data"]["to"], 0, "{resumed}");
    let snap = next_json(&mut b).await;
    assert_eq!(snap["event"], "snapshot", "{snap}");
    assert_eq!(snap["data"]["activeCalls"], json!([]), "{snap}");
    let (_c, c, snap) = s.connect("u2").await;
    assert_eq!(c["data"]["lastSeq"], 0, "{c}");
    assert_eq!(snap["data"]["activeCalls"], json!([]), "{snap}");
}

// ---------------------------------------------------------------- broadcast

#[tokio::test]
async fn broadcast_to_listed_users_only() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let r = broadcast(
        &s,
        json!({"userIds":["u1"],"event":"announcement","data":{"x":1}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"delivered":1}));
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "announcement", "{m}");
    assert_eq!(m["data"], json!({"x":1}), "{m}");
    assert!(m.get("seq").is_none(), "custom messages carry no seq: {m}");
    assert!(m.get("id").is_none(), "custom messages carry no id: {m}");
    assert_ts(&m);
    expect_silence(&mut b, SILENCE).await;
    expect_silence(&mut a, SILENCE).await;

    // Delivered counts connections, not users.
    let (mut a2, _, _) = s.connect("u1").await;
    let r = broadcast(&s, json!({"userIds":["u1"],"event":"memo","data":{}})).await;
    assert_eq!(r.json(), json!({"delivered":2}));
    assert_eq!(next_json(&mut a).await["event"], "memo");
    assert_eq!(next_json(&mut a2).await["event"], "memo");
    expect_silence(&mut b, SILENCE).await;

    // A user with no connection: delivered 0.
    let r = broadcast(&s, json!({"userIds":["ghost"],"event":"memo","data":{}})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"delivered":0}));
}

#[tokio::test]
async fn broadcast_all_reaches_everyone() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let r = broadcast(
        &s,
        json!({"all":true,"event":"announcement","data":{"x":2}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"delivered":2}));
    for ws in [&mut a, &mut b] {
        let m = next_json(ws).await;
        assert_eq!(m["event"], "announcement", "{m}");
        assert_eq!(m["data"], json!({"x":2}), "{m}");
        assert!(m.get("seq").is_none(), "{m}");
    }
    // Unauthenticated sockets are not counted or written to.
    let mut pending = s.ws_raw("", &[]).await;
    assert_eq!(next_json(&mut pending).await["event"], "auth-required");
    let r = broadcast(&s, json!({"all":true,"event":"again","data":{}})).await;
    assert_eq!(r.json(), json!({"delivered":2}));
    expect_silence(&mut pending, SILENCE).await;
}

#[tokio::test]
async fn broadcast_bad_bodies_are_400_json() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let bodies: Vec<(&str, String)> = vec![
        ("not JSON", "not json".to_string()),
        ("JSON array", "[]".to_string()),
        ("no event", json!({"all":true,"data":{}}).to_string()),
        (
            "empty event",
            json!({"all":true,"event":"","data":{}}).to_string(),
        ),
        ("no target", json!({"event":"x","data":{}}).to_string()),
        (
            "both targets",
            json!({"all":true,"userIds":["u1"],"event":"x","data":{}}).to_string(),
        ),
        (
            "userIds not a list",
            json!({"userIds":"u1","event":"x"}).to_string(),
        ),
        (
            "event not a string",
            json!({"all":true,"event":5}).to_string(),
        ),
    ];
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (what, body) in bodies {
        let r = s
            .request(
                "POST",
                "/api/broadcast",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await;
        assert_eq!(
            r.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        assert!(j["error"].is_string(), "{what}: {j}");
        assert!(j["message"].is_string(), "{what}: {j}");
    }
    expect_silence(&mut a, SILENCE).await;

    // Without the admin token: 401.
    let r = s
        .request(
            "POST",
            "/api/broadcast",
            &[("content-type", "application/json")],
            json!({"all":true,"event":"x","data":{}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    expect_silence(&mut a, SILENCE).await;
}
