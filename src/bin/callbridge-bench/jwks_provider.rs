//! `--connects` with `--jwks-port`: a stand-in for an identity provider
//! (contract §15) in the load generator's process. One RSA key pair
//! (rcgen, aws-lc-rs), made at startup; its public key served as a JWKS
//! document (`kty` `RSA`, `n`, `e`, `kid`, `alg` `RS256`, `use` `sig`, built
//! by `jsonwebtoken::jwk::Jwk::from_encoding_key`) over plain HTTP on a
//! loopback port (hyper's HTTP/1 server, as the other stand-ins), with
//! `Cache-Control: max-age=3600`; and RS256 tokens signed with its private
//! key. The daemon runs with `CALLBRIDGE_JWT_JWKS_URL` at that port, which
//! it allows to loopback over `http://`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// The key id the document and the tokens carry.
pub const KID: &str = "bench-rs256-1";
/// Where the document is served (any path answers it).
pub const PATH: &str = "/.well-known/jwks.json";

/// The provider: its signing key and how often its document was fetched.
pub struct Provider {
    signing: EncodingKey,
    /// The JWKS document (public key only).
    pub document: String,
    pub fetches: Arc<AtomicU64>,
}

impl Provider {
    /// A fresh RSA key (2048 bits, rcgen's size) and its JWKS document.
    pub fn generate() -> Provider {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key pair");
        let signing =
            EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("RSA private key");
        let mut jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).expect("RSA JWK");
        jwk.common.key_id = Some(KID.to_string());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let document = json!({ "keys": [jwk] }).to_string();
        Provider {
            signing,
            document,
            fetches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An RS256 token for `sub` with [`KID`], issued `iat`, expiring `exp`.
    pub fn mint(&self, sub: &str, iat: i64, exp: i64) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.to_string());
        let claims = json!({ "sub": sub, "iat": iat, "exp": exp });
        jsonwebtoken::encode(&header, &claims, &self.signing).expect("RS256 token")
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Serve the document on `127.0.0.1:port` until the process ends,
    /// counting requests.
    pub async fn serve(&self, port: u16) {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the JWKS port");
        let body = Bytes::from(self.document.clone());
        let fetches = self.fetches.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (body, fetches) = (body.clone(), fetches.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                        fetches.fetch_add(1, Ordering::Relaxed);
                        let answer = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "public, max-age=3600")
                            .body(Full::new(body.clone()))
                            .expect("response");
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document is what a provider serves, as the daemon reads it:
    /// one RS256 signing key with its `kid`, public parts only; the
    /// stand-in's tokens verify with it.
    #[test]
    fn document_and_tokens_are_a_providers() {
        let p = Provider::generate();
        let doc: serde_json::Value = serde_json::from_str(&p.document).unwrap();
        let key = &doc["keys"][0];
        assert_eq!(doc["keys"].as_array().unwrap().len(), 1);
        for (field, want) in [
            ("kty", "RSA"),
            ("alg", "RS256"),
            ("use", "sig"),
            ("kid", KID),
        ] {
            assert_eq!(key[field], want, "{field}");
        }
        assert_eq!(key["e"], "AQAB");
        assert!(key["n"].as_str().unwrap().len() >= 342, "2048-bit modulus");
        assert!(key.get("d").is_none(), "no private part");
        let keys = callbridge::jwks::parse(p.document.as_bytes()).unwrap();
        assert_eq!(
            callbridge::jwks::describe(&keys),
            [format!("{KID} (RS256)")]
        );
        let token = p.mint("bench0", 1_000, 4_000_000_000);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(KID));
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.validate_aud = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &keys[0].decoding, &v).unwrap();
        assert_eq!(data.claims["sub"], "bench0");
    }
}
