//! Slow consumers (issue #4, contract §4 close code 4013): a client that
//! stops reading while its events keep coming is closed with 4013 once its
//! bounded queue is full; other users, and the same user's other
//! connections, keep receiving promptly; memory stays bounded; and a resume
//! with `since=0` afterwards returns every event, contiguous, then `resumed`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use callbridge::client::{Https, Wss};
use common::edges::*;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Concurrent webhook posters, each on its own keep-alive connection.
const POSTERS: usize = 8;
/// Frames a session may queue (`hub::SESSION_QUEUE`); the flood must exceed
/// it plus what the socket buffers hold.
const QUEUE: usize = callbridge::hub::SESSION_QUEUE;

/// Flood size and payload padding, and whether the flood overflows the
/// slow session's queue. The in-memory store ingests thousands of events a
/// second; SecantusDB ingests one user's events one at a time, about 50 a
/// second, too slow to push more than `QUEUE` events through within the
/// test's time budget: on MongoDB the flood stays under the queue bound
/// (with large frames so the socket buffers still fill), and the slow
/// client must then get every event once it reads again.
fn flood_shape() -> (usize, usize, bool) {
    if mongo_uri().is_some() {
        (300, 8 * 1024, false)
    } else {
        (5000, 2 * 1024, true)
    }
}

/// Post `n` events for `user` from `POSTERS` concurrent connections; each
/// answer must be 200 within `WAIT`. Returns the posted ids.
fn spawn_flood(
    s: &Server,
    user: &'static str,
    n: usize,
    pad: usize,
    posted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (base, tls) = (s.base.clone(), s.tls.clone());
    // The poster tasks need the signing key; sign with a copy loaded from
    // the same data dir.
    let (_, signer) = dev_files(&s.dir);
    let signer = Arc::new(signer);
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..POSTERS {
            let (base, tls, signer, posted) =
                (base.clone(), tls.clone(), signer.clone(), posted.clone());
            let count = n / POSTERS + usize::from(p < n % POSTERS);
            tasks.spawn(async move {
                let mut https = Https::connect(&base, tls).await.expect("poster connects");
                let mut ids = Vec::with_capacity(count);
                for i in 0..count {
                    let env = event_for(user, "call.dtmf.received", "flood-call", pad);
                    let raw = env.to_string();
                    let ts = now_secs();
                    let sig = signer.sign(ts, raw.as_bytes());
                    let ts = ts.to_string();
                    let r = tokio::time::timeout(
                        WAIT,
                        https.request(
                            "POST",
                            WEBHOOK,
                            &[
                                ("content-type", "application/json"),
                                ("telnyx-signature-ed25519", &sig),
                                ("telnyx-timestamp", &ts),
                            ],
                            raw,
                        ),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        panic!("poster {p}: webhook {i} not answered within {WAIT:?}")
                    })
                    .expect("webhook request");
                    assert_eq!(
                        r.status,
                        200,
                        "poster {p}: webhook {i}: {}",
                        String::from_utf8_lossy(&r.body)
                    );
                    ids.push(env["data"]["id"].as_str().unwrap().to_string());
                    posted.fetch_add(1, Ordering::Relaxed);
                }
                ids
            });
        }
        tasks.join_all().await.into_iter().flatten().collect()
    })
}

