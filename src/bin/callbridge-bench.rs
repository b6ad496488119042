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
//!
//! A run goes through these phases, one function each, in this order (see
//! `main`): load the dev files ([`load_setup`]), create the users
//! ([`create_users`]), connect the clients ([`connect_clients`]), report the
//! RSS the connections cost ([`report_connection_rss`]; `--idle-only` stops
//! there), post the webhooks ([`post_webhooks`], paced by
//! [`per_poster_interval`] with `--rate`), wait for the last frames
//! ([`wait_for_frames`]), count lost and duplicate frames
//! ([`count_delivery`]) and print the results ([`print_results`]). Its command
//! line, output lines and exit codes (0; 3 when an event was lost; 2 for a bad
//! command line; 101, a panic, when the setup fails) are what
//! `scripts/bench.sh` and the README's table rely on.
//!
//! `--messages` replaces the webhooks with §8 messages ([`run_messages`]);
//! `--recovery N` runs a Telnyx API stand-in holding N failed deliveries
//! ([`telnyx_log`]) and recovers them while the webhooks are posted
//! ([`run_recovery`]); `--actions N` sends N call actions through the
//! daemon to that stand-in and times both legs ([`actions`]);
//! `--connects N --token hs256|jwks-rs256` opens and closes N connections
//! and reports what a connect, and its token's verification, costs the
//! daemon ([`connects`], with an identity-provider stand-in serving a
//! JWKS: [`jwks_provider`]).

// Functions fit on a screen: at most 80 lines of code (clippy.toml).
#![warn(clippy::too_many_lines)]

#[path = "callbridge-bench/actions.rs"]
mod actions;
#[path = "callbridge-bench/connects.rs"]
mod connects;
#[path = "callbridge-bench/jwks_provider.rs"]
mod jwks_provider;
#[path = "callbridge-bench/telnyx_calls.rs"]
mod telnyx_calls;
#[path = "callbridge-bench/telnyx_log.rs"]
mod telnyx_log;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use callbridge::client::{self, Https};
use callbridge::telnyx::Signer;

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
    /// Webhooks no user claims (no client_state, unknown numbers): with the
    /// daemon's `CALLBRIDGE_UNROUTED=broadcast` each goes to every user, so
    /// every session must receive every webhook.
    #[arg(long)]
    broadcast: bool,
    /// Instead of webhooks: bind every user to one call (a shared number,
    /// one inbound webhook) and send this many §8 messages to that call
    /// from one more session of `bench0`; every session of every user must
    /// receive each once. Needs the daemon's client rate limit raised.
    #[arg(long, default_value_t = 0)]
    messages: usize,
    /// `send`s the messages sender has out before it waits for a `sent`
    /// (1: one at a time, the latency of one message alone).
    #[arg(long, default_value_t = 32)]
    send_window: usize,
    /// `ok` or `hang`: run an HTTP receiver in this process and register it
    /// as an outbound endpoint for every event (contract §10), answering
    /// 200 at once or never; the run waits for the `ok` receiver to get
    /// every webhook before it reads the daemon's CPU.
    #[arg(long)]
    outbound: Option<String>,
    /// Open one operator's console stream (`GET /api/console/stream`, §12)
    /// before the webhooks and read it to the end of the run, as an open
    /// `/console` tab does: what an open console costs the daemon.
    #[arg(long)]
    console: bool,
    /// Recover a backlog: a Telnyx API stand-in in this process, on
    /// `--telnyx-port`, holds this many failed deliveries (`call.initiated`,
    /// `call.answered`, `call.hangup` of N / 3 calls of the users, routed by
    /// `client_state`); 2 s into the webhooks the run `POST`s
    /// `/api/recover`, and the webhooks go on (past `--webhooks` if need
    /// be) until it answered. Reports the run's events per second, the
    /// daemon's RSS during it, the webhooks' delivery latency in its
    /// window, and every recovered event's frames. The daemon must run with
    /// `CALLBRIDGE_TELNYX_API_URL=http://127.0.0.1:PORT/v2` and
    /// `CALLBRIDGE_TELNYX_API_KEY` = `--telnyx-key`.
    #[arg(long, default_value_t = 0, requires = "telnyx_port")]
    recovery: usize,
    /// Instead of webhooks: bind a call to `bench0` (one signed
    /// `call.initiated` naming it in `client_state`) and send this many
    /// `send_dtmf` call actions on it from one more session of `bench0`,
    /// answered by the Telnyx API stand-in on `--telnyx-port`; reports
    /// both legs' latency (client → stand-in, stand-in → client), the
    /// round trip, actions per second and the daemon's CPU per action. The
    /// daemon must run with `CALLBRIDGE_TELNYX_API_URL=
    /// http://127.0.0.1:PORT/v2`, `CALLBRIDGE_TELNYX_API_KEY` =
    /// `--telnyx-key`, `send_dtmf` allowed, and its client rate limit
    /// raised.
    #[arg(long, default_value_t = 0, requires = "telnyx_port")]
    actions: usize,
    /// Actions the `--actions` client has out before it waits for an
    /// answer (1: one at a time; the daemon runs 4 of a connection at once).
    #[arg(long, default_value_t = 1)]
    action_window: usize,
    /// Loopback port for the `--recovery` and `--actions` stand-in.
    #[arg(long)]
    telnyx_port: Option<u16>,
    /// The API key the `--recovery` and `--actions` stand-in accepts.
    #[arg(long, default_value = "bench-telnyx-key-0123456789")]
    telnyx_key: String,
    /// Instead of webhooks: open this many WebSocket connections of the
    /// `--users` users (`?token=`, a different token each), each until
    /// `connected` arrives, then close it normally; reports connects per
    /// second, connect latency and the daemon's CPU per connect, and times
    /// the daemon's token verification alone in this process. Waits for
    /// the daemon's `/ready` first (a JWKS URL makes it wait for the
    /// document). `--conns` is not used.
    #[arg(long, default_value_t = 0)]
    connects: usize,
    /// The `--connects` tokens: `hs256` (the dev secret) or `jwks-rs256`
    /// (the stand-in's RSA key; needs `--jwks-port`).
    #[arg(long, value_enum, default_value = "hs256")]
    token: connects::TokenKind,
    /// `--connects` open at a time.
    #[arg(long, default_value_t = 4)]
    connect_concurrency: usize,
    /// Serve an identity provider's JWKS document (one RS256 key, made in
    /// this process) on this loopback port, at any path: the daemon runs
    /// with `CALLBRIDGE_JWT_JWKS_URL=http://127.0.0.1:PORT/.well-known/jwks.json`.
    #[arg(long)]
    jwks_port: Option<u16>,
}

