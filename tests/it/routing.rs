//! Routing and per-user call state (contract §6), end to end: who receives an
//! event, who does not, and what `activeCalls` / `snapshot` show.

use std::collections::BTreeSet;

use crate::common::*;
use base64::Engine as _;
use callbridge::client::Wss;
use serde_json::{json, Value};

const N1: &str = "+15551230001";
const N2: &str = "+15551230002";
const N3: &str = "+15551230003";
const OUTSIDE: &str = "+15559990000";

// ------------------------------------------------------------------ helpers

async fn post_ok(s: &Server, env: &Value) {
    let r = s.post_webhook(env).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["ok"], true);
    assert_eq!(r.json()["duplicate"], false);
}

/// Next frame must be the event with this id; returns it.
async fn expect_event(ws: &mut Wss, env: &Value) -> Value {
    let ev = next_json(ws).await;
    assert_eq!(ev["id"], env["data"]["id"], "expected this event: {ev}");
    ev
}

fn user_ids(ev: &Value) -> BTreeSet<String> {
    ev["data"]["userIds"]
        .as_array()
        .unwrap_or_else(|| panic!("userIds is an array: {ev}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn with(mut payload: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        payload[k] = v.clone();
    }
    payload
}

fn without(mut payload: Value, keys: &[&str]) -> Value {
    for k in keys {
        payload.as_object_mut().unwrap().remove(*k);
    }
    payload
}

fn at(mut env: Value, occurred_at: &str) -> Value {
    env["data"]["occurred_at"] = json!(occurred_at);
    env
}

fn rfc3339_ago(ms: i64) -> String {
    callbridge::clock::rfc3339_ms(callbridge::clock::now_ms() - ms)
}

async fn user_view(s: &Server, id: &str) -> Value {
    let r = s.admin("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn active_calls(view: &Value) -> &Vec<Value> {
    view["activeCalls"]
        .as_array()
        .unwrap_or_else(|| panic!("activeCalls is an array: {view}"))
}

// ------------------------------------------------------------- rule 1: client_state

#[tokio::test]
async fn client_state_user_wins_over_number_owner() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"client_state": client_state_for("u2")}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w2, &env).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    expect_silence(&mut w1, SILENCE).await;
    expect_silence(&mut w2, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn client_state_user_id_snake_case_routes() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"client_state": b64(r#"{"user_id":"u2"}"#)}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w2, &env).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    assert_eq!(ev["data"]["clientState"], json!({"user_id": "u2"}));
    expect_silence(&mut w1, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn client_state_naming_unknown_user_falls_through_to_number() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("sup", json!({"role":"supervisor"})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut wsup, _, _) = s.connect("sup").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"client_state": client_state_for("ghost")}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    assert_eq!(ev["data"]["clientState"], json!({"userId": "ghost"}));
    expect_silence(&mut wsup, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn client_state_naming_unknown_user_with_no_other_match_is_unrouted() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("sup", json!({"role":"supervisor"})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut wsup, _, _) = s.connect("sup").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N3),
            json!({"client_state": client_state_for("ghost")}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut wsup, &env).await;
    assert_eq!(user_ids(&ev), set(&["sup"]));
    expect_silence(&mut w1, SILENCE).await;
    s.stop().await;
}

// ------------------------------------------------------------- rule 2: call binding

#[tokio::test]
async fn later_event_follows_binding_by_session_id() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N2]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let init = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    // Same session, other leg (new control id), `to` now owned by u2.
    let mut p = call_payload("c1-leg2", OUTSIDE, N2);
    p["call_session_id"] = json!("session-c1");
    let answered = envelope("call.answered", p);
    post_ok(&s, &answered).await;
    let ev = expect_event(&mut w1, &answered).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    // No number, no direction, no connection match at all: still u1.
    let dtmf = envelope(
        "call.dtmf.received",
        json!({"call_control_id":"c1-leg3","call_session_id":"session-c1","digit":"5"}),
    );
    post_ok(&s, &dtmf).await;
    let ev = expect_event(&mut w1, &dtmf).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    expect_silence(&mut w2, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn later_event_follows_binding_by_control_id_without_session() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N2]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let init = envelope(
        "call.initiated",
        without(call_payload("c1", OUTSIDE, N1), &["call_session_id"]),
    );
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    let answered = envelope(
        "call.answered",
        without(call_payload("c1", OUTSIDE, N2), &["call_session_id"]),
    );
    post_ok(&s, &answered).await;
    let ev = expect_event(&mut w1, &answered).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    let bare = envelope("call.speak.started", json!({"call_control_id":"c1"}));
    post_ok(&s, &bare).await;
    let ev = expect_event(&mut w1, &bare).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    expect_silence(&mut w2, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn binding_from_client_state_carries_to_later_events() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let init = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"client_state": client_state_for("u2")}),
        ),
    );
    post_ok(&s, &init).await;
    expect_event(&mut w2, &init).await;
    // No client_state now; the number is u1's, but the call is bound to u2.
    let answered = envelope("call.answered", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &answered).await;
    let ev = expect_event(&mut w2, &answered).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    expect_silence(&mut w1, SILENCE).await;
    s.stop().await;
}

