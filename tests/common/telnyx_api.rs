//! A stand-in for Telnyx's REST API v2, so that no test ever calls Telnyx:
//! hyper's HTTP/1 server on a loopback port (plain `http://`, which the
//! daemon allows to loopback for `CALLBRIDGE_TELNYX_API_URL`), base URL
//! `http://127.0.0.1:PORT/v2`.
//!
//! It follows the official SDK (`telnyx` on PyPI, generated from Telnyx's
//! OpenAPI spec; `tests/telnyx_sdk_check.py` runs it against the stand-in):
//! the same paths, query names, bodies and error shape
//! `{"errors":[{"code","title","detail"}]}`.
//!
//! - `Authorization: Bearer <key>` is checked on every request (401 `10009`).
//! - `GET /v2/webhook_deliveries`: the delivery log, filtered and paged
//!   ([`log`]); tests fill it directly or by [`TelnyxApi::play`]ing webhooks
//!   at a daemon that may be down.
//! - `POST /v2/calls/{id}/actions/{action}` and `POST /v2/calls` ([`calls`]),
//!   optionally followed by the webhooks Telnyx would send ("echo").
//! - Scripted faults: [`Fault`] for the next N requests or until cleared.
//! - Every request is recorded ([`ApiRequest`]) for assertions.
//!
//! Everything it spawns (listener, connections, echoes) stops when the last
//! clone of the [`TelnyxApi`] is dropped.
#![allow(dead_code)]

mod calls;
mod events;
mod log;
mod play;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

#[allow(unused_imports)]
pub use calls::{default_echo_events, required_fields, ACTIONS};
#[allow(unused_imports)]
pub use events::{
    call_envelope, call_webhook, envelope_of, message_webhook, rfc3339, CALLEE, CALLER,
};
#[allow(unused_imports)]
pub use log::{instant, DeliveryStatus, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
#[allow(unused_imports)]
pub use play::{Retries, WebhookTarget};

/// A scripted answer that replaces the normal one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// This status with Telnyx's error body for it: 400 `10015`, 401
    /// `10009`, 403 `10010`, 404 `10005`, 422 `90018` (call has already
    /// ended), 429 `10011` (with `Retry-After: 1`), 5xx `10007`.
    Status(u16),
    /// 429 `10011` with `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// Never answers (the connection stays open until the stand-in stops).
    Hang,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    /// The path as sent (percent-encoded), e.g. `/v2/webhook_deliveries`.
    pub path: String,
    /// The query's pairs, percent-decoded, in the order sent.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`None`: empty or not JSON).
    pub body: Option<Value>,
    pub raw_body: Bytes,
}

impl ApiRequest {
    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query's pairs sorted by name, for comparing regardless of order.
    pub fn sorted_query(&self) -> Vec<(String, String)> {
        let mut q = self.query.clone();
        q.sort();
        q
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A Telnyx error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: u16,
    error: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, code: &str, title: &str, detail: &str) -> ApiError {
        ApiError {
            status,
            error: json!({"code": code, "title": title, "detail": detail}),
            retry_after: None,
        }
    }

    fn with_source(mut self, source: Value) -> ApiError {
        self.error["source"] = source;
        self
    }

    /// Telnyx's error for a status (codes from its list of API errors).
    fn for_status(status: u16) -> ApiError {
        let (code, title, detail) = match status {
            400 => ("10015", "Bad Request", "The request failed because it was not well-formed."),
            401 => ("10009", "Authentication failed", "The required authentication headers were either invalid or not included in the request."),
            403 => ("10010", "Authorization failed", "You do not have permission to perform the requested action on the specified resource or resources."),
            404 => ("10005", "Resource not found", "The requested resource or URL could not be found."),
            422 => return calls::call_ended(),
            429 => ("10011", "Too many requests", "You have exceeded the maximum number of allowed requests."),
            _ => ("10007", "Unexpected error", "An unexpected error occurred."),
        };
        let mut e = ApiError::new(status, code, title, detail);
        if status == 429 {
            e.retry_after = Some(1);
        }
        e
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let body = json!({ "errors": [self.error] }).to_string();
        let mut r = Response::builder()
            .status(self.status)
            .header("content-type", "application/json");
        if let Some(secs) = self.retry_after {
            r = r.header("retry-after", secs.to_string());
        }
        r.body(Full::new(Bytes::from(body))).unwrap()
    }
}

