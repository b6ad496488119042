//! Call Control: `POST /v2/calls/{call_control_id}/actions/{action}` and
//! `POST /v2/calls` (dial), answered as Telnyx answers them, and the
//! webhooks Telnyx would send afterwards ("echo"), posted to callbridge when
//! a test turned that on.
//!
//! What the stand-in remembers of calls is small and generic: the payload of
//! calls it has seen (dialled, or played as webhooks) so that echoed events
//! carry the right numbers; calls that ended (hangup/reject, or a test's
//! `end_call`), on which any later command is refused `422` `90018` as
//! Telnyx refuses it; and each command's answer by `command_id`, since
//! Telnyx ignores a repeated `command_id` (within 60 s; the stand-in does
//! not age them out) — it is answered again, but nothing happens twice.

use std::sync::Arc;

use serde_json::{json, Value};

use super::super::{call_payload, envelope};
use super::events::{add_event_fields, CALLEE, CALLER};
use super::{ApiError, Shared};

/// Every `actions/{action}` path of Call Control in the official SDK.
pub const ACTIONS: &[&str] = &[
    "ai_assistant_add_messages",
    "ai_assistant_join",
    "ai_assistant_start",
    "ai_assistant_stop",
    "answer",
    "bridge",
    "client_state_update",
    "conversation_relay_start",
    "conversation_relay_stop",
    "enqueue",
    "fork_start",
    "fork_stop",
    "gather",
    "gather_stop",
    "gather_using_ai",
    "gather_using_audio",
    "gather_using_speak",
    "hangup",
    "leave_queue",
    "pay",
    "playback_start",
    "playback_stop",
    "record_pause",
    "record_resume",
    "record_start",
    "record_stop",
    "refer",
    "reject",
    "send_dtmf",
    "send_sip_info",
    "siprec_start",
    "siprec_stop",
    "speak",
    "streaming_start",
    "streaming_stop",
    "suppression_start",
    "suppression_stop",
    "switch_supervisor_role",
    "transcription_start",
    "transcription_stop",
    "transfer",
];

/// The webhooks Telnyx sends after a command succeeds ("dial" for
/// `POST /calls`); tests may change them with `set_echo_events`.
pub fn default_echo_events(action: &str) -> &'static [&'static str] {
    match action {
        "dial" => &["call.initiated"],
        "answer" => &["call.answered"],
        "hangup" | "reject" => &["call.hangup"],
        "bridge" => &["call.bridged"],
        "speak" => &["call.speak.started", "call.speak.ended"],
        "playback_start" => &["call.playback.started", "call.playback.ended"],
        "playback_stop" => &["call.playback.ended"],
        "record_stop" => &["call.recording.saved"],
        "enqueue" => &["call.enqueued"],
        "leave_queue" => &["call.dequeued"],
        _ => &[],
    }
}

/// The body fields Telnyx requires, for the actions callbridge offers (the
/// SDK's `Required[…]` parameters); a missing one is a 422 `10004`.
pub fn required_fields(action: &str) -> &'static [&'static str] {
    match action {
        "bridge" => &["call_control_id"],
        "enqueue" => &["queue_name"],
        "record_start" => &["channels", "format"],
        "reject" => &["cause"],
        "send_dtmf" => &["digits"],
        "speak" => &["payload", "voice"],
        "transfer" => &["to"],
        _ => &[],
    }
}

pub(super) fn call_ended() -> ApiError {
    ApiError::new(
        422,
        "90018",
        "Call has already ended",
        "This call is no longer active and can't receive commands.",
    )
    .with_source(json!({"pointer": "/call_control_id"}))
}

fn missing(field: &str) -> ApiError {
    ApiError::new(
        422,
        "10004",
        "Missing required parameter",
        &format!("The '{field}' parameter is required."),
    )
    .with_source(json!({ "pointer": format!("/{field}") }))
}

