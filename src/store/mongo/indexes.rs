//! Every index the queries need, created at start (idempotent) and checked
//! by `check-config`. TTLs follow the configuration.

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use super::{MongoStore, PRESENCE_STALE};
use crate::store::StoreResult;

/// Receipts outlive Telnyx's retry window (hours) with a wide margin.
const MIN_RECEIPT_TTL: Duration = Duration::from_secs(72 * 3600);
/// Call bindings outlive a long call and its late events.
const MIN_BINDING_TTL: Duration = Duration::from_secs(48 * 3600);
/// Bodies outlive the `events` entries pointing at them (same `storedAt`)
/// by this much, so a reader never finds an entry whose body expired first:
/// the TTL monitor deletes in passes a minute apart, in no set order.
const BODY_TTL_MARGIN: Duration = Duration::from_secs(3600);
/// Control messages only matter to instances that are up now.
const CONTROL_TTL: Duration = Duration::from_secs(3600);

/// MongoDB's "index exists with other options" codes (85, 86) and
/// "namespace not found" (26).
const INDEX_OPTIONS_CONFLICT: [i32; 2] = [85, 86];
const NAMESPACE_NOT_FOUND: i32 = 26;

fn idx(keys: Document, opts: IndexOptions) -> IndexModel {
    IndexModel::builder().keys(keys).options(opts).build()
}

fn named(name: &str) -> IndexOptions {
    IndexOptions::builder().name(name.to_string()).build()
}

fn unique(name: &str) -> IndexOptions {
    IndexOptions::builder()
        .name(name.to_string())
        .unique(true)
        .build()
}

fn ttl(name: &str, d: Duration) -> IndexOptions {
    IndexOptions::builder()
        .name(name.to_string())
        .expire_after(d)
        .build()
}

fn name_of(model: &IndexModel) -> Option<String> {
    model.options.as_ref().and_then(|o| o.name.clone())
}

impl MongoStore {
    fn index_plan(&self) -> Vec<(&'static str, IndexModel)> {
        let history = self.history;
        let mut plan = vec![
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
                idx(doc! {"userId": 1, "seq": 1}, unique("userId_seq")),
            ),
            (
                "events",
                idx(doc! {"storedAt": 1}, ttl("storedAt_ttl", history)),
            ),
            (
                "eventBodies",
                idx(
                    doc! {"storedAt": 1},
                    ttl("storedAt_ttl", history + BODY_TTL_MARGIN),
                ),
            ),
            (
                "receipts",
                idx(
                    doc! {"receivedAt": 1},
                    ttl("receivedAt_ttl", history.max(MIN_RECEIPT_TTL)),
                ),
            ),
        ];
        plan.extend(self.call_and_state_indexes());
        plan
    }

    /// Calls, bindings, control, deliveries and presence.
    fn call_and_state_indexes(&self) -> Vec<(&'static str, IndexModel)> {
        let history = self.history;
        vec![
            (
                "calls",
                idx(doc! {"users": 1, "ended": 1}, named("users_ended")),
            ),
            (
                "calls",
                idx(doc! {"endedAt": 1}, ttl("endedAt_ttl", history)),
            ),
            (
                // The console's live legs, newest first.
                "calls",
                idx(
                    doc! {"ended": 1, "startedAt": -1, "_id": 1},
                    named("ended_startedAt"),
                ),
            ),
            (
                "bindings",
                idx(
                    doc! {"updatedAt": 1},
                    ttl("updatedAt_ttl", history.max(MIN_BINDING_TTL)),
                ),
            ),
            ("bindings", idx(doc! {"users": 1}, named("users"))),
            ("control", idx(doc! {"at": 1}, ttl("at_ttl", CONTROL_TTL))),
            (
                "deliveries",
                idx(
                    doc! {"endpointId": 1, "status": 1, "nextAttemptAt": 1},
                    named("endpoint_due"),
                ),
            ),
            (
                "deliveries",
                idx(
                    doc! {"endpointId": 1, "createdAt": -1},
                    named("endpoint_recent"),
                ),
            ),
            (
                "deliveries",
                // Only finished deliveries carry `doneAt`: pending ones never expire.
                idx(doc! {"doneAt": 1}, ttl("doneAt_ttl", history)),
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
            let name = name_of(&model).unwrap_or_default();
            let present = match self.coll(coll).list_index_names().await {
                Ok(names) => names,
                // A collection that does not exist yet has no indexes.
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(ce) if ce.code == NAMESPACE_NOT_FOUND) => {
                    Vec::new()
                }
                Err(e) => return Err(e.into()),
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
            let Err(e) = self.coll(coll).create_index(model.clone()).await else {
                continue;
            };
            // An existing TTL index with another expiry (history hours
            // changed): replace it.
            match (e.kind.as_ref(), name_of(&model)) {
                (ErrorKind::Command(ce), Some(name))
                    if INDEX_OPTIONS_CONFLICT.contains(&ce.code) =>
                {
                    self.coll(coll).drop_index(name).await?;
                    self.coll(coll).create_index(model).await?;
                }
                _ => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Names of the indexes present, per collection (for `check-config`).
    pub async fn index_names(&self) -> StoreResult<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        for coll in [
            "users",
            "events",
            "eventBodies",
            "receipts",
            "calls",
            "bindings",
            "presence",
        ] {
            let names = self.coll(coll).list_index_names().await?;
            out.push((coll.to_string(), names));
        }
        Ok(out)
    }
}
