//! Telnyx event → callbridge event (contract §5).
//!
//! Driven by two static tables rather than a chain of ifs:
//! - [`COMMON`]: the payload fields every call event carries, Telnyx key →
//!   camelCase key;
//! - [`EVENTS`]: per Telnyx `event_type`, the extra payload fields it adds,
//!   its state [`Transition`], and whether it gets a computed `durationSecs`.
//!
//! Contract §5 lists the required extras (call-initiated, -answered,
//! -bridged, -hangup, dtmf-received, call-recording-saved,
//! call-machine-detection-ended, call-machine-greeting-ended,
//! call-gather-ended). The other [`EVENTS`] rows are a few obviously useful
//! fields taken from Telnyx's published payload models (recording errors,
//! speak/playback status, premium AMD results, queue position, REFER NOTIFY
//! status, fork/stream ids, AI gather result).
//!
//! Rules: a field is present in `data` only when Telnyx sent it, and a JSON
//! `null` counts as not sent. Values are copied as sent; only `direction`
//! (`incoming`/`outgoing` → `inbound`/`outbound`), `clientState` (base64
//! decoded) and `durationSecs` (computed) are transformed. Unknown event
//! types get the common fields and `raw`, and are never dropped. The payload
//! is untrusted data: nothing here panics on wrong types or odd values.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::clock::rfc3339_ms;
use crate::domain::{CallInfo, Transition};
use crate::telnyx::{decode_base64, Envelope};

/// One normalized Telnyx event, ready for routing and storing.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// Telnyx `data.id`.
    pub id: String,
    /// Original Telnyx type, e.g. `call.dtmf.received`.
    pub event_type: String,
    /// Normalized name, e.g. `dtmf-received`.
    pub event: String,
    /// `occurred_at` as RFC 3339: the string Telnyx sent when it parses,
    /// else the received time.
    pub ts: String,
    /// `occurred_at` in ms since the epoch (the received time when absent or
    /// unparseable).
    pub occurred_ms: i64,
    pub call: CallInfo,
    pub connection_id: Option<String>,
    /// The decoded `client_state` (see [`decode_client_state`]).
    pub client_state: Option<Value>,
    pub transition: Transition,
    /// The event's `data` object per contract §5, without `userIds` (routing
    /// adds it).
    pub data: Map<String, Value>,
}

/// How a common field's value is carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    /// As sent.
    Copy,
    /// `incoming` → `inbound`, `outgoing` → `outbound`, else as sent.
    Direction,
    /// Base64-decoded, see [`decode_client_state`].
    ClientState,
}

/// Fields of every call event: Telnyx payload key, `data` key, conversion.
/// (`occurredAt` comes from the envelope, not the payload.)
const COMMON: &[(&str, &str, Conv)] = &[
    ("call_control_id", "callControlId", Conv::Copy),
    ("call_leg_id", "callLegId", Conv::Copy),
    ("call_session_id", "callSessionId", Conv::Copy),
    ("connection_id", "connectionId", Conv::Copy),
    ("direction", "direction", Conv::Direction),
    ("from", "from", Conv::Copy),
    ("to", "to", Conv::Copy),
    ("state", "state", Conv::Copy),
    ("client_state", "clientState", Conv::ClientState),
];

/// Per-event extras: Telnyx payload key → `data` key, copied as sent.
type Fields = &'static [(&'static str, &'static str)];

/// What one Telnyx event type adds to the common fields.
struct EventSpec {
    event_type: &'static str,
    fields: Fields,
    transition: Transition,
    /// Add `durationSecs` from `start_time` / `end_time`.
    duration: bool,
}

const START: Fields = &[("start_time", "startTime")];
const INITIATED: Fields = &[
    ("caller_id_name", "callerIdName"),
    ("start_time", "startTime"),
];
const HANGUP: Fields = &[
    ("hangup_cause", "hangupCause"),
    ("hangup_source", "hangupSource"),
    ("sip_hangup_cause", "sipHangupCause"),
    ("start_time", "startTime"),
    ("end_time", "endTime"),
];
const DTMF: Fields = &[("digit", "digit")];
const RECORDING_SAVED: Fields = &[
    ("recording_urls", "recordingUrls"),
    ("public_recording_urls", "publicRecordingUrls"),
    ("recording_started_at", "recordingStartedAt"),
    ("recording_ended_at", "recordingEndedAt"),
    ("channels", "channels"),
];
const RESULT: Fields = &[("result", "result")];
const GATHER: Fields = &[("digits", "digits"), ("status", "status")];
// Extras beyond contract §5, from Telnyx's payload models.
const REASON: Fields = &[("reason", "reason")];
const STATUS: Fields = &[("status", "status")];
const PLAYBACK_STARTED: Fields = &[
    ("media_url", "mediaUrl"),
    ("media_name", "mediaName"),
    ("overlay", "overlay"),
];
const PLAYBACK_ENDED: Fields = &[
    ("media_url", "mediaUrl"),
    ("media_name", "mediaName"),
    ("overlay", "overlay"),
    ("status", "status"),
    ("status_detail", "statusDetail"),
];
const AI_GATHER: Fields = &[("result", "result"), ("status", "status")];
const ENQUEUED: Fields = &[
    ("queue", "queue"),
    ("current_position", "currentPosition"),
    ("queue_avg_wait_time_secs", "queueAvgWaitTimeSecs"),
];
const LEFT_QUEUE: Fields = &[
    ("queue", "queue"),
    ("queue_position", "queuePosition"),
    ("reason", "reason"),
    ("wait_time_secs", "waitTimeSecs"),
];
const REFER: Fields = &[("sip_notify_response", "sipNotifyResponse")];
const FORK: Fields = &[("stream_type", "streamType")];
const STREAMING: Fields = &[("stream_id", "streamId"), ("stream_url", "streamUrl")];
const STREAMING_FAILED: Fields = &[
    ("stream_id", "streamId"),
    ("stream_type", "streamType"),
    ("failure_reason", "failureReason"),
];
const TRANSCRIPTION: Fields = &[
    ("recording_id", "recordingId"),
    ("recording_transcription_id", "recordingTranscriptionId"),
    ("status", "status"),
    ("transcription_text", "transcriptionText"),
];

