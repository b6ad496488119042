//! Documents in and out: how each domain value is laid out in MongoDB
//! (schema in `docs/mongodb.md`). A hand-edited document of the wrong shape
//! is logged and skipped, never a panic.

use std::sync::Arc;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, doc, Bson, DateTime, Document};

use crate::domain::{CallRecord, Control, EventBody, StoredEvent, User};
use crate::store::{StoreError, StoreResult};

pub(super) fn dt(ms: i64) -> DateTime {
    DateTime::from_millis(ms)
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A `users` document into a [`User`] (`_id` is the user id).
pub(super) fn user_from_doc(mut d: Document) -> Option<User> {
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

pub(super) fn user_to_doc(user: &User) -> StoreResult<Document> {
    let mut d = bson::to_document(user).map_err(corrupt)?;
    d.remove("id");
    d.insert("_id", user.id.clone());
    Ok(d)
}

/// One `eventBodies` document: the event, once, with every user it went
/// to and their `seq` (`recipients`, which the other instances' feed reads).
/// `data` is kept as JSON text so Telnyx's numbers and key order come back
/// exactly as stored. `_id` is generated, not the Telnyx id: receipts and
/// bodies expire on their own clocks.
pub(super) fn body_doc(
    body_id: ObjectId,
    body: &EventBody,
    recipients: &[(String, i64)],
    now: i64,
    origin: &str,
) -> Document {
    let recipients: Vec<Document> = recipients
        .iter()
        .map(|(u, seq)| doc! {"userId": u, "seq": *seq})
        .collect();
    doc! {
        "_id": body_id,
        "eventId": &body.id,
        "event": &body.event,
        "ts": &body.ts,
        "dataJson": &body.data_json,
        "recipients": recipients,
        "storedAt": dt(now),
        "origin": origin,
    }
}

/// One `events` document: one user's `seq` for a body.
pub(super) fn entry_doc(user: &str, seq: i64, body_id: ObjectId, now: i64) -> Document {
    doc! {"userId": user, "seq": seq, "bodyId": body_id, "storedAt": dt(now)}
}

fn bad(what: &str) -> StoreError {
    StoreError::Corrupt(format!("events document: {what}"))
}

/// The body fields of a document: an `eventBodies` document, or an
/// `events` document written before bodies were shared (which carries them
/// inline).
pub(super) fn body_from_doc(d: &Document) -> StoreResult<EventBody> {
    let data_json = d.get_str("dataJson").map_err(|_| bad("dataJson"))?;
    // Checked, not parsed: the text goes into frames as it is.
    serde_json::from_str::<serde::de::IgnoredAny>(data_json)
        .map_err(|_| bad("dataJson is not JSON"))?;
    Ok(EventBody {
        id: d
            .get_str("eventId")
            .map_err(|_| bad("eventId"))?
            .to_string(),
        event: d.get_str("event").map_err(|_| bad("event"))?.to_string(),
        ts: d.get_str("ts").map_err(|_| bad("ts"))?.to_string(),
        data_json: data_json.to_string(),
    })
}

/// Where an `events` document's body is.
pub(super) enum EntryBody {
    /// In `eventBodies`, under this id.
    Shared(ObjectId),
    /// Inline (a document written before bodies were shared).
    Inline(Arc<EventBody>),
}

/// An `events` document: its `seq` and where its body is.
pub(super) fn entry_from_doc(d: &Document) -> StoreResult<(u64, EntryBody)> {
    let seq = d.get_i64("seq").map_err(|_| bad("seq"))? as u64;
    let body = match d.get_object_id("bodyId") {
        Ok(id) => EntryBody::Shared(id),
        Err(_) => EntryBody::Inline(Arc::new(body_from_doc(d)?)),
    };
    Ok((seq, body))
}

/// What an `eventBodies` insert means for the sessions: the event, for each
/// of its recipients under their `seq`.
pub(super) fn events_from_body_doc(d: &Document) -> StoreResult<Vec<StoredEvent>> {
    let body = Arc::new(body_from_doc(d)?);
    let recipients = d.get_array("recipients").map_err(|_| bad("recipients"))?;
    recipients
        .iter()
        .map(|r| {
            let r = r.as_document().ok_or_else(|| bad("recipient"))?;
            Ok(StoredEvent {
                user_id: r.get_str("userId").map_err(|_| bad("userId"))?.to_string(),
                seq: r.get_i64("seq").map_err(|_| bad("seq"))? as u64,
                body: body.clone(),
            })
        })
        .collect()
}

/// A `calls` document (`_id` = call_control_id, `endedAt` for the TTL).
pub(super) fn call_from_doc(mut d: Document) -> Result<CallRecord, bson::de::Error> {
    d.remove("_id");
    d.remove("endedAt");
    bson::from_document::<CallRecord>(d)
}

pub(super) fn call_to_doc(record: &CallRecord, now: i64) -> Result<Document, bson::ser::Error> {
    let mut d = bson::to_document(record)?;
    d.insert("_id", record.call_control_id.clone());
    if record.ended {
        d.insert("endedAt", dt(now));
    }
    Ok(d)
}

/// A `control` document as published for the other instances.
pub(super) fn control_to_doc(control: &Control, origin: &str, now: i64) -> Document {
    let mut d = match control {
        Control::CloseUser { user, code, reason } => doc! {
            "kind": "close-user", "user": user, "code": *code as i32, "reason": reason,
        },
        Control::Broadcast {
            users,
            frame,
            except_conn,
        } => doc! {
            "kind": "broadcast", "users": users.clone(), "frame": frame,
            "exceptConn": except_conn.clone(),
        },
    };
    d.insert("origin", origin);
    d.insert("at", dt(now));
    d
}

pub(super) fn control_from_doc(d: &Document) -> Option<Control> {
    match d.get_str("kind").ok()? {
        "close-user" => Some(Control::CloseUser {
            user: d.get_str("user").ok()?.to_string(),
            code: u16::try_from(d.get_i32("code").ok()?).ok()?,
            reason: d.get_str("reason").unwrap_or("").to_string(),
        }),
        "broadcast" => Some(Control::Broadcast {
            users: match d.get("users") {
                Some(Bson::Array(a)) => Some(strings(a)),
                _ => None,
            },
            frame: d.get_str("frame").ok()?.to_string(),
            except_conn: d.get_str("exceptConn").ok().map(str::to_string),
        }),
        _ => None,
    }
}

/// The string elements of a BSON array (others skipped).
pub(super) fn strings(a: &[Bson]) -> Vec<String> {
    a.iter()
        .filter_map(|b| b.as_str().map(str::to_string))
        .collect()
}
