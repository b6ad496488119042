//! `--recovery`: a minimal stand-in for Telnyx's REST API v2 in the load
//! generator's process, serving the webhook delivery log
//! (`GET /v2/webhook_deliveries`) and, for `--actions`, Call Control
//! commands ([`telnyx_calls`]), on a loopback port over plain HTTP
//! (hyper's HTTP/1 server, as the `--outbound` receiver). The tests have a
//! full stand-in (`tests/common/telnyx_api.rs`); test code cannot be used
//! from this binary, so this one answers only what a recovery run asks,
//! in the same shape:
//!
//! - `Authorization: Bearer <key>` is checked (401 `10009` otherwise);
//! - `filter[status][eq]` (`failed`: every delivery here; `delivered`:
//!   none), `filter[finished_at][gte]` and `[lte]` (both inclusive; a
//!   backlog over 5,000 is read in windows), `page[number]` (≥ 1, default 1) and
//!   `page[size]` (1..=250, default 20); another `filter[…]`/`page[…]` or a
//!   malformed value is a 400 `10015`, so a typo in the daemon's query
//!   shows instead of answering everything;
//! - `{"data":[…],"meta":{"page_number","page_size","total_pages",
//!   "total_results"}}`, newest `finished_at` first, as the tests' stand-in.
//!
//! The log is made once, before the run, and held as one serialized JSON
//! object per delivery (~1.6 KB each with its three attempts): a page is
//! their concatenation, so answering costs a copy, not a serialization.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use serde_json::{json, Value};

use callbridge::clock::{parse_rfc3339_ms, rfc3339_ms};

use crate::telnyx_calls::{self, Answered, Commands};

const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 250;
/// How long Telnyx kept retrying each delivery before it marked it failed.
const RETRIED_FOR_MS: i64 = 64_000;
/// The backlog's events are this far apart, the last one this long ago:
/// 10,000 events span 3 min 20 s of an outage that ended 10 min ago.
const EVENT_STEP_MS: i64 = 20;
const ENDED_AGO_MS: i64 = 600_000;
/// The three events of each backlog call, in the order they occurred.
const CALL_EVENTS: [&str; 3] = ["call.initiated", "call.answered", "call.hangup"];

/// The user backlog event `i` is for: its call's (`i / 3`) among `users`.
pub fn user_of(i: usize, users: usize) -> usize {
    (i / 3) % users.max(1)
}

/// The failed deliveries, newest `finished_at` first.
pub struct DeliveryLog {
    entries: Vec<(i64, Box<str>)>,
}

impl DeliveryLog {
    /// `n` failed deliveries: call `k` has events `3k`, `3k + 1`, `3k + 2`
    /// (initiated, answered, hangup), for user `bench{k % users}` through
    /// its `client_state`, as the live webhooks are; event `i`'s id is
    /// `id(i)`.
    pub fn generate(n: usize, users: usize, now_ms: i64, id: impl Fn(usize) -> String) -> Self {
        let first = now_ms - ENDED_AGO_MS - n as i64 * EVENT_STEP_MS;
        let mut entries: Vec<(i64, Box<str>)> = (0..n)
            .map(|i| {
                let occurred = first + i as i64 * EVENT_STEP_MS;
                let (call, user) = (i / 3, user_of(i, users));
                let webhook = call_webhook(&id(i), CALL_EVENTS[i % 3], call, user, occurred);
                let finished = occurred + RETRIED_FOR_MS;
                let json = failed_delivery(webhook, occurred, finished).to_string();
                (finished, json.into_boxed_str())
            })
            .collect();
        entries.sort_by_key(|(finished, _)| std::cmp::Reverse(*finished));
        DeliveryLog { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held for the deliveries' JSON.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, j)| j.len()).sum()
    }

    /// The answer to a valid query.
    fn page(&self, q: &Query) -> String {
        // Newest first: those after `lte`, then the hits, then those
        // before `gte`.
        let (newer, hits) = match q.failed {
            true => {
                let newer = self.entries.partition_point(|(f, _)| *f > q.finished_lte);
                let older = self.entries.partition_point(|(f, _)| *f >= q.finished_gte);
                (newer, older.saturating_sub(newer))
            }
            false => (0, 0),
        };
        let skip = (q.page_number - 1).saturating_mul(q.page_size).min(hits);
        let data = &self.entries[newer + skip..newer + hits.min(skip + q.page_size)];
        let mut body =
            String::with_capacity(data.iter().map(|(_, j)| j.len() + 1).sum::<usize>() + 128);
        body.push_str("{\"data\":[");
        for (n, (_, j)) in data.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(j);
        }
        let meta = json!({
            "page_number": q.page_number,
            "page_size": q.page_size,
            "total_pages": hits.div_ceil(q.page_size),
            "total_results": hits,
        });
        body.push_str(&format!("],\"meta\":{meta}}}"));
        body
    }
}

