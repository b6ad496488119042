//! Acting on calls from the dialer (contract §14) against the Telnyx API
//! stand-in, on both stores: who may do what, what reaches Telnyx (path,
//! key, `command_id`, the official SDK's body), Telnyx's answers and
//! faults, dial, and signals and broadcasts to a call.

use std::time::Duration;

use crate::common::telnyx_api::*;
use crate::common::*;
use serde_json::{json, Value};

const KEY: &str = "KEYactions-stand-in-0123456789";

async fn daemon(api: &TelnyxApi, extra: &[(&str, &str)]) -> Server {
    let mut settings = vec![
        ("CALLBRIDGE_TELNYX_API_KEY", KEY),
        ("CALLBRIDGE_TELNYX_API_URL", api.base.as_str()),
        ("CALLBRIDGE_RECOVERY", "off"),
        ("CALLBRIDGE_TELNYX_CONNECTION_ID", "conn-cb"),
    ];
    settings.extend_from_slice(extra);
    Server::start_with(&settings).await
}

/// `u1` owns the callee number: calls to it are bound to u1.
async fn users(s: &Server) {
    s.put_user("u1", json!({"phoneNumbers": [CALLEE]})).await;
    s.put_user("u2", json!({"phoneNumbers": ["+15550009999"]}))
        .await;
    s.put_user("boss", json!({"role": "supervisor"})).await;
}

/// A call ringing for u1, through a signed webhook.
async fn ring(s: &Server, call: &str) {
    let ev = call_envelope("call.initiated", call, callbridge::clock::now_ms());
    assert_eq!(s.post_webhook(&ev).await.status, 200);
}

async fn act(
    ws: &mut callbridge::client::Wss,
    action: &str,
    call: Option<&str>,
    params: Value,
    r: &str,
) {
    let mut m = json!({"type":"call-action","action":action,"params":params,"ref":r});
    if let Some(c) = call {
        m["call"] = json!(c);
    }
    send_json(ws, m).await;
}

/// The next answer to a request (`call-action-result` or `error`), skipping
/// stored events.
async fn answer(ws: &mut callbridge::client::Wss) -> Value {
    loop {
        let m = next_json(ws).await;
        if m["event"] == "call-action-result" || m["event"] == "error" {
            return m;
        }
    }
}

/// [`answer`], waiting for quiet stretches of `each` in a row.
async fn answer_after(ws: &mut callbridge::client::Wss, each: Duration) -> Value {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(each, ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                if m["event"] == "call-action-result" || m["event"] == "error" {
                    return m;
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("socket ended: {other:?}"),
        }
    }
}

