//! A user created from a valid token (contract §15, auto-provisioning):
//! one conditional upsert, so twenty sockets of one new user opening at
//! the same moment create it once. A race between two upserts on the same
//! `_id` fails one of them with a duplicate key: that one found it created.

use mongodb::bson::doc;
use mongodb::error::{ErrorKind, WriteFailure};

use super::docs::user_to_doc;
use super::MongoStore;
use crate::domain::User;
use crate::store::{StoreError, StoreResult};

const DUPLICATE_KEY: i32 = 11000;

impl MongoStore {
    pub(super) async fn provision(&self, user: User) -> StoreResult<(User, bool)> {
        let mut fields = user_to_doc(&user)?;
        fields.remove("_id");
        let created = match self
            .coll("users")
            .update_one(doc! {"_id": &user.id}, doc! {"$setOnInsert": fields})
            .upsert(true)
            .await
        {
            Ok(r) => r.upserted_id.is_some(),
            Err(e) if duplicate(&e) => false,
            Err(e) => return Err(e.into()),
        };
        if created {
            // As `upsert_user`: the counter exists from the start.
            self.coll("seqs")
                .update_one(doc! {"_id": &user.id}, doc! {"$setOnInsert": {"seq": 0i64}})
                .upsert(true)
                .await?;
            return Ok((user, true));
        }
        let stored = self.coll("users").find_one(doc! {"_id": &user.id}).await?;
        let stored = stored
            .and_then(super::docs::user_from_doc)
            .ok_or_else(|| StoreError::Corrupt("a provisioned user vanished".into()))?;
        Ok((stored, false))
    }
}

fn duplicate(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(we)) if we.code == DUPLICATE_KEY)
}
