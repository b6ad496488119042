//! `ingest`: one transaction per webhook, with majority/journaled write
//! concern, run by the driver's transaction runner (`and_run`), which
//! retries transient errors and unknown commit results as the driver
//! specification prescribes (for up to 120 s; the webhook handler's store
//! timeout answers Telnyx long before that, and Telnyx retries).
//!
//! The receipt insert (unique `_id`) makes a second delivery of the same
//! event id abort as a duplicate, and the `$inc` on the targets' `seqs`
//! documents makes concurrent ingests for one user — from any number of
//! processes — serialize, so `seq` has no gap and no repeat.
//!
//! Round trips per webhook do not depend on the number of recipients:
//! receipt, call binding (one per key), call read and write, then one
//! `updateMany` of the counters, one `find` reading them back, one
//! `insertMany` of the per-user entries and one insert of the shared body,
//! and the commit. The counters come last: a transaction holds a user's
//! counter from its `$inc` to its commit, and every other ingest for that
//! user (in any instance) waits for it, so the window is kept to those
//! four round trips. An instance killed inside it leaves the counter
//! locked until the server reaps the transaction
//! (`transactionLifetimeLimitSeconds`, 60 s by default; see
//! docs/operations.md).

use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::ReadConcern;
use mongodb::ClientSession;

use super::docs::{body_doc, call_from_doc, call_to_doc, dt, entry_doc};
use super::{durable, MongoStore};
use crate::clock::now_ms;
use std::sync::Arc;

use crate::domain::{CallRecord, EventBody, Ingest, IngestOutcome, StoredEvent};
use crate::store::StoreResult;

/// Lock stripes for ingests by target user. Concurrent transactions that
/// `$inc` the same `seqs` document conflict and retry; queuing them in the
/// process instead turns a retry storm into a short wait. 256 stripes keep
/// unrelated users from waiting on each other in practice.
pub(super) const STRIPES: usize = 256;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Carried out of the transaction as a custom error: the receipt exists, so
/// this Telnyx event id was stored before. Not transient: the runner aborts
/// and returns it instead of retrying.
#[derive(Debug)]
struct AlreadyStored;

