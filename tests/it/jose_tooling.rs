//! The JWKS test tooling itself (tests/common/jwks.rs, tests/jose_provider.py):
//! jwcrypto's keys and tokens verify with the `jsonwebtoken` crate against
//! the JWKS the server serves, and the server counts, rotates, goes down
//! and up, and sends the `Cache-Control` it is told.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::common::jwks::{JwksServer, Provider, Sign, ALGS, JWKS_PATH};
use crate::common::{SILENCE, WAIT};

struct Got {
    status: u16,
    cache_control: Option<String>,
    body: Bytes,
}

/// One plain-HTTP GET of `path` on the server on `port`.
async fn get(port: u16, path: &str) -> Got {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let cache_control = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        cache_control,
        body,
    }
}

/// The JWKS as served, parsed by `jsonwebtoken`.
async fn served_jwks(server: &JwksServer) -> JwkSet {
    let got = get(server.port, JWKS_PATH).await;
    assert_eq!(got.status, 200);
    serde_json::from_slice(&got.body).expect("a JWKS jsonwebtoken reads")
}

fn claims(sub: &str) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    json!({"sub": sub, "iat": now.as_secs(), "exp": now.as_secs() + 300, "email": "a@example.com"})
}

/// Verify `token` with the key of `jwks` its header names (or, without a
/// kid, the key `kid`), as `jsonwebtoken` does: its claims.
fn verify(jwks: &JwkSet, token: &str, kid: &str) -> jsonwebtoken::errors::Result<Value> {
    let header = decode_header(token)?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap_or(kid))
        .expect("the token's key is served");
    let key = DecodingKey::from_jwk(jwk)?;
    Ok(decode::<Value>(token, &key, &Validation::new(header.alg))?.claims)
}

fn kid_of(alg: &str) -> String {
    format!("key-{}", alg.to_lowercase())
}

#[tokio::test]
async fn tokens_of_every_algorithm_verify_against_the_served_jwks() {
    let Some(mut provider) = Provider::new() else {
        return;
    };
    let kids: Vec<String> = ALGS.iter().map(|a| kid_of(a)).collect();
    let keys: Vec<(&str, &str)> = kids.iter().map(String::as_str).zip(ALGS).collect();
    let public = provider.add_keys(&keys);
    for (jwk, (kid, alg)) in public.iter().zip(&keys) {
        assert_eq!(jwk["kid"], *kid);
        assert_eq!(jwk["alg"], *alg);
        assert_eq!(jwk["use"], "sig");
        let kty = &alg[..2];
        let want = [("RS", "RSA"), ("PS", "RSA"), ("ES", "EC"), ("Ed", "OKP")];
        assert_eq!(jwk["kty"], want.iter().find(|w| w.0 == kty).unwrap().1);
        assert!(jwk.get("d").is_none(), "no private part in {jwk}");
    }
    let server = JwksServer::start(&provider).await;
    let jwks = served_jwks(&server).await;
    assert_eq!(jwks.keys.len(), ALGS.len());

    let specs: Vec<Sign> = kids
        .iter()
        .flat_map(|k| {
            [
                Sign::new(k, claims(k)),
                Sign::new(k, claims(k)).without_kid(),
            ]
        })
        .collect();
    let tokens = provider.tokens(&specs);
    for (pair, (kid, alg)) in tokens.chunks(2).zip(&keys) {
        let header = decode_header(&pair[0]).unwrap();
        assert_eq!(header.kid.as_deref(), Some(*kid));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.alg, alg.parse::<Algorithm>().unwrap());
        assert_eq!(verify(&jwks, &pair[0], kid).unwrap()["sub"], *kid);
        let header = decode_header(&pair[1]).unwrap();
        assert_eq!(header.kid, None, "{alg}: no kid");
        assert_eq!(verify(&jwks, &pair[1], kid).unwrap()["sub"], *kid);
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn forged_and_odd_tokens_are_what_they_say() {
    let Some(mut provider) = Provider::new() else {
        return;
    };
    provider.add_keys(&[("rsa", "RS256"), ("ec", "ES256"), ("ed", "EdDSA")]);
    let server = JwksServer::start(&provider).await;
    let jwks = served_jwks(&server).await;
    for kid in ["rsa", "ec", "ed"] {
        // Signed by a key nobody published, under a published kid.
        let forged = provider.token_unpublished(kid, claims(kid));
        assert_eq!(decode_header(&forged).unwrap().kid.as_deref(), Some(kid));
        let err = verify(&jwks, &forged, kid).unwrap_err();
        assert_eq!(
            *err.kind(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature
        );
        // The provider's own tokens of the same key still verify.
        assert!(verify(&jwks, &provider.token(kid, claims(kid)), kid).is_ok());
    }
    // Another alg than the key's (RS384 by an RS256 key): a real signature
    // that a verifier honouring the key's "alg" refuses.
    let other = provider.sign(Sign::new("rsa", claims("x")).alg("RS384"));
    assert_eq!(decode_header(&other).unwrap().alg, Algorithm::RS384);
    assert_eq!(
        jwks.find("rsa")
            .unwrap()
            .common
            .key_algorithm
            .unwrap()
            .to_string(),
        "RS256"
    );
    assert!(verify(&jwks, &other, "rsa").is_ok());

    // 50 tokens, 50 kids nobody has, each a real signature of "ec".
    let tokens = provider.tokens_with_unknown_kids("ec", 50, claims("u"));
    let more = provider.tokens_with_unknown_kids("ec", 2, claims("u"));
    let mut kids: Vec<String> = tokens
        .iter()
        .chain(&more)
        .map(|t| decode_header(t).unwrap().kid.unwrap())
        .collect();
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), 52, "all different");
    assert!(kids.iter().all(|k| jwks.find(k).is_none()));
    let ec = DecodingKey::from_jwk(jwks.find("ec").unwrap()).unwrap();
    for t in &tokens {
        decode::<Value>(t, &ec, &Validation::new(Algorithm::ES256)).expect("signed by ec");
    }
}