/// A call event's webhook object (a delivery's `webhook`), with the fields
/// Telnyx sends for its type.
fn call_webhook(id: &str, event_type: &str, call: usize, user: usize, at_ms: i64) -> Value {
    let at = rfc3339_ms(at_ms);
    let state = json!({"userId": format!("bench{user}")}).to_string();
    let mut payload = json!({
        "call_control_id": format!("v3:bench-rcall-{call}"),
        "call_leg_id": format!("bench-rleg-{call}"),
        "call_session_id": format!("bench-rsession-{call}"),
        "connection_id": "bench",
        "client_state": base64::engine::general_purpose::STANDARD.encode(state),
        "from": "+15551230001",
        "to": "+15559870002",
        "direction": "outgoing",
    });
    let p = payload.as_object_mut().expect("an object");
    match event_type {
        "call.initiated" => {
            p.insert("state".into(), json!("bridging"));
            p.insert("start_time".into(), json!(at));
        }
        "call.answered" => {
            p.insert("state".into(), json!("answered"));
            p.insert("start_time".into(), json!(at));
        }
        _ => {
            p.insert("state".into(), json!("hangup"));
            p.insert("hangup_cause".into(), json!("normal_clearing"));
            p.insert("hangup_source".into(), json!("callee"));
            p.insert("sip_hangup_cause".into(), json!("200"));
            p.insert("end_time".into(), json!(at));
        }
    }
    json!({"record_type": "event", "id": id, "event_type": event_type,
           "occurred_at": at, "payload": payload})
}

/// A failed delivery: three attempts answered 503 between the event and
/// `finished_ms`, newest first, as Telnyx lists them.
fn failed_delivery(webhook: Value, occurred_ms: i64, finished_ms: i64) -> Value {
    let step = (finished_ms - occurred_ms) / 2;
    let attempts: Vec<Value> = (0..3i64)
        .rev()
        .map(|k| {
            let at = rfc3339_ms(occurred_ms + k * step);
            json!({
                "status": "failed",
                "started_at": at,
                "finished_at": at,
                "http": {
                    "request": {"url": "https://bridge.example.com/webhooks/telnyx",
                                "headers": [["Content-Type", "application/json"]]},
                    "response": {"status": 503, "headers": [["Content-Type", "application/json"]],
                                 "body": "{\"error\":\"store-unavailable\"}"},
                },
                "errors": [75499],
            })
        })
        .collect();
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "user_id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
        "record_type": "webhook_delivery",
        "status": "failed",
        "started_at": rfc3339_ms(occurred_ms),
        "finished_at": rfc3339_ms(finished_ms),
        "attempts": attempts,
        "webhook": webhook,
    })
}

/// A valid `GET /v2/webhook_deliveries` query.
struct Query {
    failed: bool,
    finished_gte: i64,
    finished_lte: i64,
    page_number: usize,
    page_size: usize,
}

