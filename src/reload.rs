//! Certificate reloads (contract §12). Triggers: `POST /api/reload` (what
//! `callbridge reload`, and so systemd's `ExecReload=`, calls), SIGHUP, and
//! a change of the files on disk (Let's Encrypt renewals). Whatever the
//! trigger, a certificate that does not load leaves the previous one in
//! service, is counted (`callbridge_tls_reload_failures_total`) and logged
//! as an error, and whoever asked is told: the API answers 409, so the
//! command exits 1 and `systemctl reload` fails visibly. Open connections
//! keep the certificate they were made with.

use std::sync::Arc;

use crate::app::App;
use crate::metrics::OutcomeLabel;
use crate::tls::{self, TlsError};

/// What a reload put in service.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    /// notAfter of the new leaf certificate, Unix seconds.
    pub not_after: Option<i64>,
}

/// Read the files again; on success swap them in for new connections, on
/// failure keep the certificate in service and say why.
pub fn reload(app: &App, trigger: &'static str) -> Result<Reloaded, TlsError> {
    app.certs.note_read(tls::fingerprint(&app.config.tls));
    let outcome = tls::load_certified_key(&app.config.tls);
    let label = OutcomeLabel {
        outcome: if outcome.is_ok() { "ok" } else { "error" },
    };
    app.metrics.tls_reloads.get_or_create(&label).inc();
    match outcome {
        Ok(key) => {
            let not_after = tls::not_after(&key);
            if let Some(t) = not_after {
                app.metrics.tls_cert_expiry.set(t);
            }
            app.certs.replace(key);
            tracing::info!(trigger, "TLS certificate reloaded");
            Ok(Reloaded { not_after })
        }
        Err(e) => {
            app.metrics.tls_reload_failures.inc();
            tracing::error!(trigger, error = %e,
                "new TLS certificate refused; the previous one stays in service");
            Err(e)
        }
    }
}

/// Reload on SIGHUP and when the files change on disk, until shutdown.
pub fn spawn(app: &Arc<App>) {
    if let Some(t) = tls::not_after(&app.certs.current()) {
        app.metrics.tls_cert_expiry.set(t);
    }
    // Installed now, before READY=1 goes out: a SIGHUP right after start
    // must not meet the signal's default action (terminate).
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; certificate reload by file watch and API only");
            None
        }
    };
    let app2 = app.clone();
    app.tracker.spawn(async move {
        let poll = app2.config.tls_reload_poll;
        loop {
            let hup_fired = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let tick = async {
                if poll.is_zero() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(poll).await
                }
            };
            tokio::select! {
                _ = app2.shutdown.cancelled() => return,
                _ = hup_fired => {
                    let _ = reload(&app2, "SIGHUP");
                    crate::systemd::notify_ready_after_reload();
                }
                _ = tick => {
                    if app2.certs.files_changed(&app2.config.tls) {
                        let _ = reload(&app2, "file change");
                    }
                }
            }
        }
    });
}