#[tokio::test]
async fn server_counts_rotates_goes_down_and_sends_cache_control() {
    let Some(mut provider) = Provider::new() else {
        return;
    };
    provider.add_keys(&[("old", "ES256"), ("new", "EdDSA")]);
    let server = JwksServer::start(&provider).await;
    assert_eq!(
        server.url,
        format!("http://127.0.0.1:{}{JWKS_PATH}", server.port)
    );
    assert_eq!(server.fetches(), 0);
    let first = get(server.port, JWKS_PATH).await;
    assert_eq!((first.status, first.cache_control), (200, None));
    assert_eq!(
        serde_json::from_slice::<Value>(&first.body).unwrap(),
        provider.jwks()
    );

    server.set_cache_control(Some("public, max-age=300"));
    let got = get(server.port, JWKS_PATH).await;
    assert_eq!(got.cache_control.as_deref(), Some("public, max-age=300"));
    assert_eq!(get(server.port, "/other").await.status, 404, "not counted");
    assert_eq!(server.fetches(), 2);

    // Rotation: "old" leaves, "newer" comes.
    provider.remove_key("old");
    provider.add_key("newer", "PS256");
    assert_eq!(provider.kids(), ["new", "newer"]);
    server.set_jwks(&provider);
    let jwks = served_jwks(&server).await;
    assert!(jwks.find("old").is_none() && jwks.find("newer").is_some());
    let token = provider.token("newer", claims("r"));
    assert_eq!(verify(&jwks, &token, "newer").unwrap()["sub"], "r");
    // A token "old" signed before the rotation finds no key any more.
    let stale = provider.token("old", claims("r"));
    assert_eq!(decode_header(&stale).unwrap().kid.as_deref(), Some("old"));

    server.set_down(true);
    assert_eq!(get(server.port, JWKS_PATH).await.status, 503);
    server.set_down(false);
    assert_eq!(get(server.port, JWKS_PATH).await.status, 200);
    server.set_body("not json");
    assert_eq!(&get(server.port, JWKS_PATH).await.body[..], b"not json");
    server.set_cache_control(None);
    assert_eq!(get(server.port, JWKS_PATH).await.cache_control, None);
    assert_eq!(server.fetches(), 7, "every GET counted, 503s too");
    wait_and_stop(server).await;
}

/// Waits with and without fetches coming; then the server stops when
/// dropped.
async fn wait_and_stop(server: JwksServer) {
    assert_eq!(server.wait_fetches(7, SILENCE).await, 7, "already there");
    let started = tokio::time::Instant::now();
    assert_eq!(server.wait_fetches(8, SILENCE).await, 7, "none more came");
    assert!(started.elapsed() >= SILENCE);
    let port = server.port;
    let fetcher = tokio::spawn(async move {
        for _ in 0..2 {
            assert_eq!(get(port, JWKS_PATH).await.status, 200);
        }
    });
    assert_eq!(
        server.wait_fetches(9, WAIT).await,
        9,
        "woken by the fetches"
    );
    fetcher.await.unwrap();
    drop(server);
    // The accept loop ends at the runtime's next turn.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stopped when dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
