//! MongoDB backend (production). Standard driver features only, for MongoDB
//! ≥ 6.0 replica sets: multi-document transactions, atomic update
//! operators, unique and TTL indexes, change streams.
//!
//! Collections (schema in `docs/mongodb.md`):
//! - `users`     `_id` = user id; multikey indexes on `phoneNumbers`, `connectionIds`; `role`
//! - `seqs`      `_id` = user id, `seq` = the user's last stored `seq`
//! - `eventBodies` one per stored event, whatever its number of users: the
//!   event with `data` as JSON text and its `recipients` (user, seq); TTL on `storedAt`
//! - `events`    one per (user, event): `seq` → `bodyId`; unique `(userId, seq)`; TTL on `storedAt`
//! - `receipts`  `_id` = Telnyx event id; TTL on `receivedAt` (de-duplication)
//! - `calls`     `_id` = call_control_id: the leg's state, bound users and
//!   timeline (its last 50 events); TTL on `endedAt`
//! - `bindings`  `_id` = `s:<session>` / `c:<control>` → users; TTL on `updatedAt`
//! - `presence`  `_id` = connection id, `userId`, `instance`, `heartbeatAt` (TTL)
//! - `userState` `_id` = user id, `status`, `lastSeen`
//! - `control`   admin actions for the other instances; TTL on `at`
//!
//! This module holds the connection and the plain reads and writes; the
//! ingest transaction (`ingest`), the multi-instance feed (`feed`), the
//! indexes (`indexes`) and the document layouts (`docs`) have their own.
//! The rules (gap, user view, call state) are the domain's.

mod console;
mod docs;
mod feed;
mod indexes;
mod ingest;
mod outbound;
mod provision;
mod recovery;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::Error as MongoError;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::{Acknowledgment, ClientOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, Database};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

use self::docs::{
    body_from_doc, call_from_doc, dt, entry_from_doc, strings, user_from_doc, user_to_doc,
    EntryBody,
};
use super::{FeedItem, Store, StoreError, StoreResult};
use crate::clock::{now_ms, rfc3339_ms};
use crate::domain::{
    history_gap, AttemptResult, CallRecord, Control, Delivery, Endpoint, EndpointStats, EventBody,
    EventsPage, Ingest, IngestOutcome, Presence, Role, Status, StoredEvent, User, UserSummary,
    UserView,
};

/// Presence documents not refreshed for this long belong to a dead process
/// (three missed heartbeats of 30 s).
const PRESENCE_STALE: Duration = Duration::from_secs(90);

