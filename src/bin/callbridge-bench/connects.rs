//! `--connects N --token hs256|jwks-rs256`: what authentication costs a
//! connect. N WebSocket connections of the `--users` users (`bench{i %
//! users}`, token in `?token=`), `--connect-concurrency` at a time; each is
//! TCP + a full TLS handshake (the client keeps no session to resume, as a
//! dialer starting afresh) + the upgrade + authentication until
//! `connected` arrives, then a normal close (1000), read to the end.
//!
//! Every token is different (its own `exp`, users in turn), minted before
//! the connects: `hs256` with the dev secret, as the other runs;
//! `jwks-rs256` with the RSA key of the identity-provider stand-in
//! ([`jwks_provider`](crate::jwks_provider)), whose JWKS document is
//! served on `--jwks-port`. With `--jwks-port` the stand-in serves in both
//! modes, so the daemons of both runs are configured alike
//! (`CALLBRIDGE_JWT_JWKS_URL` and the dev secret) and only the token
//! differs. A daemon with a JWKS URL is not ready until it fetched the
//! document: this run waits for `/ready` before it starts.
//!
//! Printed: connects per second, connect latency (to `connected`), the
//! daemon's CPU per connect (utime + stime from `/proc`, as per webhook
//! elsewhere) and the load generator's, how often the document was
//! fetched, and — the difference that matters without TLS around it —
//! [`Authenticator::verify`] (the daemon's code) timed in this process on
//! tokens of both kinds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use callbridge::auth::Authenticator;
use callbridge::client;
use callbridge::jwks::Jwks;
use callbridge::jwt::{JwtKey, JwtSettings};

use super::{cpu_ms, create_users, pct, Args, Setup};
use crate::jwks_provider::{self, Provider};

/// How the connect's tokens are signed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// HS256 with the daemon's `CALLBRIDGE_JWT_SECRET` (the dev secret).
    Hs256,
    /// RS256 with the provider stand-in's key, verified with its JWKS.
    JwksRs256,
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Hs256 => "HS256",
            TokenKind::JwksRs256 => "JWKS RS256",
        }
    }
}

/// One connect's bound, from TCP to the end of the close.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens of each kind [`Authenticator::verify`] is timed on, per pass.
const VERIFY_TOKENS: usize = 500;
const VERIFY_PASSES: usize = 3;

/// What the connects measured.
struct Connected {
    elapsed_secs: f64,
    /// To `connected`, µs, sorted.
    latencies_us: Vec<u64>,
    /// Failed connects, by what went wrong.
    failures: HashMap<String, u64>,
}

/// `--connects`: the stand-in, the users, the tokens, the connects, the
/// report; exit code 3 when a connect failed.
pub async fn run(args: &Args, setup: &Setup) {
    if args.token == TokenKind::JwksRs256 && args.jwks_port.is_none() {
        eprintln!("--token jwks-rs256 needs --jwks-port (the daemon's CALLBRIDGE_JWT_JWKS_URL)");
        std::process::exit(2);
    }
    let provider = Provider::generate();
    if let Some(port) = args.jwks_port {
        provider.serve(port).await;
    }
    for url in &args.url {
        wait_ready(url, &setup.tls).await;
    }
    if !args.no_setup {
        create_users(args, &args.url[0], &setup.tls).await;
    }
    let now = callbridge::clock::now_secs();
    let tokens: Vec<String> = (0..args.connects)
        .map(|i| mint(args.token, setup, &provider, i % args.users.max(1), i, now))
        .collect();
    let own = std::process::id();
    let cpu_before = (args.pid.and_then(cpu_ms), cpu_ms(own));
    let done = connect_all(args, setup, tokens).await;
    // The daemon is done with the last closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = (
        used(cpu_before.0, args.pid.and_then(cpu_ms)),
        used(cpu_before.1, cpu_ms(own)),
    );
    print_connects(args, &done, cpu);
    println!(
        "[{}] JWKS document served {} times (fetched by the daemon, not per token)",
        args.label,
        provider.fetches()
    );
    print_verify_alone(args, setup, &provider).await;
    if !done.failures.is_empty() {
        std::process::exit(3);
    }
}

