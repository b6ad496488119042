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
//! page by page (a backlog larger than [`BATCH`] window by window), ingest
//! them in `occurred_at` order one event at a time and paced (a run never
//! holds more than one ingest in flight and uses at most a quarter of the
//! time, so webhooks and sockets do not wait behind it), and only when
//! every page is stored advance the checkpoint to the latest `finished_at`
//! read.

use std::sync::Arc;

use serde_json::value::RawValue;
use tracing::Instrument;

use crate::app::App;
use crate::clock::{now_ms, parse_rfc3339_ms, rfc3339_ms};
use crate::config::RecoverySettings;
use crate::domain::{window_start, RecoveryState, RunFailure, RunReport};
use crate::store::bounded;
use crate::telnyx::api::deliveries::{envelope, DeliveriesPage, Delivery, FailedSince};
use crate::telnyx::api::{Client, TelnyxError};

/// Deliveries per page: the most `GET /webhook_deliveries` is asked for
/// in one request by contract §13.
const PAGE_SIZE: u32 = 100;
/// Call events a run holds at once, as JSON text (~1–1.5 KB each): a
/// backlog up to this size is read with contract §13's one query and
/// ingested in exact `occurred_at` order. A larger one (a day of a busy
/// call centre) is read in windows of `finished_at`, oldest first, each
/// holding about half this many, so memory stays bounded whatever the
/// backlog and the order stays exact (see [`SKEW_MS`]).
const BATCH: usize = 5_000;
/// How much later than it occurred an event can finish failing: Telnyx
/// retries for at most a minute, plus its attempts' timeouts; 10 minutes
/// is generous. Between windows, an event that occurred within this of the
/// window's end waits for the next window, where an earlier-occurring one
/// may still be.
const SKEW_MS: i64 = 10 * 60_000;
/// The smallest window a burst of failures is split down to.
const MIN_WINDOW_MS: i64 = 1_000;
/// The largest window a quiet stretch of the log grows to.
const MAX_WINDOW_MS: i64 = 6 * 3_600_000;
/// Recovery may use this share of the time it runs: after each slice of
/// ingest work it pauses three times as long, so live webhooks and
/// sockets keep their latency while a backlog is caught up (a 10,000
/// event backlog then takes a few seconds on the embedded store instead of
/// one, at a quarter of a core).
const PAUSE_FACTOR: u32 = 3;
/// A slice of ingest work between pauses (timer granularity is 1 ms).
const SLICE: std::time::Duration = std::time::Duration::from_millis(5);
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
    /// Call events waiting to be ingested: `occurred_at` (ms) and the
    /// webhook's JSON text.
    held: Vec<(i64, Box<RawValue>)>,
}

/// Every failed delivery since `from_ms`, ingested in `occurred_at` order.
async fn read_and_ingest(
    app: &Arc<App>,
    client: &Client,
    from_ms: i64,
) -> Result<Pass, RunFailure> {
    let mut pass = Pass::default();
    let from = rfc3339_ms(from_ms);
    let first = page(client, &from, None, 1).await?;
    let total = first.meta.total_results.unwrap_or(0);
    if total as usize > BATCH {
        drop(first);
        windows(app, client, from_ms, total, &mut pass).await?;
    } else {
        read_pages(app, client, &from, None, first, &mut pass).await?;
    }
    pass.ingest_before(app, i64::MAX).await?;
    Ok(pass)
}

async fn page(
    client: &Client,
    gte: &str,
    lte: Option<&str>,
    page_number: u32,
) -> Result<DeliveriesPage, RunFailure> {
    let q = FailedSince {
        finished_gte: gte,
        finished_lte: lte,
        page_number,
        page_size: PAGE_SIZE,
    };
    client.failed_deliveries(&q).await.map_err(telnyx_failure)
}