struct ScriptedFault {
    fault: Fault,
    /// Only requests whose path contains this.
    path_part: Option<String>,
    /// How many more requests; `None`: until cleared.
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    requests: Vec<ApiRequest>,
    faults: Vec<ScriptedFault>,
    log: log::Log,
    echo: Option<(WebhookTarget, Retries)>,
    echo_events: HashMap<String, Vec<String>>,
    calls: HashMap<String, Value>,
    ended: HashSet<String>,
    /// Answers by (call or "dial", command_id).
    answered: HashMap<(String, String), Value>,
}

struct Shared {
    key: String,
    state: Mutex<State>,
    requests_seen: watch::Sender<usize>,
    log_len: watch::Sender<usize>,
    cancel: CancellationToken,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Run `fut` until it ends or the stand-in stops.
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            cancel.run_until_cancelled(fut).await;
        });
    }

    fn log_delivery(&self, delivery: Value) -> String {
        let mut st = self.state();
        let id = st.log.push(delivery);
        self.log_len.send_replace(st.log.len());
        id
    }

    /// Remember a call's payload from a webhook it plays (for echoes).
    fn learn_call(&self, webhook: &Value) {
        if let Some(id) = webhook["payload"]["call_control_id"].as_str() {
            self.state()
                .calls
                .insert(id.to_string(), webhook["payload"].clone());
        }
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut st = self.state();
        let i = st.faults.iter().position(|f| {
            f.path_part
                .as_ref()
                .is_none_or(|p| path.contains(p.as_str()))
        })?;
        let f = &mut st.faults[i];
        let fault = f.fault;
        if let Some(n) = f.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                st.faults.remove(i);
            }
        }
        Some(fault)
    }
}

/// The stand-in. Cheap to clone; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct TelnyxApi {
    /// `http://127.0.0.1:PORT/v2`: what `CALLBRIDGE_TELNYX_API_URL` takes.
    pub base: String,
    pub port: u16,
    /// The API key it accepts (`Authorization: Bearer <key>`).
    pub key: String,
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

