//! The webhooks the stand-in posts, shaped as Telnyx sends them: each event
//! type carries the payload fields of its model in Telnyx's official SDK
//! (`telnyx/types/call_*.py`) and no others, so a `call.speak.started` has
//! no numbers and only `call.initiated` says `direction`.
//!
//! Two fields go beyond the SDK's models, as Telnyx's own examples and
//! `callbridge simulate` have them: `end_time` on `call.hangup` (the
//! contract's `endTime`/`durationSecs`) and `call_control_id` on
//! `call.recording.saved` (which leg recorded).

use serde_json::{json, Map, Value};

use crate::dev::{DEMO_PHONE, DEV_CALLER, DEV_CONNECTION_ID};

/// What the stand-in knows of one call leg: what its webhooks share.
#[derive(Debug, Clone, PartialEq)]
pub struct LegInfo {
    pub call_control_id: String,
    pub call_leg_id: String,
    pub call_session_id: String,
    pub connection_id: String,
    pub from: String,
    pub to: String,
    /// Telnyx's `direction` `outgoing` (dialled or a transfer's new leg),
    /// else `incoming`.
    pub outgoing: bool,
    /// Base64, as the dialer's backend last set it on a command; Telnyx
    /// echoes it on the leg's later webhooks.
    pub client_state: Option<String>,
    pub start_time: String,
}

impl LegInfo {
    /// A call made by `callbridge simulate`, known only by its control id:
    /// the ids simulate derives from it, and simulate's default numbers
    /// (the stand-in never saw the call's `call.initiated`). `start_time`
    /// is when the stand-in first heard of it.
    pub fn simulated(call: &str, start_time: String) -> LegInfo {
        LegInfo {
            call_control_id: call.to_string(),
            call_leg_id: format!("leg-{call}"),
            call_session_id: format!("session-{call}"),
            connection_id: DEV_CONNECTION_ID.to_string(),
            from: DEV_CALLER.to_string(),
            to: DEMO_PHONE.to_string(),
            outgoing: false,
            client_state: None,
            start_time,
        }
    }

    /// A new outgoing leg in `session` (a fresh session for a dial, the
    /// original call's for a transfer), with Telnyx-shaped ids.
    pub fn outgoing(session: Option<&str>, connection_id: &str, from: &str, to: &str) -> LegInfo {
        let call = format!("v3:dev-{}", uuid::Uuid::new_v4().simple());
        LegInfo {
            call_leg_id: uuid::Uuid::new_v4().to_string(),
            call_session_id: session
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            call_control_id: call,
            connection_id: connection_id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            outgoing: true,
            client_state: None,
            start_time: crate::clock::now_rfc3339(),
        }
    }
}

/// The `payload` of `event` on `leg`: the fields every call event has, the
/// ones this event type adds, then `extra` (a hangup's cause, a queue…).
pub fn payload(event: &str, leg: &LegInfo, extra: Map<String, Value>) -> Value {
    let mut p = Map::new();
    p.insert("call_control_id".into(), json!(leg.call_control_id));
    p.insert("call_leg_id".into(), json!(leg.call_leg_id));
    p.insert("call_session_id".into(), json!(leg.call_session_id));
    p.insert("connection_id".into(), json!(leg.connection_id));
    if let Some(cs) = &leg.client_state {
        p.insert("client_state".into(), json!(cs));
    }
    let numbers = |p: &mut Map<String, Value>| {
        p.insert("from".into(), json!(leg.from));
        p.insert("to".into(), json!(leg.to));
    };
    match event {
        "call.initiated" => {
            numbers(&mut p);
            let (direction, state) = if leg.outgoing {
                ("outgoing", "bridging")
            } else {
                ("incoming", "parked")
            };
            p.insert("direction".into(), json!(direction));
            p.insert("state".into(), json!(state));
            p.insert("start_time".into(), json!(leg.start_time));
        }
        "call.answered" | "call.hangup" => {
            numbers(&mut p);
            let state = if event == "call.answered" {
                "answered"
            } else {
                "hangup"
            };
            p.insert("state".into(), json!(state));
            p.insert("start_time".into(), json!(leg.start_time));
        }
        "call.bridged" => numbers(&mut p),
        _ => {}
    }
    p.extend(extra);
    Value::Object(p)
}

