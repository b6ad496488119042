//! Load generator for a running callbridge: opens `--conns` wss connections
//! for `--users` users, posts `--webhooks` signed webhooks with
//! `--concurrency` keep-alive HTTPS posters, and reports webhook throughput,
//! webhook response latency, delivery latency (webhook sent → frame
//! received), lost events, and (with `--pid`) the daemon's RSS.
//!
//! Posters retry a webhook (same event id) on a non-2xx answer or a broken
//! connection, as Telnyx does; an event counts as lost when a connected
//! session of its user never receives it.
//!
//! Used by `scripts/bench.sh`; printed figures are measurements, nothing here
//! asserts a target.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use callbridge::client::{self, Https};

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for callbridge")]
struct Args {
    /// https://host:port of the daemon; several, comma-separated, for
    /// instances sharing one MongoDB (connections and posters are spread
    /// over them, and move to the next one when theirs goes away).
    #[arg(long, value_delimiter = ',')]
    url: Vec<String>,
    /// Dev data dir of the daemon (CA, signing key, JWT secret).
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    admin_token: String,
    #[arg(long, default_value_t = 50)]
    users: usize,
    #[arg(long, default_value_t = 100)]
    conns: usize,
    #[arg(long, default_value_t = 10_000)]
    webhooks: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Target webhooks per second in total (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Daemon PID, to read its RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Label printed with the results.
    #[arg(long, default_value = "run")]
    label: String,
    /// Skip creating users (a second run on the same daemon).
    #[arg(long)]
    no_setup: bool,
    /// Only open connections, wait, report RSS per connection, and exit.
    #[arg(long)]
    idle_only: bool,
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Sum and count of a Prometheus histogram in `/metrics`.
fn histogram_sum_count(metrics: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("sum"), get("count"))
}

#[derive(Default)]
struct Received {
    /// (user, event id) → frames received across that user's sessions.
    counts: HashMap<(usize, String), u32>,
    delivery_us: Vec<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let files = callbridge::dev::DevFiles::new(&args.data_dir);
    let ca = std::fs::read(&files.ca).expect("CA file in the data dir");
    let tls = callbridge::tls::client_config(Some(&ca)).expect("client TLS");
    let signer = Arc::new(callbridge::dev::load_signer(&files).expect("signing key"));
    let secret = std::fs::read_to_string(&files.jwt_secret).expect("jwt secret");
    let secret = secret.trim().to_string();
    let urls = args.url.clone();
    let first = urls[0].clone();
    let auth = format!("Bearer {}", args.admin_token);