/// Watch `/api/status` until `user` has fewer than `registered` connections
/// (the slow session gave up) or `flood_done` + 10 s, then read the slow
/// client to its end. Reading starts at once so the close frame (which the server may
/// only write once the client reads) gets through.
fn spawn_slow_watcher(
    s: &Server,
    user: &'static str,
    registered: u64,
    mut slow: Wss,
    flood_done: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<(Vec<Value>, Option<End>, Option<Duration>)> {
    let (base, tls) = (s.base.clone(), s.tls.clone());
    tokio::spawn(async move {
        let start = Instant::now();
        let mut admin = Https::connect(&base, tls).await.unwrap();
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let done = flood_done.notified();
        tokio::pin!(done);
        let mut give_up: Option<Instant> = None;
        let closed_after = loop {
            let r = admin
                .request("GET", "/api/status", &[("authorization", &auth)], "")
                .await
                .expect("status");
            let st = r.json();
            if st["connections"]["perUser"][user].as_u64().unwrap_or(0) < registered {
                break Some(start.elapsed());
            }
            if give_up.is_some_and(|t| Instant::now() >= t) {
                break None;
            }
            tokio::select! {
                _ = &mut done, if give_up.is_none() => {
                    give_up = Some(Instant::now() + Duration::from_secs(10));
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        };
        let (texts, end) = read_until_end(&mut slow, Duration::from_secs(30)).await;
        (texts, end, closed_after)
    })
}

/// Read `n` stored events on a client that keeps up; they must be seq 1..=n.
fn spawn_twin_reader(mut ws: Wss, n: usize) -> tokio::task::JoinHandle<Wss> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut want = 1u64;
        while want <= n as u64 {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .unwrap_or_else(|_| panic!("twin: only {} of {n} events arrived", want - 1))
                .expect("twin stream ended")
                .unwrap_or_else(|e| panic!("twin: error after {} events: {e}", want - 1));
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["seq"], want, "twin: events out of order: {}", v["event"]);
                    want += 1;
                }
                Message::Close(f) => {
                    panic!("twin connection closed after {} events: {f:?}", want - 1)
                }
                _ => {}
            }
        }
        ws
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4013_while_others_keep_up_and_resume_is_complete() {
    let (n, pad, overflow) = flood_shape();
    let s = Server::start().await;
    s.put_user("slow", json!({})).await;
    s.put_user("fast", json!({})).await;

    // The slow client: a small receive buffer so the server's writes block
    // soon, and it stops reading after `snapshot`.
    let mut slow = ws_with_rcvbuf(&s, &format!("token={}", s.token("slow")), Some(4096)).await;
    read_connected(&mut slow).await;
    // The same user's second connection, which keeps up.
    let (twin, _, _) = s.connect("slow").await;
    // Another user, which keeps up.
    let (mut fast, _, _) = s.connect("fast").await;
    assert_eq!(total_connections(&s).await, 3);

    let rss_before = rss_bytes();
    let posted = Arc::new(AtomicUsize::new(0));
    let flood_done = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let twin = spawn_twin_reader(twin, n);
    let (watcher, mut slow) = if overflow {
        let w = spawn_slow_watcher(&s, "slow", 2, slow, flood_done.clone());
        (Some(w), None)
    } else {
        (None, Some(slow))
    };
    let flood = spawn_flood(&s, "slow", n, pad, posted.clone());

    // Meanwhile the other user's events arrive promptly, in order.
    let mut fast_poster = Poster::connect(&s).await;
    let mut fast_seq = 0u64;
    let mut worst = Duration::ZERO;
    let mut after_flood = 0;
    while after_flood < 3 {
        if flood.is_finished() {
            after_flood += 1;
        }
        let env = event_for("fast", "call.dtmf.received", "fast-call", 0);
        let sent = Instant::now();
        let r = tokio::time::timeout(
            WAIT,
            fast_poster.post(&s.signer, env.to_string().as_bytes()),
        )
        .await
        .expect("fast user's webhook answered in time");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let ev = next_json(&mut fast).await;
        fast_seq += 1;
        assert_eq!(ev["id"], env["data"]["id"], "{ev}");
        assert_eq!(ev["seq"], fast_seq, "{ev}");
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = flood.await.expect("flood task");
    flood_done.notify_one();
    let flood_took = started.elapsed();
    assert_eq!(ids.len(), n);
    eprintln!(
        "flood of {n} events ({pad} B padding) took {flood_took:?}; \
         fast user: {fast_seq} events, slowest post→receive {worst:?}"
    );

    if let Some(watcher) = watcher {
        // The slow client: what was buffered, in order, then 4013.
        let (texts, end, closed_after) = watcher.await.expect("watcher task");
        let events: Vec<&Value> = texts.iter().filter(|v| v.get("seq").is_some()).collect();
        eprintln!(
            "slow client: session ended after {closed_after:?}, {} events buffered, end {end:?}",
            events.len()
        );
        for (i, ev) in events.iter().enumerate() {
            assert_eq!(
                ev["seq"],
                i as u64 + 1,
                "slow client's buffered events are contiguous"
            );
            assert_eq!(ev["event"], "dtmf-received", "{}", ev["event"]);
        }
        match &end {
            Some(End::Close(4013, _)) => {}
            other => panic!(
                "slow consumer: expected close 4013 after {} buffered events, got {other:?}",
                events.len()
            ),
        }
        assert!(
            events.len() < n,
            "a closed slow consumer did not get everything"
        );
        assert!(
            closed_after.is_some(),
            "the slow session stayed registered for 10 s after the flood while its client \
             did not read (it only closed once the client read again)"
        );
    } else {
        // Under the queue bound: once it reads, the paused client gets
        // everything, in order, and stays open.
        let slow = slow.as_mut().unwrap();
        for seq in 1..=n as u64 {
            let ev = next_json(slow).await;
            assert_eq!(ev["seq"], seq, "paused client: {}", ev["event"]);
        }
        expect_silence(slow, Duration::from_millis(300)).await;
        send_json(slow, json!({"type":"ping","data":{}})).await;
        assert_eq!(next_json(slow).await["event"], "pong");
    }

    // The same user's connection that kept up got every event and is open.
    let mut twin = twin.await.expect("twin reader");
    send_json(&mut twin, json!({"type":"ping","data":{}})).await;
    assert_eq!(next_json(&mut twin).await["event"], "pong");

    // Memory stays bounded (the daemon runs in this process).
    let rss_after = rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!("RSS {} MB → {} MB", rss_before >> 20, rss_after >> 20);
    assert!(
        growth < 200 << 20,
        "process RSS grew by {} MB during a flood of {n} events",
        growth >> 20
    );

    let st = status(&s).await;
    let open = if overflow { 2 } else { 3 };
    assert_eq!(st["connections"]["total"], open, "{st}");
    assert_eq!(st["connections"]["perUser"]["slow"], open - 1, "{st}");
    assert_eq!(st["events"]["received"], n as u64 + fast_seq, "{st}");

    // Resume from the start: every event, seq 1..=n, then `resumed`.
    let mut again = s
        .ws_raw(&format!("token={}&since=0", s.token("slow")), &[])
        .await;
    let connected = next_json(&mut again).await;
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["data"]["lastSeq"], n as u64, "{connected}");
    let mut seen = HashSet::new();
    for seq in 1..=n as u64 {
        let ev = next_json(&mut again).await;
        assert_eq!(ev["seq"], seq, "resume: {}", ev["event"]);
        seen.insert(ev["id"].as_str().unwrap().to_string());
    }
    let resumed = next_json(&mut again).await;
    assert_eq!(resumed["event"], "resumed", "{resumed}");
    assert_eq!(
        resumed["data"],
        json!({"from":0,"to":n,"gap":false}),
        "{resumed}"
    );
    assert_eq!(next_json(&mut again).await["event"], "snapshot");
    let posted_ids: HashSet<String> = ids.into_iter().collect();
    assert_eq!(seen, posted_ids, "resume returns exactly the posted events");
    eprintln!("total {:?}", started.elapsed());
    s.stop().await;
}

