//! Recovery of missed webhooks from Telnyx's delivery log (contract §13).
//!
//! Telnyx retries a webhook for about a minute, then marks it `failed` in
//! its delivery log. One task per instance reads that log — at startup once
//! the store is ready, every `CALLBRIDGE_RECOVERY_INTERVAL`, and when the
//! admin API asks — and sends each failed call event through the same
//! normalize → route → store → deliver path as a verified webhook
//! ([`crate::webhook::recovered`]): an event stored before is a duplicate
//! and is not delivered again.
//!
//! A run: take the lease in the store (one instance at a time), read the
//! failed deliveries that finished since the checkpoint (less 10 minutes)
//! page by page, hold at most [`BATCH`] of them, ingest each batch in
//! `occurred_at` order one event at a time (a run never holds more than
//! one ingest in flight, so webhooks and sockets do not wait behind it),
//! and only when every page is stored advance the checkpoint to the latest
//! `finished_at` read.

use std::sync::Arc;

use serde_json::Value;
use tracing::Instrument;

use crate::app::App;
use crate::clock::{now_ms, parse_rfc3339_ms, rfc3339_ms};
use crate::config::RecoverySettings;
use crate::domain::{window_start, RecoveryState, RunFailure, RunReport};
use crate::store::bounded;
use crate::telnyx::api::deliveries::{Delivery, FailedSince};
use crate::telnyx::api::{Client, TelnyxError};
use crate::telnyx::Envelope;

/// Deliveries per page: the most `GET /webhook_deliveries` is asked for
/// in one request by contract §13.
const PAGE_SIZE: u32 = 100;
/// Call events held at once before they are sorted and ingested: ~1–2 KB
/// each (the webhook's payload; attempts are not kept), so a day's
/// backlog of a busy call centre is read with a few MB, not all of it. The
/// `occurred_at` order holds within a batch; across batches, deliveries
/// come as Telnyx lists them (state rules keep a call's end state right
/// whatever the order: a hangup is final).
const BATCH: usize = 5_000;
/// A run's lease, renewed with every page: an instance that dies
/// mid-run leaves recovery to another after this.
const LEASE_MS: i64 = 120_000;
/// A log of more pages than this (10 million deliveries) is not read to
/// the end in one run: something is wrong with the filter or the answers.
const MAX_PAGES: u32 = 100_000;

/// Starts the recovery task, when recovery is on.
pub fn spawn(app: &Arc<App>) {
    let (Some(settings), Some(client)) = (app.config.recovery, app.telnyx.clone()) else {
        return;
    };
    let Some(mut requests) = app.recovery.take_requests() else {
        return;
    };
    let app2 = app.clone();
    app.tracker.spawn(async move {
        // The first tick is at once: a run at startup.
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = app2.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    // A refused key stays refused until the configuration
                    // changes: no scheduled run until then.
                    if app2.recovery.state() != RecoveryState::Unauthorized {
                        let _ = run_and_record(&app2, &client, settings, None).await;
                    }
                }
                Some(req) = requests.recv() => {
                    let outcome = run_and_record(&app2, &client, settings, req.since).await;
                    let _ = req.reply.send(outcome);
                }
            }
        }
    });
}

/// One run, its outcome on the board, in the metrics and the log.
async fn run_and_record(
    app: &Arc<App>,
    client: &Client,
    settings: RecoverySettings,
    since: Option<i64>,
) -> Result<RunReport, RunFailure> {
    let span = tracing::info_span!("recovery", since = since.map(rfc3339_ms));
    let was = app.recovery.state();
    app.recovery.started(now_ms());
    let outcome = tokio::select! {
        r = run(app, client, settings, since).instrument(span.clone()) => r,
        _ = app.shutdown.cancelled() => Err(RunFailure::ShuttingDown),
    };
    app.recovery.finished(&outcome, now_ms());
    span.in_scope(|| record(app, &outcome, was));
    outcome
}

fn record(app: &App, outcome: &Result<RunReport, RunFailure>, was: RecoveryState) {
    let m = &app.metrics;
    match outcome {
        Ok(r) => {
            m.recovery_run("ok");
            m.recovery_last_success.set(crate::clock::now_secs());
            tracing::info!(
                fetched = r.fetched,
                ingested = r.ingested,
                duplicates = r.duplicates,
                skipped = r.skipped,
                checkpoint = r.checkpoint.as_deref().unwrap_or(""),
                "recovery run done"
            );
        }
        Err(RunFailure::Busy) => m.recovery_run("busy"),
        Err(e @ RunFailure::Unauthorized(_)) => {
            m.recovery_run("unauthorized");
            // Logged once: every later run would say the same.
            if was != RecoveryState::Unauthorized {
                tracing::error!(error = %e, "recovery stopped until the configuration changes");
            }
        }
        Err(e) => {
            m.recovery_run("failed");
            tracing::warn!(error = %e, "recovery run failed; retrying at the next interval");
        }
    }
}

