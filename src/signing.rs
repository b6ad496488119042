//! Signed client messages (contract §9): an HMAC-SHA256 over
//! `"{timestamp}.{nonce}.{signed}"`, keyed per connection by the token it
//! authenticated with, checked in constant time, within a timestamp window,
//! with each nonce accepted once.
//!
//! Verify, then parse: [`SessionKey::verify`] works on the envelope's raw
//! strings and only a verified envelope yields a [`Verified`], whose inner
//! text the session then parses as a client message.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

type HmacSha256 = Hmac<Sha256>;

/// The signing window (contract §9: `windowSecs` 300), also the period of
/// the key: the key changes every 300,000 ms of the envelope's timestamp.
pub const WINDOW_SECS: u64 = 300;
const WINDOW_MS: i64 = WINDOW_SECS as i64 * 1000;
/// A nonce shorter than this (decoded) is refused: the contract asks for
/// 16 or more random bytes, enough that two honest nonces never collide.
pub const MIN_NONCE_BYTES: usize = 16;
/// Longer nonces are refused too: the nonce is the only envelope field the
/// server keeps, and what it keeps is a hash of it, but there is no reason
/// to hash kilobytes.
const MAX_NONCE_CHARS: usize = 256;

/// `CALLBRIDGE_CLIENT_SIGNING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningMode {
    Off,
    Optional,
    Required,
}

/// `connected.data.signing`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningInfo {
    pub alg: &'static str,
    pub required: bool,
    pub window_secs: u64,
}

impl SigningMode {
    /// What `connected` announces; `None` when off (no `signing` key).
    pub fn info(self) -> Option<SigningInfo> {
        match self {
            SigningMode::Off => None,
            SigningMode::Optional | SigningMode::Required => Some(SigningInfo {
                alg: "HMAC-SHA256",
                required: self == SigningMode::Required,
                window_secs: WINDOW_SECS,
            }),
        }
    }
}

/// Why a signed (or unsigned) message was not applied: the `error` code
/// the client gets (contract §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp is outside the signing window")]
    Stale,
    #[error("nonce already used on this connection")]
    Replayed,
    #[error("this server requires signed client messages")]
    SignatureRequired,
}

impl SignError {
    pub fn code(self) -> &'static str {
        match self {
            SignError::BadSignature => "bad-signature",
            SignError::Stale => "stale",
            SignError::Replayed => "replayed",
            SignError::SignatureRequired => "signature-required",
        }
    }
}

/// A refused envelope: why, and (when the signature itself verified, so
/// the text is the client's) the inner text, so that the answer can echo
/// a `send`'s `ref`.
#[derive(Debug)]
pub struct Refusal {
    pub error: SignError,
    pub verified_text: Option<String>,
}

impl From<SignError> for Refusal {
    fn from(error: SignError) -> Self {
        Refusal {
            error,
            verified_text: None,
        }
    }
}

/// A signed envelope as received: `{"signed","timestamp","nonce","signature"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The inner client message's JSON text, exactly as sent.
    pub signed: String,
    /// ms since the epoch.
    pub timestamp: i64,
    pub nonce: String,
    pub signature: String,
}

/// The inner message of an envelope whose signature, timestamp and nonce
/// were checked. Only [`SessionKey::verify`] makes one.
#[derive(Debug)]
pub struct Verified(String);

impl Verified {
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// The per-connection signing state: the key material and the nonces seen.
///
/// The token itself is not kept: the key for a timestamp is
/// `hex(SHA-256("{token}:{userId}:{window}"))`, so the SHA-256 state after
/// `"{token}:{userId}:"` is all that is needed (about 100 bytes), and each
/// message finishes a clone of it with its window number.
pub struct SessionKey {
    prefix: Sha256,
    nonces: NonceMemory,
}

impl SessionKey {
    pub fn new(token: &str, user_id: &str) -> Self {
        SessionKey {
            prefix: prefix_state(token, user_id),
            nonces: NonceMemory::default(),
        }
    }

    /// After an `auth` refresh: the new token's key from now on. The nonces
    /// seen stay remembered (a replay stays a replay).
    pub fn rekey(&mut self, token: &str, user_id: &str) {
        self.prefix = prefix_state(token, user_id);
    }

