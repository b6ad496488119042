//! The daemon as a process: systemd notifications (READY/RELOADING/
//! STOPPING/WATCHDOG on a NOTIFY_SOCKET this test reads), graceful shutdown
//! with an in-flight webhook, and logs that never carry a secret.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{clean_command, free_port, signal, wait_exit};
use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn serve_dev(dir: &Path, port: u16) -> Command {
    let mut c = clean_command();
    c.args(["serve", "--dev"])
        .env("CALLBRIDGE_DATA_DIR", dir)
        .env("CALLBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null());
    c
}

/// Datagrams received on the notify socket until `want` shows up.
fn wait_notify(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} on NOTIFY_SOCKET; got {seen:?}");
}

#[test]
fn sd_notify_ready_reload_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let mut child = serve_dev(&dir.path().join("data"), port)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    wait_notify(&sock, "READY=1", &mut seen);
    // READY comes after the listener is bound: it accepts now.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("listening at READY=1");
    wait_notify(&sock, "WATCHDOG=1", &mut seen);
    signal(&child, "-HUP");
    wait_notify(&sock, "RELOADING=1", &mut seen);
    wait_notify(&sock, "READY=1", &mut seen);
    signal(&child, "-TERM");
    wait_notify(&sock, "STOPPING=1", &mut seen);
    assert_eq!(wait_exit(&mut child), 0);
}