async fn run(
    app: &Arc<App>,
    client: &Client,
    settings: RecoverySettings,
    since: Option<i64>,
) -> Result<RunReport, RunFailure> {
    let (store, limit) = (app.store.as_ref(), app.config.store_timeout);
    let owner = app.instance_id.as_str();
    let now = now_ms();
    let claimed = bounded(limit, store.claim_recovery(owner, now, now + LEASE_MS)).await;
    if !claimed.map_err(store_failure)? {
        return Err(RunFailure::Busy);
    }
    let checkpoint = bounded(limit, store.recovery_checkpoint()).await;
    let passed = match checkpoint.map_err(store_failure) {
        Ok(cp) => {
            app.recovery.checkpoint(cp);
            let lookback = settings.lookback.as_millis() as i64;
            let from = window_start(since, cp, now, lookback);
            read_and_ingest(app, client, from).await
        }
        Err(e) => Err(e),
    };
    // Released whatever happened; moved on only after a complete run.
    let latest = passed.as_ref().ok().and_then(|p| p.latest_finished);
    let released = bounded(limit, store.finish_recovery(owner, latest)).await;
    let mut report = passed?.report;
    released.map_err(store_failure)?;
    let cp = bounded(limit, store.recovery_checkpoint()).await;
    report.checkpoint = cp.map_err(store_failure)?.map(rfc3339_ms);
    Ok(report)
}

/// What a run has read so far.
#[derive(Default)]
struct Pass {
    report: RunReport,
    latest_finished: Option<i64>,
    /// Call events waiting to be ingested, with their `occurred_at` (ms).
    batch: Vec<(i64, Envelope)>,
}

/// Every page of failed deliveries since `from_ms`, ingested batch by batch.
async fn read_and_ingest(
    app: &Arc<App>,
    client: &Client,
    from_ms: i64,
) -> Result<Pass, RunFailure> {
    let from = rfc3339_ms(from_ms);
    let mut pass = Pass::default();
    for page_number in 1..=MAX_PAGES {
        if page_number > 1 {
            renew_lease(app).await?;
        }
        let q = FailedSince {
            finished_gte: &from,
            page_number,
            page_size: PAGE_SIZE,
        };
        let page = client.failed_deliveries(&q).await.map_err(telnyx_failure)?;
        let n = page.data.len();
        pass.take(page.data, &app.metrics);
        if pass.batch.len() >= BATCH {
            pass.ingest(app).await?;
        }
        if n < PAGE_SIZE as usize || page.meta.total_pages.is_some_and(|t| page_number >= t) {
            pass.ingest(app).await?;
            return Ok(pass);
        }
    }
    Err(RunFailure::Unavailable(format!(
        "the delivery log has more than {MAX_PAGES} pages; not read to the end"
    )))
}

async fn renew_lease(app: &App) -> Result<(), RunFailure> {
    let now = now_ms();
    let renew = app
        .store
        .claim_recovery(&app.instance_id, now, now + LEASE_MS);
    match bounded(app.config.store_timeout, renew).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(RunFailure::Busy),
        Err(e) => Err(store_failure(e)),
    }
}

impl Pass {
    /// Keep a page's call events; count the rest as skipped.
    fn take(&mut self, deliveries: Vec<Delivery>, metrics: &crate::metrics::Metrics) {
        for d in deliveries {
            self.report.fetched += 1;
            if let Some(ms) = d.finished_at.as_deref().and_then(parse_rfc3339_ms) {
                self.latest_finished = Some(self.latest_finished.map_or(ms, |l| l.max(ms)));
            }
            match d.envelope().filter(is_call_event) {
                Some(env) => {
                    let occurred = env.data.occurred_at.as_deref().and_then(parse_rfc3339_ms);
                    self.batch.push((occurred.unwrap_or(i64::MAX), env));
                }
                None => {
                    self.report.skipped += 1;
                    metrics.recovered("skipped", 1);
                }
            }
        }
    }

    /// The held events in `occurred_at` order, one at a time.
    async fn ingest(&mut self, app: &Arc<App>) -> Result<(), RunFailure> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.sort_by_key(|(occurred, _)| *occurred);
        for (_, env) in batch {
            match crate::webhook::recovered(app, &env).await {
                Ok(ack) if ack.duplicate => {
                    self.report.duplicates += 1;
                    app.metrics.recovered("duplicate", 1);
                }
                Ok(_) => {
                    self.report.ingested += 1;
                    app.metrics.recovered("ingested", 1);
                }
                Err(e) => return Err(RunFailure::Store(e.to_string())),
            }
        }
        Ok(())
    }
}

/// A call event is one about a call leg: it names its `call_control_id`
/// (what routing and call state follow). The log holds every webhook of the
/// account — messaging, numbers, faxes — which callbridge does not handle.
fn is_call_event(env: &Envelope) -> bool {
    env.data
        .payload
        .get("call_control_id")
        .is_some_and(Value::is_string)
}

fn store_failure(e: crate::store::StoreError) -> RunFailure {
    RunFailure::Store(e.to_string())
}

fn telnyx_failure(e: TelnyxError) -> RunFailure {
    match e {
        TelnyxError::Unauthorized { .. } => RunFailure::Unauthorized(e.to_string()),
        other => RunFailure::Unavailable(other.to_string()),
    }
}