// ------------------------------------------------------------- rule 3: numbers

#[tokio::test]
async fn inbound_goes_to_owner_of_to_not_from() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N2]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let env = envelope("call.initiated", call_payload("c1", N2, N1));
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    expect_silence(&mut w2, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn outbound_goes_to_owner_of_from_not_to() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N2]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let env = envelope(
        "call.initiated",
        with(call_payload("c1", N1, N2), json!({"direction":"outgoing"})),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    assert_eq!(ev["data"]["direction"], "outbound");
    expect_silence(&mut w2, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn formatted_stored_number_matches_e164_event_number() {
    let s = Server::start().await;
    let u = s
        .put_user("u1", json!({"phoneNumbers":["+1 (555) 123-0001"]}))
        .await;
    assert_eq!(u["phoneNumbers"], json!([N1]));
    let (mut w1, _, _) = s.connect("u1").await;
    let env = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    s.stop().await;
}

#[tokio::test]
async fn leading_00_stored_number_matches_plus_event_number() {
    let s = Server::start().await;
    s.put_user("uk", json!({"phoneNumbers":["0044 20 7946 0958"]}))
        .await;
    let (mut w, _, _) = s.connect("uk").await;
    let env = envelope(
        "call.initiated",
        call_payload("c1", OUTSIDE, "+442079460958"),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w, &env).await;
    assert_eq!(user_ids(&ev), set(&["uk"]));
    s.stop().await;
}

#[tokio::test]
async fn event_numbers_in_other_forms_are_compared_in_e164() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("uk", json!({"phoneNumbers":["+442079460958"]}))
        .await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut wk, _, _) = s.connect("uk").await;
    let env = envelope(
        "call.initiated",
        call_payload("c1", OUTSIDE, "001 555 123 0001"),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    assert_eq!(
        ev["data"]["to"], "001 555 123 0001",
        "data keeps the number as sent"
    );
    let env = envelope(
        "call.initiated",
        call_payload("c2", OUTSIDE, "+44 (20) 7946-0958"),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut wk, &env).await;
    assert_eq!(user_ids(&ev), set(&["uk"]));
    expect_silence(&mut w1, SILENCE).await;
    expect_silence(&mut wk, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn number_shared_by_two_users_reaches_both() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N1, N2]})).await;
    s.put_user("u3", json!({"phoneNumbers":[N3]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let (mut w3, _, _) = s.connect("u3").await;
    let env = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &env).await;
    let e1 = expect_event(&mut w1, &env).await;
    let e2 = expect_event(&mut w2, &env).await;
    assert_eq!(user_ids(&e1), set(&["u1", "u2"]));
    assert_eq!(user_ids(&e2), set(&["u1", "u2"]));
    expect_silence(&mut w3, SILENCE).await;
    s.stop().await;
}

// ------------------------------------------------------------- rule 4: connection id

#[tokio::test]
async fn connection_id_owner_gets_event_without_number_match() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u3", json!({"connectionIds":["conn-sales"]}))
        .await;
    s.put_user("sup", json!({"role":"supervisor"})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w3, _, _) = s.connect("u3").await;
    let (mut wsup, _, _) = s.connect("sup").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N3),
            json!({"connection_id":"conn-sales"}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w3, &env).await;
    assert_eq!(user_ids(&ev), set(&["u3"]));
    expect_silence(&mut w1, SILENCE).await;
    expect_silence(&mut wsup, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn number_owner_wins_over_connection_id_owner() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u3", json!({"connectionIds":["conn-sales"]}))
        .await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w3, _, _) = s.connect("u3").await;
    let env = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"connection_id":"conn-sales"}),
        ),
    );
    post_ok(&s, &env).await;
    let ev = expect_event(&mut w1, &env).await;
    assert_eq!(user_ids(&ev), set(&["u1"]));
    expect_silence(&mut w3, SILENCE).await;
    s.stop().await;
}

