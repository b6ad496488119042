//! `POST /webhooks/telnyx`: verify → normalize → route → store → hub, and
//! only then answer 200 (persist first, then fan out).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::app::App;
use crate::clock::now_ms;
use crate::domain::{EventBody, Ingest, IngestOutcome};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::normalize::{normalize, Normalized};
use crate::routing::{self, mask_phone, Rule};
use crate::store::StoreError;
use crate::telnyx::Envelope;

/// Largest webhook body accepted (contract §3: 413 above 1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// The ingest task may outlive the answer (Telnyx hung up, or the store was
/// slow and Telnyx got 503), so that a retry finds the event stored; but
/// not forever: after 4 × the store timeout (20 s by default: past a
/// replica set's election, ~10-12 s) it gives up, so a hung store cannot
/// pile up tasks across Telnyx's retries.
const INGEST_TASK_FACTOR: u32 = 4;

#[derive(Debug, Serialize)]
pub struct Ack {
    pub ok: bool,
    pub id: String,
    pub duplicate: bool,
}

pub async fn handle(
    app: &Arc<App>,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: Bytes,
    received: Instant,
) -> Result<Ack, ApiError> {
    let now = now_ms();
    let verified = app
        .verifier
        .verify(signature, timestamp, body, now.div_euclid(1000))?;
    let envelope = verified.parse()?;
    app.metrics.events_received.inc();
    accept(app, normalize(&envelope, now), received).await
}

/// An event Telnyx's delivery log says was never delivered (contract §13):
/// the same path as a verified webhook from normalization on, its `data`
/// marked `"recovered": true`. The API's TLS and key are its proof.
pub async fn recovered(app: &Arc<App>, envelope: &Envelope) -> Result<Ack, ApiError> {
    let mut ev = normalize(envelope, now_ms());
    ev.data.insert("recovered".into(), Value::Bool(true));
    accept(app, ev, Instant::now()).await
}

/// Route, store and fan out one normalized event, once per event id in
/// this process, bounded by the store timeout.
async fn accept(app: &Arc<App>, ev: Normalized, received: Instant) -> Result<Ack, ApiError> {
    let span = tracing::info_span!(
        "webhook",
        id = %ev.id,
        event = %ev.event,
        call = ev.call.call_control_id.as_deref().unwrap_or(""),
        from = %ev.call.from.as_deref().map(mask_phone).unwrap_or_default(),
        to = %ev.call.to.as_deref().map(mask_phone).unwrap_or_default(),
    );
    let limit = app.config.store_timeout;
    let claim = match InFlight::claim(app, &ev.id) {
        Claim::First(c) => c,
        Claim::Follower(rx) => {
            span.in_scope(|| tracing::info!("another delivery of this event is being stored"));
            let ack = follow(rx, ev.id.clone(), limit).await;
            if ack.is_ok() {
                app.metrics.events_duplicate.inc();
            }
            return ack;
        }
    };
    // Routing and storing run in their own task: if Telnyx hangs up on us
    // mid-request, the event is still stored and delivered (it will be
    // answered `duplicate` on the retry) instead of being cut off between
    // the store and the hub.
    let task_limit = limit * INGEST_TASK_FACTOR;
    // The timeout is spawned as it is, not inside an `async` block: a block
    // would hold both the moved-in future and the `Timeout` around it,
    // doubling what the task copies around.
    let task = app.tracker.spawn(
        tokio::time::timeout(task_limit, process(app.clone(), ev, received, claim))
            .instrument(span.clone()),
    );
    let result = match tokio::time::timeout(limit, task).await {
        Ok(Ok(Ok(r))) => r,
        Ok(Ok(Err(_))) => Err(ApiError::Store(StoreError::Timeout(task_limit))),
        Ok(Err(join)) => Err(ApiError::Store(StoreError::Unavailable(format!(
            "webhook task failed: {join}"
        )))),
        Err(_) => Err(ApiError::Store(StoreError::Timeout(limit))),
    };
    if let Err(e) = &result {
        span.in_scope(|| tracing::warn!(error = %e, "webhook not stored; Telnyx will retry"));
    }
    result
}

/// This process is ingesting a Telnyx event id; its outcome (stored or
/// not) is published when the ingest task ends, and the id is released.
///
/// A second delivery of an event whose first one is still being stored
/// (Telnyx retried because the store was slow) waits for that outcome
/// instead of queuing a second ingest behind the first on the same users'
/// counters: under overload such retries would pile up in front of new
/// events, each only to find the receipt.
struct InFlight {
    app: Arc<App>,
    id: String,
    done: watch::Sender<Option<bool>>,
}

