//! Outbound webhooks (contract §10) end to end: the daemon on real TLS, a
//! real HTTP receiver, signatures checked with the Standard Webhooks
//! verification, on whichever store the pass runs with.

use std::time::Duration;

use crate::common::receiver::{Receiver, Reply};
use crate::common::*;
use callbridge::outbound::signature;
use serde_json::{json, Value};

/// Long enough for a retry schedule of `1s,1s` and the dispatcher's polls.
const DELIVERY_WAIT: Duration = Duration::from_secs(15);

async fn add_endpoint(s: &Server, url: &str, events: Value) -> Value {
    let r = s
        .admin(
            "POST",
            "/api/endpoints",
            Some(json!({"url": url, "events": events, "description": "test"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    r.json()
}

fn routed(user: &str, call: &str, event_type: &str) -> Value {
    let mut p = call_payload(call, "+15551112222", "+15553334444");
    p["client_state"] = json!(client_state_for(user));
    envelope(event_type, p)
}

/// The request verifies with the endpoint's secret, as a receiver using a
/// `standardwebhooks` library checks it.
fn assert_signed(got: &crate::common::receiver::Received, secret: &str) {
    let r = signature::verify(
        secret,
        &got.header("webhook-id"),
        &got.header("webhook-timestamp"),
        &got.header("webhook-signature"),
        &got.body,
        now_secs(),
        300,
    );
    assert!(r.is_ok(), "signature: {r:?}");
    assert_eq!(got.header("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_admin_api_and_its_errors() {
    let s = Server::start().await;
    let created = add_endpoint(
        &s,
        "https://backend.example.com/hooks",
        json!(["call-hangup"]),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(signature::secret_key(&secret).unwrap().len(), 32);
    assert_eq!(created["disabled"], false);

    let list = s.admin("GET", "/api/endpoints", None).await.json();
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert!(
        list["endpoints"][0].get("secret").is_none(),
        "no secret in the list"
    );
    let one = s
        .admin("GET", &format!("/api/endpoints/{id}"), None)
        .await
        .json();
    assert_eq!(one["stats"], json!({"delivered":0,"failed":0,"pending":0}));
    assert!(one.get("secret").is_none());
    let r = s
        .admin("GET", &format!("/api/endpoints/{id}/secret"), None)
        .await;
    assert_eq!(r.json()["secret"], secret.as_str());
    let r = s
        .admin(
            "PATCH",
            &format!("/api/endpoints/{id}"),
            Some(json!({"events":["*"],"disabled":true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["events"], json!(["*"]));
    assert_eq!(r.json()["disabled"], true);

    for (body, what) in [
        (json!({"events":["*"]}), "no url"),
        (
            json!({"url":"http://backend.example.com/x"}),
            "http to a non-loopback host",
        ),
        (json!({"url":"ftp://127.0.0.1/x"}), "another scheme"),
        (json!({"url":"not a url"}), "not a URL"),
        (json!({"url":"https://x.example","events":[]}), "no events"),
        (
            json!({"url":"https://x.example","events":"*"}),
            "events not a list",
        ),
        (
            json!({"url":"https://x.example","colour":"red"}),
            "an unknown field",
        ),
    ] {
        let r = s.admin("POST", "/api/endpoints", Some(body)).await;
        assert_json_error(&r, 400);
        assert_eq!(r.status, 400, "{what}");
    }
    let r = s
        .admin(
            "PATCH",
            &format!("/api/endpoints/{id}"),
            Some(json!({"url":"http://10.0.0.1/"})),
        )
        .await;
    assert_json_error(&r, 400);
    for path in [
        "/api/endpoints/ep_nope",
        "/api/endpoints/ep_nope/secret",
        "/api/endpoints/ep_nope/attempts",
    ] {
        assert_json_error(&s.admin("GET", path, None).await, 404);
    }
    assert_json_error(
        &s.admin(
            "PATCH",
            "/api/endpoints/ep_nope",
            Some(json!({"disabled":true})),
        )
        .await,
        404,
    );
    assert_json_error(
        &s.admin("DELETE", "/api/endpoints/ep_nope", None).await,
        404,
    );
    let r = s
        .admin(
            "GET",
            &format!("/api/endpoints/{id}/attempts?limit=0"),
            None,
        )
        .await;
    assert_json_error(&r, 400);
    let unauth = s.request("GET", "/api/endpoints", &[], "").await;
    assert_json_error(&unauth, 401);
    let r = s
        .admin("DELETE", &format!("/api/endpoints/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_json_error(
        &s.admin("GET", &format!("/api/endpoints/{id}"), None).await,
        404,
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_messages_are_signed_filtered_and_sent_once_per_event() {
    let s = Server::start().await;
    let shared = json!({"phoneNumbers": ["+15550004444"]});
    for u in ["u1", "u2", "u3"] {
        s.put_user(u, shared.clone()).await;
    }
    let all = Receiver::start(&[]).await;
    let hangups = Receiver::start(&[]).await;
    let ep_all = add_endpoint(&s, &all.url, json!(["*"])).await;
    add_endpoint(&s, &hangups.url, json!(["call-hangup"])).await;

    // One Telnyx event routed to three users: one delivery per endpoint.
    let ring = envelope(
        "call.initiated",
        call_payload("ob1", "+15559990000", "+15550004444"),
    );
    assert_eq!(s.post_webhook(&ring).await.status, 200);
    let mut hang = call_payload("ob1", "+15559990000", "+15550004444");
    hang["hangup_cause"] = json!("normal_clearing");
    let hang = envelope("call.hangup", hang);
    assert_eq!(s.post_webhook(&hang).await.status, 200);
    // A Telnyx re-delivery of a stored event is not sent again.
    assert_eq!(s.post_webhook(&ring).await.json()["duplicate"], true);
    // A §8 message is sent too.
    let (mut ws, _, _) = s.connect("u1").await;
    send_json(
        &mut ws,
        json!({"type":"send","to":"u2","payload":{"x":1},"ref":"m"}),
    )
    .await;

    let got = all.wait_for(3, DELIVERY_WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = all.received();
    assert_eq!(
        got_all.len(),
        3,
        "one per event: {:?}",
        got_all.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let secret = ep_all["secret"].as_str().unwrap();
    for r in &got {
        assert_signed(r, secret);
    }
    let types: Vec<String> = got_all
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = types.clone();
    sorted.sort();
    assert_eq!(sorted, ["call-hangup", "call-initiated", "message"]);
    let first = got_all
        .iter()
        .find(|r| r.json()["type"] == "call-initiated")
        .unwrap();
    assert_eq!(
        first.header("webhook-id"),
        ring["data"]["id"].as_str().unwrap()
    );
    let body = first.json();
    assert_eq!(body["timestamp"], ring["data"]["occurred_at"]);
    assert_eq!(body["data"]["callControlId"], "ob1");
    let mut users: Vec<String> = body["data"]["userIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    users.sort();
    assert_eq!(users, ["u1", "u2", "u3"]);
    let msg = got_all
        .iter()
        .find(|r| r.json()["type"] == "message")
        .unwrap()
        .json();
    assert_eq!(msg["data"]["payload"], json!({"x":1}));
    assert_eq!(msg["data"]["from"], "u1");

    let only = hangups.wait_for(1, DELIVERY_WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hangups.received().len(), 1);
    assert_eq!(only[0].json()["type"], "call-hangup");
    assert_eq!(only[0].json()["data"]["hangupCause"], "normal_clearing");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_one_id_then_delivered_or_failed() {
    let s = Server::start_with(&[("CALLBRIDGE_OUTBOUND_RETRY_SCHEDULE", "1s,1s")]).await;
    s.put_users(&["u1"]).await;
    let flaky =
        Receiver::start(&[Reply::Status(302), Reply::Status(500), Reply::Status(200)]).await;
    let down = Receiver::start(&[Reply::Status(500); 10]).await;
    let ep_flaky = add_endpoint(&s, &flaky.url, json!(["*"])).await;
    let ep_down = add_endpoint(&s, &down.url, json!(["*"])).await;
    let ev = routed("u1", "r1", "call.initiated");
    assert_eq!(s.post_webhook(&ev).await.status, 200);

    // A redirect is not followed: it is an answer that is not 2xx.
    let got = flaky.wait_for(3, DELIVERY_WAIT).await;
    assert_eq!(got.len(), 3);
    let ids: Vec<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| i == ev["data"]["id"].as_str().unwrap()),
        "{ids:?}"
    );
    for r in &got {
        assert_signed(r, ep_flaky["secret"].as_str().unwrap());
    }
    let failed = down.wait_for(3, DELIVERY_WAIT).await;
    assert_eq!(failed.len(), 3, "1 attempt + 2 retries");

    let id = ep_flaky["id"].as_str().unwrap();
    let attempts = wait_status(&s, id, "delivered").await;
    assert_eq!(attempts["attempts"], 3);
    assert_eq!(attempts["lastStatusCode"], 200);
    assert_eq!(attempts["nextAttemptAt"], Value::Null);
    let id_down = ep_down["id"].as_str().unwrap();
    let a = wait_status(&s, id_down, "failed").await;
    assert_eq!(
        (a["attempts"].as_u64(), a["lastStatusCode"].as_u64()),
        (Some(3), Some(500))
    );
    assert!(a["lastError"].as_str().unwrap().contains("500"));
    let stats = s
        .admin("GET", &format!("/api/endpoints/{id_down}"), None)
        .await
        .json()["stats"]
        .clone();
    assert_eq!(stats, json!({"delivered":0,"failed":1,"pending":0}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(down.received().len(), 3, "nothing after failed");
    let metrics = text(&s.get("/metrics").await.unwrap());
    let line = format!(
        "callbridge_outbound_attempts_total{{endpoint=\"{id_down}\",outcome=\"failed\"}} 1"
    );
    assert!(metrics.contains(&line), "{line}\n{metrics}");
    s.stop().await;
}

/// The endpoint's newest attempt record once it has `status`.
async fn wait_status(s: &Server, id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let r = s
            .admin(
                "GET",
                &format!("/api/endpoints/{id}/attempts?limit=5"),
                None,
            )
            .await
            .json();
        let a = r["attempts"][0].clone();
        if a["status"] == status {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("endpoint {id} never reached {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_delays_neither_webhooks_nor_dialers_nor_other_endpoints() {
    let s = Server::start().await;
    s.put_users(&["u1"]).await;
    let hung = Receiver::start(&[Reply::Hang; 100]).await;
    let healthy = Receiver::start(&[]).await;
    add_endpoint(&s, &hung.url, json!(["*"])).await;
    add_endpoint(&s, &healthy.url, json!(["*"])).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let started = tokio::time::Instant::now();
    for i in 0..10 {
        let ev = routed("u1", &format!("h{i}"), "call.initiated");
        assert_eq!(s.post_webhook(&ev).await.status, 200);
        assert_eq!(next_json(&mut ws).await["seq"], i + 1);
    }
    assert_eq!(healthy.wait_for(10, DELIVERY_WAIT).await.len(), 10);
    // All of that happened while the hung endpoint still held its first
    // attempts (they time out only after 15 s).
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "{:?}",
        started.elapsed()
    );
    assert!(!hung.received().is_empty(), "the hung endpoint was tried");
    assert!(
        hung.received().len() <= 4,
        "at most 4 in flight to one endpoint"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_deleted_endpoints_get_nothing() {
    let s = Server::start().await;
    s.put_users(&["u1"]).await;
    let r1 = Receiver::start(&[]).await;
    let r2 = Receiver::start(&[]).await;
    let e1 = add_endpoint(&s, &r1.url, json!(["*"])).await;
    let e2 = add_endpoint(&s, &r2.url, json!(["*"])).await;
    let (id1, id2) = (e1["id"].as_str().unwrap(), e2["id"].as_str().unwrap());
    s.admin(
        "PATCH",
        &format!("/api/endpoints/{id1}"),
        Some(json!({"disabled":true})),
    )
    .await;
    assert_eq!(
        s.admin("DELETE", &format!("/api/endpoints/{id2}"), None)
            .await
            .status,
        204
    );
    let control = Receiver::start(&[]).await;
    add_endpoint(&s, &control.url, json!(["*"])).await;
    assert_eq!(
        s.post_webhook(&routed("u1", "d1", "call.initiated"))
            .await
            .status,
        200
    );
    assert_eq!(control.wait_for(1, DELIVERY_WAIT).await.len(), 1);
    // Re-enabled: events stored while disabled are not sent later.
    s.admin(
        "PATCH",
        &format!("/api/endpoints/{id1}"),
        Some(json!({"disabled":false})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        r1.received().is_empty(),
        "disabled endpoint got {:?}",
        r1.received()
    );
    assert!(
        r2.received().is_empty(),
        "deleted endpoint got {:?}",
        r2.received()
    );
    s.stop().await;
}
