//! `GET /api/console/stream` (contract §12): the live data of the
//! operator's console (`GET /console`) as Server-Sent Events, behind the
//! admin bearer like the rest of `/api`.
//!
//! Every message is `data: {json}`: its keys are some of `users`, `calls`,
//! `rates`, `endpoints`, `recovery`, `errors`. The first has all six; then,
//! every [`TICK`], a message with only the keys whose JSON text changed
//! since the last one sent, and nothing when none did. A `: keep-alive`
//! comment goes out every [`KEEP_ALIVE`] so proxies keep the connection.
//!
//! `users`, `calls` and `endpoints` are the store's (shared by every
//! instance on one MongoDB), read every [`STORE_POLL`] / [`ENDPOINTS_POLL`]
//! with the store timeout; a failed read keeps the last value (logged once
//! until reads work again). `rates` and `errors` are this instance's
//! ([`crate::rates`], [`crate::errlog`]).
//!
//! One task per stream (on the daemon's tracker) builds the messages and
//! hands them to the response body through a channel of one: a client that
//! does not read holds its task at that message, and the diff waits with
//! it. The task ends when the client goes away (the body is dropped) or on
//! shutdown (the body then ends, and the connection closes gracefully). At
//! most `app::MAX_CONSOLE_STREAMS` are open at once.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use warp::http::header::{self, HeaderValue};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::Result;
use crate::app::{App, MAX_CONSOLE_STREAMS};
use crate::domain::{CallRecord, UserSummary};
use crate::error::ApiError;
use crate::http::{reply, with_app};
use crate::store::bounded;

/// At most one message per this (contract: 500 ms).
const TICK: Duration = Duration::from_millis(500);
/// Users and calls are read from the store this often per stream: live
/// enough for a person watching, and 16 streams make ~20 reads a second.
const STORE_POLL: Duration = Duration::from_millis(1500);
/// Endpoint stats count every delivery the store keeps for the endpoint
/// (an aggregation per endpoint on MongoDB): read less often.
const ENDPOINTS_POLL: Duration = Duration::from_secs(5);
/// Proxies close a silent response after 30–60 s; a comment every 15 s
/// (contract) keeps it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Users shown (the first by id): a table beyond that is not read at 3 a.m.
const MAX_USERS: usize = 1000;
/// Live legs shown, newest first.
const MAX_CALLS: usize = 500;
/// Endpoints shown, each with its stats (one store read each).
const MAX_ENDPOINTS: usize = 100;

/// The keys of a message, in the order they are written.
const KEYS: [&str; 6] = ["users", "calls", "rates", "endpoints", "recovery", "errors"];

pub(super) fn stream(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("console" / "stream")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| reply(open(&app)))
}

/// Take a slot, start the stream's task, answer with its body.
fn open(app: &Arc<App>) -> Result<Response> {
    let permit = app
        .console_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyStreams(MAX_CONSOLE_STREAMS))?;
    let (tx, rx) = mpsc::channel(1);
    app.tracker.spawn(run(app.clone(), tx, permit));
    let mut res = warp::reply::stream(Frames { rx }).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // nginx buffers responses by default; an event stream must not wait.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// The response body: what the stream's task hands over, until it ends.
struct Frames {
    rx: mpsc::Receiver<Bytes>,
}

impl Stream for Frames {
    type Item = std::result::Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(Ok))
    }
}

/// One stream's task: the first message, then a diff every tick, until
/// the client goes away or the daemon shuts down. Holds the slot.
async fn run(app: Arc<App>, tx: mpsc::Sender<Bytes>, _slot: OwnedSemaphorePermit) {
    let mut feed = Feed::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keep_alive = Instant::now() + KEEP_ALIVE;
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = feed.refresh(&app) => {}
        }
        let mut out = feed.message().map(|m| format!("data: {m}\n\n"));
        if Instant::now() >= keep_alive {
            out.get_or_insert_with(String::new)
                .push_str(": keep-alive\n\n");
            keep_alive = Instant::now() + KEEP_ALIVE;
        }
        let Some(out) = out else { continue };
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = tx.send(Bytes::from(out)) => if r.is_err() { return },
        }
    }
}

/// What one stream knows: the latest JSON text of each key, and the text
/// last sent.
struct Feed {
    current: [Option<String>; 6],
    sent: [Option<String>; 6],
    next_store: Instant,
    next_endpoints: Instant,
    rates_generation: Option<u64>,
    errors_generation: Option<u64>,
    /// The key's last store read failed and was logged: the next failure
    /// is not (one warning per outage, key and stream, not one per poll).
    failing: [bool; 6],
}