/// A hangup's cause fields: `hangup_cause` and its SIP code, and who hung
/// up. A command hangs up from Telnyx's side of the leg: the callee of an
/// incoming call, the caller of an outgoing one.
pub fn hangup_fields(leg: &LegInfo, cause: &str) -> Map<String, Value> {
    let sip = match cause {
        "call_rejected" => "603",
        "user_busy" => "486",
        "not_found" => "404",
        "originator_cancel" => "487",
        _ => "200",
    };
    let source = if leg.outgoing { "caller" } else { "callee" };
    fields(&[
        ("hangup_cause", json!(cause)),
        ("hangup_source", json!(source)),
        ("sip_hangup_cause", json!(sip)),
    ])
}

/// `reject`'s `cause` (`CALL_REJECTED`, `USER_BUSY`, …) as the hangup
/// cause Telnyx reports; an unknown one is a plain rejection.
pub fn reject_cause(cause: Option<&str>) -> &'static str {
    match cause {
        Some("USER_BUSY") => "user_busy",
        Some("NOT_FOUND") => "not_found",
        _ => "call_rejected",
    }
}

/// `call.recording.saved`'s fields for a recording in `format` (`mp3` or
/// `wav`, URLs in that format only, as Telnyx gives them), `channels`
/// (`single`/`dual`), started at `started_at`. The URLs are plausible and
/// point nowhere (example.com is reserved for documentation).
pub fn recording_fields(
    leg: &LegInfo,
    format: &str,
    channels: &str,
    started_at: &str,
) -> Map<String, Value> {
    let id = uuid::Uuid::new_v4();
    let format = if format == "wav" { "wav" } else { "mp3" };
    let url = |kind: &str| json!({ format: format!("https://example.com/callbridge-dev/{kind}/{id}.{format}") });
    fields(&[
        ("call_control_id", json!(leg.call_control_id)),
        ("channels", json!(channels)),
        ("recording_started_at", json!(started_at)),
        ("recording_urls", url("recordings")),
        ("public_recording_urls", url("public")),
    ])
}

/// A map of `pairs`.
pub fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

