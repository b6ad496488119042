use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn webhook_reaches_the_owner_of_the_number() {
    let s = Server::start().await;
    s.put_user(
        "u1",
        json!({"email":"a@example.com","phoneNumbers":["+1 555 123 0001"]}),
    )
    .await;
    let (mut ws, connected, snapshot) = s.connect("u1").await;
    assert_eq!(connected["data"]["user"], "a@example.com");
    assert_eq!(connected["data"]["lastSeq"], 0);
    assert_eq!(snapshot["data"]["activeCalls"], json!([]));
    let env = envelope(
        "call.initiated",
        call_payload("c1", "+15559990000", "+15551230001"),
    );
    let r = s.post_webhook(&env).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["duplicate"], false);
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["event"], "call-initiated");
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["data"]["userIds"], json!(["u1"]));
    let r = s.post_webhook(&env).await;
    assert_eq!(r.json()["duplicate"], true);
    s.stop().await;
}

/// The web dialer is `--dev` only (contract §3: 404 when not `--dev`).
#[tokio::test]
async fn dev_page_is_404_outside_dev_mode() {
    let s = Server::start().await;
    for path in ["/dev", "/dev/token"] {
        let r = s.get(path).await.unwrap();
        let e = assert_json_error(&r, 404);
        assert_eq!(e["error"], "not-found", "{path}");
    }
    s.stop().await;
}