fn posts(api: &TelnyxApi) -> Vec<crate::common::telnyx_api::ApiRequest> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_reaches_telnyx_as_the_sdk_sends_it() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    users(&s).await;
    let (mut ws, _, _) = s.connect("u1").await;
    for (action, params) in crate::telnyx_standin::sdk_action_params() {
        let call = format!("v3:cb-{action}");
        ring(&s, &call).await;
        // client_state and command_id of a client are dropped.
        let mut sent = params.clone();
        sent["client_state"] = json!("Zm9yZ2Vk");
        sent["command_id"] = json!("mine");
        act(&mut ws, action, Some(&call), sent, &format!("r-{action}")).await;
        let a = answer(&mut ws).await;
        assert_eq!(a["event"], "call-action-result", "{action}: {a}");
        assert_eq!(a["data"]["ref"], format!("r-{action}"));
        assert_eq!(
            (a["data"]["action"].as_str(), a["data"]["call"].as_str()),
            (Some(action), Some(call.as_str()))
        );
        assert_eq!(a["data"]["result"], json!({"result": "ok"}));
        let req = posts(&api).pop().unwrap();
        assert_eq!(req.path, format!("/v2/calls/{call}/actions/{action}"));
        assert_eq!(
            req.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        let mut body = req.body.clone().unwrap();
        let command_id = body.as_object_mut().unwrap().remove("command_id").unwrap();
        assert_eq!(command_id.as_str().unwrap().len(), 36, "a UUID");
        // The official SDK's body for these params, less its client_state.
        assert_eq!(body, params, "{action}");
    }
    let m = text(&s.get("/metrics").await.unwrap());
    assert!(
        m.contains("callbridge_call_actions_total{action=\"answer\",outcome=\"ok\"} 1"),
        "{m}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_actions_never_reach_telnyx() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[("CALLBRIDGE_CALL_ACTIONS", "answer,hangup,dial")]).await;
    users(&s).await;
    ring(&s, "v3:mine").await;
    let (mut u2, _, _) = s.connect("u2").await;
    act(&mut u2, "hangup", Some("v3:mine"), json!({}), "a").await;
    let e = answer(&mut u2).await;
    assert_eq!(
        (e["data"]["code"].as_str(), e["data"]["ref"].as_str()),
        (Some("not-on-call"), Some("a"))
    );
    act(
        &mut u2,
        "transfer",
        Some("v3:mine"),
        json!({"to": "+15550001111"}),
        "b",
    )
    .await;
    assert_eq!(answer(&mut u2).await["data"]["code"], "action-not-allowed");
    act(&mut u2, "answer", None, json!({}), "c").await;
    assert_eq!(answer(&mut u2).await["data"]["code"], "bad-request");
    act(&mut u2, "answer", Some("v3:mine"), json!(["x"]), "d").await;
    assert_eq!(answer(&mut u2).await["data"]["code"], "bad-request");
    act(&mut u2, "dial", None, json!({}), "e").await;
    assert_eq!(
        answer(&mut u2).await["data"]["code"],
        "bad-request",
        "dial needs `to`"
    );
    act(
        &mut u2,
        "dial",
        None,
        json!({"to": "+15551110000", "from": CALLEE}),
        "f",
    )
    .await;
    assert_eq!(
        answer(&mut u2).await["data"]["code"],
        "bad-request",
        "not u2's number"
    );
    assert!(posts(&api).is_empty(), "{:?}", posts(&api));
    assert_alive(&mut u2).await;
    s.stop().await;

    // No connection id: dial is not configured; no key: actions are off.
    let s = Server::start_with(&[
        ("CALLBRIDGE_TELNYX_API_KEY", KEY),
        ("CALLBRIDGE_TELNYX_API_URL", api.base.as_str()),
        ("CALLBRIDGE_RECOVERY", "off"),
    ])
    .await;
    users(&s).await;
    let (mut u1, _, _) = s.connect("u1").await;
    act(&mut u1, "dial", None, json!({"to": "+15551110000"}), "g").await;
    assert_eq!(answer(&mut u1).await["data"]["code"], "dial-not-configured");
    s.stop().await;
    let s = Server::start().await;
    users(&s).await;
    ring(&s, "v3:nokey").await;
    let (mut u1, _, _) = s.connect("u1").await;
    act(&mut u1, "answer", Some("v3:nokey"), json!({}), "h").await;
    assert_eq!(answer(&mut u1).await["data"]["code"], "actions-disabled");
    assert!(posts(&api).is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_refusals_and_failures_come_back_and_the_socket_keeps_working() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    users(&s).await;
    ring(&s, "v3:f").await;
    let (mut ws, _, _) = s.connect("u1").await;
    api.end_call("v3:f");
    act(&mut ws, "answer", Some("v3:f"), json!({}), "ended").await;
    let e = answer(&mut ws).await;
    assert_eq!(e["data"]["code"], "telnyx-rejected", "{e}");
    assert_eq!(e["data"]["telnyx"]["status"], 422);
    assert_eq!(e["data"]["telnyx"]["errors"][0]["code"], "90018");

    ring(&s, "v3:g").await;
    api.fail_next(1, Fault::Status(500));
    act(&mut ws, "answer", Some("v3:g"), json!({}), "five-hundred").await;
    assert_eq!(answer(&mut ws).await["data"]["code"], "telnyx-unavailable");

    api.fail_next(1, Fault::Hang);
    let started = std::time::Instant::now();
    act(&mut ws, "hangup", Some("v3:g"), json!({}), "hang").await;
    // Meanwhile the socket answers pings and delivers events.
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    assert_eq!(next_json(&mut ws).await["event"], "pong");
    ring(&s, "v3:h").await;
    assert_eq!(next_json(&mut ws).await["event"], "call-initiated");
    // Past the harness's usual wait: Telnyx's bound is 15 s.
    let e = tokio::time::timeout(Duration::from_secs(25), answer_after(&mut ws, WAIT))
        .await
        .expect("an answer within the bound");
    assert_eq!(
        (e["data"]["code"].as_str(), e["data"]["ref"].as_str()),
        (Some("telnyx-unavailable"), Some("hang"))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(14) && took < Duration::from_secs(22),
        "{took:?}"
    );
    assert_alive(&mut ws).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ref_is_one_command_and_a_supervisor_may_act_on_any_call() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[]).await;
    users(&s).await;
    ring(&s, "v3:r").await;
    let (mut ws, _, _) = s.connect("u1").await;
    for r in ["same", "same", "other"] {
        act(
            &mut ws,
            "send_dtmf",
            Some("v3:r"),
            json!({"digits": "1"}),
            r,
        )
        .await;
        assert_eq!(answer(&mut ws).await["event"], "call-action-result");
    }
    let ids: Vec<Value> = posts(&api)
        .iter()
        .map(|r| r.body.clone().unwrap()["command_id"].clone())
        .collect();
    assert_eq!(ids[0], ids[1], "a retry of a ref is the same command");
    assert_ne!(ids[0], ids[2]);
    let (mut boss, _, _) = s.connect("boss").await;
    act(
        &mut boss,
        "send_dtmf",
        Some("v3:r"),
        json!({"digits": "1"}),
        "same",
    )
    .await;
    assert_eq!(answer(&mut boss).await["event"], "call-action-result");
    let boss_id = posts(&api).last().unwrap().body.clone().unwrap()["command_id"].clone();
    assert_ne!(boss_id, ids[0], "another user's ref is another command");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_call_is_bound_to_the_dialler_and_nobody_else() {
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[("CALLBRIDGE_TELNYX_FROM", "+15550002222")]).await;
    users(&s).await;
    let (mut u1, _, _) = s.connect("u1").await;
    let (mut u2, _, _) = s.connect("u2").await;
    act(
        &mut u1,
        "dial",
        None,
        json!({"to": "+15557778888", "timeout_secs": 30}),
        "d1",
    )
    .await;
    let a = answer(&mut u1).await;
    assert_eq!(a["event"], "call-action-result", "{a}");
    let call = a["data"]["result"]["call_control_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(a["data"]["call"], call.as_str());
    let req = posts(&api).pop().unwrap();
    assert_eq!(req.path, "/v2/calls");
    let body = req.body.unwrap();
    assert_eq!(
        (
            body["connection_id"].as_str(),
            body["from"].as_str(),
            body["to"].as_str()
        ),
        (Some("conn-cb"), Some("+15550002222"), Some("+15557778888"))
    );
    assert_eq!(body["timeout_secs"], 30);
    let state = base64_json(body["client_state"].as_str().unwrap());
    assert_eq!(state, json!({"userId": "u1"}));
    // Its webhook routes to u1 by the binding (no client_state, numbers
    // nobody owns).
    let mut p = call_payload(&call, "+15550002222", "+15557778888");
    p["direction"] = json!("outgoing");
    p["call_session_id"] = a["data"]["result"]["call_session_id"].clone();
    assert_eq!(
        s.post_webhook(&envelope("call.initiated", p)).await.status,
        200
    );
    let ev = next_json(&mut u1).await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"]["callControlId"].as_str()),
        (Some("call-initiated"), Some(call.as_str()))
    );
    expect_silence(&mut u2, SILENCE).await;
    // From one of the user's own numbers works too; another does not.
    act(
        &mut u1,
        "dial",
        None,
        json!({"to": "+15557778888", "from": CALLEE}),
        "d2",
    )
    .await;
    assert_eq!(answer(&mut u1).await["event"], "call-action-result");
    s.stop().await;
}

fn base64_json(s: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_call_and_the_senders_other_connections_only() {
    let s = Server::start().await;
    users(&s).await;
    ring(&s, "v3:s").await;
    let (mut u1a, _, _) = s.connect("u1").await;
    let (mut u1b, _, _) = s.connect("u1").await;
    let (mut boss, _, _) = s.connect("boss").await;
    let (mut u2, _, _) = s.connect("u2").await;
    // The supervisor (not bound) types a note on u1's call.
    send_json(
        &mut boss,
        json!({"type":"signal","call":"v3:s","name":"typing","data":{"on":true}}),
    )
    .await;
    for ws in [&mut u1a, &mut u1b] {
        let m = next_json(ws).await;
        assert_eq!(m["event"], "signal", "{m}");
        assert_eq!(
            m["data"],
            json!({"from":"boss","call":"v3:s","name":"typing","data":{"on":true}})
        );
        assert!(m.get("seq").is_none() && m.get("id").is_none());
    }
    expect_silence(&mut boss, SILENCE).await;
    expect_silence(&mut u2, Duration::from_millis(50)).await;
    // To a user: the recipient, and the sender's other connection.
    send_json(
        &mut u1a,
        json!({"type":"signal","to":"u2","name":"typing","data":1}),
    )
    .await;
    assert_eq!(next_json(&mut u2).await["data"]["to"], "u2");
    assert_eq!(next_json(&mut u1b).await["data"]["from"], "u1");
    expect_silence(&mut u1a, SILENCE).await;
    // Refusals: the same rules as messages.
    for (m, code) in [
        (
            json!({"type":"signal","to":"nobody","name":"typing","ref":"x"}),
            "unknown-recipient",
        ),
        (
            json!({"type":"signal","call":"v3:s","name":"typing"}),
            "not-on-call",
        ),
        (
            json!({"type":"signal","to":"u1","name":"bad name"}),
            "bad-request",
        ),
        (
            json!({"type":"signal","to":"u1","name":"t","data":"x".repeat(1100)}),
            "too-large",
        ),
    ] {
        send_json(&mut u2, m).await;
        let e = next_json(&mut u2).await;
        assert_eq!(e["data"]["code"], code, "{e}");
    }
    // Not stored: a resume replays the call event only.
    send_json(&mut u1b, json!({"type":"resume","since":0})).await;
    let replay = next_json(&mut u1b).await;
    assert_eq!(replay["event"], "call-initiated");
    assert_eq!(next_json(&mut u1b).await["event"], "resumed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_to_a_call_leaves_out_except_user_ids() {
    let s = Server::start().await;
    users(&s).await;
    let mut p = call_payload("v3:b", CALLER, CALLEE);
    p["client_state"] = json!(client_state_for("u1"));
    assert_eq!(
        s.post_webhook(&envelope("call.initiated", p)).await.status,
        200
    );
    let (mut u1, _, _) = s.connect("u1").await;
    let (mut u2, _, _) = s.connect("u2").await;
    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"call":"v3:b","event":"note","data":{"n":1}})),
        )
        .await;
    assert_eq!(r.json()["delivered"], 1, "{}", text(&r));
    assert_eq!(next_json(&mut u1).await["event"], "note");
    expect_silence(&mut u2, SILENCE).await;
    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"call":"v3:b","exceptUserIds":["u1"],"event":"note"})),
        )
        .await;
    assert_eq!(r.json()["delivered"], 0);
    expect_silence(&mut u1, SILENCE).await;
    let r = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"all":true,"exceptUserIds":["u1"],"event":"note"})),
        )
        .await;
    assert_eq!(r.json()["delivered"], 1);
    assert_eq!(next_json(&mut u2).await["event"], "note");
    let unknown = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"call":"v3:none","event":"note"})),
        )
        .await;
    assert_json_error(&unknown, 404);
    let both = s
        .admin(
            "POST",
            "/api/broadcast",
            Some(json!({"call":"v3:b","all":true,"event":"note"})),
        )
        .await;
    assert_json_error(&both, 400);
    s.stop().await;
}

