//! Telnyx's REST API v2, as callbridge uses it: bearer key, JSON in
//! snake_case, one bound on every request, Telnyx's error shape
//! (`{"errors":[{"code","title","detail"}]}`) decoded in one place
//! ([`Client::send`]), and `429` waited out per `Retry-After` when the
//! caller allows it. Requests live beside their types, one file per
//! resource ([`deliveries`]: the webhook delivery log).
//!
//! The key is held by [`Client`] only, sent in the `Authorization` header
//! and never formatted: `Client`'s `Debug` leaves it out, and no error
//! carries it.

pub mod calls;
pub mod deliveries;

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;
use warp::http::Method;

use crate::config::TelnyxApiSettings;
use crate::httpc::{self, HttpError, Pool};

/// One request's bound (contract §14: no answer within 15 s is
/// `telnyx-unavailable`); the delivery log is read with the same bound.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read: a page of 100 deliveries with their attempts is a
/// few hundred KB; 16 MiB leaves room and bounds memory.
const MAX_ANSWER: usize = 16 << 20;
/// A `Retry-After` longer than this is not waited for within one call: the
/// caller's next run (or the client's retry) comes back later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Without `Retry-After`, a 429 waits this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a request to Telnyx did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TelnyxError {
    /// 401 or 403: the key is wrong, revoked or lacks the permission.
    #[error("Telnyx refused the API key (HTTP {status}): {summary}")]
    Unauthorized {
        status: u16,
        errors: Value,
        summary: String,
    },
    /// 429, past what the caller was willing to wait.
    #[error("Telnyx rate limit (HTTP 429); retry after {retry_after:?}")]
    RateLimited {
        retry_after: Duration,
        errors: Value,
    },
    /// Any other 4xx: Telnyx understood and said no (e.g. 422, code 90018
    /// "Call has already ended").
    #[error("Telnyx answered HTTP {status}: {summary}")]
    Rejected {
        status: u16,
        errors: Value,
        summary: String,
    },
    /// 5xx, or no usable answer (connection refused, TLS, cut off).
    #[error("Telnyx unavailable: {0}")]
    Unavailable(String),
    #[error("Telnyx did not answer within {0:?}")]
    Timeout(Duration),
    /// A 2xx whose body is not what the API documents.
    #[error("Telnyx's answer could not be read: {0}")]
    Decode(String),
}

/// What to do about a 429.
#[derive(Debug, Clone, Copy)]
pub enum OnRateLimit {
    /// Return [`TelnyxError::RateLimited`] at once (a dialer's action: it
    /// must not wait behind a minute of backoff).
    Fail,
    /// Wait `Retry-After` (at most [`MAX_RETRY_AFTER`]) and send again, at
    /// most this many times (recovery reading the log).
    Wait(u32),
}

