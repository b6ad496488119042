//! The Standard Webhooks signature (<https://www.standardwebhooks.com>, the
//! scheme Svix uses; contract §10): `webhook-signature: v1,<base64>` where
//! the base64 is the HMAC-SHA256 of `"{webhook-id}.{webhook-timestamp}.{body}"`
//! keyed with the base64-decoded part of the endpoint secret after `whsec_`.
//!
//! [`sign`] is what the dispatcher puts on each attempt; [`verify`] is what a
//! receiver does (and what `callbridge verify-webhook` runs), behaving like
//! the official `standardwebhooks` libraries: several space-separated
//! signatures may be given and any `v1` match is enough, other versions are
//! ignored, the comparison is constant-time, and the timestamp must be
//! within a tolerance of now (the libraries use 5 minutes).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What every endpoint secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret.
pub const SECRET_BYTES: usize = 32;
/// The tolerance the `standardwebhooks` libraries use: 5 minutes.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// The signature version this module makes and checks.
const VERSION: &str = "v1";

/// The request headers of the scheme (lower case, as HTTP/2 sends them).
pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Standard base64 that also takes unpadded input, as the Python library
/// does for secrets (it appends `==` before decoding).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a request did not verify. The messages name no secret or signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the secret is not `whsec_` followed by non-empty base64")]
    BadSecret,
    #[error("webhook-timestamp is not a number of Unix seconds")]
    BadTimestamp,
    #[error(
        "webhook-timestamp is {age_secs} s in the past, more than the {tolerance_secs} s allowed"
    )]
    TooOld { age_secs: i64, tolerance_secs: i64 },
    #[error("webhook-timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s allowed")]
    TooNew {
        ahead_secs: i64,
        tolerance_secs: i64,
    },
    #[error("no matching v1 signature in webhook-signature")]
    NoMatchingSignature,
}

/// A new endpoint secret: `whsec_` + standard base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    // The system's random source failing is not something to carry on from.
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random source failed");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The HMAC key of a secret: the base64 after `whsec_` decoded. A secret
/// without the prefix is taken as the base64 itself, as the libraries do.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match LENIENT.decode(b64.trim()) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(SignatureError::BadSecret),
    }
}

