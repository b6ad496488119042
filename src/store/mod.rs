//! Persistent state behind one trait: users, calls (bindings and active-call
//! state), per-user event history with `seq`, presence, status, and webhook
//! receipts for de-duplication.
//!
//! The guarantees every backend gives (and `tests/store_conformance.rs`
//! checks on each):
//! - `ingest` is atomic: the receipt, the call update and one event per
//!   target user with that user's next `seq` are all stored, or none is;
//! - a Telnyx event id is ingested at most once, even under concurrency;
//! - per-user `seq` starts at 1 and grows by exactly 1, with no gap or repeat;
//! - a hung-up call is never revived by a late or duplicate event.

pub mod memory;
pub mod mongo;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::{now_ms, now_rfc3339, rfc3339_ms};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Agent,
    Supervisor,
    Admin,
}

/// A dialer user, as the admin API reads and writes it (camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Role,
    /// E.164, normalized on the way in.
    #[serde(default)]
    pub phone_numbers: Vec<String>,
    /// Telnyx connection ids (rule 4 of routing).
    #[serde(default)]
    pub connection_ids: Vec<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Unix seconds: tokens with `iat` at or before this are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Available,
    Away,
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ringing,
    Answered,
    Bridged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCall {
    pub call_control_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub state: CallState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub online: bool,
    pub connections: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// What `GET /api/users/{id}` answers and what `snapshot` is built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    #[serde(flatten)]
    pub user: User,
    pub presence: Presence,
    pub status: Status,
    pub active_calls: Vec<ActiveCall>,
}

/// One event as stored for one user.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub user_id: String,
    pub seq: u64,
    /// Telnyx event id.
    pub id: String,
    /// Normalized event name (`call-answered`).
    pub event: String,
    /// `occurred_at` as RFC 3339.
    pub ts: String,
    /// The normalized `data` object (shared by every target user).
    pub data: Arc<Value>,
}

/// How an event changes the state of its call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Initiated,
    Answered,
    Bridged,
    Hangup,
    /// Any other call event: binds the call, changes no state.
    None,
}

/// The call-related part of an event, as the store needs it.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    pub call_control_id: Option<String>,
    pub call_session_id: Option<String>,
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub start_time: Option<String>,
}

impl CallInfo {
    /// Keys the call is bound under: session first (it groups the legs of a
    /// transfer), then the leg's control id.
    pub fn binding_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if let Some(s) = &self.call_session_id {
            keys.push(format!("s:{s}"));
        }
        if let Some(c) = &self.call_control_id {
            keys.push(format!("c:{c}"));
        }
        keys
    }
}

/// Everything one verified webhook writes.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub event_id: String,
    pub event: String,
    pub ts: String,
    /// `occurred_at` in ms since the epoch; orders state transitions.
    pub occurred_ms: i64,
    pub data: Arc<Value>,
    pub targets: Vec<String>,
    pub call: CallInfo,
    pub transition: Transition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// Stored: one event per target user, each with its `seq`.
    Stored(Vec<StoredEvent>),
    /// This Telnyx event id was stored before; nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// True when history no longer reaches back to `since + 1`.
    pub gap: bool,
}

/// Per-leg call record, kept by every backend in this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub call_control_id: String,
    #[serde(default)]
    pub call_session_id: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub state: Option<CallState>,
    /// `occurred_at` (ms) of the event that set `state`.
    #[serde(default)]
    pub state_ms: i64,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub ended_ms: Option<i64>,
}

impl CallRecord {
    pub fn new(control_id: &str) -> Self {
        CallRecord {
            call_control_id: control_id.to_string(),
            call_session_id: None,
            users: Vec::new(),
            direction: None,
            from: None,
            to: None,
            state: None,
            state_ms: i64::MIN,
            started_at: None,
            answered_at: None,
            ended: false,
            ended_ms: None,
        }
    }

