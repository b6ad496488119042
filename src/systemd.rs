//! systemd `Type=notify`: READY=1 once the listener is bound and the store
//! answers, RELOADING=1/READY=1 around a certificate reload, STOPPING=1 on
//! shutdown, and WATCHDOG=1 keep-alives when `WatchdogSec` is set. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_ready_after_reload() {
    // systemd expects RELOADING=1 with a monotonic timestamp, then READY=1.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
    send(&[NotifyState::Ready]);
}

pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// WATCHDOG=1 at half the configured interval until shutdown.
pub fn spawn_watchdog(shutdown: &CancellationToken, tracker: &TaskTracker) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
