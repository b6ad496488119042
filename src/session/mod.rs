//! One dialer WebSocket connection, from upgrade to close (contract §4).
//!
//! A session is a single task: one `select!` over the client's frames, the
//! session's bounded outbound queue, its close signal, the token's expiry,
//! the ping timer and the daemon's shutdown. It keeps the last `seq` it wrote
//! and never writes a stored event out of order: an event that arrives ahead
//! of a gap (two webhooks for one user finishing in the other order, or a
//! replay racing live delivery) makes it read the missing ones from the
//! store first.

pub mod handshake;
mod requests;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant as TokioInstant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::app::App;
use crate::auth::{AuthError, Claims, LEEWAY_SECS};
use crate::clock::now_ms;
use crate::domain::Status;
use crate::domain::{StoredEvent, User};
use crate::hub::{CloseSignal, Outbound, SESSION_QUEUE};
use crate::metrics::Metrics;
use crate::protocol::{
    close, BadMessage, ClientMessage, Connected, Incoming, ServerMessage, Snapshot,
    PROTOCOL_VERSION,
};
use crate::signing::{Envelope, SessionKey, SignError, SigningMode};
use crate::store::{bounded, StoreError};

/// Events read from the store per page when replaying.
const REPLAY_PAGE: usize = 500;
/// How long a close frame may take to reach a client that stopped reading.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long means the peer is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The server side of one dialer connection.
pub type WebSocket = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes read from the socket at a time. tungstenite's default read buffer
/// is 128 KiB, allocated up front for every connection (1.3 GB for 10,000
/// idle dialers); client messages are small JSON (`ping`, `status`: under
/// 100 bytes; an `auth` with its JWT ~1 KiB, read in two or three reads),
/// and a larger one still arrives (the message buffer grows up to the
/// message limit), so 512 bytes costs nothing that matters. Measured per
/// idle connection, TLS included: 143 KiB with the default, 17.7 KiB with
/// 2 KiB. This is why the upgrade is done here rather than by warp's
/// `ws()` filter, which offers no way to set it.
const READ_BUFFER: usize = 512;
/// Frames queued for one socket are written together: the session feeds
/// every frame waiting in its queue into this buffer and flushes once, so a
/// burst costs one TLS write and one syscall per ~16 KiB (ten or so event
/// frames), not one per frame. tungstenite writes the buffer out early when
/// a frame would take it past this size. The buffer grows only when used:
/// an idle connection holds a few hundred bytes of it.
const WRITE_BUFFER: usize = 16 * 1024;
/// Frames taken from the queue before a flush: bounds how long the first
/// frame of a burst waits for the last one, and lets the `select!` look at
/// close requests and client frames between batches.
const MAX_BATCH: usize = 64;
/// A blocked socket errors instead of growing its buffer without bound.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Finish the upgrade (after the 101 went out) and run the session.
pub async fn upgrade_and_run(app: Arc<App>, on: OnUpgrade, info: UpgradeInfo) {
    let upgraded = match on.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let config = ws_config(app.config.max_client_message_bytes);
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    run(app, ws, info).await;
}

/// What the upgrade request carried.
#[derive(Debug, Default, Clone)]
pub struct UpgradeInfo {
    pub token: Option<String>,
    pub since: Option<u64>,
}

/// Why a session ends.
enum End {
    /// The peer is gone (connection closed, a write failed or made no
    /// progress): there is nobody to send a close frame to.
    PeerGone,
    /// Send this close frame (a code of `protocol::close`), then close.
    Close(u16, String),
}

impl End {
    fn close(code: u16, reason: &str) -> Self {
        End::Close(code, reason.to_string())
    }
}

/// One step of writing to the socket.
enum WriteOp {
    /// Into the write buffer; written out once it passes [`WRITE_BUFFER`].
    Feed(Message),
    /// Everything buffered, to the socket.
    Flush,
}

enum AuthFail {
    Auth(AuthError),
    Store(StoreError),
}

/// Token bucket for client messages: `per_min` capacity, refilled continuously.
struct RateLimit {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_min: u32) -> Self {
        RateLimit {
            tokens: per_min as f64,
            capacity: per_min as f64,
            per_sec: per_min as f64 / 60.0,
            last: Instant::now(),
        }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Keeps the connection gauges right however the task ends.
struct Gauges<'a> {
    metrics: &'a Metrics,
    authenticated: bool,
}