/// `callbridge listen --action answer --call ID` acts once connected and
/// prints the result; `--action dial --params` dials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_acts_on_a_call_from_the_terminal() {
    use crate::cli::{lines, wait_line};
    use std::process::Stdio;
    let api = TelnyxApi::start(KEY).await;
    let s = daemon(&api, &[("CALLBRIDGE_TELNYX_FROM", "+15550002222")]).await;
    users(&s).await;
    ring(&s, "v3:cli").await;
    let ca = s.dir.join("ca.pem");
    for (args, want) in [
        (
            vec!["--action", "answer", "--call", "v3:cli"],
            "/v2/calls/v3:cli/actions/answer",
        ),
        (
            vec!["--action", "dial", "--params", r#"{"to":"+15557770000"}"#],
            "/v2/calls",
        ),
    ] {
        let mut child = crate::common::process::clean_command()
            .args(["listen", "--url", &s.ws_url, "--token", &s.token("u1")])
            .arg("--ca")
            .arg(&ca)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = lines(child.stdout.take().unwrap());
        let line = tokio::task::spawn_blocking(move || {
            wait_line(&out, |l| l.contains("\"call-action-result\""))
        })
        .await
        .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["data"]["ref"], "action-1", "{v}");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(posts(&api).last().unwrap().path, want);
    }
    let usage = crate::common::process::clean_command()
        .args([
            "listen", "--url", &s.ws_url, "--token", "t", "--action", "answer",
        ])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "answer needs --call");
    s.stop().await;
}

