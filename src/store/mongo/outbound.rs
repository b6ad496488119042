//! Outbound webhooks on MongoDB: `endpoints` (one document per endpoint)
//! and `deliveries` (one per event and endpoint, `_id` = `{endpoint}:{id}`),
//! so pending deliveries survive restarts and every instance sees them.
//!
//! An instance claims a delivery with one `findOneAndUpdate` that sets a
//! lease (`leaseUntil`): only one instance can win it, and if that one
//! dies mid-attempt the lease runs out and another takes it (at least
//! once). Finished deliveries get `doneAt`, which a TTL index expires after
//! the history window.

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ReturnDocument;

use super::docs::dt;
use super::MongoStore;
use crate::domain::{AttemptResult, Delivery, DeliveryStatus, Endpoint, EndpointStats};
use crate::store::{StoreError, StoreResult};

const DUPLICATE_KEY: i32 = 11000;

fn endpoint_to_doc(e: &Endpoint) -> StoreResult<Document> {
    let mut d = mongodb::bson::to_document(e).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    d.remove("id");
    d.insert("_id", &e.id);
    Ok(d)
}

fn endpoint_from_doc(mut d: Document) -> Option<Endpoint> {
    let id = d.remove("_id")?;
    d.insert("id", id);
    match mongodb::bson::from_document(d) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "endpoints document has a wrong shape; skipped");
            None
        }
    }
}

fn delivery_to_doc(d: &Delivery) -> Document {
    doc! {
        "_id": &d.id, "endpointId": &d.endpoint_id, "messageId": &d.message_id,
        "event": &d.event, "body": &d.body, "status": d.status.as_str(),
        "attempts": d.attempts as i64, "nextAttemptAt": dt(d.next_attempt_ms),
        "leaseUntil": dt(0), "lastStatusCode": Bson::Null, "lastError": Bson::Null,
        "createdAt": dt(d.created_ms),
    }
}

fn delivery_from_doc(d: &Document) -> Option<Delivery> {
    let ms = |k: &str| d.get_datetime(k).map(|t| t.timestamp_millis()).ok();
    Some(Delivery {
        id: d.get_str("_id").ok()?.to_string(),
        endpoint_id: d.get_str("endpointId").ok()?.to_string(),
        message_id: d.get_str("messageId").ok()?.to_string(),
        event: d.get_str("event").ok()?.to_string(),
        body: d.get_str("body").ok()?.to_string(),
        status: DeliveryStatus::parse(d.get_str("status").ok()?)?,
        attempts: d.get_i64("attempts").ok()? as u32,
        next_attempt_ms: ms("nextAttemptAt")?,
        last_status_code: d.get_i64("lastStatusCode").ok().map(|c| c as u16),
        last_error: d.get_str("lastError").ok().map(str::to_string),
        created_ms: ms("createdAt")?,
    })
}

fn all_duplicates(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(im) => {
            im.write_concern_error.is_none()
                && im
                    .write_errors
                    .as_ref()
                    .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        _ => false,
    }
}

impl MongoStore {
    pub(super) async fn put_endpoint_doc(&self, e: Endpoint) -> StoreResult<()> {
        let d = endpoint_to_doc(&e)?;
        self.coll("endpoints")
            .replace_one(doc! {"_id": &e.id}, d)
            .upsert(true)
            .await?;
        Ok(())
    }

    pub(super) async fn get_endpoint_doc(&self, id: &str) -> StoreResult<Option<Endpoint>> {
        let d = self.coll("endpoints").find_one(doc! {"_id": id}).await?;
        Ok(d.and_then(endpoint_from_doc))
    }

