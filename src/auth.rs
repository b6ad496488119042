//! Dialer tokens: JWTs signed with the configured HS256 secret or verified
//! with a PEM public key (RS256, ES256 or EdDSA, chosen by the key's type).

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::jwks::{Jwks, ALGORITHMS};
use crate::jwt::{JwtKey, JwtSettings};

/// Clock skew tolerated on `exp` (contract §4: at most 5 seconds).
pub const LEEWAY_SECS: u64 = 5;

/// A verified token's claims. `sub` holds the user id, read from the
/// configured claim (`CALLBRIDGE_JWT_USER_CLAIM`, `sub` by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// Why a token was refused. The reason goes into the close frame and the
/// metrics; the token itself never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token missing")]
    Missing,
    #[error("token invalid")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("unknown user")]
    UnknownUser,
    #[error("user disabled")]
    Disabled,
    #[error("token revoked")]
    Revoked,
    #[error("token is for another user")]
    WrongUser,
    /// A token that needs the provider's keys before any was fetched.
    #[error("signing keys unavailable")]
    NoKeys,
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Expired => "expired",
            AuthError::UnknownUser => "unknown-user",
            AuthError::Disabled => "disabled",
            AuthError::Revoked => "revoked",
            AuthError::WrongUser => "wrong-user",
            AuthError::NoKeys => "jwks-unavailable",
        }
    }
}

/// Verifies dialer tokens with whatever is configured: the HS256 secret or
/// the PEM public key, and the provider's JWKS (contract §15); a token
/// verified by any of them is accepted.
pub struct Authenticator {
    /// The secret or PEM key, and the one algorithm it verifies.
    key: Option<(DecodingKey, Algorithm)>,
    jwks: Option<Arc<Jwks>>,
    user_claim: String,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authenticator {
    /// A verifier for the configured keys, issuer and audience. The keys
    /// were parsed and checked with the configuration, so this cannot fail.
    pub fn new(settings: &JwtSettings, jwks: Option<Arc<Jwks>>) -> Self {
        Authenticator {
            key: settings.key.as_ref().map(JwtKey::decoding),
            jwks,
            user_claim: settings.user_claim.clone(),
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    /// Check signature, algorithm, expiry (with leeway), issuer, audience
    /// and the user claim. A token whose `kid` the provider's keys do not
    /// know yet waits for one fetch of them (see [`Jwks::keys_for`]).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        let alg = header.alg;
        if let Some((key, key_alg)) = &self.key {
            if *key_alg == alg {
                match self.check(token, key, alg) {
                    Err(AuthError::Invalid) => {}
                    other => return other,
                }
            }
        }
        let Some(jwks) = self.jwks.as_ref().filter(|_| ALGORITHMS.contains(&alg)) else {
            return Err(AuthError::Invalid);
        };
        if !jwks.ready() {
            return Err(AuthError::NoKeys);
        }
        for k in jwks.keys_for(header.kid.as_deref(), alg).await {
            match self.check(token, &k.decoding, alg) {
                Err(AuthError::Invalid) => {}
                other => return other,
            }
        }
        Err(AuthError::Invalid)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &self.audience {
            v.set_audience(&[aud]);
            required.push("aud");
        } else {
            v.validate_aud = false;
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// One key's verdict; the user id from the configured claim (no
    /// fallback to `sub`).
    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation(alg))
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let c = data.claims;
        let user = match c.get(&self.user_claim) {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => return Err(AuthError::Invalid),
        };
        let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Claims {
            sub: user,
            exp: c.get("exp").and_then(Value::as_i64).unwrap_or(0),
            iat: c.get("iat").and_then(Value::as_i64),
            email: text("email"),
            name: text("name"),
            iss: text("iss"),
            aud: c.get("aud").cloned(),
        })
    }
}

/// The `kid` of a token's header, for the log line of a refusal (never
/// the token).
pub fn kid_of(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token.trim()).ok()?.kid
}

/// Mint an HS256 token (the `token` command, tests, the dev quick tour).
pub fn mint(
    secret: &[u8],
    sub: &str,
    email: Option<&str>,
    ttl_secs: i64,
    now_secs: i64,
) -> Result<String, String> {
    mint_for(secret, "sub", sub, email, ttl_secs, now_secs)
}

