//! WebSocket authentication, close codes and origin checks (contract §4).

use std::time::Duration;

use crate::common::*;
use callbridge::client::{self, Wss};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ------------------------------------------------------------------ helpers

/// Like `expect_close`, with a caller-chosen deadline.
async fn close_within(ws: &mut Wss, d: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for close");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                assert_ne!(v["event"], "connected", "authenticated unexpectedly: {v}");
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of close frame: {e}"),
            None => panic!("stream ended without close frame"),
        }
    }
}

/// Expect a 1008 close without a `connected` first; the reason must contain
/// `what` and no part of the token.
async fn expect_refused(ws: &mut Wss, token: &str, what: &str) -> String {
    let (code, reason) = close_within(ws, WAIT).await;
    assert_eq!(code, 1008, "close code (reason {reason:?})");
    assert!(
        reason.to_lowercase().contains(what),
        "reason {reason:?} should name {what:?}"
    );
    assert_no_token(&reason, token);
    reason
}

fn assert_no_token(reason: &str, token: &str) {
    if token.is_empty() {
        return;
    }
    assert!(
        !reason.contains(token),
        "reason leaks the token: {reason:?}"
    );
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(
            !reason.contains(part),
            "reason leaks part of the token: {reason:?}"
        );
    }
}

fn mint(user: &str, email: Option<&str>, ttl: i64) -> String {
    callbridge::auth::mint(JWT_SECRET.as_bytes(), user, email, ttl, now_secs()).unwrap()
}

/// A token signed with a secret the daemon does not know.
fn wrongly_signed(user: &str) -> String {
    callbridge::auth::mint(
        b"some-other-secret-0123456789abcdef",
        user,
        None,
        3600,
        now_secs(),
    )
    .unwrap()
}

/// Open a socket with no token, read `auth-required`, send `auth`.
async fn via_auth_message(s: &Server, token: &str) -> Wss {
    let mut ws = s.ws_raw("", &[]).await;
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    send_json(&mut ws, json!({"type":"auth","token":token})).await;
    ws
}

/// All four ways of presenting a token.
async fn open_each_way(s: &Server, token: &str) -> Vec<(&'static str, Wss)> {
    let bearer = format!("Bearer {token}");
    let proto = format!("callbridge.v1, bearer.{token}");
    vec![
        ("query", s.ws_raw(&format!("token={token}"), &[]).await),
        ("header", s.ws_raw("", &[("authorization", &bearer)]).await),
        (
            "subprotocol",
            s.ws_raw("", &[("sec-websocket-protocol", &proto)]).await,
        ),
        ("auth message", via_auth_message(s, token).await),
    ]
}