    if !args.no_setup {
        let mut admin = Https::connect(&first, tls.clone()).await.expect("connect");
        for u in 0..args.users {
            let r = admin
                .request(
                    "PUT",
                    &format!("/api/users/bench{u}"),
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    json!({"role": "agent"}).to_string(),
                )
                .await
                .expect("PUT user");
            assert_eq!(
                r.status,
                200,
                "PUT user: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }

    let rss_before = args.pid.and_then(rss_kb);
    let epoch = Instant::now();
    let received = Arc::new(Mutex::new(Received::default()));
    let mut sessions_per_user = vec![0u32; args.users];
    let mut readers = Vec::new();
    let reconnects = Arc::new(AtomicU64::new(0));
    let now = callbridge::clock::now_secs();
    let connect_start = Instant::now();
    for c in 0..args.conns {
        let user = c % args.users;
        sessions_per_user[user] += 1;
        let token =
            callbridge::auth::mint(secret.as_bytes(), &format!("bench{user}"), None, 3600, now)
                .unwrap();
        let (ws, last) = open_session(&urls, c % urls.len(), &token, 0, tls.clone()).await;
        let received = received.clone();
        let urls = urls.clone();
        let tls = tls.clone();
        let reconnects = reconnects.clone();
        readers.push(tokio::spawn(async move {
            let mut ws = ws;
            let mut last_seq = last;
            let mut at_url = c % urls.len();
            loop {
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(t) = msg else { continue };
                    let at = epoch.elapsed().as_micros() as u64;
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    let (Some(id), Some(seq)) = (v["id"].as_str(), v["seq"].as_u64()) else {
                        continue;
                    };
                    if seq <= last_seq {
                        continue;
                    }
                    last_seq = seq;
                    let sent = v["data"]["raw"]["bench_sent_us"].as_u64().unwrap_or(at);
                    let mut r = received.lock().unwrap();
                    *r.counts.entry((user, id.to_string())).or_default() += 1;
                    r.delivery_us.push(at.saturating_sub(sent));
                }
                // The instance went away: resume on the next one with `since`.
                reconnects.fetch_add(1, Ordering::Relaxed);
                at_url = (at_url + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (next, _) = open_session(&urls, at_url, &token, last_seq, tls.clone()).await;
                ws = next;
            }
        }));
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    if let (Some(pid), Some(before)) = (args.pid, rss_before) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(after) = rss_kb(pid) {
            println!(
                "[{}] connections={} opened in {:.1}s  daemon RSS {} KB -> {} KB  = {:.1} KB per connection",
                args.label,
                args.conns,
                connect_secs,
                before,
                after,
                after.saturating_sub(before) as f64 / args.conns.max(1) as f64
            );
        }
    }
    if args.idle_only {
        return;
    }

    let metrics_before =
        client::request_once(&format!("{first}/metrics"), "GET", &[], "", tls.clone())
            .await
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .unwrap_or_default();

    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.webhooks)));
    let start = Instant::now();
    let per_poster_interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64));
    let mut posters = Vec::new();
    for poster in 0..args.concurrency {
        let (next, retries, latencies, signer, tls) = (
            next.clone(),
            retries.clone(),
            latencies.clone(),
            signer.clone(),
            tls.clone(),
        );
        let args = args.clone();
        let urls = urls.clone();
        posters.push(tokio::spawn(async move {
            let mut conn: Option<Https> = None;
            let mut at_url = poster % urls.len();
            let mut tick = per_poster_interval.map(tokio::time::interval);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= args.webhooks {
                    return;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let user = i % args.users;
                let body = webhook_body(i, user, epoch);
                loop {
                    if conn.is_none() {
                        conn = Https::connect(&urls[at_url], tls.clone()).await.ok();
                        if conn.is_none() {
                            at_url = (at_url + 1) % urls.len();
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let ts = callbridge::clock::now_secs();
                    let sig = signer.sign(ts, body.as_bytes());
                    let ts = ts.to_string();
                    let t0 = Instant::now();
                    let r = c
                        .request(
                            "POST",
                            "/webhooks/telnyx",
                            &[
                                ("content-type", "application/json"),
                                ("telnyx-signature-ed25519", &sig),
                                ("telnyx-timestamp", &ts),
                            ],
                            body.clone(),
                        )
                        .await;
                    match r {
                        Ok(resp) if resp.status == 200 => {
                            latencies
                                .lock()
                                .unwrap()
                                .push(t0.elapsed().as_micros() as u64);
                            break;
                        }
                        Ok(_) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(_) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                            at_url = (at_url + 1) % urls.len();
                        }
                    }
                }
            }
        }));
    }
    for p in posters {
        p.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Let the last frames arrive.
    let expected: u64 = (0..args.webhooks)
        .map(|i| sessions_per_user[i % args.users] as u64)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: u64 = received
            .lock()
            .unwrap()
            .counts
            .values()
            .map(|c| *c as u64)
            .sum();
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics_after =
        client::request_once(&format!("{first}/metrics"), "GET", &[], "", tls.clone())
            .await
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .unwrap_or_default();

    let r = received.lock().unwrap();
    let mut lost = 0u64;
    let mut dup = 0u64;
    for i in 0..args.webhooks {
        let user = i % args.users;
        let want = sessions_per_user[user];
        let got = r.counts.get(&(user, event_id(i))).copied().unwrap_or(0);
        lost += want.saturating_sub(got) as u64;
        dup += got.saturating_sub(want) as u64;
    }
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let mut del = r.delivery_us.clone();
    del.sort_unstable();
    let (s0, c0) = histogram_sum_count(&metrics_before, "callbridge_store_latency_seconds");
    let (s1, c1) = histogram_sum_count(&metrics_after, "callbridge_store_latency_seconds");
    let (w0, wc0) = histogram_sum_count(&metrics_before, "callbridge_webhook_latency_seconds");
    let (w1, wc1) = histogram_sum_count(&metrics_after, "callbridge_webhook_latency_seconds");
    let store_ms = if c1 > c0 {
        (s1 - s0) / (c1 - c0) * 1000.0
    } else {
        f64::NAN
    };
    let handler_ms = if wc1 > wc0 {
        (w1 - w0) / (wc1 - wc0) * 1000.0
    } else {
        f64::NAN
    };
    println!(
        "[{}] webhooks={} concurrency={} users={} conns={} in {:.2}s = {:.0} webhooks/s (retries {})",
        args.label,
        args.webhooks,
        args.concurrency,
        args.users,
        args.conns,
        elapsed,
        args.webhooks as f64 / elapsed,
        retries.load(Ordering::Relaxed)
    );
    println!(
        "[{}] webhook response ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        args.label,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!(
        "[{}] delivery ms (sent -> frame received): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  frames {}",
        args.label,
        pct(&del, 0.50),
        pct(&del, 0.90),
        pct(&del, 0.99),
        pct(&del, 1.0),
        del.len()
    );
    println!(
        "[{}] daemon-side mean per webhook: {:.3} ms handling, of which {:.3} ms in the store",
        args.label, handler_ms, store_ms
    );
    println!(
        "[{}] lost events: {}  duplicate frames: {}",
        args.label, lost, dup
    );
    if let Some(kb) = args.pid.and_then(rss_kb) {
        println!("[{}] daemon RSS at end: {} KB", args.label, kb);
    }
    for h in readers {
        h.abort();
    }
    if lost > 0 {
        std::process::exit(3);
    }
}

/// Open a session on `urls[i]` (resuming after `since`), retrying until it
/// works; returns it with the last seq it replayed.
async fn open_session(
    urls: &[String],
    mut i: usize,
    token: &str,
    since: u64,
    tls: Arc<rustls::ClientConfig>,
) -> (client::Wss, u64) {
    loop {
        let ws_url = format!("{}/ws", urls[i].replacen("https://", "wss://", 1));
        let url = if since > 0 {
            format!("{ws_url}?token={token}&since={since}")
        } else {
            format!("{ws_url}?token={token}")
        };
        if let Ok((mut ws, _)) = client::ws_connect(&url, &[], tls.clone()).await {
            if since > 0 {
                // Replayed events come before `snapshot`: the reader counts them.
                return (ws, since);
            }
            // connected + snapshot, then live events only.
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                if t.as_str().contains("\"event\":\"snapshot\"") {
                    return (ws, since);
                }
            }
        }
        i = (i + 1) % urls.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Unique per run, so a second run on the same daemon is not all duplicates.
fn event_id(i: usize) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string());
    format!("bench-{run}-{i:08}")
}

fn webhook_body(i: usize, user: usize, epoch: Instant) -> String {
    let cs = base64::engine::general_purpose::STANDARD
        .encode(json!({"userId": format!("bench{user}")}).to_string());
    json!({
        "data": {
            "record_type": "event",
            "id": event_id(i),
            "event_type": "call.dtmf.received",
            "occurred_at": callbridge::clock::now_rfc3339(),
            "payload": {
                "call_control_id": format!("v3:bench-call-{user}"),
                "call_leg_id": format!("bench-leg-{user}"),
                "call_session_id": format!("bench-session-{user}"),
                "connection_id": "bench",
                "from": "+15551230001",
                "to": "+15559870002",
                "digit": "5",
                "client_state": cs,
                "bench_sent_us": epoch.elapsed().as_micros() as u64,
            }
        },
        "meta": {"attempt": 1}
    })
    .to_string()
}
