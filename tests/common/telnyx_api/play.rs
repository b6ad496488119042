//! The stand-in playing Telnyx's webhook sender: each envelope is signed and
//! posted to callbridge over TLS, retried on a non-2xx answer, a refused
//! connection or no answer, and written to the delivery log as `delivered`
//! or, once the retries are spent, `failed` — where recovery finds it.

use std::sync::Arc;
use std::time::Duration;

use callbridge::client;
use callbridge::telnyx::Signer;
use serde_json::{json, Value};

use super::log::{delivery, AttemptRecord, AttemptResponse, DeliveryStatus};
use super::Shared;

/// Where and how the stand-in posts webhooks: callbridge's
/// `https://…/webhooks/telnyx`, the CA that trusts its certificate, and the
/// key callbridge verifies signatures with.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub signer: Arc<Signer>,
}

impl WebhookTarget {
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>, signer: Signer) -> WebhookTarget {
        WebhookTarget {
            url: url.to_string(),
            tls,
            signer: Arc::new(signer),
        }
    }

    /// A harness daemon's webhook endpoint, signed with the key of its data
    /// dir (the one it was started with).
    pub fn of(server: &super::super::Server) -> WebhookTarget {
        let (_, signer) = super::super::dev_files(&server.dir);
        Self::new(
            &format!("{}/webhooks/telnyx", server.base),
            server.tls.clone(),
            signer,
        )
    }
}

/// When a webhook's attempts start (from its first attempt) and how long
/// each may take to be answered. Telnyx retries for up to a minute; tests
/// use the same shape over a few seconds.
#[derive(Clone, Debug)]
pub struct Retries {
    pub at: Vec<Duration>,
    pub attempt_timeout: Duration,
}

impl Retries {
    /// Attempts at 0, 0.5 s, 1 s and 2 s, each given 2 s to answer.
    pub fn quick() -> Retries {
        Self::at_ms(&[0, 500, 1000, 2000])
    }

    /// A single attempt.
    pub fn once() -> Retries {
        Self::at_ms(&[0])
    }

    /// Attempts at these offsets (milliseconds), each given 2 s to answer.
    pub fn at_ms(ms: &[u64]) -> Retries {
        assert!(!ms.is_empty(), "at least one attempt");
        Retries {
            at: ms.iter().map(|&m| Duration::from_millis(m)).collect(),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

impl Default for Retries {
    fn default() -> Retries {
        Self::quick()
    }
}

/// Deliver `envelopes` one after the other (the next starts when the
/// previous is delivered or failed), logging each; returns the delivery
/// objects as the API lists them.
pub(super) async fn play_all(
    shared: &Arc<Shared>,
    target: &WebhookTarget,
    envelopes: &[Value],
    retries: &Retries,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        shared.learn_call(&envelope["data"]);
        let (status, attempts) = deliver(target, envelope, retries).await;
        let d = delivery(status, envelope["data"].clone(), attempts);
        shared.log_delivery(d.clone());
        out.push(d);
    }
    out
}

/// All the attempts at one envelope, newest first.
async fn deliver(
    target: &WebhookTarget,
    envelope: &Value,
    retries: &Retries,
) -> (DeliveryStatus, Vec<Value>) {
    let start = tokio::time::Instant::now();
    let mut attempts = Vec::new();
    for (i, at) in retries.at.iter().enumerate() {
        // Telnyx's schedule, not a poll: the next attempt is due then.
        tokio::time::sleep_until(start + *at).await;
        let mut body = envelope.clone();
        body["meta"] = json!({"attempt": i + 1, "delivered_to": target.url});
        let record = attempt(target, &body, retries.attempt_timeout).await;
        let ok = record.delivered();
        attempts.insert(0, record.to_json());
        if ok {
            return (DeliveryStatus::Delivered, attempts);
        }
    }
    (DeliveryStatus::Failed, attempts)
}

/// One signed POST, as Telnyx signs: Ed25519 over `{timestamp}|{body}`.
async fn attempt(target: &WebhookTarget, body: &Value, timeout: Duration) -> AttemptRecord {
    let raw = body.to_string();
    let ts = callbridge::clock::now_secs();
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "telnyx-signature-ed25519".to_string(),
            target.signer.sign(ts, raw.as_bytes()),
        ),
        ("telnyx-timestamp".to_string(), ts.to_string()),
    ];
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let started_ms = callbridge::clock::now_ms();
    let sent = client::request_once(&target.url, "POST", &refs, raw, target.tls.clone());
    let response = match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(r)) => Some(AttemptResponse {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&r.body).into_owned(),
        }),
        _ => None,
    };
    AttemptRecord {
        started_ms,
        finished_ms: callbridge::clock::now_ms(),
        url: target.url.clone(),
        request_headers: headers,
        response,
    }
}
