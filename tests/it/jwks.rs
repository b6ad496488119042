//! Dialer tokens from an identity provider (contract §15), on both stores:
//! keys made and tokens signed by a real JOSE library (jwcrypto, through
//! `common::jwks`), served by a JWKS server the daemon fetches from.

use std::time::Duration;

use crate::common::jwks::{JwksServer, Provider, Sign};
use crate::common::*;
use serde_json::{json, Value};

const ISS: &str = "https://login.example.com/";

fn claims(user: &str, ttl: i64) -> Value {
    let now = now_secs();
    json!({"sub": user, "iat": now, "exp": now + ttl, "iss": ISS, "aud": "callbridge",
           "email": format!("{user}@example.com"), "name": format!("Agent {user}")})
}

/// An HS256 token of the harness's secret, with the provider's `iss` and
/// `aud` (the daemon checks them on every token).
fn secret_token(user: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    encode(
        &Header::default(),
        &claims(user, 600),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A daemon trusting `jwks` (and the harness's secret beside it).
async fn daemon(jwks: &JwksServer, extra: &[(&str, &str)]) -> Server {
    let mut settings = vec![
        ("CALLBRIDGE_JWT_JWKS_URL", jwks.url.as_str()),
        ("CALLBRIDGE_JWT_ISSUER", ISS),
        ("CALLBRIDGE_JWT_AUDIENCE", "callbridge"),
    ];
    settings.extend_from_slice(extra);
    Server::start_with(&settings).await
}

/// `connected` on success; the close code otherwise.
async fn open(s: &Server, token: &str) -> Result<Value, u16> {
    let mut ws = s.ws_raw(&format!("token={token}"), &[]).await;
    let first = next_frame(&mut ws).await;
    match first {
        Ok(v) if v["event"] == "connected" => Ok(v),
        Ok(v) => panic!("unexpected {v}"),
        Err(code) => Err(code),
    }
}

async fn next_frame(ws: &mut callbridge::client::Wss) -> Result<Value, u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(f))) => return Err(f.map_or(1005, |f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_tokens_of_every_algorithm_connect_and_bad_ones_are_refused() {
    let Some(mut p) = Provider::new() else { return };
    p.add_keys(&[
        ("rs", "RS256"),
        ("es", "ES256"),
        ("ed", "EdDSA"),
        ("ps", "PS256"),
        ("rs5", "RS512"),
        ("es3", "ES384"),
        ("ps3", "PS384"),
    ]);
    let now = now_secs();
    let specs = [
        Sign::new("rs", claims("u1", 600)),
        Sign::new("es", claims("u1", 600)),
        Sign::new("ed", claims("u1", 600)),
        Sign::new("ps", claims("u1", 600)),
        Sign::new("rs5", claims("u1", 600)),
        Sign::new("es3", claims("u1", 600)),
        Sign::new("ps3", claims("u1", 600)),
        Sign::new("rs", claims("u1", 600)).without_kid(),
        Sign::new("rs", claims("u1", 600)).unpublished_key(),
        Sign::new(
            "es",
            json!({"sub":"u1","iat":now-700,"exp":now-600,"iss":ISS,"aud":"callbridge"}),
        ),
        Sign::new(
            "ed",
            json!({"sub":"u1","iat":now,"exp":now+600,"iss":"https://evil.example/","aud":"callbridge"}),
        ),
        Sign::new(
            "ps",
            json!({"sub":"u1","iat":now,"exp":now+600,"iss":ISS,"aud":"someone-else"}),
        ),
    ];
    let tokens = p.tokens(&specs);
    let jwks = JwksServer::start(&p).await;
    let s = daemon(&jwks, &[]).await;
    s.put_user("u1", json!({})).await;
    for (i, t) in tokens.iter().take(8).enumerate() {
        let c = open(&s, t)
            .await
            .unwrap_or_else(|code| panic!("token {i} refused: {code}"));
        assert_eq!(c["data"]["userId"], "u1");
    }
    for (i, t) in tokens.iter().skip(8).enumerate() {
        assert_eq!(open(&s, t).await.unwrap_err(), 1008, "bad token {i}");
    }
    // The harness's HS256 secret works beside the JWKS.
    assert!(open(&s, &secret_token("u1")).await.is_ok());
    let m = text(&s.get("/metrics").await.unwrap());
    assert!(m.contains("callbridge_jwks_keys 7"), "{m}");
    assert!(
        m.contains("callbridge_jwks_fetches_total{outcome=\"ok\"} 1"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_taken_after_exactly_one_more_fetch() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("old", "RS256");
    let jwks = JwksServer::start(&p).await;
    let s = daemon(&jwks, &[]).await;
    s.put_user("u1", json!({})).await;
    assert_eq!(jwks.fetches(), 1);
    // The provider publishes a new key and signs with it.
    p.add_key("new", "ES256");
    jwks.set_jwks(&p);
    let t = p.token("new", claims("u1", 600));
    assert!(open(&s, &t).await.is_ok(), "accepted without a restart");
    assert_eq!(jwks.fetches(), 2, "exactly one extra fetch");
    assert!(open(&s, &t).await.is_ok());
    assert_eq!(jwks.fetches(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_unknown_kids_cost_at_most_two_fetches() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("k", "EdDSA");
    let forged = p.tokens_with_unknown_kids("k", 50, claims("u1", 600));
    let jwks = JwksServer::start(&p).await;
    let s = daemon(&jwks, &[]).await;
    s.put_user("u1", json!({})).await;
    let opens = forged.iter().map(|t| {
        let (url, tls) = (format!("{}?token={t}", s.ws_url), s.tls.clone());
        tokio::spawn(async move {
            let (mut ws, _) = callbridge::client::ws_connect(&url, &[], tls)
                .await
                .unwrap();
            next_frame(&mut ws).await
        })
    });
    for r in futures_util::future::join_all(opens).await {
        assert_eq!(r.unwrap().unwrap_err(), 1008);
    }
    assert!(jwks.fetches() <= 2, "{} fetches", jwks.fetches());
    // A known key keeps working meanwhile.
    assert!(open(&s, &p.token("k", claims("u1", 600))).await.is_ok());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_down_changes_nothing_for_known_keys() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("k", "RS256");
    let t = p.token("k", claims("u1", 600));
    let jwks = JwksServer::start(&p).await;
    let s = daemon(&jwks, &[]).await;
    s.put_user("u1", json!({})).await;
    jwks.set_down(true);
    // An unknown kid makes it fetch, and fail: the known key stays.
    let unknown = p.tokens_with_unknown_kids("k", 1, claims("u1", 600));
    assert_eq!(open(&s, &unknown[0]).await.unwrap_err(), 1008);
    assert!(jwks.fetches() >= 2);
    assert!(open(&s, &t).await.is_ok());
    assert_eq!(s.get("/ready").await.unwrap().status, 200);
    let m = text(&s.get("/metrics").await.unwrap());
    assert!(
        m.contains("callbridge_jwks_fetches_total{outcome=\"error\"}"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_down_at_startup_keeps_ready_503_until_it_answers() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("k", "ES256");
    let t = p.token("k", claims("u1", 600));
    let jwks = JwksServer::start(&p).await;
    jwks.set_down(true);
    let mut settings = vec![("CALLBRIDGE_JWT_JWKS_URL", jwks.url.as_str())];
    settings.extend([
        ("CALLBRIDGE_JWT_ISSUER", ISS),
        ("CALLBRIDGE_JWT_AUDIENCE", "callbridge"),
    ]);
    let s = Server::start_live(&settings).await;
    s.put_user("u1", json!({})).await;
    let ready = s.get("/ready").await.unwrap();
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"], "not-ready");
    assert_eq!(
        open(&s, &t).await.unwrap_err(),
        1008,
        "provider tokens wait for keys"
    );
    assert!(
        open(&s, &secret_token("u1")).await.is_ok(),
        "secret tokens work meanwhile"
    );
    jwks.set_down(false);
    for _ in 0..100 {
        if s.get("/ready").await.unwrap().status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.get("/ready").await.unwrap().status, 200);
    assert!(open(&s, &t).await.is_ok());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_user_claim_names_the_user_without_fallback() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("k", "RS256");
    let claim = "https://callbridge.example.com/user_id";
    let mut with = claims("auth0|abc", 600);
    with[claim] = json!("u1");
    let without = claims("u1", 600);
    let tokens = p.tokens(&[Sign::new("k", with), Sign::new("k", without)]);
    let jwks = JwksServer::start(&p).await;
    let s = daemon(&jwks, &[("CALLBRIDGE_JWT_USER_CLAIM", claim)]).await;
    s.put_user("u1", json!({})).await;
    assert_eq!(open(&s, &tokens[0]).await.unwrap()["data"]["userId"], "u1");
    assert_eq!(
        open(&s, &tokens[1]).await.unwrap_err(),
        1008,
        "no fallback to sub"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_provisioning_creates_a_user_once_and_revoke_applies() {
    let Some(mut p) = Provider::new() else { return };
    p.add_key("k", "EdDSA");
    let t = p.token("k", claims("newbie", 600));
    let jwks = JwksServer::start(&p).await;
    // Off: an unknown user is refused.
    let off = daemon(&jwks, &[]).await;
    assert_eq!(open(&off, &t).await.unwrap_err(), 1008);
    off.stop().await;

    let s = daemon(&jwks, &[("CALLBRIDGE_JWT_AUTO_PROVISION", "agent")]).await;
    let opens = (0..20).map(|_| {
        let (url, tls) = (format!("{}?token={t}", s.ws_url), s.tls.clone());
        tokio::spawn(async move {
            let (mut ws, _) = callbridge::client::ws_connect(&url, &[], tls)
                .await
                .unwrap();
            let first = next_frame(&mut ws).await;
            (first, ws)
        })
    });
    let mut sockets = Vec::new();
    for r in futures_util::future::join_all(opens).await {
        let (first, ws) = r.unwrap();
        assert_eq!(first.unwrap()["data"]["userId"], "newbie");
        sockets.push(ws);
    }
    let user = s.admin("GET", "/api/users/newbie", None).await.json();
    assert_eq!(
        (
            user["role"].as_str(),
            user["email"].as_str(),
            user["name"].as_str()
        ),
        (
            Some("agent"),
            Some("newbie@example.com"),
            Some("Agent newbie")
        ),
        "{user}"
    );
    assert_eq!(user["presence"]["connections"], 20);
    // An ordinary user: revoke closes its provider-token sockets, and the
    // same token no longer opens one.
    assert_eq!(
        s.admin("POST", "/api/users/newbie/revoke", None)
            .await
            .status,
        200
    );
    for ws in sockets.iter_mut() {
        assert_eq!(expect_close(ws).await.0, 4003);
    }
    assert_eq!(open(&s, &t).await.unwrap_err(), 1008);
    s.stop().await;
}

/// `check-config` fetches the JWKS and lists its keys; a refused provider
/// token is logged with its `kid`, never the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_lists_the_keys_and_the_log_names_the_kid_not_the_token() {
    use crate::common::process::{clean_command, free_port, signal, wait_exit};
    let Some(mut p) = Provider::new() else { return };
    p.add_keys(&[("main-2026", "RS256"), ("edge", "EdDSA")]);
    let bad = p
        .tokens_with_unknown_kids("edge", 1, claims("u1", 600))
        .remove(0);
    let kid = jsonwebtoken::decode_header(&bad).unwrap().kid.unwrap();
    let jwks = JwksServer::start(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cmd = |args: &[&str]| {
        let mut c = clean_command();
        c.args(args)
            .env("CALLBRIDGE_DATA_DIR", dir.path())
            .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALLBRIDGE_JWT_JWKS_URL", &jwks.url);
        c
    };
    let mut check = cmd(&["check-config", "--dev"]);
    let out = tokio::task::spawn_blocking(move || check.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2 key(s): main-2026 (RS256), edge (EdDSA)"),
        "{text}"
    );

    let log = dir.path().join("serve.log");
    let mut serve = cmd(&["serve", "--dev"])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ca = dir.path().join("ca.pem");
    let url = format!("wss://127.0.0.1:{port}/ws?token={bad}");
    let mut closed = None;
    for _ in 0..100 {
        if let Ok(pem) = std::fs::read(&ca) {
            let tls = callbridge::tls::client_config(Some(&pem)).unwrap();
            if let Ok((mut ws, _)) = callbridge::client::ws_connect(&url, &[], tls).await {
                closed = Some(next_frame(&mut ws).await);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.expect("connected").unwrap_err(), 1008);
    signal(&serve, "-TERM");
    assert_eq!(wait_exit(&mut serve), 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&kid), "the refused token's kid is logged");
    let signature = bad.rsplit('.').next().unwrap();
    assert!(
        !logged.contains(signature) && !logged.contains(&bad),
        "the token is not"
    );
}