/// How long the webhooks run before a `--recovery` run starts.
const RECOVER_AFTER: Duration = Duration::from_secs(2);

/// The number every user shares in a `--messages` run.
const ROOM_NUMBER: &str = "+15550009999";

/// utime + stime of a process, in ms (`/proc/PID/stat` fields 14 and 15,
/// in clock ticks of 10 ms).
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

/// The value of a counter in `/metrics` (0 when absent).
fn counter_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
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

/// Mean, in ms, of the observations a histogram gained between two
/// `/metrics` scrapes: the daemon's own view of the webhooks this run posted.
/// NaN when it gained none (printed as `NaN`, e.g. by a daemon without the
/// metric).
fn histogram_mean_ms(before: &str, after: &str, name: &str) -> f64 {
    let (s0, c0) = histogram_sum_count(before, name);
    let (s1, c1) = histogram_sum_count(after, name);
    if c1 > c0 {
        (s1 - s0) / (c1 - c0) * 1000.0
    } else {
        f64::NAN
    }
}

#[derive(Default)]
struct Received {
    /// (user, event id) → frames received across that user's sessions.
    counts: HashMap<(usize, String), u32>,
    /// The same for frames marked `"recovered": true` (`--recovery`).
    recovered: HashMap<(usize, String), u32>,
    /// (sent, delivery latency) of each stamped frame, µs.
    delivery_us: Vec<(u64, u64)>,
}

impl Received {
    fn frames(&self) -> u64 {
        self.counts.values().map(|c| *c as u64).sum()
    }

    fn recovered_frames(&self) -> u64 {
        self.recovered.values().map(|c| *c as u64).sum()
    }
}

/// What the run needs from the daemon's `--dev` data dir.
struct Setup {
    /// Trusts the dev CA: every connection of the run uses it.
    tls: Arc<rustls::ClientConfig>,
    /// The dev "Telnyx" key the webhooks are signed with.
    signer: Arc<Signer>,
    /// The HS256 secret the dialer tokens are minted with.
    jwt_secret: String,
}

/// The connected clients, reading in the background until `main` aborts them.
struct Clients {
    received: Arc<Mutex<Received>>,
    /// Sessions opened per user: each of a user's events must arrive this
    /// many times (once per session) to count as delivered.
    sessions_per_user: Vec<u32>,
    readers: Vec<JoinHandle<()>>,
    connect_secs: f64,
}

/// What the posters measured.
struct Posted {
    elapsed_secs: f64,
    retries: u64,
    /// Response time of each accepted webhook, µs, sorted.
    latencies_us: Vec<u64>,
}

/// Delivery, counted once the last frames had their chance to arrive.
struct Tally {
    lost: u64,
    dup: u64,
    /// Webhook sent → frame received, µs, sorted.
    delivery_us: Vec<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let setup = load_setup(&args);
    if args.connects > 0 {
        return connects::run(&args, &setup).await;
    }
    let first = args.url[0].as_str();
    if !args.no_setup {
        create_users(&args, first, &setup.tls).await;
    }
    // Taken before any connection: the idle figure is the difference.
    let rss_before = args.pid.and_then(rss_kb);
    // Webhooks carry their send time relative to this instant
    // (`bench_sent_us`) and readers stamp frames against it, so delivery
    // latency needs no clock shared with the daemon.
    let epoch = Instant::now();
    let clients = connect_clients(&args, &setup, epoch).await;
    report_connection_rss(&args, rss_before, clients.connect_secs).await;
    if args.idle_only {
        return;
    }
    if args.messages > 0 {
        return run_messages(&args, &setup, clients, epoch).await;
    }
    if args.recovery > 0 {
        return run_recovery(&args, &setup, clients, epoch).await;
    }
    if args.actions > 0 {
        return actions::run(&args, &setup, clients).await;
    }

    let receiver = match args.outbound.as_deref() {
        Some(mode) => Some(outbound_receiver(&args, &setup, mode == "hang").await),
        None => None,
    };
    let console = match args.console {
        true => Some(open_console(&args, &setup).await),
        false => None,
    };
    let metrics_before = fetch_metrics(first, &setup.tls).await;
    let cpu_before = args.pid.and_then(cpu_ms);
    let posted = post_webhooks(&args, &setup, epoch, Indexes::upto(args.webhooks)).await;
    let expected = expected_frames(&args, &clients.sessions_per_user);
    wait_for_frames(&clients.received, expected).await;
    if let Some(r) = &receiver {
        report_outbound(&args, r).await;
    }
    let cpu_after = args.pid.and_then(cpu_ms);
    let metrics_after = fetch_metrics(first, &setup.tls).await;

    let tally = count_delivery(&args, &clients);
    print_results(&args, &posted, &tally, &metrics_before, &metrics_after);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        print_cpu(&args, b.saturating_sub(a), expected);
    }
    print_store_commands(&args, &metrics_before, &metrics_after);
    if let Some(c) = console {
        c.report(&args);
    }
    for h in clients.readers {
        h.abort();
    }
    if tally.lost > 0 {
        std::process::exit(3);
    }
}