/// `POST /v2/calls/{call}/actions/{action}`.
pub(super) fn action(
    shared: &Arc<Shared>,
    call: &str,
    action: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    if !ACTIONS.contains(&action) {
        return Err(ApiError::for_status(404));
    }
    if let Some(f) = required_fields(action)
        .iter()
        .find(|f| matches!(body.get(**f), None | Some(Value::Null)) || body[**f] == "")
    {
        return Err(missing(f));
    }
    let key = body["command_id"]
        .as_str()
        .map(|c| (call.to_string(), c.to_string()));
    let payload = {
        let mut st = shared.state();
        if let Some(answer) = key.as_ref().and_then(|k| st.answered.get(k)) {
            return Ok(answer.clone());
        }
        if st.ended.contains(call) {
            return Err(call_ended());
        }
        if matches!(action, "hangup" | "reject") {
            st.ended.insert(call.to_string());
        }
        let payload = st
            .calls
            .entry(call.to_string())
            .or_insert_with(|| call_payload(call, CALLER, CALLEE));
        // Telnyx puts a command's client_state on the call's later webhooks.
        if let Some(cs) = body.get("client_state") {
            payload["client_state"] = cs.clone();
        }
        let payload = payload.clone();
        let answer = json!({"data": {"result": "ok"}});
        if let Some(k) = key {
            st.answered.insert(k, answer);
        }
        payload
    };
    echo(shared, action, &payload);
    Ok(json!({"data": {"result": "ok"}}))
}

/// `POST /v2/calls`: a new outgoing call, not yet answered (`is_alive`
/// false: dialling is asynchronous).
pub(super) fn dial(shared: &Arc<Shared>, body: &Value) -> Result<Value, ApiError> {
    let text = |k: &str| body[k].as_str().filter(|s| !s.is_empty());
    let to = match &body["to"] {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) && !a.is_empty() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        _ => return Err(missing("to")),
    };
    let connection = text("connection_id").ok_or_else(|| missing("connection_id"))?;
    let from = text("from").ok_or_else(|| missing("from"))?;
    let key = text("command_id").map(|c| ("dial".to_string(), c.to_string()));
    let mut st = shared.state();
    if let Some(answer) = key.as_ref().and_then(|k| st.answered.get(k)) {
        return Ok(answer.clone());
    }
    let id = format!("v3:{}", uuid::Uuid::new_v4().simple());
    let mut payload = json!({
        "call_control_id": id,
        "call_leg_id": uuid::Uuid::new_v4().to_string(),
        "call_session_id": uuid::Uuid::new_v4().to_string(),
        "connection_id": connection,
        "from": from,
        "to": to,
        "direction": "outgoing",
        "state": "bridging",
    });
    if let Some(cs) = body.get("client_state") {
        payload["client_state"] = cs.clone();
    }
    let mut data = json!({"record_type": "call", "is_alive": false});
    for k in [
        "call_control_id",
        "call_leg_id",
        "call_session_id",
        "client_state",
    ] {
        if let Some(v) = payload.get(k) {
            data[k] = v.clone();
        }
    }
    let answer = json!({ "data": data });
    st.calls.insert(id, payload.clone());
    if let Some(k) = key {
        st.answered.insert(k, answer.clone());
    }
    drop(st);
    echo(shared, "dial", &payload);
    Ok(answer)
}

/// Post the webhooks that follow `action` to callbridge, in the
/// background (Telnyx answers the command first), when echo is on.
fn echo(shared: &Arc<Shared>, action: &str, payload: &Value) {
    let (target, retries, events) = {
        let st = shared.state();
        let Some((target, retries)) = st.echo.clone() else {
            return;
        };
        let events = st.echo_events.get(action).cloned().unwrap_or_else(|| {
            default_echo_events(action)
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        (target, retries, events)
    };
    let now = callbridge::clock::now_ms();
    let envelopes: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut p = payload.clone();
            if action == "reject" {
                p["hangup_cause"] = json!("call_rejected");
                p["hangup_source"] = json!("callee");
                p["sip_hangup_cause"] = json!("603");
            }
            add_event_fields(event, &mut p, now);
            envelope(event, p)
        })
        .collect();
    if envelopes.is_empty() {
        return;
    }
    let s = shared.clone();
    shared.spawn(async move {
        super::play::play_all(&s, &target, &envelopes, &retries).await;
    });
}
