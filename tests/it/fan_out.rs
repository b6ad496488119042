//! One event to many users (contract §4, §5): an unrouted call under
//! `CALLBRIDGE_UNROUTED=broadcast` goes to every user. Each of their
//! sessions gets it exactly once, under that user's own next `seq`, on
//! whichever instance it is connected to. Runs on the store of the pass
//! (MongoDB, then the embedded one); the two-instance case on MongoDB only.

use std::time::Duration;

use crate::common::*;
use callbridge::client::Wss;
use serde_json::{json, Value};

const USERS: usize = 200;

fn user_ids() -> Vec<String> {
    (0..USERS).map(|i| format!("fan{i:03}")).collect()
}

/// An incoming call nobody claims: no client_state, numbers no user has.
fn unrouted(i: usize) -> Value {
    envelope(
        "call.initiated",
        call_payload(&format!("fan-call-{i}"), "+15550009999", "+15550008888"),
    )
}

fn routed_to(user: &str, i: usize) -> Value {
    let mut p = call_payload(&format!("pre-{user}-{i}"), "+15551112222", "+15553334444");
    p["client_state"] = json!(client_state_for(user));
    envelope("call.dtmf.received", p)
}

/// Users `fan000…fan199`; user `k` first gets `k % 3` events of its own, so
/// the users' sequences differ when the shared events arrive.
async fn users_with_history(s: &Server) -> Vec<String> {
    let ids = user_ids();
    for (k, id) in ids.iter().enumerate() {
        s.put_user(id, json!({})).await;
        for i in 0..k % 3 {
            assert_eq!(s.post_webhook(&routed_to(id, i)).await.status, 200);
        }
    }
    ids
}

/// One session per user, user `k` on `on(k)`, with the `lastSeq` its
/// history gives (`k % 3`).
async fn connect_each<'a>(ids: &[String], on: impl Fn(usize) -> &'a Server) -> Vec<(Wss, u64)> {
    let mut sessions = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let (ws, connected, _) = on(k).connect(id).await;
        assert_eq!(connected["data"]["lastSeq"], (k % 3) as u64);
        sessions.push((ws, (k % 3) as u64));
    }
    sessions
}

/// Each session reads the shared events, in posting order, under its user's
/// next `seq`s after `lastSeq` from `connected`, then nothing more. All
/// sessions are checked at once.
async fn expect_each_once(sessions: Vec<(Wss, u64)>, ids: &[String]) {
    let checks: Vec<_> = sessions
        .into_iter()
        .map(|(mut ws, last)| {
            let ids = ids.to_vec();
            tokio::spawn(async move {
                for (k, id) in ids.iter().enumerate() {
                    let ev = next_json(&mut ws).await;
                    assert_eq!(ev["id"], id.as_str(), "{ev}");
                    assert_eq!(ev["seq"], last + 1 + k as u64, "{ev}");
                    assert_eq!(ev["data"]["userIds"].as_array().unwrap().len(), USERS);
                }
                expect_silence(&mut ws, Duration::from_millis(300)).await;
            })
        })
        .collect();
    for c in checks {
        c.await
            .expect("every session got every event once, in its own seq");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_to_200_users_reaches_each_session_once_in_its_own_seq() {
    let s = Server::start_with(&[("CALLBRIDGE_UNROUTED", "broadcast")]).await;
    let ids = users_with_history(&s).await;
    let sessions = connect_each(&ids, |_| &s).await;
    let mut posted = Vec::new();
    for i in 0..3 {
        let ev = unrouted(i);
        assert_eq!(s.post_webhook(&ev).await.status, 200);
        posted.push(ev["data"]["id"].as_str().unwrap().to_string());
    }
    // History holds them for each user under the same seqs: a resume
    // replays them. Checked while the 200 sessions are still open (their
    // frames wait in their sockets), not after they all closed at once: on
    // MongoDB 200 closes are 200 presence writes in front of this one's.
    let mut ws = s
        .ws_raw(&format!("token={}&since=0", s.token("fan004")), &[])
        .await;
    next_json(&mut ws).await; // connected
    let own = next_json(&mut ws).await; // fan004's own event (4 % 3 = 1)
    assert_eq!(own["seq"], 1);
    for (k, id) in posted.iter().enumerate() {
        let ev = next_json(&mut ws).await;
        assert_eq!(ev["id"], id.as_str());
        assert_eq!(ev["seq"], 2 + k as u64);
    }
    assert_eq!(next_json(&mut ws).await["event"], "resumed");
    expect_each_once(sessions, &posted).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_instances_200_users_each_get_every_event_once_in_order() {
    let Some(uri) = mongo_required("two-instance fan-out") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("fan{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("CALLBRIDGE_MONGODB_URI", uri.as_str()),
        ("CALLBRIDGE_MONGODB_DB", db.as_str()),
        ("CALLBRIDGE_UNROUTED", "broadcast"),
    ];
    let a = Server::start_in(dir.path().to_path_buf(), &settings).await;
    let b = Server::start_in(dir.path().to_path_buf(), &settings).await;
    let ids = users_with_history(&a).await;
    // Even users on A, odd users on B.
    let sessions = connect_each(&ids, |k| if k % 2 == 0 { &a } else { &b }).await;
    // Posted to A and B in turn, each answered before the next is sent.
    let mut posted = Vec::new();
    for i in 0..4 {
        let ev = unrouted(i);
        let to = if i % 2 == 0 { &a } else { &b };
        assert_eq!(to.post_webhook(&ev).await.status, 200);
        posted.push(ev["data"]["id"].as_str().unwrap().to_string());
    }
    expect_each_once(sessions, &posted).await;
    a.stop().await;
    b.stop().await;
}
