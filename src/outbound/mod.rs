//! Outbound webhooks to the team's backend (contract §10): every stored
//! call event (once per Telnyx event) and every §8 message, to each
//! enabled endpoint whose `events` match, signed per Standard Webhooks
//! ([`signature`]), retried by `CALLBRIDGE_OUTBOUND_RETRY_SCHEDULE`.
//!
//! Data flow: webhook / message → store → hub → [`enqueue`] (one
//! delivery per matching endpoint, in the store) → [`dispatch`] (claims
//! due deliveries, sends, records the attempt). The queue lives in the
//! store: with MongoDB it survives restarts and is shared by every
//! instance, each delivery claimed by one at a time.

pub mod dispatch;
pub mod http;
pub mod signature;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::app::App;
use crate::clock::now_ms;
use crate::domain::{Delivery, Endpoint, EventBody};
use crate::store::{bounded, StoreResult};

/// Endpoints are read from the store at most this often per instance: an
/// endpoint added, changed or removed through another instance is seen
/// within this time (through this one: at once).
const ENDPOINTS_TTL: Duration = Duration::from_secs(2);

/// This instance's outbound state.
pub struct OutboundState {
    cache: Mutex<Option<(Instant, Arc<Vec<Endpoint>>)>>,
    /// Something was queued: the dispatcher looks now, not at its next poll.
    pub wake: Notify,
    /// Consecutive failures per endpoint, for the warning log.
    failures: Mutex<HashMap<String, u32>>,
    /// Web PKI roots, rustls on aws-lc-rs.
    pub tls: Arc<rustls::ClientConfig>,
    /// Keep-alive connections to the endpoints.
    pub pool: http::Pool,
}

impl Default for OutboundState {
    fn default() -> Self {
        OutboundState {
            cache: Mutex::new(None),
            wake: Notify::new(),
            failures: Mutex::new(HashMap::new()),
            tls: crate::tls::client_config(None).expect("the built-in roots load"),
            pool: http::Pool::default(),
        }
    }
}

impl OutboundState {
    /// Every endpoint (disabled ones included), from a short-lived cache.
    pub async fn endpoints(&self, app: &App) -> StoreResult<Arc<Vec<Endpoint>>> {
        if let Some((at, list)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < ENDPOINTS_TTL {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(bounded(app.config.store_timeout, app.store.list_endpoints()).await?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// After an admin change through this instance.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.wake.notify_one();
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
                if dispatch::warn_at(*n) {
                    tracing::warn!(endpoint = %ep.id, consecutive_failures = *n, attempts, error = %e,
                        "outbound endpoint keeps failing");
                }
            }
        }
    }
}

/// `{"type","timestamp","data"}` (contract §10) around the event's `data`
/// text, which is not serialized again.
pub fn message_body(body: &EventBody) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    format!(
        "{{\"type\":{},\"timestamp\":{},\"data\":{}}}",
        q(&body.event),
        q(&body.ts),
        body.data_json
    )
}

/// Queue `body` for every enabled endpoint that wants it; the number queued.
/// Idempotent: queuing an event again (a Telnyx retry) changes nothing.
pub async fn enqueue(app: &App, body: &EventBody) -> StoreResult<usize> {
    let endpoints = app.outbound.endpoints(app).await?;
    let now = now_ms();
    let mut text: Option<String> = None;
    let deliveries: Vec<Delivery> = endpoints
        .iter()
        .filter(|e| e.wants(&body.event))
        .map(|e| {
            let t = text.get_or_insert_with(|| message_body(body)).clone();
            Delivery::new(&e.id, &body.id, &body.event, t, now)
        })
        .collect();
    let n = deliveries.len();
    if n > 0 {
        bounded(
            app.config.store_timeout,
            app.store.enqueue_deliveries(deliveries),
        )
        .await?;
        app.metrics.outbound_enqueued.inc_by(n as u64);
        app.outbound.wake.notify_one();
    }
    Ok(n)
}

/// Starts the dispatcher, until shutdown.
pub fn spawn(app: &Arc<App>) {
    app.tracker.spawn(dispatch::run(app.clone()));
}