fn subprotocol_of(resp: &tokio_tungstenite::tungstenite::handshake::client::Response) -> String {
    resp.headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The key of RFC 6455's example: base64 of 16 bytes.
const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A raw HTTP upgrade request (no WebSocket client) with the given Origin.
async fn upgrade_request(s: &Server, origin: &str) -> client::HttpResponse {
    upgrade_with(s, "websocket", Some(GOOD_KEY), Some(origin)).await
}

/// A raw upgrade request with the given Upgrade header, key and Origin.
async fn upgrade_with(
    s: &Server,
    upgrade: &str,
    key: Option<&str>,
    origin: Option<&str>,
) -> client::HttpResponse {
    let mut headers = vec![
        ("connection", "Upgrade"),
        ("upgrade", upgrade),
        ("sec-websocket-version", "13"),
    ];
    headers.extend(key.map(|k| ("sec-websocket-key", k)));
    headers.extend(origin.map(|o| ("origin", o)));
    s.request("GET", &format!("/ws?token={}", s.token("u1")), &headers, "")
        .await
}

// ------------------------------------------------------ successful methods

#[tokio::test]
async fn query_token_authenticates() {
    let s = Server::start().await;
    s.put_user("u1", json!({"email":"a@example.com"})).await;
    let mut ws = s.ws_raw(&format!("token={}", s.token("u1")), &[]).await;
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn authorization_header_authenticates() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let bearer = format!("Bearer {}", s.token("u1"));
    let (mut ws, resp) =
        client::ws_connect(&s.ws_url, &[("authorization", &bearer)], s.tls.clone())
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    // No subprotocol was offered, so none is answered.
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn subprotocol_bearer_authenticates_and_server_answers_v1() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let proto = format!("callbridge.v1, bearer.{}", s.token("u1"));
    let (mut ws, resp) = client::ws_connect(
        &s.ws_url,
        &[("sec-websocket-protocol", &proto)],
        s.tls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(subprotocol_of(&resp), "callbridge.v1");
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    assert_alive(&mut ws).await;

    // Entry order does not matter.
    let proto = format!("bearer.{}, callbridge.v1", s.token("u1"));
    let (mut ws, resp) = client::ws_connect(
        &s.ws_url,
        &[("sec-websocket-protocol", &proto)],
        s.tls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(subprotocol_of(&resp), "callbridge.v1");
    read_connected(&mut ws).await;

    // A bad bearer entry: the upgrade is still accepted and answered, and
    // the failure comes as a close frame.
    let bad = wrongly_signed("u1");
    let proto = format!("callbridge.v1, bearer.{bad}");
    let (mut ws, resp) = client::ws_connect(
        &s.ws_url,
        &[("sec-websocket-protocol", &proto)],
        s.tls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(subprotocol_of(&resp), "callbridge.v1");
    expect_refused(&mut ws, &bad, "invalid").await;
}

#[tokio::test]
async fn subprotocol_v1_without_bearer_is_answered() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    // Token in the query, only `callbridge.v1` offered.
    let url = format!("{}?token={}", s.ws_url, s.token("u1"));
    let (mut ws, resp) = client::ws_connect(
        &url,
        &[("sec-websocket-protocol", "callbridge.v1")],
        s.tls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(subprotocol_of(&resp), "callbridge.v1");
    read_connected(&mut ws).await;

    // No token at all: still answered, then the auth message path.
    let (mut ws, resp) = client::ws_connect(
        &s.ws_url,
        &[("sec-websocket-protocol", "callbridge.v1")],
        s.tls.clone(),
    )
    .await
    .unwrap();
    assert_eq!(subprotocol_of(&resp), "callbridge.v1");
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    send_json(&mut ws, json!({"type":"auth","token":s.token("u1")})).await;
    read_connected(&mut ws).await;
}

#[tokio::test]
async fn auth_message_after_auth_required() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let mut ws = s.ws_raw("", &[]).await;
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    // Default CALLBRIDGE_AUTH_TIMEOUT_SECS is 10.
    assert_eq!(req["data"], json!({"timeoutSecs":10}));
    send_json(&mut ws, json!({"type":"auth","token":s.token("u1")})).await;
    let connected = next_json(&mut ws).await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["data"]["userId"], "u1");
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn auth_required_reports_configured_timeout() {
    let s = Server::start_with(&[("CALLBRIDGE_AUTH_TIMEOUT_SECS", "7")]).await;
    let mut ws = s.ws_raw("", &[]).await;
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    assert_eq!(req["data"]["timeoutSecs"], 7);
}

#[tokio::test]
async fn messages_before_auth_are_ignored() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let mut ws = s.ws_raw("", &[]).await;
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    send_json(&mut ws, json!({"type":"status","status":"away"})).await;
    send_json(&mut ws, json!({"type":"resume","since":0})).await;
    send_json(&mut ws, json!({"type":"dance"})).await;
    futures_util::SinkExt::send(&mut ws, Message::text("not json"))
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut ws, Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    expect_silence(&mut ws, Duration::from_millis(400)).await;
    // Still waiting for auth: it works afterwards.
    send_json(&mut ws, json!({"type":"auth","token":s.token("u1")})).await;
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    // The pre-auth status message was not applied.
    let u = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(u["status"], "available", "{u}");
}

// ---------------------------------------------------------------- failures

#[tokio::test]
async fn empty_token_in_auth_message_closes_1008_missing() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let mut ws = via_auth_message(&s, "").await;
    expect_refused(&mut ws, "", "missing").await;
}

#[tokio::test]
async fn invalid_signature_closes_1008_every_way() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let token = wrongly_signed("u1");
    for (how, mut ws) in open_each_way(&s, &token).await {
        let (code, reason) = close_within(&mut ws, WAIT).await;
        assert_eq!(code, 1008, "{how}: reason {reason:?}");
        assert!(reason.contains("invalid"), "{how}: reason {reason:?}");
        assert_no_token(&reason, &token);
    }
}

