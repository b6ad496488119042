//! MongoDB backend (production). Standard driver features only, for MongoDB
//! ≥ 6.0 replica sets: multi-document transactions, atomic update
//! operators, unique and TTL indexes.
//!
//! Collections (schema in `docs/mongodb.md`):
//! - `users`     `_id` = user id; multikey indexes on `phoneNumbers`, `connectionIds`; `role`
//! - `seqs`      `_id` = user id, `seq` = the user's last stored `seq`
//! - `events`    one per (user, event): unique `(userId, seq)`; TTL on `storedAt`
//! - `receipts`  `_id` = Telnyx event id; TTL on `receivedAt` (de-duplication)
//! - `calls`     `_id` = call_control_id: the leg's state and bound users; TTL on `endedAt`
//! - `bindings`  `_id` = `s:<session>` / `c:<control>` → users; TTL on `updatedAt`
//! - `presence`  `_id` = connection id, `userId`, `instance`, `heartbeatAt` (TTL)
//! - `userState` `_id` = user id, `status`, `lastSeen`
//!
//! `ingest` is one transaction with majority/journaled write concern: the
//! receipt insert (unique `_id`) makes a second delivery of the same event id
//! abort as a duplicate, and the `$inc` on the user's `seqs` document makes
//! concurrent ingests for one user — from any number of processes —
//! serialize, so `seq` has no gap and no repeat.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Bson, DateTime, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, IndexOptions, ReadConcern, ReturnDocument, WriteConcern,
};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};

use super::*;

/// Presence documents not refreshed for this long belong to a dead process.
const PRESENCE_STALE: Duration = Duration::from_secs(90);
/// Receipts outlive Telnyx's retry window (hours) with a wide margin.
const MIN_RECEIPT_TTL: Duration = Duration::from_secs(72 * 3600);
/// Attempts for a transaction that keeps meeting write conflicts (each one
/// means another ingest for the same user or event won the race, most often
/// on another instance: this one serializes its own, see `stripes`).
const TXN_ATTEMPTS: usize = 50;
/// Lock stripes for ingests by target user. Concurrent transactions that
/// `$inc` the same `seqs` document conflict and retry; queuing them in the
/// process instead turns a retry storm into a short wait. 256 stripes keep
/// unrelated users from waiting on each other in practice.
const STRIPES: usize = 256;

pub struct MongoStore {
    client: Client,
    db: Database,
    history: Duration,
    /// Unique per process: `origin` of what it writes.
    instance: String,
    /// Stable per service (host:port): whose presence to clear at start.
    service: String,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

fn stripe_of(user: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

/// Uniform jitter in [0, max).
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    max.mul_f64(u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0))
}

fn unavailable(e: MongoError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::Command(ce) => ce.code == 11000,
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == 11000)),
        _ => false,
    }
}

fn durable() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

fn dt(ms: i64) -> DateTime {
    DateTime::from_millis(ms)
}

/// A `users` document into a [`User`]; a hand-edited document of the wrong
/// shape is logged and skipped, never a panic.
fn user_from_doc(mut d: Document) -> Option<User> {
    let id = d.remove("_id");
    let id_text = match &id {
        Some(Bson::String(s)) => s.clone(),
        other => {
            tracing::error!(id = ?other, "users document with a non-string _id skipped");
            return None;
        }
    };
    d.insert("id", id_text.clone());
    match bson::from_document::<User>(d) {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::error!(user = %id_text, error = %e, "users document has a wrong shape; skipped");
            None
        }
    }
}

