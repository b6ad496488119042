//! The listener: accept TCP, terminate TLS, serve HTTP/1.1 (with WebSocket
//! upgrades) through the warp routes, and shut everything down on one signal.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::App;
use crate::config::Config;
use crate::store::{self, Store};
use crate::tls::{self, CertResolver};

/// Handshakes in progress at once. A TLS handshake costs ~1 ms of CPU with
/// ECDSA; 256 at once keeps a reconnect storm from starving the event path
/// on 2 cores, while the accept queue absorbs the rest.
const MAX_HANDSHAKES: usize = 256;
/// Open TCP connections in total (HTTP and WebSocket). At ~20 KB per idle
/// WebSocket this is ~1 GB at worst, well under a small VPS's memory.
const MAX_CONNECTIONS: usize = 50_000;
/// Request head (request line + headers) limit; JWTs in a header are ~1 KB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// A request must send its headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long shutdown waits for in-flight webhooks and sockets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

/// Stable name of this service: host and the address it listens on.
fn service_name(listen: std::net::SocketAddr) -> String {
    // uname(2)'s nodename, the same name /proc/sys/kernel/hostname shows,
    // without /proc: the unit hides it (ProcSubset=pid).
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = match host.trim() {
        "" => "localhost",
        h => h,
    };
    format!("{host}:{listen}")
}

/// Open the store the configuration names (MongoDB, or the embedded one).
pub async fn open_store(
    config: &Config,
    listen: std::net::SocketAddr,
) -> Result<Arc<dyn Store>, RunError> {
    match &config.mongodb_uri {
        None => {
            tracing::warn!(
                "CALLBRIDGE_MONGODB_URI is not set: using the embedded in-memory store; \
                 users, history and seq are lost on restart"
            );
            Ok(Arc::new(store::memory::MemoryStore::new(config.history)))
        }
        Some(uri) => {
            let mut store = store::mongo::MongoStore::connect(
                uri,
                &config.mongodb_db,
                config.history,
                config.store_timeout,
                config.mongodb_count_commands,
            )
            .await?;
            store.claim_instance(&service_name(listen)).await?;
            tracing::info!(db = %config.mongodb_db, "using MongoDB");
            Ok(Arc::new(store))
        }
    }
}

/// Run the daemon on an already-bound listener until `shutdown` resolves.
/// Tests call this with a port-0 listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let read_from = tls::fingerprint(&config.tls);
    let certs = CertResolver::new(tls::load_certified_key(&config.tls)?, read_from);
    let listen = listener.local_addr().unwrap_or(config.listen);
    let store = open_store(&config, listen).await?;
    let app = App::new(config, store, certs);
    if app.config.dev {
        crate::dev::seed_demo_user(app.store.as_ref())
            .await
            .map_err(RunError::Store)?;
    }
    use_dev_telnyx(&app, listen);
    spawn_heartbeat(&app);
    spawn_rates(&app);
    spawn_feed(&app);
    crate::outbound::spawn(&app);
    crate::recovery::spawn(&app);
    if let Some(jwks) = &app.jwks {
        app.tracker.spawn(jwks.clone().run(app.shutdown.clone()));
    }
    crate::reload::spawn(&app);
    crate::systemd::spawn_watchdog(&app.shutdown, &app.tracker);
    // The listener is bound (the caller did it) and the store answered
    // while opening: ready.
    crate::systemd::notify_ready("serving");
    serve(listener, app, shutdown).await;
    Ok(())
}

/// `--dev` without an API key: the built-in Telnyx stand-in answers call
/// actions and posts their webhooks to this daemon (contract §14). Without
/// its dev files (they are made by `serve --dev` before this runs) actions
/// stay off, with a warning.
fn use_dev_telnyx(app: &Arc<App>, listen: SocketAddr) {
    if !app.config.dev || app.call_control().is_some() {
        return;
    }
    let files = crate::dev::DevFiles::new(&app.config.data_dir);
    match crate::dev::telnyx::DevTelnyx::for_daemon(
        listen,
        &files,
        app.shutdown.clone(),
        app.tracker.clone(),
    ) {
        Ok(standin) => {
            if standin.public_key() != app.config.telnyx_public_key {
                tracing::warn!(
                    "CALLBRIDGE_TELNYX_PUBLIC_KEY is not the dev key: this daemon will \
                     refuse the built-in Telnyx stand-in's webhooks"
                );
            }
            app.use_call_control(Arc::new(standin));
            tracing::info!(
                "built-in Telnyx stand-in answers call actions (no CALLBRIDGE_TELNYX_API_KEY)"
            );
        }
        Err(e) => tracing::warn!(error = %e, "built-in Telnyx stand-in unavailable"),
    }
}

