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
pub mod signature;

use std::sync::Arc;

use crate::app::App;
use crate::clock::now_ms;
use crate::domain::{Delivery, EventBody};
use crate::store::{bounded, StoreResult};

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
///
/// The endpoints are read from the store here, for every event, not from a
/// cache: an endpoint created, changed or deleted through another instance
/// applies to every event stored after that instance answered (contract
/// §12). It costs one read per event (on MongoDB one `find`, next to the
/// ingest transaction's ten commands).
pub async fn enqueue(app: &App, body: &EventBody) -> StoreResult<usize> {
    let endpoints = bounded(app.config.store_timeout, app.store.list_endpoints()).await?;
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
        app.outbound_wake.notify_one();
    }
    Ok(n)
}

/// Starts the dispatcher, until shutdown.
pub fn spawn(app: &Arc<App>) {
    app.tracker.spawn(dispatch::run(app.clone()));
}
