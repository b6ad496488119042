//! Acting on calls from the dialer (contract §14): client message →
//! session → here (who may do what) → Telnyx (or the `--dev` stand-in) →
//! the answer to the asking connection. callbridge holds the API key; a
//! dialer never sees it.
//!
//! Who may: the action is in `CALLBRIDGE_CALL_ACTIONS`; for every action
//! but `dial` the sender is bound to the call (§6) or is a supervisor or
//! admin (the role is read now). What is sent: the client's `params`,
//! passed through but for `command_id`, `connection_id` and
//! `client_state`, which callbridge sets: `command_id` from the user and
//! the `ref` (a client's retry of the same `ref` carries the same id, and
//! Telnyx ignores a repeat within 60 s); `connection_id` and
//! `client_state` (`{"userId": …}`) only on `dial`. A dialled call is
//! bound to the dialling user before the answer is sent, so its webhooks
//! route to them.

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use crate::app::App;
use crate::domain::{control_key, session_key, Role, User};
use crate::protocol::CallActionRequest;
use crate::store::{bounded, StoreError};
use crate::telnyx::api::TelnyxError;

/// The action that places a call (`POST /calls`); every other one acts on
/// an existing call (`POST /calls/{id}/actions/{action}`).
pub const DIAL: &str = "dial";
/// What callbridge sets itself; a client's values for these are dropped.
const RESERVED: [&str; 3] = ["command_id", "connection_id", "client_state"];

/// Why an action was refused: its `error` code (contract §14).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("call actions are off on this server")]
    Disabled,
    #[error("the action `{0}` is not allowed on this server")]
    NotAllowed(String),
    #[error("unknown call, or you are not on it")]
    NotOnCall,
    #[error("{0}")]
    BadRequest(String),
    #[error("dial is not configured on this server (CALLBRIDGE_TELNYX_CONNECTION_ID)")]
    DialNotConfigured,
    #[error("Telnyx refused the action (HTTP {status})")]
    Rejected { status: u16, errors: Value },
    #[error("Telnyx did not carry out the action: {0}")]
    Unavailable(String),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl ActionError {
    pub fn code(&self) -> &'static str {
        match self {
            ActionError::Disabled => "actions-disabled",
            ActionError::NotAllowed(_) => "action-not-allowed",
            ActionError::NotOnCall => "not-on-call",
            ActionError::BadRequest(_) => "bad-request",
            ActionError::DialNotConfigured => "dial-not-configured",
            ActionError::Rejected { .. } => "telnyx-rejected",
            ActionError::Unavailable(_) => "telnyx-unavailable",
            ActionError::Store(_) => "store-unavailable",
        }
    }

    /// What the client is told (a store error's detail stays in the log).
    pub fn client_message(&self) -> String {
        match self {
            ActionError::Store(_) => "the store is unavailable; retry later".into(),
            e => e.to_string(),
        }
    }

    /// `data.telnyx` of a `telnyx-rejected` error: Telnyx's status and errors.
    pub fn telnyx(&self) -> Option<Value> {
        match self {
            ActionError::Rejected { status, errors } => {
                Some(json!({"status": status, "errors": errors}))
            }
            _ => None,
        }
    }
}

impl From<TelnyxError> for ActionError {
    fn from(e: TelnyxError) -> Self {
        match e {
            TelnyxError::Rejected { status, errors, .. }
            | TelnyxError::Unauthorized { status, errors, .. } => {
                ActionError::Rejected { status, errors }
            }
            TelnyxError::RateLimited { errors, .. } => ActionError::Rejected {
                status: 429,
                errors,
            },
            other => ActionError::Unavailable(other.to_string()),
        }
    }
}

/// What an action did: the call it concerned and Telnyx's `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub call: Option<String>,
    pub result: Value,
}

/// Check and carry out one action of `user`; counted by action and
/// outcome, logged without its params.
pub async fn act(app: &App, user: &str, req: &CallActionRequest) -> Result<Done, ActionError> {
    let outcome = check_and_send(app, user, req).await;
    let action = req.action.as_deref().unwrap_or("");
    // Only known names become a label: the metric's cardinality is the
    // configured list's.
    let label = if app.config.call_actions.iter().any(|a| a == action) {
        action
    } else {
        "other"
    };
    let code = outcome.as_ref().map_or_else(ActionError::code, |_| "ok");
    app.metrics.call_action(label, code);
    match &outcome {
        Ok(done) => tracing::info!(
            call = done.call.as_deref().unwrap_or(""),
            "call action done"
        ),
        Err(e @ (ActionError::Unavailable(_) | ActionError::Store(_))) => {
            tracing::warn!(code = e.code(), error = %e, "call action failed")
        }
        Err(e) => tracing::info!(code = e.code(), error = %e, "call action refused"),
    }
    outcome
}

async fn check_and_send(
    app: &App,
    user: &str,
    req: &CallActionRequest,
) -> Result<Done, ActionError> {
    let cc = app.call_control().ok_or(ActionError::Disabled)?;
    if app.config.call_actions.is_empty() {
        return Err(ActionError::Disabled);
    }
    let action = req
        .action
        .as_deref()
        .ok_or_else(|| ActionError::BadRequest("`action` is required".into()))?;
    if !app.config.call_actions.iter().any(|a| a == action) {
        let shown: String = action.chars().take(32).collect();
        return Err(ActionError::NotAllowed(shown));
    }
    let mut body = params(req)?;
    body.insert(
        "command_id".into(),
        json!(command_id(user, req.reference.as_deref())),
    );
    if action == DIAL {
        return dial(app, cc.as_ref(), user, body).await;
    }
    let call = req
        .call
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ActionError::BadRequest("`call` (a callControlId) is required".into()))?;
    may_act_on(app, user, call).await?;
    let result = cc.action(call, action, &Value::Object(body)).await?;
    Ok(Done {
        call: Some(call.to_string()),
        result,
    })
}