/// `serve --dev` without a key: the built-in stand-in answers a call
/// action on a simulated call and posts the webhook Telnyx would send,
/// which reaches the dialer.
#[test]
fn dev_mode_answers_actions_offline() {
    use crate::cli::{lines, wait_line};
    use crate::common::process::{clean_command, free_port, signal, wait_exit};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = |c: &mut std::process::Command| {
        c.env("CALLBRIDGE_DATA_DIR", dir.path())
            .env("CALLBRIDGE_LISTEN", &listen);
    };
    let mut serve = clean_command();
    env(&mut serve);
    let mut serve = serve
        .args(["serve", "--dev"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(serve.stdout.take().unwrap());
    let err = lines(serve.stderr.take().unwrap());
    let banner = wait_line(&out, |l| l.contains("callbridge listen "));
    wait_line(&err, |l| l.contains("built-in Telnyx stand-in"));
    wait_line(&err, |l| l.contains("listening"));
    let token = banner.split_whitespace().last().unwrap().to_string();
    let mut sim = clean_command();
    env(&mut sim);
    let sim = sim
        .args([
            "simulate",
            "call.initiated",
            "--to",
            "+15550000001",
            "--call",
            "v3:offline",
        ])
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stdout)
    );
    let ca = dir.path().join("ca.pem");
    let mut dialer = clean_command()
        .args([
            "listen",
            "--url",
            &format!("wss://{listen}/ws"),
            "--token",
            &token,
        ])
        .arg("--ca")
        .arg(&ca)
        .args(["--action", "answer", "--call", "v3:offline"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = lines(dialer.stdout.take().unwrap());
    let result = wait_line(&got, |l| l.contains("call-action-result"));
    assert!(result.contains(r#""result":{"result":"ok"}"#), "{result}");
    let answered = wait_line(&got, |l| l.contains(r#""event":"call-answered""#));
    assert!(answered.contains("v3:offline"), "{answered}");
    let _ = dialer.kill();
    let _ = dialer.wait();
    signal(&serve, "-TERM");
    assert_eq!(wait_exit(&mut serve), 0);
}
