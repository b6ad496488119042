//! Shared state of one running daemon, handed to every route and session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::domain::RecoveryBoard;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::telnyx::api::calls::CallControl;
use crate::telnyx::Verifier;
use crate::tls::CertResolver;

/// Console streams (`GET /api/console/stream`) open at once on one
/// instance. Each polls the store every 1.5 s and keeps the last JSON it
/// sent (up to ~2 MB with 1,000 users and 500 calls of 50 events); 16
/// operators' tabs is more than a team keeps open, and 16 streams' reads
/// stay a small load on the store. One more is refused with 503.
pub const MAX_CONSOLE_STREAMS: usize = 16;

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub verifier: Verifier,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub started: Instant,
    /// Fired once on SIGTERM/SIGINT (or when the caller's shutdown future
    /// resolves); every task watches it.
    pub shutdown: CancellationToken,
    /// Every task the daemon spawns (connections, sessions, webhook
    /// processing), so shutdown can wait for them, bounded.
    pub tracker: TaskTracker,
    /// The identity provider's keys (`CALLBRIDGE_JWT_JWKS_URL`), when set.
    pub jwks: Option<Arc<crate::jwks::Jwks>>,
    /// Telnyx's REST API (recovery, call actions); `None` without a key.
    pub telnyx: Option<Arc<crate::telnyx::api::Client>>,
    /// Where call actions go (contract §14): Telnyx's API when there is a
    /// key, the built-in stand-in in `--dev` without one (set once by
    /// `server::run`), else unset: actions are off.
    call_control: std::sync::OnceLock<Arc<dyn CallControl>>,
    /// Recovery of missed webhooks: its state and the way to ask for a run.
    pub recovery: RecoveryBoard,
    /// Unique per process: the owner of leases this process takes.
    pub instance_id: String,
    /// Telnyx event ids being ingested by this process right now, with
    /// where their outcome will be published (`webhook::InFlight`).
    pub in_flight: std::sync::Mutex<
        std::collections::HashMap<String, tokio::sync::watch::Receiver<Option<bool>>>,
    >,
    /// Something was queued for the outbound endpoints (or an endpoint
    /// changed): the dispatcher looks now, not at its next poll.
    pub outbound_wake: tokio::sync::Notify,
    /// The TLS certificate in service (`reload` swaps it).
    pub certs: Arc<CertResolver>,
    /// Slots of [`MAX_CONSOLE_STREAMS`]: a stream holds one while open.
    pub console_streams: Arc<Semaphore>,
    /// Set when shutdown starts: `/ready` answers 503 from then on.
    draining: AtomicBool,
}

impl App {
    /// Everything in `config` was parsed and checked when it was loaded, so
    /// this cannot fail.
    pub fn new(config: Config, store: Arc<dyn Store>, certs: Arc<CertResolver>) -> Arc<Self> {
        let metrics = Metrics::default().with_store_commands(store.command_counter());
        let jwks = config.jwt.jwks_url.as_deref().map(|url| {
            crate::jwks::Jwks::new(url, metrics.jwks_fetches.clone(), metrics.jwks_keys.clone())
        });
        let auth = Authenticator::new(&config.jwt, jwks.clone());
        let verifier = Verifier::new(config.telnyx_public_key, config.webhook_tolerance.as_secs());
        let telnyx = crate::telnyx::api::Client::new(&config.telnyx_api).map(Arc::new);
        let recovery = RecoveryBoard::new(config.recovery.is_some());
        let call_control = std::sync::OnceLock::new();
        if let Some(c) = &telnyx {
            let _ = call_control.set(c.clone() as Arc<dyn CallControl>);
        }
        Arc::new(App {
            config,
            store,
            hub: Hub::new(),
            verifier,
            auth,
            metrics,
            started: Instant::now(),
            jwks,
            telnyx,
            call_control,
            recovery,
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            in_flight: Default::default(),
            outbound_wake: tokio::sync::Notify::new(),
            certs,
            console_streams: Arc::new(Semaphore::new(MAX_CONSOLE_STREAMS)),
            draining: AtomicBool::new(false),
        })
    }

    /// Where call actions go, when they are on.
    pub fn call_control(&self) -> Option<&Arc<dyn CallControl>> {
        self.call_control.get()
    }

    /// `--dev` without an API key: the built-in stand-in answers actions.
    /// Ignored when Telnyx's API is set already.
    pub fn use_call_control(&self, cc: Arc<dyn CallControl>) {
        let _ = self.call_control.set(cc);
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