enum Claim {
    /// This delivery ingests the event.
    First(InFlight),
    /// Another delivery of it is being ingested: wait for its outcome.
    Follower(watch::Receiver<Option<bool>>),
}

impl InFlight {
    fn claim(app: &Arc<App>, id: &str) -> Claim {
        let mut map = app.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(id) {
            return Claim::Follower(rx.clone());
        }
        let (done, rx) = watch::channel(None);
        map.insert(id.to_string(), rx);
        Claim::First(InFlight {
            app: app.clone(),
            id: id.to_string(),
            done,
        })
    }

    fn finish(&self, stored: bool) {
        self.done.send_replace(Some(stored));
    }
}

impl Drop for InFlight {
    /// Ended without `finish` (the task timed out): followers see the
    /// channel close and answer 503, and Telnyx retries.
    fn drop(&mut self) {
        let mut map = self.app.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.id);
    }
}

/// A delivery of an event being ingested by another: `duplicate` once that
/// one stored it, 503 if it did not or does not finish within `limit`.
async fn follow(
    mut rx: watch::Receiver<Option<bool>>,
    id: String,
    limit: std::time::Duration,
) -> Result<Ack, ApiError> {
    let outcome = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
    match outcome {
        Ok(Ok(v)) if *v == Some(true) => Ok(Ack {
            ok: true,
            id,
            duplicate: true,
        }),
        Ok(_) => Err(ApiError::Store(StoreError::Unavailable(
            "the first delivery of this event was not stored".into(),
        ))),
        Err(_) => Err(ApiError::Store(StoreError::Timeout(limit))),
    }
}

async fn process(
    app: Arc<App>,
    ev: Normalized,
    received: Instant,
    claim: InFlight,
) -> Result<Ack, ApiError> {
    let result = ingest(app, ev, received).await;
    claim.finish(result.is_ok());
    result
}

async fn ingest(app: Arc<App>, ev: Normalized, received: Instant) -> Result<Ack, ApiError> {
    let store_start = Instant::now();
    let route = routing::route(app.store.as_ref(), &ev, app.config.unrouted).await?;
    let Normalized {
        id,
        event,
        ts,
        occurred_ms,
        call,
        transition,
        mut data,
        ..
    } = ev;
    data.insert(
        "userIds".into(),
        Value::Array(route.targets.iter().cloned().map(Value::String).collect()),
    );
    // `data` is serialized here, once: every user's frame, the stored
    // copy and the other instances' feed reuse the text.
    let body = Arc::new(EventBody::new(id.clone(), event, ts, &Value::Object(data)));
    let ingest = Ingest {
        body: body.clone(),
        occurred_ms,
        targets: route.targets.clone(),
        call,
        transition,
    };
    let outcome = app.store.ingest(ingest).await?;
    Metrics::observe_since(&app.metrics.store_latency, store_start);
    match outcome {
        IngestOutcome::Duplicate => {
            app.metrics.events_duplicate.inc();
            // An earlier delivery stored it, but may not have reached the
            // hub: its task can end after the commit and before the answer
            // (the task limit, a crash of the instance that stored it while
            // its sessions moved here). The users' sessions read the store
            // for anything they miss; what they have is not sent again.
            let sessions = app.hub.resync_users(&route.targets);
            tracing::info!(sessions, "duplicate delivery; already stored");
            // Queued with the first delivery, unless that one failed to
            // queue it (then it answered 503 and this is Telnyx's retry):
            // queuing is idempotent, so ask again.
            if !route.targets.is_empty() {
                crate::outbound::enqueue(&app, &body).await?;
            }
            Ok(Ack {
                ok: true,
                id,
                duplicate: true,
            })
        }
        IngestOutcome::Stored(events) => {
            app.metrics.routed(route.rule.as_str());
            if route.rule == Rule::Unrouted {
                app.metrics.events_unrouted.inc();
            }
            let queued = app.hub.deliver(&events, Some(received));
            // Stored and with the dialers: now the backend's copy. If it
            // cannot be queued, 503 makes Telnyx retry, and the retry
            // (a duplicate) queues it.
            if !events.is_empty() {
                crate::outbound::enqueue(&app, &body).await?;
            }
            tracing::info!(
                rule = route.rule.as_str(),
                users = route.targets.len(),
                sessions = queued,
                "stored and fanned out"
            );
            Ok(Ack {
                ok: true,
                id,
                duplicate: false,
            })
        }
    }
}
