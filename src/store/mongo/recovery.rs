//! Recovery of missed webhooks on MongoDB: one document in `recovery`
//! holds the checkpoint (the latest `finished_at` fully ingested) and the
//! lease that lets one instance at a time read Telnyx's delivery log. The
//! lease is taken with one conditional upsert: whoever matches the filter
//! (lease run out, or already theirs) wins; a second instance's upsert
//! collides on `_id` and loses.

use mongodb::bson::doc;
use mongodb::error::{ErrorKind, WriteFailure};

use super::docs::dt;
use super::MongoStore;
use crate::store::StoreResult;

const ID: &str = "telnyx";
const DUPLICATE_KEY: i32 = 11000;

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(we)) if we.code == DUPLICATE_KEY)
}

impl MongoStore {
    pub(super) async fn checkpoint(&self) -> StoreResult<Option<i64>> {
        let d = self.coll("recovery").find_one(doc! {"_id": ID}).await?;
        Ok(d.and_then(|d| {
            d.get_datetime("checkpoint")
                .ok()
                .map(|t| t.timestamp_millis())
        }))
    }

    pub(super) async fn claim_lease(
        &self,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool> {
        let filter = doc! {"_id": ID, "$or": [
            {"leaseUntil": {"$lte": dt(now_ms)}},
            {"leaseUntil": {"$exists": false}},
            {"owner": owner},
        ]};
        let update = doc! {"$set": {"owner": owner, "leaseUntil": dt(until_ms)}};
        match self
            .coll("recovery")
            .update_one(filter, update)
            .upsert(true)
            .await
        {
            Ok(r) => Ok(r.matched_count == 1 || r.upserted_id.is_some()),
            // The document exists and another instance's lease holds.
            Err(e) if is_duplicate(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn release_lease(
        &self,
        owner: &str,
        checkpoint: Option<i64>,
    ) -> StoreResult<()> {
        let mut update = doc! {"$set": {"leaseUntil": dt(0)}};
        if let Some(c) = checkpoint {
            // `$max`: a run never moves the checkpoint back.
            update.insert("$max", doc! {"checkpoint": dt(c)});
        }
        self.coll("recovery")
            .update_one(doc! {"_id": ID, "owner": owner}, update)
            .await?;
        Ok(())
    }
}