/// The envelope of one webhook, with a fresh event id (a retry keeps it:
/// the caller builds the envelope once), `occurred_at` `now`, and the
/// payload's time of the event itself set to `now` too (a hangup's
/// `end_time`, a recording's `recording_ended_at`).
pub fn envelope(event: &str, mut payload: Value, now: &str, url: &str) -> Value {
    let stamp = match event {
        "call.hangup" => Some("end_time"),
        "call.recording.saved" => Some("recording_ended_at"),
        _ => None,
    };
    if let (Some(field), Some(p)) = (stamp, payload.as_object_mut()) {
        p.insert(field.into(), json!(now));
    }
    json!({
        "data": {
            "record_type": "event",
            "id": uuid::Uuid::new_v4().to_string(),
            "event_type": event,
            "occurred_at": now,
            "payload": payload,
        },
        "meta": {"attempt": 1, "delivered_to": url},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn a_simulated_call_has_the_ids_simulate_gives_it() {
        let leg = LegInfo::simulated("v3:sim-1", "2026-01-01T00:00:00Z".into());
        assert_eq!(leg.call_leg_id, "leg-v3:sim-1");
        assert_eq!(leg.call_session_id, "session-v3:sim-1");
        assert_eq!(leg.to, DEMO_PHONE);
        assert!(!leg.outgoing);
    }

    #[test]
    fn each_event_carries_the_fields_of_its_sdk_model() {
        let mut leg = LegInfo::simulated("c1", "2026-01-01T00:00:00Z".into());
        leg.client_state = Some("eyJ1c2VySWQiOiJ1MSJ9".into());
        let common = [
            "call_control_id",
            "call_leg_id",
            "call_session_id",
            "client_state",
            "connection_id",
        ];
        let speak = payload("call.speak.started", &leg, Map::new());
        assert_eq!(keys(&speak), common);
        let answered = payload("call.answered", &leg, Map::new());
        assert_eq!(answered["state"], "answered");
        assert!(answered.get("direction").is_none());
        assert_eq!(answered["start_time"], "2026-01-01T00:00:00Z");
        let bridged = payload("call.bridged", &leg, Map::new());
        assert_eq!(bridged["from"], DEV_CALLER);
        assert!(bridged.get("state").is_none());

        let out = LegInfo::outgoing(None, "conn", "+1555", "+1666");
        let initiated = payload("call.initiated", &out, Map::new());
        assert_eq!(initiated["direction"], "outgoing");
        assert_eq!(initiated["state"], "bridging");
        assert!(initiated.get("client_state").is_none());
        assert!(out.call_control_id.starts_with("v3:dev-"));
        let shared = LegInfo::outgoing(Some("s1"), "conn", "+1555", "+1666");
        assert_eq!(shared.call_session_id, "s1");
    }

    #[test]
    fn hangups_say_who_and_why() {
        let incoming = LegInfo::simulated("c1", String::new());
        let h = payload(
            "call.hangup",
            &incoming,
            hangup_fields(&incoming, "normal_clearing"),
        );
        assert_eq!(h["state"], "hangup");
        assert_eq!(h["hangup_source"], "callee");
        assert_eq!(h["sip_hangup_cause"], "200");
        let out = LegInfo::outgoing(None, "conn", "+1", "+2");
        let f = hangup_fields(&out, reject_cause(Some("USER_BUSY")));
        assert_eq!(f["hangup_cause"], "user_busy");
        assert_eq!(f["sip_hangup_cause"], "486");
        assert_eq!(f["hangup_source"], "caller");
        assert_eq!(reject_cause(None), "call_rejected");
        assert_eq!(
            hangup_fields(&out, "call_rejected")["sip_hangup_cause"],
            "603"
        );
    }

    #[test]
    fn recordings_come_in_the_requested_format() {
        let leg = LegInfo::simulated("c1", String::new());
        let f = recording_fields(&leg, "wav", "dual", "2026-01-01T00:00:00Z");
        assert!(f["recording_urls"]["wav"]
            .as_str()
            .unwrap()
            .ends_with(".wav"));
        assert!(f["recording_urls"].get("mp3").is_none());
        assert!(f["public_recording_urls"]["wav"].is_string());
        assert_eq!(f["channels"], "dual");
        let mp3 = recording_fields(&leg, "mp3", "single", "");
        assert!(mp3["recording_urls"]["mp3"].is_string());
    }

    #[test]
    fn envelopes_stamp_the_time_of_the_event() {
        let leg = LegInfo::simulated("c1", String::new());
        let now = "2026-01-01T00:00:05.000Z";
        let e = envelope(
            "call.hangup",
            payload("call.hangup", &leg, Map::new()),
            now,
            "https://127.0.0.1:1/webhooks/telnyx",
        );
        assert_eq!(e["data"]["record_type"], "event");
        assert_eq!(e["data"]["event_type"], "call.hangup");
        assert_eq!(e["data"]["occurred_at"], now);
        assert_eq!(e["data"]["payload"]["end_time"], now);
        assert_eq!(e["meta"]["attempt"], 1);
        let other = envelope("call.hangup", json!({}), now, "u");
        assert_ne!(other["data"]["id"], e["data"]["id"]);
        let saved = envelope("call.recording.saved", json!({}), now, "u");
        assert_eq!(saved["data"]["payload"]["recording_ended_at"], now);
    }
}
