//! The delivery loop: every [`POLL`] (or at once when something is
//! queued) it claims due deliveries of each enabled endpoint, at most
//! [`PER_ENDPOINT`] in flight per endpoint, and sends each in a task of its
//! own. A slow, failing or hanging endpoint holds its own slots and nothing
//! else: webhook answers and dialer delivery never wait for it, and its
//! backlog stays in the store, not in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::signature;
use crate::app::App;
use crate::clock::{now_ms, now_secs};
use crate::domain::{after_attempt, Attempt, Delivery, DeliveryStatus, Endpoint};
use crate::httpc::{self, Pool};
use crate::metrics::Metrics;
use crate::store::{bounded, StoreResult};

/// Contract §10: a 2xx answer within 15 s is success.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// A claim is held this long: past the attempt's 15 s and the store write
/// after it. An instance that dies mid-attempt leaves the delivery to
/// another one after this (the receiver may then see it twice: at least
/// once, deduplicated by `webhook-id`).
const LEASE_MS: i64 = 60_000;
/// Attempts in flight per endpoint: enough to keep a healthy endpoint
/// busy with the ~tens of calls a second a dialer team makes, few enough
/// that a hanging one holds four sockets, not hundreds.
const PER_ENDPOINT: usize = 4;
/// How often due deliveries are looked for when nothing wakes the loop
/// (retries come due on their own clock).
const POLL: Duration = Duration::from_millis(500);
/// How often the queue depth gauge is refreshed (a count in the store).
const DEPTH_EVERY: Duration = Duration::from_secs(10);
/// Consecutive failures of an endpoint that log a warning: the first at
/// 5, then every 50.
const WARN_AFTER: u32 = 5;
const WARN_EVERY: u32 = 50;

/// What the dispatcher keeps for its attempts: the HTTP client and the
/// failure counts behind the "keeps failing" warning.
struct Sender {
    /// Keep-alive connections to the endpoints (web PKI roots).
    pool: Pool,
    /// Consecutive failures per endpoint.
    failures: Mutex<HashMap<String, u32>>,
}

impl Sender {
    fn new() -> Self {
        Sender {
            pool: Pool::new(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Count an attempt's result; warn when an endpoint keeps failing.
    fn note(&self, ep: &Endpoint, error: Option<&str>, attempts: u32) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match error {
            None => {
                f.remove(&ep.id);
            }
            Some(e) => {
                let n = f.entry(ep.id.clone()).or_default();
                *n += 1;
                if warn_at(*n) {
                    tracing::warn!(endpoint = %ep.id, consecutive_failures = *n, attempts, error = %e,
                        "outbound endpoint keeps failing");
                }
            }
        }
    }
}

/// Runs until shutdown.
pub async fn run(app: Arc<App>) {
    let sender = Arc::new(Sender::new());
    let mut slots: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let mut depth_at = Instant::now() - DEPTH_EVERY;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = poll.tick() => {}
            _ = app.outbound_wake.notified() => {}
        }
        if let Err(e) = round(&app, &sender, &mut slots).await {
            tracing::warn!(error = %e, "outbound deliveries not claimed; retrying");
        }
        if depth_at.elapsed() >= DEPTH_EVERY {
            depth_at = Instant::now();
            if let Ok(n) = bounded(app.config.store_timeout, app.store.pending_deliveries()).await {
                app.metrics.outbound_queue_depth.set(n as i64);
            }
        }
    }
}

/// One pass over the enabled endpoints.
async fn round(
    app: &Arc<App>,
    sender: &Arc<Sender>,
    slots: &mut HashMap<String, Arc<Semaphore>>,
) -> StoreResult<()> {
    let endpoints = bounded(app.config.store_timeout, app.store.list_endpoints()).await?;
    slots.retain(|id, _| endpoints.iter().any(|e| &e.id == id));
    for ep in endpoints.iter().filter(|e| !e.disabled) {
        let sem = slots
            .entry(ep.id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT)))
            .clone();
        let free = sem.available_permits();
        if free == 0 {
            continue;
        }
        let claim = app.store.claim_deliveries(&ep.id, now_ms(), LEASE_MS, free);
        for d in bounded(app.config.store_timeout, claim).await? {
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                break;
            };
            let sender = sender.clone();
            app.tracker
                .spawn(attempt(app.clone(), sender, ep.clone(), d, permit));
        }
    }
    Ok(())
}

/// One attempt, its result recorded. If recording fails the lease runs out
/// and the delivery is tried again (at least once).
async fn attempt(
    app: Arc<App>,
    sender: Arc<Sender>,
    ep: Endpoint,
    d: Delivery,
    slot: OwnedSemaphorePermit,
) {
    let span =
        tracing::info_span!("outbound", endpoint = %ep.id, id = %d.message_id, event = %d.event);
    let recorded = attempt_and_record(&app, &sender, &ep, &d)
        .instrument(span)
        .await;
    // A slot is free again: look for more now, not at the next poll.
    drop(slot);
    if recorded {
        app.outbound_wake.notify_one();
    }
}

/// Send once and record the result; false when shutdown cut the attempt.
async fn attempt_and_record(app: &Arc<App>, sender: &Sender, ep: &Endpoint, d: &Delivery) -> bool {
    let start = Instant::now();
    let outcome = tokio::select! {
        r = tokio::time::timeout(ATTEMPT_TIMEOUT, send(sender, ep, d)) => r,
        // Shutting down: the lease runs out and another start sends it.
        _ = app.shutdown.cancelled() => return false,
    };
    let (status_code, error) = match outcome {
        Ok(Ok(code)) if (200..300).contains(&code) => (Some(code), None),
        Ok(Ok(code)) => (Some(code), Some(format!("answered HTTP {code}"))),
        Ok(Err(e)) => (None, Some(e)),
        Err(_) => (None, Some("no answer within 15 s".to_string())),
    };
    let attempt = Attempt { status_code, error };
    Metrics::observe_since(&app.metrics.outbound_latency, start);
    let result = after_attempt(d, &attempt, &app.config.outbound_retry_schedule, now_ms());
    let outcome = match result.status {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retry",
        DeliveryStatus::Failed => "failed",
    };
    app.metrics.outbound_attempt(&ep.id, outcome);
    sender.note(ep, attempt.error.as_deref(), result.attempts);
    let finish = app.store.finish_attempt(&d.id, result);
    if let Err(e) = bounded(app.config.store_timeout, finish).await {
        tracing::warn!(error = %e, "attempt not recorded; the delivery will be tried again");
    }
    true
}

async fn send(sender: &Sender, ep: &Endpoint, d: &Delivery) -> Result<u16, String> {
    let key = signature::secret_key(&ep.secret).map_err(|e| format!("endpoint secret: {e}"))?;
    let ts = now_secs();
    let sig = signature::sign(&key, &d.message_id, ts, d.body.as_bytes());
    let headers = [
        ("webhook-id", d.message_id.clone()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ];
    let call = httpc::Call {
        method: warp::http::Method::POST,
        url: &ep.url,
        headers: &headers,
        body: Bytes::copy_from_slice(d.body.as_bytes()),
        answer: httpc::Body::Discard,
    };
    let answer = sender.pool.send(call).await.map_err(|e| e.to_string())?;
    Ok(answer.status)
}

/// Whether this count of consecutive failures deserves a warning.
fn warn_at(failures: u32) -> bool {
    failures == WARN_AFTER || (failures > WARN_AFTER && (failures - WARN_AFTER) % WARN_EVERY == 0)
}