// ------------------------------------------------------------- rule 5: unrouted

/// Agent `a1` (owns nothing), supervisor `s1`, admin `ad1`, all connected.
async fn roles_server(extra: &[(&str, &str)]) -> (Server, Wss, Wss, Wss) {
    let s = Server::start_with(extra).await;
    s.put_user("a1", json!({"role":"agent","phoneNumbers":[N1]}))
        .await;
    s.put_user("s1", json!({"role":"supervisor"})).await;
    s.put_user("ad1", json!({"role":"admin"})).await;
    let (wa, _, _) = s.connect("a1").await;
    let (ws1, _, _) = s.connect("s1").await;
    let (wad, _, _) = s.connect("ad1").await;
    (s, wa, ws1, wad)
}

fn unrouted_event() -> Value {
    envelope(
        "call.initiated",
        with(
            call_payload("c-unrouted", OUTSIDE, N3),
            json!({"connection_id":"nobody"}),
        ),
    )
}

async fn status_events(s: &Server) -> Value {
    let r = s.admin("GET", "/api/status", None).await;
    assert_eq!(r.status, 200);
    r.json()["events"].clone()
}

#[tokio::test]
async fn unrouted_default_goes_to_supervisors_and_admins_only() {
    let (s, mut wa, mut ws1, mut wad) = roles_server(&[]).await;
    let env = unrouted_event();
    post_ok(&s, &env).await;
    let e1 = expect_event(&mut ws1, &env).await;
    let e2 = expect_event(&mut wad, &env).await;
    assert_eq!(user_ids(&e1), set(&["ad1", "s1"]));
    assert_eq!(user_ids(&e2), set(&["ad1", "s1"]));
    expect_silence(&mut wa, SILENCE).await;
    assert_eq!(status_events(&s).await["unrouted"], 1);
    s.stop().await;
}