    pub(super) async fn list_endpoint_docs(&self) -> StoreResult<Vec<Endpoint>> {
        let docs: Vec<Document> = self
            .coll("endpoints")
            .find(doc! {})
            .sort(doc! {"createdAt": 1, "_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs.into_iter().filter_map(endpoint_from_doc).collect())
    }

    pub(super) async fn delete_endpoint_doc(&self, id: &str) -> StoreResult<bool> {
        let r = self.coll("endpoints").delete_one(doc! {"_id": id}).await?;
        self.coll("deliveries")
            .delete_many(doc! {"endpointId": id})
            .await?;
        Ok(r.deleted_count > 0)
    }

    pub(super) async fn enqueue_docs(&self, deliveries: Vec<Delivery>) -> StoreResult<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = deliveries.iter().map(delivery_to_doc).collect();
        match self
            .coll("deliveries")
            .insert_many(docs)
            .ordered(false)
            .await
        {
            Ok(_) => Ok(()),
            // Queued before (a Telnyx retry): left as it is.
            Err(e) if all_duplicates(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn claim_docs(
        &self,
        endpoint: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let coll = self.coll("deliveries");
        let mut out = Vec::new();
        while out.len() < limit {
            let claimed = coll
                .find_one_and_update(
                    doc! {"endpointId": endpoint, "status": "pending",
                    "nextAttemptAt": {"$lte": dt(now)}, "leaseUntil": {"$lte": dt(now)}},
                    doc! {"$set": {"leaseUntil": dt(now + lease_ms), "leasedBy": &self.instance}},
                )
                .sort(doc! {"nextAttemptAt": 1})
                .return_document(ReturnDocument::After)
                .await?;
            match claimed.as_ref().and_then(delivery_from_doc) {
                Some(d) => out.push(d),
                None => break,
            }
        }
        Ok(out)
    }

    pub(super) async fn finish_doc(&self, id: &str, r: AttemptResult) -> StoreResult<()> {
        let mut set = doc! {
            "status": r.status.as_str(), "attempts": r.attempts as i64,
            "nextAttemptAt": dt(r.next_attempt_ms), "leaseUntil": dt(0),
            "lastStatusCode": r.last_status_code.map(|c| c as i64),
            "lastError": r.last_error,
        };
        if r.status != DeliveryStatus::Pending {
            set.insert("doneAt", dt(crate::clock::now_ms()));
            // Kept for `attempts` and `stats` only: drop the body.
            set.insert("body", "");
        }
        self.coll("deliveries")
            .update_one(doc! {"_id": id}, doc! {"$set": set})
            .await?;
        Ok(())
    }

    pub(super) async fn stats_of(&self, endpoint: &str) -> StoreResult<EndpointStats> {
        let pipeline = vec![
            doc! {"$match": {"endpointId": endpoint}},
            doc! {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ];
        let rows: Vec<Document> = self
            .coll("deliveries")
            .aggregate(pipeline)
            .await?
            .try_collect()
            .await?;
        let mut s = EndpointStats::default();
        for r in rows {
            let n = r
                .get_i32("n")
                .map(|n| n as u64)
                .or_else(|_| r.get_i64("n").map(|n| n as u64));
            let n = n.unwrap_or(0);
            match r.get_str("_id").ok().and_then(DeliveryStatus::parse) {
                Some(DeliveryStatus::Pending) => s.pending = n,
                Some(DeliveryStatus::Delivered) => s.delivered = n,
                Some(DeliveryStatus::Failed) => s.failed = n,
                None => {}
            }
        }
        Ok(s)
    }

    pub(super) async fn recent_docs(
        &self,
        endpoint: &str,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let docs: Vec<Document> = self
            .coll("deliveries")
            .find(doc! {"endpointId": endpoint})
            .sort(doc! {"createdAt": -1, "_id": -1})
            .limit(limit as i64)
            .await?
            .try_collect()
            .await?;
        Ok(docs.iter().filter_map(delivery_from_doc).collect())
    }

    pub(super) async fn pending_count(&self) -> StoreResult<u64> {
        Ok(self
            .coll("deliveries")
            .count_documents(doc! {"status": "pending"})
            .await?)
    }
}
