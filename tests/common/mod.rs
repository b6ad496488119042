//! Test harness: the real daemon on a port-0 listener with a real
//! certificate, a real HTTPS client and a real WebSocket client
//! (tokio-tungstenite over rustls), and webhooks signed as Telnyx signs them.
#![allow(dead_code)]

pub mod edges;
pub mod jwks;
pub mod mongo;
pub mod process;
pub mod receiver;
pub mod sse;
pub mod telnyx_api;

#[allow(unused_imports)]
pub use mongo::{mongo_required, mongo_uri};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use callbridge::client::{self, HttpResponse, Https, Wss};
use callbridge::config::{Config, Sources};
use callbridge::telnyx::Signer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef";
/// How long a test waits for a message that should come.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test listens to be sure a message does not come.
pub const SILENCE: Duration = Duration::from_millis(400);

pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub ws_url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub signer: Signer,
    pub dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), callbridge::server::RunError>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Certificates and signing key for a test, generated once per data dir.
pub fn dev_files(dir: &std::path::Path) -> (callbridge::dev::DevFiles, Signer) {
    let (files, _) = callbridge::dev::prepare(dir).expect("dev files");
    let signer = callbridge::dev::load_signer(&files).expect("signer");
    (files, signer)
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    /// Start with extra `CALLBRIDGE_*` settings.
    pub async fn start_with(extra: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in(tmp.path().to_path_buf(), extra).await;
        s._tmp = Some(tmp);
        s
    }

    /// Start with extra settings, waiting only for `/health`: for a daemon
    /// that is not ready yet on purpose (a provider's keys missing).
    pub async fn start_live(extra: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_in_waiting(tmp.path().to_path_buf(), extra, "/health").await;
        s._tmp = Some(tmp);
        s
    }

    /// Start on a given data dir (restarts reuse it).
    pub async fn start_in(dir: PathBuf, extra: &[(&str, &str)]) -> Server {
        Self::start_in_waiting(dir, extra, "/ready").await
    }

    async fn start_in_waiting(dir: PathBuf, extra: &[(&str, &str)], wait: &str) -> Server {
        let (files, signer) = dev_files(&dir);
        let pubkey = callbridge::config::b64(&signer.public_key());
        let cert = files.cert.display().to_string();
        let key = files.key.display().to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("CALLBRIDGE_TLS_CERT", &cert),
            ("CALLBRIDGE_TLS_KEY", &key),
            ("CALLBRIDGE_TELNYX_PUBLIC_KEY", &pubkey),
            ("CALLBRIDGE_JWT_SECRET", JWT_SECRET),
            ("CALLBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        let mongo_db;
        if let Some(uri) = mongo_uri() {
            if !extra.iter().any(|(k, _)| *k == "CALLBRIDGE_MONGODB_URI") {
                mongo_db = format!("t{}", uuid::Uuid::new_v4().simple());
                pairs.push(("CALLBRIDGE_MONGODB_URI", leak(uri)));
                pairs.push(("CALLBRIDGE_MONGODB_DB", leak(mongo_db)));
            }
        }
        // Later entries win: tests override the defaults above.
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push((k, v));
        }
        let config = Config::from_sources(&Sources::from_pairs(pairs), false, None)
            .expect("test config is valid");
        Self::start_config_waiting(config, dir, signer, &files.ca, wait).await
    }

    /// Logs of the daemons under test: `CALLBRIDGE_TEST_LOG=debug`.
    fn init_logs() {
        if let Ok(filter) = std::env::var("CALLBRIDGE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    }

    pub async fn start_config(
        config: Config,
        dir: PathBuf,
        signer: Signer,
        ca: &std::path::Path,
    ) -> Server {
        Self::start_config_waiting(config, dir, signer, ca, "/ready").await
    }

    async fn start_config_waiting(
        config: Config,
        dir: PathBuf,
        signer: Signer,
        ca: &std::path::Path,
        wait: &str,
    ) -> Server {
        Self::init_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(callbridge::run(listener, config, async {
            let _ = rx.await;
        }));
        let ca_pem = std::fs::read(ca).unwrap();
        let tls = callbridge::tls::client_config(Some(&ca_pem)).unwrap();
        let base = format!("https://127.0.0.1:{}", addr.port());
        let s = Server {
            addr,
            ws_url: format!("wss://127.0.0.1:{}/ws", addr.port()),
            base,
            tls,
            signer,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
            _tmp: None,
        };
        // Wait until the listener answers (the store may take a moment).
        for _ in 0..200 {
            if let Ok(r) = s.get(wait).await {
                if r.status == 200 {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not become ready");
    }

    pub async fn https(&self) -> Https {
        Https::connect(&self.base, self.tls.clone()).await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Result<HttpResponse, client::ClientError> {
        client::request_once(
            &format!("{}{path}", self.base),
            "GET",
            &[],
            "",
            self.tls.clone(),
        )
        .await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<bytes::Bytes>,
    ) -> HttpResponse {
        client::request_once(
            &format!("{}{path}", self.base),
            method,
            headers,
            body,
            self.tls.clone(),
        )
        .await
        .unwrap()
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.request(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }

    /// Create (or replace) a user through the admin API.
    pub async fn put_user(&self, id: &str, doc: Value) -> Value {
        let r = self
            .admin("PUT", &format!("/api/users/{id}"), Some(doc))
            .await;
        assert_eq!(
            r.status,
            200,
            "PUT user {id}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    pub fn token(&self, user: &str) -> String {
        token_for(user, 3600)
    }

    /// Sign and post a webhook body exactly as Telnyx does.
    pub async fn post_webhook(&self, body: &Value) -> HttpResponse {
        self.post_signed(body.to_string().as_bytes()).await
    }

    pub async fn post_signed(&self, raw: &[u8]) -> HttpResponse {
        let ts = now_secs();
        let sig = self.signer.sign(ts, raw);
        let ts = ts.to_string();
        self.request(
            "POST",
            "/webhooks/telnyx",
            &[
                ("content-type", "application/json"),
                ("telnyx-signature-ed25519", &sig),
                ("telnyx-timestamp", &ts),
            ],
            raw.to_vec(),
        )
        .await
    }

    /// Open a WebSocket with a query string (`token=…&since=…`) and headers.
    pub async fn ws_raw(&self, query: &str, headers: &[(&str, &str)]) -> Wss {
        let url = if query.is_empty() {
            self.ws_url.clone()
        } else {
            format!("{}?{query}", self.ws_url)
        };
        client::ws_connect(&url, headers, self.tls.clone())
            .await
            .unwrap()
            .0
    }

    /// Connect as `user` with `?token=` and read `connected` + `snapshot`.
    pub async fn connect(&self, user: &str) -> (Wss, Value, Value) {
        let mut ws = self
            .ws_raw(&format!("token={}", self.token(user)), &[])
            .await;
        let (connected, snapshot) = read_connected(&mut ws).await;
        (ws, connected, snapshot)
    }

    /// Create users with empty documents (`{}`).
    pub async fn put_users(&self, ids: &[&str]) {
        for id in ids {
            self.put_user(id, json!({})).await;
        }
    }

    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    pub async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server run ok");
        }
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn now_secs() -> i64 {
    callbridge::clock::now_secs()
}

pub fn token_for(user: &str, ttl: i64) -> String {
    callbridge::auth::mint(JWT_SECRET.as_bytes(), user, None, ttl, now_secs()).unwrap()
}

/// Next text frame as JSON (pings and pongs skipped); panics after `WAIT`.
pub async fn next_json(ws: &mut Wss) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Close(f) => panic!("closed while waiting for a message: {f:?}"),
            _ => continue,
        }
    }
}

/// Read `connected` then `snapshot`: (connected, snapshot).
pub async fn read_connected(ws: &mut Wss) -> (Value, Value) {
    let connected = next_json(ws).await;
    assert_eq!(connected["event"], "connected", "{connected}");
    let snapshot = next_json(ws).await;
    assert_eq!(snapshot["event"], "snapshot", "{snapshot}");
    (connected, snapshot)
}

/// The socket is open and answers a ping with a pong.
pub async fn assert_alive(ws: &mut Wss) {
    send_json(ws, json!({"type":"ping","data":{}})).await;
    let pong = next_json(ws).await;
    assert_eq!(pong["event"], "pong", "{pong}");
}

/// A server with user `id` stored as `doc`, and that user connected.
pub async fn server_with_user(id: &str, doc: Value) -> (Server, Wss) {
    let s = Server::start().await;
    s.put_user(id, doc).await;
    let (ws, _, _) = s.connect(id).await;
    (s, ws)
}

/// Nothing but pings arrives within `d`.
pub async fn expect_silence(ws: &mut Wss, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected message: {}", t.as_str()),
            Ok(Some(Ok(Message::Close(f)))) => panic!("unexpected close: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
}

/// Read until the server's close frame: (code, reason). Text frames before it are returned too.
pub async fn expect_close(ws: &mut Wss) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for close");
        match msg {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error instead of close frame: {e}"),
            None => panic!("stream ended without close frame"),
        }
    }
}

pub async fn send_json(ws: &mut Wss, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// A Telnyx envelope for one call event.
pub fn envelope(event_type: &str, payload: Value) -> Value {
    json!({
        "data": {
            "record_type": "event",
            "id": uuid::Uuid::new_v4().to_string(),
            "event_type": event_type,
            "occurred_at": callbridge::clock::now_rfc3339(),
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": "https://bridge.example.com/webhooks/telnyx"}
    })
}

/// Base64 client_state naming a user, as a dialer backend sets it.
pub fn client_state_for(user: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(json!({ "userId": user }).to_string())
}

/// A call payload: `direction` incoming, numbers and ids as given.
pub fn call_payload(call: &str, from: &str, to: &str) -> Value {
    json!({
        "call_control_id": call,
        "call_leg_id": format!("leg-{call}"),
        "call_session_id": format!("session-{call}"),
        "connection_id": "conn-default",
        "from": from,
        "to": to,
        "direction": "incoming",
        "state": "parked",
    })
}

/// A response body as text, for assertion messages.
pub fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The response is `status` with a JSON body `{"error":"<kebab>","message":"…"}`.
pub fn assert_json_error(r: &HttpResponse, status: u16) -> Value {
    assert_eq!(r.status, status, "status; body: {}", text(r));
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "content-type is JSON, got {ct:?}"
    );
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", text(r)));
    let code = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("`error` is a string: {v}"));
    assert!(
        !code.is_empty()
            && !code.starts_with('-')
            && !code.ends_with('-')
            && !code.contains("--")
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "`error` is a kebab-case code: {code:?}"
    );
    let msg = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("`message` is a string: {v}"));
    assert!(!msg.is_empty(), "message is not empty: {v}");
    v
}