#[tokio::test]
async fn unrouted_explicit_supervisors_policy() {
    let (s, mut wa, mut ws1, mut wad) =
        roles_server(&[("CALLBRIDGE_UNROUTED", "supervisors")]).await;
    let env = unrouted_event();
    post_ok(&s, &env).await;
    expect_event(&mut ws1, &env).await;
    expect_event(&mut wad, &env).await;
    expect_silence(&mut wa, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn unrouted_broadcast_goes_to_everyone() {
    let (s, mut wa, mut ws1, mut wad) = roles_server(&[("CALLBRIDGE_UNROUTED", "broadcast")]).await;
    let env = unrouted_event();
    post_ok(&s, &env).await;
    for w in [&mut wa, &mut ws1, &mut wad] {
        let ev = expect_event(w, &env).await;
        assert_eq!(user_ids(&ev), set(&["a1", "ad1", "s1"]));
    }
    assert_eq!(status_events(&s).await["unrouted"], 1);
    s.stop().await;
}

#[tokio::test]
async fn unrouted_drop_reaches_nobody_but_is_counted() {
    let (s, mut wa, mut ws1, mut wad) = roles_server(&[("CALLBRIDGE_UNROUTED", "drop")]).await;
    let env = unrouted_event();
    let r = s.post_webhook(&env).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"ok": true, "id": env["data"]["id"], "duplicate": false})
    );
    expect_silence(&mut wa, SILENCE).await;
    expect_silence(&mut ws1, SILENCE).await;
    expect_silence(&mut wad, SILENCE).await;
    let events = status_events(&s).await;
    assert_eq!(events["unrouted"], 1, "{events}");
    // Routed events are still delivered under `drop`.
    let routed = envelope("call.initiated", call_payload("c2", OUTSIDE, N1));
    post_ok(&s, &routed).await;
    expect_event(&mut wa, &routed).await;
    assert_eq!(status_events(&s).await["unrouted"], 1);
    s.stop().await;
}

#[tokio::test]
async fn routed_event_is_not_counted_unrouted() {
    let (s, mut wa, mut ws1, _wad) = roles_server(&[]).await;
    let env = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &env).await;
    expect_event(&mut wa, &env).await;
    expect_silence(&mut ws1, SILENCE).await;
    assert_eq!(status_events(&s).await["unrouted"], 0);
    s.stop().await;
}

// ------------------------------------------------------------------ privacy

#[tokio::test]
async fn each_agent_receives_only_its_own_calls() {
    let s = Server::start().await;
    let numbers = [N1, N2, N3];
    let agents = ["a1", "a2", "a3"];
    for (a, n) in agents.iter().zip(numbers) {
        s.put_user(a, json!({"role":"agent","phoneNumbers":[n]}))
            .await;
    }
    let mut socks = Vec::new();
    for a in agents {
        socks.push(s.connect(a).await.0);
    }
    // Two events per agent, interleaved, plus one routed by client_state.
    let mut sent: Vec<Vec<Value>> = vec![Vec::new(); 3];
    for round in 0..2 {
        for (i, n) in numbers.iter().enumerate() {
            let env = envelope(
                if round == 0 {
                    "call.initiated"
                } else {
                    "call.answered"
                },
                call_payload(&format!("call-{i}"), OUTSIDE, n),
            );
            post_ok(&s, &env).await;
            sent[i].push(env);
        }
    }
    let env = envelope(
        "call.initiated",
        with(
            call_payload("private", OUTSIDE, N1),
            json!({"client_state": client_state_for("a2")}),
        ),
    );
    post_ok(&s, &env).await;
    sent[1].push(env);
    for (i, ws) in socks.iter_mut().enumerate() {
        for (k, env) in sent[i].iter().enumerate() {
            let ev = expect_event(ws, env).await;
            assert_eq!(ev["seq"], (k + 1) as u64);
            assert_eq!(user_ids(&ev), set(&[agents[i]]));
        }
    }
    for ws in socks.iter_mut() {
        expect_silence(ws, SILENCE).await;
    }
    s.stop().await;
}

// ------------------------------------------------------------------ active calls