impl TelnyxApi {
    /// Listen on a free loopback port, accepting `key`.
    pub async fn start(key: &str) -> TelnyxApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            key: key.to_string(),
            state: Mutex::new(State::default()),
            requests_seen: watch::Sender::new(0),
            log_len: watch::Sender::new(0),
            cancel: cancel.clone(),
        });
        let s = shared.clone();
        shared.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = s.clone();
                s.spawn(serve(tcp, conn));
            }
        });
        TelnyxApi {
            base: format!("http://127.0.0.1:{port}/v2"),
            port,
            key: key.to_string(),
            shared,
            _stop: Arc::new(cancel.drop_guard()),
        }
    }

    // ---- requests ----

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.state().requests.clone()
    }

    /// Wait until `n` requests arrived (at most `within`); all of them.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<ApiRequest> {
        let mut rx = self.shared.requests_seen.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|&c| c >= n)).await;
        self.requests()
    }

    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
        self.shared.requests_seen.send_replace(0);
    }

    // ---- faults ----

    /// Answer the next `n` requests with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.push_fault(fault, None, Some(n));
    }

    /// Answer the next `n` requests whose path contains `path_part` (e.g.
    /// `"/webhook_deliveries"`, `"/actions/hangup"`) with `fault`.
    pub fn fail_next_on(&self, path_part: &str, n: usize, fault: Fault) {
        self.push_fault(fault, Some(path_part.to_string()), Some(n));
    }

    /// Answer every request with `fault` until [`Self::clear_faults`].
    pub fn fail_all(&self, fault: Fault) {
        self.push_fault(fault, None, None);
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    fn push_fault(&self, fault: Fault, path_part: Option<String>, remaining: Option<usize>) {
        if remaining == Some(0) {
            return;
        }
        self.shared.state().faults.push(ScriptedFault {
            fault,
            path_part,
            remaining,
        });
    }

    // ---- the delivery log ----

    /// Log a delivery of `webhook` (an envelope's `data`) that finished at
    /// `finished_at_ms`, with made-up attempts; returns its id.
    pub fn add_delivery(
        &self,
        webhook: Value,
        status: DeliveryStatus,
        finished_at_ms: i64,
    ) -> String {
        let attempts = log::made_up_attempts(status, &webhook, finished_at_ms);
        self.shared
            .log_delivery(log::delivery(status, webhook, attempts))
    }

    /// [`Self::add_delivery`] as `failed`: what recovery looks for.
    pub fn add_failed(&self, webhook: Value, finished_at_ms: i64) -> String {
        self.add_delivery(webhook, DeliveryStatus::Failed, finished_at_ms)
    }

    /// `n` failed `call.initiated` deliveries of `n` distinct calls, the
    /// i-th finished at `first_finished_ms + i * step_ms` and occurred a
    /// second before; returns their webhooks in that order.
    pub fn add_failed_calls(&self, n: usize, first_finished_ms: i64, step_ms: i64) -> Vec<Value> {
        let batch = uuid::Uuid::new_v4().simple().to_string();
        let mut webhooks = Vec::with_capacity(n);
        let mut st = self.shared.state();
        for i in 0..n {
            let finished = first_finished_ms + i as i64 * step_ms;
            let call = format!("v3:bulk-{}-{i}", &batch[..8]);
            let webhook = call_webhook("call.initiated", &call, finished - 1000);
            let attempts = log::made_up_attempts(DeliveryStatus::Failed, &webhook, finished);
            st.log.push(log::delivery(
                DeliveryStatus::Failed,
                webhook.clone(),
                attempts,
            ));
            webhooks.push(webhook);
        }
        self.shared.log_len.send_replace(st.log.len());
        webhooks
    }

    /// Every logged delivery, in the order logged.
    pub fn deliveries(&self) -> Vec<Value> {
        self.shared.state().log.all()
    }

    /// Wait until the log holds `n` deliveries (at most `within`); all of them.
    pub async fn wait_deliveries(&self, n: usize, within: Duration) -> Vec<Value> {
        let mut rx = self.shared.log_len.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|&c| c >= n)).await;
        self.deliveries()
    }

    // ---- playing Telnyx's webhook sender ----

    /// Deliver `envelopes` to `target` in order, each retried per
    /// `retries`, and log each as `delivered` or `failed`; returns the
    /// delivery objects. "The daemon was down longer than Telnyx retries"
    /// is a `play` at a stopped daemon.
    pub async fn play(
        &self,
        target: &WebhookTarget,
        envelopes: &[Value],
        retries: &Retries,
    ) -> Vec<Value> {
        play::play_all(&self.shared, target, envelopes, retries).await
    }

    // ---- call control ----

    /// After each successful command, post the webhooks Telnyx would send
    /// (see [`default_echo_events`]) to `target`, as [`Self::play`] does.
    pub fn enable_echo(&self, target: WebhookTarget, retries: Retries) {
        self.shared.state().echo = Some((target, retries));
    }

    pub fn disable_echo(&self) {
        self.shared.state().echo = None;
    }

    /// The webhooks echoed after `action` ("dial" for `POST /calls`).
    pub fn set_echo_events(&self, action: &str, events: &[&str]) {
        let events = events.iter().map(|s| s.to_string()).collect();
        self.shared
            .state()
            .echo_events
            .insert(action.to_string(), events);
    }

    /// Remember a call's payload (numbers, ids, client_state) for echoes.
    pub fn register_call(&self, payload: &Value) {
        self.shared.learn_call(&json!({ "payload": payload }));
    }

    /// The call ended: commands on it now get 422 `90018`.
    pub fn end_call(&self, call_control_id: &str) {
        self.shared
            .state()
            .ended
            .insert(call_control_id.to_string());
    }
}