/// The MAC over `"{msg_id}.{timestamp}.{body}"`, not yet finalized.
fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256>`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, msg_id, timestamp, body).finalize().into_bytes();
    format!("{VERSION},{}", STANDARD.encode(tag))
}

/// Check a received request: `timestamp` and `signature_header` are the
/// raw `webhook-timestamp` and `webhook-signature` values, `body` the body
/// byte for byte. The timestamp is checked first (as the libraries do),
/// then each `v1,<base64>` entry of the header in constant time.
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let key = secret_key(secret)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let age_secs = now_secs.saturating_sub(ts);
    if age_secs > tolerance_secs {
        return Err(SignatureError::TooOld {
            age_secs,
            tolerance_secs,
        });
    }
    let ahead_secs = ts.saturating_sub(now_secs);
    if ahead_secs > tolerance_secs {
        return Err(SignatureError::TooNew {
            ahead_secs,
            tolerance_secs,
        });
    }
    let expected = mac(&key, msg_id, ts, body);
    let matched = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, b64)| STANDARD.decode(b64).ok())
        // `verify_slice` compares in constant time.
        .any(|given| expected.clone().verify_slice(&given).is_ok());
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers from an independent implementation, the Python
    /// `standardwebhooks` package (1.1.0), computed with:
    ///
    /// ```text
    /// python3 -m venv /tmp/swh && /tmp/swh/bin/pip install standardwebhooks
    /// /tmp/swh/bin/python
    /// >>> from datetime import datetime, timezone
    /// >>> from standardwebhooks.webhooks import Webhook
    /// >>> Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign(
    /// ...     "msg_p5jXN8AQM9LWM0D4loKWxJek",
    /// ...     datetime.fromtimestamp(1614265330, tz=timezone.utc),
    /// ...     '{"test": 2432232314}')
    /// 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
    /// >>> Webhook("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").sign(
    /// ...     "evt_01JH5Q7Z9K3M",
    /// ...     datetime.fromtimestamp(1735787045, tz=timezone.utc),
    /// ...     CALLBRIDGE_BODY)   # the string below, UTF-8
    /// 'v1,SfqKJpaOpyB2MwdQt6KmXoMLn2Tu+7b+/l088hd+NQQ='
    /// ```
    ///
    /// The first is also the example of the Svix documentation; the Node
    /// `standardwebhooks` package (1.1.1) gives the same two values.
    struct Vector {
        secret: &'static str,
        msg_id: &'static str,
        timestamp: i64,
        body: &'static str,
        signature: &'static str,
    }

    const PYTHON_VECTORS: [Vector; 2] = [
        Vector {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            msg_id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1_614_265_330,
            body: r#"{"test": 2432232314}"#,
            signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
        Vector {
            // 32 bytes 0x00..0x1f: the shape of a callbridge secret.
            secret: "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            msg_id: "evt_01JH5Q7Z9K3M",
            timestamp: 1_735_787_045,
            body: r#"{"type":"call-hangup","timestamp":"2025-01-02T03:04:05.678Z","data":{"callId":"v3:abc","durationSecs":42,"cause":"normal_clearing","from":"+15551230001","note":"café ☎"}}"#,
            signature: "v1,SfqKJpaOpyB2MwdQt6KmXoMLn2Tu+7b+/l088hd+NQQ=",
        },
    ];

    fn check(v: &Vector, header: &str, now: i64) -> Result<(), SignatureError> {
        let ts = v.timestamp.to_string();
        verify(
            v.secret,
            v.msg_id,
            &ts,
            header,
            v.body.as_bytes(),
            now,
            DEFAULT_TOLERANCE_SECS,
        )
    }

    #[test]
    fn sign_matches_the_python_library() {
        for v in &PYTHON_VECTORS {
            let key = secret_key(v.secret).unwrap();
            assert_eq!(
                sign(&key, v.msg_id, v.timestamp, v.body.as_bytes()),
                v.signature
            );
        }
    }

    #[test]
    fn verify_accepts_the_python_vectors() {
        for v in &PYTHON_VECTORS {
            assert_eq!(check(v, v.signature, v.timestamp), Ok(()));
            assert_eq!(check(v, v.signature, v.timestamp + 300), Ok(()));
            assert_eq!(check(v, v.signature, v.timestamp - 300), Ok(()));
        }
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with(SECRET_PREFIX), "{a}");
        assert_ne!(a, b);
        assert_eq!(secret_key(&a).unwrap().len(), SECRET_BYTES);
        // 32 bytes are 44 base64 characters with one `=`.
        assert_eq!(a.len(), SECRET_PREFIX.len() + 44);
    }

    #[test]
    fn secret_forms() {
        let v = &PYTHON_VECTORS[1];
        let with = secret_key(v.secret).unwrap();
        let without = secret_key(v.secret.strip_prefix(SECRET_PREFIX).unwrap()).unwrap();
        let unpadded = secret_key(v.secret.trim_end_matches('=')).unwrap();
        assert_eq!(with, (0u8..32).collect::<Vec<_>>());
        assert_eq!(without, with);
        assert_eq!(unpadded, with);
        assert_eq!(secret_key("whsec_"), Err(SignatureError::BadSecret));
        assert_eq!(secret_key(""), Err(SignatureError::BadSecret));
        assert_eq!(
            secret_key("whsec_not base64!"),
            Err(SignatureError::BadSecret)
        );
        let ts = v.timestamp.to_string();
        let err = verify(
            "whsec_!!",
            v.msg_id,
            &ts,
            v.signature,
            b"",
            v.timestamp,
            300,
        );
        assert_eq!(err, Err(SignatureError::BadSecret));
    }

    #[test]
    fn several_signatures_any_v1_match_is_enough() {
        let v = &PYTHON_VECTORS[0];
        let other = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let (_, b64) = v.signature.split_once(',').unwrap();
        let headers = [
            format!("{other} {}", v.signature),
            format!("{} {other}", v.signature),
            format!("v1a,xyz v2,{b64} garbage {}", v.signature),
        ];
        for h in &headers {
            assert_eq!(check(v, h, v.timestamp), Ok(()), "{h}");
        }
        // The right bytes under another version do not count.
        let wrong = [
            format!("v2,{b64}"),
            other.to_string(),
            String::new(),
            "v1,".into(),
            "v1,%%%".into(),
            b64.to_string(),
        ];
        for h in &wrong {
            let err = check(v, h, v.timestamp);
            assert_eq!(err, Err(SignatureError::NoMatchingSignature), "{h}");
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_or_unparseable_are_refused() {
        let v = &PYTHON_VECTORS[0];
        assert_eq!(
            check(v, v.signature, v.timestamp + 301),
            Err(SignatureError::TooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(v, v.signature, v.timestamp - 301),
            Err(SignatureError::TooNew {
                ahead_secs: 301,
                tolerance_secs: 300
            })
        );
        for bad in ["", "abc", "1614265330.5", "1e9", "99999999999999999999"] {
            let err = verify(v.secret, v.msg_id, bad, v.signature, b"", 0, 300);
            assert_eq!(err, Err(SignatureError::BadTimestamp), "{bad:?}");
        }
        // Extreme values saturate instead of overflowing.
        let far = verify(
            v.secret,
            v.msg_id,
            &i64::MIN.to_string(),
            v.signature,
            b"",
            i64::MAX,
            300,
        );
        assert!(matches!(far, Err(SignatureError::TooOld { .. })));
    }

    #[test]
    fn a_wrong_secret_does_not_verify() {
        let v = &PYTHON_VECTORS[0];
        let ts = v.timestamp.to_string();
        let other = new_secret();
        let err = verify(
            &other,
            v.msg_id,
            &ts,
            v.signature,
            v.body.as_bytes(),
            v.timestamp,
            300,
        );
        assert_eq!(err, Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn errors_do_not_carry_the_secret_or_signature() {
        let v = &PYTHON_VECTORS[0];
        let ts = v.timestamp.to_string();
        let err = verify(v.secret, v.msg_id, &ts, "v1,AAAA", b"", v.timestamp, 300).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("MfKQ9r8"), "{text}");
        assert!(!text.contains("AAAA"), "{text}");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Sign the original, then change exactly one of body, id or
        /// timestamp (all within the tolerance): it never verifies.
        fn tampered(
            key: &[u8],
            id: &str,
            ts: i64,
            body: &[u8],
            which: u8,
            delta: i64,
            flip: (usize, u8),
        ) -> Result<(), SignatureError> {
            let secret = format!("{SECRET_PREFIX}{}", STANDARD.encode(key));
            let header = sign(key, id, ts, body);
            let (mut t_id, mut t_ts, mut t_body) = (id.to_string(), ts, body.to_vec());
            match which {
                0 => {
                    if t_body.is_empty() {
                        t_body.push(flip.1 | 1);
                    } else {
                        let i = flip.0 % t_body.len();
                        t_body[i] ^= flip.1 | 1;
                    }
                }
                1 => t_id.push(char::from(b'a' + flip.1 % 26)),
                _ => t_ts += delta,
            }
            verify(&secret, &t_id, &t_ts.to_string(), &header, &t_body, ts, 300)
        }

        proptest! {
            #[test]
            fn the_untouched_request_verifies(
                key in proptest::collection::vec(any::<u8>(), 1..64),
                id in "[a-zA-Z0-9_]{1,40}",
                ts in 0i64..4_000_000_000,
                body in proptest::collection::vec(any::<u8>(), 0..512),
                skew in -300i64..=300,
            ) {
                let secret = format!("{SECRET_PREFIX}{}", STANDARD.encode(&key));
                let header = sign(&key, &id, ts, &body);
                prop_assert_eq!(
                    verify(&secret, &id, &ts.to_string(), &header, &body, ts + skew, 300),
                    Ok(())
                );
            }

            #[test]
            fn a_tampered_body_id_or_timestamp_never_verifies(
                key in proptest::collection::vec(any::<u8>(), 1..64),
                id in "[a-zA-Z0-9_]{1,40}",
                ts in 0i64..4_000_000_000,
                body in proptest::collection::vec(any::<u8>(), 0..512),
                which in 0u8..3,
                delta in prop_oneof![-300i64..=-1, 1i64..=300],
                flip in (any::<usize>(), any::<u8>()),
            ) {
                prop_assert_eq!(
                    tampered(&key, &id, ts, &body, which, delta, flip),
                    Err(SignatureError::NoMatchingSignature)
                );
            }
        }
    }
}
