//! The Telnyx API stand-in (`tests/common/telnyx_api.rs`) itself: checked
//! by the official SDK (`tests/telnyx_sdk_check.py`), which also pins the
//! paths, query strings and bodies callbridge's own requests must match;
//! and its paging rules, faults, webhook playing and echoes, over plain HTTP.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::common::telnyx_api::{
    call_envelope, call_webhook, instant, message_webhook, rfc3339, sdk_python, DeliveryStatus,
    Fault, Retries, TelnyxApi, WebhookTarget,
};
use crate::common::{Server, WAIT};

const KEY: &str = "KEY0123456789ABCDEF_standin";

struct Reply {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

/// One plain-HTTP request to the stand-in; `path` is below `/v2`.
async fn call(
    api: &TelnyxApi,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("/v2{path}"))
        .header("host", format!("127.0.0.1:{}", api.port))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        retry_after,
        json,
    }
}

async fn get(api: &TelnyxApi, path: &str) -> Reply {
    call(api, "GET", path, Some(KEY), None).await
}

/// The reply is a Telnyx error: this status and first error code.
fn assert_telnyx_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.json);
    let e = &r.json["errors"][0];
    assert_eq!(e["code"], code, "{}", r.json);
    assert!(
        e["title"].is_string() && e["detail"].is_string(),
        "{}",
        r.json
    );
}

fn now() -> i64 {
    callbridge::clock::now_ms()
}

#[tokio::test]
async fn standin_pages_and_filters() {
    let api = TelnyxApi::start(KEY).await;
    let t0 = now() - 3_600_000;
    api.add_failed_calls(45, t0, 1000);
    api.add_delivery(
        call_webhook("call.hangup", "v3:ok", t0),
        DeliveryStatus::Delivered,
        t0 + 500,
    );
    api.add_failed(message_webhook(t0), t0 + 90_000);

    let r = get(&api, "/webhook_deliveries").await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["meta"],
        json!({"page_number":1,"page_size":20,"total_pages":3,"total_results":47})
    );
    // Newest finished_at first (callbridge must not rely on it).
    let finished: Vec<i128> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| instant(d["finished_at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(finished.windows(2).all(|w| w[0] >= w[1]));

    let q = format!(
        "/webhook_deliveries?filter%5Bstatus%5D%5Beq%5D=failed&filter[finished_at][gte]={}&filter[finished_at][lte]={}&page[number]=2&page[size]=10",
        rfc3339(t0 + 5000), rfc3339(t0 + 44_000));
    let r = get(&api, &q).await;
    assert_eq!(
        r.json["meta"],
        json!({"page_number":2,"page_size":10,"total_pages":4,"total_results":40}),
        "{}",
        r.json
    );
    assert_eq!(r.json["data"].as_array().unwrap().len(), 10);
    let r = get(
        &api,
        "/webhook_deliveries?filter[event_type]=message.received,call.hangup",
    )
    .await;
    assert_eq!(r.json["meta"]["total_results"], 2);
    let r = get(&api, "/webhook_deliveries?page[size]=250&page[number]=9").await;
    assert_eq!(
        (r.status, r.json["data"].as_array().unwrap().len()),
        (200, 0)
    );

    let reqs = api.requests();
    assert_eq!(
        reqs[1].param("filter[status][eq]"),
        Some("failed"),
        "query is decoded"
    );
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
}

/// Stricter than Telnyx on purpose: a typo in callbridge's query fails.
#[tokio::test]
async fn standin_refuses_bad_queries_and_keys() {
    let api = TelnyxApi::start(KEY).await;
    for bad in [
        "page[size]=0",
        "page[size]=251",
        "page[number]=0",
        "page[size]=ten",
        "filter[status][eq]=lost",
        "filter[finished_at][gte]=yesterday",
        "filter[status]=failed",
        "page[limit]=5",
    ] {
        let r = get(&api, &format!("/webhook_deliveries?{bad}")).await;
        assert_telnyx_error(&r, 400, "10015");
    }
    let r = call(&api, "GET", "/webhook_deliveries", Some("wrong"), None).await;
    assert_telnyx_error(&r, 401, "10009");
    let r = call(&api, "GET", "/webhook_deliveries", None, None).await;
    assert_telnyx_error(&r, 401, "10009");
}

#[tokio::test]
async fn standin_faults_then_recovers() {
    let api = TelnyxApi::start(KEY).await;
    api.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    api.fail_next_on("/actions/hangup", 2, Fault::Status(503));
    let r = get(&api, "/webhook_deliveries").await;
    assert_telnyx_error(&r, 429, "10011");
    assert_eq!(r.retry_after.as_deref(), Some("7"));
    for _ in 0..2 {
        let r = call(
            &api,
            "POST",
            "/calls/v3:a/actions/hangup",
            Some(KEY),
            Some(json!({})),
        )
        .await;
        assert_telnyx_error(&r, 503, "10007");
    }
    let r = call(
        &api,
        "POST",
        "/calls/v3:a/actions/hangup",
        Some(KEY),
        Some(json!({})),
    )
    .await;
    assert_eq!((r.status, &r.json), (200, &json!({"data":{"result":"ok"}})));
    // The call ended: Telnyx refuses further commands.
    let r = call(&api, "POST", "/calls/v3:a/actions/answer", Some(KEY), None).await;
    assert_telnyx_error(&r, 422, "90018");
    let r = call(
        &api,
        "POST",
        "/calls/v3:b/actions/reject",
        Some(KEY),
        Some(json!({})),
    )
    .await;
    assert_telnyx_error(&r, 422, "10004");
    let r = call(
        &api,
        "POST",
        "/calls/v3:b/actions/fly",
        Some(KEY),
        Some(json!({})),
    )
    .await;
    assert_telnyx_error(&r, 404, "10005");

    api.fail_all(Fault::Hang);
    let hung =
        tokio::time::timeout(Duration::from_millis(300), get(&api, "/webhook_deliveries")).await;
    assert!(hung.is_err(), "a hung request is not answered");
    api.clear_faults();
    assert_eq!(get(&api, "/webhook_deliveries").await.status, 200);
    assert_eq!(api.wait_requests(9, WAIT).await.len(), 9);
}

#[tokio::test]
async fn standin_plays_telnyx_to_a_down_then_up_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path().to_path_buf(), &[]).await;
    let target = WebhookTarget::of(&server);
    server.stop().await;
    let api = TelnyxApi::start(KEY).await;
    let missed = call_envelope("call.initiated", "v3:missed", now());
    let played = api
        .play(
            &target,
            std::slice::from_ref(&missed),
            &Retries::at_ms(&[0, 100, 200]),
        )
        .await;
    assert_eq!(played[0]["status"], "failed");
    assert_eq!(played[0]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(played[0]["webhook"], missed["data"]);
    assert!(
        played[0]["attempts"][0]["http"].get("response").is_none(),
        "no answer: refused"
    );

    // Back up (on a new port: the same data dir, so the same CA and key).
    let server = Server::start_in(dir.path().to_path_buf(), &[]).await;
    let later = call_envelope("call.hangup", "v3:missed", now());
    let played = api
        .play(&WebhookTarget::of(&server), &[later], &Retries::quick())
        .await;
    assert_eq!(played[0]["status"], "delivered", "{}", played[0]);
    assert_eq!(played[0]["attempts"][0]["http"]["response"]["status"], 200);
    let failed = get(&api, "/webhook_deliveries?filter[status][eq]=failed").await;
    assert_eq!(
        failed.json["data"][0]["webhook"]["id"],
        missed["data"]["id"]
    );
    server.stop().await;
}

