//! The daemon on a MongoDB that goes away and comes back, and a daemon that
//! restarts: nothing acknowledged is lost, nothing is delivered twice, `seq`
//! continues. Each test runs its own SecantusDB on a persistent storage dir
//! (the binary path comes from `scripts/test.sh` in
//! `CALLBRIDGE_TEST_SECANTUSD`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::mongo::secantusd;
use crate::common::process::free_port;
use crate::common::*;
use serde_json::json;

pub(crate) struct Db {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Db {
    pub(crate) fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?replicaSet=secantus", self.port)
    }

    pub(crate) fn start(&mut self) {
        let child = Command::new(&self.bin)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("SecantusDB did not listen");
    }

    /// Stop it (SIGTERM) and wait for it to exit.
    ///
    /// Not SIGKILL: SecantusDB 0.7.0b3 loses a transaction it acknowledged
    /// with w:majority, j:true when killed within ~1 s of the commit (a
    /// plain insert survives), so a crash test would test SecantusDB, not
    /// callbridge. Real MongoDB honours `j:true` for transactions.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..200 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn db() -> Option<Db> {
    let bin = secantusd("outage tests")?;
    let port = free_port();
    let mut db = Db {
        bin,
        port,
        dir: tempfile::tempdir().unwrap(),
        child: None,
    };
    db.start();
    Some(db)
}