impl Drop for Gauges<'_> {
    fn drop(&mut self) {
        self.metrics.connections.dec();
        if self.authenticated {
            self.metrics.authenticated.dec();
        }
    }
}

pub async fn run(app: Arc<App>, ws: WebSocket, info: UpgradeInfo) {
    let conn_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!("ws", conn = %conn_id, user = tracing::field::Empty);
    let _guard = app.tracker.token();
    async move {
        app.metrics.connections.inc();
        let mut gauges = Gauges {
            metrics: &app.metrics,
            authenticated: false,
        };
        let (sink, stream) = ws.split();
        let mut s = Session {
            app: app.clone(),
            conn_id,
            sink,
            stream,
            rate: RateLimit::new(app.config.client_rate_per_min),
            user: String::new(),
            last_sent: 0,
            info,
            close: Arc::new(CloseSignal::default()),
            signing: None,
            actions: None,
        };
        tracing::info!("connection opened");
        let end = s.lifecycle(&mut gauges).await;
        Box::pin(s.finish(end)).await;
    }
    .instrument(span)
    .await
}

struct Session {
    app: Arc<App>,
    conn_id: String,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    rate: RateLimit,
    user: String,
    /// Highest stored `seq` written to this client.
    last_sent: u64,
    info: UpgradeInfo,
    /// Close requests from the hub (slow consumer, revocation): honoured
    /// even in the middle of a blocked write.
    close: Arc<CloseSignal>,
    /// Signing state (§9) when signing is on: the key material of the
    /// token (not the token) and the nonces seen. Boxed: ~200 bytes that
    /// sessions of a daemon with signing off never carry.
    signing: Option<Box<SessionKey>>,
    /// Slots of this connection's call actions in flight, made at the
    /// first one (most connections never act on a call).
    actions: Option<Arc<Semaphore>>,
}

impl Session {
    async fn lifecycle(&mut self, gauges: &mut Gauges<'_>) -> End {
        let app = self.app.clone();
        let token = match Box::pin(self.info_token_or_wait()).await {
            Ok(t) => t,
            Err(end) => return end,
        };
        let authenticated = Box::pin(self.authenticate(&token)).await;
        let (claims, user) = match authenticated {
            Ok(ok) => ok,
            Err(end) => return end,
        };
        if app.config.client_signing != SigningMode::Off {
            self.signing = Some(Box::new(SessionKey::new(&token, &claims.sub)));
        }
        // Not held for the life of the session (~1 KiB per connection).
        drop(token);
        self.user = claims.sub.clone();
        tracing::Span::current().record("user", self.user.as_str());

        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let close_signal = self.close.clone();
        // Register before reading lastSeq/history, so nothing stored in
        // between can be missed; duplicates are dropped by `last_sent`.
        let _registration = match app.hub.register(
            &self.user,
            &self.conn_id,
            tx,
            close_signal.clone(),
            app.config.max_connections_per_user,
        ) {
            Ok(r) => r,
            Err(_) => {
                return End::close(
                    close::TOO_MANY_CONNECTIONS,
                    "too many connections for this user",
                )
            }
        };
        gauges.authenticated = true;
        app.metrics.authenticated.inc();
        if let Err(e) = self
            .store(app.store.connection_opened(&self.user, &self.conn_id))
            .await
        {
            tracing::warn!(error = %e, "presence not recorded");
        }
        tracing::info!("authenticated");
        let end = self.serve(claims, user, rx, close_signal).await;
        if let Err(e) = self
            .store(app.store.connection_closed(&self.user, &self.conn_id))
            .await
        {
            tracing::warn!(error = %e, "presence not updated on close");
        }
        end
    }