fn stripe_of(user: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

fn is_duplicate_key(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        ErrorKind::Command(ce) => ce.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(im) => im
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

impl MongoStore {
    pub(super) async fn ingest_in_transaction(
        &self,
        ingest: &Ingest,
    ) -> StoreResult<IngestOutcome> {
        let _held = self.lock_stripes(&ingest.targets).await;
        let mut session = self.client.start_session().await?;
        let result = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable())
            // `and_run` with a boxed future rather than `and_run2`'s async
            // closure: the latter meets rust-lang/rust#96865 ("Send is not
            // general enough") inside an `async_trait` method; the driver
            // documents this as the workaround. Same runner, same retries.
            .and_run((self, ingest), |s, (store, ingest)| {
                store.ingest_steps(s, ingest).boxed()
            })
            .await;
        match result {
            Ok(events) => Ok(IngestOutcome::Stored(events)),
            Err(e) if e.get_custom::<AlreadyStored>().is_some() => Ok(IngestOutcome::Duplicate),
            Err(e) => Err(e.into()),
        }
    }

    /// Stripes in ascending order: two ingests never wait on each other in
    /// a cycle.
    async fn lock_stripes(&self, users: &[String]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = users.iter().map(|u| stripe_of(u)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for i in stripes {
            held.push(self.stripes[i].lock().await);
        }
        held
    }

    /// One attempt: receipt, bindings, call record, then (last, see the
    /// module's note) the users' next `seq` and the event. Every error is
    /// returned, never swallowed: the runner needs it to know whether the
    /// server aborted the transaction.
    async fn ingest_steps(
        &self,
        s: &mut ClientSession,
        ingest: &Ingest,
    ) -> Result<Vec<StoredEvent>, MongoError> {
        let now = now_ms();
        self.insert_receipt(s, &ingest.body.id, now).await?;
        self.bind_call(s, ingest, now).await?;
        self.update_call(s, ingest, now).await?;
        self.append_steps(s, &ingest.body, &ingest.targets, now)
            .await
    }

    /// A §8 message: the last steps of an ingest alone, in a transaction.
    pub(super) async fn append_in_transaction(
        &self,
        body: &Arc<EventBody>,
        users: &[String],
    ) -> StoreResult<Vec<StoredEvent>> {
        let _held = self.lock_stripes(users).await;
        let mut session = self.client.start_session().await?;
        let result = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable())
            .and_run((self, body, users), |s, (store, body, users)| {
                store.append_steps(s, body, users, now_ms()).boxed()
            })
            .await;
        Ok(result?)
    }

    /// Each user's next `seq`, their entries, and the one shared body.
    async fn append_steps(
        &self,
        s: &mut ClientSession,
        body: &Arc<EventBody>,
        targets: &[String],
        now: i64,
    ) -> Result<Vec<StoredEvent>, MongoError> {
        let users = unique(targets);
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let seqs = self.take_seqs(s, &users).await?;
        let body_id = ObjectId::new();
        let entries: Vec<Document> = seqs
            .iter()
            .map(|(u, seq)| entry_doc(u, *seq, body_id, now))
            .collect();
        self.coll("events")
            .insert_many(entries)
            .session(&mut *s)
            .await?;
        let doc = body_doc(body_id, body, &seqs, now, &self.instance);
        self.coll("eventBodies")
            .insert_one(doc)
            .session(&mut *s)
            .await?;
        Ok(seqs
            .iter()
            .map(|(u, seq)| StoredEvent {
                user_id: u.clone(),
                seq: *seq as u64,
                body: body.clone(),
            })
            .collect())
    }

    async fn insert_receipt(
        &self,
        s: &mut ClientSession,
        event_id: &str,
        now: i64,
    ) -> Result<(), MongoError> {
        let r = self
            .coll("receipts")
            .insert_one(doc! {"_id": event_id, "receivedAt": dt(now)})
            .session(s)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(MongoError::custom(AlreadyStored)),
            Err(e) => Err(e),
        }
    }

    /// Bind the call's keys to the event's users (later events of the call
    /// follow them: routing rule 1).
    async fn bind_call(
        &self,
        s: &mut ClientSession,
        ingest: &Ingest,
        now: i64,
    ) -> Result<(), MongoError> {
        if ingest.targets.is_empty() {
            return Ok(());
        }
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
        Ok(())
    }

    /// Read, apply the event (the domain's rule), write back.
    async fn update_call(
        &self,
        s: &mut ClientSession,
        ingest: &Ingest,
        now: i64,
    ) -> Result<(), MongoError> {
        let Some(control) = &ingest.call.call_control_id else {
            return Ok(());
        };
        let calls = self.coll("calls");
        let existing = calls
            .find_one(doc! {"_id": control})
            .session(&mut *s)
            .await?;
        let mut record = match existing.map(call_from_doc) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::error!(call = %control, error = %e, "calls document has a wrong shape; rebuilt");
                CallRecord::new(control)
            }
            None => CallRecord::new(control),
        };
        record.apply(ingest.leg_event());
        let d = call_to_doc(&record, now)
            .map_err(|e| MongoError::custom(format!("call record does not serialize: {e}")))?;
        calls
            .replace_one(doc! {"_id": control}, d)
            .upsert(true)
            .session(&mut *s)
            .await?;
        Ok(())
    }

    /// Each user's next `seq`, in `users`' order, in two round trips
    /// whatever their number: `$inc` them all, read them all back.
    async fn take_seqs(
        &self,
        s: &mut ClientSession,
        users: &[String],
    ) -> Result<Vec<(String, i64)>, MongoError> {
        let seqs = self.coll("seqs");
        let bumped = seqs
            .update_many(doc! {"_id": {"$in": users}}, doc! {"$inc": {"seq": 1i64}})
            .session(&mut *s)
            .await?;
        if (bumped.matched_count as usize) < users.len() {
            self.create_counters(s, users).await?;
        }
        // One batch for all of them, one larger than their number so that
        // the server closes the cursor with it: no `getMore` round trip
        // (past the default 101, or to learn that nothing follows).
        let batch = u32::try_from(users.len() + 1).unwrap_or(u32::MAX);
        let mut cursor = seqs
            .find(doc! {"_id": {"$in": users}})
            .batch_size(batch)
            .session(&mut *s)
            .await?;
        let mut by_user = HashMap::with_capacity(users.len());
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if let (Ok(u), Ok(seq)) = (d.get_str("_id"), d.get_i64("seq")) {
                by_user.insert(u.to_string(), seq);
            }
        }
        users
            .iter()
            .map(|u| match by_user.get(u) {
                Some(seq) => Ok((u.clone(), *seq)),
                None => Err(MongoError::custom(format!("no seq counter for user {u}"))),
            })
            .collect()
    }

    /// Counters are created with the user (`upsert_user`); a user created
    /// by an older version has none until its first event, created here
    /// (once per user, ever) at `seq` 1.
    async fn create_counters(
        &self,
        s: &mut ClientSession,
        users: &[String],
    ) -> Result<(), MongoError> {
        let seqs = self.coll("seqs");
        let mut cursor = seqs
            .find(doc! {"_id": {"$in": users}})
            .projection(doc! {"_id": 1})
            .session(&mut *s)
            .await?;
        let mut present = HashSet::new();
        while let Some(d) = cursor.next(&mut *s).await.transpose()? {
            if let Ok(u) = d.get_str("_id") {
                present.insert(u.to_string());
            }
        }
        for u in users.iter().filter(|u| !present.contains(*u)) {
            seqs.update_one(doc! {"_id": u}, doc! {"$inc": {"seq": 1i64}})
                .upsert(true)
                .session(&mut *s)
                .await?;
        }
        Ok(())
    }
}

/// `targets` without repeats, in their order: a user gets one `seq` per event.
fn unique(targets: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(targets.len());
    targets
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect()
}