/// Setup: the CA, signing key and JWT secret `serve --dev` wrote into
/// `--data-dir`. A missing file panics (exit code 101) saying which.
fn load_setup(args: &Args) -> Setup {
    let files = callbridge::dev::DevFiles::new(&args.data_dir);
    let ca = std::fs::read(&files.ca).expect("CA file in the data dir");
    let tls = callbridge::tls::client_config(Some(&ca)).expect("client TLS");
    let signer = Arc::new(callbridge::dev::load_signer(&files).expect("signing key"));
    let secret = std::fs::read_to_string(&files.jwt_secret).expect("jwt secret");
    Setup {
        tls,
        signer,
        jwt_secret: secret.trim().to_string(),
    }
}

/// Setup: users `bench0` … `bench{users-1}` (role `agent`) through the admin
/// API on the first URL, one keep-alive connection. Webhooks reach a user
/// through their `client_state` (`{"userId": …}`), so no phone numbers are
/// needed. Skipped with `--no-setup` (a second run on the same daemon); an
/// answer other than 200 panics.
async fn create_users(args: &Args, url: &str, tls: &Arc<rustls::ClientConfig>) {
    let auth = format!("Bearer {}", args.admin_token);
    let mut admin = Https::connect(url, tls.clone()).await.expect("connect");
    for u in 0..args.users {
        let r = admin
            .request(
                "PUT",
                &format!("/api/users/bench{u}"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                if args.messages > 0 {
                    json!({"role": "agent", "phoneNumbers": [ROOM_NUMBER]})
                } else {
                    json!({"role": "agent"})
                }
                .to_string(),
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

/// Connecting: `--conns` sessions, one after the other, connection `c` for
/// user `c % users` on URL `c % urls` (so users get `conns / users` sessions
/// each, spread over the instances). Each is open (its `snapshot` received)
/// before the next starts, so the connect time is that of sessions opened
/// one at a time. Tokens are valid for an hour, longer than any run.
async fn connect_clients(args: &Args, setup: &Setup, epoch: Instant) -> Clients {
    let received = Arc::new(Mutex::new(Received::default()));
    let mut sessions_per_user = vec![0u32; args.users];
    let mut readers = Vec::new();
    let now = callbridge::clock::now_secs();
    let connect_start = Instant::now();
    for c in 0..args.conns {
        let user = c % args.users;
        sessions_per_user[user] += 1;
        let token = callbridge::auth::mint(
            setup.jwt_secret.as_bytes(),
            &format!("bench{user}"),
            None,
            3600,
            now,
        )
        .unwrap();
        let at_url = c % args.url.len();
        let (ws, last_seq) = open_session(&args.url, at_url, &token, 0, setup.tls.clone()).await;
        let reader = Reader {
            user,
            token,
            urls: args.url.clone(),
            at_url,
            tls: setup.tls.clone(),
            received: received.clone(),
            epoch,
        };
        readers.push(tokio::spawn(reader.run(ws, last_seq)));
    }
    Clients {
        received,
        sessions_per_user,
        readers,
        connect_secs: connect_start.elapsed().as_secs_f64(),
    }
}

/// One client session's reader: counts the frames of its user's events and
/// their delivery latency into `received`.
struct Reader {
    user: usize,
    token: String,
    urls: Vec<String>,
    /// The URL the session is on.
    at_url: usize,
    tls: Arc<rustls::ClientConfig>,
    received: Arc<Mutex<Received>>,
    epoch: Instant,
}

impl Reader {
    /// Reads until aborted. When the instance goes away (the kill run) it
    /// waits 100 ms and resumes on the next URL with `since` = the last seq it
    /// saw, as a dialer does, so the events in between are replayed, not lost.
    async fn run(mut self, mut ws: client::Wss, mut last_seq: u64) {
        loop {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                // Stamped before parsing: latency up to the frame's arrival.
                let at = self.epoch.elapsed().as_micros() as u64;
                self.record(t.as_str(), at, &mut last_seq);
            }
            // The instance went away: resume on the next one with `since`.
            self.at_url = (self.at_url + 1) % self.urls.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (next, _) = open_session(
                &self.urls,
                self.at_url,
                &self.token,
                last_seq,
                self.tls.clone(),
            )
            .await;
            ws = next;
        }
    }

    /// Counts one event frame received at `at` (µs since the epoch). Frames
    /// without an id and seq (`connected`, `snapshot`, …) are not events;
    /// a seq at or below the last one is a replay already counted.
    fn record(&self, text: &str, at: u64, last_seq: &mut u64) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let (Some(id), Some(seq)) = (v["id"].as_str(), v["seq"].as_u64()) else {
            return;
        };
        if seq <= *last_seq {
            return;
        }
        *last_seq = seq;
        // A message is known by its `ref` (the id is the server's).
        let (id, stamp) = if v["event"] == "message" {
            (
                v["data"]["ref"].as_str().unwrap_or(id),
                &v["data"]["payload"],
            )
        } else {
            (id, &v["data"]["raw"])
        };
        let sent = stamp["bench_sent_us"].as_u64();
        let mut r = self.received.lock().unwrap();
        let counts = match v["data"]["recovered"] == true {
            true => &mut r.recovered,
            false => &mut r.counts,
        };
        *counts.entry((self.user, id.to_string())).or_default() += 1;
        // Not stamped: the room's call event of a `--messages` run, and
        // recovered events.
        if let Some(sent) = sent {
            r.delivery_us.push((sent, at.saturating_sub(sent)));
        }
    }
}

/// Idle RSS: with `--pid`, the daemon's RSS 2 s after the last connection
/// opened (a pause, so the daemon is done with the last ones) against the
/// RSS before the first, per connection. Printed on every run; with
/// `--idle-only` it is the run's only figure (scripts/bench.sh opens 10,000
/// connections for 1,000 users there).
async fn report_connection_rss(args: &Args, rss_before: Option<u64>, connect_secs: f64) {
    let (Some(pid), Some(before)) = (args.pid, rss_before) else {
        return;
    };
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

/// `/metrics` of `url` on a fresh connection; empty when it cannot be read
/// (the daemon-side figures then print as NaN).
async fn fetch_metrics(url: &str, tls: &Arc<rustls::ClientConfig>) -> String {
    client::request_once(&format!("{url}/metrics"), "GET", &[], "", tls.clone())
        .await
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .unwrap_or_default()
}

/// The webhook indexes the posters take: `next`, up to `end` (excluded).
struct Indexes {
    next: usize,
    end: usize,
}

impl Indexes {
    fn upto(end: usize) -> Arc<Mutex<Indexes>> {
        Arc::new(Mutex::new(Indexes { next: 0, end }))
    }

    fn take(&mut self) -> Option<usize> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Stop at `at_least` or at what was taken, whichever is more: the
    /// indexes posted are `0..end`, with no gap.
    fn stop(&mut self, at_least: usize) {
        self.end = at_least.max(self.next);
    }
}

/// Posting: `--concurrency` posters share the `indexes` of webhooks
/// (`0..webhooks`, unless a `--recovery` run moves the end), so the run ends
/// when the last one is accepted. Throughput is webhooks over the time until
/// every poster is done.
async fn post_webhooks(
    args: &Args,
    setup: &Setup,
    epoch: Instant,
    indexes: Arc<Mutex<Indexes>>,
) -> Posted {
    let retries = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.webhooks)));
    let start = Instant::now();
    let shared = Poster {
        urls: args.url.clone(),
        tls: setup.tls.clone(),
        signer: setup.signer.clone(),
        next: indexes,
        retries: retries.clone(),
        latencies: latencies.clone(),
        users: args.users,
        interval: per_poster_interval(args),
        epoch,
        broadcast: args.broadcast,
    };
    let posters: Vec<_> = (0..args.concurrency)
        .map(|poster| tokio::spawn(shared.clone().run(poster)))
        .collect();
    for p in posters {
        p.await.unwrap();
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    let mut latencies_us = latencies.lock().unwrap().clone();
    latencies_us.sort_unstable();
    Posted {
        elapsed_secs,
        retries: retries.load(Ordering::Relaxed),
        latencies_us,
    }
}

/// Fixed-rate pacing: with `--rate R` each of the N posters waits for its own
/// tick every N / R s before a webhook, so together they post R per second
/// (scripts/bench.sh: 2,000/s from 16 posters, one every 8 ms each). Without
/// it (`--rate 0`) the posters go as fast as the daemon answers. The ticks
/// are tokio intervals: the first is immediate, and a poster held up by a
/// slow answer or a retry catches up with the ticks it missed back to back
/// (tokio's default burst behaviour), so the mean rate holds while posters can
/// keep up.
fn per_poster_interval(args: &Args) -> Option<Duration> {
    (args.rate > 0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate as f64))
}