/// [`mint`], the user id also under `user_claim` when that is not `sub`
/// (`CALLBRIDGE_JWT_USER_CLAIM`).
pub fn mint_for(
    secret: &[u8],
    user_claim: &str,
    sub: &str,
    email: Option<&str>,
    ttl_secs: i64,
    now_secs: i64,
) -> Result<String, String> {
    if user_claim != "sub" {
        let mut claims =
            serde_json::json!({"sub": sub, "exp": now_secs + ttl_secs, "iat": now_secs});
        claims[user_claim] = Value::String(sub.to_string());
        if let Some(e) = email {
            claims["email"] = Value::String(e.to_string());
        }
        return jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| e.to_string());
    }
    let claims = Claims {
        sub: sub.to_string(),
        exp: now_secs + ttl_secs,
        iat: Some(now_secs),
        email: email.map(str::to_string),
        name: None,
        iss: None,
        aud: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_secs;
    use crate::jwt::JwtKey;

    const SECRET: &[u8] = b"a-very-long-test-secret";

    fn with_secret(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        let mut settings = JwtSettings::with_key(JwtKey::Secret(SECRET.to_vec()));
        settings.issuer = issuer.map(Into::into);
        settings.audience = audience.map(Into::into);
        Authenticator::new(&settings, None)
    }

    /// `verify` on a runtime of its own (these tests are plain `#[test]`s).
    fn dec(a: &Authenticator, token: &str) -> Result<Claims, AuthError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(a.verify(token))
    }

    #[test]
    fn hs256_round_trip_and_failures() {
        let a = with_secret(None, None);
        let now = now_secs();
        let t = mint(b"a-very-long-test-secret", "u1", Some("a@x"), 60, now).unwrap();
        let c = dec(&a, &t).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.email.as_deref(), Some("a@x"));

        let wrong = mint(b"another-long-secret!!", "u1", None, 60, now).unwrap();
        assert_eq!(dec(&a, &wrong).unwrap_err(), AuthError::Invalid);
        assert_eq!(dec(&a, "").unwrap_err(), AuthError::Missing);
        assert_eq!(dec(&a, "a.b.c").unwrap_err(), AuthError::Invalid);

        // Within the 5 s leeway: accepted; beyond: expired.
        let late = mint(b"a-very-long-test-secret", "u1", None, -3, now).unwrap();
        assert!(dec(&a, &late).is_ok());
        let expired = mint(b"a-very-long-test-secret", "u1", None, -10, now).unwrap();
        assert_eq!(dec(&a, &expired).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let a = with_secret(Some("dialer-backend"), Some("callbridge"));
        let now = now_secs();
        let key = EncodingKey::from_secret(b"a-very-long-test-secret");
        let mk = |iss: Option<&str>, aud: Option<&str>| {
            let c = Claims {
                sub: "u1".into(),
                exp: now + 60,
                iat: Some(now),
                email: None,
                name: None,
                iss: iss.map(Into::into),
                aud: aud.map(|a| serde_json::Value::String(a.into())),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
        };
        assert!(dec(&a, &mk(Some("dialer-backend"), Some("callbridge"))).is_ok());
        assert_eq!(
            dec(&a, &mk(None, Some("callbridge"))).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            dec(&a, &mk(Some("dialer-backend"), None)).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            dec(&a, &mk(Some("evil"), Some("callbridge"))).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn alg_none_and_hs_with_public_key_confusion_refused() {
        let a = with_secret(None, None);
        // {"alg":"none"} header, valid-looking claims, empty signature.
        let forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(dec(&a, forged).unwrap_err(), AuthError::Invalid);
    }

    fn with_public_pem(pem: &str) -> Authenticator {
        Authenticator::new(
            &JwtSettings::with_key(JwtKey::from_public_pem(pem).unwrap()),
            None,
        )
    }

    fn claims(sub: &str, ttl: i64) -> Claims {
        let now = now_secs();
        Claims {
            sub: sub.into(),
            exp: now + ttl,
            iat: Some(now),
            email: None,
            name: None,
            iss: None,
            aud: None,
        }
    }

    /// Each public-key algorithm: a token signed with the private key is
    /// accepted; one signed with another key of the same kind, or an HS256
    /// token made with the public key as secret (alg confusion), is refused.
    fn check_public_key_alg(alg: Algorithm, make: impl Fn() -> (EncodingKey, String)) {
        let (private, public_pem) = make();
        let (other_private, _) = make();
        let a = with_public_pem(&public_pem);
        let good = jsonwebtoken::encode(&Header::new(alg), &claims("u1", 60), &private).unwrap();
        assert_eq!(dec(&a, &good).unwrap().sub, "u1");
        let forged =
            jsonwebtoken::encode(&Header::new(alg), &claims("u1", 60), &other_private).unwrap();
        assert_eq!(dec(&a, &forged).unwrap_err(), AuthError::Invalid);
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("u1", 60),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(dec(&a, &confused).unwrap_err(), AuthError::Invalid);
        let expired =
            jsonwebtoken::encode(&Header::new(alg), &claims("u1", -60), &private).unwrap();
        assert_eq!(dec(&a, &expired).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn es256_public_key() {
        check_public_key_alg(Algorithm::ES256, || {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            (
                EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
                kp.public_key_pem(),
            )
        });
    }

    #[test]
    fn eddsa_public_key() {
        check_public_key_alg(Algorithm::EdDSA, || {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            (
                EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
                kp.public_key_pem(),
            )
        });
    }

    #[test]
    fn rs256_public_key() {
        check_public_key_alg(Algorithm::RS256, || {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            (
                EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap(),
                kp.public_key_pem(),
            )
        });
    }
}