impl Query {
    /// The query string's pairs, or the 400's detail.
    fn parse(raw: &str) -> Result<Query, String> {
        let mut q = Query {
            failed: true,
            finished_gte: i64::MIN,
            finished_lte: i64::MAX,
            page_number: 1,
            page_size: DEFAULT_PAGE_SIZE,
        };
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k), percent_decode(v));
            let count = |max: usize| match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("{k} must be an integer from 1 to {max}, got {v:?}")),
            };
            match k.as_str() {
                "filter[status][eq]" if v == "failed" || v == "delivered" => {
                    q.failed = v == "failed"
                }
                "filter[finished_at][gte]" | "filter[finished_at][lte]" => {
                    let at =
                        parse_rfc3339_ms(&v).ok_or(format!("{k} must be RFC 3339, got {v:?}"))?;
                    match k.ends_with("[gte]") {
                        true => q.finished_gte = at,
                        false => q.finished_lte = at,
                    }
                }
                "page[number]" => q.page_number = count(usize::MAX)?,
                "page[size]" => q.page_size = count(MAX_PAGE_SIZE)?,
                _ if k.starts_with("filter") || k.starts_with("page") => {
                    return Err(format!("unknown or malformed parameter {k}={v}"))
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(c)) => {
                out.push(c);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The stand-in, serving until the process ends.
pub struct StandIn {
    /// Pages answered (200).
    pub pages: Arc<AtomicU64>,
    /// Requests refused (401, 400, 404, 422).
    pub refused: Arc<AtomicU64>,
    /// Call Control commands answered ([`telnyx_calls`], `--actions`).
    pub commands: Arc<Commands>,
}

/// What every connection's service shares.
struct Shared {
    log: DeliveryLog,
    bearer: String,
    pages: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    commands: Arc<Commands>,
}

/// Serve `log`, and answer Call Control commands, on `127.0.0.1:port` to
/// requests bearing `key`.
pub async fn serve(port: u16, key: &str, log: DeliveryLog) -> StandIn {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("bind the Telnyx API stand-in on port {port}: {e}"));
    let stand_in = StandIn {
        pages: Arc::default(),
        refused: Arc::default(),
        commands: Arc::default(),
    };
    let shared = Arc::new(Shared {
        log,
        bearer: format!("Bearer {key}"),
        pages: stand_in.pages.clone(),
        refused: stand_in.refused.clone(),
        commands: stand_in.commands.clone(),
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| respond(shared.clone(), req));
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    stand_in
}

/// One request: a Call Control command with the right key is
/// [`telnyx_calls::answer`]ed and its instants recorded (the answer's as
/// it is handed back to hyper); anything else is [`answer`]ed.
async fn respond(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = Instant::now();
    let command = telnyx_calls::command_path(req.method(), req.uri().path()).is_some();
    let (status, body, command_id) = if command && bearer_ok(&req, &shared.bearer) {
        telnyx_calls::answer(req).await
    } else {
        let (status, body) = answer(&shared.log, &shared.bearer, &req);
        (status, body, None)
    };
    match status {
        200 if command_id.is_none() => shared.pages.fetch_add(1, Ordering::Relaxed),
        200 => 0,
        _ => shared.refused.fetch_add(1, Ordering::Relaxed),
    };
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a response");
    if let Some(id) = command_id {
        let answered = Instant::now();
        shared.commands.record(id, Answered { arrived, answered });
    }
    Ok(resp)
}

fn bearer_ok<B>(req: &Request<B>, bearer: &str) -> bool {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(bearer)
}

/// Status and body for one request.
fn answer<B>(log: &DeliveryLog, bearer: &str, req: &Request<B>) -> (u16, String) {
    let error = |status: u16, code: &str, title: &str, detail: &str| {
        let e = json!({"errors": [{"code": code, "title": title, "detail": detail}]});
        (status, e.to_string())
    };
    if !bearer_ok(req, bearer) {
        return error(
            401,
            "10009",
            "Authentication failed",
            "The API key is missing or wrong.",
        );
    }
    if req.method() != hyper::Method::GET || req.uri().path() != "/v2/webhook_deliveries" {
        return error(
            404,
            "10005",
            "Resource not found",
            "This stand-in serves GET /v2/webhook_deliveries and \
             POST /v2/calls/{call_control_id}/actions/{action} only.",
        );
    }
    match Query::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => (200, log.page(&q)),
        Err(detail) => error(400, "10015", "Bad Request", &detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(log: &DeliveryLog, auth: &str, uri: &str) -> (u16, Value) {
        let req = Request::get(uri)
            .header("authorization", auth)
            .body(())
            .unwrap();
        let (status, body) = answer(log, "Bearer k", &req);
        (status, serde_json::from_str(&body).unwrap())
    }

    fn query(gte: &str, number: usize, size: usize) -> String {
        format!(
            "/v2/webhook_deliveries?filter%5Bstatus%5D%5Beq%5D=failed\
             &filter%5Bfinished_at%5D%5Bgte%5D={}&page%5Bnumber%5D={number}&page%5Bsize%5D={size}",
            gte.replace(':', "%3A")
        )
    }

    #[test]
    fn pages_cover_the_log_once_newest_first() {
        let now = 1_796_634_000_000;
        let log = DeliveryLog::generate(250, 7, now, |i| format!("e{i}"));
        let mut seen = std::collections::HashSet::new();
        let mut last = i64::MAX;
        for number in 1..=3 {
            let (status, page) = get(
                &log,
                "Bearer k",
                &query("2026-01-01T00:00:00Z", number, 100),
            );
            assert_eq!(status, 200);
            assert_eq!(page["meta"]["total_pages"], 3);
            assert_eq!(page["meta"]["total_results"], 250);
            assert_eq!(page["meta"]["page_number"], number);
            for d in page["data"].as_array().unwrap() {
                let finished = parse_rfc3339_ms(d["finished_at"].as_str().unwrap()).unwrap();
                assert!(finished <= last);
                last = finished;
                let i: usize = d["webhook"]["id"].as_str().unwrap()[1..].parse().unwrap();
                assert_eq!(d["webhook"]["event_type"], CALL_EVENTS[i % 3]);
                assert!(seen.insert(i));
            }
        }
        assert_eq!(seen.len(), 250);
        // Half of them finished at or after the middle one.
        let mid = rfc3339_ms(now - ENDED_AGO_MS - 125 * EVENT_STEP_MS + RETRIED_FOR_MS);
        let (_, page) = get(&log, "Bearer k", &query(&mid, 1, 250));
        assert_eq!(page["meta"]["total_results"], 125);
        let (_, empty) = get(&log, "Bearer k", &query(&mid, 2, 250));
        assert_eq!(empty["data"], json!([]));
        // And the other half (the middle one in both) up to it, newest
        // first: a window.
        let lte = format!(
            "&filter%5Bfinished_at%5D%5Blte%5D={}",
            mid.replace(':', "%3A")
        );
        let all = query("2026-01-01T00:00:00Z", 1, 250) + &lte;
        let (_, window) = get(&log, "Bearer k", &all);
        assert_eq!(window["meta"]["total_results"], 126);
        let data = window["data"].as_array().unwrap();
        assert_eq!(data[0]["webhook"]["id"], "e125");
        assert_eq!(data[125]["webhook"]["id"], "e0");
    }

    #[test]
    fn wrong_key_and_unknown_parameters_are_refused() {
        let log = DeliveryLog::generate(3, 1, 1_796_634_000_000, |i| format!("e{i}"));
        let (status, body) = get(&log, "Bearer nope", &query("2026-01-01T00:00:00Z", 1, 100));
        assert_eq!((status, &body["errors"][0]["code"]), (401, &json!("10009")));
        let (status, _) = get(
            &log,
            "Bearer k",
            "/v2/webhook_deliveries?filter%5Bstatus%5D=failed",
        );
        assert_eq!(status, 400);
        let (status, _) = get(
            &log,
            "Bearer k",
            "/v2/webhook_deliveries?page%5Bsize%5D=251",
        );
        assert_eq!(status, 400);
        let (status, _) = get(&log, "Bearer k", "/v2/calls");
        assert_eq!(status, 404);
    }
}
