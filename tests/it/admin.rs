//! The admin API (`/api/*`, contract §3): bearer auth, users, presence,
//! deletion and revocation, status counters, broadcast.

use std::time::Duration;

use crate::common::*;
use callbridge::client::{HttpResponse, Wss};
use serde_json::{json, Value};

const N1: &str = "+15551230001";
const OUTSIDE: &str = "+15559990000";

// ------------------------------------------------------------------ helpers

/// Every admin endpoint with a plausible body.
fn endpoints() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/api/status", None),
        (
            "PUT",
            "/api/users/u1",
            Some(json!({"email":"a@example.com"})),
        ),
        ("GET", "/api/users/u1", None),
        ("DELETE", "/api/users/u1", None),
        ("POST", "/api/users/u1/revoke", None),
        (
            "POST",
            "/api/broadcast",
            Some(json!({"all":true,"event":"notice","data":{}})),
        ),
    ]
}

async fn call(
    s: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> HttpResponse {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    s.request(method, path, &headers, body).await
}

async fn get_user(s: &Server, id: &str) -> Value {
    let r = s.admin("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()
}

async fn status(s: &Server) -> Value {
    let r = s.admin("GET", "/api/status", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()
}

/// Fetch with `f` until `pred` holds, for up to `WAIT`; returns the last value.
async fn poll_until<F, Fut>(what: &str, f: F, pred: impl Fn(&Value) -> bool) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = f().await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn close_ws(mut ws: Wss) {
    let _ = ws.close(None).await;
    // Drain until the server's close answer (or the end of the stream).
    let _ = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

// ------------------------------------------------------------------ access

#[tokio::test]
async fn admin_api_is_404_when_no_admin_token_is_configured() {
    let s = Server::start_with(&[("CALLBRIDGE_ADMIN_TOKEN", "")]).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for (m, p, body) in endpoints() {
        for auth in [None, Some(bearer.as_str()), Some("Bearer x")] {
            let r = call(&s, m, p, auth, body.as_ref()).await;
            assert_json_error(&r, 404);
        }
    }
    for p in ["/api", "/api/", "/api/nothing", "/api/users"] {
        let r = call(&s, "GET", p, Some(&bearer), None).await;
        assert_json_error(&r, 404);
    }
    s.stop().await;
}

#[tokio::test]
async fn missing_bearer_is_401_on_every_endpoint() {
    let s = Server::start().await;
    for (m, p, body) in endpoints() {
        let r = call(&s, m, p, None, body.as_ref()).await;
        assert_json_error(&r, 401);
    }
    // Nothing happened: the PUT without auth created no user.
    let r = s.admin("GET", "/api/users/u1", None).await;
    assert_json_error(&r, 404);
    s.stop().await;
}

#[tokio::test]
async fn wrong_bearer_is_401_on_every_endpoint() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let wrong_prefix = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let longer = format!("Bearer {ADMIN_TOKEN}x");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let bare = ADMIN_TOKEN.to_string();
    for (m, p, body) in endpoints() {
        for auth in [
            "Bearer wrong-token",
            "Bearer ",
            wrong_prefix.as_str(),
            longer.as_str(),
            basic.as_str(),
            bare.as_str(),
        ] {
            let r = call(&s, m, p, Some(auth), body.as_ref()).await;
            assert_json_error(&r, 401);
        }
    }
    // u1 is still there: the DELETE with a wrong token did nothing.
    get_user(&s, "u1").await;
    s.stop().await;
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let s = Server::start().await;
    let auth = format!("bearer {ADMIN_TOKEN}");
    let r = call(&s, "GET", "/api/status", Some(&auth), None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    s.stop().await;
}

// ------------------------------------------------------------------ users

#[tokio::test]
async fn put_user_returns_the_stored_user_in_camel_case() {
    let s = Server::start().await;
    let r = s
        .admin(
            "PUT",
            "/api/users/u1",
            Some(json!({
                "id": "u1",
                "email": "ann@example.com",
                "name": "Ann",
                "role": "supervisor",
                "phoneNumbers": ["+1 (555) 123-0001", "0044 20 7946 0958", "+1.555.123.0002"],
                "connectionIds": ["1684641123236054244"],
                "disabled": false
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let u = r.json();
    assert_eq!(u["id"], "u1");
    assert_eq!(u["email"], "ann@example.com");
    assert_eq!(u["name"], "Ann");
    assert_eq!(u["role"], "supervisor");
    assert_eq!(
        u["phoneNumbers"],
        json!(["+15551230001", "+442079460958", "+15551230002"])
    );
    assert_eq!(u["connectionIds"], json!(["1684641123236054244"]));
    assert_eq!(u["disabled"], false);
    for snake in ["phone_numbers", "connection_ids", "tokens_revoked_at"] {
        assert!(u.get(snake).is_none(), "no snake_case key {snake}: {u}");
    }
    // GET answers the same document (plus presence, status, activeCalls).
    let g = get_user(&s, "u1").await;
    for k in [
        "id",
        "email",
        "name",
        "role",
        "phoneNumbers",
        "connectionIds",
        "disabled",
    ] {
        assert_eq!(g[k], u[k], "GET {k}");
    }
    s.stop().await;
}

#[tokio::test]
async fn put_user_with_minimal_body_gets_defaults() {
    let s = Server::start().await;
    let u = s.put_user("u1", json!({})).await;
    assert_eq!(u["id"], "u1");
    assert_eq!(u["role"], "agent");
    assert_eq!(u["phoneNumbers"], json!([]));
    assert_eq!(u["disabled"], false);
    s.stop().await;
}

#[tokio::test]
async fn put_user_again_replaces_the_document() {
    let s = Server::start().await;
    s.put_user(
        "u1",
        json!({"email":"old@example.com","phoneNumbers":[N1],"role":"admin"}),
    )
    .await;
    let u = s
        .put_user("u1", json!({"email":"new@example.com","phoneNumbers":[]}))
        .await;
    assert_eq!(u["email"], "new@example.com");
    assert_eq!(u["phoneNumbers"], json!([]));
    assert_eq!(u["role"], "agent");
    let g = get_user(&s, "u1").await;
    assert_eq!(g["email"], "new@example.com");
    assert_eq!(g["phoneNumbers"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn put_user_with_invalid_phone_is_400() {
    let s = Server::start().await;
    for bad in [
        "5551230001",
        "+1234567",
        "+1234567890123456",
        "+1555abc0001",
        "sip:alice@example.com",
        "",
    ] {
        let r = s
            .admin(
                "PUT",
                "/api/users/u1",
                Some(json!({"phoneNumbers":[N1, bad]})),
            )
            .await;
        assert_json_error(&r, 400);
    }
    // Nothing was stored.
    assert_json_error(&s.admin("GET", "/api/users/u1", None).await, 404);
    // The edges of 8–15 digits are accepted.
    let u = s
        .put_user(
            "u1",
            json!({"phoneNumbers":["+12345678","+123456789012345"]}),
        )
        .await;
    assert_eq!(u["phoneNumbers"], json!(["+12345678", "+123456789012345"]));
    s.stop().await;
}

async fn put_raw(s: &Server, body: &str) -> HttpResponse {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    s.request(
        "PUT",
        "/api/users/u1",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn put_user_with_invalid_json_is_400() {
    let s = Server::start().await;
    for body in ["{", "not json", "", "{\"email\":\"a@example.com\",}"] {
        assert_json_error(&put_raw(&s, body).await, 400);
    }
    assert_json_error(&s.admin("GET", "/api/users/u1", None).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn put_user_with_non_object_json_is_400() {
    // Valid JSON that is not a user document (contract: the body is the
    // user object) must be refused, not stored as a default user.
    let s = Server::start().await;
    for body in ["[]", "null", "1", "\"u1\""] {
        let r = put_raw(&s, body).await;
        assert_json_error(&r, 400);
    }
    assert_json_error(&s.admin("GET", "/api/users/u1", None).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn put_user_with_wrong_field_types_is_400() {
    let s = Server::start().await;
    for body in [
        r#"{"role":"pope"}"#,
        r#"{"phoneNumbers":"+15551230001"}"#,
        r#"{"disabled":"no"}"#,
        r#"{"id":"u2"}"#,
    ] {
        assert_json_error(&put_raw(&s, body).await, 400);
    }
    assert_json_error(&s.admin("GET", "/api/users/u1", None).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn get_user_shows_presence_status_and_active_calls() {
    let s = Server::start().await;
    s.put_user("u1", json!({"email":"a@example.com","phoneNumbers":[N1]}))
        .await;
    let g = get_user(&s, "u1").await;
    assert_eq!(g["presence"]["online"], false, "{g}");
    assert_eq!(g["presence"]["connections"], 0, "{g}");
    assert_eq!(g["status"], "available");
    assert_eq!(g["activeCalls"], json!([]));

    let (w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u1").await;
    let g = get_user(&s, "u1").await;
    assert_eq!(g["presence"]["online"], true, "{g}");
    assert_eq!(g["presence"]["connections"], 2, "{g}");

    let env = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    assert_eq!(s.post_webhook(&env).await.status, 200);
    next_json(&mut w2).await;
    let g = get_user(&s, "u1").await;
    let calls = g["activeCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{g}");
    assert_eq!(calls[0]["callControlId"], "c1");
    assert_eq!(calls[0]["state"], "ringing");
    assert_eq!(calls[0]["to"], N1);

    close_ws(w1).await;
    close_ws(w2).await;
    let last = poll_until(
        "presence goes offline",
        || get_user(&s, "u1"),
        |v| v["presence"]["online"] == false,
    )
    .await;
    assert_eq!(last["presence"]["connections"], 0, "{last}");
    let seen = last["presence"]["lastSeen"]
        .as_str()
        .unwrap_or_else(|| panic!("lastSeen set after disconnect: {last}"));
    assert!(
        time::OffsetDateTime::parse(seen, &time::format_description::well_known::Rfc3339).is_ok(),
        "lastSeen is RFC 3339: {seen}"
    );
    s.stop().await;
}

#[tokio::test]
async fn get_user_reflects_status_set_by_the_client() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut w, _, _) = s.connect("u1").await;
    send_json(&mut w, json!({"type":"status","status":"busy"})).await;
    poll_until(
        "status busy",
        || get_user(&s, "u1"),
        |v| v["status"] == "busy",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn get_unknown_user_is_404() {
    let s = Server::start().await;
    assert_json_error(&s.admin("GET", "/api/users/nobody", None).await, 404);
    s.stop().await;
}

#[tokio::test]
async fn delete_user_is_204_then_404_and_closes_sockets_with_4003() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut w1, _, _) = s.connect("u1").await;
    let (mut w2, _, _) = s.connect("u2").await;
    let r = s.admin("DELETE", "/api/users/u1", None).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(r.body.is_empty(), "204 has no body");
    let (code, _) = expect_close(&mut w1).await;
    assert_eq!(code, 4003);
    expect_silence(&mut w2, SILENCE).await;
    assert_json_error(&s.admin("GET", "/api/users/u1", None).await, 404);
    assert_json_error(&s.admin("DELETE", "/api/users/u1", None).await, 404);
    // The other user is untouched.
    get_user(&s, "u2").await;
    s.stop().await;
}

#[tokio::test]
async fn revoke_unknown_user_is_404() {
    let s = Server::start().await;
    assert_json_error(
        &s.admin("POST", "/api/users/nobody/revoke", None).await,
        404,
    );
    s.stop().await;
}

#[tokio::test]
async fn revoke_closes_open_sockets_with_4003_and_refuses_old_tokens() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let old = s.token("u1");
    let (mut w1, _, _) = s.connect("u1").await;
    let r = s.admin("POST", "/api/users/u1/revoke", None).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        text(&r)
    );
    let (code, _) = expect_close(&mut w1).await;
    assert_eq!(code, 4003);
    // A token issued before the revocation is refused like a bad token.
    let mut w = s.ws_raw(&format!("token={old}"), &[]).await;
    let (code, _) = expect_close(&mut w).await;
    assert_eq!(code, 1008);
    // The user still exists.
    get_user(&s, "u1").await;
    s.stop().await;
}

#[tokio::test]
async fn unknown_admin_path_and_wrong_method() {
    let s = Server::start().await;
    assert_json_error(&s.admin("GET", "/api/nothing", None).await, 404);
    assert_json_error(&s.admin("GET", "/api/users/u1/other", None).await, 404);
    let r = s.admin("POST", "/api/users/u1", Some(json!({}))).await;
    assert!(r.status == 405 || r.status == 404, "{}", r.status);
    assert_json_error(&r, r.status);
    s.stop().await;
}

// ------------------------------------------------------------------ status

#[tokio::test]
async fn status_shape_and_counts_match_what_happened() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers":[N1]})).await;
    s.put_user("u2", json!({})).await;

    let st = status(&s).await;
    assert!(st["uptimeSecs"].is_u64(), "{st}");
    assert_eq!(
        st["connections"],
        json!({"total":0,"authenticated":0,"perUser":{}}),
        "{st}"
    );
    assert_eq!(
        st["events"],
        json!({"received":0,"delivered":0,"duplicate":0,"unrouted":0}),
        "{st}"
    );

    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u1").await;
    // A connection that has not authenticated yet: counted in total only.
    let mut pending = s.ws_raw("", &[]).await;
    assert_eq!(next_json(&mut pending).await["event"], "auth-required");

    // e1 → u1 (two sockets); e1 again (duplicate); e2 unrouted (no supervisor
    // exists, so it reaches nobody); one refused webhook (not counted).
    let e1 = envelope("call.initiated", call_payload("c1", OUTSIDE, N1));
    assert_eq!(s.post_webhook(&e1).await.json()["duplicate"], false);
    assert_eq!(s.post_webhook(&e1).await.json()["duplicate"], true);
    let e2 = envelope(
        "call.initiated",
        call_payload("c2", OUTSIDE, "+15550000000"),
    );
    assert_eq!(s.post_webhook(&e2).await.status, 200);
    let r = s
        .request("POST", "/webhooks/telnyx", &[], e1.to_string())
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(next_json(&mut a).await["id"], e1["data"]["id"]);
    assert_eq!(next_json(&mut b).await["id"], e1["data"]["id"]);

    let st = poll_until(
        "status counters settle",
        || status(&s),
        |st| st["events"]["delivered"] == 2 && st["connections"]["total"] == 3,
    )
    .await;
    assert!(st["uptimeSecs"].is_u64(), "{st}");
    assert_eq!(
        st["connections"],
        json!({"total":3,"authenticated":2,"perUser":{"u1":2}}),
        "{st}"
    );
    // Reading: `received` counts every verified event delivery, duplicates
    // included (3 = e1, e1 again, e2); `duplicate` is the re-deliveries.
    assert_eq!(
        st["events"],
        json!({"received":3,"delivered":2,"duplicate":1,"unrouted":1}),
        "{st}"
    );

    // Closing one socket is reflected in the counts.
    close_ws(a).await;
    let st = poll_until(
        "one connection fewer",
        || status(&s),
        |st| st["connections"]["authenticated"] == 1,
    )
    .await;
    assert_eq!(
        st["connections"],
        json!({"total":2,"authenticated":1,"perUser":{"u1":1}}),
        "{st}"
    );
    expect_silence(&mut b, SILENCE).await;
    s.stop().await;
}

// ------------------------------------------------------------------ broadcast

#[tokio::test]
async fn broadcast_to_users_and_to_all_counts_connections() {
    let s = Server::start().await;
    for u in ["u1", "u2", "u3"] {
        s.put_user(u, json!({})).await;
    }
    let (mut a1, _, _) = s.connect("u1").await;
    let (mut a2, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u2").await;
    let (mut c, _, _) = s.connect("u3").await;

    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"userIds":["u1"],"event":"notice","data":{"text":"hi"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({"delivered": 2}));
    for w in [&mut a1, &mut a2] {
        let m = next_json(w).await;
        assert_eq!(m["event"], "notice");
        assert_eq!(m["data"], json!({"text":"hi"}));
        assert!(m.get("seq").is_none(), "custom messages carry no seq: {m}");
    }
    expect_silence(&mut b, SILENCE).await;
    expect_silence(&mut c, SILENCE).await;

    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"all":true,"event":"maintenance","data":{"in":5}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({"delivered": 4}));
    for w in [&mut a1, &mut a2, &mut b, &mut c] {
        let m = next_json(w).await;
        assert_eq!(m["event"], "maintenance");
        assert_eq!(m["data"], json!({"in":5}));
    }
    // Users without connections count nothing.
    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"userIds":["nobody"],"event":"notice","data":{}})),
        )
        .await;
    assert_eq!(r.json(), json!({"delivered": 0}));
    s.stop().await;
}

#[tokio::test]
async fn broadcast_with_bad_body_is_400() {
    let s = Server::start().await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    for body in [
        "not json",
        "{}",
        r#"{"event":"x","data":{}}"#,
        r#"{"all":true,"data":{}}"#,
        r#"{"all":true,"event":"","data":{}}"#,
    ] {
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
        assert_json_error(&r, 400);
    }
    s.stop().await;
}

#[tokio::test]
async fn put_user_with_invalid_id_is_400() {
    let s = Server::start().await;
    for path in ["/api/users/a%20b", "/api/users/%3Cscript%3E"] {
        let r = s.admin("PUT", path, Some(json!({}))).await;
        assert_json_error(&r, 400);
    }
    s.stop().await;
}