fn used(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Token `i` for `bench{user}`: issued `now`, expiring an hour and `i`
/// seconds later, so no two are alike.
fn mint(kind: TokenKind, setup: &Setup, p: &Provider, user: usize, i: usize, now: i64) -> String {
    let (sub, exp) = (format!("bench{user}"), now + 3600 + i as i64);
    match kind {
        TokenKind::Hs256 => {
            callbridge::auth::mint(setup.jwt_secret.as_bytes(), &sub, None, exp - now, now)
                .expect("HS256 token")
        }
        TokenKind::JwksRs256 => p.mint(&sub, now, exp),
    }
}

/// `GET /ready` until it answers 200 (with a JWKS URL: once the daemon
/// fetched the document), for at most 60 s.
async fn wait_ready(url: &str, tls: &Arc<rustls::ClientConfig>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client::request_once(&format!("{url}/ready"), "GET", &[], "", tls.clone()).await;
        if r.is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}/ready did not answer 200 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `--connect-concurrency` workers take the tokens in turn; connect `i`
/// goes to URL `i % urls`.
async fn connect_all(args: &Args, setup: &Setup, tokens: Vec<String>) -> Connected {
    let mut tls = (*setup.tls).clone();
    tls.resumption = rustls::client::Resumption::disabled();
    let (tls, tokens) = (Arc::new(tls), Arc::new(tokens));
    let urls: Arc<Vec<String>> = Arc::new(
        (args.url.iter())
            .map(|u| format!("{}/ws", u.replacen("https://", "wss://", 1)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.connect_concurrency.max(1))
        .map(|_| {
            let (tls, tokens, urls, next) =
                (tls.clone(), tokens.clone(), urls.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), HashMap::<String, u64>::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else { break };
                    let url = format!("{}?token={token}", urls[i % urls.len()]);
                    match tokio::time::timeout(CONNECT_TIMEOUT, connect_once(&url, &tls)).await {
                        Ok(Ok(us)) => ok.push(us),
                        Ok(Err(e)) => *failed.entry(e).or_default() += 1,
                        Err(_) => *failed.entry("timeout".into()).or_default() += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut done = Connected {
        elapsed_secs: 0.0,
        latencies_us: Vec::with_capacity(tokens.len()),
        failures: HashMap::new(),
    };
    for w in workers {
        let (ok, failed) = w.await.expect("connect worker");
        done.latencies_us.extend(ok);
        for (what, n) in failed {
            *done.failures.entry(what).or_default() += n;
        }
    }
    done.elapsed_secs = start.elapsed().as_secs_f64();
    done.latencies_us.sort_unstable();
    done
}

/// One connect: µs from the TCP connect to `connected`; then a normal
/// close, read until the daemon's close frame and the end of the stream.
async fn connect_once(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<u64, String> {
    let start = Instant::now();
    let (mut ws, _) = client::ws_connect(url, &[], tls.clone())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let us = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"event\":\"connected\"") => {
                break start.elapsed().as_micros() as u64;
            }
            Some(Ok(Message::Close(f))) => {
                return Err(format!("closed {}", f.map_or(0, |f| u16::from(f.code))));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("ended before connected".into()),
        }
    };
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    ws.send(Message::Close(Some(normal)))
        .await
        .map_err(|e| format!("close: {e}"))?;
    while let Some(Ok(_)) = ws.next().await {}
    Ok(us)
}

fn print_connects(args: &Args, done: &Connected, cpu: (Option<u64>, Option<u64>)) {
    let (label, n) = (&args.label, args.connects);
    let lat = &done.latencies_us;
    let failed: u64 = done.failures.values().sum();
    println!(
        "[{label}] connects={n} token={} users={} concurrency={} (full TLS handshakes) in {:.2}s = {:.0} connects/s (failed {failed} {:?})",
        args.token.name(),
        args.users,
        args.connect_concurrency.max(1),
        done.elapsed_secs,
        n as f64 / done.elapsed_secs,
        done.failures
    );
    println!(
        "[{label}] connect ms (TCP + TLS + upgrade + auth -> connected): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  ({} connects)",
        pct(lat, 0.50),
        pct(lat, 0.90),
        pct(lat, 0.99),
        pct(lat, 1.0),
        lat.len()
    );
    let per = |ms: Option<u64>| {
        ms.map_or("? ms".into(), |ms| {
            format!(
                "{ms} ms = {:.0} us per connect",
                ms as f64 * 1000.0 / n.max(1) as f64
            )
        })
    };
    println!(
        "[{label}] daemon CPU: {}; load generator CPU: {}",
        per(cpu.0),
        per(cpu.1)
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("[{label}] load average at the end: {}", load.join(" "));
}

/// [`Authenticator::verify`], the daemon's own code, in this process with
/// the daemon's keys (the dev secret and, with `--jwks-port`, the JWKS
/// fetched from the stand-in): µs per token, one at a time, the best of
/// [`VERIFY_PASSES`] passes over [`VERIFY_TOKENS`] fresh tokens of each kind.
async fn print_verify_alone(args: &Args, setup: &Setup, provider: &Provider) {
    let mut settings = JwtSettings::with_key(JwtKey::Secret(setup.jwt_secret.as_bytes().to_vec()));
    settings.jwks_url = args
        .jwks_port
        .map(|p| format!("http://127.0.0.1:{p}{}", jwks_provider::PATH));
    let jwks = settings
        .jwks_url
        .as_deref()
        .map(|u| Jwks::new(u, Default::default(), Default::default()));
    if let Some(j) = &jwks {
        j.fetch().await.expect("the JWKS document, fetched");
    }
    let auth = Authenticator::new(&settings, jwks);
    let now = callbridge::clock::now_secs();
    let mut kinds = vec![TokenKind::Hs256];
    if args.jwks_port.is_some() {
        kinds.push(TokenKind::JwksRs256);
    }
    let mut each = Vec::new();
    for kind in kinds {
        let tokens: Vec<String> = (0..VERIFY_TOKENS)
            .map(|i| mint(kind, setup, provider, i % args.users.max(1), i, now))
            .collect();
        each.push((kind, best_verify_us(&auth, &tokens).await));
    }
    let text: Vec<String> = (each.iter())
        .map(|(k, us)| format!("{} {us:.1} us", k.name()))
        .collect();
    let difference = match each.as_slice() {
        [(_, hs), (_, rs)] => format!("; difference {:.1} us", rs - hs),
        _ => String::new(),
    };
    println!(
        "[{}] Authenticator::verify alone (this process, one at a time, best of {VERIFY_PASSES} passes over {VERIFY_TOKENS} tokens): {}{difference}",
        args.label,
        text.join(", ")
    );
}

/// Mean µs per [`Authenticator::verify`] of the fastest pass over `tokens`.
async fn best_verify_us(auth: &Authenticator, tokens: &[String]) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..VERIFY_PASSES {
        let start = Instant::now();
        for t in tokens {
            auth.verify(t).await.expect("a valid token");
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / tokens.len().max(1) as f64;
        best = best.min(us);
    }
    best
}
