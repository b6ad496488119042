//! The operator's console (contract §12): `GET /console` and its live data,
//! `GET /api/console/stream`, on the real daemon (real TLS, whichever store
//! the pass runs with), read as a page reads it: the first message, then
//! each later one's keys replacing the held ones.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::process::{clean_command, free_port, signal, wait_exit};
use crate::common::sse::{ConsoleState, Item, Sse};
use crate::common::*;
use serde_json::{json, Value};

const STREAM: &str = "/api/console/stream";
const N1: &str = "+15551230001";
/// Store-backed keys are read every 1.5 s, endpoints every 5 s: a change
/// shows within a few seconds, more on a busy machine.
const LIVE: Duration = Duration::from_secs(15);
const KEYS: [&str; 6] = ["users", "calls", "rates", "endpoints", "recovery", "errors"];

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn open(s: &Server) -> Sse {
    Sse::open(&s.base, s.tls.clone(), STREAM, Some(&bearer()))
        .await
        .unwrap_or_else(|(st, body)| panic!("stream answered {st}: {body}"))
}

/// A stream and its state after the first message.
async fn console(s: &Server) -> (Sse, ConsoleState) {
    let mut sse = open(s).await;
    let first = sse.next_data(WAIT).await;
    let mut state = ConsoleState::default();
    state.apply(&first);
    (sse, state)
}

fn call_of<'a>(state: &'a ConsoleState, id: &str) -> Option<&'a Value> {
    state
        .get("calls")
        .as_array()?
        .iter()
        .find(|c| c["callControlId"] == id)
}

fn user_of<'a>(state: &'a ConsoleState, id: &str) -> Option<&'a Value> {
    state
        .get("users")
        .as_array()?
        .iter()
        .find(|u| u["id"] == id)
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

