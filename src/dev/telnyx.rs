//! The built-in Telnyx stand-in of `serve --dev` without an API key
//! (contract §14): it answers call commands as Telnyx's Call Control API
//! would, then posts the webhooks Telnyx would send, signed with the dev
//! key as Telnyx signs, to the daemon's own `/webhooks/telnyx` — so the
//! `/dev` page's buttons work offline on calls made by `callbridge
//! simulate`. Never on the production path: only `server::run` in `--dev`
//! builds one.
//!
//! [`actions`] decides what a command does and which webhooks follow
//! (table there), [`record`] remembers calls (bounded), [`webhooks`]
//! shapes the payloads; this file answers and delivers.

mod actions;
mod record;
mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::actions::{Plan, Step};
use self::record::Calls;
use super::{DevError, DevFiles};
use crate::telnyx::api::calls::CallControl;
use crate::telnyx::api::TelnyxError;
use crate::telnyx::{Signer, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Commands whose webhooks are still to be posted, at most. A command's
/// webhooks take a few seconds; a dialer is rate limited far below 256
/// commands in that time. Past it the stand-in answers 429 as Telnyx does
/// when overloaded, so nothing it accepted goes unposted.
const MAX_PENDING: usize = 256;
/// Telnyx answers a command before its webhooks: the first one comes
/// 100–300 ms after (random in that range, as a real network varies), so
/// the dialer sees the command's result first.
const DELAY_MIN_MS: u64 = 100;
const DELAY_SPREAD_MS: u64 = 200;
/// Attempts at one webhook, from its first (Telnyx retries too, over up
/// to a minute; the daemon is local, so a few seconds tell): then it is
/// given up, with a warning.
const ATTEMPTS_AT_MS: [u64; 4] = [0, 500, 1_000, 2_000];
/// One attempt's bound: the daemon answers a webhook in milliseconds.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Telnyx's Call Control, played locally. Cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct DevTelnyx {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    tls: Arc<rustls::ClientConfig>,
    signer: Signer,
    calls: Mutex<Calls>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    pending: Arc<Semaphore>,
}

impl DevTelnyx {
    /// Post webhooks to `webhook_url` (the daemon's
    /// `https://…/webhooks/telnyx`) over `tls`, signed by `signer`; its
    /// tasks run on `tracker` and stop when `shutdown` fires.
    pub fn new(
        webhook_url: &str,
        tls: Arc<rustls::ClientConfig>,
        signer: Signer,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> DevTelnyx {
        DevTelnyx {
            shared: Arc::new(Shared {
                url: webhook_url.to_string(),
                tls,
                signer,
                calls: Mutex::new(Calls::default()),
                shutdown,
                tracker,
                pending: Arc::new(Semaphore::new(MAX_PENDING)),
            }),
        }
    }

    /// The stand-in of a daemon listening on `listen`, using its dev data
    /// dir: the dev CA trusts the daemon's certificate (for `127.0.0.1`
    /// and `::1`), the dev signing key is the one it verifies.
    pub fn for_daemon(
        listen: SocketAddr,
        files: &DevFiles,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<DevTelnyx, DevError> {
        let signer = super::load_signer(files)?;
        let ca = std::fs::read(&files.ca).map_err(|e| DevError::Io {
            path: files.ca.display().to_string(),
            reason: e.to_string(),
        })?;
        let tls = crate::tls::client_config(Some(&ca)).map_err(DevError::Bad)?;
        let url = format!(
            "https://{}/webhooks/telnyx",
            crate::cli::connect_host(listen)
        );
        Ok(Self::new(&url, tls, signer, shutdown, tracker))
    }

    /// The public half of the key its webhooks are signed with.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.signer.public_key()
    }

    /// Where it posts webhooks.
    pub fn webhook_url(&self) -> &str {
        &self.shared.url
    }
}

impl Shared {
    fn calls(&self) -> MutexGuard<'_, Calls> {
        // A panic under the lock leaves the record consistent enough for
        // a dev tool: keep serving rather than poison every later command.
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more command's webhooks, or Telnyx's 429.
    fn slot(&self) -> Result<OwnedSemaphorePermit, TelnyxError> {
        self.pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| record::too_many())
    }