    /// The token from the upgrade, or from an `auth` message within the timeout.
    async fn info_token_or_wait(&mut self) -> Result<String, End> {
        if let Some(t) = self.info.token.take() {
            return Ok(t);
        }
        let timeout = self.app.config.auth_timeout;
        let msg = ServerMessage::AuthRequired {
            timeout_secs: timeout.as_secs(),
        };
        self.send_text(msg.to_frame()).await?;
        let deadline = TokioInstant::now() + timeout;
        let shutdown = self.app.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    return Err(End::close(close::GOING_AWAY, "server shutting down"));
                }
                _ = sleep_until(deadline) => {
                    return Err(End::close(close::AUTH_TIMEOUT, "no auth message in time"));
                }
                frame = self.stream.next() => {
                    let msg = match frame {
                        None => return Err(End::PeerGone),
                        Some(Err(e)) => return Err(read_error_close(&e)),
                        Some(Ok(m)) => m,
                    };
                    if msg.is_close() {
                        return Err(End::close(close::NORMAL, ""));
                    }
                    if !msg.is_text() && !msg.is_binary() {
                        continue;
                    }
                    if !self.rate.allow() {
                        return Err(End::close(close::RATE_LIMITED, "message rate limit exceeded"));
                    }
                    // Before authentication every other message is ignored.
                    if let Ok(ClientMessage::Auth { token }) =
                        msg.to_text().map_err(|_| String::new()).and_then(ClientMessage::parse)
                    {
                        return Ok(token);
                    }
                }
            }
        }
    }

    async fn authenticate(&mut self, token: &str) -> Result<(Claims, User), End> {
        match authenticate(&self.app, token).await {
            Ok(ok) => Ok(ok),
            Err(AuthFail::Auth(e)) => {
                self.app.metrics.auth_failed(e.reason());
                // The key id names which key was tried; the token itself
                // is never logged.
                let kid = crate::auth::kid_of(token);
                tracing::info!(
                    reason = e.reason(),
                    kid = kid.as_deref().unwrap_or(""),
                    "authentication refused"
                );
                Err(End::close(close::POLICY, &e.to_string()))
            }
            Err(AuthFail::Store(e)) => {
                tracing::warn!(error = %e, "authentication could not reach the store");
                Err(End::close(
                    close::TRY_AGAIN_LATER,
                    "store unavailable, retry later",
                ))
            }
        }
    }

    async fn serve(
        &mut self,
        claims: Claims,
        user: User,
        rx: mpsc::Receiver<Outbound>,
        close_signal: Arc<CloseSignal>,
    ) -> End {
        let exp = claims.exp;
        // Boxed: the greeting's state (replay, snapshot) lives on the heap
        // while it runs instead of widening every session's task for good.
        if let Err(end) = Box::pin(self.greet(claims, user)).await {
            return end;
        }
        self.live(exp, rx, close_signal).await
    }

    /// `connected`, the replay after `since` when asked, then `snapshot`.
    async fn greet(&mut self, claims: Claims, user: User) -> Result<(), End> {
        let app = self.app.clone();
        let last_seq = self
            .store(app.store.last_seq(&self.user))
            .await
            .map_err(|e| store_close(&e))?;
        self.last_sent = last_seq;
        let connected = ServerMessage::Connected(Connected {
            client_id: self.conn_id.clone(),
            user: claims
                .email
                .or(user.email)
                .unwrap_or_else(|| self.user.clone()),
            user_id: self.user.clone(),
            protocol: PROTOCOL_VERSION,
            heartbeat_secs: app.config.ping_interval.as_secs(),
            last_seq,
            signing: app.config.client_signing.info(),
        });
        self.send_text(connected.to_frame()).await?;
        if let Some(since) = self.info.since.take() {
            self.replay(since).await?;
        }
        self.snapshot().await
    }

    /// The live phase: one `select!` over shutdown, close requests, token
    /// expiry, the client's frames, the hub's queue and the ping timer.
    async fn live(
        &mut self,
        exp: i64,
        mut rx: mpsc::Receiver<Outbound>,
        close_signal: Arc<CloseSignal>,
    ) -> End {
        let mut expiry = Box::pin(sleep_until(expiry_instant(exp)));
        let ping_every = self.app.config.ping_interval;
        let mut ping = tokio::time::interval_at(TokioInstant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let shutdown = self.app.shutdown.clone();
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    Err(End::close(close::GOING_AWAY, "server shutting down"))
                }
                (code, reason) = close_signal.wait() => Err(End::Close(code, reason)),
                _ = &mut expiry => Err(End::close(close::TOKEN_EXPIRED, "token expired")),
                frame = self.stream.next() => {
                    last_heard = Instant::now();
                    match frame {
                        None => Err(End::PeerGone),
                        Some(Err(e)) => Err(read_error_close(&e)),
                        // Boxed, like the other handlers below: an idle
                        // session's task is as large as the largest state
                        // it may ever be in, so rare, deep states are
                        // allocated while they run instead.
                        Some(Ok(msg)) => Box::pin(self.on_client_frame(msg, &mut expiry)).await,
                    }
                }
                // The hub holds the sender while we are registered. Writes
                // give way to a close request (see `send`).
                out = rx.recv() => match out {
                    None => Err(End::PeerGone),
                    Some(out) => Box::pin(self.on_outbound(out, &mut rx)).await,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 {
                        Err(End::close(close::NORMAL, "no answer to pings"))
                    } else {
                        Box::pin(self.send(Message::Ping(Default::default()))).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_client_frame(
        &mut self,
        msg: Message,
        expiry: &mut Pin<Box<Sleep>>,
    ) -> Result<(), End> {
        if msg.is_close() {
            return Err(End::close(close::NORMAL, ""));
        }
        if msg.is_ping() || msg.is_pong() {
            return Ok(());
        }
        if !self.rate.allow() {
            return Err(End::close(
                close::RATE_LIMITED,
                "message rate limit exceeded",
            ));
        }
        let parsed = if msg.is_binary() {
            Err(BadMessage::plain(
                "binary frames are not supported; send JSON text",
            ))
        } else {
            msg.to_text()
                .map_err(|_| BadMessage::plain("message is not text"))
                .and_then(Incoming::parse)
        };
        match parsed {
            Err(bad) => {
                self.send_error("bad-request", bad.message, bad.reference)
                    .await
            }
            Ok(Incoming::Signed(env)) => self.on_signed(env, expiry).await,
            Ok(Incoming::Plain(cm)) => {
                let exempt = matches!(cm, ClientMessage::Ping | ClientMessage::Auth { .. });
                if self.app.config.client_signing == SigningMode::Required && !exempt {
                    let reference = send_ref(&cm);
                    return self.refuse(SignError::SignatureRequired, reference).await;
                }
                self.apply(cm, expiry).await
            }
        }
    }

    /// A signed envelope (§9): verify, then parse the inner message and
    /// handle it as if sent plainly. Nothing in an envelope whose signature
    /// does not verify is looked at, its `ref` included.
    async fn on_signed(&mut self, env: Envelope, expiry: &mut Pin<Box<Sleep>>) -> Result<(), End> {
        let Some(key) = self.signing.as_mut() else {
            let reason = "signed messages are not enabled on this server";
            return self.send_error("bad-request", reason.into(), None).await;
        };
        let verified = match key.verify(env, now_ms()) {
            Ok(v) => v,
            Err(r) => {
                // `stale`/`replayed`: the signature verified, so the text
                // is the client's own: echo its `ref`.
                let reference = r
                    .verified_text
                    .as_deref()
                    .and_then(|t| match Incoming::parse(t) {
                        Ok(Incoming::Plain(cm)) => send_ref(&cm),
                        _ => None,
                    });
                return self.refuse(r.error, reference).await;
            }
        };
        match Incoming::parse(verified.text()) {
            Ok(Incoming::Plain(cm)) => self.apply(cm, expiry).await,
            Ok(Incoming::Signed(_)) => {
                let reason = "a signed envelope cannot be signed again";
                self.send_error("bad-request", reason.into(), None).await
            }
            Err(bad) if bad.not_an_object => self.refuse(SignError::BadSignature, None).await,
            Err(bad) => {
                self.send_error("bad-request", bad.message, bad.reference)
                    .await
            }
        }
    }

    /// Answer a signing failure: counted, logged without the envelope.
    async fn refuse(&mut self, e: SignError, reference: Option<String>) -> Result<(), End> {
        self.app.metrics.signature_failed(e.code());
        tracing::info!(
            reason = e.code(),
            "client message refused by the signing check"
        );
        self.send_error(e.code(), e.to_string(), reference).await
    }

    async fn send_error(
        &mut self,
        code: &str,
        message: String,
        reference: Option<String>,
    ) -> Result<(), End> {
        let msg = ServerMessage::Error {
            code: code.into(),
            message,
            // Left out when there is no `ref` to echo.
            reference: reference.map(Some),
            telnyx: None,
        };
        self.send_text(msg.to_frame()).await
    }

    /// Handle a client message (plain, or from a verified envelope).
    async fn apply(&mut self, cm: ClientMessage, expiry: &mut Pin<Box<Sleep>>) -> Result<(), End> {
        match cm {
            ClientMessage::Ping => {
                let pong = ServerMessage::Pong {
                    timestamp: now_ms(),
                };
                self.send_text(pong.to_frame()).await
            }
            ClientMessage::Auth { token } => self.refresh(&token, expiry).await,
            ClientMessage::Resume { since } => {
                self.replay(since).await?;
                self.snapshot().await
            }
            ClientMessage::Status { status } => self.set_status(status).await,
            ClientMessage::Send(req) => {
                let app = self.app.clone();
                let frame = match crate::messages::send(&app, &self.user, &req).await {
                    Ok(sent) => ServerMessage::Sent {
                        reference: req.reference,
                        id: sent.id,
                        recipients: sent.recipients,
                    },
                    Err(e) => ServerMessage::error_for(e.code(), e.client_message(), req.reference),
                };
                self.send_text(frame.to_frame()).await
            }
            ClientMessage::CallAction(req) => {
                let slots = self
                    .actions
                    .get_or_insert_with(|| Arc::new(Semaphore::new(requests::ACTIONS_IN_FLIGHT)))
                    .clone();
                requests::spawn_call_action(&self.app, &self.user, &self.conn_id, slots, req);
                Ok(())
            }
            ClientMessage::Signal(req) => {
                let app = self.app.clone();
                match crate::signals::signal(&app, &self.user, &self.conn_id, &req).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        self.send_error(e.code(), e.client_message(), Some(req.reference).flatten())
                            .await
                    }
                }
            }
        }
    }

    /// An `auth` refresh: same user, a new expiry, and (§9) the new token's key.
    async fn refresh(&mut self, token: &str, expiry: &mut Pin<Box<Sleep>>) -> Result<(), End> {
        let (claims, _) = self.authenticate(token).await?;
        if claims.sub != self.user {
            self.app.metrics.auth_failed(AuthError::WrongUser.reason());
            return Err(End::close(close::POLICY, &AuthError::WrongUser.to_string()));
        }
        expiry.as_mut().reset(expiry_instant(claims.exp));
        if let Some(key) = self.signing.as_mut() {
            key.rekey(token, &claims.sub);
        }
        tracing::info!("token refreshed");
        Ok(())
    }

    async fn set_status(&mut self, status: Status) -> Result<(), End> {
        let app = self.app.clone();
        if let Err(e) = self.store(app.store.set_status(&self.user, status)).await {
            tracing::warn!(error = %e, "status not saved");
            let reason = "status not saved; retry later".to_string();
            return self.send_error("store-unavailable", reason, None).await;
        }
        let frame = ServerMessage::StatusChanged { status }.to_frame().into();
        app.hub.send_to_user(&self.user, frame, Some(&self.conn_id));
        Ok(())
    }

    /// Write `first` and whatever else is queued by now (up to
    /// [`MAX_BATCH`]), then flush once.
    async fn on_outbound(
        &mut self,
        first: Outbound,
        rx: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), End> {
        // Webhook arrival times of the batch's live events: their delivery
        // latency is observed once they are flushed.
        let mut stamps: Vec<Instant> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(out) = next.take() {
            self.queue_outbound(out, &mut stamps).await?;
            taken += 1;
            if taken < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        self.write(WriteOp::Flush).await?;
        for t in stamps {
            self.app.metrics.delivery_observed(t);
        }
        Ok(())
    }

    /// Feed one outbound item to the socket's write buffer (no flush).
    async fn queue_outbound(
        &mut self,
        out: Outbound,
        stamps: &mut Vec<Instant>,
    ) -> Result<(), End> {
        match out {
            Outbound::Message(frame) => {
                let frame = Utf8Bytes::clone(&frame);
                self.write(WriteOp::Feed(Message::Text(frame))).await
            }
            Outbound::Resync => self.fill_to(u64::MAX).await,
            Outbound::Event(live) => {
                let seq = live.seq;
                if seq <= self.last_sent {
                    return Ok(());
                }
                if seq > self.last_sent + 1 {
                    // Something between is stored but not yet here: read it.
                    self.fill_to(seq).await?;
                    if seq <= self.last_sent {
                        return Ok(());
                    }
                }
                self.write(WriteOp::Feed(Message::Text(live.frame.clone())))
                    .await?;
                self.last_sent = seq;
                self.app.metrics.events_delivered.inc();
                stamps.extend(live.received);
                Ok(())
            }
        }
    }

    /// Write stored events after `last_sent` up to `upto - 1` (the live one follows).
    async fn fill_to(&mut self, upto: u64) -> Result<(), End> {
        let app = self.app.clone();
        while self.last_sent + 1 < upto {
            let page = self
                .store(
                    app.store
                        .events_since(&self.user, self.last_sent, REPLAY_PAGE),
                )
                .await
                .map_err(|e| store_close(&e))?;
            if page.events.is_empty() {
                break;
            }
            for ev in page.events.iter().filter(|e| e.seq < upto) {
                self.send_event(ev).await?;
            }
            if page.events.iter().any(|e| e.seq >= upto - 1) || page.events.len() < REPLAY_PAGE {
                break;
            }
        }
        Ok(())
    }

    /// Replay every stored event after `since`, then `resumed`.
    async fn replay(&mut self, since: u64) -> Result<(), End> {
        let app = self.app.clone();
        let mut cursor = since;
        let mut replayed = false;
        let mut gap = None;
        loop {
            let page = self
                .store(app.store.events_since(&self.user, cursor, REPLAY_PAGE))
                .await
                .map_err(|e| store_close(&e))?;
            gap.get_or_insert(page.gap);
            let n = page.events.len();
            for ev in &page.events {
                self.send_event(ev).await?;
                cursor = ev.seq;
                replayed = true;
            }
            if n < REPLAY_PAGE {
                break;
            }
        }
        let last = self
            .store(app.store.last_seq(&self.user))
            .await
            .map_err(|e| store_close(&e))?;
        let resumed = ServerMessage::Resumed {
            from: since,
            // The last seq the client now holds: the last one replayed, or
            // the user's last seq when there was nothing to replay.
            to: if replayed { cursor } else { last },
            // A client that claims more than was ever stored (history lost
            // with an embedded store's restart) must refresh too.
            gap: gap.unwrap_or(false) || since > last,
        };
        self.send_text(resumed.to_frame()).await
    }

    async fn snapshot(&mut self) -> Result<(), End> {
        let app = self.app.clone();
        let view = self
            .store(app.store.user_view(&self.user))
            .await
            .map_err(|e| store_close(&e))?;
        let Some(view) = view else {
            // Deleted between authentication and now.
            return Err(End::close(close::REVOKED, "user deleted"));
        };
        let msg = ServerMessage::Snapshot(Snapshot {
            status: view.status,
            active_calls: view.active_calls,
        });
        self.send_text(msg.to_frame()).await
    }

    /// Feed a stored event (replay, gap fill); whoever asked flushes.
    async fn send_event(&mut self, ev: &StoredEvent) -> Result<(), End> {
        let frame = crate::protocol::event_frame(ev);
        self.write(WriteOp::Feed(Message::Text(frame.into())))
            .await?;
        if ev.seq > self.last_sent {
            self.last_sent = ev.seq;
        }
        self.app.metrics.events_delivered.inc();
        Ok(())
    }

    async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), End> {
        self.send(Message::Text(text.into())).await
    }

    /// Write one frame and flush.
    async fn send(&mut self, msg: Message) -> Result<(), End> {
        self.write(WriteOp::Feed(msg)).await?;
        self.write(WriteOp::Flush).await
    }

    /// Feed a frame or flush. `Err(End::PeerGone)`: the peer is gone (error
    /// or no progress for `WRITE_TIMEOUT`); `Err(End::Close(..))`: a close
    /// was requested (by the hub or shutdown) while the write was blocked —
    /// a client that stopped reading is closed promptly, whether it is
    /// being replayed history or sent live events.
    async fn write(&mut self, op: WriteOp) -> Result<(), End> {
        let close = self.close.clone();
        let shutdown = self.app.shutdown.clone();
        let io = async {
            match op {
                WriteOp::Feed(msg) => self.sink.feed(msg).await,
                WriteOp::Flush => self.sink.flush().await,
            }
        };
        tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, io) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    Err(End::PeerGone)
                }
                Err(_) => {
                    tracing::info!("write timed out; dropping connection");
                    Err(End::PeerGone)
                }
            },
            (code, reason) = close.wait() => Err(End::Close(code, reason)),
            _ = shutdown.cancelled() => {
                Err(End::close(close::GOING_AWAY, "server shutting down"))
            }
        }
    }

    async fn store<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        bounded(self.app.config.store_timeout, fut).await
    }

    async fn finish(&mut self, end: End) {
        let code = match end {
            End::Close(code, reason) => {
                // Close reasons are at most 123 bytes (RFC 6455 §5.5).
                let reason: String = reason.chars().take(120).collect();
                let frame = Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                }));
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.sink.send(frame)).await;
                self.app.metrics.closed(code);
                code
            }
            End::PeerGone => close::ABNORMAL,
        };
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.sink.close()).await;
        tracing::info!(code, "connection closed");
    }
}