fn inbound(call: &str, event_type: &str) -> Value {
    envelope(event_type, call_payload(call, "+15557770000", N1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_and_stream_are_404_without_an_admin_token() {
    let s = Server::start_with(&[("CALLBRIDGE_ADMIN_TOKEN", "")]).await;
    assert_json_error(&s.get("/console").await.unwrap(), 404);
    let r = s
        .request("GET", STREAM, &[("authorization", &bearer())], "")
        .await;
    assert_json_error(&r, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_served_with_a_strict_policy_and_no_data() {
    let s = Server::start().await;
    let r = s.get("/console").await.unwrap();
    assert_eq!(r.status, 200, "{}", text(&r));
    let h = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(
        h("content-type").starts_with("text/html"),
        "{}",
        h("content-type")
    );
    assert_eq!(h("cache-control"), "no-store");
    assert_eq!(h("x-content-type-options"), "nosniff");
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'sha256-",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    let page = text(&r);
    assert!(
        page.starts_with("<!doctype html>"),
        "{}",
        &page[..40.min(page.len())]
    );
    assert!(
        page.contains("sessionStorage"),
        "the token is kept in sessionStorage"
    );
    assert!(!page.contains(ADMIN_TOKEN), "the page holds no token");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_needs_the_admin_bearer() {
    let s = Server::start().await;
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some("Basic x")] {
        let r = match auth {
            None => s.request("GET", STREAM, &[], "").await,
            Some(a) => s.request("GET", STREAM, &[("authorization", a)], "").await,
        };
        assert_json_error(&r, 401);
    }
    let r = s
        .request("POST", STREAM, &[("authorization", &bearer())], "")
        .await;
    assert_json_error(&r, 405);
    let sse = open(&s).await;
    let ct = sse.resp.headers.get("content-type").unwrap();
    assert_eq!(ct, "text/event-stream");
    assert_eq!(sse.resp.headers.get("cache-control").unwrap(), "no-store");
    drop(sse);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_message_has_all_six_keys_in_their_shapes() {
    let s = Server::start().await;
    s.put_user(
        "u1",
        json!({"name": "Ann", "role": "supervisor", "phoneNumbers": [N1]}),
    )
    .await;
    s.put_user("u2", json!({})).await;
    let created = s
        .admin(
            "POST",
            "/api/endpoints",
            Some(json!({"url": "https://backend.example.com/hooks", "events": ["call-hangup"]})),
        )
        .await
        .json();
    let (_sse, state) = console(&s).await;
    let mut keys: Vec<&String> = state.keys.keys().collect();
    keys.sort();
    let mut want = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want);

    assert_eq!(
        state.get("users"),
        &json!([
            {"id": "u1", "name": "Ann", "role": "supervisor", "online": false, "connections": 0, "status": "available"},
            {"id": "u2", "name": null, "role": "agent", "online": false, "connections": 0, "status": "available"},
        ])
    );
    assert_eq!(state.get("calls"), &json!([]));
    let rates = state.get("rates");
    assert_eq!(rates["intervalSecs"], 1);
    for k in ["webhooks", "deliveries", "deliveryP50Ms", "deliveryP99Ms"] {
        let a = rates[k]
            .as_array()
            .unwrap_or_else(|| panic!("{k}: {rates}"));
        assert!(a.len() <= 900, "{k}: at most 15 minutes");
    }
    let endpoints = state.get("endpoints").as_array().unwrap().clone();
    assert_eq!(endpoints.len(), 1);
    let e = &endpoints[0];
    assert_eq!(e["id"], created["id"]);
    assert_eq!(e["url"], "https://backend.example.com/hooks");
    assert_eq!(e["disabled"], false);
    assert_eq!(
        e["stats"],
        json!({"delivered": 0, "failed": 0, "pending": 0})
    );
    assert!(e.get("secret").is_none(), "no secret: {e}");
    let secret = created["secret"].as_str().unwrap();
    assert!(!Value::Object(state.keys.clone())
        .to_string()
        .contains(secret));
    assert_eq!(
        state.get("recovery"),
        &json!({"state": "off", "lastRunAt": null, "lastSuccessAt": null, "checkpoint": null, "lastError": null})
    );
    assert!(state.get("errors").is_array());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_shows_its_users_and_timeline_then_leaves_at_hangup() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers": [N1]})).await;
    let (mut sse, mut state) = console(&s).await;
    let call = "v3:console-call";
    assert_eq!(
        s.post_webhook(&inbound(call, "call.initiated"))
            .await
            .status,
        200
    );
    state
        .until(&mut sse, LIVE, "the call, ringing", |st| {
            call_of(st, call).is_some_and(|c| c["state"] == "ringing")
        })
        .await;
    let c = call_of(&state, call).unwrap();
    assert_eq!(c["userIds"], json!(["u1"]));
    assert_eq!(c["callSessionId"], format!("session-{call}"));
    assert_eq!(c["direction"], "inbound");
    assert_eq!(c["to"], N1);
    assert!(c["startedAt"].is_string(), "{c}");
    assert_eq!(c["timeline"].as_array().unwrap().len(), 1);
    assert_eq!(c["timeline"][0]["event"], "call-initiated");
    assert!(c["timeline"][0]["ts"].is_string());

    assert_eq!(
        s.post_webhook(&inbound(call, "call.answered")).await.status,
        200
    );
    state
        .until(&mut sse, LIVE, "the call, answered", |st| {
            call_of(st, call).is_some_and(|c| c["state"] == "answered")
        })
        .await;
    let events: Vec<Value> = call_of(&state, call).unwrap()["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, [json!("call-initiated"), json!("call-answered")]);

    assert_eq!(
        s.post_webhook(&inbound(call, "call.hangup")).await.status,
        200
    );
    state
        .until(&mut sse, LIVE, "the call gone", |st| {
            call_of(st, call).is_none()
        })
        .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_count_this_instances_webhooks_and_deliveries() {
    let s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers": [N1]})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let (mut sse, mut state) = console(&s).await;
    for i in 0..3 {
        let r = s
            .post_webhook(&inbound(&format!("v3:rate-{i}"), "call.initiated"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(next_json(&mut ws).await["event"], "call-initiated");
    }
    state
        .until(
            &mut sse,
            LIVE,
            "3 webhooks and 3 deliveries counted",
            |st| {
                let r = st.get("rates");
                sum(&r["webhooks"]) >= 3 && sum(&r["deliveries"]) >= 3
            },
        )
        .await;
    let r = state.get("rates");
    assert_eq!(sum(&r["webhooks"]), 3, "{r}");
    assert_eq!(sum(&r["deliveries"]), 3, "{r}");
    // The seconds with deliveries have a latency; the others have none.
    let p50: Vec<&Value> = r["deliveryP50Ms"].as_array().unwrap().iter().collect();
    let p99: Vec<&Value> = r["deliveryP99Ms"].as_array().unwrap().iter().collect();
    let with_latency = p50.iter().filter(|v| v.is_number()).count();
    assert!(with_latency >= 1, "{r}");
    for (i, d) in r["deliveries"].as_array().unwrap().iter().enumerate() {
        assert_eq!(d.as_u64() == Some(0), p50[i].is_null(), "second {i}: {r}");
        assert_eq!(p50[i].is_null(), p99[i].is_null());
        if let (Some(a), Some(b)) = (p50[i].as_f64(), p99[i].as_f64()) {
            assert!(a > 0.0 && a <= b && b < 10_000.0, "{a} {b}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_dialer_is_online_and_its_status_shows() {
    let s = Server::start().await;
    s.put_user("u1", json!({"name": "Ann"})).await;
    let (mut sse, mut state) = console(&s).await;
    assert_eq!(user_of(&state, "u1").unwrap()["online"], false);
    let (mut ws, _, _) = s.connect("u1").await;
    send_json(&mut ws, json!({"type": "status", "status": "busy"})).await;
    state
        .until(&mut sse, LIVE, "u1 online and busy", |st| {
            user_of(st, "u1").is_some_and(|u| u["online"] == true && u["status"] == "busy")
        })
        .await;
    assert_eq!(user_of(&state, "u1").unwrap()["connections"], 1);
    let _ = ws.close(None).await;
    drop(ws);
    state
        .until(&mut sse, LIVE, "u1 offline", |st| {
            user_of(st, "u1").is_some_and(|u| u["online"] == false)
        })
        .await;
    s.stop().await;
}

/// Later messages carry only what changed, at most every 500 ms, and a
/// keep-alive comment comes every 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_messages_carry_only_changes_and_a_keep_alive_comes() {
    let s = Server::start().await;
    let (mut sse, _) = console(&s).await;
    let start = Instant::now();
    let mut last: Option<Instant> = None;
    let mut keep_alive = false;
    while start.elapsed() < Duration::from_secs(17) && !keep_alive {
        match sse.next_item(Duration::from_secs(17)).await {
            Ok(Some(Item::Data(v))) => {
                let keys = v.as_object().unwrap();
                assert!(!keys.is_empty());
                // Nothing changes recovery, users, calls or endpoints here.
                for k in ["recovery", "users", "calls", "endpoints"] {
                    assert!(!keys.contains_key(k), "unchanged {k} sent again: {v}");
                }
                let now = Instant::now();
                if let Some(l) = last {
                    // 500 ms apart, less the timer's and the reader's jitter.
                    assert!(now - l >= Duration::from_millis(400), "{:?}", now - l);
                }
                last = Some(now);
            }
            Ok(Some(Item::Comment(c))) => {
                assert_eq!(c, "keep-alive");
                keep_alive = true;
            }
            Ok(None) => panic!("the stream ended"),
            Err(()) => break,
        }
    }
    assert!(keep_alive, "a keep-alive comment within 17 s");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_bounded() {
    let s = Server::start().await;
    let mut open_ones = Vec::new();
    for _ in 0..callbridge::app::MAX_CONSOLE_STREAMS {
        open_ones.push(console(&s).await.0);
    }
    let r = s
        .request("GET", STREAM, &[("authorization", &bearer())], "")
        .await;
    let e = assert_json_error(&r, 503);
    assert_eq!(e["error"], "too-many-streams");
    // A closed one frees its slot.
    drop(open_ones.pop());
    let deadline = Instant::now() + LIVE;
    loop {
        match Sse::open(&s.base, s.tls.clone(), STREAM, Some(&bearer())).await {
            Ok(sse) => {
                open_ones.push(sse);
                break;
            }
            Err((503, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_on_shutdown_without_holding_it_up() {
    let mut s = Server::start().await;
    let (mut a, _) = console(&s).await;
    let (mut b, _) = console(&s).await;
    let t = Instant::now();
    s.stop_in_place().await;
    // The daemon waits up to 10 s for its tasks: the streams must not be
    // what it waits for.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    for sse in [&mut a, &mut b] {
        loop {
            match sse.next_item(WAIT).await {
                Ok(None) => break,
                Ok(Some(_)) => continue,
                Err(()) => panic!("the stream did not end at shutdown"),
            }
        }
    }
}

/// The error panel comes from the log: the daemon started as an operator
/// starts it (the CLI installs the layer), on the embedded store, which it
/// warns about at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_daemons_logged_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin = "console-binary-admin-token-0123";
    let mut child = clean_command()
        .args(["serve", "--dev"])
        .env("CALLBRIDGE_DATA_DIR", dir.path())
        .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CALLBRIDGE_ADMIN_TOKEN", admin)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let ca = dir.path().join("ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let tls = loop {
        if let Ok(pem) = std::fs::read(&ca) {
            let tls = callbridge::tls::client_config(Some(&pem)).unwrap();
            let ready = callbridge::client::request_once(
                &format!("{base}/ready"),
                "GET",
                &[],
                "",
                tls.clone(),
            )
            .await;
            if ready.is_ok_and(|r| r.status == 200) {
                break tls;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let auth = format!("Bearer {admin}");
    let mut sse = Sse::open(&base, tls, STREAM, Some(&auth)).await.unwrap();
    let first = sse.next_data(WAIT).await;
    let errors = first["errors"].as_array().unwrap();
    let warned = errors.iter().find(|e| {
        e["level"] == "warn"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("CALLBRIDGE_MONGODB_URI is not set"))
    });
    assert!(warned.is_some(), "{first}");
    assert!(warned.unwrap()["ts"].is_string());
    let jwt_secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    let text = first.to_string();
    assert!(!text.contains(admin) && !text.contains(jwt_secret.trim()));
    drop(sse);
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child), 0);
}
