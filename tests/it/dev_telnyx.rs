//! The `--dev` built-in Telnyx stand-in (contract §14), driven directly:
//! its answers to commands, and the signed webhooks it then posts to a real
//! daemon reaching the dialer the simulated call was routed to.

use std::time::Duration;

use crate::common::*;
use base64::Engine as _;
use callbridge::client::Wss;
use callbridge::dev::telnyx::DevTelnyx;
use callbridge::dev::{DEMO_PHONE, DEMO_USER, DEV_CALLER};
use callbridge::telnyx::api::calls::CallControl;
use callbridge::telnyx::api::TelnyxError;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longer than the stand-in's 100–300 ms before a command's first webhook.
const QUIET: Duration = Duration::from_millis(700);

struct Setup {
    server: Server,
    ws: Wss,
    standin: DevTelnyx,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// A daemon with the demo user (owning the demo number) connected, and a
/// stand-in posting to that daemon with its data dir's CA and key.
async fn setup() -> Setup {
    let server = Server::start().await;
    server
        .put_user(DEMO_USER, json!({"phoneNumbers": [DEMO_PHONE]}))
        .await;
    let (ws, _, _) = server.connect(DEMO_USER).await;
    let (files, _) = dev_files(&server.dir);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let standin =
        DevTelnyx::for_daemon(server.addr, &files, shutdown.clone(), tracker.clone()).unwrap();
    assert_eq!(
        standin.webhook_url(),
        format!("{}/webhooks/telnyx", server.base)
    );
    Setup {
        server,
        ws,
        standin,
        shutdown,
        tracker,
    }
}

/// A call as `callbridge simulate call.initiated --to <demo number>` makes
/// it, delivered to the demo user.
async fn simulated_call(s: &mut Setup) -> String {
    let call = format!("v3:sim-{}", uuid::Uuid::new_v4().simple());
    let r = s
        .server
        .post_webhook(&envelope(
            "call.initiated",
            call_payload(&call, DEV_CALLER, DEMO_PHONE),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let ev = next_json(&mut s.ws).await;
    assert_eq!(ev["event"], "call-initiated", "{ev}");
    call
}

/// The next call event: `event` for `call`, routed to the demo user.
async fn expect(ws: &mut Wss, event: &str, call: &str) -> Value {
    let ev = next_json(ws).await;
    assert_eq!(ev["event"], event, "{ev}");
    assert_eq!(ev["data"]["callControlId"], call, "{ev}");
    assert_eq!(ev["data"]["userIds"], json!([DEMO_USER]), "{ev}");
    ev
}

async fn act(s: &Setup, call: &str, action: &str, body: Value) -> Result<Value, TelnyxError> {
    s.standin.action(call, action, &body).await
}

fn rejected(r: Result<Value, TelnyxError>) -> (u16, Value) {
    match r {
        Err(TelnyxError::Rejected { status, errors, .. }) => (status, errors),
        other => panic!("expected a rejection: {other:?}"),
    }
}

async fn stop(s: Setup) {
    s.shutdown.cancel();
    s.tracker.close();
    tokio::time::timeout(Duration::from_secs(2), s.tracker.wait())
        .await
        .expect("the stand-in's tasks stop on shutdown");
    s.server.stop().await;
}

#[tokio::test]
async fn answer_and_hangup_reach_the_dialer_then_the_call_has_ended() {
    let mut s = setup().await;
    let call = simulated_call(&mut s).await;

    let r = act(&s, &call, "answer", json!({"command_id": "c-1"})).await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    let ev = expect(&mut s.ws, "call-answered", &call).await;
    assert_eq!(ev["data"]["callLegId"], format!("leg-{call}"));
    assert_eq!(ev["data"]["callSessionId"], format!("session-{call}"));
    assert_eq!(ev["data"]["state"], "answered");

    let r = act(&s, &call, "hangup", json!({"command_id": "c-2"})).await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    let ev = expect(&mut s.ws, "call-hangup", &call).await;
    assert_eq!(ev["data"]["hangupCause"], "normal_clearing");
    assert_eq!(ev["data"]["hangupSource"], "callee");

    let r = act(&s, &call, "send_dtmf", json!({"digits": "1"})).await;
    let (status, errors) = rejected(r);
    assert_eq!(status, 422);
    assert_eq!(errors[0]["code"], "90018");
    assert_eq!(errors[0]["title"], "Call has already ended");
    // A repeated command is ignored as Telnyx ignores it: answered, no webhook.
    let r = s
        .standin
        .action(&call, "hangup", &json!({"command_id": "c-2"}))
        .await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    expect_silence(&mut s.ws, QUIET).await;
    let view = s.server.admin("GET", "/api/users/demo", None).await.json();
    assert_eq!(view["activeCalls"], json!([]), "{view}");
    stop(s).await;
}

#[tokio::test]
async fn a_dialled_call_is_initiated_then_answered() {
    let mut s = setup().await;
    let state = base64::engine::general_purpose::STANDARD.encode(r#"{"userId":"demo"}"#);
    let body = json!({"to": "+15557770000", "from": DEMO_PHONE, "client_state": state});
    let data = s.standin.dial(&body).await.unwrap();
    assert_eq!(data["record_type"], "call");
    assert_eq!(data["is_alive"], false);
    let call = data["call_control_id"].as_str().unwrap().to_string();
    assert!(data["call_leg_id"].is_string() && data["call_session_id"].is_string());

    let ev = expect(&mut s.ws, "call-initiated", &call).await;
    assert_eq!(ev["data"]["direction"], "outbound");
    assert_eq!(ev["data"]["from"], DEMO_PHONE);
    assert_eq!(ev["data"]["to"], "+15557770000");
    assert_eq!(ev["data"]["clientState"], json!({"userId": "demo"}));
    assert_eq!(ev["data"]["callSessionId"], data["call_session_id"]);
    let ev = expect(&mut s.ws, "call-answered", &call).await;
    assert_eq!(ev["data"]["clientState"], json!({"userId": "demo"}));
    stop(s).await;
}

#[tokio::test]
async fn speak_posts_started_then_ended() {
    let mut s = setup().await;
    let call = simulated_call(&mut s).await;
    let body = json!({"payload": "Hello", "voice": "female", "language": "en-US"});
    let r = s.standin.action(&call, "speak", &body).await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    expect(&mut s.ws, "call-speak-started", &call).await;
    let ev = expect(&mut s.ws, "call-speak-ended", &call).await;
    assert_eq!(ev["data"]["raw"]["status"], "completed");
    stop(s).await;
}

#[tokio::test]
async fn a_missing_parameter_is_refused_and_posts_nothing() {
    let mut s = setup().await;
    let call = simulated_call(&mut s).await;
    let (status, errors) = rejected(s.standin.action(&call, "send_dtmf", &json!({})).await);
    assert_eq!(status, 422);
    assert_eq!(errors[0]["code"], "10004");
    assert_eq!(errors[0]["source"]["pointer"], "/digits");
    let (status, _) = rejected(s.standin.action(&call, "transfer", &json!({})).await);
    assert_eq!(status, 422);
    let (status, _) = rejected(s.standin.dial(&json!({"from": DEMO_PHONE})).await);
    assert_eq!(status, 422);
    expect_silence(&mut s.ws, QUIET).await;
    // The call is still live: a valid command works.
    let r = act(&s, &call, "send_dtmf", json!({"digits": "12"})).await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    expect_silence(&mut s.ws, QUIET).await;
    stop(s).await;
}

#[tokio::test]
async fn a_transfer_brings_a_new_leg_of_the_same_call() {
    let mut s = setup().await;
    let call = simulated_call(&mut s).await;
    let r = act(&s, &call, "transfer", json!({"to": "+15557770000"})).await;
    assert_eq!(r.unwrap(), json!({"result": "ok"}));
    let ev = next_json(&mut s.ws).await;
    assert_eq!(ev["event"], "call-initiated", "{ev}");
    assert_eq!(ev["data"]["direction"], "outbound");
    assert_eq!(ev["data"]["callSessionId"], format!("session-{call}"));
    assert_eq!(
        ev["data"]["userIds"],
        json!([DEMO_USER]),
        "bound by session"
    );
    let leg = ev["data"]["callControlId"].as_str().unwrap().to_string();
    expect(&mut s.ws, "call-answered", &leg).await;
    expect(&mut s.ws, "call-bridged", &call).await;
    expect(&mut s.ws, "call-bridged", &leg).await;
    // Hanging up the call hangs up both legs.
    s.standin.action(&call, "hangup", &json!({})).await.unwrap();
    expect(&mut s.ws, "call-hangup", &call).await;
    expect(&mut s.ws, "call-hangup", &leg).await;
    stop(s).await;
}

#[tokio::test]
async fn shutdown_stops_webhooks_under_way() {
    let mut s = setup().await;
    let call = simulated_call(&mut s).await;
    let body = json!({"audio_url": "https://example.com/a.mp3"});
    s.standin
        .action(&call, "playback_start", &body)
        .await
        .unwrap();
    expect(&mut s.ws, "call-playback-started", &call).await;
    // The playback's end is 3 s away: shutdown does not wait for it.
    s.shutdown.cancel();
    s.tracker.close();
    tokio::time::timeout(Duration::from_millis(500), s.tracker.wait())
        .await
        .expect("stopped at once");
    expect_silence(&mut s.ws, Duration::from_secs(3)).await;
    s.server.stop().await;
}
