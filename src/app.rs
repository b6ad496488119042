//! Shared state of one running daemon, handed to every route and session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::telnyx::Verifier;
use crate::tls::CertResolver;

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
    /// Set when shutdown starts: `/ready` answers 503 from then on.
    draining: AtomicBool,
}

impl App {
    /// Everything in `config` was parsed and checked when it was loaded, so
    /// this cannot fail.
    pub fn new(config: Config, store: Arc<dyn Store>, certs: Arc<CertResolver>) -> Arc<Self> {
        let auth = Authenticator::new(&config.jwt);
        let verifier = Verifier::new(config.telnyx_public_key, config.webhook_tolerance.as_secs());
        let metrics = Metrics::default().with_store_commands(store.command_counter());
        Arc::new(App {
            config,
            store,
            hub: Hub::new(),
            verifier,
            auth,
            metrics,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            in_flight: Default::default(),
            outbound_wake: tokio::sync::Notify::new(),
            certs,
            draining: AtomicBool::new(false),
        })
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