/// What the posters share; each task has its own clone.
#[derive(Clone)]
struct Poster {
    urls: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    signer: Arc<Signer>,
    /// The webhook indexes left to post.
    next: Arc<Mutex<Indexes>>,
    retries: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    users: usize,
    interval: Option<Duration>,
    epoch: Instant,
    broadcast: bool,
}

/// How one POST of a webhook went.
enum Attempt {
    /// 200: stored and answered; its response time in µs.
    Accepted(u64),
    /// Any other answer (503 while the store is unavailable, …).
    Refused,
    /// The connection broke.
    Broken,
}

impl Poster {
    /// One poster: takes the next webhook index (user `i % users`), waits for
    /// its tick when paced, and posts it until accepted; returns when the
    /// indexes run out. Poster `p` starts on URL `p % urls`.
    async fn run(self, poster: usize) {
        let mut conn: Option<Https> = None;
        let mut at_url = poster % self.urls.len();
        let mut tick = self.interval.map(tokio::time::interval);
        loop {
            let Some(i) = self.next.lock().unwrap().take() else {
                return;
            };
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let body = webhook_body(i, (!self.broadcast).then_some(i % self.users), self.epoch);
            self.post_until_accepted(&mut conn, &mut at_url, &body)
                .await;
        }
    }

    /// Retries as Telnyx does, with the same event id each time, so the
    /// daemon's deduplication is exercised and nothing is lost to a 503. No
    /// instance reachable: try the next URL after 50 ms. A non-2xx answer:
    /// again after 20 ms on the same connection. A broken connection: at once
    /// on a new one to the next URL (the other instance, in the kill run).
    /// Every retry is counted.
    async fn post_until_accepted(&self, conn: &mut Option<Https>, at_url: &mut usize, body: &str) {
        loop {
            if conn.is_none() {
                *conn = Https::connect(&self.urls[*at_url], self.tls.clone())
                    .await
                    .ok();
                if conn.is_none() {
                    *at_url = (*at_url + 1) % self.urls.len();
                }
            }
            let Some(c) = conn.as_mut() else {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match self.post_signed(c, body).await {
                Attempt::Accepted(us) => {
                    self.latencies.lock().unwrap().push(us);
                    return;
                }
                Attempt::Refused => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Attempt::Broken => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    *conn = None;
                    *at_url = (*at_url + 1) % self.urls.len();
                }
            }
        }
    }

    /// One POST, signed afresh (the timestamp must be current); the response
    /// time covers the request only, not the signing.
    async fn post_signed(&self, c: &mut Https, body: &str) -> Attempt {
        let ts = callbridge::clock::now_secs();
        let sig = self.signer.sign(ts, body.as_bytes());
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
                body.to_string(),
            )
            .await;
        match r {
            Ok(resp) if resp.status == 200 => Attempt::Accepted(t0.elapsed().as_micros() as u64),
            Ok(_) => Attempt::Refused,
            Err(_) => Attempt::Broken,
        }
    }
}

/// Frames the run should produce: every webhook once per session of its user.
fn expected_frames(args: &Args, sessions_per_user: &[u32]) -> u64 {
    if args.broadcast {
        let all: u64 = sessions_per_user.iter().map(|n| *n as u64).sum();
        return all * args.webhooks as u64;
    }
    (0..args.webhooks)
        .map(|i| sessions_per_user[i % args.users] as u64)
        .sum()
}