#[tokio::test]
async fn garbage_token_closes_1008_invalid() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    for token in [
        "garbage-token-xyz",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.AAAAAAAA",
    ] {
        let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
        expect_refused(&mut ws, token, "invalid").await;
        let mut ws = via_auth_message(&s, token).await;
        expect_refused(&mut ws, token, "invalid").await;
    }
}

#[tokio::test]
async fn expired_token_closes_1008_expired() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let token = mint("u1", None, -60);
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    expect_refused(&mut ws, &token, "expired").await;
    let bearer = format!("Bearer {token}");
    let mut ws = s.ws_raw("", &[("authorization", &bearer)]).await;
    expect_refused(&mut ws, &token, "expired").await;
    let mut ws = via_auth_message(&s, &token).await;
    expect_refused(&mut ws, &token, "expired").await;
}

#[tokio::test]
async fn unknown_user_closes_1008() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let token = s.token("ghost");
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    expect_refused(&mut ws, &token, "unknown").await;
    let mut ws = via_auth_message(&s, &token).await;
    expect_refused(&mut ws, &token, "unknown").await;
}

#[tokio::test]
async fn disabled_user_closes_1008() {
    let s = Server::start().await;
    s.put_user("u1", json!({"email":"a@example.com","disabled":true}))
        .await;
    let token = s.token("u1");
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    expect_refused(&mut ws, &token, "disabled").await;
    let mut ws = via_auth_message(&s, &token).await;
    expect_refused(&mut ws, &token, "disabled").await;
    // Re-enabled: the same token works.
    s.put_user("u1", json!({"email":"a@example.com","disabled":false}))
        .await;
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    read_connected(&mut ws).await;
}

#[tokio::test]
async fn revoked_tokens_are_refused_until_a_newer_token() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let before_second = now_secs();
    let old =
        callbridge::auth::mint(JWT_SECRET.as_bytes(), "u1", None, 3600, before_second).unwrap();
    // Works before the revoke.
    let mut ws = s.ws_raw(&format!("token={old}"), &[]).await;
    read_connected(&mut ws).await;
    drop(ws);

    let r = s.admin("POST", "/api/users/u1/revoke", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // iat before or at the revoke second: refused, every way.
    for (how, mut ws) in open_each_way(&s, &old).await {
        let (code, reason) = close_within(&mut ws, WAIT).await;
        assert_eq!(code, 1008, "{how}: reason {reason:?}");
        assert!(reason.contains("revoked"), "{how}: reason {reason:?}");
        assert_no_token(&reason, &old);
    }

    // A token issued a full second after the revoke works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = mint("u1", None, 3600);
    let mut ws = s.ws_raw(&format!("token={fresh}"), &[]).await;
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    // The old one stays refused.
    let mut ws = s.ws_raw(&format!("token={old}"), &[]).await;
    expect_refused(&mut ws, &old, "revoked").await;
}

