//! The dialer-token verification key, parsed once while the configuration is
//! read. `config` produces a [`JwtSettings`]; `auth` verifies tokens with it.
//! Neither the key's PEM nor the secret is parsed anywhere else.

use jsonwebtoken::{Algorithm, DecodingKey};

/// How dialer JWTs are verified.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 shared secret (raw bytes of the configured string); `token` and
    /// the dev banner also sign with it.
    Secret(Vec<u8>),
    /// A parsed PEM public key and the algorithm its type implies (RS256,
    /// ES256 or EdDSA). Only that algorithm is accepted, so a token signed
    /// HS256 with the public key as secret (algorithm confusion) is refused.
    Public { key: DecodingKey, alg: Algorithm },
}

impl JwtKey {
    /// Parse a PEM public key, trying each supported type.
    pub fn from_public_pem(pem: &str) -> Result<Self, String> {
        let b = pem.as_bytes();
        let (key, alg) = if let Ok(k) = DecodingKey::from_ed_pem(b) {
            (k, Algorithm::EdDSA)
        } else if let Ok(k) = DecodingKey::from_ec_pem(b) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = DecodingKey::from_rsa_pem(b) {
            (k, Algorithm::RS256)
        } else {
            return Err("not a PEM RSA, EC (P-256) or Ed25519 public key".into());
        };
        Ok(JwtKey::Public { key, alg })
    }

    /// The key and the one algorithm tokens must be signed with.
    pub fn decoding(&self) -> (DecodingKey, Algorithm) {
        match self {
            JwtKey::Secret(s) => (DecodingKey::from_secret(s), Algorithm::HS256),
            JwtKey::Public { key, alg } => (key.clone(), *alg),
        }
    }
}

impl std::fmt::Debug for JwtKey {
    // Never print the secret, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("JwtKey::Secret(<redacted>)"),
            JwtKey::Public { alg, .. } => write!(f, "JwtKey::Public({alg:?})"),
        }
    }
}

/// Everything a dialer token is checked against (`CALLBRIDGE_JWT_*`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The secret or the PEM public key; `None` when only the JWKS is.
    pub key: Option<JwtKey>,
    /// `CALLBRIDGE_JWT_JWKS_URL` (contract §15): the identity provider's
    /// keys, beside `key`.
    pub jwks_url: Option<String>,
    /// `CALLBRIDGE_JWT_USER_CLAIM`: the top-level claim holding the user id.
    pub user_claim: String,
    /// `CALLBRIDGE_JWT_AUTO_PROVISION=agent`: an unknown user named by a
    /// valid token is created as an agent.
    pub auto_provision: bool,
    /// When set, a token must carry this `iss`.
    pub issuer: Option<String>,
    /// When set, a token must carry this `aud`.
    pub audience: Option<String>,
}

impl JwtSettings {
    /// Settings with one key and the defaults (tests, tools).
    pub fn with_key(key: JwtKey) -> Self {
        JwtSettings {
            key: Some(key),
            jwks_url: None,
            user_claim: "sub".into(),
            auto_provision: false,
            issuer: None,
            audience: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_public_key_type_gets_its_algorithm() {
        let cases = [
            (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
            (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
            (&rcgen::PKCS_RSA_SHA256, Algorithm::RS256),
        ];
        for (kind, want) in cases {
            let kp = rcgen::KeyPair::generate_for(kind).unwrap();
            let key = JwtKey::from_public_pem(&kp.public_key_pem()).unwrap();
            assert_eq!(key.decoding().1, want);
            assert_eq!(format!("{key:?}"), format!("JwtKey::Public({want:?})"));
        }
    }

    #[test]
    fn bad_pem_is_refused_and_secret_never_printed() {
        let err =
            JwtKey::from_public_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .unwrap_err();
        assert_eq!(err, "not a PEM RSA, EC (P-256) or Ed25519 public key");
        assert!(JwtKey::from_public_pem("").is_err());
        let secret = JwtKey::Secret(b"hunter2-hunter2-hunter2".to_vec());
        assert_eq!(format!("{secret:?}"), "JwtKey::Secret(<redacted>)");
        assert_eq!(secret.decoding().1, Algorithm::HS256);
    }
}