/// The client's `params` (an object, or none), without what callbridge sets.
fn params(req: &CallActionRequest) -> Result<Map<String, Value>, ActionError> {
    let mut p = match &req.params {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ActionError::BadRequest("`params` must be an object".into())),
    };
    for k in RESERVED {
        p.remove(k);
    }
    Ok(p)
}

/// Stable per user and `ref`: the same `ref` sent again (a client's retry)
/// is the same command to Telnyx, which ignores it; another `ref` or user
/// is another command. Without a `ref`, every action is new.
pub fn command_id(user: &str, reference: Option<&str>) -> String {
    let bytes: [u8; 16] = match reference {
        Some(r) => {
            let mut h = sha2::Sha256::new();
            h.update(b"callbridge command_id\0");
            h.update(user.as_bytes());
            h.update(b"\0");
            h.update(r.as_bytes());
            h.finalize()[..16].try_into().expect("16 of 32 bytes")
        }
        None => *uuid::Uuid::new_v4().as_bytes(),
    };
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Bound to the call (by its control id), or a supervisor or admin.
async fn may_act_on(app: &App, user: &str, call: &str) -> Result<(), ActionError> {
    let limit = app.config.store_timeout;
    let bound = bounded(limit, app.store.call_binding(&[control_key(call)])).await?;
    if bound.is_some_and(|users| users.iter().any(|u| u == user)) {
        return Ok(());
    }
    let me = bounded(limit, app.store.get_user(user)).await?;
    if me.is_some_and(|u| !u.disabled && matches!(u.role, Role::Supervisor | Role::Admin)) {
        Ok(())
    } else {
        Err(ActionError::NotOnCall)
    }
}

/// `POST /calls` with the configured connection and an allowed caller id;
/// the new call is bound to `user` before the answer goes back.
async fn dial(
    app: &App,
    cc: &dyn crate::telnyx::api::calls::CallControl,
    user: &str,
    mut body: Map<String, Value>,
) -> Result<Done, ActionError> {
    let limit = app.config.store_timeout;
    let connection = match (&app.config.telnyx_connection_id, app.telnyx.is_some()) {
        (Some(c), _) => c.clone(),
        // The `--dev` stand-in places calls without an application.
        (None, false) => "callbridge-dev".to_string(),
        (None, true) => return Err(ActionError::DialNotConfigured),
    };
    let me = bounded(limit, app.store.get_user(user))
        .await?
        .ok_or(ActionError::NotOnCall)?;
    let to = match body.get("to").and_then(Value::as_str) {
        Some(t) if !t.trim().is_empty() => t.to_string(),
        _ => return Err(ActionError::BadRequest("dial needs `params.to`".into())),
    };
    let from = caller_id(app, &me, body.get("from"))?;
    let state = json!({ "userId": user }).to_string();
    body.insert("connection_id".into(), json!(connection));
    body.insert("to".into(), json!(to));
    body.insert("from".into(), json!(from));
    body.insert(
        "client_state".into(),
        json!(base64::engine::general_purpose::STANDARD.encode(state)),
    );
    let result = cc.dial(&Value::Object(body)).await?;
    let id = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_string);
    let (control, session) = (id("call_control_id"), id("call_session_id"));
    let mut keys = Vec::new();
    keys.extend(session.as_deref().map(session_key));
    keys.extend(control.as_deref().map(control_key));
    // Before the answer: the call's first webhooks may already be on the
    // way (its `client_state` names the user too).
    bounded(limit, app.store.bind_call(&keys, &[user.to_string()])).await?;
    Ok(Done {
        call: control,
        result,
    })
}

/// `params.from` when it is one of the user's numbers or the configured
/// default; else the default, else the user's first number.
fn caller_id(app: &App, me: &User, asked: Option<&Value>) -> Result<String, ActionError> {
    let default = app.config.telnyx_from.clone();
    match asked {
        Some(v) => {
            let n = v
                .as_str()
                .and_then(crate::routing::normalize_phone)
                .ok_or_else(|| ActionError::BadRequest("`params.from` is not E.164".into()))?;
            if me.phone_numbers.contains(&n) || default.as_deref() == Some(n.as_str()) {
                Ok(n)
            } else {
                Err(ActionError::BadRequest(
                    "`params.from` must be one of your numbers or the configured caller id".into(),
                ))
            }
        }
        None => default
            .or_else(|| me.phone_numbers.first().cloned())
            .ok_or_else(|| {
                ActionError::BadRequest(
                    "no caller id: give `params.from` (one of your numbers)".into(),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_is_one_command_per_user() {
        let a = command_id("u1", Some("r1"));
        assert_eq!(a, command_id("u1", Some("r1")));
        assert_ne!(a, command_id("u1", Some("r2")));
        assert_ne!(a, command_id("u2", Some("r1")));
        assert_ne!(command_id("u1", None), command_id("u1", None));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 4);
    }

    #[test]
    fn reserved_params_are_dropped() {
        let req = CallActionRequest {
            action: Some("answer".into()),
            call: Some("v3:x".into()),
            params: Some(
                json!({"command_id": "x", "client_state": "y", "connection_id": "z", "webhook_url": "w"}),
            ),
            reference: None,
        };
        assert_eq!(
            Value::Object(params(&req).unwrap()),
            json!({"webhook_url": "w"})
        );
        let bad = CallActionRequest {
            params: Some(json!([1])),
            ..req
        };
        assert!(matches!(params(&bad), Err(ActionError::BadRequest(_))));
    }
}