#[tokio::test]
async fn revoke_of_unknown_user_is_404() {
    let s = Server::start().await;
    let r = s.admin("POST", "/api/users/nobody/revoke", None).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[tokio::test]
async fn no_auth_message_closes_4401() {
    let s = Server::start_with(&[("CALLBRIDGE_AUTH_TIMEOUT_SECS", "1")]).await;
    s.put_user("u1", json!({})).await;
    let mut ws = s.ws_raw("", &[]).await;
    let req = next_json(&mut ws).await;
    assert_eq!(req["event"], "auth-required", "{req}");
    assert_eq!(req["data"]["timeoutSecs"], 1);
    let (code, reason) = close_within(&mut ws, WAIT).await;
    assert_eq!(code, 4401, "reason {reason:?}");

    // Non-auth messages do not count as authentication.
    let mut ws = s.ws_raw("", &[]).await;
    let _ = next_json(&mut ws).await;
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    let (code, reason) = close_within(&mut ws, WAIT).await;
    assert_eq!(code, 4401, "reason {reason:?}");
}

// ------------------------------------------------------ while connected

#[tokio::test]
async fn token_expiry_while_connected_closes_4001() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let token = mint("u1", None, 1);
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    read_connected(&mut ws).await;
    assert_alive(&mut ws).await;
    // exp is ≤ 1 s away, plus at most 5 s leeway; allow generous slack.
    let (code, reason) = close_within(&mut ws, Duration::from_secs(20)).await;
    assert_eq!(code, 4001, "reason {reason:?}");
    assert_no_token(&reason, &token);
}

#[tokio::test]
async fn token_expiry_applies_to_auth_message_tokens_too() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let mut ws = via_auth_message(&s, &mint("u1", None, 1)).await;
    read_connected(&mut ws).await;
    let (code, reason) = close_within(&mut ws, Duration::from_secs(20)).await;
    assert_eq!(code, 4001, "reason {reason:?}");
}

#[tokio::test]
async fn token_refresh_keeps_connection_past_old_expiry() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let started = tokio::time::Instant::now();
    let mut ws = s
        .ws_raw(&format!("token={}", mint("u1", None, 1)), &[])
        .await;
    read_connected(&mut ws).await;
    send_json(
        &mut ws,
        json!({"type":"auth","token":mint("u1", None, 3600)}),
    )
    .await;
    // The refresh itself is silent.
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    // Old expiry: ≤ 1 s + 5 s leeway after connecting. Stay open well past it.
    let past_old_expiry = started + Duration::from_secs(9);
    expect_silence(
        &mut ws,
        past_old_expiry.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn refresh_for_another_user_closes_1008() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let other = s.token("u2");
    send_json(&mut ws, json!({"type":"auth","token":other})).await;
    let (code, reason) = close_within(&mut ws, WAIT).await;
    assert_eq!(code, 1008, "reason {reason:?}");
    assert!(reason.contains("another user"), "reason {reason:?}");
    assert_no_token(&reason, &other);
}

#[tokio::test]
async fn refresh_with_bad_token_closes_1008() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let bad = wrongly_signed("u1");
    send_json(&mut ws, json!({"type":"auth","token":bad})).await;
    let (code, reason) = close_within(&mut ws, WAIT).await;
    assert_eq!(code, 1008, "reason {reason:?}");
    assert!(reason.contains("invalid"), "reason {reason:?}");
    assert_no_token(&reason, &bad);
}

#[tokio::test]
async fn delete_user_closes_their_sockets_4003() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u1").await;
    let (mut other, _, _) = s.connect("u2").await;
    let r = s.admin("DELETE", "/api/users/u1", None).await;
    assert_eq!(r.status, 204);
    for ws in [&mut a, &mut b] {
        let (code, reason) = close_within(ws, WAIT).await;
        assert_eq!(code, 4003, "reason {reason:?}");
    }
    expect_silence(&mut other, Duration::from_millis(300)).await;
    assert_alive(&mut other).await;
    // The deleted user cannot come back with the old token.
    let token = s.token("u1");
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    expect_refused(&mut ws, &token, "unknown").await;
    assert_eq!(s.admin("DELETE", "/api/users/u1", None).await.status, 404);
}

