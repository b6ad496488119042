//! `ingest`: one transaction per webhook, with majority/journaled write
//! concern, run by the driver's transaction runner (`and_run`), which
//! retries transient errors and unknown commit results as the driver
//! specification prescribes (for up to 120 s; the webhook handler's store
//! timeout answers Telnyx long before that, and Telnyx retries).
//!
//! The receipt insert (unique `_id`) makes a second delivery of the same
//! event id abort as a duplicate, and the `$inc` on each user's `seqs`
//! document makes concurrent ingests for one user — from any number of
//! processes — serialize, so `seq` has no gap and no repeat.

use futures_util::FutureExt;
use mongodb::bson::doc;
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ReadConcern, ReturnDocument};
use mongodb::ClientSession;

use super::docs::{call_from_doc, call_to_doc, dt, event_doc};
use super::{durable, MongoStore};
use crate::clock::now_ms;
use crate::domain::{CallRecord, Ingest, IngestOutcome, StoredEvent};
use crate::store::{StoreError, StoreResult};

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
        let data_json = serde_json::to_string(ingest.data.as_ref())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut session = self.client.start_session().await?;
        let result = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(durable())
            // `and_run` with a boxed future rather than `and_run2`'s async
            // closure: the latter meets rust-lang/rust#96865 ("Send is not
            // general enough") inside an `async_trait` method; the driver
            // documents this as the workaround. Same runner, same retries.
            .and_run(
                (self, ingest, data_json.as_str()),
                |s, (store, ingest, data)| store.ingest_steps(s, ingest, data).boxed(),
            )
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

    /// One attempt: receipt, bindings, call record, then each user's next
    /// `seq` and event. Every error is returned, never swallowed: the
    /// runner needs it to know whether the server aborted the transaction.
    async fn ingest_steps(
        &self,
        s: &mut ClientSession,
        ingest: &Ingest,
        data_json: &str,
    ) -> Result<Vec<StoredEvent>, MongoError> {
        let now = now_ms();
        self.insert_receipt(s, &ingest.event_id, now).await?;
        self.bind_call(s, ingest, now).await?;
        self.update_call(s, ingest, now).await?;
        let mut stored = Vec::with_capacity(ingest.targets.len());
        for user in &ingest.targets {
            let seq = self.next_seq(s, user).await?;
            let d = event_doc(ingest, user, seq, data_json, now, &self.instance);
            self.coll("events").insert_one(d).session(&mut *s).await?;
            stored.push(ingest.stored_for(user, seq as u64));
        }
        Ok(stored)
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

    async fn next_seq(&self, s: &mut ClientSession, user: &str) -> Result<i64, MongoError> {
        let counter = self
            .coll("seqs")
            .find_one_and_update(doc! {"_id": user}, doc! {"$inc": {"seq": 1i64}})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .session(s)
            .await?
            .ok_or_else(|| MongoError::custom("seq counter upsert returned nothing"))?;
        counter
            .get_i64("seq")
            .map_err(|_| MongoError::custom("seqs document without an i64 seq"))
    }
}
