//! The webhook delivery log behind `GET /v2/webhook_deliveries`: what Telnyx
//! keeps of every webhook it tried to deliver, with the API's filters and
//! page-number paging.
//!
//! Paging follows Telnyx's `PageConsolidated` parameter of its OpenAPI spec:
//! `page[number]` ≥ 1 (default 1), `page[size]` 1..=250 (default 20). The
//! stand-in is stricter than the real API about what it does not know: a
//! malformed value or an unknown `filter[…]`/`page[…]` name is a 400 in
//! Telnyx's error shape, so that a typo in callbridge's query (which Telnyx
//! might silently ignore, answering every delivery) fails a test.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::events::rfc3339;
use super::ApiError;

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 250;
/// Where the log says the stand-in's own deliveries went when a test added
/// them directly (no real attempt was made).
const LOGGED_URL: &str = "https://bridge.example.com/webhooks/telnyx";
/// Telnyx's per-attempt error codes are opaque numbers; its documentation's
/// example shows this one on an attempt answered 404.
pub const ATTEMPT_FAILED: i64 = 75499;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One delivery: the JSON the API answers, and what the filters compare.
struct Entry {
    seq: u64,
    status: DeliveryStatus,
    event_type: String,
    started: i128,
    finished: i128,
    json: Value,
}

#[derive(Default)]
pub(super) struct Log {
    entries: Vec<Entry>,
    next_seq: u64,
}

/// Nanoseconds since the epoch of an RFC 3339 instant.
pub fn instant(s: &str) -> Option<i128> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

impl Log {
    /// Add a delivery object (see [`delivery`]); returns its id.
    pub fn push(&mut self, json: Value) -> String {
        let field = |k: &str| json[k].as_str().unwrap_or_default().to_string();
        let status = DeliveryStatus::parse(&field("status")).expect("delivery status");
        let started = instant(&field("started_at")).expect("started_at is RFC 3339");
        let finished = instant(&field("finished_at")).expect("finished_at is RFC 3339");
        let event_type = json["webhook"]["event_type"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let id = field("id");
        self.next_seq += 1;
        self.entries.push(Entry {
            seq: self.next_seq,
            status,
            event_type,
            started,
            finished,
            json,
        });
        id
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every delivery, in the order added.
    pub fn all(&self) -> Vec<Value> {
        self.entries.iter().map(|e| e.json.clone()).collect()
    }

    /// The answer to `GET /v2/webhook_deliveries` with these query pairs.
    ///
    /// Order: newest `finished_at` first, the later added first on a tie.
    /// Telnyx documents no order for this list: callbridge must not rely on
    /// this one (it sorts what it fetched by `occurred_at` itself).
    pub fn list(&self, query: &[(String, String)]) -> Result<Value, ApiError> {
        let q = ListQuery::parse(query)?;
        let mut hits: Vec<&Entry> = self.entries.iter().filter(|e| q.matches(e)).collect();
        hits.sort_by(|a, b| b.finished.cmp(&a.finished).then(b.seq.cmp(&a.seq)));
        let total = hits.len();
        let skip = (q.page_number - 1).saturating_mul(q.page_size);
        let data: Vec<Value> = hits
            .iter()
            .skip(skip)
            .take(q.page_size)
            .map(|e| e.json.clone())
            .collect();
        Ok(json!({
            "data": data,
            "meta": {
                "page_number": q.page_number,
                "page_size": q.page_size,
                "total_pages": total.div_ceil(q.page_size),
                "total_results": total,
            },
        }))
    }
}

/// `gte`/`lte` bounds on an instant, both inclusive.
#[derive(Default)]
struct Range {
    gte: Option<i128>,
    lte: Option<i128>,
}

impl Range {
    fn holds(&self, t: i128) -> bool {
        self.gte.is_none_or(|g| t >= g) && self.lte.is_none_or(|l| t <= l)
    }
}

struct ListQuery {
    status: Option<DeliveryStatus>,
    event_types: Option<Vec<String>>,
    webhook_contains: Option<String>,
    attempts_contains: Option<String>,
    started: Range,
    finished: Range,
    page_number: usize,
    page_size: usize,
}

fn bad_parameter(name: &str, detail: String) -> ApiError {
    ApiError::new(400, "10015", "Bad Request", &detail).with_source(json!({ "parameter": name }))
}

fn parse_instant(name: &str, v: &str) -> Result<i128, ApiError> {
    instant(v).ok_or_else(|| {
        bad_parameter(
            name,
            format!("{name} must be an ISO 8601 date-time (RFC 3339), got {v:?}"),
        )
    })
}

fn parse_count(name: &str, v: &str, max: usize) -> Result<usize, ApiError> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad_parameter(
            name,
            format!("{name} must be an integer from 1 to {max}, got {v:?}"),
        )),
    }
}

