//! Dialer tokens from the team's identity provider (contract §15): the
//! provider's keys, read from its JWKS document (`CALLBRIDGE_JWT_JWKS_URL`)
//! and kept current by one task.
//!
//! Fetch schedule: at startup; then per the answer's `Cache-Control:
//! max-age`, bounded to 5 min … 24 h (1 h without one); at once when a
//! token names a `kid` not known, but at most once every 30 s whatever the
//! traffic — a flood of tokens with made-up key ids costs the provider one
//! request per 30 s, and every session waiting on a key waits on that one
//! request. A failed fetch keeps the keys known before. Until a fetch ever
//! succeeded, `/ready` answers 503 and tokens that need these keys are
//! refused.
//!
//! A leaf module: it reads JWKs with `jsonwebtoken::jwk` and fetches with
//! the daemon's HTTP client; `auth` asks it for keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use warp::http::Method;

use crate::httpc::{self, Pool};
use crate::metrics::OutcomeLabel;

/// Contract §15's bounds on `max-age`, and the default without one.
const MIN_MAX_AGE: Duration = Duration::from_secs(300);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// An unknown `kid` fetches at most this often.
pub const UNKNOWN_KID_EVERY: Duration = Duration::from_secs(30);
/// One fetch's bound; a session waits for it at most this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS document is a few KB; more than this is not one.
const MAX_DOCUMENT: usize = 1 << 20;
/// Retries while no key was ever fetched: 1 s doubling to 30 s, so `/ready`
/// turns 200 soon after the provider answers.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_FIRST_RETRY: Duration = Duration::from_secs(30);
/// After a failure once keys are known: try again in a minute.
const RETRY_KNOWN: Duration = Duration::from_secs(60);

/// The algorithms a provider's key may verify (contract §15).
pub const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The kind of a key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// One usable key of the document.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, honoured when present.
    pub alg: Option<Algorithm>,
    family: KeyKind,
    pub decoding: DecodingKey,
}