#[tokio::test]
async fn standin_echoes_the_webhooks_telnyx_sends() {
    let server = Server::start().await;
    let api = TelnyxApi::start(KEY).await;
    api.enable_echo(WebhookTarget::of(&server), Retries::quick());
    let body = json!({"command_id": "c1", "client_state": "eyJ1c2VySWQiOiJ1MSJ9"});
    let r = call(
        &api,
        "POST",
        "/calls/v3:e/actions/answer",
        Some(KEY),
        Some(body.clone()),
    )
    .await;
    assert_eq!(r.json, json!({"data":{"result":"ok"}}));
    let logged = api.wait_deliveries(1, WAIT).await;
    assert_eq!(logged[0]["webhook"]["event_type"], "call.answered");
    assert_eq!(
        logged[0]["webhook"]["payload"]["client_state"],
        body["client_state"]
    );
    assert_eq!(
        logged[0]["status"], "delivered",
        "callbridge accepted the signature: {}",
        logged[0]
    );

    let r = call(&api, "POST", "/calls", Some(KEY),
        Some(json!({"connection_id":"c","to":"+15550001111","from":"+15550002222","command_id":"d1"}))).await;
    assert_eq!(r.json["data"]["record_type"], "call", "{}", r.json);
    let again = call(&api, "POST", "/calls", Some(KEY),
        Some(json!({"connection_id":"c","to":"+15550001111","from":"+15550002222","command_id":"d1"}))).await;
    assert_eq!(
        again.json, r.json,
        "a repeated command_id is answered alike"
    );
    let logged = api.wait_deliveries(2, WAIT).await;
    assert_eq!(logged[1]["webhook"]["event_type"], "call.initiated");
    assert_eq!(
        logged[1]["webhook"]["payload"]["call_control_id"],
        r.json["data"]["call_control_id"]
    );
    assert_eq!(logged[1]["webhook"]["payload"]["direction"], "outgoing");
    server.stop().await;
}

