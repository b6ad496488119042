//! Helpers shared by the hardening tests (`limits`, `slow_consumer`,
//! `robustness`, `props`): admin status polling, raw TLS / TCP access,
//! keep-alive webhook posters and process memory.
#![allow(dead_code)]

use std::time::Duration;

use callbridge::client::{HttpResponse, Https, Wss};
use callbridge::telnyx::Signer;
use futures_util::StreamExt;
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::*;

pub const WEBHOOK: &str = "/webhooks/telnyx";

/// `GET /api/status` as JSON.
pub async fn status(s: &Server) -> Value {
    let r = s.admin("GET", "/api/status", None).await;
    assert_eq!(
        r.status,
        200,
        "/api/status: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// `connections.total` of `/api/status`.
pub async fn total_connections(s: &Server) -> u64 {
    status(s).await["connections"]["total"]
        .as_u64()
        .expect("connections.total is a number")
}

/// Poll `/api/status` until `connections.total == want`; panics with the
/// last status after `within`. Returns how long it took.
pub async fn wait_total(s: &Server, want: u64, within: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        let st = status(s).await;
        if st["connections"]["total"].as_u64() == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!("connections.total did not become {want} within {within:?}; last status: {st}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll `/api/status` until `user` has no registered connection.
pub async fn wait_user_gone(s: &Server, user: &str, within: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        let st = status(s).await;
        if st["connections"]["perUser"].get(user).is_none() {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!("{user} still connected after {within:?}; last status: {st}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server is healthy: `/health` answers 200 on a fresh connection, and
/// a new WebSocket client of `user` authenticates and gets a pong.
pub async fn assert_healthy(s: &Server, user: &str) {
    let r = tokio::time::timeout(WAIT, s.get("/health"))
        .await
        .expect("/health answers in time")
        .expect("/health request");
    assert_eq!(r.status, 200, "/health");
    let (mut ws, _, _) = tokio::time::timeout(WAIT, s.connect(user))
        .await
        .expect("a new client connects in time");
    send_json(&mut ws, json!({"type":"ping","data":{}})).await;
    let pong = next_json(&mut ws).await;
    assert_eq!(pong["event"], "pong", "{pong}");
    let _ = ws.close(None).await;
}

/// A TLS connection to the server, nothing sent yet. `rcvbuf` sets the
/// client's socket receive buffer (which also turns off its autotuning).
pub async fn tls_connect(s: &Server, rcvbuf: Option<u32>) -> TlsStream<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    let tcp = sock.connect(s.addr).await.expect("TCP connect");
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("127.0.0.1".to_string()).unwrap();
    TlsConnector::from(s.tls.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// A WebSocket over [`tls_connect`] with `query` (e.g. `token=…`).
pub async fn ws_with_rcvbuf(s: &Server, query: &str, rcvbuf: Option<u32>) -> Wss {
    let tls = tls_connect(s, rcvbuf).await;
    let req = format!("{}?{query}", s.ws_url)
        .into_client_request()
        .unwrap();
    tokio_tungstenite::client_async(req, tls)
        .await
        .expect("WebSocket upgrade")
        .0
}

/// How a WebSocket ended, from the client's side.
#[derive(Debug)]
pub enum End {
    Close(u16, String),
    /// Stream ended or errored without a close frame.
    Dropped(String),
}

/// Read until the connection ends (close frame, EOF or error) or `within`
/// passes (`None`). Text frames seen before are returned.
pub async fn read_until_end(ws: &mut Wss, within: Duration) -> (Vec<Value>, Option<End>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return (texts, None),
            Ok(Some(Ok(Message::Text(t)))) => texts.push(
                serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {}", t.as_str())),
            ),
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return (
                    texts,
                    Some(End::Close(u16::from(f.code), f.reason.to_string())),
                )
            }
            Ok(Some(Ok(Message::Close(None)))) => {
                return (texts, Some(End::Close(1005, String::new())))
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return (texts, Some(End::Dropped(e.to_string()))),
            Ok(None) => return (texts, Some(End::Dropped("end of stream".into()))),
        }
    }
}

/// Resident set size of this process (the daemon under test runs in it), bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// One keep-alive HTTPS connection posting signed webhooks.
pub struct Poster {
    https: Https,
}

impl Poster {
    pub async fn connect(s: &Server) -> Poster {
        Poster {
            https: Https::connect(&s.base, s.tls.clone()).await.unwrap(),
        }
    }

    /// POST `raw` signed with `signer` at the current time.
    pub async fn post(&mut self, signer: &Signer, raw: &[u8]) -> HttpResponse {
        let ts = now_secs();
        let sig = signer.sign(ts, raw);
        let ts = ts.to_string();
        self.https
            .request(
                "POST",
                WEBHOOK,
                &[
                    ("content-type", "application/json"),
                    ("telnyx-signature-ed25519", &sig),
                    ("telnyx-timestamp", &ts),
                ],
                raw.to_vec(),
            )
            .await
            .expect("webhook request")
    }
}

/// A call event for `user` (routed by client_state), optionally padded with
/// a `pad` string field of `pad` bytes in the payload.
pub fn event_for(user: &str, event_type: &str, call: &str, pad: usize) -> Value {
    let mut p = call_payload(call, "+15559990000", "+15557770000");
    p["client_state"] = json!(client_state_for(user));
    if event_type == "call.dtmf.received" {
        p["digit"] = json!("5");
    }
    if pad > 0 {
        p["pad"] = json!("x".repeat(pad));
    }
    envelope(event_type, p)
}

/// A small deterministic pseudo-random byte source (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