// ---- HTTP ----

async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    let svc = service_fn(move |req| handle(req, shared.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), svc)
        .await;
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let r = read_request(req).await;
    let fault = shared.take_fault(&r.path);
    {
        let mut st = shared.state();
        st.requests.push(r.clone());
        shared.requests_seen.send_replace(st.requests.len());
    }
    match fault {
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Status(s)) => return Ok(ApiError::for_status(s).response()),
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut e = ApiError::for_status(429);
            e.retry_after = Some(retry_after_secs);
            return Ok(e.response());
        }
        None => {}
    }
    if r.authorization.as_deref() != Some(format!("Bearer {}", shared.key).as_str()) {
        return Ok(ApiError::for_status(401).response());
    }
    Ok(match route(&shared, &r) {
        Ok(v) => Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .unwrap(),
        Err(e) => e.response(),
    })
}

fn route(shared: &Arc<Shared>, r: &ApiRequest) -> Result<Value, ApiError> {
    let segments: Vec<String> = r
        .path
        .split('/')
        .skip(1)
        .map(|s| percent_decode(s, false))
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (r.method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "webhook_deliveries"]) => shared.state().log.list(&r.query),
        ("POST", ["v2", "calls"]) => calls::dial(shared, &json_body(r)?),
        ("POST", ["v2", "calls", call, "actions", action]) => {
            calls::action(shared, call, action, &json_body(r)?)
        }
        _ => Err(ApiError::for_status(404)),
    }
}

/// A command's body: a JSON object (an empty body counts as `{}`).
fn json_body(r: &ApiRequest) -> Result<Value, ApiError> {
    if r.raw_body.is_empty() {
        return Ok(json!({}));
    }
    match &r.body {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Err(ApiError::new(
            400,
            "10023",
            "Invalid JSON",
            "The request body must be a JSON object.",
        )),
    }
}

async fn read_request(req: Request<Incoming>) -> ApiRequest {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(decode_query).unwrap_or_default();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw_body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    ApiRequest {
        method,
        path,
        query,
        authorization,
        headers,
        body: serde_json::from_slice(&raw_body).ok(),
        raw_body,
    }
}

/// `a=1&b%5Bc%5D=x+y` → `[("a","1"), ("b[c]","x y")]`.
pub fn decode_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Percent-decoding (and `+` as a space in a query); a malformed escape is
/// kept as written.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let hex = |c: &u8| (*c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if plus_is_space && b[i] == b'+' {
            b' '
        } else {
            b[i]
        });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- the official SDK ----

const SDK_PYTHON_VAR: &str = "CALLBRIDGE_TEST_TELNYX_PYTHON";

/// The Python that has the pinned official SDK, set by `scripts/test.sh`
/// (`scripts/telnyx-sdk.sh`). Missing: a failure in CI (`CI` set), else a
/// skip that says so (`what` names the test), as for MongoDB.
pub fn sdk_python(what: &str) -> Option<PathBuf> {
    match std::env::var(SDK_PYTHON_VAR) {
        Ok(p) if !p.is_empty() && std::path::Path::new(&p).exists() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{SDK_PYTHON_VAR} is not set in CI: run the suite with scripts/test.sh ({what})"
            );
            eprintln!("{SDK_PYTHON_VAR} not set: {what} not run (use scripts/test.sh)");
            None
        }
    }
}