    /// Apply one event to the leg. Telnyx delivers late and twice, so state
    /// moves only with `occurred_at` order and a hangup is final: nothing
    /// after it, however it is dated, revives the call.
    pub fn apply(&mut self, ingest: &Ingest) {
        let call = &ingest.call;
        if !ingest.targets.is_empty() {
            self.users = ingest.targets.clone();
        }
        fill(&mut self.call_session_id, &call.call_session_id);
        fill(&mut self.direction, &call.direction);
        fill(&mut self.from, &call.from);
        fill(&mut self.to, &call.to);
        if self.ended {
            return;
        }
        let newer = ingest.occurred_ms >= self.state_ms;
        let next = match ingest.transition {
            Transition::None => return,
            Transition::Hangup => {
                self.ended = true;
                self.ended_ms = Some(ingest.occurred_ms);
                self.state = None;
                return;
            }
            Transition::Initiated => CallState::Ringing,
            Transition::Answered => CallState::Answered,
            Transition::Bridged => CallState::Bridged,
        };
        if self.started_at.is_none() {
            self.started_at = call.start_time.clone().or_else(|| {
                (ingest.transition == Transition::Initiated).then(|| ingest.ts.clone())
            });
        }
        if next == CallState::Answered && self.answered_at.is_none() {
            self.answered_at = Some(ingest.ts.clone());
        }
        // A late event (older than the state we hold) fills blanks only.
        if newer || self.state.is_none() {
            self.state = Some(next);
            self.state_ms = self.state_ms.max(ingest.occurred_ms);
        }
    }

    pub fn active_call(&self) -> Option<ActiveCall> {
        if self.ended {
            return None;
        }
        Some(ActiveCall {
            call_control_id: self.call_control_id.clone(),
            call_session_id: self.call_session_id.clone(),
            direction: self.direction.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            state: self.state?,
            started_at: self.started_at.clone(),
            answered_at: self.answered_at.clone(),
        })
    }
}

/// Oldest call first (the order `snapshot` and the admin API show).
pub fn sort_active_calls(calls: &mut [ActiveCall]) {
    calls.sort_by(|a, b| {
        (a.started_at.as_deref(), &a.call_control_id)
            .cmp(&(b.started_at.as_deref(), &b.call_control_id))
    });
}

fn fill(slot: &mut Option<String>, value: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(value);
    }
}

/// An admin action every instance applies to its own sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Close the user's sockets (revoke, delete, disable).
    CloseUser {
        user: String,
        code: u16,
        reason: String,
    },
    /// A custom message to some users (`None`: everyone).
    Broadcast {
        users: Option<Vec<String>>,
        frame: String,
    },
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ing(t: Transition, ms: i64) -> Ingest {
        Ingest {
            event_id: format!("e{ms}"),
            event: "x".into(),
            ts: rfc3339_ms(ms),
            occurred_ms: ms,
            data: Arc::new(Value::Null),
            targets: vec!["u1".into()],
            call: CallInfo {
                call_control_id: Some("cc".into()),
                ..Default::default()
            },
            transition: t,
        }
    }

    #[test]
    fn hangup_is_final() {
        let mut r = CallRecord::new("cc");
        r.apply(&ing(Transition::Initiated, 1000));
        assert_eq!(r.active_call().unwrap().state, CallState::Ringing);
        r.apply(&ing(Transition::Hangup, 3000));
        assert!(r.active_call().is_none());
        r.apply(&ing(Transition::Answered, 2000));
        assert!(r.active_call().is_none());
        r.apply(&ing(Transition::Initiated, 4000));
        assert!(r.active_call().is_none());
    }

    #[test]
    fn late_events_do_not_regress_state() {
        let mut r = CallRecord::new("cc");
        r.apply(&ing(Transition::Bridged, 3000));
        r.apply(&ing(Transition::Answered, 2000));
        r.apply(&ing(Transition::Initiated, 1000));
        let a = r.active_call().unwrap();
        assert_eq!(a.state, CallState::Bridged);
        assert_eq!(a.started_at.as_deref(), Some(rfc3339_ms(1000).as_str()));
        assert_eq!(a.answered_at.as_deref(), Some(rfc3339_ms(2000).as_str()));
    }
}