/// A client that stops reading for a while but whose queue never fills is
/// not closed: once it reads again it gets every event in order.
#[tokio::test]
async fn paused_reader_within_the_queue_bound_gets_everything() {
    let s = Server::start().await;
    s.put_user("u1", json!({})).await;
    let mut ws = ws_with_rcvbuf(&s, &format!("token={}", s.token("u1")), Some(4096)).await;
    read_connected(&mut ws).await;
    let n = 200;
    let mut poster = Poster::connect(&s).await;
    for _ in 0..n {
        let env = event_for("u1", "call.dtmf.received", "c1", 1024);
        let r = poster.post(&s.signer, env.to_string().as_bytes()).await;
        assert_eq!(r.status, 200);
    }
    for seq in 1..=n as u64 {
        let ev = next_json(&mut ws).await;
        assert_eq!(ev["seq"], seq, "{}", ev["event"]);
    }
    expect_silence(&mut ws, Duration::from_millis(300)).await;
    assert_eq!(total_connections(&s).await, 1);
    s.stop().await;
}

/// The slow-consumer close also applies while the session is replaying
/// history (`?since=0`): a client that connects with a large backlog and
/// does not read, while live events overflow its queue, is closed with 4013
/// (it must not stay registered until the 30 s write timeout and then
/// vanish without a close code). Runs on the embedded store: it needs
/// thousands of events for one user quickly (see `flood_shape`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_busy_replaying_history_is_closed_with_4013() {
    let s = Server::start_with(&[("CALLBRIDGE_MONGODB_URI", "")]).await;
    s.put_user("u1", json!({})).await;
    // History larger than the socket buffers hold.
    let history = 1500;
    let pad = 2048;
    let posted = Arc::new(AtomicUsize::new(0));
    let ids = spawn_flood(&s, "u1", history, pad, posted.clone())
        .await
        .unwrap();
    assert_eq!(ids.len(), history);

    // Connect with since=0 and never read: the replay blocks on the socket.
    let slow = ws_with_rcvbuf(&s, &format!("token={}&since=0", s.token("u1")), Some(4096)).await;
    wait_total(&s, 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Live events overflow the session's queue meanwhile.
    let flood_done = Arc::new(tokio::sync::Notify::new());
    let watcher = spawn_slow_watcher(&s, "u1", 1, slow, flood_done.clone());
    let live = QUEUE + 200;
    let started = Instant::now();
    let live_ids = spawn_flood(&s, "u1", live, pad, posted.clone())
        .await
        .unwrap();
    flood_done.notify_one();
    assert_eq!(live_ids.len(), live);
    eprintln!("{live} live events posted in {:?}", started.elapsed());

    let (texts, end, closed_after) = watcher.await.unwrap();
    let events: Vec<&Value> = texts.iter().filter(|v| v.get("seq").is_some()).collect();
    let names: Vec<&str> = texts
        .iter()
        .filter(|v| v.get("seq").is_none())
        .map(|v| v["event"].as_str().unwrap_or("?"))
        .collect();
    eprintln!(
        "session ended after {closed_after:?}; client read {} events, then {names:?}, end {end:?}",
        events.len()
    );
    assert_eq!(texts[0]["event"], "connected", "{}", texts[0]);
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev["seq"], i as u64 + 1, "events are contiguous");
    }
    assert!(
        closed_after.is_some(),
        "queue overflowed during the replay, yet the session stayed registered for 10 s \
         after the live flood while its client did not read (then: {end:?})"
    );
    match &end {
        Some(End::Close(4013, _)) => {}
        other => panic!("expected close 4013, got {other:?}"),
    }
    assert!(events.len() < history + live);
    wait_total(&s, 0, WAIT).await;
    s.stop().await;
}