    /// Signature first (constant time), then the window, then the nonce:
    /// nothing about an envelope with a wrong signature is remembered.
    pub fn verify(&mut self, env: Envelope, now_ms: i64) -> Result<Verified, Refusal> {
        let window = env.timestamp.div_euclid(WINDOW_MS);
        let key = finish_key(self.prefix.clone(), window);
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&env.signature) else {
            return Err(SignError::BadSignature.into());
        };
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
        mac.update(signed_string(env.timestamp, &env.nonce, &env.signed).as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sig)
            .map_err(|_| SignError::BadSignature)?;
        if !nonce_is_well_formed(&env.nonce) {
            return Err(SignError::BadSignature.into());
        }
        // `abs_diff`: any i64 a client sends, with no overflow.
        let check = if now_ms.abs_diff(env.timestamp) > WINDOW_MS as u64 {
            Err(SignError::Stale)
        } else {
            self.nonces.insert(&env.nonce, env.timestamp, now_ms)
        };
        match check {
            Ok(()) => Ok(Verified(env.signed)),
            Err(error) => Err(Refusal {
                error,
                verified_text: Some(env.signed),
            }),
        }
    }

    /// Nonces currently remembered (tests and the memory bound).
    pub fn nonces_held(&self) -> usize {
        self.nonces.seen.len()
    }
}

fn prefix_state(token: &str, user_id: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(b":");
    h.update(user_id.as_bytes());
    h.update(b":");
    h
}

