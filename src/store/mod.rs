//! Persistent state behind one trait: users, calls (bindings and active-call
//! state), per-user event history with `seq`, presence, status, and webhook
//! receipts for de-duplication. The types and the rules are the domain's
//! ([`crate::domain`]); a backend only does the I/O.
//!
//! The guarantees every backend gives (and `tests/it/store_conformance.rs`
//! checks on each):
//! - `ingest` is atomic: the receipt, the call update and one event per
//!   target user with that user's next `seq` are all stored, or none is;
//! - a Telnyx event id is ingested at most once, even under concurrency;
//! - per-user `seq` starts at 1 and grows by exactly 1, with no gap or repeat;
//! - a hung-up call is never revived by a late or duplicate event.

pub mod memory;
mod memory_outbound;
pub mod mongo;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    AttemptResult, CallRecord, Control, Delivery, Endpoint, EndpointStats, EventBody, EventsPage,
    Ingest, IngestOutcome, Role, Status, StoredEvent, User, UserSummary, UserView,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store operation timed out after {0:?}")]
    Timeout(Duration),
    #[error("stored data has a wrong shape: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What other instances stored or asked for, for this instance's sessions.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Events(Vec<StoredEvent>),
    Control(Control),
    /// The feed lost its place (history gone): every session must catch up
    /// from the store, from its last delivered `seq`.
    Resync,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip; `/ready` and the outage detection use it.
    async fn ping(&self) -> StoreResult<()>;

    // ---- users
    async fn upsert_user(&self, user: User) -> StoreResult<User>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// Create `user` unless a user with its id exists; the stored user and
    /// whether it was created now. Concurrent calls create it once.
    async fn provision_user(&self, user: User) -> StoreResult<(User, bool)>;
    /// Deletes the user with their history, presence and status.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;
    /// Marks every token issued up to `at` (Unix seconds) as revoked.
    async fn revoke_tokens(&self, id: &str, at: i64) -> StoreResult<bool>;
    async fn users_by_phone(&self, e164: &str) -> StoreResult<Vec<String>>;
    async fn users_by_connection(&self, connection_id: &str) -> StoreResult<Vec<String>>;
    async fn users_by_roles(&self, roles: &[Role]) -> StoreResult<Vec<String>>;
    async fn all_user_ids(&self) -> StoreResult<Vec<String>>;

    // ---- calls and events
    /// Users a call is bound to, looked up by the given keys in order.
    async fn call_binding(&self, keys: &[String]) -> StoreResult<Option<Vec<String>>>;
    async fn ingest(&self, ingest: Ingest) -> StoreResult<IngestOutcome>;
    /// Bind a call to `users` under `keys` before any event of it arrives
    /// (a dial, contract §14): its webhooks route to them (§6 rule 2).
    async fn bind_call(&self, keys: &[String], users: &[String]) -> StoreResult<()>;
    /// Store one event that is not a webhook (a §8 message) for `users`,
    /// each under their next `seq`, atomically, all sharing `body`; no
    /// receipt and no call update. Repeats in `users` get one `seq`.
    async fn append(&self, body: Arc<EventBody>, users: &[String])
        -> StoreResult<Vec<StoredEvent>>;
    /// Stored events for `user` with `seq > since`, oldest first, at most `limit`.
    async fn events_since(&self, user: &str, since: u64, limit: usize) -> StoreResult<EventsPage>;
    async fn last_seq(&self, user: &str) -> StoreResult<u64>;

    // ---- presence and status
    async fn connection_opened(&self, user: &str, conn_id: &str) -> StoreResult<()>;
    async fn connection_closed(&self, user: &str, conn_id: &str) -> StoreResult<()>;
    /// Called every [`HEARTBEAT`] by the daemon: keeps this process's
    /// presence fresh and drops presence left by dead processes.
    async fn heartbeat(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn set_status(&self, user: &str, status: Status) -> StoreResult<()>;
    /// User, presence, status and active calls in one read.
    async fn user_view(&self, id: &str) -> StoreResult<Option<UserView>>;

    // ---- the operator's console (contract §12)
    /// The first `limit` users by id, each with presence (on every
    /// instance) and status, in a number of queries that does not grow
    /// with the users (MongoDB: three).
    async fn list_user_summaries(&self, limit: usize) -> StoreResult<Vec<UserSummary>>;
    /// Call legs not hung up, newest `startedAt` first (legs without one
    /// last), at most `limit`, each with its bound users and timeline.
    async fn active_call_records(&self, limit: usize) -> StoreResult<Vec<CallRecord>>;

    // ---- outbound webhooks (contract §10)
    /// Create or replace an endpoint.
    async fn put_endpoint(&self, endpoint: Endpoint) -> StoreResult<()>;
    async fn get_endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>>;
    /// Deletes the endpoint and every delivery still queued for it.
    async fn delete_endpoint(&self, id: &str) -> StoreResult<bool>;
    /// Queue deliveries; one whose id is queued already is left as it is.
    async fn enqueue_deliveries(&self, deliveries: Vec<Delivery>) -> StoreResult<()>;
    /// Up to `limit` pending deliveries of `endpoint` due by `now_ms` that no
    /// instance holds, oldest due first, each held by this caller for
    /// `lease_ms` (another instance may take it after that, if this one
    /// died before recording the attempt).
    async fn claim_deliveries(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// Record an attempt's result (see [`crate::domain::after_attempt`]) and
    /// release the lease.
    async fn finish_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()>;
    async fn endpoint_stats(&self, endpoint: &str) -> StoreResult<EndpointStats>;
    /// The endpoint's last `limit` deliveries, newest first.
    async fn recent_deliveries(&self, endpoint: &str, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// Deliveries pending across all endpoints (the queue depth metric).
    async fn pending_deliveries(&self) -> StoreResult<u64>;

    // ---- recovery of missed webhooks (contract §13)
    /// The latest `finished_at` (ms since the epoch) a recovery run fully
    /// ingested; `None` before the first complete run.
    async fn recovery_checkpoint(&self) -> StoreResult<Option<i64>>;
    /// Take the recovery lease for `owner` until `until_ms`, or extend it
    /// when `owner` holds it; false while another owner's lease has not run
    /// out (with MongoDB, one instance recovers at a time).
    async fn claim_recovery(&self, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool>;
    /// Release `owner`'s lease; with `checkpoint`, advance the checkpoint
    /// to it (never backwards).
    async fn finish_recovery(&self, owner: &str, checkpoint: Option<i64>) -> StoreResult<()>;

    /// Commands this store sends to its server, counted as they start
    /// (`None`: an embedded store sends none).
    fn command_counter(&self) -> Option<prometheus_client::metrics::counter::Counter> {
        None
    }

    // ---- several instances on one store
    /// Tell the other instances to apply `control` (this one applies it itself).
    async fn publish_control(&self, _control: &Control) -> StoreResult<()> {
        Ok(())
    }

    /// Events stored and controls published by other instances, until
    /// `shutdown`. `None` for a store that only one process uses.
    fn feed(
        &self,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::Receiver<FeedItem>> {
        None
    }
}

/// How often [`Store::heartbeat`] runs.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Bound one store operation by `limit` (contract: `CALLBRIDGE_STORE_TIMEOUT_SECS`).
pub async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}