#[tokio::test]
async fn active_call_lifecycle_in_user_view() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    assert_eq!(active_calls(&user_view(&s, "u1").await).len(), 0);

    let steps = [
        ("call.initiated", Some("ringing")),
        ("call.answered", Some("answered")),
        ("call.bridged", Some("bridged")),
        ("call.hangup", None),
    ];
    for (i, (t, state)) in steps.iter().enumerate() {
        let env = at(
            envelope(t, call_payload("c1", OUTSIDE, N1)),
            &rfc3339_ago(10_000 - 1000 * i as i64),
        );
        post_ok(&s, &env).await;
        expect_event(&mut w1, &env).await;
        let view = user_view(&s, "u1").await;
        let calls = active_calls(&view);
        match state {
            Some(st) => {
                assert_eq!(calls.len(), 1, "after {t}: {view}");
                assert_eq!(calls[0]["callControlId"], "c1");
                assert_eq!(calls[0]["state"], *st, "after {t}: {view}");
            }
            None => assert!(calls.is_empty(), "hangup removes the call: {view}"),
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn snapshot_on_connect_shows_active_calls() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({"phoneNumbers":[N2]})).await;
    let init = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &init).await;
    let other = envelope("call.initiated", call_payload("c2", OUTSIDE, N2));
    post_ok(&s, &other).await;
    let (_w, connected, snap) = s.connect("u1").await;
    assert_eq!(connected["data"]["lastSeq"], 1);
    assert_eq!(snap["data"]["status"], "available");
    let calls = snap["data"]["activeCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "only u1's call: {snap}");
    let c = &calls[0];
    assert_eq!(c["callControlId"], "c1");
    assert_eq!(c["callSessionId"], "session-c1");
    assert_eq!(c["direction"], "inbound");
    assert_eq!(c["from"], OUTSIDE);
    assert_eq!(c["to"], N1);
    assert_eq!(c["state"], "ringing");
    let started = c["startedAt"].as_str().expect("startedAt is a string");
    assert!(
        time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "startedAt is RFC 3339: {started}"
    );

    // Answered: state and answeredAt show up in a new snapshot.
    let answered = envelope("call.answered", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &answered).await;
    let (_w2, _, snap) = s.connect("u1").await;
    let c = &snap["data"]["activeCalls"][0];
    assert_eq!(c["state"], "answered", "{snap}");
    assert!(c["answeredAt"].is_string(), "{snap}");
    assert_eq!(
        c["startedAt"].as_str(),
        Some(started),
        "startedAt unchanged"
    );
    s.stop().await;
}

#[tokio::test]
async fn snapshot_uses_telnyx_start_time_when_sent() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let init = envelope(
        "call.initiated",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"start_time":"2026-11-22T10:15:30.123456Z"}),
        ),
    );
    post_ok(&s, &init).await;
    let (_w, _, snap) = s.connect("u1").await;
    assert_eq!(
        snap["data"]["activeCalls"][0]["startedAt"], "2026-11-22T10:15:30.123456Z",
        "{snap}"
    );
    s.stop().await;
}

#[tokio::test]
async fn late_answered_after_hangup_is_delivered_but_does_not_revive() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let p = call_payload("c1", OUTSIDE, N1);
    let t_init = rfc3339_ago(10_000);
    let t_answer = rfc3339_ago(8_000);
    let t_hangup = rfc3339_ago(5_000);
    let init = at(envelope("call.initiated", p.clone()), &t_init);
    let hangup = at(envelope("call.hangup", p.clone()), &t_hangup);
    // Telnyx retried call.answered; it arrives after the hangup.
    let late = at(envelope("call.answered", p.clone()), &t_answer);
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    assert_eq!(active_calls(&user_view(&s, "u1").await).len(), 1);
    post_ok(&s, &hangup).await;
    expect_event(&mut w1, &hangup).await;
    post_ok(&s, &late).await;
    let ev = expect_event(&mut w1, &late).await;
    assert_eq!(ev["event"], "call-answered");
    assert_eq!(ev["seq"], 3);
    assert_eq!(ev["ts"], t_answer.as_str());
    let view = user_view(&s, "u1").await;
    assert!(active_calls(&view).is_empty(), "not revived: {view}");
    let (_w2, _, snap) = s.connect("u1").await;
    assert_eq!(snap["data"]["activeCalls"], json!([]), "{snap}");
    // A redelivered call.initiated (new id, after the hangup) does not revive it either.
    let again = envelope("call.initiated", p);
    post_ok(&s, &again).await;
    expect_event(&mut w1, &again).await;
    assert!(active_calls(&user_view(&s, "u1").await).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn out_of_order_answered_does_not_regress_bridged() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let p = call_payload("c1", OUTSIDE, N1);
    for (t, ago) in [
        ("call.initiated", 10_000),
        ("call.bridged", 6_000),
        ("call.answered", 8_000),
    ] {
        let env = at(envelope(t, p.clone()), &rfc3339_ago(ago));
        post_ok(&s, &env).await;
        expect_event(&mut w1, &env).await;
    }
    let view = user_view(&s, "u1").await;
    assert_eq!(active_calls(&view)[0]["state"], "bridged", "{view}");
    s.stop().await;
}