#[tokio::test]
async fn revoke_closes_their_sockets_4003() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    s.put_user("u2", json!({})).await;
    let (mut a, _, _) = s.connect("u1").await;
    let (mut b, _, _) = s.connect("u1").await;
    let (mut other, _, _) = s.connect("u2").await;
    let r = s.admin("POST", "/api/users/u1/revoke", None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for ws in [&mut a, &mut b] {
        let (code, reason) = close_within(ws, WAIT).await;
        assert_eq!(code, 4003, "reason {reason:?}");
    }
    expect_silence(&mut other, Duration::from_millis(300)).await;
    assert_alive(&mut other).await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    // One socket still waiting for its auth message.
    let mut waiting = s.ws_raw("", &[]).await;
    let req = next_json(&mut waiting).await;
    assert_eq!(req["event"], "auth-required");
    let (_, (code, reason), (code2, reason2)) = tokio::join!(
        s.stop_in_place(),
        close_within(&mut ws, Duration::from_secs(20)),
        close_within(&mut waiting, Duration::from_secs(20)),
    );
    assert_eq!(code, 1001, "reason {reason:?}");
    assert_eq!(code2, 1001, "reason {reason2:?}");
}

// ------------------------------------------------------------------ origin

const ORIGINS: &str = "https://dialer.example.com, app://electron";

#[tokio::test]
async fn origin_outside_allowlist_is_refused_with_403() {
    let s = Server::start_with(&[("CALLBRIDGE_ALLOWED_ORIGINS", ORIGINS)]).await;
    s.put_user("u1", json!({})).await;
    let url = format!("{}?token={}", s.ws_url, s.token("u1"));
    let err = match client::ws_connect(&url, &[("origin", "https://evil.example")], s.tls.clone())
        .await
    {
        Ok(_) => panic!("upgrade from a foreign origin must fail"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("403"), "{err}");

    let r = upgrade_request(&s, "https://evil.example").await;
    assert_eq!(r.status, 403);
    let body = r.json();
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");

    // A look-alike of an allowed origin is not allowed either.
    let r = upgrade_request(&s, "https://dialer.example.com.evil.example").await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn origin_in_allowlist_ignores_case_and_trailing_slash() {
    let s = Server::start_with(&[("CALLBRIDGE_ALLOWED_ORIGINS", ORIGINS)]).await;
    s.put_user("u1", json!({})).await;
    let url = format!("{}?token={}", s.ws_url, s.token("u1"));
    for origin in [
        "HTTPS://Dialer.Example.com/",
        "https://dialer.example.com",
        "app://electron",
    ] {
        let (mut ws, resp) = client::ws_connect(&url, &[("origin", origin)], s.tls.clone())
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(resp.status(), 101, "{origin}");
        read_connected(&mut ws).await;
    }
}

#[tokio::test]
async fn no_origin_header_is_allowed_with_allowlist() {
    let s = Server::start_with(&[("CALLBRIDGE_ALLOWED_ORIGINS", ORIGINS)]).await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn any_origin_is_allowed_without_allowlist() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let url = format!("{}?token={}", s.ws_url, s.token("u1"));
    let (mut ws, _) =
        client::ws_connect(&url, &[("origin", "https://evil.example")], s.tls.clone())
            .await
            .unwrap();
    read_connected(&mut ws).await;
}

// ------------------------------------------------------ handshake headers

#[tokio::test]
async fn handshake_refuses_a_key_that_is_not_16_bytes_of_base64() {
    // RFC 6455 §4.1: the key is a random 16-byte value, base64-encoded.
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    for key in [
        None,
        Some(""),
        Some("not base64 at all!"),
        Some("AAAAAAAAAAAAAAAAAAAA"),     // 15 bytes
        Some("AAAAAAAAAAAAAAAAAAAAAAA="), // 17 bytes
    ] {
        let r = upgrade_with(&s, "websocket", key, None).await;
        assert_eq!(r.status, 400, "key {key:?}");
        assert_eq!(r.json()["error"], "bad-request", "key {key:?}");
    }
    // Not an upgrade to WebSocket, even with a good key.
    let r = upgrade_with(&s, "h2c", Some(GOOD_KEY), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad-request");
    // The same server still upgrades a proper request.
    let mut ws = s.ws_raw(&format!("token={}", s.token("u1")), &[]).await;
    let (connected, _) = read_connected(&mut ws).await;
    assert_eq!(connected["data"]["userId"], "u1");
    s.stop().await;
}
