//! Recovery of missed webhooks (contract §13), apart from Telnyx and the
//! store: which part of the delivery log a run reads, what a run reports,
//! why one fails, and the state the operator sees (`/api/status`, the
//! console). The engine is `crate::recovery`; this is what the API, the
//! console and the engine share.

use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::clock::rfc3339_ms;

/// Each run reads back this far before the checkpoint: a delivery that
/// finished while the previous run was paging may be listed late.
pub const OVERLAP_MS: i64 = 10 * 60_000;

/// Where a run starts reading (`filter[finished_at][gte]`, ms): the
/// operator's `since`, else the checkpoint less the overlap, else (the
/// first run ever) the lookback.
pub fn window_start(
    since: Option<i64>,
    checkpoint: Option<i64>,
    now_ms: i64,
    lookback_ms: i64,
) -> i64 {
    since.unwrap_or_else(|| match checkpoint {
        Some(c) => c - OVERLAP_MS,
        None => now_ms - lookback_ms,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryState {
    /// No API key, or `CALLBRIDGE_RECOVERY=off`.
    Off,
    Idle,
    Running,
    /// Telnyx refused the key (401/403): no scheduled run until the
    /// configuration changes (a restart); `POST /api/recover` still tries.
    Unauthorized,
    /// The last run failed (5xx, timeout, store): the next interval retries.
    Failing,
}

/// `/api/status.recovery` and the console's `recovery`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryView {
    pub state: RecoveryState,
    pub last_run_at: Option<String>,
    pub last_success_at: Option<String>,
    pub checkpoint: Option<String>,
    pub last_error: Option<String>,
}

/// What one run did (`POST /api/recover`'s answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// Deliveries listed by Telnyx.
    pub fetched: u64,
    /// Stored and delivered now.
    pub ingested: u64,
    /// Already stored (delivered live, or by an earlier run).
    pub duplicates: u64,
    /// Not call events, or unreadable.
    pub skipped: u64,
    /// The checkpoint after the run.
    pub checkpoint: Option<String>,
}

/// Why a run did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunFailure {
    #[error("recovery is off (CALLBRIDGE_TELNYX_API_KEY unset or CALLBRIDGE_RECOVERY=off)")]
    Off,
    #[error("another instance is running recovery; try again when it is done")]
    Busy,
    #[error("Telnyx refused the API key: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the store is unavailable: {0}")]
    Store(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// A run asked for through the admin API.
#[derive(Debug)]
pub struct RunRequest {
    /// Read from here (ms) instead of the checkpoint.
    pub since: Option<i64>,
    pub reply: oneshot::Sender<Result<RunReport, RunFailure>>,
}

/// Requests waiting for the recovery task; more are refused (busy).
const REQUESTS: usize = 4;

/// This instance's recovery state, and the way to ask for a run.
pub struct RecoveryBoard {
    view: Mutex<RecoveryView>,
    tx: mpsc::Sender<RunRequest>,
    rx: Mutex<Option<mpsc::Receiver<RunRequest>>>,
}

impl RecoveryBoard {
    pub fn new(on: bool) -> Self {
        let (tx, rx) = mpsc::channel(REQUESTS);
        let state = if on {
            RecoveryState::Idle
        } else {
            RecoveryState::Off
        };
        RecoveryBoard {
            view: Mutex::new(RecoveryView {
                state,
                last_run_at: None,
                last_success_at: None,
                checkpoint: None,
                last_error: None,
            }),
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    pub fn view(&self) -> RecoveryView {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecoveryView> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The recovery task's end of the request queue (taken once).
    pub fn take_requests(&self) -> Option<mpsc::Receiver<RunRequest>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Ask for a run and wait for its report.
    pub async fn request(&self, since: Option<i64>) -> Result<RunReport, RunFailure> {
        if self.lock().state == RecoveryState::Off {
            return Err(RunFailure::Off);
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(RunRequest { since, reply })
            .map_err(|_| RunFailure::Busy)?;
        answer.await.unwrap_or(Err(RunFailure::ShuttingDown))
    }

    pub fn started(&self, now_ms: i64) {
        let mut v = self.lock();
        v.state = RecoveryState::Running;
        v.last_run_at = Some(rfc3339_ms(now_ms));
    }

    pub fn checkpoint(&self, checkpoint_ms: Option<i64>) {
        self.lock().checkpoint = checkpoint_ms.map(rfc3339_ms);
    }

    /// A run's outcome: the state it leaves.
    pub fn finished(&self, outcome: &Result<RunReport, RunFailure>, now_ms: i64) {
        let mut v = self.lock();
        match outcome {
            Ok(report) => {
                v.state = RecoveryState::Idle;
                v.last_success_at = Some(rfc3339_ms(now_ms));
                v.checkpoint.clone_from(&report.checkpoint);
                v.last_error = None;
            }
            // Another instance runs it: nothing about this one changed.
            Err(RunFailure::Busy) => v.state = RecoveryState::Idle,
            Err(e) => {
                v.state = match e {
                    RunFailure::Unauthorized(_) => RecoveryState::Unauthorized,
                    _ => RecoveryState::Failing,
                };
                v.last_error = Some(e.to_string());
            }
        }
    }

    pub fn state(&self) -> RecoveryState {
        self.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_from_the_checkpoint_less_the_overlap() {
        let (now, day) = (1_000_000_000_000, 86_400_000);
        assert_eq!(window_start(None, None, now, day), now - day);
        assert_eq!(
            window_start(None, Some(now - 5), now, day),
            now - 5 - OVERLAP_MS
        );
        assert_eq!(window_start(Some(42), Some(now), now, day), 42);
    }

    #[test]
    fn the_state_follows_the_outcome() {
        let b = RecoveryBoard::new(true);
        b.started(1_000);
        assert_eq!(b.state(), RecoveryState::Running);
        b.finished(&Err(RunFailure::Unauthorized("401".into())), 2_000);
        assert_eq!(b.state(), RecoveryState::Unauthorized);
        assert!(b.view().last_error.unwrap().contains("401"));
        b.finished(&Err(RunFailure::Unavailable("HTTP 500".into())), 3_000);
        assert_eq!(b.state(), RecoveryState::Failing);
        let report = RunReport {
            checkpoint: Some("2026-12-07T10:00:00.000Z".into()),
            ..RunReport::default()
        };
        b.finished(&Ok(report), 4_000);
        let v = b.view();
        assert_eq!(v.state, RecoveryState::Idle);
        assert_eq!(v.last_error, None);
        assert_eq!(v.checkpoint.as_deref(), Some("2026-12-07T10:00:00.000Z"));
        assert!(v.last_success_at.is_some());
        assert_eq!(RecoveryBoard::new(false).state(), RecoveryState::Off);
    }
}