/// `first` and the pages after it, held in `pass`.
async fn read_pages(
    app: &Arc<App>,
    client: &Client,
    gte: &str,
    lte: Option<&str>,
    first: DeliveriesPage,
    pass: &mut Pass,
) -> Result<(), RunFailure> {
    let mut page_number = 1;
    let mut current = first;
    loop {
        let n = current.data.len();
        let last = current.meta.total_pages.is_some_and(|t| page_number >= t);
        pass.take(current.data, &app.metrics);
        if n < PAGE_SIZE as usize || last {
            return Ok(());
        }
        page_number += 1;
        if page_number > MAX_PAGES {
            return Err(RunFailure::Unavailable(format!(
                "the delivery log has more than {MAX_PAGES} pages; not read to the end"
            )));
        }
        renew_lease(app).await?;
        current = page(client, gte, lte, page_number).await?;
    }
}

/// A backlog larger than [`BATCH`]: windows of `finished_at`, oldest
/// first, sized to hold about half a batch, split when a burst overfills
/// one; each window's events that occurred before its end less
/// [`SKEW_MS`] are ingested, the rest wait for the next window.
async fn windows(
    app: &Arc<App>,
    client: &Client,
    from_ms: i64,
    total: u64,
    pass: &mut Pass,
) -> Result<(), RunFailure> {
    let now = now_ms();
    let mut a = from_ms;
    let span = (now - from_ms).max(MIN_WINDOW_MS);
    let mut width =
        (span * (BATCH as i64 / 2) / total.max(1) as i64).clamp(MIN_WINDOW_MS, MAX_WINDOW_MS);
    while a < now {
        let b = (a + width).min(now);
        let (gte, lte) = (rfc3339_ms(a), rfc3339_ms(b - 1));
        renew_lease(app).await?;
        let first = page(client, &gte, Some(&lte), 1).await?;
        let count = first.meta.total_results.unwrap_or(0) as usize;
        if count > BATCH && width > MIN_WINDOW_MS {
            width = (width / 2).max(MIN_WINDOW_MS);
            continue;
        }
        read_pages(app, client, &gte, Some(&lte), first, pass).await?;
        pass.ingest_before(app, b - SKEW_MS).await?;
        if count < BATCH / 4 {
            width = (width * 2).min(MAX_WINDOW_MS);
        }
        a = b;
    }
    Ok(())
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
    /// Hold a page's call events; count the rest as skipped.
    fn take(&mut self, deliveries: Vec<Delivery>, metrics: &crate::metrics::Metrics) {
        for d in deliveries {
            self.report.fetched += 1;
            if let Some(ms) = d.finished_at.as_deref().and_then(parse_rfc3339_ms) {
                self.latest_finished = Some(self.latest_finished.map_or(ms, |l| l.max(ms)));
            }
            let head = d.head().filter(|h| h.is_call_event());
            match (head, d.webhook) {
                (Some(h), Some(raw)) => {
                    let occurred = h.occurred_at.as_deref().and_then(parse_rfc3339_ms);
                    self.held.push((occurred.unwrap_or(i64::MAX), raw));
                }
                _ => {
                    self.report.skipped += 1;
                    metrics.recovered("skipped", 1);
                }
            }
        }
    }

    /// Ingest, in `occurred_at` order and one at a time, the held events
    /// that occurred before `limit`; pace the work (see [`PAUSE_FACTOR`]).
    async fn ingest_before(&mut self, app: &Arc<App>, limit: i64) -> Result<(), RunFailure> {
        self.held.sort_by_key(|(occurred, _)| *occurred);
        let n = self.held.partition_point(|(occurred, _)| *occurred < limit);
        let ready: Vec<_> = self.held.drain(..n).collect();
        let mut slice = std::time::Instant::now();
        for (_, raw) in ready {
            self.ingest_one(app, &raw).await?;
            // On the embedded store an ingest never waits, so without this
            // the task would hold its worker thread for the whole slice and
            // live webhooks queued behind it would wait up to 5 ms.
            tokio::task::yield_now().await;
            let worked = slice.elapsed();
            if worked >= SLICE {
                tokio::time::sleep(worked * PAUSE_FACTOR).await;
                slice = std::time::Instant::now();
            }
        }
        Ok(())
    }

    async fn ingest_one(&mut self, app: &Arc<App>, raw: &RawValue) -> Result<(), RunFailure> {
        let Some(env) = envelope(raw) else {
            self.report.skipped += 1;
            app.metrics.recovered("skipped", 1);
            return Ok(());
        };
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
        Ok(())
    }
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