/// Several instances on one MongoDB: deliver what the others stored, and
/// apply their admin actions, to this instance's sessions.
fn spawn_feed(app: &Arc<App>) {
    let Some(mut feed) = app.store.feed(app.shutdown.clone()) else {
        return;
    };
    let app2 = app.clone();
    app.tracker.spawn(async move {
        while let Some(item) = feed.recv().await {
            app2.hub.apply_feed(item);
        }
    });
}

/// The console's per-second figures: one roll-up a second, until shutdown.
/// A late tick (a stalled runtime) is not made up for: its slot then holds
/// the counts of the longer interval, which is what happened.
fn spawn_rates(app: &Arc<App>) {
    let app2 = app.clone();
    app.tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: it takes the counters' starting values.
        loop {
            tokio::select! {
                _ = app2.shutdown.cancelled() => return,
                _ = tick.tick() => app2.metrics.roll_second(),
            }
        }
    });
}

/// Periodic store upkeep (presence heartbeat), until shutdown.
fn spawn_heartbeat(app: &Arc<App>) {
    let app2 = app.clone();
    app.tracker.spawn(async move {
        let mut tick = tokio::time::interval(store::HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = app2.shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = store::bounded(app2.config.store_timeout, app2.store.heartbeat()).await {
                        tracing::warn!(error = %e, "store heartbeat failed");
                    }
                }
            }
        }
    });
}

pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls::server_config(app.certs.clone()));
    let service = warp::service(crate::routes::routes(app.clone()));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening (https and wss)");
    }
    let shutdown = drain(&app, shutdown);
    tokio::pin!(shutdown);
    while let Some((tcp, peer, permit)) = accept(&listener, &connections, &mut shutdown).await {
        let acceptor = acceptor.clone();
        let service = service.clone();
        let handshakes = handshakes.clone();
        let handshake_timeout = app.config.handshake_timeout;
        let shutdown = app.shutdown.clone();
        app.tracker.spawn(
            async move {
                let _permit = permit;
                let Some(tls) = tls_handshake(&acceptor, tcp, &handshakes, handshake_timeout).await
                else {
                    return;
                };
                serve_http(tls, service, shutdown).await;
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    stop(listener, &app).await;
}

/// Resolves when shutdown starts, after draining: readiness turns 503 (and
/// STOPPING=1 goes out) at once; the listener keeps serving for
/// `shutdown_drain` so a load balancer can notice, then closes.
async fn drain(app: &App, shutdown: impl Future<Output = ()>) {
    tokio::select! {
        _ = shutdown => {},
        _ = app.shutdown.cancelled() => {},
    }
    tracing::info!("shutting down");
    crate::systemd::notify_stopping();
    app.start_draining();
    tokio::time::sleep(app.config.shutdown_drain).await;
}

/// The next TCP connection with its slot among `MAX_CONNECTIONS`, or `None`
/// once `shutdown` resolved.
async fn accept(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            _ = shutdown.as_mut() => return None,
            p = connections.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        tokio::select! {
            _ = shutdown.as_mut() => return None,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer, permit));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// TLS within `timeout`, at most `MAX_HANDSHAKES` at once.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    handshakes: &Semaphore,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    let _slot = handshakes.acquire().await.ok()?;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1 with upgrades on one TLS connection until it ends. On shutdown
/// an idle keep-alive connection closes at once and one with a request in
/// flight closes after its response.
async fn serve_http<S, B>(tls: TlsStream<TcpStream>, service: S, shutdown: CancellationToken)
where
    S: tower_service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    let mut conn = std::pin::pin!(builder
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
        .with_upgrades());
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Shutdown: readiness went first (see `drain`); now stop accepting, then
/// let in-flight requests finish and sessions send 1001, all bounded.
async fn stop(listener: TcpListener, app: &App) {
    tracing::info!("stopped accepting");
    drop(listener);
    app.shutdown.cancel();
    app.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, app.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish in time");
    }
    tracing::info!("stopped");
}