fn routed(call: &str, user: &str, event_type: &str) -> serde_json::Value {
    let mut p = call_payload(call, "+15551112222", "+15553334444");
    p["client_state"] = json!(client_state_for(user));
    envelope(event_type, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_answers_503_then_recovers_without_loss_or_duplicates() {
    let Some(mut db) = db() else { return };
    let uri = db.uri();
    let s = Server::start_with(&[
        ("CALLBRIDGE_MONGODB_URI", &uri),
        ("CALLBRIDGE_MONGODB_DB", "outage"),
        ("CALLBRIDGE_STORE_TIMEOUT_SECS", "2"),
    ])
    .await;
    s.put_user("u1", json!({})).await;
    let (mut ws, _, _) = s.connect("u1").await;
    let first = routed("c1", "u1", "call.initiated");
    assert_eq!(s.post_webhook(&first).await.status, 200);
    assert_eq!(next_json(&mut ws).await["seq"], 1);

    db.kill();
    let second = routed("c1", "u1", "call.answered");
    let r = s.post_webhook(&second).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"].as_str().unwrap().starts_with("store-"));
    let ready = s.get("/ready").await.unwrap();
    assert_eq!(ready.status, 503);
    // The daemon keeps serving what needs no store.
    assert_eq!(s.get("/health").await.unwrap().status, 200);
    // A message cannot be stored: the sender is told, with its ref, and
    // the connection stays open.
    send_json(
        &mut ws,
        json!({"type":"send","to":"u1","payload":"x","ref":"during-outage"}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["data"]["code"], "store-unavailable");
    assert_eq!(e["data"]["ref"], "during-outage");

    db.start();
    // Telnyx retries the same event; the daemon recovers by itself.
    let mut answered = None;
    for _ in 0..60 {
        let r = s.post_webhook(&second).await;
        if r.status == 200 {
            answered = Some(r.json());
            break;
        }
        assert_eq!(r.status, 503);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ack = answered.expect("webhook accepted after the store came back");
    assert_eq!(ack["id"], second["data"]["id"]);
    // Stored once and delivered once, whichever attempt stored it.
    let ev = next_json(&mut ws).await;
    assert_eq!(ev["event"], "call-answered");
    assert_eq!(ev["seq"], 2);
    assert_eq!(s.post_webhook(&second).await.json()["duplicate"], true);
    expect_silence(&mut ws, Duration::from_millis(500)).await;
    for _ in 0..40 {
        if s.get("/ready").await.unwrap().status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(s.get("/ready").await.unwrap().status, 200);
    // The first event survived the crash (it was acknowledged with a
    // majority, journaled write before the 200).
    let (_ws2, connected, snapshot) = s.connect("u1").await;
    assert_eq!(connected["data"]["lastSeq"], 2);
    assert_eq!(snapshot["data"]["activeCalls"][0]["state"], "answered");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_restart_keeps_seq_history_state_and_resume() {
    let Some(db) = db() else { return };
    let uri = db.uri();
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("CALLBRIDGE_MONGODB_URI", uri.as_str()),
        ("CALLBRIDGE_MONGODB_DB", "restart"),
    ];
    let s = Server::start_in(dir.path().to_path_buf(), &settings).await;
    s.put_user("u1", json!({"phoneNumbers": ["+15553334444"]}))
        .await;
    let (mut ws, _, _) = s.connect("u1").await;
    for i in 0..3 {
        let r = s
            .post_webhook(&routed(&format!("c{i}"), "u1", "call.initiated"))
            .await;
        assert_eq!(r.status, 200);
    }
    for want in 1..=3 {
        assert_eq!(next_json(&mut ws).await["seq"], want);
    }
    // The client "loses Wi-Fi" after seq 1 was processed; the daemon restarts.
    drop(ws);
    s.stop().await;

    let s = Server::start_in(dir.path().to_path_buf(), &settings).await;
    let user = s.admin("GET", "/api/users/u1", None).await.json();
    assert_eq!(user["phoneNumbers"], json!(["+15553334444"]));
    assert_eq!(user["activeCalls"].as_array().unwrap().len(), 3);
    // Presence of the connection that died with the old process is gone.
    assert_eq!(user["presence"]["connections"], 0);
    assert_eq!(
        s.post_webhook(&routed("c9", "u1", "call.initiated"))
            .await
            .status,
        200
    );

    let mut ws = s
        .ws_raw(&format!("token={}&since=1", s.token("u1")), &[])
        .await;
    let connected = next_json(&mut ws).await;
    assert_eq!(connected["data"]["lastSeq"], 4);
    for want in 2..=4 {
        let ev = next_json(&mut ws).await;
        assert_eq!(ev["seq"], want, "{ev}");
    }
    let resumed = next_json(&mut ws).await;
    assert_eq!(resumed["event"], "resumed");
    assert_eq!(resumed["data"], json!({"from": 1, "to": 4, "gap": false}));
    assert_eq!(next_json(&mut ws).await["event"], "snapshot");
    s.stop().await;
}

/// Two instances; the database stops and comes back while both stay up:
/// B's change stream errors, resumes (or resyncs), and a client on B still
/// gets, in order, what A stores afterwards — and what A stored while B's
/// stream was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_error_with_both_instances_up_loses_nothing() {
    let Some(mut db) = db() else { return };
    let uri = db.uri();
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("CALLBRIDGE_MONGODB_URI", uri.as_str()),
        ("CALLBRIDGE_MONGODB_DB", "feed"),
        ("CALLBRIDGE_STORE_TIMEOUT_SECS", "2"),
    ];
    let a = Server::start_in(dir.path().to_path_buf(), &settings).await;
    let b = Server::start_in(dir.path().to_path_buf(), &settings).await;
    a.put_user("u1", json!({})).await;
    let (mut on_b, _, _) = b.connect("u1").await;
    assert_eq!(
        a.post_webhook(&routed("c0", "u1", "call.initiated"))
            .await
            .status,
        200
    );
    assert_eq!(next_json(&mut on_b).await["seq"], 1);

    db.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.start();
    // A stores as soon as the database answers again (retrying as Telnyx would).
    for i in 1..=3 {
        let ev = routed(&format!("c{i}"), "u1", "call.initiated");
        let mut stored = false;
        for _ in 0..60 {
            let r = a.post_webhook(&ev).await;
            if r.status == 200 {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(stored, "A never stored event {i}");
    }
    for want in 2..=4 {
        let ev = next_json(&mut on_b).await;
        assert_eq!(ev["seq"], want, "{ev}");
    }
    expect_silence(&mut on_b, Duration::from_millis(500)).await;
    a.stop().await;
    b.stop().await;
}