/// `TELNYX_SDK_VERSION` as pinned in `scripts/telnyx-sdk.sh`.
fn pinned_sdk_version() -> String {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/telnyx-sdk.sh"
    ))
    .unwrap();
    let line = script
        .lines()
        .find(|l| l.starts_with("TELNYX_SDK_VERSION="))
        .expect("pin");
    line.split('"').nth(1).unwrap().to_string()
}

/// Fill the stand-in for the SDK check: 250 failed call deliveries and 3
/// failed messages since `since` (3 pages of 100), and around them what
/// the filters must leave out.
fn fill_for_sdk(api: &TelnyxApi, since: i64) {
    api.add_failed_calls(5, since - 60_000, 1000);
    api.add_failed_calls(250, since + 1000, 1000);
    for i in 0..7 {
        let w = call_webhook("call.answered", &format!("v3:fine-{i}"), since);
        api.add_delivery(w, DeliveryStatus::Delivered, since + 2000);
    }
    for i in 0..3 {
        api.add_failed(message_webhook(since + i), since + 5000 + i);
    }
    api.add_delivery(
        message_webhook(since),
        DeliveryStatus::Delivered,
        since + 10,
    );
    api.add_delivery(
        message_webhook(since - 90_000),
        DeliveryStatus::Delivered,
        since - 80_000,
    );
    api.end_call("v3:sdk-ended");
    api.fail_next_on("/calls/v3:sdk-failing/", 1, Fault::Status(503));
    api.fail_next_on(
        "/calls/v3:sdk-limited/",
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
}

async fn run_sdk_check(python: &std::path::Path, api: &TelnyxApi, since: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/telnyx_sdk_check.py");
    let run = tokio::process::Command::new(python)
        .args([
            script,
            "--base-url",
            &api.base,
            "--key",
            &api.key,
            "--since",
            since,
        ])
        .args([
            "--ended-call",
            "v3:sdk-ended",
            "--failing-call",
            "v3:sdk-failing",
        ])
        .args(["--limited-call", "v3:sdk-limited"])
        .env_remove("TELNYX_BASE_URL")
        .env_remove("TELNYX_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("SDK check in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the official SDK's check failed ({}):\n{stderr}",
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("report ({e}): {stderr}"))
}

#[tokio::test]
async fn standin_is_what_the_official_sdk_expects() {
    let Some(python) = sdk_python("the official Telnyx SDK against the stand-in") else {
        return;
    };
    let api = TelnyxApi::start(KEY).await;
    let since_ms = now() - 3_600_000;
    let since = rfc3339(since_ms);
    fill_for_sdk(&api, since_ms);
    let report = run_sdk_check(&python, &api, &since).await;
    assert_eq!(report["sdk"], pinned_sdk_version().as_str());
    check_listing(&api, &report, since_ms, &since);
    check_errors(&report);
    let reqs = api.requests();
    check_action_requests(&reqs);
    check_dial_request(&reqs, &report);
}

fn check_listing(api: &TelnyxApi, report: &Value, since_ms: i64, since: &str) {
    let mut want: Vec<String> = api
        .deliveries()
        .iter()
        .filter(|d| d["status"] == "failed")
        .filter(|d| {
            instant(d["finished_at"].as_str().unwrap()).unwrap() >= since_ms as i128 * 1_000_000
        })
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let mut got: Vec<String> =
        serde_json::from_value(report["failed_since"]["ids"].clone()).unwrap();
    assert_eq!(got.len(), 253, "every failed delivery since, once");
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        report["failed_since"]["pages"],
        json!([
        {"page_number":1,"total_pages":3,"count":100},
        {"page_number":2,"total_pages":3,"count":100},
        {"page_number":3,"total_pages":3,"count":53}])
    );
    assert_eq!(
        report["messages"]["pages"],
        json!([{"page_number":1,"total_pages":1,"count":5}])
    );

    // The SDK's query strings: the reference for callbridge's recovery.
    let lists: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.path == "/v2/webhook_deliveries"
                && r.authorization.as_deref() == Some(&*format!("Bearer {KEY}"))
        })
        .collect();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let base = [
        pair("filter[finished_at][gte]", since),
        pair("filter[status][eq]", "failed"),
        pair("page[size]", "100"),
    ];
    assert_eq!(
        lists[0].sorted_query(),
        base.to_vec(),
        "page 1 names no page[number]"
    );
    for (n, r) in lists[1..3].iter().enumerate() {
        let mut want = base.to_vec();
        want.push(pair("page[number]", &(n + 2).to_string()));
        want.sort();
        assert_eq!(r.sorted_query(), want);
    }
    assert_eq!(
        lists[3].query,
        vec![pair("filter[event_type]", "message.received")]
    );
    assert!(lists
        .iter()
        .all(|r| r.method == "GET" && r.raw_body.is_empty()));
}