#[tokio::test]
async fn duplicate_hangup_or_initiated_is_not_applied_twice() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let p = call_payload("c1", OUTSIDE, N1);
    let init = envelope("call.initiated", p.clone());
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    let r = s.post_webhook(&init).await;
    assert_eq!(r.json()["duplicate"], true);
    let view = user_view(&s, "u1").await;
    assert_eq!(active_calls(&view).len(), 1, "{view}");
    assert_eq!(active_calls(&view)[0]["state"], "ringing");
    expect_silence(&mut w1, SILENCE).await;
    s.stop().await;
}

#[tokio::test]
async fn call_bound_to_a_deleted_user_falls_through_to_the_next_rules() {
    // Reading tested: rule 2 "yields users" only when the bound users still
    // exist; a binding to deleted users yields nobody, so rules 3–5 apply.
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let init = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    let r = s.admin("DELETE", "/api/users/u1", None).await;
    assert_eq!(r.status, 204);
    // The number now belongs to u2.
    s.put_user("u2", json!({"phoneNumbers":[N1]})).await;
    let (mut w2, _, _) = s.connect("u2").await;
    let answered = envelope("call.answered", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &answered).await;
    let ev = expect_event(&mut w2, &answered).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    s.stop().await;
}

#[tokio::test]
async fn hangup_arriving_before_initiated_keeps_the_call_ended() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let p = call_payload("c1", OUTSIDE, N1);
    let hangup = at(envelope("call.hangup", p.clone()), &rfc3339_ago(2_000));
    let init = at(envelope("call.initiated", p), &rfc3339_ago(9_000));
    post_ok(&s, &hangup).await;
    expect_event(&mut w1, &hangup).await;
    post_ok(&s, &init).await;
    let ev = expect_event(&mut w1, &init).await;
    assert_eq!(ev["event"], "call-initiated");
    let view = user_view(&s, "u1").await;
    assert!(active_calls(&view).is_empty(), "{view}");
    let (_w2, _, snap) = s.connect("u1").await;
    assert_eq!(snap["data"]["activeCalls"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn client_state_on_a_later_event_wins_over_the_binding_and_rebinds() {
    // Rule 1 comes before rule 2; "once routed, the call is bound to those
    // users for its later events" then binds it to the new user.
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let init = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    post_ok(&s, &init).await;
    expect_event(&mut w1, &init).await;
    // The dialer backend transferred the call to u2 and set client_state.
    let bridged = envelope(
        "call.bridged",
        with(
            call_payload("c1", OUTSIDE, N1),
            json!({"client_state": client_state_for("u2")}),
        ),
    );
    post_ok(&s, &bridged).await;
    let ev = expect_event(&mut w2, &bridged).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    let dtmf = envelope(
        "call.dtmf.received",
        json!({"call_control_id":"c1","call_session_id":"session-c1","digit":"1"}),
    );
    post_ok(&s, &dtmf).await;
    let ev = expect_event(&mut w2, &dtmf).await;
    assert_eq!(user_ids(&ev), set(&["u2"]));
    expect_silence(&mut w1, SILENCE).await;
    s.stop().await;
}
