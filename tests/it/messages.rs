//! Messages between users and to everyone on a call (contract §8), on the
//! real server over real TLS, on whichever store the pass runs with.

use std::time::Duration;

use crate::common::*;
use callbridge::client::Wss;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Next text frame, as sent (pings skipped).
async fn next_text(ws: &mut Wss) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error");
        if let Message::Text(t) = msg {
            return t.as_str().to_string();
        }
    }
}

/// The sender's connection gets `sent` and its own stored `message`, in
/// either order: (sent, message).
async fn sent_and_echo(ws: &mut Wss) -> (Value, Value) {
    let a = next_json(ws).await;
    let b = next_json(ws).await;
    if a["event"] == "sent" {
        (a, b)
    } else {
        (b, a)
    }
}

/// The `error` answering a send.
async fn send_error(ws: &mut Wss, send: Value) -> Value {
    send_json(ws, send).await;
    let e = next_json(ws).await;
    assert_eq!(e["event"], "error", "{e}");
    e["data"].clone()
}

fn routed_to(user: &str, call: &str, event_type: &str) -> Value {
    let mut p = call_payload(call, "+15551112222", "+15553334444");
    p["client_state"] = json!(client_state_for(user));
    envelope(event_type, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_reaches_every_connection_once_in_seq_order_with_call_events() {
    let s = Server::start().await;
    s.put_users(&["u1", "u2"]).await;
    let (mut a1, _, _) = s.connect("u1").await;
    let (mut a2, _, _) = s.connect("u1").await;
    let (mut b1, _, _) = s.connect("u2").await;
    let (mut b2, _, _) = s.connect("u2").await;

    // A call event for u2 first: seq 1.
    let call_event = routed_to("u2", "c1", "call.initiated");
    assert_eq!(s.post_webhook(&call_event).await.status, 200);
    for ws in [&mut b1, &mut b2] {
        assert_eq!(next_json(ws).await["seq"], 1);
    }

    send_json(
        &mut a1,
        json!({"type":"send","to":"u2","payload":{"text":"need help?"},"ref":"r1"}),
    )
    .await;
    let (sent, echo) = sent_and_echo(&mut a1).await;
    assert_eq!(sent["data"]["ref"], "r1");
    assert_eq!(sent["data"]["recipients"], json!(["u2"]));
    let id = sent["data"]["id"].as_str().unwrap().to_string();
    let want_data =
        json!({"from":"u1","to":"u2","call":null,"payload":{"text":"need help?"},"ref":"r1"});
    assert_eq!(echo["event"], "message");
    assert_eq!(echo["seq"], 1, "the sender's own seq");
    assert_eq!(echo["id"], id.as_str());
    assert!(echo["ts"].is_string());
    assert_eq!(echo["data"], want_data);
    let other = next_json(&mut a2).await;
    assert_eq!(
        other, echo,
        "the sender's other connection gets the same frame"
    );
    for ws in [&mut b1, &mut b2] {
        let m = next_json(ws).await;
        assert_eq!(m["event"], "message");
        assert_eq!(m["seq"], 2, "after the call event");
        assert_eq!(m["id"], id.as_str());
        assert_eq!(m["data"], want_data);
    }

    // The next call event continues u2's seq.
    let answered = routed_to("u2", "c1", "call.answered");
    assert_eq!(s.post_webhook(&answered).await.status, 200);
    for ws in [&mut b1, &mut b2] {
        let ev = next_json(ws).await;
        assert_eq!(
            (ev["event"].as_str(), ev["seq"].as_u64()),
            (Some("call-answered"), Some(3))
        );
    }
    // Exactly once each.
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        expect_silence(ws, SILENCE).await;
    }

    // Resume replays messages with the call events, in order.
    let mut r = s
        .ws_raw(&format!("token={}&since=0", s.token("u2")), &[])
        .await;
    assert_eq!(next_json(&mut r).await["event"], "connected");
    let replayed: Vec<(Value, Value)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let f = next_json(&mut r).await;
            v.push((f["event"].clone(), f["seq"].clone()));
        }
        v
    };
    assert_eq!(
        replayed,
        vec![
            (json!("call-initiated"), json!(1)),
            (json!("message"), json!(2)),
            (json!("call-answered"), json!(3)),
        ]
    );
    let resumed = next_json(&mut r).await;
    assert_eq!(resumed["data"], json!({"from":0,"to":3,"gap":false}));
    // And the sender's devices replay it too.
    let mut r1 = s
        .ws_raw(&format!("token={}&since=0", s.token("u1")), &[])
        .await;
    assert_eq!(next_json(&mut r1).await["event"], "connected");
    let m = next_json(&mut r1).await;
    assert_eq!(
        (m["event"].as_str(), m["seq"].as_u64()),
        (Some("message"), Some(1))
    );
    assert_eq!(m["data"], want_data);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_comes_back_byte_for_byte() {
    let s = Server::start().await;
    s.put_users(&["u1", "u2"]).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    // Whitespace, key order, a number past u64 and f64 precision, an
    // exponent f64 cannot hold, escapes, unicode (escaped and raw), nesting.
    let payload = r#"{ "z" : 1, "big": 123456789012345678901234567890, "f": 1.10, "e": 1e400,
 "s": "h\u00e9llo \"q\" 😀 日本", "n": {"a": [null, true, {"b": -0.0}]}, "a": [] }"#;
    let frame = format!(r#"{{"type":"send","to":"u2","ref":"p","payload":{payload}}}"#);
    a.send(Message::text(frame)).await.unwrap();
    let got = next_text(&mut b).await;
    assert!(
        got.contains(&format!("\"payload\":{payload}")),
        "payload not as sent: {got}"
    );
    // A JSON string, a number and null are payloads too.
    for p in [r#""just text""#, "-12.50e3", "null", "[]"] {
        let frame = format!(r#"{{"type":"send","to":"u2","payload":{p}}}"#);
        a.send(Message::text(frame)).await.unwrap();
        let got = next_text(&mut b).await;
        assert!(got.contains(&format!("\"payload\":{p},")), "{got}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_and_echoes_ref() {
    let s = Server::start().await;
    s.put_users(&["u1", "u2"]).await;
    s.put_user("off", json!({"disabled": true})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let cases = [
        (
            json!({"type":"send","to":"u2","call":"c1","payload":1,"ref":"both"}),
            "bad-request",
            json!("both"),
        ),
        (
            json!({"type":"send","payload":1,"ref":"neither"}),
            "bad-request",
            json!("neither"),
        ),
        (
            json!({"type":"send","to":"u2","ref":"nopayload"}),
            "bad-request",
            json!("nopayload"),
        ),
        (
            json!({"type":"send","to":5,"payload":1,"ref":"num"}),
            "bad-request",
            json!("num"),
        ),
        (
            json!({"type":"send","to":"ghost","payload":1,"ref":"g"}),
            "unknown-recipient",
            json!("g"),
        ),
        (
            json!({"type":"send","to":"off","payload":1}),
            "unknown-recipient",
            Value::Null,
        ),
        (
            json!({"type":"send","call":"no-such-call","payload":1,"ref":"c"}),
            "not-on-call",
            json!("c"),
        ),
        (
            json!({"type":"send","to":"u2","payload":"x".repeat(16_383),"ref":"big"}),
            "too-large",
            json!("big"),
        ),
    ];
    for (send, code, reference) in cases {
        let e = send_error(&mut a, send.clone()).await;
        assert_eq!(e["code"], code, "{send}: {e}");
        assert_eq!(e["ref"], reference, "{send}: {e}");
        assert!(e["message"].is_string());
    }
    // The limit itself: 16,384 bytes of payload text (a string of 16,382
    // characters and its quotes) is accepted.
    let at_limit = json!({"type":"send","to":"u2","payload":"x".repeat(16_382),"ref":"max"});
    send_json(&mut a, at_limit).await;
    let (sent, _) = sent_and_echo(&mut a).await;
    assert_eq!(sent["data"]["ref"], "max");
    // Nothing refused reached anyone: u2 got exactly the accepted one.
    let m = next_json(&mut b).await;
    assert_eq!(m["data"]["ref"], "max");
    expect_silence(&mut b, SILENCE).await;
    assert_alive(&mut a).await;
    let metrics = text(&s.get("/metrics").await.unwrap());
    assert!(
        metrics.contains("callbridge_messages_total{outcome=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("callbridge_messages_total{outcome=\"too-large\"} 1"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_off_refuses_every_send() {
    let s = Server::start_with(&[("CALLBRIDGE_MESSAGES", "off")]).await;
    s.put_users(&["u1", "u2"]).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let e = send_error(
        &mut a,
        json!({"type":"send","to":"u2","payload":"hi","ref":"r"}),
    )
    .await;
    assert_eq!(e["code"], "messages-disabled");
    assert_eq!(e["ref"], "r");
    expect_silence(&mut b, SILENCE).await;
    assert_alive(&mut a).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_room_reaches_its_bound_users_and_refuses_others() {
    let s = Server::start().await;
    let shared = json!({"phoneNumbers": ["+15550001111"]});
    s.put_user("ann", shared.clone()).await;
    s.put_user("bob", shared).await;
    s.put_user("eve", json!({})).await;
    s.put_user("sue", json!({"role": "supervisor"})).await;
    let (mut ann, _, _) = s.connect("ann").await;
    let (mut bob, _, _) = s.connect("bob").await;
    let (mut eve, _, _) = s.connect("eve").await;
    let (mut sue, _, _) = s.connect("sue").await;
    // An inbound call to the shared number binds it to ann and bob (§6 rule 3).
    let ring = envelope(
        "call.initiated",
        call_payload("room1", "+15559998888", "+15550001111"),
    );
    assert_eq!(s.post_webhook(&ring).await.status, 200);
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next_json(ws).await["event"], "call-initiated");
    }

    // By call_session_id.
    send_json(
        &mut ann,
        json!({"type":"send","call":"session-room1","payload":"on it","ref":"a1"}),
    )
    .await;
    let (sent, echo) = sent_and_echo(&mut ann).await;
    assert_eq!(sent["data"]["recipients"], json!(["bob"]));
    assert_eq!(echo["data"]["call"], "session-room1");
    assert_eq!(echo["data"]["to"], Value::Null);
    let m = next_json(&mut bob).await;
    assert_eq!(
        (m["event"].as_str(), m["data"]["from"].as_str()),
        (Some("message"), Some("ann"))
    );

    // An agent not on the call is refused; nothing is stored for anyone.
    let e = send_error(
        &mut eve,
        json!({"type":"send","call":"room1","payload":"hi","ref":"e1"}),
    )
    .await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("not-on-call"), Some("e1"))
    );

    // A supervisor may post to any call (by call_control_id here).
    send_json(
        &mut sue,
        json!({"type":"send","call":"room1","payload":"whisper"}),
    )
    .await;
    let (sent, _) = sent_and_echo(&mut sue).await;
    let mut got: Vec<String> = sent["data"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["ann", "bob"]);
    assert_eq!(sent["data"]["ref"], Value::Null);
    for ws in [&mut ann, &mut bob] {
        let m = next_json(ws).await;
        assert_eq!(
            (m["data"]["from"].as_str(), m["data"]["payload"].as_str()),
            (Some("sue"), Some("whisper"))
        );
    }
    for ws in [&mut ann, &mut bob, &mut eve, &mut sue] {
        expect_silence(ws, SILENCE).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_self_reaches_own_devices_with_no_recipients() {
    let s = Server::start().await;
    s.put_users(&["u1"]).await;
    let (mut a1, _, _) = s.connect("u1").await;
    let (mut a2, _, _) = s.connect("u1").await;
    send_json(
        &mut a1,
        json!({"type":"send","to":"u1","payload":"note to self"}),
    )
    .await;
    let (sent, echo) = sent_and_echo(&mut a1).await;
    assert_eq!(sent["data"]["recipients"], json!([]));
    assert_eq!(echo["seq"], 1);
    assert_eq!(next_json(&mut a2).await, echo);
    expect_silence(&mut a1, Duration::from_millis(300)).await;
    s.stop().await;
}
