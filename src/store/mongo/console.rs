//! The reads of the operator's console (contract §12): every user with
//! presence and status in three queries whatever their number, and the
//! legs not hung up in one.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use mongodb::bson::{self, doc, Document};

use super::docs::{call_from_doc, user_from_doc};
use super::{stale_cutoff, MongoStore};
use crate::clock::rfc3339_ms;
use crate::domain::{CallRecord, Presence, Status, UserSummary};
use crate::store::StoreResult;

/// A batch one larger than the most documents a read can return, so the
/// server sends them all in its first reply and closes the cursor: no
/// `getMore` round trips (the default first batch is 101). The console's
/// reads are capped (1,000 users of ~200 bytes, 500 legs of ~3 KB), well
/// under a reply's 16 MB.
fn one_batch(most: usize) -> u32 {
    u32::try_from(most.saturating_add(1)).unwrap_or(u32::MAX)
}

impl MongoStore {
    /// `users` (first `limit` by id), then one aggregation counting their
    /// live connections (`presence`, index `userId`) and one read of their
    /// `userState`: three round trips for 1 or 1,000 users.
    pub(super) async fn user_summaries(&self, limit: usize) -> StoreResult<Vec<UserSummary>> {
        let users: Vec<Document> = self
            .coll("users")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .batch_size(one_batch(limit))
            .await?
            .try_collect()
            .await?;
        let users: Vec<_> = users.into_iter().filter_map(user_from_doc).collect();
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
        let connections = self.connection_counts(&ids).await?;
        let mut states: HashMap<String, Document> = HashMap::with_capacity(ids.len());
        let mut cursor = self
            .coll("userState")
            .find(doc! {"_id": {"$in": &ids}})
            .batch_size(one_batch(ids.len()))
            .await?;
        while let Some(d) = cursor.try_next().await? {
            if let Ok(id) = d.get_str("_id") {
                states.insert(id.to_string(), d);
            }
        }
        Ok(users
            .into_iter()
            .map(|user| {
                let state = states.get(&user.id);
                let status = state
                    .and_then(|s| s.get("status"))
                    .and_then(|b| bson::from_bson::<Status>(b.clone()).ok())
                    .unwrap_or_default();
                let last_seen = state
                    .and_then(|s| s.get_datetime("lastSeen").ok())
                    .map(|d| rfc3339_ms(d.timestamp_millis()));
                let n = connections.get(&user.id).copied().unwrap_or(0);
                UserSummary {
                    presence: Presence::new(n, last_seen),
                    status,
                    user,
                }
            })
            .collect())
    }

    /// Live connections per user, on every instance, in one aggregation.
    async fn connection_counts(&self, ids: &[&str]) -> StoreResult<HashMap<String, u32>> {
        let pipeline = vec![
            doc! {"$match": {"userId": {"$in": ids}, "heartbeatAt": {"$gte": stale_cutoff()}}},
            doc! {"$group": {"_id": "$userId", "n": {"$sum": 1}}},
        ];
        let rows: Vec<Document> = self
            .coll("presence")
            .aggregate(pipeline)
            .batch_size(one_batch(ids.len()))
            .await?
            .try_collect()
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = r.get_str("_id").ok()?.to_string();
                let n = r
                    .get_i32("n")
                    .map(i64::from)
                    .or_else(|_| r.get_i64("n"))
                    .ok()?;
                Some((id, u32::try_from(n).unwrap_or(u32::MAX)))
            })
            .collect())
    }

    /// Legs not hung up, newest `startedAt` first (index `ended_startedAt`).
    pub(super) async fn live_call_records(&self, limit: usize) -> StoreResult<Vec<CallRecord>> {
        let docs: Vec<Document> = self
            .coll("calls")
            .find(doc! {"ended": false})
            .sort(doc! {"startedAt": -1, "_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .batch_size(one_batch(limit))
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| match call_from_doc(d) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "calls document has a wrong shape; skipped");
                    None
                }
            })
            .collect())
    }
}