/// Lowercase hex of the SHA-256, whose UTF-8 bytes are the HMAC key.
fn finish_key(mut h: Sha256, window: i64) -> String {
    h.update(window.to_string().as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `"{timestamp}.{nonce}.{signed}"`, the bytes the HMAC covers.
pub fn signed_string(timestamp: i64, nonce: &str, signed: &str) -> String {
    format!("{timestamp}.{nonce}.{signed}")
}

/// The key for `token`, `user_id` and an envelope timestamp (lowercase hex).
pub fn key_for(token: &str, user_id: &str, timestamp: i64) -> String {
    finish_key(
        prefix_state(token, user_id),
        timestamp.div_euclid(WINDOW_MS),
    )
}

/// Sign `signed` as a client does: `callbridge listen --sign` and tests.
pub fn sign(token: &str, user_id: &str, signed: &str, timestamp: i64, nonce: &str) -> String {
    let key = key_for(token, user_id, timestamp);
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(signed_string(timestamp, nonce, signed).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A signed envelope's JSON text for `inner`, with a fresh random nonce.
pub fn envelope_json(token: &str, user_id: &str, inner: &str, timestamp: i64) -> String {
    let mut nonce_bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce_bytes).expect("system randomness is available");
    let nonce = base64::engine::general_purpose::STANDARD.encode(nonce_bytes);
    let signature = sign(token, user_id, inner, timestamp, &nonce);
    serde_json::json!({
        "signed": inner, "timestamp": timestamp, "nonce": nonce, "signature": signature,
    })
    .to_string()
}

fn nonce_is_well_formed(nonce: &str) -> bool {
    if nonce.len() > MAX_NONCE_CHARS {
        return false;
    }
    let engine = &base64::engine::general_purpose::STANDARD;
    let url = &base64::engine::general_purpose::URL_SAFE;
    let decoded = engine.decode(nonce).or_else(|_| url.decode(nonce));
    decoded.is_ok_and(|b| b.len() >= MIN_NONCE_BYTES)
}

/// Nonces this connection used, each until its envelope's timestamp leaves
/// the window (after that the envelope is `stale` anyway, so a replay is
/// refused without remembering it).
///
/// Bounded by the rate limit: an entry lives at most 2 × window after it
/// was accepted (its timestamp may be up to one window ahead of the clock),
/// so at 300 messages a minute at most ~3,300 are held, 32 bytes each
/// (a 16-byte hash of the nonce and its expiry) plus the map's overhead.
#[derive(Default)]
struct NonceMemory {
    seen: HashMap<[u8; 16], i64>,
    /// When the next sweep of expired entries is due.
    next_sweep: i64,
}

/// Sweep at most this often; between sweeps expired entries just wait.
const SWEEP_EVERY_MS: i64 = 10_000;

impl NonceMemory {
    fn insert(&mut self, nonce: &str, timestamp: i64, now: i64) -> Result<(), SignError> {
        if now >= self.next_sweep {
            self.seen.retain(|_, expires| *expires >= now);
            self.next_sweep = now + SWEEP_EVERY_MS;
        }
        let digest = Sha256::digest(nonce.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let expires = timestamp.saturating_add(WINDOW_MS);
        match self.seen.get(&key) {
            Some(old) if *old >= now => Err(SignError::Replayed),
            _ => {
                self.seen.insert(key, expires);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answer, computed independently with Python's `hmac` and
    // `hashlib` (see docs/protocol.md, "Signing: a worked example", which
    // also gives the `openssl dgst` command):
    //   key = sha256(f"{token}:{user}:{ts // 300000}").hexdigest()
    //   b64(hmac.new(key.encode(), f"{ts}.{nonce}.{signed}".encode(), sha256))
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.sig";
    const USER: &str = "u1";
    const TS: i64 = 1_764_547_200_123;
    const NONCE: &str = "AAECAwQFBgcICQoLDA0ODw==";
    const SIGNED: &str = r#"{"type":"send","to":"u2","payload":{"text":"héllo"},"ref":"r1"}"#;
    const KEY: &str = "30bcc611fb8d56b61f5319d191d6df47faaaad66b06a6d33dd3f34229bb90b24";
    const SIGNATURE: &str = "qQl1Bp7C1ARUZccppW4zZmqU7FBMfkMll8wSx4JU+c8=";

    fn envelope(signature: &str, ts: i64, nonce: &str) -> Envelope {
        Envelope {
            signed: SIGNED.into(),
            timestamp: ts,
            nonce: nonce.into(),
            signature: signature.into(),
        }
    }

    #[test]
    fn known_answer() {
        assert_eq!(key_for(TOKEN, USER, TS), KEY);
        assert_eq!(sign(TOKEN, USER, SIGNED, TS, NONCE), SIGNATURE);
        let mut k = SessionKey::new(TOKEN, USER);
        let v = k.verify(envelope(SIGNATURE, TS, NONCE), TS + 1000).unwrap();
        assert_eq!(v.text(), SIGNED);
    }

    #[test]
    fn refusals() {
        let mut k = SessionKey::new(TOKEN, USER);
        // One flipped character of the signature.
        let bad = SIGNATURE.replacen('q', "r", 1);
        assert_eq!(
            k.verify(envelope(&bad, TS, NONCE), TS).unwrap_err().error,
            SignError::BadSignature
        );
        assert_eq!(
            k.verify(envelope("not base64!", TS, NONCE), TS)
                .unwrap_err()
                .error,
            SignError::BadSignature
        );
        // Another user's key (same token) does not verify.
        let mut other = SessionKey::new(TOKEN, "u2");
        assert_eq!(
            other
                .verify(envelope(SIGNATURE, TS, NONCE), TS)
                .unwrap_err()
                .error,
            SignError::BadSignature
        );
        // Exactly the window away is accepted; one ms more is stale.
        let far = TS + WINDOW_MS + 1;
        assert_eq!(
            k.verify(envelope(SIGNATURE, TS, NONCE), far)
                .unwrap_err()
                .error,
            SignError::Stale
        );
        k.verify(envelope(SIGNATURE, TS, NONCE), TS + WINDOW_MS)
            .unwrap();
        assert_eq!(
            k.verify(envelope(SIGNATURE, TS, NONCE), TS + 5)
                .unwrap_err()
                .error,
            SignError::Replayed
        );
        // A nonce of fewer than 16 bytes.
        let short = "AAECAw==";
        let sig = sign(TOKEN, USER, SIGNED, TS, short);
        assert_eq!(
            k.verify(envelope(&sig, TS, short), TS).unwrap_err().error,
            SignError::BadSignature
        );
    }

    #[test]
    fn rekey_uses_the_new_token() {
        let mut k = SessionKey::new(TOKEN, USER);
        k.rekey("new-token", USER);
        assert_eq!(
            k.verify(envelope(SIGNATURE, TS, NONCE), TS)
                .unwrap_err()
                .error,
            SignError::BadSignature
        );
        let nonce = "EBESExQVFhcYGRobHB0eHw==";
        let sig = sign("new-token", USER, SIGNED, TS, nonce);
        k.verify(envelope(&sig, TS, nonce), TS).unwrap();
    }

    #[test]
    fn nonce_memory_forgets_after_the_window() {
        let mut m = NonceMemory::default();
        let t0 = 1_000_000_000_000;
        for i in 0..1000 {
            m.insert(&format!("nonce-{i}"), t0, t0).unwrap();
        }
        assert_eq!(m.seen.len(), 1000);
        // Past the window plus a sweep: all forgotten, the new one held.
        let later = t0 + WINDOW_MS + SWEEP_EVERY_MS + 1;
        m.insert("fresh", later, later).unwrap();
        assert_eq!(m.seen.len(), 1);
    }

    /// At the default rate limit (300 a minute, 5 a second once the
    /// bucket is empty) the memory stays under the documented bound, even
    /// when every timestamp is a whole window ahead of the clock.
    #[test]
    fn nonce_memory_is_bounded_by_the_rate_limit() {
        let mut m = NonceMemory::default();
        let t0 = 1_000_000_000_000;
        let mut max_held = 0;
        let mut i = 0u64;
        // The initial burst of 300, then 5 a second for 20 minutes.
        let mut now = t0;
        for _ in 0..300 {
            i += 1;
            m.insert(&format!("n{i}"), now + WINDOW_MS, now).unwrap();
        }
        while now < t0 + 20 * 60_000 {
            now += 200;
            i += 1;
            m.insert(&format!("n{i}"), now + WINDOW_MS, now).unwrap();
            max_held = max_held.max(m.seen.len());
        }
        // 300 + 5/s × (2 windows + one sweep period).
        let bound = 300 + 5 * (2 * WINDOW_SECS as usize + (SWEEP_EVERY_MS / 1000) as usize);
        assert!(max_held <= bound, "{max_held} > {bound}");
        assert!(
            max_held >= 2 * WINDOW_SECS as usize * 5 - 50,
            "{max_held}: the window is kept"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_envelope() -> impl Strategy<Value = Envelope> {
            (
                any::<String>(),
                any::<i64>(),
                any::<String>(),
                any::<String>(),
            )
                .prop_map(|(signed, timestamp, nonce, signature)| Envelope {
                    signed,
                    timestamp,
                    nonce,
                    signature,
                })
        }

        proptest! {
            /// Arbitrary envelopes never panic and never verify.
            #[test]
            fn arbitrary_envelopes_are_refused(env in any_envelope(), now in any::<i64>()) {
                let mut k = SessionKey::new(TOKEN, USER);
                prop_assert!(k.verify(env, now).is_err());
                prop_assert_eq!(k.nonces_held(), 0);
            }

            /// A correctly signed envelope with any one field changed is
            /// refused; unchanged, it verifies.
            #[test]
            fn any_change_to_a_signed_envelope_is_refused(
                signed in any::<String>(),
                offset in -WINDOW_MS..=WINDOW_MS,
                field in 0..4usize,
                junk in "[A-Za-z0-9+/=]{1,8}",
            ) {
                let now = TS;
                let ts = now + offset;
                let sig = sign(TOKEN, USER, &signed, ts, NONCE);
                let mut env = Envelope { signed, timestamp: ts, nonce: NONCE.into(), signature: sig };
                let good = env.clone();
                match field {
                    0 => env.signed.push_str(&junk),
                    1 => env.timestamp += 1,
                    2 => env.nonce = format!("{junk}{}", env.nonce),
                    _ => env.signature = format!("{junk}{}", env.signature),
                }
                let mut k = SessionKey::new(TOKEN, USER);
                prop_assert!(k.verify(env, now).is_err());
                prop_assert!(k.verify(good, now).is_ok());
            }
        }
    }
}