/// The API client: base URL, key, and a keep-alive connection pool.
pub struct Client {
    base: String,
    bearer: String,
    pool: Pool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `None` without an API key (recovery and call actions are off).
    pub fn new(settings: &TelnyxApiSettings) -> Option<Self> {
        let key = settings.key.as_ref()?;
        Some(Client {
            base: settings.url.trim_end_matches('/').to_string(),
            bearer: format!("Bearer {}", key.expose()),
            pool: Pool::new(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send one request (`path_and_query` below the base URL) and decode
    /// the answer's `T`, or Telnyx's error: the one place that does.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        on_429: OnRateLimit,
    ) -> Result<T, TelnyxError> {
        let mut waits = 0;
        loop {
            match self.once(method.clone(), path_and_query, body).await {
                Err(TelnyxError::RateLimited {
                    retry_after,
                    errors,
                }) => match on_429 {
                    OnRateLimit::Wait(max) if waits < max && retry_after <= MAX_RETRY_AFTER => {
                        waits += 1;
                        tracing::info!(?retry_after, waits, "Telnyx rate limit: waiting");
                        tokio::time::sleep(retry_after).await;
                    }
                    _ => {
                        return Err(TelnyxError::RateLimited {
                            retry_after,
                            errors,
                        })
                    }
                },
                other => return other,
            }
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<T, TelnyxError> {
        let url = format!("{}{path_and_query}", self.base);
        let headers = [
            ("authorization", self.bearer.clone()),
            ("accept", "application/json".to_string()),
        ];
        let call = httpc::Call {
            method,
            url: &url,
            headers: &headers,
            body: body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            answer: httpc::Body::Keep(MAX_ANSWER),
        };
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, self.pool.send(call)).await {
            Err(_) => return Err(TelnyxError::Timeout(REQUEST_TIMEOUT)),
            Ok(Err(e)) => return Err(unreachable(&e)),
            Ok(Ok(a)) => a,
        };
        decode(answer)
    }
}

fn unreachable(e: &HttpError) -> TelnyxError {
    TelnyxError::Unavailable(e.to_string())
}

/// A 2xx body as `T`; anything else as Telnyx's error.
fn decode<T: DeserializeOwned>(answer: httpc::Answer) -> Result<T, TelnyxError> {
    let status = answer.status;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&answer.body)
            .map_err(|e| TelnyxError::Decode(e.to_string()));
    }
    let errors = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| v.get("errors").cloned())
        .filter(Value::is_array)
        .unwrap_or_else(|| Value::Array(Vec::new()));
    let summary = summary(&errors);
    match status {
        401 | 403 => Err(TelnyxError::Unauthorized {
            status,
            errors,
            summary,
        }),
        429 => Err(TelnyxError::RateLimited {
            retry_after: retry_after(&answer.headers),
            errors,
        }),
        400..=499 => Err(TelnyxError::Rejected {
            status,
            errors,
            summary,
        }),
        _ => Err(TelnyxError::Unavailable(format!("HTTP {status} {summary}"))),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs; it and a
/// missing header wait the default).
fn retry_after(headers: &warp::http::HeaderMap) -> Duration {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// `code title: detail` of the first error, for logs and messages (never
/// more: details are Telnyx's text, short).
fn summary(errors: &Value) -> String {
    let Some(first) = errors.get(0) else {
        return "no error detail".into();
    };
    let field = |k: &str| match first.get(k) {
        Some(Value::String(s)) => s.chars().take(200).collect(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let text = [field("code"), field("title"), field("detail")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        "no error detail".into()
    } else {
        text
    }
}

/// Percent-encode a query component (RFC 3986 unreserved characters stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, headers: &[(&str, &str)]) -> httpc::Answer {
        let mut h = warp::http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                warp::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        httpc::Answer {
            status,
            headers: h,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn errors_are_decoded_by_status() {
        let body = r#"{"errors":[{"code":"90018","title":"Call has already ended","detail":"This call is no longer active"}]}"#;
        match decode::<Value>(answer(422, body, &[])) {
            Err(TelnyxError::Rejected {
                status,
                errors,
                summary,
            }) => {
                assert_eq!(status, 422);
                assert_eq!(errors[0]["code"], "90018");
                assert!(
                    summary.starts_with("90018 Call has already ended"),
                    "{summary}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode::<Value>(answer(401, "{}", &[])),
            Err(TelnyxError::Unauthorized { status: 401, .. })
        ));
        assert!(matches!(
            decode::<Value>(answer(403, "not json", &[])),
            Err(TelnyxError::Unauthorized { status: 403, .. })
        ));
        match decode::<Value>(answer(429, "{}", &[("retry-after", "7")])) {
            Err(TelnyxError::RateLimited { retry_after, .. }) => {
                assert_eq!(retry_after, Duration::from_secs(7))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode::<Value>(answer(503, "", &[])),
            Err(TelnyxError::Unavailable(_))
        ));
        assert!(matches!(
            decode::<Vec<u8>>(answer(200, "{}", &[])),
            Err(TelnyxError::Decode(_))
        ));
    }

    #[test]
    fn query_components_are_percent_encoded() {
        assert_eq!(encode("filter[status][eq]"), "filter%5Bstatus%5D%5Beq%5D");
        assert_eq!(
            encode("2026-12-07T10:00:00.000Z"),
            "2026-12-07T10%3A00%3A00.000Z"
        );
    }
}