/// Token check plus the store's word on the user (contract §4: an unknown,
/// disabled or revoked user is refused like a bad token).
async fn authenticate(app: &App, token: &str) -> Result<(Claims, User), AuthFail> {
    let claims = app.auth.verify(token).await.map_err(AuthFail::Auth)?;
    let t = app.config.store_timeout;
    let found = bounded(t, app.store.get_user(&claims.sub))
        .await
        .map_err(AuthFail::Store)?;
    let user = match found {
        Some(u) => u,
        None if app.config.jwt.auto_provision => provision(app, &claims).await?,
        None => return Err(AuthFail::Auth(AuthError::UnknownUser)),
    };
    if user.disabled {
        return Err(AuthFail::Auth(AuthError::Disabled));
    }
    if let Some(revoked_at) = user.tokens_revoked_at {
        // Second resolution: a token from the very second of a revoke is
        // refused too (safer than letting one issued just before through).
        if claims.iat.is_none_or(|iat| iat <= revoked_at) {
            return Err(AuthFail::Auth(AuthError::Revoked));
        }
    }
    Ok((claims, user))
}

/// `CALLBRIDGE_JWT_AUTO_PROVISION=agent`: a valid token naming an unknown
/// user creates it (an agent, with the token's `email` and `name`), once
/// however many of its sockets open at the same moment.
async fn provision(app: &App, claims: &Claims) -> Result<User, AuthFail> {
    let user = User {
        id: claims.sub.clone(),
        email: claims.email.clone(),
        name: claims.name.clone(),
        role: crate::domain::Role::Agent,
        phone_numbers: Vec::new(),
        connection_ids: Vec::new(),
        disabled: false,
        tokens_revoked_at: None,
    };
    let (user, created) = bounded(app.config.store_timeout, app.store.provision_user(user))
        .await
        .map_err(AuthFail::Store)?;
    if created {
        tracing::info!(user = %user.id, "user provisioned from a valid token");
    }
    Ok(user)
}

/// The `ref` of a `send`, to echo in an answer to it.
fn send_ref(cm: &ClientMessage) -> Option<String> {
    match cm {
        ClientMessage::Send(req) => req.reference.clone(),
        ClientMessage::CallAction(req) => req.reference.clone(),
        ClientMessage::Signal(req) => req.reference.clone(),
        _ => None,
    }
}

fn expiry_instant(exp: i64) -> TokioInstant {
    let left = exp + LEEWAY_SECS as i64 - crate::clock::now_secs();
    TokioInstant::now() + Duration::from_secs(left.max(0) as u64)
}

fn store_close(e: &StoreError) -> End {
    tracing::warn!(error = %e, "store failed during session");
    End::close(close::TRY_AGAIN_LATER, "store unavailable, retry later")
}

/// A read error: too-large messages close with 1009, the rest just end.
fn read_error_close(e: &tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Capacity(_) => End::close(close::TOO_BIG, "message too large"),
        Error::Protocol(_) => End::close(close::PROTOCOL_ERROR, "protocol error"),
        Error::Utf8(_) => End::close(close::INVALID_DATA, "text frame is not UTF-8"),
        _ => {
            tracing::debug!(error = %e, "read failed");
            End::PeerGone
        }
    }
}
