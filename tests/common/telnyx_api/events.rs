//! Webhook objects as Telnyx sends them, for the delivery log and for the
//! stand-in's own deliveries. A "webhook" here is an envelope's `data`
//! (`id`, `record_type`, `event_type`, `occurred_at`, `payload`): what a
//! delivery's `webhook` field holds.

use serde_json::{json, Value};

use super::super::{call_payload, envelope};

/// The numbers of the calls the builders make (the harness's own defaults).
pub const CALLER: &str = "+15551230001";
pub const CALLEE: &str = "+15559870002";

/// RFC 3339 text of `ms` since the epoch (what the API's timestamps hold).
pub fn rfc3339(ms: i64) -> String {
    callbridge::clock::rfc3339_ms(ms)
}

/// A call event's webhook for `call`, as [`envelope`] and [`call_payload`]
/// build it (`call_leg_id` `leg-{call}`, `call_session_id` `session-{call}`),
/// with `occurred_at` set and the fields the event type carries (a hangup's
/// cause, a recording's URLs…).
pub fn call_webhook(event_type: &str, call: &str, occurred_at_ms: i64) -> Value {
    let mut payload = call_payload(call, CALLER, CALLEE);
    add_event_fields(event_type, &mut payload, occurred_at_ms);
    let mut data = envelope(event_type, payload)["data"].take();
    data["occurred_at"] = json!(rfc3339(occurred_at_ms));
    data
}

/// The full envelope (`data` + `meta`) of [`call_webhook`].
pub fn call_envelope(event_type: &str, call: &str, occurred_at_ms: i64) -> Value {
    envelope_of(call_webhook(event_type, call, occurred_at_ms))
}

/// An envelope around a webhook object, as a first delivery attempt.
pub fn envelope_of(webhook: Value) -> Value {
    json!({
        "data": webhook,
        "meta": {"attempt": 1, "delivered_to": "https://bridge.example.com/webhooks/telnyx"},
    })
}

/// A non-call event: an inbound SMS of Telnyx Messaging (`message.received`).
/// It has no `call_control_id`: recovery must skip it, not choke on it.
pub fn message_webhook(occurred_at_ms: i64) -> Value {
    let at = rfc3339(occurred_at_ms);
    json!({
        "record_type": "event",
        "id": uuid::Uuid::new_v4().to_string(),
        "event_type": "message.received",
        "occurred_at": at,
        "payload": {
            "record_type": "message",
            "id": uuid::Uuid::new_v4().to_string(),
            "direction": "inbound",
            "type": "SMS",
            "messaging_profile_id": "4001767e-ce0f-4cae-9d5f-0d5e636e7809",
            "from": {"phone_number": CALLER, "carrier": "T-Mobile USA", "line_type": "Wireless"},
            "to": [{"phone_number": CALLEE, "carrier": "Telnyx", "line_type": "Wireless",
                    "status": "webhook_delivered"}],
            "text": "Hello from the stand-in",
            "media": [],
            "parts": 1,
            "encoding": "GSM-7",
            "received_at": at,
            "cost": null,
            "errors": [],
            "tags": [],
        },
    })
}

/// The fields Telnyx adds to a call payload for some event types, so that
/// a recovered event looks like a delivered one.
pub fn add_event_fields(event_type: &str, payload: &mut Value, at_ms: i64) {
    let at = rfc3339(at_ms);
    let p = payload.as_object_mut().expect("a payload is an object");
    match event_type {
        "call.initiated" => {
            p.insert("start_time".into(), json!(at));
        }
        "call.answered" => {
            p.insert("start_time".into(), json!(at));
            p.insert("state".into(), json!("answered"));
        }
        "call.hangup" => {
            p.entry("hangup_cause").or_insert(json!("normal_clearing"));
            p.entry("hangup_source").or_insert(json!("caller"));
            p.entry("sip_hangup_cause").or_insert(json!("200"));
            p.insert("end_time".into(), json!(at));
            p.insert("state".into(), json!("hangup"));
        }
        "call.recording.saved" => {
            p.insert("recording_started_at".into(), json!(at));
            p.insert("recording_ended_at".into(), json!(at));
            p.insert("channels".into(), json!("single"));
            p.insert(
                "recording_urls".into(),
                json!({"mp3": "https://example.com/recording.mp3"}),
            );
        }
        "call.speak.ended" | "call.playback.ended" => {
            p.insert("status".into(), json!("completed"));
        }
        _ => {}
    }
}
