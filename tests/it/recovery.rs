//! Recovery of missed webhooks from Telnyx's delivery log (contract §13),
//! against the Telnyx API stand-in (`common::telnyx_api`), on both stores:
//! what Telnyx logged as `failed` arrives once, in `occurred_at` order,
//! with `recovered: true`; duplicates and non-call events are not
//! delivered; the API's faults never stop the daemon.

use std::time::Duration;

use crate::common::telnyx_api::*;
use crate::common::*;
use serde_json::{json, Value};

const KEY: &str = "KEYtelnyx-stand-in-0123456789";

/// A daemon whose recovery reads `api`; no scheduled run but the one at
/// startup (24 h interval), which is waited for.
async fn daemon(api: &TelnyxApi, extra: &[(&str, &str)]) -> Server {
    let mut settings = vec![
        ("CALLBRIDGE_TELNYX_API_KEY", KEY),
        ("CALLBRIDGE_TELNYX_API_URL", api.base.as_str()),
        ("CALLBRIDGE_RECOVERY_INTERVAL", "24h"),
    ];
    settings.extend_from_slice(extra);
    let s = Server::start_with(&settings).await;
    wait_recovery_done(&s).await;
    s
}

/// The recovery state once no run is in progress and one has run.
async fn wait_recovery_done(s: &Server) -> Value {
    for _ in 0..200 {
        let r = s.admin("GET", "/api/status", None).await.json()["recovery"].clone();
        if r["state"] != "running" && !r["lastRunAt"].is_null() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no recovery run finished");
}

async fn recover(s: &Server) -> callbridge::client::HttpResponse {
    s.admin("POST", "/api/recover", Some(json!({}))).await
}

/// A user owning the stand-in's callee number: its calls route to them.
async fn agent(s: &Server) {
    s.put_user("u1", json!({"phoneNumbers": [CALLEE]})).await;
}

fn now() -> i64 {
    callbridge::clock::now_ms()
}

/// The next `n` stored events a dialer gets (`seq` set), in arrival order.
async fn events(ws: &mut callbridge::client::Wss, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = next_json(ws).await;
        if m.get("seq").is_some() {
            got.push(m);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_call_events_arrive_once_in_order_marked_recovered() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let t = now() - 120_000;
    // Logged out of order, as the API may list them; a message event too.
    api.add_failed(
        call_webhook("call.hangup", "v3:lost", t + 20_000),
        t + 80_000,
    );
    api.add_failed(call_webhook("call.initiated", "v3:lost", t), t + 60_000);
    api.add_failed(message_webhook(t + 5_000), t + 65_000);
    api.add_failed(
        call_webhook("call.answered", "v3:lost", t + 10_000),
        t + 70_000,
    );
    api.clear_requests();

    let r = recover(&s).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let report = r.json();
    assert_eq!(
        (
            &report["fetched"],
            &report["ingested"],
            &report["duplicates"],
            &report["skipped"]
        ),
        (&json!(4), &json!(3), &json!(0), &json!(1)),
        "{report}"
    );
    assert_eq!(report["checkpoint"], rfc3339(t + 80_000));
    let got = events(&mut ws, 3).await;
    let names: Vec<&str> = got.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["call-initiated", "call-answered", "call-hangup"]);
    assert!(
        got.iter().all(|e| e["data"]["recovered"] == true),
        "{got:?}"
    );
    assert_eq!(
        got.iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    expect_silence(&mut ws, SILENCE).await;
    // Call state ended right: no active call.
    let view = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(view["activeCalls"], json!([]), "{view}");

    // What was asked: one page, Telnyx's names, the key as bearer.
    let req = &api.requests()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/v2/webhook_deliveries")
    );
    assert_eq!(
        req.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(req.param("filter[status][eq]"), Some("failed"));
    assert_eq!(req.param("page[size]"), Some("100"));
    assert_eq!(req.param("page[number]"), Some("1"));
    assert!(req.param("filter[finished_at][gte]").is_some());

    // A second run finds them stored: duplicates, nothing delivered.
    let again = recover(&s).await.json();
    assert_eq!(
        (&again["ingested"], &again["duplicates"]),
        (&json!(0), &json!(3))
    );
    expect_silence(&mut ws, SILENCE).await;
    let metrics = text(&s.get("/metrics").await.unwrap());
    for line in [
        "callbridge_recovered_events_total{result=\"ingested\"} 3",
        "callbridge_recovered_events_total{result=\"duplicate\"} 3",
        "callbridge_recovered_events_total{result=\"skipped\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert!(metrics.contains("callbridge_recovery_runs_total{outcome=\"ok\"}"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_live_and_logged_failed_is_delivered_once() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let t = now() - 60_000;
    let webhook = call_webhook("call.initiated", "v3:both", t);
    // Telnyx gave up on one attempt path, but a retry got through.
    assert_eq!(
        s.post_webhook(&envelope_of(webhook.clone())).await.status,
        200
    );
    assert_eq!(events(&mut ws, 1).await[0]["data"].get("recovered"), None);
    api.add_failed(webhook, t + 60_000);
    let report = recover(&s).await.json();
    assert_eq!(
        (&report["ingested"], &report["duplicates"]),
        (&json!(0), &json!(1))
    );
    expect_silence(&mut ws, SILENCE).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_deliveries_are_read_over_three_pages() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let logged = api.add_failed_calls(250, now() - 300_000, 100);
    api.clear_requests();
    let report = recover(&s).await.json();
    assert_eq!(
        (&report["fetched"], &report["ingested"]),
        (&json!(250), &json!(250)),
        "{report}"
    );
    let pages: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.param("page[number]").unwrap_or("").to_string())
        .collect();
    assert_eq!(pages, ["1", "2", "3"]);
    // Every one once, in occurred_at order (the log lists newest first).
    let got = events(&mut ws, 250).await;
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = logged.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, want);
    expect_silence(&mut ws, SILENCE).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_recovery_and_the_daemon_keeps_serving() {
    let api = TelnyxApi::start(KEY).await;
    api.fail_all(Fault::Status(401));
    let s = daemon(&api, &[]).await;
    let state = wait_recovery_done(&s).await;
    assert_eq!(state["state"], "unauthorized", "{state}");
    assert!(
        state["lastError"].as_str().unwrap().contains("401"),
        "{state}"
    );
    assert!(state["lastSuccessAt"].is_null());
    let r = recover(&s).await;
    let e = assert_json_error(&r, 503);
    assert_eq!(e["error"], "telnyx-unauthorized");
    // The daemon serves webhooks and sockets all the while.
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let live = call_envelope("call.initiated", "v3:live", now());
    assert_eq!(s.post_webhook(&live).await.status, 200);
    assert_eq!(events(&mut ws, 1).await[0]["event"], "call-initiated");
    let m = text(&s.get("/metrics").await.unwrap());
    assert!(
        m.contains("callbridge_recovery_runs_total{outcome=\"unauthorized\"} 2"),
        "{m}"
    );
    // The key works again (a rotated key would need a restart; here the
    // stand-in changes its mind): a run asked for succeeds.
    api.clear_faults();
    assert_eq!(recover(&s).await.status, 200);
    assert_eq!(wait_recovery_done(&s).await["state"], "idle");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_waited_out_and_a_server_error_retried_later() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    api.add_failed_calls(3, now() - 60_000, 10);
    api.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let started = std::time::Instant::now();
    let report = recover(&s).await.json();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was waited for"
    );
    assert_eq!(report["ingested"], 3, "{report}");

    api.add_failed_calls(2, now() - 30_000, 10);
    api.fail_next(1, Fault::Status(500));
    let r = recover(&s).await;
    assert_eq!(assert_json_error(&r, 503)["error"], "telnyx-unavailable");
    let state = wait_recovery_done(&s).await;
    assert_eq!(state["state"], "failing", "{state}");
    // The checkpoint did not move past what was not read.
    assert_eq!(recover(&s).await.json()["ingested"], 2);
    assert_eq!(wait_recovery_done(&s).await["state"], "idle");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_api_fails_the_run_within_its_bound_and_blocks_nothing() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    api.fail_next(1, Fault::Hang);
    let run = {
        let (base, tls) = (s.base.clone(), s.tls.clone());
        tokio::spawn(async move {
            let url = format!("{base}/api/recover");
            let bearer = format!("Bearer {ADMIN_TOKEN}");
            let started = std::time::Instant::now();
            let r = callbridge::client::request_once(
                &url,
                "POST",
                &[("authorization", &bearer)],
                "",
                tls,
            )
            .await
            .unwrap();
            (r.status, r.json(), started.elapsed())
        })
    };
    // Meanwhile webhooks and sockets work.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.admin("GET", "/api/status", None).await.json()["recovery"]["state"],
        "running"
    );
    let live = call_envelope("call.initiated", "v3:during", now());
    assert_eq!(s.post_webhook(&live).await.status, 200);
    assert_eq!(events(&mut ws, 1).await[0]["event"], "call-initiated");
    send_json(&mut ws, json!({"type": "ping", "data": {}})).await;
    assert_eq!(next_json(&mut ws).await["event"], "pong");
    let (status, body, took) = run.await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("telnyx-unavailable")),
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(14) && took < Duration::from_secs(25),
        "{took:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_recovery_is_off() {
    let s = Server::start().await;
    let status = s.admin("GET", "/api/status", None).await.json();
    assert_eq!(status["recovery"]["state"], "off", "{status}");
    let e = assert_json_error(&recover(&s).await, 409);
    assert_eq!(e["error"], "recovery-off");
    let bad = s
        .admin(
            "POST",
            "/api/recover",
            Some(json!({"since": "last tuesday"})),
        )
        .await;
    assert_json_error(&bad, 400);
    let unauthorized = s.request("POST", "/api/recover", &[], "").await;
    assert_json_error(&unauthorized, 401);
    s.stop().await;
}