impl From<MongoError> for StoreError {
    /// Every driver error means the store could not do it now; the text
    /// (which may name hosts) goes to the log, never to a client.
    fn from(e: MongoError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub struct MongoStore {
    client: Client,
    db: Database,
    history: Duration,
    /// Unique per process: `origin` of what it writes.
    instance: String,
    /// Stable per service (host:port): whose presence to clear at start.
    service: String,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Commands sent, counted by the driver's command monitoring when
    /// `count_commands` (`CALLBRIDGE_MONGODB_COUNT_COMMANDS`):
    /// `callbridge_store_commands_total`, the benchmark's round trips per
    /// webhook.
    commands: Counter,
    count_commands: bool,
}

/// Majority and journaled: an acknowledged event survives a primary's crash.
fn durable() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

impl MongoStore {
    /// Connect and create the indexes (idempotent). Fails when the server
    /// cannot be reached within `timeout`.
    pub async fn connect(
        uri: &str,
        db_name: &str,
        history: Duration,
        timeout: Duration,
        count_commands: bool,
    ) -> StoreResult<Self> {
        let store = Self::connect_only(uri, db_name, history, timeout, count_commands).await?;
        store.ensure_indexes().await?;
        store.remove_stale_presence().await?;
        Ok(store)
    }

    /// Connect and check the server answers, changing nothing (`check-config`).
    pub async fn connect_only(
        uri: &str,
        db_name: &str,
        history: Duration,
        timeout: Duration,
        count_commands: bool,
    ) -> StoreResult<Self> {
        let mut opts = ClientOptions::parse(uri).await?;
        opts.app_name = Some("callbridge".into());
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.write_concern = Some(durable());
        opts.read_concern = Some(ReadConcern::majority());
        let commands = Counter::default();
        if count_commands {
            let counted = commands.clone();
            opts.command_event_handler = Some(EventHandler::callback(move |ev: CommandEvent| {
                if let CommandEvent::Started(_) = ev {
                    counted.inc();
                }
            }));
        }
        let client = Client::with_options(opts)?;
        let db = client.database(db_name);
        let store = MongoStore {
            client,
            db,
            history,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            service: String::new(),
            stripes: (0..ingest::STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            commands,
            count_commands,
        };
        store.ping().await?;
        Ok(store)
    }

    /// The server's `transactionLifetimeLimitSeconds` (`check-config`):
    /// how long a transaction of a killed instance keeps its users' `seq`
    /// counters locked. `None`: the server would not say (no privilege).
    pub async fn transaction_lifetime_limit(&self) -> Option<i64> {
        let r = self
            .client
            .database("admin")
            .run_command(doc! {"getParameter": 1, "transactionLifetimeLimitSeconds": 1})
            .await
            .ok()?;
        match r.get("transactionLifetimeLimitSeconds")? {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            Bson::Double(n) => Some(*n as i64),
            _ => None,
        }
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Name the service this process runs as (stable across restarts: host
    /// and port), and drop the presence its previous run left behind: a
    /// crash leaves its connections "online" until their heartbeat goes
    /// stale; a restart of the same service clears them at once. The
    /// process keeps a unique instance id of its own (events' `origin`).
    pub async fn claim_instance(&mut self, service: &str) -> StoreResult<()> {
        self.service = service.to_string();
        let r = self
            .coll("presence")
            .delete_many(doc! {"service": service})
            .await?;
        if r.deleted_count > 0 {
            tracing::info!(
                removed = r.deleted_count,
                "presence of the previous run removed"
            );
        }
        Ok(())
    }

    /// Drop presence of connections whose process died (no heartbeat).
    async fn remove_stale_presence(&self) -> StoreResult<()> {
        let r = self
            .coll("presence")
            .delete_many(doc! {"heartbeatAt": {"$lt": stale_cutoff()}})
            .await?;
        if r.deleted_count > 0 {
            tracing::info!(
                removed = r.deleted_count,
                "stale presence from dead processes removed"
            );
        }
        Ok(())
    }

    async fn ids(&self, filter: Document) -> StoreResult<Vec<String>> {
        let docs: Vec<Document> = self
            .coll("users")
            .find(filter)
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
            .collect())
    }

    async fn set_last_seen(&self, user: &str) -> StoreResult<()> {
        self.coll("userState")
            .update_one(
                doc! {"_id": user},
                doc! {"$set": {"lastSeen": dt(now_ms())}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Live connections of `user` on every instance, and when last seen.
    async fn presence_of(&self, id: &str, state: &Document) -> StoreResult<Presence> {
        let connections = self
            .coll("presence")
            .count_documents(doc! {"userId": id, "heartbeatAt": {"$gte": stale_cutoff()}})
            .await? as u32;
        let last_seen = state
            .get_datetime("lastSeen")
            .ok()
            .map(|d| rfc3339_ms(d.timestamp_millis()));
        Ok(Presence::new(connections, last_seen))
    }

    /// The records of the live legs bound to `id`.
    async fn open_calls_of(&self, id: &str) -> StoreResult<Vec<CallRecord>> {
        let docs: Vec<Document> = self
            .coll("calls")
            .find(doc! {"users": id, "ended": false})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| call_from_doc(d).ok())
            .collect())
    }

    /// `user`'s `events` entries with their bodies, read in one more round
    /// trip. An entry of a wrong shape is logged and skipped.
    async fn with_bodies(&self, user: &str, docs: &[Document]) -> StoreResult<Vec<StoredEvent>> {
        let mut entries = Vec::with_capacity(docs.len());
        for d in docs {
            match entry_from_doc(d) {
                Ok(e) => entries.push(e),
                Err(e) => tracing::error!(user, error = %e, "events document skipped"),
            }
        }
        let ids: Vec<ObjectId> = entries
            .iter()
            .filter_map(|(_, b)| match b {
                EntryBody::Shared(id) => Some(*id),
                EntryBody::Inline(_) => None,
            })
            .collect();
        let mut bodies = HashMap::with_capacity(ids.len());
        if !ids.is_empty() {
            let mut cursor = self
                .coll("eventBodies")
                .find(doc! {"_id": {"$in": &ids}})
                .projection(doc! {"recipients": 0})
                .await?;
            while let Some(d) = cursor.try_next().await? {
                match (d.get_object_id("_id"), body_from_doc(&d)) {
                    (Ok(id), Ok(b)) => {
                        bodies.insert(id, Arc::new(b));
                    }
                    (_, Err(e)) => {
                        tracing::error!(user, error = %e, "eventBodies document skipped")
                    }
                    _ => {}
                }
            }
        }
        // In `seq` order up to the first entry whose body cannot be read
        // (not visible yet, or hand-deleted): a reader must not step over a
        // `seq` it could not deliver; it reads again from there later.
        let mut events = Vec::with_capacity(entries.len());
        for (seq, b) in entries {
            let body = match b {
                EntryBody::Inline(b) => b,
                EntryBody::Shared(id) => match bodies.get(&id) {
                    Some(b) => b.clone(),
                    None => {
                        tracing::warn!(user, seq, "event body not found; page cut there");
                        break;
                    }
                },
            };
            events.push(StoredEvent {
                user_id: user.to_string(),
                seq,
                body,
            });
        }
        Ok(events)
    }

    /// `seq` of the oldest event still held for `user`.
    async fn oldest_seq(&self, user: &str) -> StoreResult<Option<u64>> {
        let d = self
            .coll("events")
            .find_one(doc! {"userId": user})
            .sort(doc! {"seq": 1})
            .projection(doc! {"seq": 1})
            .await?;
        Ok(d.and_then(|d| d.get_i64("seq").ok()).map(|s| s as u64))
    }
}

fn stale_cutoff() -> bson::DateTime {
    dt(now_ms() - PRESENCE_STALE.as_millis() as i64)
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    async fn upsert_user(&self, user: User) -> StoreResult<User> {
        let d = user_to_doc(&user)?;
        self.coll("users")
            .replace_one(doc! {"_id": &user.id}, d)
            .upsert(true)
            .await?;
        // The user's `seq` counter exists from the start, so an ingest
        // takes every recipient's counter in one `updateMany`.
        self.coll("seqs")
            .update_one(doc! {"_id": &user.id}, doc! {"$setOnInsert": {"seq": 0i64}})
            .upsert(true)
            .await?;
        Ok(user)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let d = self.coll("users").find_one(doc! {"_id": id}).await?;
        Ok(d.and_then(user_from_doc))
    }

    async fn provision_user(&self, user: User) -> StoreResult<(User, bool)> {
        self.provision(user).await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let r = self.coll("users").delete_one(doc! {"_id": id}).await?;
        if r.deleted_count == 0 {
            return Ok(false);
        }
        self.coll("events").delete_many(doc! {"userId": id}).await?;
        for coll in ["seqs", "userState"] {
            self.coll(coll).delete_one(doc! {"_id": id}).await?;
        }
        self.coll("presence")
            .delete_many(doc! {"userId": id})
            .await?;
        // Later events of their calls fall through to the other rules.
        for coll in ["bindings", "calls"] {
            self.coll(coll)
                .update_many(doc! {"users": id}, doc! {"$pull": {"users": id}})
                .await?;
        }
        self.coll("bindings")
            .delete_many(doc! {"users": {"$size": 0}})
            .await?;
        Ok(true)
    }

    async fn revoke_tokens(&self, id: &str, at: i64) -> StoreResult<bool> {
        let r = self
            .coll("users")
            .update_one(doc! {"_id": id}, doc! {"$max": {"tokensRevokedAt": at}})
            .await?;
        Ok(r.matched_count > 0)
    }

    async fn users_by_phone(&self, e164: &str) -> StoreResult<Vec<String>> {
        self.ids(doc! {"phoneNumbers": e164}).await
    }

    async fn users_by_connection(&self, connection_id: &str) -> StoreResult<Vec<String>> {
        self.ids(doc! {"connectionIds": connection_id}).await
    }

    async fn users_by_roles(&self, roles: &[Role]) -> StoreResult<Vec<String>> {
        let names: Vec<Bson> = roles.iter().filter_map(|r| bson::to_bson(r).ok()).collect();
        self.ids(doc! {"role": {"$in": names}}).await
    }

    async fn all_user_ids(&self) -> StoreResult<Vec<String>> {
        self.ids(doc! {}).await
    }

    async fn call_binding(&self, keys: &[String]) -> StoreResult<Option<Vec<String>>> {
        for key in keys {
            let d = self.coll("bindings").find_one(doc! {"_id": key}).await?;
            if let Some(d) = d {
                let users = d.get_array("users").map(|a| strings(a)).unwrap_or_default();
                return Ok(Some(users));
            }
        }
        Ok(None)
    }

    async fn ingest(&self, ingest: Ingest) -> StoreResult<IngestOutcome> {
        self.ingest_in_transaction(&ingest).await
    }

    async fn append(
        &self,
        body: Arc<EventBody>,
        users: &[String],
    ) -> StoreResult<Vec<StoredEvent>> {
        self.append_in_transaction(&body, users).await
    }

    async fn put_endpoint(&self, endpoint: Endpoint) -> StoreResult<()> {
        self.put_endpoint_doc(endpoint).await
    }

    async fn get_endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>> {
        self.get_endpoint_doc(id).await
    }

    async fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>> {
        self.list_endpoint_docs().await
    }

    async fn delete_endpoint(&self, id: &str) -> StoreResult<bool> {
        self.delete_endpoint_doc(id).await
    }

    async fn enqueue_deliveries(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        self.enqueue_docs(deliveries).await
    }

    async fn claim_deliveries(
        &self,
        endpoint: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        self.claim_docs(endpoint, now_ms, lease_ms, limit).await
    }

    async fn finish_attempt(&self, id: &str, result: AttemptResult) -> StoreResult<()> {
        self.finish_doc(id, result).await
    }

    async fn endpoint_stats(&self, endpoint: &str) -> StoreResult<EndpointStats> {
        self.stats_of(endpoint).await
    }

    async fn recent_deliveries(&self, endpoint: &str, limit: usize) -> StoreResult<Vec<Delivery>> {
        self.recent_docs(endpoint, limit).await
    }

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        self.pending_count().await
    }

    async fn bind_call(&self, keys: &[String], users: &[String]) -> StoreResult<()> {
        for key in keys {
            self.coll("bindings")
                .update_one(
                    doc! {"_id": key},
                    doc! {"$set": {"users": users, "updatedAt": docs::dt(now_ms())}},
                )
                .upsert(true)
                .await?;
        }
        Ok(())
    }

    async fn recovery_checkpoint(&self) -> StoreResult<Option<i64>> {
        self.checkpoint().await
    }

    async fn claim_recovery(&self, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        self.claim_lease(owner, now_ms, until_ms).await
    }

    async fn finish_recovery(&self, owner: &str, checkpoint: Option<i64>) -> StoreResult<()> {
        self.release_lease(owner, checkpoint).await
    }

    async fn events_since(&self, user: &str, since: u64, limit: usize) -> StoreResult<EventsPage> {
        let docs: Vec<Document> = self
            .coll("events")
            .find(doc! {"userId": user, "seq": {"$gt": since as i64}})
            .sort(doc! {"seq": 1})
            .limit(limit as i64)
            .await?
            .try_collect()
            .await?;
        let events = self.with_bodies(user, &docs).await?;
        let last = self.last_seq(user).await?;
        // The oldest held is read only when it can matter.
        let oldest = if since < last {
            self.oldest_seq(user).await?
        } else {
            None
        };
        Ok(EventsPage {
            events,
            gap: history_gap(since, last, oldest),
        })
    }

    async fn last_seq(&self, user: &str) -> StoreResult<u64> {
        let d = self.coll("seqs").find_one(doc! {"_id": user}).await?;
        Ok(d.and_then(|d| d.get_i64("seq").ok()).unwrap_or(0).max(0) as u64)
    }

    async fn connection_opened(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        self.coll("presence")
            .replace_one(
                doc! {"_id": conn_id},
                doc! {"userId": user, "instance": &self.instance, "service": &self.service, "heartbeatAt": dt(now_ms())},
            )
            .upsert(true)
            .await?;
        self.set_last_seen(user).await
    }

    async fn connection_closed(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        self.coll("presence")
            .delete_one(doc! {"_id": conn_id})
            .await?;
        self.set_last_seen(user).await
    }

    async fn heartbeat(&self) -> StoreResult<()> {
        self.coll("presence")
            .update_many(
                doc! {"instance": &self.instance},
                doc! {"$set": {"heartbeatAt": dt(now_ms())}},
            )
            .await?;
        self.remove_stale_presence().await
    }

    async fn set_status(&self, user: &str, status: Status) -> StoreResult<()> {
        let s = bson::to_bson(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.coll("userState")
            .update_one(doc! {"_id": user}, doc! {"$set": {"status": s}})
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn user_view(&self, id: &str) -> StoreResult<Option<UserView>> {
        let Some(user) = self.get_user(id).await? else {
            return Ok(None);
        };
        let state = self
            .coll("userState")
            .find_one(doc! {"_id": id})
            .await?
            .unwrap_or_default();
        let status = state
            .get("status")
            .and_then(|b| bson::from_bson::<Status>(b.clone()).ok())
            .unwrap_or_default();
        let presence = self.presence_of(id, &state).await?;
        let calls = self.open_calls_of(id).await?;
        Ok(Some(UserView::assemble(user, presence, status, &calls)))
    }

    async fn list_user_summaries(&self, limit: usize) -> StoreResult<Vec<UserSummary>> {
        self.user_summaries(limit).await
    }

    async fn active_call_records(&self, limit: usize) -> StoreResult<Vec<CallRecord>> {
        self.live_call_records(limit).await
    }

    fn command_counter(&self) -> Option<Counter> {
        self.count_commands.then(|| self.commands.clone())
    }

    async fn publish_control(&self, control: &Control) -> StoreResult<()> {
        self.publish(control).await
    }

    fn feed(&self, shutdown: CancellationToken) -> Option<tokio::sync::mpsc::Receiver<FeedItem>> {
        Some(self.start_feed(shutdown))
    }
}
