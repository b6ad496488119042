//! Messages between users, and to everyone on a call (contract §8):
//! client message → session → here (rules) → store → hub → sessions.
//!
//! A message is stored like a call event: one body, with a `seq` for the
//! sender and each recipient, so it is delivered, replayed on resume and
//! kept for the history window by the same code, and a message to a call
//! with many users costs one serialization (the fan-out path of
//! [`crate::hub::Hub::deliver`]). The server never looks inside `payload`:
//! its text is stored and delivered as the client wrote it.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::App;
use crate::clock::now_rfc3339;
use crate::domain::{control_key, session_key, EventBody, Role};
use crate::protocol::SendRequest;
use crate::store::{bounded, StoreError};

/// The largest `payload` accepted: its JSON text, as the client sent it,
/// in UTF-8 bytes (contract §8).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// The stored event's name.
pub const EVENT: &str = "message";

/// Why a `send` was refused: its `error` code (contract §8).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("messages are turned off on this server")]
    Disabled,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("payload is larger than 16384 bytes")]
    TooLarge,
    #[error("no such user, or the user is disabled")]
    UnknownRecipient,
    #[error("unknown call, or you are not on it")]
    NotOnCall,
    #[error("message not stored: {0}")]
    Store(#[from] StoreError),
}

impl MessageError {
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::Disabled => "messages-disabled",
            MessageError::BadRequest(_) => "bad-request",
            MessageError::TooLarge => "too-large",
            MessageError::UnknownRecipient => "unknown-recipient",
            MessageError::NotOnCall => "not-on-call",
            MessageError::Store(_) => "store-unavailable",
        }
    }

    /// What the client is told (a store error's detail stays in the log).
    pub fn client_message(&self) -> String {
        match self {
            MessageError::Store(_) => "message not stored; retry later".into(),
            e => e.to_string(),
        }
    }
}

/// Where a `send` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Call(String),
}

/// A stored message: what `sent` tells the sending connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub id: String,
    pub recipients: Vec<String>,
}

/// The `data` of a `message` event.
#[derive(Serialize)]
struct MessageData<'a> {
    from: &'a str,
    to: Option<&'a str>,
    call: Option<&'a str>,
    payload: &'a RawValue,
    #[serde(rename = "ref")]
    reference: Option<&'a str>,
}

/// Check, store and fan out one `send` from `sender`; counted by outcome
/// and logged with its id and recipients, never its payload.
pub async fn send(app: &App, sender: &str, req: &SendRequest) -> Result<Sent, MessageError> {
    let result = check_store_deliver(app, sender, req).await;
    match &result {
        Ok(sent) => {
            app.metrics.message("sent");
            tracing::info!(id = %sent.id, recipients = ?sent.recipients, "message stored and fanned out");
        }
        Err(e @ MessageError::Store(_)) => {
            app.metrics.message(e.code());
            tracing::warn!(error = %e, "message not stored");
        }
        Err(e) => {
            app.metrics.message(e.code());
            tracing::info!(code = e.code(), "message refused");
        }
    }
    result
}

async fn check_store_deliver(
    app: &App,
    sender: &str,
    req: &SendRequest,
) -> Result<Sent, MessageError> {
    if !app.config.messages {
        return Err(MessageError::Disabled);
    }
    let target = match (&req.to, &req.call) {
        (Some(to), None) => Target::User(to.clone()),
        (None, Some(call)) => Target::Call(call.clone()),
        (Some(_), Some(_)) => {
            return Err(MessageError::BadRequest("give `to` or `call`, not both"))
        }
        (None, None) => return Err(MessageError::BadRequest("give `to` (a user) or `call`")),
    };
    let payload = req
        .payload
        .as_deref()
        .ok_or(MessageError::BadRequest("`payload` is required"))?;
    if payload.get().len() > MAX_PAYLOAD_BYTES {
        return Err(MessageError::TooLarge);
    }
    let recipients = recipients(app, sender, &target).await?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let (to, call) = match &target {
        Target::User(u) => (Some(u.as_str()), None),
        Target::Call(c) => (None, Some(c.as_str())),
    };
    let data = MessageData {
        from: sender,
        to,
        call,
        payload,
        reference: req.reference.as_deref(),
    };
    let data_json = serde_json::to_string(&data).expect("message data always serializes");
    let body = Arc::new(EventBody {
        id: id.clone(),
        event: EVENT.into(),
        ts: now_rfc3339(),
        data_json,
    });
    // The sender first: every one of the sender's connections gets it too.
    let mut users = Vec::with_capacity(recipients.len() + 1);
    users.push(sender.to_string());
    users.extend(recipients.iter().cloned());
    let stored = bounded(
        app.config.store_timeout,
        app.store.append(body.clone(), &users),
    )
    .await?;
    app.hub.deliver(&stored, None);
    // The backend's copy (§10). The message is stored and delivered: a
    // queue failure is logged, not reported as a failed send (the client
    // would send it again).
    if let Err(e) = crate::outbound::enqueue(app, &body).await {
        tracing::warn!(error = %e, id = %id, "message not queued for outbound endpoints");
    }
    Ok(Sent { id, recipients })
}

/// Who gets a message besides the sender (never the sender).
pub(crate) async fn recipients(
    app: &App,
    sender: &str,
    target: &Target,
) -> Result<Vec<String>, MessageError> {
    let limit = app.config.store_timeout;
    match target {
        Target::User(to) => {
            let user = bounded(limit, app.store.get_user(to)).await?;
            match user {
                Some(u) if !u.disabled => Ok(if to == sender {
                    Vec::new()
                } else {
                    vec![to.clone()]
                }),
                _ => Err(MessageError::UnknownRecipient),
            }
        }
        Target::Call(call) => {
            // A call is bound under both of its ids (§6): either names it.
            let keys = [session_key(call), control_key(call)];
            let bound = bounded(limit, app.store.call_binding(&keys))
                .await?
                .ok_or(MessageError::NotOnCall)?;
            if !bound.iter().any(|u| u == sender) && !may_post_to_any_call(app, sender).await? {
                return Err(MessageError::NotOnCall);
            }
            let mut out: Vec<String> = Vec::with_capacity(bound.len());
            for u in bound {
                if u != sender && !out.contains(&u) {
                    out.push(u);
                }
            }
            Ok(out)
        }
    }
}

/// Supervisors and admins may post to any call; the role is read now, not
/// taken from the connection's start (an admin may have changed it since).
async fn may_post_to_any_call(app: &App, sender: &str) -> Result<bool, MessageError> {
    let user = bounded(app.config.store_timeout, app.store.get_user(sender)).await?;
    Ok(user.is_some_and(|u| !u.disabled && matches!(u.role, Role::Supervisor | Role::Admin)))
}
