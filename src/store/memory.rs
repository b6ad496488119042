//! The embedded store: everything in one process, behind one mutex.
//!
//! One lock makes `ingest` trivially atomic (receipt, call, seq, events), which
//! is the same guarantee the MongoDB backend gets from a transaction. Every
//! critical section is short and never awaits, so a plain `std` mutex is right.
//! Nothing survives a restart: the daemon logs a warning when it runs on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::memory_outbound::Outbound;
use super::{Store, StoreResult};
use crate::clock::{now_ms, now_rfc3339};
use crate::domain::{
    control_key, history_gap, session_key, AttemptResult, CallRecord, Delivery, Endpoint,
    EndpointStats, EventBody, EventsPage, Ingest, IngestOutcome, Presence, Role, Status,
    StoredEvent, User, UserSummary, UserView,
};

/// History kept per user regardless of age, so a flood for one user cannot
/// take the process's memory (the MongoDB store is bounded by its TTL only).
const MAX_EVENTS_PER_USER: usize = 100_000;

/// Receipts kept for de-duplication. Telnyx retries for hours, not days;
/// receipts older than `history` (24 h by default) are dropped.
#[derive(Default)]
struct State {
    users: HashMap<String, User>,
    status: HashMap<String, Status>,
    presence: HashMap<String, PresenceState>,
    /// `s:<session>` / `c:<control>` → bound users.
    bindings: HashMap<String, Vec<String>>,
    /// call_control_id → leg record.
    calls: HashMap<String, CallRecord>,
    logs: HashMap<String, UserLog>,
    receipts: HashSet<String>,
    receipt_order: VecDeque<(i64, String)>,
    /// (hung up at ms, call_control_id): ended legs are forgotten after `history`.
    ended_calls: VecDeque<(i64, String)>,
    /// call_control_ids of the legs not hung up: the console lists them
    /// without walking a day of ended calls.
    live_calls: HashSet<String>,
    outbound: Outbound,
    recovery: RecoveryLease,
}

/// The recovery checkpoint and who runs recovery (one process here, but
/// the same rules as on MongoDB).
#[derive(Default)]
struct RecoveryLease {
    checkpoint_ms: Option<i64>,
    owner: Option<String>,
    until_ms: i64,
}

#[derive(Default)]
struct PresenceState {
    connections: HashSet<String>,
    last_seen: Option<String>,
}

#[derive(Default)]
struct UserLog {
    last_seq: u64,
    /// Oldest first. The body is shared by every user the event went to:
    /// an event for 200 users is held once.
    events: VecDeque<Entry>,
}

struct Entry {
    stored_at: i64,
    seq: u64,
    body: Arc<EventBody>,
}

pub struct MemoryStore {
    state: Mutex<State>,
    history: Duration,
}

impl MemoryStore {
    pub fn new(history: Duration) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            history,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug elsewhere; the data
        // is still consistent at every await-free step, so keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn prune(&mut self, now: i64, history_ms: i64) {
        while let Some((at, _)) = self.receipt_order.front() {
            if now - *at <= history_ms {
                break;
            }
            let (_, id) = self.receipt_order.pop_front().expect("front exists");
            self.receipts.remove(&id);
        }
        while let Some((at, _)) = self.ended_calls.front() {
            if now - *at <= history_ms {
                break;
            }
            let (_, control) = self.ended_calls.pop_front().expect("front exists");
            if let Some(call) = self.calls.remove(&control) {
                self.bindings.remove(&control_key(&control));
                if let Some(session) = call.call_session_id {
                    self.bindings.remove(&session_key(&session));
                }
            }
        }
    }
}

impl State {
    /// `body` under each user's next `seq` (a repeated user once).
    fn append(
        &mut self,
        body: &Arc<EventBody>,
        users: &[String],
        now: i64,
        history_ms: i64,
    ) -> Vec<StoredEvent> {
        let mut stored: Vec<StoredEvent> = Vec::with_capacity(users.len());
        let mut seen = HashSet::with_capacity(users.len());
        for user in users {
            if !seen.insert(user.as_str()) {
                continue;
            }
            let log = self.logs.entry(user.clone()).or_default();
            log.last_seq += 1;
            log.events.push_back(Entry {
                stored_at: now,
                seq: log.last_seq,
                body: body.clone(),
            });
            log.prune(now, history_ms);
            stored.push(StoredEvent {
                user_id: user.clone(),
                seq: log.last_seq,
                body: body.clone(),
            });
        }
        stored
    }
}

impl State {
    fn presence_of(&self, id: &str) -> Presence {
        self.presence
            .get(id)
            .map(|p| Presence::new(p.connections.len() as u32, p.last_seen.clone()))
            .unwrap_or_default()
    }
}

impl UserLog {
    fn prune(&mut self, now: i64, history_ms: i64) {
        while let Some(e) = self.events.front() {
            if now - e.stored_at <= history_ms && self.events.len() <= MAX_EVENTS_PER_USER {
                break;
            }
            self.events.pop_front();
        }
    }
}