fn check_errors(report: &Value) {
    let e = &report["errors"];
    assert_eq!(
        e["bad_key"],
        json!({"status":401,"code":"10009","title":"Authentication failed"})
    );
    assert_eq!(
        e["ended"],
        json!({"status":422,"code":"90018","title":"Call has already ended"})
    );
    assert_eq!(e["missing"]["code"], "10004");
    assert_eq!(e["unavailable"]["status"], 503);
    assert_eq!(
        e["bad_page_size"],
        json!({"status":400,"code":"10015","title":"Bad Request"})
    );
    assert_eq!(e["rate_limited_then_ok"], "ok");
}

/// Params per action as the SDK check sends them (`tests/telnyx_sdk_check.py`)
/// and the stand-in records them: callbridge's own call actions are held
/// to the same bodies (`actions.rs`).
pub(crate) fn sdk_action_params() -> Vec<(&'static str, Value)> {
    vec![
        ("answer", json!({})),
        ("hangup", json!({})),
        ("reject", json!({"cause":"USER_BUSY"})),
        ("transfer", json!({"to":"+15550001111"})),
        ("bridge", json!({"call_control_id":"v3:sdk-other"})),
        ("send_dtmf", json!({"digits":"1234#"})),
        (
            "speak",
            json!({"payload":"Hello","voice":"female","language":"en-US"}),
        ),
        (
            "playback_start",
            json!({"audio_url":"https://example.com/a.mp3"}),
        ),
        ("playback_stop", json!({})),
        ("record_start", json!({"channels":"single","format":"mp3"})),
        ("record_stop", json!({})),
        ("record_pause", json!({})),
        ("record_resume", json!({})),
        ("enqueue", json!({"queue_name":"support"})),
        ("leave_queue", json!({})),
    ]
}

/// The SDK's bodies per action: callbridge's call actions must send these
/// names (note `bridge`: the other leg is `call_control_id` in the body).
fn check_action_requests(reqs: &[crate::common::telnyx_api::ApiRequest]) {
    let params = sdk_action_params();
    for (action, extra) in params {
        let path = format!("/v2/calls/v3:sdk-{action}/actions/{action}");
        let r = reqs
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no {path}"));
        let mut want = json!({"command_id": format!("sdk-{action}"), "client_state": "c2Rr"});
        want.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        assert_eq!(r.method, "POST");
        assert_eq!(r.body.as_ref(), Some(&want), "{action}");
        assert!(r.query.is_empty());
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
    }
    let limited = reqs
        .iter()
        .filter(|r| r.path == "/v2/calls/v3:sdk-limited/actions/answer")
        .count();
    assert_eq!(limited, 2, "429, then the SDK's retry after Retry-After");
}

fn check_dial_request(reqs: &[crate::common::telnyx_api::ApiRequest], report: &Value) {
    let dial: Vec<_> = reqs.iter().filter(|r| r.path == "/v2/calls").collect();
    assert_eq!(dial.len(), 1);
    assert_eq!(
        dial[0].body,
        Some(json!({
        "connection_id":"conn-sdk","to":"+15559870002","from":"+15551230001",
        "client_state":"eyJ1c2VySWQiOiJ1MSJ9","command_id":"sdk-dial"}))
    );
    assert!(report["dial"]["call_control_id"]
        .as_str()
        .unwrap()
        .starts_with("v3:"));
}

#[tokio::test]
async fn standin_stops_what_it_spawned_when_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = TelnyxApi::start(KEY).await;
    api.fail_all(Fault::Hang);
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
        .await
        .unwrap();
    tcp.write_all(b"GET /v2/webhook_deliveries HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(api.wait_requests(1, WAIT).await.len(), 1);
    drop(api);
    // The hung request's connection is closed, unanswered.
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the connection is closed when the stand-in is dropped"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}
