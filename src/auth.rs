//! Dialer tokens: JWTs signed with the configured HS256 secret or verified
//! with a PEM public key (RS256, ES256 or EdDSA, chosen by the key's type).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::jwt::JwtSettings;

/// Clock skew tolerated on `exp` (contract §4: at most 5 seconds).
pub const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
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
        }
    }
}

pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// A verifier for the configured key, issuer and audience. The key was
    /// parsed and checked with the configuration, so this cannot fail.
    pub fn new(settings: &JwtSettings) -> Self {
        let (key, alg) = settings.key.decoding();
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &settings.audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        Authenticator { key, validation }
    }

    /// Check signature, algorithm, expiry (with leeway), issuer and audience.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => Err(AuthError::Invalid),
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(AuthError::Expired),
                _ => Err(AuthError::Invalid),
            },
        }
    }
}

/// Mint an HS256 token (the `token` command, tests, the dev quick tour).
pub fn mint(
    secret: &[u8],
    sub: &str,
    email: Option<&str>,
    ttl_secs: i64,
    now_secs: i64,
) -> Result<String, String> {
    let claims = Claims {
        sub: sub.to_string(),
        exp: now_secs + ttl_secs,
        iat: Some(now_secs),
        email: email.map(str::to_string),
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
        Authenticator::new(&JwtSettings {
            key: JwtKey::Secret(SECRET.to_vec()),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
        })
    }

    #[test]
    fn hs256_round_trip_and_failures() {
        let a = with_secret(None, None);
        let now = now_secs();
        let t = mint(b"a-very-long-test-secret", "u1", Some("a@x"), 60, now).unwrap();
        let c = a.decode(&t).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.email.as_deref(), Some("a@x"));

        let wrong = mint(b"another-long-secret!!", "u1", None, 60, now).unwrap();
        assert_eq!(a.decode(&wrong).unwrap_err(), AuthError::Invalid);
        assert_eq!(a.decode("").unwrap_err(), AuthError::Missing);
        assert_eq!(a.decode("a.b.c").unwrap_err(), AuthError::Invalid);

        // Within the 5 s leeway: accepted; beyond: expired.
        let late = mint(b"a-very-long-test-secret", "u1", None, -3, now).unwrap();
        assert!(a.decode(&late).is_ok());
        let expired = mint(b"a-very-long-test-secret", "u1", None, -10, now).unwrap();
        assert_eq!(a.decode(&expired).unwrap_err(), AuthError::Expired);
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
                iss: iss.map(Into::into),
                aud: aud.map(|a| serde_json::Value::String(a.into())),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &key).unwrap()
        };
        assert!(a
            .decode(&mk(Some("dialer-backend"), Some("callbridge")))
            .is_ok());
        assert_eq!(
            a.decode(&mk(None, Some("callbridge"))).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            a.decode(&mk(Some("dialer-backend"), None)).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            a.decode(&mk(Some("evil"), Some("callbridge"))).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn alg_none_and_hs_with_public_key_confusion_refused() {
        let a = with_secret(None, None);
        // {"alg":"none"} header, valid-looking claims, empty signature.
        let forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert_eq!(a.decode(forged).unwrap_err(), AuthError::Invalid);
    }

    fn with_public_pem(pem: &str) -> Authenticator {
        Authenticator::new(&JwtSettings {
            key: JwtKey::from_public_pem(pem).unwrap(),
            issuer: None,
            audience: None,
        })
    }

    fn claims(sub: &str, ttl: i64) -> Claims {
        let now = now_secs();
        Claims {
            sub: sub.into(),
            exp: now + ttl,
            iat: Some(now),
            email: None,
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
        assert_eq!(a.decode(&good).unwrap().sub, "u1");
        let forged =
            jsonwebtoken::encode(&Header::new(alg), &claims("u1", 60), &other_private).unwrap();
        assert_eq!(a.decode(&forged).unwrap_err(), AuthError::Invalid);
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("u1", 60),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(a.decode(&confused).unwrap_err(), AuthError::Invalid);
        let expired =
            jsonwebtoken::encode(&Header::new(alg), &claims("u1", -60), &private).unwrap();
        assert_eq!(a.decode(&expired).unwrap_err(), AuthError::Expired);
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