const fn ev(event_type: &'static str, fields: Fields) -> EventSpec {
    EventSpec {
        event_type,
        fields,
        transition: Transition::None,
        duration: false,
    }
}

const fn state(event_type: &'static str, fields: Fields, transition: Transition) -> EventSpec {
    EventSpec {
        event_type,
        fields,
        transition,
        duration: false,
    }
}

/// Every event type with extras or a state transition. Types not listed get
/// the common fields only.
const EVENTS: &[EventSpec] = &[
    // Contract §5.
    state("call.initiated", INITIATED, Transition::Initiated),
    state("call.answered", START, Transition::Answered),
    state("call.bridged", START, Transition::Bridged),
    EventSpec {
        event_type: "call.hangup",
        fields: HANGUP,
        transition: Transition::Hangup,
        duration: true,
    },
    ev("call.dtmf.received", DTMF),
    ev("call.recording.saved", RECORDING_SAVED),
    ev("call.machine.detection.ended", RESULT),
    ev("call.machine.greeting.ended", RESULT),
    ev("call.gather.ended", GATHER),
    // Useful extras from Telnyx's payload models.
    ev("call.recording.error", REASON),
    ev("call.recording.transcription.saved", TRANSCRIPTION),
    ev("call.speak.ended", STATUS),
    ev("call.playback.started", PLAYBACK_STARTED),
    ev("call.playback.ended", PLAYBACK_ENDED),
    ev("call.machine.premium.detection.ended", RESULT),
    ev("call.machine.premium.greeting.ended", RESULT),
    ev("call.ai_gather.ended", AI_GATHER),
    ev("call.enqueued", ENQUEUED),
    // Telnyx's payload model for "call left queue" names the type
    // `call.dequeued`; both spellings are accepted.
    ev("call.dequeued", LEFT_QUEUE),
    ev("call.left.queue", LEFT_QUEUE),
    ev("call.refer.started", REFER),
    ev("call.refer.completed", REFER),
    ev("call.refer.failed", REFER),
    ev("call.fork.started", FORK),
    ev("call.fork.stopped", FORK),
    ev("streaming.started", STREAMING),
    ev("streaming.stopped", STREAMING),
    ev("streaming.failed", STREAMING_FAILED),
];

fn spec(event_type: &str) -> Option<&'static EventSpec> {
    EVENTS.iter().find(|s| s.event_type == event_type)
}

/// Normalize a verified, parsed envelope. `received_ms` stands in for a
/// missing or unparseable `occurred_at`.
pub fn normalize(env: &Envelope, received_ms: i64) -> Normalized {
    let d = &env.data;
    let p = &d.payload;
    let spec = spec(&d.event_type);

    let (ts, occurred_ms) = match d
        .occurred_at
        .as_deref()
        .and_then(|s| parse_ms(s).map(|ms| (s, ms)))
    {
        Some((s, ms)) => (s.to_string(), ms),
        None => (rfc3339_ms(received_ms), received_ms),
    };

    let mut data = Map::new();
    for &(from, to, conv) in COMMON {
        if let Some(v) = sent(p, from) {
            let v = match conv {
                Conv::Copy => v.clone(),
                Conv::Direction => match v.as_str() {
                    Some(s) => Value::String(direction(s).to_string()),
                    None => v.clone(),
                },
                Conv::ClientState => match v.as_str() {
                    Some(s) => decode_client_state(s),
                    None => v.clone(),
                },
            };
            data.insert(to.to_string(), v);
        }
    }
    data.insert("occurredAt".to_string(), Value::String(ts.clone()));
    if let Some(spec) = spec {
        for &(from, to) in spec.fields {
            if let Some(v) = sent(p, from) {
                data.insert(to.to_string(), v.clone());
            }
        }
        if spec.duration {
            if let Some(secs) = duration_secs(p) {
                data.insert("durationSecs".to_string(), Value::from(secs));
            }
        }
    }
    data.insert("raw".to_string(), Value::Object(p.clone()));

    let call = CallInfo {
        call_control_id: text(p, "call_control_id"),
        call_session_id: text(p, "call_session_id"),
        direction: text(p, "direction").map(|s| direction(&s).to_string()),
        from: text(p, "from"),
        to: text(p, "to"),
        start_time: text(p, "start_time"),
    };

    Normalized {
        id: d.id.clone(),
        event_type: d.event_type.clone(),
        event: event_name(&d.event_type),
        ts,
        occurred_ms,
        call,
        connection_id: text(p, "connection_id"),
        client_state: data.get("clientState").cloned(),
        transition: spec.map_or(Transition::None, |s| s.transition),
        data,
    }
}

/// `call.dtmf.received` → `dtmf-received`; any other type → its dots and
/// underscores replaced by dashes (`call.ai_gather.ended` → `call-ai-gather-ended`).
pub fn event_name(event_type: &str) -> String {
    if event_type == "call.dtmf.received" {
        return "dtmf-received".to_string();
    }
    event_type.replace(['.', '_'], "-")
}