/// Index of a key in [`KEYS`].
fn at(key: &str) -> usize {
    KEYS.iter().position(|k| *k == key).expect("a key of KEYS")
}

impl Feed {
    fn new() -> Self {
        let now = Instant::now();
        Feed {
            current: Default::default(),
            sent: Default::default(),
            next_store: now,
            next_endpoints: now,
            rates_generation: None,
            errors_generation: None,
            failing: [false; 6],
        }
    }

    /// Bring every key up to date: the store's when due, the rest from memory.
    async fn refresh(&mut self, app: &App) {
        let now = Instant::now();
        if now >= self.next_store {
            self.next_store = now + STORE_POLL;
            let users = users(app).await;
            self.keep("users", users);
            let calls = calls(app).await;
            self.keep("calls", calls);
        }
        if now >= self.next_endpoints {
            self.next_endpoints = now + ENDPOINTS_POLL;
            let endpoints = endpoints(app).await;
            self.keep("endpoints", endpoints);
        }
        let rates = &app.metrics.rates;
        if self.rates_generation != Some(rates.generation()) {
            self.rates_generation = Some(rates.generation());
            self.current[at("rates")] = Some(json!(rates.view()).to_string());
        }
        let log = crate::errlog::global();
        if self.errors_generation != Some(log.generation()) {
            self.errors_generation = Some(log.generation());
            self.current[at("errors")] = Some(json!(log.entries()).to_string());
        }
        self.current[at("recovery")] = Some(super::status::recovery(app).to_string());
    }

    /// A store read's outcome: a new value, or the last one kept (an
    /// empty list until one was read, so the first message has every key).
    fn keep(&mut self, key: &str, read: Result<Value>) {
        let i = at(key);
        match read {
            Ok(v) => {
                self.current[i] = Some(v.to_string());
                self.failing[i] = false;
            }
            Err(e) => {
                if !self.failing[i] {
                    tracing::warn!(error = %e, key, "console: store read failed; last value kept");
                    self.failing[i] = true;
                }
                self.current[i].get_or_insert_with(|| "[]".to_string());
            }
        }
    }

    /// The keys whose text changed since the last message, as one JSON
    /// object; `None` when none did. Marks them sent.
    fn message(&mut self) -> Option<String> {
        let mut out = String::new();
        for (i, key) in KEYS.iter().enumerate() {
            let Some(text) = &self.current[i] else {
                continue;
            };
            if self.sent[i].as_ref() == Some(text) {
                continue;
            }
            out.push(if out.is_empty() { '{' } else { ',' });
            let _ = write!(out, "\"{key}\":{text}");
            self.sent[i] = Some(text.clone());
        }
        if out.is_empty() {
            return None;
        }
        out.push('}');
        Some(out)
    }
}

fn user_json(s: &UserSummary) -> Value {
    json!({
        "id": s.user.id,
        "name": s.user.name,
        "role": s.user.role,
        "online": s.presence.online,
        "connections": s.presence.connections,
        "status": s.status,
    })
}

fn call_json(c: &CallRecord) -> Value {
    let timeline: Vec<Value> = c
        .timeline
        .iter()
        .map(|e| json!({"event": e.event, "ts": e.ts}))
        .collect();
    json!({
        "callControlId": c.call_control_id,
        "callSessionId": c.call_session_id,
        "direction": c.direction,
        "from": c.from,
        "to": c.to,
        "state": c.state,
        "startedAt": c.started_at,
        "userIds": c.users,
        "timeline": timeline,
    })
}

async fn users(app: &App) -> Result<Value> {
    let all = bounded(
        app.config.store_timeout,
        app.store.list_user_summaries(MAX_USERS),
    )
    .await?;
    Ok(Value::Array(all.iter().map(user_json).collect()))
}

async fn calls(app: &App) -> Result<Value> {
    let live = bounded(
        app.config.store_timeout,
        app.store.active_call_records(MAX_CALLS),
    )
    .await?;
    Ok(Value::Array(live.iter().map(call_json).collect()))
}

/// Every endpoint as `GET /api/endpoints/{id}` answers it (no secret).
async fn endpoints(app: &App) -> Result<Value> {
    let all = bounded(app.config.store_timeout, app.store.list_endpoints()).await?;
    let mut out = Vec::with_capacity(all.len().min(MAX_ENDPOINTS));
    for e in all.iter().take(MAX_ENDPOINTS) {
        out.push(super::endpoints::with_stats(app, e).await?);
    }
    Ok(Value::Array(out))
}