// ---- MongoDB: restarts, outages, several instances ----

/// A daemon on a given MongoDB database and data dir (restarts reuse both).
async fn on_db(api: &TelnyxApi, dir: &std::path::Path, uri: &str, db: &str) -> Server {
    let s = Server::start_in(
        dir.to_path_buf(),
        &[
            ("CALLBRIDGE_TELNYX_API_KEY", KEY),
            ("CALLBRIDGE_TELNYX_API_URL", api.base.as_str()),
            ("CALLBRIDGE_RECOVERY_INTERVAL", "24h"),
            ("CALLBRIDGE_MONGODB_URI", uri),
            ("CALLBRIDGE_MONGODB_DB", db),
        ],
    )
    .await;
    wait_recovery_done(&s).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_survives_a_restart() {
    let Some(uri) = mongo_required("recovery's checkpoint across a restart") else {
        return;
    };
    let api = TelnyxApi::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("rec{}", uuid::Uuid::new_v4().simple());
    let s = on_db(&api, dir.path(), &uri, &db).await;
    agent(&s).await;
    let finished = now() - 30 * 60_000;
    api.add_failed_calls(2, finished, 1_000);
    let report = recover(&s).await.json();
    assert_eq!(report["checkpoint"], rfc3339(finished + 1_000), "{report}");
    s.stop().await;

    api.clear_requests();
    let s = on_db(&api, dir.path(), &uri, &db).await;
    let state = wait_recovery_done(&s).await;
    assert_eq!(state["checkpoint"], rfc3339(finished + 1_000), "{state}");
    // The run at startup read from the checkpoint less 10 minutes, and
    // found its two events stored.
    let first = &api.requests()[0];
    let from = first.param("filter[finished_at][gte]").unwrap();
    assert_eq!(
        instant(from),
        instant(&rfc3339(finished + 1_000 - 600_000)),
        "{from}"
    );
    let again = recover(&s).await.json();
    assert_eq!(
        (&again["ingested"], &again["duplicates"]),
        (&json!(0), &json!(2))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answered_503_while_mongodb_was_away_is_recovered() {
    let Some(mut mongo) = crate::mongo_outage::db() else {
        return;
    };
    let api = TelnyxApi::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let uri = mongo.uri();
    let s = Server::start_in(
        dir.path().to_path_buf(),
        &[
            ("CALLBRIDGE_TELNYX_API_KEY", KEY),
            ("CALLBRIDGE_TELNYX_API_URL", api.base.as_str()),
            ("CALLBRIDGE_RECOVERY_INTERVAL", "24h"),
            ("CALLBRIDGE_MONGODB_URI", &uri),
            ("CALLBRIDGE_MONGODB_DB", "away"),
            ("CALLBRIDGE_STORE_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    wait_recovery_done(&s).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    mongo.kill();
    // Telnyx tries for its whole (here: 2 s) window, gets 503s, gives up.
    let lost = call_envelope("call.initiated", "v3:away", now());
    let logged = api
        .play(
            &WebhookTarget::of(&s),
            std::slice::from_ref(&lost),
            &Retries::quick(),
        )
        .await;
    assert_eq!(logged[0]["status"], "failed", "{}", logged[0]);
    mongo.start();
    let mut report = json!(null);
    for _ in 0..100 {
        let r = recover(&s).await;
        if r.status == 200 {
            report = r.json();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(report["ingested"], 1, "{report}");
    let got = events(&mut ws, 1).await;
    assert_eq!(
        (got[0]["id"].clone(), got[0]["data"]["recovered"].clone()),
        (lost["data"]["id"].clone(), json!(true))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_recover_each_event_once() {
    let Some(uri) = mongo_required("recovery with two instances") else {
        return;
    };
    let api = TelnyxApi::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("rec2{}", uuid::Uuid::new_v4().simple());
    let a = on_db(&api, dir.path(), &uri, &db).await;
    let b = on_db(&api, dir.path(), &uri, &db).await;
    agent(&a).await;
    let (mut ws, _, _) = b.connect("u1").await;
    api.add_failed_calls(40, now() - 120_000, 100);
    let (ra, rb) = tokio::join!(recover(&a), recover(&b));
    let mut ingested = 0;
    for r in [&ra, &rb] {
        match r.status {
            200 => ingested += r.json()["ingested"].as_u64().unwrap(),
            409 => assert_eq!(r.json()["error"], "recovery-busy"),
            other => panic!("{other}: {}", text(r)),
        }
    }
    assert_eq!(ingested, 40, "each event ingested by one instance");
    let got = events(&mut ws, 40).await;
    let mut seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.dedup();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    expect_silence(&mut ws, SILENCE).await;
    a.stop().await;
    b.stop().await;
}

/// The "done when": Telnyx keeps sending while the daemon is down
/// for longer than it retries (here a 2 s window), logging what it could
/// not deliver as `failed`; the daemon comes back and its startup run
/// fills the gap: the dialer ends with every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_down_longer_than_telnyx_retries_loses_nothing() {
    let Some(uri) = mongo_required("recovery after a downtime") else {
        return;
    };
    let api = TelnyxApi::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("down{}", uuid::Uuid::new_v4().simple());
    let mut s = on_db(&api, dir.path(), &uri, &db).await;
    agent(&s).await;
    let target = WebhookTarget::of(&s);
    let (mut ws, _, _) = s.connect("u1").await;
    let t = now() - 60_000;
    let mut traffic = Vec::new();
    for (i, call) in ["v3:d1", "v3:d2", "v3:d3"].iter().enumerate() {
        for (j, ty) in ["call.initiated", "call.answered", "call.hangup"]
            .iter()
            .enumerate()
        {
            traffic.push(call_envelope(ty, call, t + (i * 3 + j) as i64 * 1_000));
        }
    }
    let before = api.play(&target, &traffic[..4], &Retries::quick()).await;
    assert!(before.iter().all(|d| d["status"] == "delivered"));
    let seen = events(&mut ws, 4).await;
    s.stop_in_place().await;
    drop(ws);
    let during = api.play(&target, &traffic[4..], &Retries::quick()).await;
    assert!(
        during.iter().all(|d| d["status"] == "failed"),
        "the daemon was down"
    );

    let s = on_db(&api, dir.path(), &uri, &db).await;
    let last = seen.last().unwrap()["seq"].as_u64().unwrap();
    let mut ws = s
        .ws_raw(&format!("token={}&since={last}", s.token("u1")), &[])
        .await;
    let after = events(&mut ws, 5).await;
    let ids: Vec<Value> = seen.iter().chain(&after).map(|e| e["id"].clone()).collect();
    let want: Vec<Value> = traffic.iter().map(|e| e["data"]["id"].clone()).collect();
    assert_eq!(ids, want, "every event once, in order");
    let seqs: Vec<u64> = seen
        .iter()
        .chain(&after)
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    assert!(after.iter().all(|e| e["data"]["recovered"] == true));
    assert_eq!(next_json(&mut ws).await["event"], "resumed");
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
    expect_silence(&mut ws, SILENCE).await;
    let view = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(view["activeCalls"], json!([]), "every call ended: {view}");
    s.stop().await;
}

// ---- the commands, and the key in logs ----

/// `callbridge serve --dev` as a process, its log in `log`.
fn serve(
    data: &std::path::Path,
    port: u16,
    api: &TelnyxApi,
    log: &std::path::Path,
) -> std::process::Child {
    crate::common::process::clean_command()
        .args(["serve", "--dev"])
        .env("CALLBRIDGE_DATA_DIR", data)
        .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CALLBRIDGE_TELNYX_API_KEY", KEY)
        .env("CALLBRIDGE_TELNYX_API_URL", &api.base)
        .env("CALLBRIDGE_RECOVERY_INTERVAL", "24h")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// A `callbridge` command with the dev daemon's settings, run to its end.
async fn command(
    data: &std::path::Path,
    port: u16,
    api: &TelnyxApi,
    key: &str,
    args: &[&str],
) -> std::process::Output {
    let mut c = crate::common::process::clean_command();
    c.args(args)
        .env("CALLBRIDGE_DATA_DIR", data)
        .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CALLBRIDGE_TELNYX_API_KEY", key)
        .env("CALLBRIDGE_TELNYX_API_URL", &api.base);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_and_check_config_commands_and_the_key_never_logged() {
    use crate::common::process::{free_port, signal, wait_exit};
    let api = TelnyxApi::start(KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("serve.log"));
    // The startup run meets a refused key: the error is logged.
    api.fail_next(1, Fault::Status(401));
    let port = free_port();
    let mut child = serve(&data, port, &api, &log);
    api.wait_requests(1, WAIT).await;
    api.add_failed(
        call_webhook("call.initiated", "v3:cli", now() - 60_000),
        now() - 1_000,
    );

    let ok = command(
        &data,
        port,
        &api,
        KEY,
        &["recover", "--since", "2026-01-01T00:00:00Z"],
    )
    .await;
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&report["fetched"], &report["ingested"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(
        api.requests()
            .last()
            .unwrap()
            .param("filter[finished_at][gte]"),
        Some("2026-01-01T00:00:00Z")
    );
    let bad = command(&data, port, &api, KEY, &["recover", "--since", "soon"]).await;
    assert_eq!(bad.status.code(), Some(2));

    let checked = command(&data, port, &api, KEY, &["check-config", "--dev"]).await;
    let out = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{out}");
    assert!(
        out.contains("ok: Telnyx API key works") && out.contains("ok: recovery on"),
        "{out}"
    );
    let wrong = command(
        &data,
        port,
        &api,
        "KEYwrong-0000000000",
        &["check-config", "--dev"],
    )
    .await;
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{err}");
    assert!(
        err.contains("CALLBRIDGE_TELNYX_API_KEY") && !err.contains("KEYwrong"),
        "{err}"
    );

    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child), 0);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("recovery stopped until the configuration changes"),
        "{logged}"
    );
    assert!(logged.contains("recovery run done"), "{logged}");
    assert!(!logged.contains(KEY), "the API key reached the log");
}

/// A backlog larger than a run holds at once (5,000) is read in windows of
/// `finished_at`, oldest first, and still ingested in exact `occurred_at`
/// order, each event once. On the embedded store only: the windowing is
/// the engine's, and 6,000 MongoDB transactions on SecantusDB would take
/// minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_batch_is_read_in_windows_in_order() {
    if mongo_uri().is_some() {
        return;
    }
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    agent(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let start = now() - 6 * 3_600_000;
    // 6,000 over six hours, finished 3.6 s apart, occurred a second before.
    let logged = api.add_failed_calls(6_000, start, 3_600);
    api.clear_requests();
    // Read as they come, as a dialer does: a socket nobody reads during
    // the run is a slow consumer (4013) once its queue and buffers fill.
    let reader = tokio::spawn(async move { events(&mut ws, 6_000).await });
    let report = s
        .admin(
            "POST",
            "/api/recover",
            Some(json!({"since": rfc3339(start - 60_000)})),
        )
        .await
        .json();
    assert_eq!(
        (&report["fetched"], &report["ingested"]),
        (&json!(6000), &json!(6000)),
        "{report}"
    );
    let windowed = api
        .requests()
        .iter()
        .filter(|r| r.param("filter[finished_at][lte]").is_some())
        .count();
    assert!(windowed > 1, "read window by window");
    let got = reader.await.expect("the reader");
    let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = logged.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, want, "every event once, in occurred_at order");
    s.stop().await;
}