impl Key {
    fn verifies(&self, alg: Algorithm) -> bool {
        self.family.verifies(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Why a fetch failed (logged, counted; the keys known stay).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{0}")]
    Http(#[from] httpc::HttpError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("not a JWKS document: {0}")]
    Document(String),
}

/// The provider's keys and the state of their fetching.
pub struct Jwks {
    url: String,
    pool: Pool,
    keys: RwLock<Arc<Vec<Key>>>,
    ever: AtomicBool,
    /// Bumped after every fetch attempt: whoever asked for one waits on it.
    attempts: watch::Sender<u64>,
    /// Wakes the refresh task for an unknown `kid`.
    wake: Notify,
    /// When an unknown `kid` last asked, and the attempt count then.
    asked: Mutex<Option<(Instant, u64)>>,
    fetches: FetchCounter,
    count: Gauge,
}

/// `callbridge_jwks_fetches_total{outcome}`.
type FetchCounter = MetricFamily<OutcomeLabel, Counter>;

impl Jwks {
    pub fn new(url: &str, fetches: FetchCounter, count: Gauge) -> Arc<Self> {
        Arc::new(Jwks {
            url: url.to_string(),
            pool: Pool::new(),
            keys: RwLock::new(Arc::new(Vec::new())),
            ever: AtomicBool::new(false),
            attempts: watch::Sender::new(0),
            wake: Notify::new(),
            asked: Mutex::new(None),
            fetches,
            count,
        })
    }

    /// Whether a fetch ever succeeded (`/ready`).
    pub fn ready(&self) -> bool {
        self.ever.load(Ordering::Acquire)
    }

    pub fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keys that may verify a token of `alg` with `kid`: by `kid` when
    /// it has one (an unknown `kid` waits for one fetch, at most one every
    /// 30 s), else every key of that `alg`.
    pub async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
        let found = select(&self.keys(), kid, alg);
        if !found.is_empty() || kid.is_none() {
            return found;
        }
        let Some(seen) = self.ask() else {
            return found;
        };
        let mut rx = self.attempts.subscribe();
        let _ = tokio::time::timeout(FETCH_TIMEOUT, rx.wait_for(|n| *n > seen)).await;
        select(&self.keys(), kid, alg)
    }

    /// An unknown `kid`: the attempt count to wait past, when a fetch was
    /// asked now or is under way for a request of the last 30 s; `None`
    /// when one finished within 30 s (the token is refused).
    fn ask(&self) -> Option<u64> {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let now_count = *self.attempts.borrow();
        match *asked {
            Some((at, count)) if at.elapsed() < UNKNOWN_KID_EVERY => {
                (now_count == count).then_some(count)
            }
            _ => {
                *asked = Some((Instant::now(), now_count));
                self.wake.notify_one();
                Some(now_count)
            }
        }
    }

    /// Fetch the document once; on success the keys are replaced.
    /// Returns how long the answer may be kept.
    pub async fn fetch(&self) -> Result<Duration, JwksError> {
        let outcome = tokio::time::timeout(FETCH_TIMEOUT, self.get()).await;
        let outcome = outcome.unwrap_or(Err(JwksError::Timeout(FETCH_TIMEOUT)));
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.fetches
            .get_or_create(&OutcomeLabel { outcome: label })
            .inc();
        let result = outcome.map(|(keys, max_age)| {
            self.count.set(keys.len() as i64);
            *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            self.ever.store(true, Ordering::Release);
            max_age
        });
        self.attempts.send_modify(|n| *n += 1);
        result
    }

    async fn get(&self) -> Result<(Vec<Key>, Duration), JwksError> {
        let headers = [("accept", "application/json".to_string())];
        let call = httpc::Call {
            method: Method::GET,
            url: &self.url,
            headers: &headers,
            body: bytes::Bytes::new(),
            answer: httpc::Body::Keep(MAX_DOCUMENT),
        };
        let answer = self.pool.send(call).await?;
        if answer.status != 200 {
            return Err(JwksError::Status(answer.status));
        }
        let keys = parse(&answer.body)?;
        Ok((keys, max_age(&answer.headers)))
    }

    /// The refresh task: fetch at startup, then on schedule or when an
    /// unknown `kid` asks, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut first_retry = FIRST_RETRY;
        loop {
            let next = match self.fetch().await {
                Ok(max_age) => {
                    tracing::info!(keys = self.keys().len(), ?max_age, "JWKS fetched");
                    max_age
                }
                Err(e) if !self.ready() => {
                    tracing::warn!(error = %e, retry = ?first_retry, "JWKS not fetched; dialer tokens of the provider are refused until it is");
                    let wait = first_retry;
                    first_retry = (first_retry * 2).min(MAX_FIRST_RETRY);
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS fetch failed; the keys known stay in use");
                    RETRY_KNOWN
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(next) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// The keys of `set` for a token's `kid` and `alg`.
fn select(set: &[Key], kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
    set.iter()
        .filter(|k| k.verifies(alg))
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .cloned()
        .collect()
}

/// `Cache-Control: max-age=N`, bounded; the default without one.
fn max_age(headers: &warp::http::HeaderMap) -> Duration {
    headers
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(DEFAULT_MAX_AGE, |s| {
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

/// The usable signing keys of a JWKS document. A key that is not for
/// signatures (`use` other than `sig`), of a kind or `alg` callbridge does
/// not accept, or malformed, is left out; the others still count.
pub fn parse(body: &[u8]) -> Result<Vec<Key>, JwksError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| JwksError::Document(e.to_string()))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError::Document("no `keys` array".into()))?;
    Ok(list
        .iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v.clone()).ok())
        .filter_map(|jwk| key(&jwk))
        .collect())
}

fn key(jwk: &Jwk) -> Option<Key> {
    let c = &jwk.common;
    if c.public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // Symmetric keys have no place in a public document.
        _ => return None,
    };
    let alg = match &c.key_algorithm {
        None => None,
        Some(a) => Some(algorithm(*a).filter(|a| family.verifies(*a))?),
    };
    Some(Key {
        kid: c.key_id.clone(),
        alg,
        family,
        decoding: DecodingKey::from_jwk(jwk).ok()?,
    })
}

fn algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    let alg = match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}

/// `kid` and algorithm of each key, for `check-config`.
pub fn describe(keys: &[Key]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let alg = k
                .alg
                .map_or_else(|| format!("any {:?}", k.family), |a| format!("{a:?}"));
            format!("{} ({alg})", k.kid.as_deref().unwrap_or("<no kid>"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_bounded() {
        let h = |v: &str| {
            let mut m = warp::http::HeaderMap::new();
            m.insert("cache-control", v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(h("public, max-age=7200"), Duration::from_secs(7200));
        assert_eq!(h("max-age=10"), MIN_MAX_AGE);
        assert_eq!(h("max-age=999999"), MAX_MAX_AGE);
        assert_eq!(h("no-cache"), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&warp::http::HeaderMap::new()), DEFAULT_MAX_AGE);
    }

    #[test]
    fn unusable_keys_are_left_out() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"sym"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","use":"sig"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"wrong-alg","alg":"RS256"},
            {"kty":"RSA","kid":"broken"}
        ]}"#;
        let keys = parse(doc).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["ed"]);
        assert!(keys[0].verifies(Algorithm::EdDSA));
        assert!(!keys[0].verifies(Algorithm::ES256));
        assert_eq!(select(&keys, Some("ed"), Algorithm::EdDSA).len(), 1);
        assert_eq!(select(&keys, None, Algorithm::EdDSA).len(), 1);
        assert!(select(&keys, Some("other"), Algorithm::EdDSA).is_empty());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