/// Decode Telnyx `client_state`: base64 (standard or URL-safe, padded or
/// not) of JSON → the JSON value; of other UTF-8 text → that text; anything
/// else (not base64, not UTF-8 once decoded) → the original string.
pub fn decode_client_state(raw: &str) -> Value {
    let Some(bytes) = decode_base64(raw) else {
        return Value::String(raw.to_string());
    };
    match String::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// The payload value under `key`, unless absent or JSON null.
fn sent<'a>(p: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    p.get(key).filter(|v| !v.is_null())
}

/// A non-empty string value under `key` (other types do not count).
fn text(p: &Map<String, Value>, key: &str) -> Option<String> {
    p.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn direction(s: &str) -> &str {
    match s {
        "incoming" => "inbound",
        "outgoing" => "outbound",
        other => other,
    }
}

fn parse(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

use crate::clock::parse_rfc3339_ms as parse_ms;

/// Whole seconds from `start_time` to `end_time`, rounded down; only when
/// both are RFC 3339 strings and the end is not before the start.
fn duration_secs(p: &Map<String, Value>) -> Option<i64> {
    let start = parse(p.get("start_time")?.as_str()?)?;
    let end = parse(p.get("end_time")?.as_str()?)?;
    let d = end - start;
    (!d.is_negative()).then(|| d.whole_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    const RECEIVED_MS: i64 = 1_795_000_000_000;

    fn envelope(event_type: &str, occurred_at: Option<&str>, payload: Value) -> Envelope {
        let mut data = json!({
            "record_type": "event",
            "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
            "event_type": event_type,
            "payload": payload,
        });
        if let Some(t) = occurred_at {
            data["occurred_at"] = json!(t);
        }
        serde_json::from_value(json!({"data": data, "meta": {"attempt": 1}})).unwrap()
    }

    fn norm(event_type: &str, payload: Value) -> Normalized {
        normalize(
            &envelope(event_type, Some("2026-11-22T10:15:30.123456Z"), payload),
            RECEIVED_MS,
        )
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn call_payload() -> Value {
        json!({
            "call_control_id": "v3:cc-1",
            "call_leg_id": "leg-1",
            "call_session_id": "sess-1",
            "connection_id": "1684641123236054244",
            "direction": "incoming",
            "from": "+15551230001",
            "to": "+15559870002",
            "state": "parked",
        })
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    /// The keys of `data`, sorted.
    fn keys(n: &Normalized) -> Vec<&str> {
        let mut k: Vec<&str> = n.data.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    // ---- event names ----

    #[test]
    fn event_names() {
        for (t, want) in [
            ("call.initiated", "call-initiated"),
            ("call.answered", "call-answered"),
            ("call.bridged", "call-bridged"),
            ("call.hangup", "call-hangup"),
            ("call.dtmf.received", "dtmf-received"),
            ("call.recording.saved", "call-recording-saved"),
            ("call.recording.error", "call-recording-error"),
            (
                "call.recording.transcription.saved",
                "call-recording-transcription-saved",
            ),
            ("call.speak.started", "call-speak-started"),
            ("call.speak.ended", "call-speak-ended"),
            ("call.playback.started", "call-playback-started"),
            ("call.playback.ended", "call-playback-ended"),
            ("call.gather.ended", "call-gather-ended"),
            (
                "call.machine.detection.ended",
                "call-machine-detection-ended",
            ),
            ("call.machine.greeting.ended", "call-machine-greeting-ended"),
            (
                "call.machine.premium.detection.ended",
                "call-machine-premium-detection-ended",
            ),
            (
                "call.machine.premium.greeting.ended",
                "call-machine-premium-greeting-ended",
            ),
            ("call.fork.started", "call-fork-started"),
            ("call.fork.stopped", "call-fork-stopped"),
            ("streaming.started", "streaming-started"),
            ("streaming.stopped", "streaming-stopped"),
            ("streaming.failed", "streaming-failed"),
            ("call.refer.started", "call-refer-started"),
            ("call.refer.completed", "call-refer-completed"),
            ("call.refer.failed", "call-refer-failed"),
            ("call.enqueued", "call-enqueued"),
            ("call.dequeued", "call-dequeued"),
            ("call.left.queue", "call-left-queue"),
            ("call.ai_gather.ended", "call-ai-gather-ended"),
            (
                "call.conversation_insights.generated",
                "call-conversation-insights-generated",
            ),
            ("some.future_thing.happened", "some-future-thing-happened"),
            ("call-already-dashed", "call-already-dashed"),
            ("", ""),
        ] {
            assert_eq!(event_name(t), want, "{t}");
        }
        // Only the exact type is special-cased.
        assert_eq!(event_name("call.dtmf.received.v2"), "call-dtmf-received-v2");
        assert_eq!(event_name("dtmf.received"), "dtmf-received");
    }

    #[test]
    fn every_table_row_is_unique_and_named() {
        for (i, s) in EVENTS.iter().enumerate() {
            assert!(
                EVENTS[i + 1..].iter().all(|o| o.event_type != s.event_type),
                "duplicate row {}",
                s.event_type
            );
            assert!(!s.fields.is_empty(), "{} has no fields", s.event_type);
            for (from, to) in s.fields {
                assert!(!to.contains('_') && !from.contains('-'), "{from} -> {to}");
                assert!(
                    !COMMON.iter().any(|c| c.1 == *to),
                    "{to} shadows a common field"
                );
            }
        }
    }

    // ---- client state ----

    #[test]
    fn client_state_json() {
        let raw = b64(br#"{"userId":"u1","n":2}"#);
        assert_eq!(decode_client_state(&raw), json!({"userId": "u1", "n": 2}));
        // URL-safe, unpadded.
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"k":"??>>"}"#);
        assert!(raw.contains('_') || raw.contains('-'), "{raw}");
        assert_eq!(decode_client_state(&raw), json!({"k": "??>>"}));
        // JSON that is not an object is still JSON.
        assert_eq!(decode_client_state(&b64(b"[1,2]")), json!([1, 2]));
        assert_eq!(decode_client_state(&b64(b"42")), json!(42));
    }

    #[test]
    fn client_state_plain_text() {
        assert_eq!(
            decode_client_state(&b64(b"have a nice day")),
            json!("have a nice day")
        );
        assert_eq!(
            decode_client_state(&b64("agent ünïcode".as_bytes())),
            json!("agent ünïcode")
        );
        // Unpadded standard alphabet.
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.encode(b"u1");
        assert_eq!(decode_client_state(&raw), json!("u1"));
        // Truncated JSON is text.
        assert_eq!(
            decode_client_state(&b64(b"{\"userId\":")),
            json!("{\"userId\":")
        );
        assert_eq!(decode_client_state(""), json!(""));
    }

    #[test]
    fn client_state_not_base64_or_not_utf8() {
        for raw in ["not base64!", "u1:agent", "%%%", "a", "====", "ab=c"] {
            assert_eq!(decode_client_state(raw), json!(raw), "{raw}");
        }
        // Valid base64 of bytes that are not UTF-8: the original string.
        let raw = b64(&[0xff, 0xfe, 0x00, 0x80]);
        assert_eq!(decode_client_state(&raw), json!(raw));
    }

    #[test]
    fn client_state_in_event() {
        let n = norm(
            "call.answered",
            with(
                call_payload(),
                json!({"client_state": b64(br#"{"userId":"u7"}"#)}),
            ),
        );
        assert_eq!(n.client_state, Some(json!({"userId": "u7"})));
        assert_eq!(n.data["clientState"], json!({"userId": "u7"}));

        let n = norm(
            "call.answered",
            with(call_payload(), json!({"client_state": "plain"})),
        );
        assert_eq!(n.client_state, Some(json!("plain")));

        // Null or absent: no clientState.
        let n = norm(
            "call.answered",
            with(call_payload(), json!({"client_state": null})),
        );
        assert_eq!(n.client_state, None);
        assert!(!n.data.contains_key("clientState"));
        let n = norm("call.answered", call_payload());
        assert_eq!(n.client_state, None);

        // A non-string is passed through as sent.
        let n = norm(
            "call.answered",
            with(call_payload(), json!({"client_state": {"userId": "u1"}})),
        );
        assert_eq!(n.client_state, Some(json!({"userId": "u1"})));
    }

    // ---- common fields ----

    #[test]
    fn common_fields_and_call_info() {
        let n = norm("call.initiated", call_payload());
        assert_eq!(n.id, "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0");
        assert_eq!(n.event_type, "call.initiated");
        assert_eq!(n.event, "call-initiated");
        assert_eq!(n.transition, Transition::Initiated);
        let d = &n.data;
        assert_eq!(d["callControlId"], "v3:cc-1");
        assert_eq!(d["callLegId"], "leg-1");
        assert_eq!(d["callSessionId"], "sess-1");
        assert_eq!(d["connectionId"], "1684641123236054244");
        assert_eq!(d["direction"], "inbound");
        assert_eq!(d["from"], "+15551230001");
        assert_eq!(d["to"], "+15559870002");
        assert_eq!(d["state"], "parked");
        assert_eq!(d["occurredAt"], "2026-11-22T10:15:30.123456Z");
        assert_eq!(d["raw"], call_payload());
        assert!(!d.contains_key("userIds"));

        assert_eq!(n.call.call_control_id.as_deref(), Some("v3:cc-1"));
        assert_eq!(n.call.call_session_id.as_deref(), Some("sess-1"));
        assert_eq!(n.call.direction.as_deref(), Some("inbound"));
        assert_eq!(n.call.from.as_deref(), Some("+15551230001"));
        assert_eq!(n.call.to.as_deref(), Some("+15559870002"));
        assert_eq!(n.call.start_time, None);
        assert_eq!(n.connection_id.as_deref(), Some("1684641123236054244"));
    }

    #[test]
    fn direction_mapping() {
        for (sent, want) in [
            (json!("incoming"), json!("inbound")),
            (json!("outgoing"), json!("outbound")),
            (json!("inbound"), json!("inbound")),
            (json!("sideways"), json!("sideways")),
            (json!("Incoming"), json!("Incoming")),
            (json!(""), json!("")),
            (json!(7), json!(7)),
        ] {
            let n = norm("call.initiated", json!({"direction": sent}));
            assert_eq!(n.data["direction"], want, "{sent}");
            let call_dir = want.as_str().filter(|s| !s.is_empty()).map(str::to_string);
            assert_eq!(n.call.direction, call_dir, "{sent}");
        }
        let n = norm("call.initiated", json!({"direction": "outgoing"}));
        assert_eq!(n.call.direction.as_deref(), Some("outbound"));
    }

    #[test]
    fn fields_absent_when_not_sent() {
        let n = norm("call.hangup", json!({}));
        assert_eq!(keys(&n), vec!["occurredAt", "raw"]);
        assert_eq!(n.data["raw"], json!({}));
        assert!(n.call.binding_keys().is_empty());
        assert_eq!(n.connection_id, None);
        assert_eq!(n.transition, Transition::Hangup);

        let n = norm("call.answered", json!({"call_control_id": "cc"}));
        assert_eq!(keys(&n), vec!["callControlId", "occurredAt", "raw"]);
    }

    #[test]
    fn nulls_are_ignored() {
        let mut payload = Map::new();
        for key in [
            "call_control_id",
            "call_leg_id",
            "call_session_id",
            "connection_id",
            "direction",
            "from",
            "to",
            "state",
            "client_state",
            "hangup_cause",
            "hangup_source",
            "sip_hangup_cause",
            "start_time",
            "end_time",
        ] {
            payload.insert(key.to_string(), Value::Null);
        }
        let payload = Value::Object(payload);
        let n = norm("call.hangup", payload.clone());
        assert_eq!(keys(&n), vec!["occurredAt", "raw"]);
        assert_eq!(n.data["raw"], payload, "raw keeps the nulls");
        assert!(n.call.call_control_id.is_none() && n.call.direction.is_none());
        assert!(n.client_state.is_none() && n.connection_id.is_none());
    }

    #[test]
    fn raw_is_the_payload_unchanged() {
        let payload = with(
            call_payload(),
            json!({
                "client_state": b64(b"{\"userId\":\"u1\"}"),
                "custom_headers": [{"name": "X-Campaign", "value": "spring"}],
                "nested": {"a": [1, 2.5, null, true, {"b": "c"}]},
                "big": 18446744073709551615u64,
                "negative": -9223372036854775808i64,
                "some_future_field": "kept",
            }),
        );
        let n = norm("call.initiated", payload.clone());
        assert_eq!(n.data["raw"], payload);
        // Unknown payload fields are only in raw.
        assert!(!n.data.contains_key("someFutureField"));
        assert!(!n.data.contains_key("some_future_field"));
    }

    #[test]
    fn non_string_values_do_not_count_for_call_info() {
        let payload = json!({
            "call_control_id": 12,
            "call_session_id": ["s"],
            "connection_id": 1684641123236054244u64,
            "from": {"number": "+1555"},
            "to": true,
            "start_time": 1700000000,
            "direction": null,
        });
        let n = norm("call.initiated", payload.clone());
        assert!(n.call.call_control_id.is_none());
        assert!(n.call.call_session_id.is_none());
        assert!(n.call.from.is_none() && n.call.to.is_none());
        assert!(n.call.start_time.is_none() && n.call.direction.is_none());
        assert!(n.connection_id.is_none());
        // data still carries what Telnyx sent.
        assert_eq!(n.data["callControlId"], json!(12));
        assert_eq!(n.data["connectionId"], json!(1684641123236054244u64));
        assert_eq!(n.data["startTime"], json!(1700000000));
        assert_eq!(n.data["raw"], payload);
        // Empty ids would glue unrelated calls together: ignored for CallInfo.
        let n = norm(
            "call.answered",
            json!({"call_control_id": "", "call_session_id": ""}),
        );
        assert!(n.call.binding_keys().is_empty());
        assert_eq!(n.data["callControlId"], "");
    }

    // ---- occurred_at ----

    #[test]
    fn occurred_at_parsed_to_ms() {
        let n = norm("call.answered", json!({}));
        assert_eq!(n.ts, "2026-11-22T10:15:30.123456Z");
        let want = time::macros::datetime!(2026-11-22 10:15:30 UTC).unix_timestamp() * 1000 + 123;
        assert_eq!(n.occurred_ms, want);

        let n = normalize(
            &envelope(
                "call.answered",
                Some("2026-11-22T12:15:30.5+02:00"),
                json!({}),
            ),
            RECEIVED_MS,
        );
        assert_eq!(n.ts, "2026-11-22T12:15:30.5+02:00", "kept as sent");
        assert_eq!(n.occurred_ms, want - 123 + 500);

        // Before the epoch: rounded down, not toward zero.
        let n = normalize(
            &envelope(
                "call.answered",
                Some("1969-12-31T23:59:59.9995Z"),
                json!({}),
            ),
            RECEIVED_MS,
        );
        assert_eq!(n.occurred_ms, -1);
    }

    #[test]
    fn occurred_at_missing_or_bad_uses_received_time() {
        for at in [
            None,
            Some(""),
            Some("yesterday"),
            Some("2026-11-22 10:15:30"),
            Some("2026-13-40T99:99:99Z"),
        ] {
            let n = normalize(&envelope("call.answered", at, json!({})), RECEIVED_MS);
            assert_eq!(n.occurred_ms, RECEIVED_MS, "{at:?}");
            assert_eq!(n.ts, rfc3339_ms(RECEIVED_MS), "{at:?}");
            assert_eq!(n.data["occurredAt"], json!(n.ts));
            assert!(parse(&n.ts).is_some());
        }
        // A received time out of range still does not panic.
        let n = normalize(&envelope("call.answered", None, json!({})), i64::MAX);
        assert_eq!(n.occurred_ms, i64::MAX);
        let n = normalize(&envelope("call.answered", None, json!({})), i64::MIN);
        assert_eq!(n.occurred_ms, i64::MIN);
    }

    // ---- per-event extras ----

    #[test]
    fn initiated_answered_bridged_extras() {
        let p = with(
            call_payload(),
            json!({"caller_id_name": "ACME Support", "start_time": "2026-11-22T10:15:30.123456Z"}),
        );
        let n = norm("call.initiated", p.clone());
        assert_eq!(n.data["callerIdName"], "ACME Support");
        assert_eq!(n.data["startTime"], "2026-11-22T10:15:30.123456Z");
        assert_eq!(
            n.call.start_time.as_deref(),
            Some("2026-11-22T10:15:30.123456Z")
        );

        for (t, tr) in [
            ("call.answered", Transition::Answered),
            ("call.bridged", Transition::Bridged),
        ] {
            let n = norm(t, p.clone());
            assert_eq!(n.transition, tr);
            assert_eq!(n.data["startTime"], "2026-11-22T10:15:30.123456Z");
            assert!(!n.data.contains_key("callerIdName"), "{t}");
        }
        // caller_id_name belongs to call-initiated only.
        let n = norm("call.speak.started", p);
        assert!(!n.data.contains_key("callerIdName") && !n.data.contains_key("startTime"));
        assert_eq!(n.transition, Transition::None);
    }

    fn hangup(start: Value, end: Value) -> Normalized {
        norm(
            "call.hangup",
            with(
                call_payload(),
                json!({
                    "hangup_cause": "normal_clearing",
                    "hangup_source": "caller",
                    "sip_hangup_cause": "unspecified",
                    "start_time": start,
                    "end_time": end,
                    "state": "hangup",
                }),
            ),
        )
    }

    #[test]
    fn hangup_extras_and_duration_rounds_down() {
        let n = hangup(
            json!("2026-11-22T10:15:30.123456Z"),
            json!("2026-11-22T10:17:42.654321Z"),
        );
        assert_eq!(n.transition, Transition::Hangup);
        assert_eq!(n.data["hangupCause"], "normal_clearing");
        assert_eq!(n.data["hangupSource"], "caller");
        assert_eq!(n.data["sipHangupCause"], "unspecified");
        assert_eq!(n.data["startTime"], "2026-11-22T10:15:30.123456Z");
        assert_eq!(n.data["endTime"], "2026-11-22T10:17:42.654321Z");
        assert_eq!(n.data["durationSecs"], json!(132));
        assert_eq!(n.data["state"], "hangup");

        for (start, end, want) in [
            ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00Z", Some(0)),
            (
                "2026-11-22T10:00:00Z",
                "2026-11-22T10:00:00.999999Z",
                Some(0),
            ),
            ("2026-11-22T10:00:00.9Z", "2026-11-22T10:00:01.8Z", Some(0)),
            ("2026-11-22T10:00:00.9Z", "2026-11-22T10:00:01.9Z", Some(1)),
            (
                "2026-11-22T10:00:00Z",
                "2026-11-22T11:00:59.999Z",
                Some(3659),
            ),
            ("2026-11-22T10:00:00+01:00", "2026-11-22T09:00:05Z", Some(5)),
            // End before start: no duration.
            ("2026-11-22T10:00:01Z", "2026-11-22T10:00:00Z", None),
            ("2026-11-22T10:00:00.5Z", "2026-11-22T10:00:00.4Z", None),
            // Unparseable.
            ("2026-11-22T10:00:00Z", "later", None),
            ("", "2026-11-22T10:00:00Z", None),
            (
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                Some(315_569_519_999),
            ),
        ] {
            let n = hangup(json!(start), json!(end));
            assert_eq!(
                n.data.get("durationSecs").and_then(Value::as_i64),
                want,
                "{start} .. {end}"
            );
            assert_eq!(n.data["startTime"], start);
            assert_eq!(n.data["endTime"], end);
        }
    }

    #[test]
    fn hangup_duration_needs_both_strings() {
        for (start, end) in [
            (json!(null), json!("2026-11-22T10:00:00Z")),
            (json!("2026-11-22T10:00:00Z"), json!(null)),
            (json!(1700000000), json!(1700000100)),
            (json!("2026-11-22T10:00:00Z"), json!({"t": 1})),
        ] {
            let n = hangup(start.clone(), end.clone());
            assert!(!n.data.contains_key("durationSecs"), "{start} {end}");
        }
        // Only call.hangup computes a duration.
        let n = norm(
            "call.answered",
            json!({"start_time": "2026-11-22T10:00:00Z", "end_time": "2026-11-22T10:00:09Z"}),
        );
        assert!(!n.data.contains_key("durationSecs") && !n.data.contains_key("endTime"));
    }

    #[test]
    fn dtmf_gather_machine_extras() {
        let n = norm(
            "call.dtmf.received",
            with(call_payload(), json!({"digit": "#"})),
        );
        assert_eq!(n.event, "dtmf-received");
        assert_eq!(n.data["digit"], "#");

        let n = norm(
            "call.gather.ended",
            json!({"digits": "1234", "status": "valid"}),
        );
        assert_eq!(n.data["digits"], "1234");
        assert_eq!(n.data["status"], "valid");

        for t in [
            "call.machine.detection.ended",
            "call.machine.greeting.ended",
        ] {
            let n = norm(t, json!({"result": "machine"}));
            assert_eq!(n.data["result"], "machine", "{t}");
            assert_eq!(n.transition, Transition::None);
        }
        // `digit` is not an extra of other events.
        let n = norm("call.gather.ended", json!({"digit": "5"}));
        assert!(!n.data.contains_key("digit"));
    }

    #[test]
    fn recording_saved_extras() {
        let urls =
            json!({"mp3": "https://r.example.com/a.mp3", "wav": "https://r.example.com/a.wav"});
        let n = norm(
            "call.recording.saved",
            json!({
                "recording_urls": urls,
                "public_recording_urls": {"mp3": "https://p.example.com/a.mp3"},
                "recording_started_at": "2026-11-22T10:15:35Z",
                "recording_ended_at": "2026-11-22T10:17:42Z",
                "channels": "dual",
            }),
        );
        assert_eq!(n.data["recordingUrls"], urls);
        assert_eq!(
            n.data["publicRecordingUrls"],
            json!({"mp3": "https://p.example.com/a.mp3"})
        );
        assert_eq!(n.data["recordingStartedAt"], "2026-11-22T10:15:35Z");
        assert_eq!(n.data["recordingEndedAt"], "2026-11-22T10:17:42Z");
        assert_eq!(n.data["channels"], "dual");
    }

    /// Each event's optional extra is in `data` under its camelCase name,
    /// `raw` keeps the payload, and the call state does not move.
    fn check_optional_extras(cases: &[(&str, Value, &str, Value)]) {
        for (t, payload, key, want) in cases {
            let n = norm(t, payload.clone());
            assert_eq!(n.data.get(*key), Some(want), "{t}");
            assert_eq!(n.data["raw"], *payload);
            assert_eq!(n.transition, Transition::None);
        }
    }

    #[test]
    fn optional_extras_of_media_and_detection() {
        check_optional_extras(&[
            (
                "call.recording.error",
                json!({"reason": "Internal server error"}),
                "reason",
                json!("Internal server error"),
            ),
            (
                "call.speak.ended",
                json!({"status": "completed"}),
                "status",
                json!("completed"),
            ),
            (
                "call.playback.ended",
                json!({"status": "file_not_found"}),
                "status",
                json!("file_not_found"),
            ),
            (
                "call.playback.started",
                json!({"media_name": "hold"}),
                "mediaName",
                json!("hold"),
            ),
            (
                "call.machine.premium.detection.ended",
                json!({"result": "human_business"}),
                "result",
                json!("human_business"),
            ),
            (
                "call.machine.premium.greeting.ended",
                json!({"result": "beep_detected"}),
                "result",
                json!("beep_detected"),
            ),
        ]);
    }

    #[test]
    fn optional_extras_of_queues_and_streams() {
        check_optional_extras(&[
            (
                "call.enqueued",
                json!({"current_position": 3}),
                "currentPosition",
                json!(3),
            ),
            (
                "call.left.queue",
                json!({"queue_position": 1}),
                "queuePosition",
                json!(1),
            ),
            (
                "call.dequeued",
                json!({"reason": "bridged"}),
                "reason",
                json!("bridged"),
            ),
            (
                "call.refer.failed",
                json!({"sip_notify_response": 603}),
                "sipNotifyResponse",
                json!(603),
            ),
            (
                "call.fork.started",
                json!({"stream_type": "decrypted"}),
                "streamType",
                json!("decrypted"),
            ),
            (
                "streaming.started",
                json!({"stream_url": "wss://s.example.com"}),
                "streamUrl",
                json!("wss://s.example.com"),
            ),
            (
                "call.ai_gather.ended",
                json!({"result": {"name": "Ann"}}),
                "result",
                json!({"name": "Ann"}),
            ),
        ]);
    }

    #[test]
    fn unknown_event_types_get_common_fields_and_raw() {
        let p = with(
            call_payload(),
            json!({"start_time": "2026-11-22T10:15:30Z", "result": "x"}),
        );
        let n = norm("call.something_new.happened", p.clone());
        assert_eq!(n.event, "call-something-new-happened");
        assert_eq!(n.transition, Transition::None);
        assert_eq!(
            keys(&n),
            vec![
                "callControlId",
                "callLegId",
                "callSessionId",
                "connectionId",
                "direction",
                "from",
                "occurredAt",
                "raw",
                "state",
                "to",
            ]
        );
        assert_eq!(n.data["raw"], p);
        assert_eq!(
            n.call.start_time.as_deref(),
            Some("2026-11-22T10:15:30Z"),
            "CallInfo still filled"
        );
    }

    #[test]
    fn bad_types_never_panic() {
        let weird = [
            json!(null),
            json!(true),
            json!(-1),
            json!(1e308),
            json!(18446744073709551615u64),
            json!(""),
            json!("\u{0}\u{ffff}"),
            json!("x".repeat(10_000)),
            json!([1, "a", null]),
            json!({"deep": {"deeper": [{}]}}),
        ];
        let all_keys: Vec<&str> = COMMON
            .iter()
            .map(|c| c.0)
            .chain(EVENTS.iter().flat_map(|s| s.fields.iter().map(|f| f.0)))
            .collect();
        for t in EVENTS
            .iter()
            .map(|s| s.event_type)
            .chain(["x.y", "call.unknown"])
        {
            for v in &weird {
                let mut p = Map::new();
                for k in &all_keys {
                    p.insert(k.to_string(), v.clone());
                }
                let payload = Value::Object(p);
                for at in [None, Some("2026-11-22T10:15:30Z"), Some("\u{0}")] {
                    let n = normalize(&envelope(t, at, payload.clone()), RECEIVED_MS);
                    assert_eq!(n.data["raw"], payload);
                    assert!(serde_json::to_string(&n.data).is_ok());
                }
            }
        }
        // Client states that are hostile once decoded.
        let deep = "[".repeat(10_000);
        assert_eq!(decode_client_state(&b64(deep.as_bytes())), json!(deep));
        assert_eq!(
            decode_client_state(&b64(b"\xc3\x28")),
            json!(b64(b"\xc3\x28"))
        );
        // A number too large for f64 is not JSON serde_json can hold: text.
        let big = "9".repeat(400);
        assert_eq!(decode_client_state(&b64(big.as_bytes())), json!(big));
    }

    // ---- fixtures ----

    /// Event types contract §5 gives extras for, with the `data` keys each must show.
    const REQUIRED: &[(&str, &[&str])] = &[
        ("call.initiated", &["callerIdName", "startTime"]),
        ("call.answered", &["startTime"]),
        ("call.bridged", &[]),
        (
            "call.hangup",
            &[
                "hangupCause",
                "hangupSource",
                "sipHangupCause",
                "startTime",
                "endTime",
                "durationSecs",
            ],
        ),
        ("call.dtmf.received", &["digit"]),
        (
            "call.recording.saved",
            &[
                "recordingUrls",
                "publicRecordingUrls",
                "recordingStartedAt",
                "recordingEndedAt",
                "channels",
            ],
        ),
        ("call.machine.detection.ended", &["result"]),
        ("call.machine.greeting.ended", &["result"]),
        ("call.gather.ended", &["digits", "status"]),
        ("call.recording.error", &["reason"]),
        ("call.speak.started", &[]),
        ("call.speak.ended", &["status"]),
        ("call.playback.started", &["mediaUrl", "overlay"]),
        ("call.playback.ended", &["mediaUrl", "overlay", "status"]),
        ("call.fork.started", &["streamType"]),
        ("call.fork.stopped", &["streamType"]),
        ("streaming.started", &["streamUrl"]),
        ("streaming.stopped", &["streamUrl"]),
        ("call.refer.started", &["sipNotifyResponse"]),
        ("call.refer.completed", &["sipNotifyResponse"]),
        ("call.refer.failed", &["sipNotifyResponse"]),
        (
            "call.enqueued",
            &["queue", "currentPosition", "queueAvgWaitTimeSecs"],
        ),
        (
            "call.left.queue",
            &["queue", "queuePosition", "reason", "waitTimeSecs"],
        ),
        ("call.ai_gather.ended", &["result", "status"]),
    ];

    /// Every fixture file: a well-formed Telnyx envelope named after its type.
    fn read_fixture(path: &std::path::Path, name: &str) -> Envelope {
        let text = std::fs::read_to_string(path).unwrap();
        let env: Envelope = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let d = &env.data;
        assert_eq!(d.event_type, name, "file named by its event type");
        assert_eq!(d.record_type.as_deref(), Some("event"), "{name}");
        assert!(uuid::Uuid::parse_str(&d.id).is_ok(), "{name}: id is a UUID");
        assert!(
            !d.payload.contains_key("client_state"),
            "{name}: no client_state"
        );
        let meta = env.meta.as_ref().unwrap();
        assert_eq!(meta["attempt"], 1, "{name}");
        env
    }

    /// The one call every fixture belongs to.
    fn check_fixture_call(name: &str, n: &Normalized) {
        for (key, want) in [
            ("callControlId", "v3:fixture-control-1"),
            ("callLegId", "fixture-leg-1"),
            ("callSessionId", "fixture-session-1"),
            ("connectionId", "1684641123236054244"),
            ("from", "+15551230001"),
            ("to", "+15559870002"),
            ("direction", "inbound"),
        ] {
            if let Some(v) = n.data.get(key) {
                assert_eq!(v, want, "{name}: {key}");
            }
        }
        assert_eq!(n.data["callSessionId"], "fixture-session-1", "{name}");
        assert_eq!(n.data["callControlId"], "v3:fixture-control-1", "{name}");
        assert_eq!(n.call.call_session_id.as_deref(), Some("fixture-session-1"));
        assert_eq!(n.connection_id.as_deref(), Some("1684641123236054244"));
    }

    /// The table's extras, the promised ones, the transition and a few
    /// values per type.
    fn check_fixture_fields(name: &str, env: &Envelope, n: &Normalized) {
        // Every table extra the fixture sends is in data, unchanged.
        let spec = spec(name);
        for (from, to) in spec.map_or(&[][..], |s| s.fields) {
            assert_eq!(
                n.data.get(*to),
                sent(&env.data.payload, from),
                "{name}: {to}"
            );
        }
        // The extras contract §5 (and our table) promise for this event.
        if let Some((_, want)) = REQUIRED.iter().find(|(t, _)| *t == name) {
            for key in *want {
                assert!(n.data.contains_key(*key), "{name}: missing {key}");
            }
        }
        let transition = match name {
            "call.initiated" => Transition::Initiated,
            "call.answered" => Transition::Answered,
            "call.bridged" => Transition::Bridged,
            "call.hangup" => Transition::Hangup,
            _ => Transition::None,
        };
        assert_eq!(n.transition, transition, "{name}");
        match name {
            "call.initiated" => {
                assert_eq!(n.call.direction.as_deref(), Some("inbound"));
                assert_eq!(n.call.to.as_deref(), Some("+15559870002"));
                assert_eq!(n.data["state"], "parked");
            }
            "call.hangup" => {
                assert_eq!(n.data["durationSecs"], json!(132));
                assert_eq!(n.data["hangupCause"], "normal_clearing");
            }
            "call.dtmf.received" => assert_eq!(n.event, "dtmf-received"),
            "call.ai_gather.ended" => assert_eq!(n.event, "call-ai-gather-ended"),
            _ => {}
        }
    }

    #[test]
    fn fixtures_normalize() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/telnyx");
        let mut seen = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            let env = read_fixture(&path, &name);
            assert!(ids.insert(env.data.id.clone()), "{name}: duplicate id");

            let n = normalize(&env, RECEIVED_MS);
            assert_eq!(n.event, event_name(&name));
            assert_eq!(
                n.data["raw"],
                Value::Object(env.data.payload.clone()),
                "{name}: raw"
            );
            assert_eq!(n.ts, env.data.occurred_at.clone().unwrap(), "{name}");
            assert_ne!(n.occurred_ms, RECEIVED_MS, "{name}: occurred_at parses");
            assert!(n.client_state.is_none());
            check_fixture_call(&name, &n);
            check_fixture_fields(&name, &env, &n);
            seen.push(name);
        }
        for (t, _) in REQUIRED {
            assert!(seen.iter().any(|s| s == t), "no fixture for {t}");
        }
    }
}