/// Collecting: the last webhook is answered once stored, but its frames may
/// still be on their way; wait until every expected frame arrived, checking
/// every 100 ms, for at most 20 s (after that the missing ones count as
/// lost).
async fn wait_for_frames(received: &Mutex<Received>, expected: u64) {
    wait_for(received, expected, Received::frames).await;
}

/// [`wait_for_frames`], counting with `count`.
async fn wait_for(received: &Mutex<Received>, expected: u64, count: fn(&Received) -> u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = count(&received.lock().unwrap());
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Per event: frames missing from its user's sessions are lost, frames beyond
/// one per session are duplicates.
fn count_delivery(args: &Args, clients: &Clients) -> Tally {
    let r = clients.received.lock().unwrap();
    let mut lost = 0u64;
    let mut dup = 0u64;
    for i in 0..args.webhooks {
        let id = event_id(i);
        let users = if args.broadcast {
            0..args.users
        } else {
            i % args.users..i % args.users + 1
        };
        for user in users {
            let want = clients.sessions_per_user[user];
            let got = r.counts.get(&(user, id.clone())).copied().unwrap_or(0);
            lost += want.saturating_sub(got) as u64;
            dup += got.saturating_sub(want) as u64;
        }
    }
    let mut delivery_us: Vec<u64> = r.delivery_us.iter().map(|d| d.1).collect();
    delivery_us.sort_unstable();
    Tally {
        lost,
        dup,
        delivery_us,
    }
}

/// Reporting: five `[label] …` lines (throughput, webhook response times,
/// delivery times, the daemon's own mean handling and store time per webhook
/// from its `/metrics` histograms, lost and duplicate frames), then with
/// `--pid` the daemon's RSS at the end. scripts/bench.sh prints them as they
/// are; the README's table is read off them.
fn print_results(args: &Args, posted: &Posted, tally: &Tally, before: &str, after: &str) {
    let store_ms = histogram_mean_ms(before, after, "callbridge_store_latency_seconds");
    let handler_ms = histogram_mean_ms(before, after, "callbridge_webhook_latency_seconds");
    let (lat, del) = (&posted.latencies_us, &tally.delivery_us);
    println!(
        "[{}] webhooks={} concurrency={} users={} conns={} in {:.2}s = {:.0} webhooks/s (retries {})",
        args.label,
        args.webhooks,
        args.concurrency,
        args.users,
        args.conns,
        posted.elapsed_secs,
        args.webhooks as f64 / posted.elapsed_secs,
        posted.retries
    );
    println!(
        "[{}] webhook response ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        args.label,
        pct(lat, 0.50),
        pct(lat, 0.99),
        pct(lat, 1.0)
    );
    print_delivery(&args.label, "sent", del);
    println!(
        "[{}] daemon-side mean per webhook: {:.3} ms handling, of which {:.3} ms in the store",
        args.label, handler_ms, store_ms
    );
    println!(
        "[{}] lost events: {}  duplicate frames: {}",
        args.label, tally.lost, tally.dup
    );
    if let Some(kb) = args.pid.and_then(rss_kb) {
        println!("[{}] daemon RSS at end: {} KB", args.label, kb);
    }
}

/// Server CPU (utime + stime of `--pid`) from the first post to the last
/// frame, per webhook and per delivered frame: with the load generator on
/// the same cores, throughput is bounded by the generator, CPU is not.
fn print_cpu(args: &Args, ms: u64, deliveries: u64) {
    let unit = if args.messages > 0 {
        "message"
    } else {
        "webhook"
    };
    println!(
        "[{}] daemon CPU: {} ms = {:.0} us per {unit}, {:.2} us per delivery ({} deliveries)",
        args.label,
        ms,
        ms as f64 * 1000.0 / args.webhooks.max(1) as f64,
        ms as f64 * 1000.0 / deliveries.max(1) as f64,
        deliveries
    );
}

/// MongoDB commands the daemon sent per webhook (its
/// `callbridge_store_commands_total`, the driver's command monitoring);
/// nothing on the embedded store. With several instances, the first's.
fn print_store_commands(args: &Args, before: &str, after: &str) {
    let name = "callbridge_store_commands_total";
    let n = counter_value(after, name) - counter_value(before, name);
    if n > 0.0 {
        let unit = if args.messages > 0 {
            "message"
        } else {
            "webhook"
        };
        println!(
            "[{}] MongoDB commands: {:.0} = {:.2} per {unit}",
            args.label,
            n,
            n / args.webhooks.max(1) as f64
        );
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

/// `--messages`: bind the users to one call, send the messages to it, wait
/// for every session's copy, and report like a webhook run (per message).
async fn run_messages(args: &Args, setup: &Setup, clients: Clients, epoch: Instant) {
    let first = args.url[0].as_str();
    let room = bind_room(args, setup).await;
    let sessions: u64 = clients.sessions_per_user.iter().map(|n| *n as u64).sum();
    // The room's call event reaches every session first.
    wait_for_frames(&clients.received, sessions).await;
    let metrics_before = fetch_metrics(first, &setup.tls).await;
    let cpu_before = args.pid.and_then(cpu_ms);
    let sent = send_messages(args, setup, &room, epoch).await;
    let expected = sessions * (args.messages as u64 + 1);
    wait_for_frames(&clients.received, expected).await;
    let cpu_after = args.pid.and_then(cpu_ms);
    let metrics_after = fetch_metrics(first, &setup.tls).await;
    let all_users = Args {
        broadcast: true,
        webhooks: args.messages,
        ..args.clone()
    };
    let tally = count_delivery(&all_users, &clients);
    print_message_results(args, &sent, &tally, sessions);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        print_cpu(&all_users, b.saturating_sub(a), expected - sessions);
    }
    print_store_commands(&all_users, &metrics_before, &metrics_after);
    for h in clients.readers {
        h.abort();
    }
    if tally.lost > 0 {
        std::process::exit(3);
    }
}

/// One inbound call to the number every user has: the call is bound to
/// all of them (routing rule 3). Returns its call_session_id.
async fn bind_room(args: &Args, setup: &Setup) -> String {
    let room = format!("bench-room-{}", &event_id(0)[6..14]);
    let body = json!({
        "data": {"record_type": "event", "id": format!("{room}-ring"), "event_type": "call.initiated",
                 "occurred_at": callbridge::clock::now_rfc3339(),
                 "payload": {"call_control_id": format!("v3:{room}"), "call_session_id": room,
                             "call_leg_id": room, "direction": "incoming",
                             "from": "+15551230001", "to": ROOM_NUMBER}},
        "meta": {"attempt": 1}
    })
    .to_string();
    post_signed_once(args, setup, body, "room webhook").await;
    room
}

/// One signed webhook to the first URL on a connection of its own; an
/// answer other than 200 panics, saying `what` it was.
async fn post_signed_once(args: &Args, setup: &Setup, body: String, what: &str) {
    let mut c = Https::connect(&args.url[0], setup.tls.clone())
        .await
        .expect("connect");
    let ts = callbridge::clock::now_secs();
    let sig = setup.signer.sign(ts, body.as_bytes());
    let headers = [
        ("telnyx-signature-ed25519", sig.as_str()),
        ("telnyx-timestamp", &ts.to_string()),
        ("content-type", "application/json"),
    ];
    let r = c
        .request("POST", "/webhooks/telnyx", &headers, body)
        .await
        .expect("POST");
    assert_eq!(
        r.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// What the messages sender measured.
struct SentMessages {
    elapsed_secs: f64,
    errors: u64,
    /// `send` written → its `sent` read, µs, sorted.
    acks_us: Vec<u64>,
}

/// The sender: `bench0`'s own session sends `--messages` messages to the
/// call, at most `--send-window` waiting for their `sent` at a time, and
/// reads everything the daemon sends it (its own copies included).
async fn send_messages(args: &Args, setup: &Setup, room: &str, epoch: Instant) -> SentMessages {
    use futures_util::SinkExt;
    let now = callbridge::clock::now_secs();
    let token = callbridge::auth::mint(setup.jwt_secret.as_bytes(), "bench0", None, 3600, now)
        .expect("token");
    let (ws, _) = open_session(&args.url, 0, &token, 0, setup.tls.clone()).await;
    let (mut sink, mut stream) = ws.split();
    let mut written: HashMap<String, Instant> = HashMap::new();
    let (mut next, mut answered, mut errors) = (0usize, 0usize, 0u64);
    let mut acks_us = Vec::with_capacity(args.messages);
    let start = Instant::now();
    while answered < args.messages {
        while next < args.messages && next - answered < args.send_window.max(1) {
            let id = event_id(next);
            let payload = json!({"bench_sent_us": epoch.elapsed().as_micros() as u64});
            let frame = json!({"type": "send", "call": room, "payload": payload, "ref": id});
            written.insert(id, Instant::now());
            sink.send(Message::text(frame.to_string()))
                .await
                .expect("send");
            next += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an answer within 30 s")
            .expect("sender session open")
            .expect("sender session readable");
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
        let at = v["data"]["ref"].as_str().and_then(|r| written.remove(r));
        match (v["event"].as_str(), at) {
            (Some("sent"), Some(at)) => acks_us.push(at.elapsed().as_micros() as u64),
            (Some("error"), Some(_)) => errors += 1,
            _ => continue,
        }
        answered += 1;
    }
    acks_us.sort_unstable();
    SentMessages {
        elapsed_secs: start.elapsed().as_secs_f64(),
        errors,
        acks_us,
    }
}

fn print_message_results(args: &Args, sent: &SentMessages, tally: &Tally, sessions: u64) {
    let (acks, del) = (&sent.acks_us, &tally.delivery_us);
    println!(
        "[{}] messages={} to a call of {} users ({} sessions) in {:.2}s = {:.0} messages/s (errors {})",
        args.label,
        args.messages,
        args.users,
        sessions,
        sent.elapsed_secs,
        args.messages as f64 / sent.elapsed_secs,
        sent.errors
    );
    println!(
        "[{}] sent ms (send -> sent): p50 {:.2}  p99 {:.2}  max {:.2}",
        args.label,
        pct(acks, 0.50),
        pct(acks, 0.99),
        pct(acks, 1.0)
    );
    print_delivery(&args.label, "send", del);
    println!(
        "[{}] lost messages: {}  duplicate frames: {}",
        args.label, tally.lost, tally.dup
    );
}

/// One `delivery ms` line: frame latencies (µs, sorted) from `from` (the
/// webhook `sent`, the message `send`) to the frame received.
fn print_delivery(label: &str, from: &str, del: &[u64]) {
    println!(
        "[{label}] delivery ms ({from} -> frame received): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  frames {}",
        pct(del, 0.50),
        pct(del, 0.90),
        pct(del, 0.99),
        pct(del, 1.0),
        del.len()
    );
}

/// `--console`: the stream's reader, counting what it got.
struct ConsoleReader {
    task: JoinHandle<()>,
    messages: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

async fn open_console(args: &Args, setup: &Setup) -> ConsoleReader {
    let mut conn = Https::connect(&args.url[0], setup.tls.clone())
        .await
        .expect("connect for the console");
    let auth = format!("Bearer {}", args.admin_token);
    let mut stream = conn
        .request_streaming(
            "GET",
            "/api/console/stream",
            &[("authorization", &auth)],
            "",
        )
        .await
        .expect("console stream");
    assert_eq!(
        stream.status, 200,
        "console stream answered {}",
        stream.status
    );
    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (m, b) = (messages.clone(), bytes.clone());
    let task = tokio::spawn(async move {
        let _conn = conn;
        while let Ok(Some(chunk)) = stream.chunk().await {
            b.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let n = chunk.windows(6).filter(|w| w == b"data: ").count();
            m.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    ConsoleReader {
        task,
        messages,
        bytes,
    }
}

impl ConsoleReader {
    fn report(self, args: &Args) {
        self.task.abort();
        println!(
            "[{}] console stream open through the run: {} messages, {} bytes read",
            args.label,
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed)
        );
    }
}

/// Requests the `--outbound` receiver got, and whether it never answers.
struct OutboundReceiver {
    got: Arc<AtomicU64>,
    hang: bool,
}

/// `--outbound`: a hyper HTTP/1 server on a loopback port of this process,
/// registered with the daemon as an endpoint for every event.
async fn outbound_receiver(args: &Args, setup: &Setup, hang: bool) -> OutboundReceiver {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    async move {
                        if hang {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    let auth = format!("Bearer {}", args.admin_token);
    let mut admin = Https::connect(&args.url[0], setup.tls.clone())
        .await
        .expect("connect");
    let body = json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["*"]});
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = admin
        .request("POST", "/api/endpoints", &headers, body.to_string())
        .await
        .expect("POST");
    assert_eq!(
        r.status,
        201,
        "endpoint: {}",
        String::from_utf8_lossy(&r.body)
    );
    // Every instance reads endpoints at most 2 s old.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    OutboundReceiver { got, hang }
}

/// With an `ok` receiver, wait (at most 60 s) until it got every webhook;
/// print what it got.
async fn report_outbound(args: &Args, r: &OutboundReceiver) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !r.hang
        && (r.got.load(Ordering::Relaxed) as usize) < args.webhooks
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "[{}] outbound endpoint ({}): {} requests received for {} webhooks",
        args.label,
        if r.hang {
            "never answers"
        } else {
            "answers 200"
        },
        r.got.load(Ordering::Relaxed),
        args.webhooks
    );
}

/// What a `--recovery` run measured.
struct RecoveryRun {
    /// `POST /api/recover`'s answer: `fetched`, `ingested`, `duplicates`,
    /// `skipped`, `checkpoint`.
    report: Value,
    secs: f64,
    /// When the run was asked for and answered, µs since the epoch: the
    /// webhooks sent in between are the ones it may have slowed down.
    window_us: (u64, u64),
    rss_before_kb: Option<u64>,
    rss_max_kb: Option<u64>,
    rss_samples: usize,
    /// CPU time (ms) the daemon and this process used while the run lasted.
    cpu_ms: (Option<u64>, Option<u64>),
}

/// `--recovery`: the stand-in and its backlog, the webhooks, and a
/// recovery run [`RECOVER_AFTER`] into them ([`recover_during_webhooks`]);
/// then every live and recovered frame, and the report.
async fn run_recovery(args: &Args, setup: &Setup, clients: Clients, epoch: Instant) {
    let first = args.url[0].as_str();
    let now = callbridge::clock::now_ms();
    let log = telnyx_log::DeliveryLog::generate(args.recovery, args.users, now, recovered_event_id);
    println!(
        "[{}] recovery backlog: {} failed deliveries in the Telnyx API stand-in ({:.1} MB of JSON)",
        args.label,
        log.len(),
        log.bytes() as f64 / 1e6
    );
    let port = args.telnyx_port.expect("--telnyx-port");
    let stand_in = telnyx_log::serve(port, &args.telnyx_key, log).await;
    let metrics_before = fetch_metrics(first, &setup.tls).await;
    let cpu_before = args.pid.and_then(cpu_ms);
    let indexes = Indexes::upto(usize::MAX);
    let (posted, run) = tokio::join!(
        post_webhooks(args, setup, epoch, indexes.clone()),
        recover_during_webhooks(args, setup, epoch, &indexes),
    );
    // The webhooks posted: `--webhooks`, or more when the run outlasted them.
    let live = Args {
        webhooks: posted.latencies_us.len(),
        ..args.clone()
    };
    let expected = expected_frames(&live, &clients.sessions_per_user);
    wait_for_frames(&clients.received, expected).await;
    let expected_recovered = expected_recovered_frames(args, &clients.sessions_per_user);
    wait_for(
        &clients.received,
        expected_recovered,
        Received::recovered_frames,
    )
    .await;
    let cpu_after = args.pid.and_then(cpu_ms);
    let metrics_after = fetch_metrics(first, &setup.tls).await;
    let tally = count_delivery(&live, &clients);
    print_results(&live, &posted, &tally, &metrics_before, &metrics_after);
    let recovered = count_recovered(args, &clients);
    print_recovery(args, &run, &stand_in, &clients, &recovered);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        println!(
            "[{}] daemon CPU: {} ms for {} webhooks and the recovery run",
            args.label,
            b.saturating_sub(a),
            live.webhooks
        );
    }
    for h in clients.readers {
        h.abort();
    }
    if tally.lost + recovered.lost > 0 {
        std::process::exit(3);
    }
}

/// Waits [`RECOVER_AFTER`] into the webhooks, runs recovery, and then lets
/// the posters stop at `--webhooks` (or at once, when the run outlasted
/// them: the webhooks cover the whole run).
async fn recover_during_webhooks(
    args: &Args,
    setup: &Setup,
    epoch: Instant,
    indexes: &Mutex<Indexes>,
) -> RecoveryRun {
    tokio::time::sleep(RECOVER_AFTER).await;
    let run = recover_sampling_rss(args, setup, epoch).await;
    indexes.lock().unwrap().stop(args.webhooks);
    run
}

/// `POST /api/recover` (`{}`: from the checkpoint), reading the daemon's
/// VmRSS every 100 ms until it answers.
async fn recover_sampling_rss(args: &Args, setup: &Setup, epoch: Instant) -> RecoveryRun {
    let rss_before_kb = args.pid.and_then(rss_kb);
    let (mut rss_max_kb, mut rss_samples) = (rss_before_kb, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let auth = format!("Bearer {}", args.admin_token);
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let url = format!("{}/api/recover", args.url[0]);
    let own = std::process::id();
    let cpu_before = (args.pid.and_then(cpu_ms), cpu_ms(own));
    let start = Instant::now();
    let asked = epoch.elapsed().as_micros() as u64;
    let request = client::request_once(&url, "POST", &headers, "{}", setup.tls.clone());
    tokio::pin!(request);
    let answer = loop {
        tokio::select! {
            r = &mut request => break r.expect("POST /api/recover"),
            _ = tick.tick() => {
                if let Some(kb) = args.pid.and_then(rss_kb) {
                    rss_max_kb = rss_max_kb.max(Some(kb));
                    rss_samples += 1;
                }
            }
        }
    };
    let answered = epoch.elapsed().as_micros() as u64;
    let used = |before: Option<u64>, after: Option<u64>| Some(after?.saturating_sub(before?));
    let cpu_ms = (
        used(cpu_before.0, args.pid.and_then(cpu_ms)),
        used(cpu_before.1, cpu_ms(own)),
    );
    assert_eq!(
        answer.status,
        200,
        "POST /api/recover: {}",
        String::from_utf8_lossy(&answer.body)
    );
    RecoveryRun {
        report: answer.json(),
        secs: start.elapsed().as_secs_f64(),
        window_us: (asked, answered),
        rss_before_kb,
        rss_max_kb,
        rss_samples,
        cpu_ms,
    }
}

/// Frames the backlog should produce: each event once per session of its
/// user.
fn expected_recovered_frames(args: &Args, sessions_per_user: &[u32]) -> u64 {
    (0..args.recovery)
        .map(|i| sessions_per_user[telnyx_log::user_of(i, args.users)] as u64)
        .sum()
}

/// Recovered frames (`"recovered": true`) missing from, or beyond one per
/// session of, each backlog event's user; and the delivery latencies of the
/// webhooks sent while the run lasted.
fn count_recovered(args: &Args, clients: &Clients) -> Tally {
    let r = clients.received.lock().unwrap();
    let (mut lost, mut dup) = (0u64, 0u64);
    for i in 0..args.recovery {
        let user = telnyx_log::user_of(i, args.users);
        let want = clients.sessions_per_user[user];
        let key = (user, recovered_event_id(i));
        let got = r.recovered.get(&key).copied().unwrap_or(0);
        lost += want.saturating_sub(got) as u64;
        dup += got.saturating_sub(want) as u64;
    }
    Tally {
        lost,
        dup,
        delivery_us: Vec::new(),
    }
}

/// The `--recovery` lines: the run's counts and rate, the daemon's RSS, the
/// webhooks' delivery latency while it ran, the recovered frames.
fn print_recovery(
    args: &Args,
    run: &RecoveryRun,
    stand_in: &telnyx_log::StandIn,
    clients: &Clients,
    recovered: &Tally,
) {
    let (label, rep) = (&args.label, &run.report);
    let ingested = rep["ingested"].as_u64().unwrap_or(0);
    println!(
        "[{label}] recovery run: fetched {} ingested {} duplicates {} skipped {} in {:.2}s = {:.0} events ingested/s ({} pages served, {} requests refused; checkpoint {})",
        rep["fetched"], rep["ingested"], rep["duplicates"], rep["skipped"], run.secs,
        ingested as f64 / run.secs,
        stand_in.pages.load(Ordering::Relaxed),
        stand_in.refused.load(Ordering::Relaxed),
        rep["checkpoint"]
    );
    let known = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    println!(
        "[{label}] daemon RSS during the run: {} KB before, max {} KB ({} samples, every 100 ms)",
        known(run.rss_before_kb),
        known(run.rss_max_kb),
        run.rss_samples
    );
    println!(
        "[{label}] CPU while the run lasted: daemon {} ms, load generator {} ms (in {:.2}s, with the webhooks)",
        known(run.cpu_ms.0),
        known(run.cpu_ms.1),
        run.secs
    );
    let (from, to) = run.window_us;
    let mut during: Vec<u64> = (clients.received.lock().unwrap().delivery_us.iter())
        .filter(|(sent, _)| (from..=to).contains(sent))
        .map(|d| d.1)
        .collect();
    during.sort_unstable();
    println!(
        "[{label}] delivery ms while the run lasted (webhooks sent in its {:.2}s): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  frames {}",
        (to - from) as f64 / 1e6,
        pct(&during, 0.50),
        pct(&during, 0.90),
        pct(&during, 0.99),
        pct(&during, 1.0),
        during.len()
    );
    println!(
        "[{label}] recovered events at the dialers: {} events; lost {}  duplicate frames {}",
        args.recovery, recovered.lost, recovered.dup
    );
}

/// Unique per run, so a second run on the same daemon is not all duplicates.
fn event_id(i: usize) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string());
    format!("bench-{run}-{i:08}")
}

/// Webhook `i`: to `user` through its client_state, or (`None`, the
/// broadcast run) to nobody in particular, on a call of its own.
fn webhook_body(i: usize, user: Option<usize>, epoch: Instant) -> String {
    let mut payload = json!({
        "call_control_id": format!("v3:bench-call-{}", user.map_or(i, |u| u)),
        "call_leg_id": format!("bench-leg-{}", user.map_or(i, |u| u)),
        "call_session_id": format!("bench-session-{}", user.map_or(i, |u| u)),
        "connection_id": "bench",
        "from": "+15551230001",
        "to": "+15559870002",
        "digit": "5",
        "bench_sent_us": epoch.elapsed().as_micros() as u64,
    });
    if let Some(user) = user {
        payload["client_state"] = json!(base64::engine::general_purpose::STANDARD
            .encode(json!({"userId": format!("bench{user}")}).to_string()));
    }
    json!({
        "data": {
            "record_type": "event",
            "id": event_id(i),
            "event_type": "call.dtmf.received",
            "occurred_at": callbridge::clock::now_rfc3339(),
            "payload": payload,
        },
        "meta": {"attempt": 1}
    })
    .to_string()
}

/// The id of backlog event `i` (`--recovery`).
fn recovered_event_id(i: usize) -> String {
    format!("{}-recovered", event_id(i))
}