fn ids_where(users: &HashMap<String, User>, pred: impl Fn(&User) -> bool) -> Vec<String> {
    let mut ids: Vec<String> = users
        .values()
        .filter(|u| pred(u))
        .map(|u| u.id.clone())
        .collect();
    ids.sort();
    ids
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn upsert_user(&self, user: User) -> StoreResult<User> {
        let mut st = self.lock();
        st.users.insert(user.id.clone(), user.clone());
        Ok(user)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn provision_user(&self, user: User) -> StoreResult<(User, bool)> {
        let mut st = self.lock();
        if let Some(existing) = st.users.get(&user.id) {
            return Ok((existing.clone(), false));
        }
        st.users.insert(user.id.clone(), user.clone());
        Ok((user, true))
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let mut st = self.lock();
        let found = st.users.remove(id).is_some();
        if found {
            st.logs.remove(id);
            st.status.remove(id);
            st.presence.remove(id);
            // Later events of their calls fall through to the other rules.
            for users in st.bindings.values_mut() {
                users.retain(|u| u != id);
            }
            st.bindings.retain(|_, users| !users.is_empty());
            for call in st.calls.values_mut() {
                call.users.retain(|u| u != id);
            }
        }
        Ok(found)
    }

    async fn revoke_tokens(&self, id: &str, at: i64) -> StoreResult<bool> {
        let mut st = self.lock();
        Ok(match st.users.get_mut(id) {
            Some(u) => {
                u.tokens_revoked_at = Some(u.tokens_revoked_at.unwrap_or(i64::MIN).max(at));
                true
            }
            None => false,
        })
    }

    async fn users_by_phone(&self, e164: &str) -> StoreResult<Vec<String>> {
        Ok(ids_where(&self.lock().users, |u| {
            u.phone_numbers.iter().any(|p| p == e164)
        }))
    }

    async fn users_by_connection(&self, connection_id: &str) -> StoreResult<Vec<String>> {
        Ok(ids_where(&self.lock().users, |u| {
            u.connection_ids.iter().any(|c| c == connection_id)
        }))
    }

    async fn users_by_roles(&self, roles: &[Role]) -> StoreResult<Vec<String>> {
        Ok(ids_where(&self.lock().users, |u| roles.contains(&u.role)))
    }

    async fn all_user_ids(&self) -> StoreResult<Vec<String>> {
        Ok(ids_where(&self.lock().users, |_| true))
    }

    async fn call_binding(&self, keys: &[String]) -> StoreResult<Option<Vec<String>>> {
        let st = self.lock();
        Ok(keys.iter().find_map(|k| st.bindings.get(k).cloned()))
    }

    async fn ingest(&self, ingest: Ingest) -> StoreResult<IngestOutcome> {
        let now = now_ms();
        let history_ms = self.history.as_millis() as i64;
        let mut st = self.lock();
        st.prune(now, history_ms);
        if !st.receipts.insert(ingest.body.id.clone()) {
            return Ok(IngestOutcome::Duplicate);
        }
        st.receipt_order.push_back((now, ingest.body.id.clone()));

        if !ingest.targets.is_empty() {
            for key in ingest.call.binding_keys() {
                st.bindings.insert(key, ingest.targets.clone());
            }
        }
        if let Some(control) = &ingest.call.call_control_id {
            let call = st
                .calls
                .entry(control.clone())
                .or_insert_with(|| CallRecord::new(control));
            let was_ended = call.ended;
            call.apply(ingest.leg_event());
            let ended = call.ended;
            if ended && !was_ended {
                st.ended_calls.push_back((now, control.clone()));
                st.live_calls.remove(control);
            } else if !ended {
                st.live_calls.insert(control.clone());
            }
        }

        let stored = st.append(&ingest.body, &ingest.targets, now, history_ms);
        Ok(IngestOutcome::Stored(stored))
    }

    async fn append(
        &self,
        body: Arc<EventBody>,
        users: &[String],
    ) -> StoreResult<Vec<StoredEvent>> {
        let now = now_ms();
        let history_ms = self.history.as_millis() as i64;
        Ok(self.lock().append(&body, users, now, history_ms))
    }

    async fn events_since(&self, user: &str, since: u64, limit: usize) -> StoreResult<EventsPage> {
        let now = now_ms();
        let mut st = self.lock();
        let Some(log) = st.logs.get_mut(user) else {
            return Ok(EventsPage {
                events: Vec::new(),
                gap: false,
            });
        };
        log.prune(now, self.history.as_millis() as i64);
        let oldest = log.events.front().map(|e| e.seq);
        let gap = history_gap(since, log.last_seq, oldest);
        let start = log.events.partition_point(|e| e.seq <= since);
        let events = log
            .events
            .range(start..)
            .take(limit)
            .map(|e| StoredEvent {
                user_id: user.to_string(),
                seq: e.seq,
                body: e.body.clone(),
            })
            .collect();
        Ok(EventsPage { events, gap })
    }

    async fn put_endpoint(&self, endpoint: Endpoint) -> StoreResult<()> {
        let mut st = self.lock();
        st.outbound.endpoints.insert(endpoint.id.clone(), endpoint);
        Ok(())
    }

    async fn get_endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>> {
        Ok(self.lock().outbound.endpoints.get(id).cloned())
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        let mut v: Vec<Endpoint> = self.lock().outbound.endpoints.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn delete_endpoint(&self, id: &str) -> StoreResult<bool> {
        Ok(self.lock().outbound.delete_endpoint(id))
    }

    async fn enqueue_deliveries(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        let now = now_ms();
        let mut st = self.lock();
        // Finished deliveries leave in the order they finished: O(1) each.
        st.outbound.prune(now, self.history.as_millis() as i64);
        st.outbound.enqueue(deliveries);
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        Ok(self
            .lock()
            .outbound
            .claim(endpoint, now_ms, lease_ms, limit))
    }

    async fn finish_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()> {
        self.lock().outbound.finish(id, result, now_ms());
        Ok(())
    }

    async fn endpoint_stats(&self, endpoint: &str) -> StoreResult<EndpointStats> {
        Ok(self.lock().outbound.stats(endpoint))
    }

    async fn recent_deliveries(&self, endpoint: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        Ok(self.lock().outbound.recent(endpoint, limit))
    }

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        Ok(self.lock().outbound.pending())
    }

    async fn bind_call(&self, keys: &[String], users: &[String]) -> StoreResult<()> {
        let mut st = self.lock();
        for k in keys {
            st.bindings.insert(k.clone(), users.to_vec());
        }
        Ok(())
    }

    async fn recovery_checkpoint(&self) -> StoreResult<Option<i64>> {
        Ok(self.lock().recovery.checkpoint_ms)
    }

    async fn claim_recovery(&self, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        let r = &mut self.lock().recovery;
        let free = r.until_ms <= now_ms || r.owner.as_deref() == Some(owner);
        if free {
            r.owner = Some(owner.to_string());
            r.until_ms = until_ms;
        }
        Ok(free)
    }

    async fn finish_recovery(&self, owner: &str, checkpoint: Option<i64>) -> StoreResult<()> {
        let r = &mut self.lock().recovery;
        // As on MongoDB: only the lease's holder releases it and moves the
        // checkpoint (a run that lost its lease stores nothing).
        if r.owner.as_deref() != Some(owner) {
            return Ok(());
        }
        r.until_ms = 0;
        if let Some(c) = checkpoint {
            r.checkpoint_ms = Some(r.checkpoint_ms.map_or(c, |old| old.max(c)));
        }
        Ok(())
    }

    async fn last_seq(&self, user: &str) -> StoreResult<u64> {
        Ok(self.lock().logs.get(user).map_or(0, |l| l.last_seq))
    }

    async fn connection_opened(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        let mut st = self.lock();
        let p = st.presence.entry(user.to_string()).or_default();
        p.connections.insert(conn_id.to_string());
        p.last_seen = Some(now_rfc3339());
        Ok(())
    }

    async fn connection_closed(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        let mut st = self.lock();
        if let Some(p) = st.presence.get_mut(user) {
            p.connections.remove(conn_id);
            p.last_seen = Some(now_rfc3339());
        }
        Ok(())
    }

    async fn set_status(&self, user: &str, status: Status) -> StoreResult<()> {
        self.lock().status.insert(user.to_string(), status);
        Ok(())
    }

    async fn user_view(&self, id: &str) -> StoreResult<Option<UserView>> {
        let st = self.lock();
        let Some(user) = st.users.get(id).cloned() else {
            return Ok(None);
        };
        let presence = st.presence_of(id);
        let status = st.status.get(id).copied().unwrap_or_default();
        let calls = st
            .calls
            .values()
            .filter(|c| c.users.iter().any(|u| u == id));
        Ok(Some(UserView::assemble(user, presence, status, calls)))
    }

    async fn list_user_summaries(&self, limit: usize) -> StoreResult<Vec<UserSummary>> {
        let st = self.lock();
        let mut users: Vec<&User> = st.users.values().collect();
        // The first `limit` by id without sorting them all.
        if users.len() > limit && limit > 0 {
            users.select_nth_unstable_by(limit - 1, |a, b| a.id.cmp(&b.id));
        }
        users.truncate(limit);
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(users
            .into_iter()
            .take(limit)
            .map(|u| UserSummary {
                user: u.clone(),
                presence: st.presence_of(&u.id),
                status: st.status.get(&u.id).copied().unwrap_or_default(),
            })
            .collect())
    }

    async fn active_call_records(&self, limit: usize) -> StoreResult<Vec<CallRecord>> {
        let st = self.lock();
        let mut calls: Vec<&CallRecord> = st
            .live_calls
            .iter()
            .filter_map(|id| st.calls.get(id))
            .filter(|c| !c.ended)
            .collect();
        // Newest first; a leg without `startedAt` last (as MongoDB sorts
        // a missing value in a descending sort).
        calls.sort_unstable_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| a.call_control_id.cmp(&b.call_control_id))
        });
        Ok(calls.into_iter().take(limit).cloned().collect())
    }
}