#[test]
fn logs_never_contain_tokens_secrets_or_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let admin = "admin-token-that-must-not-leak-123";
    let mut child = serve_dev(&data, port)
        .env("CALLBRIDGE_ADMIN_TOKEN", admin)
        .env("RUST_LOG", "debug")
        .env("CALLBRIDGE_LOG_FORMAT", "json")
        .env("CALLBRIDGE_CLIENT_SIGNING", "optional")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, sig, secret, client_sig, key) = rt.block_on(async {
        let files = callbridge::dev::DevFiles::new(&data);
        let base = format!("https://127.0.0.1:{port}");
        let mut tls = None;
        for _ in 0..200 {
            if let Ok(ca) = std::fs::read(&files.ca) {
                let t = callbridge::tls::client_config(Some(&ca)).unwrap();
                if callbridge::client::request_once(&format!("{base}/ready"), "GET", &[], "", t.clone())
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    tls = Some(t);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tls = tls.expect("daemon ready");
        let secret = std::fs::read_to_string(&files.jwt_secret).unwrap().trim().to_string();
        let token = callbridge::auth::mint(secret.as_bytes(), "demo", None, 600, now_secs()).unwrap();
        // A refused token (wrong secret) too: its text must not be logged either.
        let bad = callbridge::auth::mint(b"some-other-secret-000000", "demo", None, 600, now_secs())
            .unwrap();
        let ws_url = format!("wss://127.0.0.1:{port}/ws");
        let (mut ws, _) =
            callbridge::client::ws_connect(&format!("{ws_url}?token={token}"), &[], tls.clone())
                .await
                .unwrap();
        next_json(&mut ws).await;
        next_json(&mut ws).await;
        // A signed message (its payload, signature and key must not be
        // logged), and one with a wrong signature.
        let inner = r#"{"type":"send","to":"demo","payload":"payload-must-not-leak-42","ref":"l"}"#;
        let ts = callbridge::clock::now_ms();
        let nonce = "bG9nLWNoZWNrLW5vbmNlLTE2Yg==";
        let client_sig = callbridge::signing::sign(&token, "demo", inner, ts, nonce);
        let key = callbridge::signing::key_for(&token, "demo", ts);
        let env = json!({"signed": inner, "timestamp": ts, "nonce": nonce, "signature": client_sig});
        send_json(&mut ws, env).await;
        let mut got = [next_json(&mut ws).await, next_json(&mut ws).await];
        got.sort_by_key(|v| v["event"].to_string());
        assert_eq!(got[1]["event"], "sent", "{got:?}");
        let forged = json!({"signed": inner, "timestamp": ts, "nonce": "Zm9yZ2VkLW5vbmNlLTAwMDAwMA==",
            "signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="});
        send_json(&mut ws, forged).await;
        assert_eq!(next_json(&mut ws).await["data"]["code"], "bad-signature");
        let (mut refused, _) =
            callbridge::client::ws_connect(&format!("{ws_url}?token={bad}"), &[], tls.clone())
                .await
                .unwrap();
        expect_close(&mut refused).await;
        // A signed webhook, and one with a wrong signature.
        let signer = callbridge::dev::load_signer(&files).unwrap();
        let body = json!({"data":{"id":"log-check-1","event_type":"call.initiated","record_type":"event",
            "payload":{"to":"+15550000001","from":"+15557654321","direction":"incoming","call_control_id":"v3:x"}}})
            .to_string();
        let ts = now_secs();
        let sig = signer.sign(ts, body.as_bytes());
        let ts_s = ts.to_string();
        let r = callbridge::client::request_once(
            &format!("{base}/webhooks/telnyx"),
            "POST",
            &[("telnyx-signature-ed25519", &sig), ("telnyx-timestamp", &ts_s)],
            body.clone(),
            tls.clone(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let forged = callbridge::telnyx::Signer::generate().0.sign(ts, body.as_bytes());
        let r = callbridge::client::request_once(
            &format!("{base}/webhooks/telnyx"),
            "POST",
            &[("telnyx-signature-ed25519", &forged), ("telnyx-timestamp", &ts_s)],
            body,
            tls.clone(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401);
        // Admin calls with the right and a wrong token.
        let auth = format!("Bearer {admin}");
        callbridge::client::request_once(&format!("{base}/api/status"), "GET", &[("authorization", &auth)], "", tls.clone())
            .await
            .unwrap();
        callbridge::client::request_once(
            &format!("{base}/api/status"),
            "GET",
            &[("authorization", "Bearer wrong-admin-token-xyz-987")],
            "",
            tls,
        )
        .await
        .unwrap();
        (token, sig, secret, client_sig, key)
    });
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child), 0);
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).unwrap();
    assert!(
        logs.contains("stored and fanned out"),
        "no webhook log line"
    );
    assert!(logs.contains("message stored"), "no message log line");
    assert!(
        logs.contains("signing check"),
        "no signing refusal log line"
    );
    assert!(
        logs.contains("+*******0001"),
        "phone numbers are logged masked"
    );
    for (what, needle) in [
        ("JWT", token.as_str()),
        ("JWT signature part", token.rsplit('.').next().unwrap()),
        ("JWT secret", secret.as_str()),
        ("webhook signature", sig.as_str()),
        ("admin token", admin),
        ("wrong admin token", "wrong-admin-token-xyz-987"),
        ("unmasked phone number", "+15557654321"),
        ("message payload", "payload-must-not-leak-42"),
        ("client message signature", client_sig.as_str()),
        ("client signing key", key.as_str()),
    ] {
        assert!(!logs.contains(needle), "{what} found in the logs");
    }
    // Every line is JSON with the json log format.
    for line in BufReader::new(logs.as_bytes()).lines() {
        let line = line.unwrap();
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_webhook_finish_and_closes_sockets_with_1001() {
    let mut s = Server::start().await;
    s.put_user("u1", json!({"phoneNumbers": ["+15550001234"]}))
        .await;
    let (mut ws, _, _) = s.connect("u1").await;

    // A webhook whose body is still on its way when shutdown starts.
    let body = envelope(
        "call.initiated",
        call_payload("c1", "+15559990000", "+15550001234"),
    )
    .to_string();
    let ts = now_secs();
    let sig = s.signer.sign(ts, body.as_bytes());
    let target = callbridge::client::parse_url(&s.base).unwrap();
    let mut raw = callbridge::client::connect_tls(&target, s.tls.clone())
        .await
        .unwrap();
    let head = format!(
        "POST /webhooks/telnyx HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ntelnyx-signature-ed25519: {sig}\r\ntelnyx-timestamp: {ts}\r\n\r\n",
        target.authority,
        body.len()
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    raw.write_all(first).await.unwrap();
    raw.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopping = tokio::spawn(async move {
        s.stop_in_place().await;
        s
    });
    // Sockets are told the daemon is going away.
    let (code, _) = expect_close(&mut ws).await;
    assert_eq!(code, 1001);
    // The in-flight request still gets its answer.
    raw.write_all(rest).await.unwrap();
    raw.flush().await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"duplicate\":false"), "{resp}");
    // And the daemon's run() returned Ok within the bound.
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("stopped in time")
        .unwrap();
}