    /// Play `plan` in the background: the caller's answer goes first.
    fn spawn(self: &Arc<Self>, plan: Plan, slot: OwnedSemaphorePermit) {
        let shared = self.clone();
        self.tracker.spawn(async move {
            let _slot = slot;
            let mut due = tokio::time::Instant::from_std(plan.due);
            for step in plan.steps {
                due += step.after;
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => {}
                }
                if shared.calls().pass(&step.guard) {
                    shared.post(&step).await;
                }
            }
        });
    }

    /// Post one webhook, retried on a failure or no answer; given up with
    /// a warning after [`ATTEMPTS_AT_MS`].
    async fn post(&self, step: &Step) {
        let now = crate::clock::now_rfc3339();
        let mut envelope = webhooks::envelope(step.event, step.payload.clone(), &now, &self.url);
        let start = tokio::time::Instant::now();
        let mut last = String::new();
        for (i, at) in ATTEMPTS_AT_MS.iter().enumerate() {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(start + Duration::from_millis(*at)) => {}
            }
            envelope["meta"]["attempt"] = (i + 1).into();
            match self.attempt(&envelope).await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        tracing::warn!(
            event_type = step.event,
            call = step.payload["call_control_id"].as_str().unwrap_or(""),
            url = %self.url,
            error = %last,
            "dev Telnyx stand-in: webhook not delivered"
        );
    }

    /// One signed POST: Ed25519 over `{timestamp}|{body}`, as Telnyx signs.
    async fn attempt(&self, envelope: &Value) -> Result<(), String> {
        let body = envelope.to_string();
        let ts = crate::clock::now_secs();
        let signature = self.signer.sign(ts, body.as_bytes());
        let ts = ts.to_string();
        let headers = [
            ("content-type", "application/json"),
            (SIGNATURE_HEADER, signature.as_str()),
            (TIMESTAMP_HEADER, ts.as_str()),
        ];
        let sent = crate::client::request_once(&self.url, "POST", &headers, body, self.tls.clone());
        match tokio::time::timeout(ATTEMPT_TIMEOUT, sent).await {
            Ok(Ok(r)) if (200..300).contains(&r.status) => Ok(()),
            Ok(Ok(r)) => Err(format!("HTTP {}", r.status)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")),
        }
    }
}

/// The processing time before a command's first webhook, random in
/// 100–300 ms.
fn delay() -> Duration {
    let r = (uuid::Uuid::new_v4().as_u128() % u128::from(DELAY_SPREAD_MS + 1)) as u64;
    Duration::from_millis(DELAY_MIN_MS + r)
}

#[async_trait]
impl CallControl for DevTelnyx {
    async fn action(
        &self,
        call_control_id: &str,
        action: &str,
        body: &Value,
    ) -> Result<Value, TelnyxError> {
        let slot = self.shared.slot()?;
        let plan = {
            let mut calls = self.shared.calls();
            actions::act(
                &mut calls,
                call_control_id,
                action,
                body,
                Instant::now(),
                delay(),
            )?
        };
        if let Some(plan) = plan {
            self.shared.spawn(plan, slot);
        }
        Ok(serde_json::json!({"result": "ok"}))
    }

    async fn dial(&self, body: &Value) -> Result<Value, TelnyxError> {
        let slot = self.shared.slot()?;
        let (answer, plan) = {
            let mut calls = self.shared.calls();
            actions::dial(&mut calls, body, Instant::now(), delay())?
        };
        if let Some(plan) = plan {
            self.shared.spawn(plan, slot);
        }
        Ok(answer)
    }
}