impl ListQuery {
    fn parse(query: &[(String, String)]) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            status: None,
            event_types: None,
            webhook_contains: None,
            attempts_contains: None,
            started: Range::default(),
            finished: Range::default(),
            page_number: 1,
            page_size: DEFAULT_PAGE_SIZE,
        };
        for (k, v) in query {
            let name = k.as_str();
            match name {
                "filter[status][eq]" => {
                    q.status = Some(DeliveryStatus::parse(v).ok_or_else(|| {
                        bad_parameter(name, format!("{name} must be delivered or failed"))
                    })?);
                }
                "filter[event_type]" => {
                    q.event_types = Some(v.split(',').map(|s| s.trim().to_string()).collect());
                }
                "filter[webhook][contains]" => q.webhook_contains = Some(v.clone()),
                "filter[attempts][contains]" => q.attempts_contains = Some(v.clone()),
                "filter[started_at][gte]" => q.started.gte = Some(parse_instant(name, v)?),
                "filter[started_at][lte]" => q.started.lte = Some(parse_instant(name, v)?),
                "filter[finished_at][gte]" => q.finished.gte = Some(parse_instant(name, v)?),
                "filter[finished_at][lte]" => q.finished.lte = Some(parse_instant(name, v)?),
                "page[number]" => q.page_number = parse_count(name, v, usize::MAX)?,
                "page[size]" => q.page_size = parse_count(name, v, MAX_PAGE_SIZE)?,
                _ if name.starts_with("filter") || name.starts_with("page") => {
                    return Err(bad_parameter(name, format!("unknown parameter {name}")));
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn matches(&self, e: &Entry) -> bool {
        self.status.is_none_or(|s| s == e.status)
            && self
                .event_types
                .as_ref()
                .is_none_or(|ts| ts.contains(&e.event_type))
            && self.started.holds(e.started)
            && self.finished.holds(e.finished)
            && self
                .webhook_contains
                .as_ref()
                .is_none_or(|t| e.json["webhook"].to_string().contains(t.as_str()))
            && self
                .attempts_contains
                .as_ref()
                .is_none_or(|t| e.json["attempts"].to_string().contains(t.as_str()))
    }
}

/// A delivery object: `attempts` newest first; `started_at` is the first
/// attempt's start, `finished_at` the last attempt's end.
pub fn delivery(status: DeliveryStatus, webhook: Value, attempts: Vec<Value>) -> Value {
    let started = attempts.last().map(|a| a["started_at"].clone());
    let finished = attempts.first().map(|a| a["finished_at"].clone());
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "user_id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
        "record_type": "webhook_delivery",
        "status": status.as_str(),
        "started_at": started.expect("a delivery has attempts"),
        "finished_at": finished.expect("a delivery has attempts"),
        "attempts": attempts,
        "webhook": webhook,
    })
}

/// The answer to one attempt.
pub struct AttemptResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What the log keeps of one HTTP attempt.
pub struct AttemptRecord {
    pub started_ms: i64,
    pub finished_ms: i64,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    /// `None`: no answer (refused, reset, timed out).
    pub response: Option<AttemptResponse>,
}

fn header_pairs(h: &[(String, String)]) -> Value {
    Value::Array(h.iter().map(|(k, v)| json!([k, v])).collect())
}

impl AttemptRecord {
    pub fn delivered(&self) -> bool {
        self.response
            .as_ref()
            .is_some_and(|r| (200..300).contains(&r.status))
    }

    pub fn to_json(&self) -> Value {
        let ok = self.delivered();
        let mut http = json!({
            "request": {"url": self.url, "headers": header_pairs(&self.request_headers)},
        });
        if let Some(r) = &self.response {
            // Telnyx keeps at most 10 kB of the body.
            let body: String = r.body.chars().take(10 * 1024).collect();
            http["response"] = json!({
                "status": r.status,
                "headers": header_pairs(&r.headers),
                "body": body,
            });
        }
        json!({
            "status": if ok { "delivered" } else { "failed" },
            "started_at": rfc3339(self.started_ms),
            "finished_at": rfc3339(self.finished_ms),
            "http": http,
            "errors": if ok { json!([]) } else { json!([ATTEMPT_FAILED]) },
        })
    }
}

/// Attempts for a delivery a test adds directly: Telnyx sends right away,
/// so the first attempt starts at the webhook's `occurred_at` (or at
/// `finished_ms` when that is later); a failed delivery has three attempts
/// answered 503, spread up to `finished_ms`, a delivered one a single 200.
pub fn made_up_attempts(status: DeliveryStatus, webhook: &Value, finished_ms: i64) -> Vec<Value> {
    let occurred = webhook["occurred_at"]
        .as_str()
        .and_then(instant)
        .map(|ns| (ns / 1_000_000) as i64);
    let start = occurred
        .filter(|&o| o <= finished_ms)
        .unwrap_or(finished_ms);
    let (count, code) = match status {
        DeliveryStatus::Delivered => (1, 200),
        DeliveryStatus::Failed => (3, 503),
    };
    let step = (finished_ms - start) / count;
    let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    (0..count)
        .rev()
        .map(|i| {
            let at = start + i * step;
            let end = if i == count - 1 { finished_ms } else { at };
            AttemptRecord {
                started_ms: at,
                finished_ms: end,
                url: LOGGED_URL.into(),
                request_headers: headers.clone(),
                response: Some(AttemptResponse {
                    status: code,
                    headers: headers.clone(),
                    body: String::new(),
                }),
            }
            .to_json()
        })
        .collect()
}