fn user_to_doc(user: &User) -> StoreResult<Document> {
    let mut d = bson::to_document(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    d.remove("id");
    d.insert("_id", user.id.clone());
    Ok(d)
}

fn event_from_doc(d: &Document) -> StoreResult<StoredEvent> {
    let bad = |what: &str| StoreError::Corrupt(format!("events document: {what}"));
    let data_json = d.get_str("dataJson").map_err(|_| bad("dataJson"))?;
    Ok(StoredEvent {
        user_id: d.get_str("userId").map_err(|_| bad("userId"))?.to_string(),
        seq: d.get_i64("seq").map_err(|_| bad("seq"))? as u64,
        id: d
            .get_str("eventId")
            .map_err(|_| bad("eventId"))?
            .to_string(),
        event: d.get_str("event").map_err(|_| bad("event"))?.to_string(),
        ts: d.get_str("ts").map_err(|_| bad("ts"))?.to_string(),
        data: Arc::new(serde_json::from_str(data_json).map_err(|_| bad("dataJson is not JSON"))?),
    })
}

impl MongoStore {
    /// Connect and create the indexes (idempotent). Fails when the server
    /// cannot be reached within `timeout`.
    pub async fn connect(
        uri: &str,
        db_name: &str,
        history: Duration,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let store = Self::connect_only(uri, db_name, history, timeout).await?;
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
    ) -> StoreResult<Self> {
        let mut opts = ClientOptions::parse(uri).await.map_err(unavailable)?;
        opts.app_name = Some("callbridge".into());
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.write_concern = Some(durable());
        opts.read_concern = Some(ReadConcern::majority());
        let client = Client::with_options(opts).map_err(unavailable)?;
        let db = client.database(db_name);
        let store = MongoStore {
            client,
            db,
            history,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            service: String::new(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        };
        store.ping().await?;
        Ok(store)
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn receipt_ttl(&self) -> Duration {
        self.history.max(MIN_RECEIPT_TTL)
    }

    fn index_plan(&self) -> Vec<(&'static str, IndexModel)> {
        let idx = |keys: Document, opts: IndexOptions| {
            IndexModel::builder().keys(keys).options(opts).build()
        };
        let named = |name: &str| IndexOptions::builder().name(name.to_string()).build();
        let ttl = |name: &str, d: Duration| {
            IndexOptions::builder()
                .name(name.to_string())
                .expire_after(d)
                .build()
        };
        vec![
            (
                "users",
                idx(doc! {"phoneNumbers": 1}, named("phoneNumbers")),
            ),
            (
                "users",
                idx(doc! {"connectionIds": 1}, named("connectionIds")),
            ),
            ("users", idx(doc! {"role": 1}, named("role"))),
            (
                "events",
                idx(
                    doc! {"userId": 1, "seq": 1},
                    IndexOptions::builder()
                        .name("userId_seq".to_string())
                        .unique(true)
                        .build(),
                ),
            ),
            (
                "events",
                idx(doc! {"storedAt": 1}, ttl("storedAt_ttl", self.history)),
            ),
            (
                "receipts",
                idx(
                    doc! {"receivedAt": 1},
                    ttl("receivedAt_ttl", self.receipt_ttl()),
                ),
            ),
            (
                "calls",
                idx(doc! {"users": 1, "ended": 1}, named("users_ended")),
            ),
            (
                "calls",
                idx(doc! {"endedAt": 1}, ttl("endedAt_ttl", self.history)),
            ),
            (
                "bindings",
                idx(
                    doc! {"updatedAt": 1},
                    ttl(
                        "updatedAt_ttl",
                        self.history.max(Duration::from_secs(48 * 3600)),
                    ),
                ),
            ),
            ("bindings", idx(doc! {"users": 1}, named("users"))),
            (
                "control",
                idx(doc! {"at": 1}, ttl("at_ttl", Duration::from_secs(3600))),
            ),
            ("presence", idx(doc! {"userId": 1}, named("userId"))),
            (
                "presence",
                idx(
                    doc! {"heartbeatAt": 1},
                    ttl("heartbeatAt_ttl", PRESENCE_STALE * 2),
                ),
            ),
        ]
    }

    /// `collection.index` names that `ensure_indexes` creates but are absent.
    pub async fn missing_indexes(&self) -> StoreResult<Vec<String>> {
        let mut missing = Vec::new();
        for (coll, model) in self.index_plan() {
            let name = model
                .options
                .as_ref()
                .and_then(|o| o.name.clone())
                .unwrap_or_default();
            let present = match self.coll(coll).list_index_names().await {
                Ok(names) => names,
                // A collection that does not exist yet has no indexes.
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(ce) if ce.code == 26) => {
                    Vec::new()
                }
                Err(e) => return Err(unavailable(e)),
            };
            if !present.contains(&name) {
                missing.push(format!("{coll}.{name}"));
            }
        }
        Ok(missing)
    }

    /// Every index the queries need; TTLs follow the configuration.
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        for (coll, model) in self.index_plan() {
            if let Err(e) = self.coll(coll).create_index(model.clone()).await {
                // An existing TTL index with another expiry (history hours
                // changed): replace it.
                let name = model.options.as_ref().and_then(|o| o.name.clone());
                match (e.kind.as_ref(), name) {
                    (ErrorKind::Command(ce), Some(name)) if ce.code == 85 || ce.code == 86 => {
                        self.coll(coll)
                            .drop_index(name)
                            .await
                            .map_err(unavailable)?;
                        self.coll(coll)
                            .create_index(model)
                            .await
                            .map_err(unavailable)?;
                    }
                    _ => return Err(unavailable(e)),
                }
            }
        }
        Ok(())
    }

    /// Names of the indexes present, per collection (for `check-config`).
    pub async fn index_names(&self) -> StoreResult<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        for coll in [
            "users", "events", "receipts", "calls", "bindings", "presence",
        ] {
            let names = self
                .coll(coll)
                .list_index_names()
                .await
                .map_err(unavailable)?;
            out.push((coll.to_string(), names));
        }
        Ok(out)
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
            .await
            .map_err(unavailable)?;
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
        let cutoff = dt(now_ms() - PRESENCE_STALE.as_millis() as i64);
        let r = self
            .coll("presence")
            .delete_many(doc! {"heartbeatAt": {"$lt": cutoff}})
            .await
            .map_err(unavailable)?;
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
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        Ok(docs
            .into_iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_string))
            .collect())
    }

    /// One attempt of the ingest transaction. `Ok(None)`: duplicate.
    async fn ingest_once(
        &self,
        s: &mut ClientSession,
        ingest: &Ingest,
        now: i64,
    ) -> Result<Option<Vec<StoredEvent>>, MongoError> {
        s.start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable())
            .await?;
        let receipt = self
            .coll("receipts")
            .insert_one(doc! {"_id": &ingest.event_id, "receivedAt": dt(now)})
            .session(&mut *s)
            .await;
        if let Err(e) = receipt {
            let _ = s.abort_transaction().await;
            return if is_duplicate_key(&e) {
                Ok(None)
            } else {
                Err(e)
            };
        }

        if !ingest.targets.is_empty() {
            for key in ingest.call.binding_keys() {
                self.coll("bindings")
                    .update_one(
                        doc! {"_id": &key},
                        doc! {"$set": {"users": &ingest.targets, "updatedAt": dt(now)}},
                    )
                    .upsert(true)
                    .session(&mut *s)
                    .await?;
            }
        }

        if let Some(control) = &ingest.call.call_control_id {
            let calls: Collection<Document> = self.coll("calls");
            let existing = calls
                .find_one(doc! {"_id": control})
                .session(&mut *s)
                .await?;
            let mut record = match existing {
                Some(mut d) => {
                    d.remove("_id");
                    d.remove("endedAt");
                    bson::from_document::<CallRecord>(d).unwrap_or_else(|e| {
                        tracing::error!(call = %control, error = %e, "calls document has a wrong shape; rebuilt");
                        CallRecord::new(control)
                    })
                }
                None => CallRecord::new(control),
            };
            record.apply(ingest);
            let mut d = bson::to_document(&record)
                .map_err(|e| MongoError::custom(format!("call record does not serialize: {e}")))?;
            d.insert("_id", control.clone());
            if record.ended {
                d.insert("endedAt", dt(now));
            }
            calls
                .replace_one(doc! {"_id": control}, d)
                .upsert(true)
                .session(&mut *s)
                .await?;
        }

        let data_json = serde_json::to_string(ingest.data.as_ref())
            .map_err(|e| MongoError::custom(e.to_string()))?;
        let mut stored = Vec::with_capacity(ingest.targets.len());
        for user in &ingest.targets {
            let counter = self
                .coll("seqs")
                .find_one_and_update(doc! {"_id": user}, doc! {"$inc": {"seq": 1i64}})
                .upsert(true)
                .return_document(ReturnDocument::After)
                .session(&mut *s)
                .await?
                .ok_or_else(|| MongoError::custom("seq counter upsert returned nothing"))?;
            let seq = counter
                .get_i64("seq")
                .map_err(|_| MongoError::custom("seqs document without an i64 seq"))?;
            self.coll("events")
                .insert_one(doc! {
                    "userId": user,
                    "seq": seq,
                    "eventId": &ingest.event_id,
                    "event": &ingest.event,
                    "ts": &ingest.ts,
                    "dataJson": &data_json,
                    "storedAt": dt(now),
                    "origin": &self.instance,
                })
                .session(&mut *s)
                .await?;
            stored.push(StoredEvent {
                user_id: user.clone(),
                seq: seq as u64,
                id: ingest.event_id.clone(),
                event: ingest.event.clone(),
                ts: ingest.ts.clone(),
                data: ingest.data.clone(),
            });
        }

        // Commit; an unknown commit result is retried as the driver spec says.
        loop {
            match s.commit_transaction().await {
                Ok(()) => return Ok(Some(stored)),
                Err(e) if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn upsert_user(&self, user: User) -> StoreResult<User> {
        let d = user_to_doc(&user)?;
        self.coll("users")
            .replace_one(doc! {"_id": &user.id}, d)
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(user)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let d = self
            .coll("users")
            .find_one(doc! {"_id": id})
            .await
            .map_err(unavailable)?;
        Ok(d.and_then(user_from_doc))
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let r = self
            .coll("users")
            .delete_one(doc! {"_id": id})
            .await
            .map_err(unavailable)?;
        if r.deleted_count == 0 {
            return Ok(false);
        }
        self.coll("events")
            .delete_many(doc! {"userId": id})
            .await
            .map_err(unavailable)?;
        for coll in ["seqs", "userState"] {
            self.coll(coll)
                .delete_one(doc! {"_id": id})
                .await
                .map_err(unavailable)?;
        }
        self.coll("presence")
            .delete_many(doc! {"userId": id})
            .await
            .map_err(unavailable)?;
        // Later events of their calls fall through to the other rules.
        for coll in ["bindings", "calls"] {
            self.coll(coll)
                .update_many(doc! {"users": id}, doc! {"$pull": {"users": id}})
                .await
                .map_err(unavailable)?;
        }
        self.coll("bindings")
            .delete_many(doc! {"users": {"$size": 0}})
            .await
            .map_err(unavailable)?;
        Ok(true)
    }

    async fn revoke_tokens(&self, id: &str, at: i64) -> StoreResult<bool> {
        let r = self
            .coll("users")
            .update_one(doc! {"_id": id}, doc! {"$max": {"tokensRevokedAt": at}})
            .await
            .map_err(unavailable)?;
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
            let d = self
                .coll("bindings")
                .find_one(doc! {"_id": key})
                .await
                .map_err(unavailable)?;
            if let Some(d) = d {
                let users: Vec<String> = d
                    .get_array("users")
                    .map(|a| {
                        a.iter()
                            .filter_map(|b| b.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                return Ok(Some(users));
            }
        }
        Ok(None)
    }

    async fn ingest(&self, ingest: Ingest) -> StoreResult<IngestOutcome> {
        // Stripes in ascending order: two ingests never wait on each other
        // in a cycle.
        let mut stripes: Vec<usize> = ingest.targets.iter().map(|u| stripe_of(u)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut _held = Vec::with_capacity(stripes.len());
        for i in stripes {
            _held.push(self.stripes[i].lock().await);
        }
        let mut session = self.client.start_session().await.map_err(unavailable)?;
        let mut backoff = Duration::from_millis(2);
        for attempt in 1..=TXN_ATTEMPTS {
            match self.ingest_once(&mut session, &ingest, now_ms()).await {
                Ok(Some(events)) => return Ok(IngestOutcome::Stored(events)),
                Ok(None) => return Ok(IngestOutcome::Duplicate),
                Err(e)
                    if e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
                        && attempt < TXN_ATTEMPTS =>
                {
                    let _ = session.abort_transaction().await;
                    // Write conflict with a concurrent ingest (another
                    // instance, or the same event id): back off with jitter.
                    tokio::time::sleep(backoff + jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    return Err(unavailable(e));
                }
            }
        }
        Err(StoreError::Unavailable(
            "transaction kept conflicting".into(),
        ))
    }

    async fn events_since(&self, user: &str, since: u64, limit: usize) -> StoreResult<EventsPage> {
        let events_coll = self.coll("events");
        let docs: Vec<Document> = events_coll
            .find(doc! {"userId": user, "seq": {"$gt": since as i64}})
            .sort(doc! {"seq": 1})
            .limit(limit as i64)
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut events = Vec::with_capacity(docs.len());
        for d in &docs {
            match event_from_doc(d) {
                Ok(e) => events.push(e),
                Err(e) => tracing::error!(user, error = %e, "events document skipped"),
            }
        }
        let last = self.last_seq(user).await?;
        let gap = if since >= last {
            false
        } else {
            let oldest = events_coll
                .find_one(doc! {"userId": user})
                .sort(doc! {"seq": 1})
                .projection(doc! {"seq": 1})
                .await
                .map_err(unavailable)?
                .and_then(|d| d.get_i64("seq").ok());
            oldest.is_none_or(|o| o as u64 > since + 1)
        };
        Ok(EventsPage { events, gap })
    }

    async fn last_seq(&self, user: &str) -> StoreResult<u64> {
        let d = self
            .coll("seqs")
            .find_one(doc! {"_id": user})
            .await
            .map_err(unavailable)?;
        Ok(d.and_then(|d| d.get_i64("seq").ok()).unwrap_or(0).max(0) as u64)
    }

    async fn connection_opened(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        let now = dt(now_ms());
        self.coll("presence")
            .replace_one(
                doc! {"_id": conn_id},
                doc! {"userId": user, "instance": &self.instance, "service": &self.service, "heartbeatAt": now},
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        self.coll("userState")
            .update_one(doc! {"_id": user}, doc! {"$set": {"lastSeen": now}})
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn connection_closed(&self, user: &str, conn_id: &str) -> StoreResult<()> {
        self.coll("presence")
            .delete_one(doc! {"_id": conn_id})
            .await
            .map_err(unavailable)?;
        self.coll("userState")
            .update_one(
                doc! {"_id": user},
                doc! {"$set": {"lastSeen": dt(now_ms())}},
            )
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn heartbeat(&self) -> StoreResult<()> {
        self.coll("presence")
            .update_many(
                doc! {"instance": &self.instance},
                doc! {"$set": {"heartbeatAt": dt(now_ms())}},
            )
            .await
            .map_err(unavailable)?;
        self.remove_stale_presence().await
    }

    async fn set_status(&self, user: &str, status: Status) -> StoreResult<()> {
        let s = bson::to_bson(&status).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.coll("userState")
            .update_one(doc! {"_id": user}, doc! {"$set": {"status": s}})
            .upsert(true)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn user_view(&self, id: &str) -> StoreResult<Option<UserView>> {
        let Some(user) = self.get_user(id).await? else {
            return Ok(None);
        };
        let cutoff = dt(now_ms() - PRESENCE_STALE.as_millis() as i64);
        let connections = self
            .coll("presence")
            .count_documents(doc! {"userId": id, "heartbeatAt": {"$gte": cutoff}})
            .await
            .map_err(unavailable)? as u32;
        let state = self
            .coll("userState")
            .find_one(doc! {"_id": id})
            .await
            .map_err(unavailable)?
            .unwrap_or_default();
        let status = state
            .get("status")
            .and_then(|b| bson::from_bson::<Status>(b.clone()).ok())
            .unwrap_or_default();
        let last_seen = state
            .get_datetime("lastSeen")
            .ok()
            .map(|d| rfc3339_ms(d.timestamp_millis()));
        let docs: Vec<Document> = self
            .coll("calls")
            .find(doc! {"users": id, "ended": false})
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut active_calls: Vec<ActiveCall> = docs
            .into_iter()
            .filter_map(|mut d| {
                d.remove("_id");
                d.remove("endedAt");
                bson::from_document::<CallRecord>(d).ok()
            })
            .filter_map(|c| c.active_call())
            .collect();
        sort_active_calls(&mut active_calls);
        Ok(Some(UserView {
            user,
            presence: Presence {
                online: connections > 0,
                connections,
                last_seen,
            },
            status,
            active_calls,
        }))
    }

    async fn publish_control(&self, control: &Control) -> StoreResult<()> {
        let mut d = match control {
            Control::CloseUser { user, code, reason } => doc! {
                "kind": "close-user", "user": user, "code": *code as i32, "reason": reason,
            },
            Control::Broadcast { users, frame } => doc! {
                "kind": "broadcast", "users": users.clone(), "frame": frame,
            },
        };
        d.insert("origin", &self.instance);
        d.insert("at", dt(now_ms()));
        self.coll("control")
            .insert_one(d)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn feed(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::sync::mpsc::Receiver<FeedItem>> {
        // Bounded: the hub side never blocks (try_send to sessions), so
        // this fills only if the process is starved; then the watcher waits.
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let events = self.coll("events");
        let control = self.coll("control");
        let me = self.instance.clone();
        tokio::spawn(watch_loop(
            events,
            me.clone(),
            tx.clone(),
            shutdown.clone(),
            Watched::Events,
        ));
        tokio::spawn(watch_loop(control, me, tx, shutdown, Watched::Control));
        Some(rx)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Watched {
    Events,
    Control,
}

/// Follow inserts by other instances on one collection, resuming from the
/// last resume token after an error; when that is impossible, start afresh
/// and ask every session to catch up from the store (`Resync`).
async fn watch_loop(
    coll: Collection<Document>,
    me: String,
    tx: tokio::sync::mpsc::Sender<FeedItem>,
    shutdown: tokio_util::sync::CancellationToken,
    what: Watched,
) {
    use futures_util::StreamExt;
    let mut token: Option<mongodb::change_stream::event::ResumeToken> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let pipeline = vec![doc! {"$match": {
            "operationType": "insert",
            "fullDocument.origin": {"$ne": &me},
        }}];
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = coll.watch().pipeline(pipeline.clone()).resume_after(token.clone()) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                if token.is_some() {
                    // The token may be past the oplog window: start afresh
                    // and have sessions catch up from the store.
                    tracing::warn!(error = %e, "change stream cannot resume; starting afresh with a resync");
                    token = None;
                    if what == Watched::Events && tx.send(FeedItem::Resync).await.is_err() {
                        return;
                    }
                } else {
                    tracing::warn!(error = %e, "change stream unavailable; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if token.is_none() && what == Watched::Events {
            // Opened without a position: whatever was stored before now is
            // fetched by the sessions themselves.
            if tx.send(FeedItem::Resync).await.is_err() {
                return;
            }
        }
        backoff = Duration::from_millis(100);
        tracing::debug!(collection = coll.name(), "change stream open");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            let change = match next {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "change stream error; resuming");
                    break;
                }
                None => break,
            };
            tracing::debug!(collection = coll.name(), "change received");
            token = Some(change.id.clone());
            let Some(doc) = change.full_document else {
                continue;
            };
            let item = match what {
                Watched::Events => match event_from_doc(&doc) {
                    Ok(ev) => FeedItem::Events(vec![ev]),
                    Err(e) => {
                        tracing::error!(error = %e, "events change skipped");
                        continue;
                    }
                },
                Watched::Control => match control_from_doc(&doc) {
                    Some(c) => FeedItem::Control(c),
                    None => {
                        tracing::error!("control change of an unknown shape skipped");
                        continue;
                    }
                },
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

fn control_from_doc(d: &Document) -> Option<Control> {
    match d.get_str("kind").ok()? {
        "close-user" => Some(Control::CloseUser {
            user: d.get_str("user").ok()?.to_string(),
            code: u16::try_from(d.get_i32("code").ok()?).ok()?,
            reason: d.get_str("reason").unwrap_or("").to_string(),
        }),
        "broadcast" => Some(Control::Broadcast {
            users: match d.get("users") {
                Some(Bson::Array(a)) => Some(
                    a.iter()
                        .filter_map(|b| b.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => None,
            },
            frame: d.get_str("frame").ok()?.to_string(),
        }),
        _ => None,
    }
}
