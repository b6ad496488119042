//! The dialer WebSocket protocol (contract §4): what clients send, what the
//! server sends, as typed serde enums. Every server message is one JSON text
//! frame `{"event":…,"data":…,["seq":…,"id":…,]"ts":…}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{ActiveCall, EventBody, Status, StoredEvent};

/// Protocol version announced in `connected`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The subprotocol a client may offer; answered whenever offered.
pub const SUBPROTOCOL: &str = "callbridge.v1";

/// Every close code the server sends (contract §4 table, plus the
/// standard ones it names for conditions the table leaves open).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// A WebSocket protocol violation by the client (RFC 6455).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Never sent: what a close frame without a code reports (RFC 6455
    /// §7.4.1); `callbridge listen` reads it so.
    pub const NO_STATUS: u16 = 1005;
    /// Never sent: recorded in logs when the peer vanished without a close.
    pub const ABNORMAL: u16 = 1006;
    /// A text frame that is not UTF-8 (RFC 6455).
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// The store did not answer during authentication or replay: retry.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const REVOKED: u16 = 4003;
    pub const TOO_MANY_CONNECTIONS: u16 = 4008;
    pub const SLOW_CONSUMER: u16 = 4013;
    pub const RATE_LIMITED: u16 = 4029;
    pub const AUTH_TIMEOUT: u16 = 4401;
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    Ping {
        #[serde(default)]
        #[allow(dead_code)]
        data: Option<Value>,
    },
    Auth {
        token: String,
    },
    Resume {
        since: u64,
    },
    Status {
        status: Status,
    },
}

impl ClientMessage {
    /// Parse one text frame. The error text goes back to the client in an
    /// `error` message, so it describes the shape, never echoes the content.
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        let v: Value = serde_json::from_str(text).map_err(|_| "message is not JSON".to_string())?;
        let obj = v
            .as_object()
            .ok_or_else(|| "message is not a JSON object".to_string())?;
        let ty = match obj.get("type") {
            None => return Err("message has no `type`".into()),
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err("`type` must be a string".into()),
        };
        if !matches!(ty.as_str(), "ping" | "auth" | "resume" | "status") {
            return Err(format!(
                "unknown type `{}`; expected ping, auth, resume or status",
                ty.chars().take(32).collect::<String>()
            ));
        }
        // serde's messages quote the offending value (maybe a token): say
        // what shape was expected instead.
        serde_json::from_value(v).map_err(|_| {
            let shape = match ty.as_str() {
                "ping" => r#"{"type":"ping","data":{}}"#,
                "auth" => r#"{"type":"auth","token":"<JWT>"}"#,
                "resume" => r#"{"type":"resume","since":<seq, 0 or more>}"#,
                _ => r#"{"type":"status","status":"available"|"away"|"busy"}"#,
            };
            format!("bad `{ty}` message; expected {shape}")
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub client_id: String,
    pub user: String,
    pub user_id: String,
    pub protocol: u32,
    pub heartbeat_secs: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub status: Status,
    pub active_calls: Vec<ActiveCall>,
}

/// Server messages that are not stored events.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "kebab-case")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    AuthRequired {
        timeout_secs: u64,
    },
    Connected(Connected),
    Snapshot(Snapshot),
    Pong {
        timestamp: i64,
    },
    Resumed {
        from: u64,
        to: u64,
        gap: bool,
    },
    StatusChanged {
        status: Status,
    },
    Error {
        code: String,
        message: String,
    },
}

#[derive(Serialize)]
struct Framed<'a, T: Serialize> {
    #[serde(flatten)]
    msg: &'a T,
    ts: &'a str,
}

impl ServerMessage {
    pub fn to_frame(&self) -> String {
        let ts = crate::clock::now_rfc3339();
        serde_json::to_string(&Framed { msg: self, ts: &ts })
            .expect("server messages always serialize")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: "bad-request".into(),
            message: message.into(),
        }
    }
}

/// A stored call event's frame, `{"event":…,"data":…,"seq":…,"id":…,"ts":…}`,
/// around the place each user's `seq` goes: built once per event, then
/// one copy per user.
///
/// Built by concatenation, not by serde: `data` is already JSON text in the
/// shared body (serialized once at ingest), so a user's frame costs one
/// allocation and a copy, whatever the size of `data` and the number of
/// users. The short strings are escaped by serde_json, once per event.
pub struct EventFrame {
    /// `{"event":…,"data":…,"seq":`
    head: String,
    /// `,"id":…,"ts":…}`
    tail: String,
}

impl EventFrame {
    pub fn new(body: &EventBody) -> Self {
        let q = |s: &str| serde_json::to_string(s).expect("strings always serialize");
        let (event, id, ts) = (q(&body.event), q(&body.id), q(&body.ts));
        EventFrame {
            head: format!("{{\"event\":{event},\"data\":{},\"seq\":", body.data_json),
            tail: format!(",\"id\":{id},\"ts\":{ts}}}"),
        }
    }

    /// The frame for one user.
    pub fn with_seq(&self, seq: u64) -> String {
        let mut digits = itoa::Buffer::new();
        let seq = digits.format(seq);
        let mut f = String::with_capacity(self.head.len() + seq.len() + self.tail.len());
        f.push_str(&self.head);
        f.push_str(seq);
        f.push_str(&self.tail);
        f
    }
}

/// A stored call event as the client sees it (one event: replay, gap fill).
pub fn event_frame(ev: &StoredEvent) -> String {
    EventFrame::new(&ev.body).with_seq(ev.seq)
}

#[derive(Serialize)]
struct CustomFrame<'a> {
    event: &'a str,
    data: &'a Value,
    ts: &'a str,
}

/// A custom message pushed through `/api/broadcast`.
pub fn custom_frame(event: &str, data: &Value) -> String {
    let ts = crate::clock::now_rfc3339();
    serde_json::to_string(&CustomFrame {
        event,
        data,
        ts: &ts,
    })
    .expect("custom messages always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping","data":{}}"#).unwrap(),
            ClientMessage::Ping { .. }
        ));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resume","since":7}"#).unwrap(),
            ClientMessage::Resume { since: 7 }
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"status","status":"away"}"#).unwrap(),
            ClientMessage::Status {
                status: Status::Away
            }
        );
        for bad in [
            "nope",
            "[1]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"status","status":"asleep"}"#,
            r#"{"type":"resume","since":-1}"#,
            r#"{"type":"auth"}"#,
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad}");
        }
        // The error never echoes the token.
        let e = ClientMessage::parse(r#"{"type":"auth","token":123456789}"#).unwrap_err();
        assert!(!e.contains("123456789"), "{e}");
    }

    #[test]
    fn event_frame_is_what_serde_would_write() {
        let data =
            serde_json::json!({"a": "x\"y", "n": 12345678901234i64, "f": 2.5, "l": [null, true]});
        let ev = StoredEvent {
            user_id: "u".into(),
            seq: u64::MAX,
            body: std::sync::Arc::new(crate::domain::EventBody::new(
                "ev\"1".into(),
                "call-answered".into(),
                "2026-11-22T10:15:30Z".into(),
                &data,
            )),
        };
        let want = serde_json::json!({
            "event": "call-answered", "data": data, "seq": u64::MAX,
            "id": "ev\"1", "ts": "2026-11-22T10:15:30Z",
        });
        let frame = event_frame(&ev);
        assert_eq!(serde_json::from_str::<Value>(&frame).unwrap(), want);
        let keys: Vec<&str> = ["\"event\"", "\"data\"", "\"seq\"", "\"id\"", "\"ts\""].to_vec();
        let at: Vec<usize> = keys.iter().map(|k| frame.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "key order: {frame}");
    }

    #[test]
    fn server_message_shapes() {
        let v: Value =
            serde_json::from_str(&ServerMessage::AuthRequired { timeout_secs: 10 }.to_frame())
                .unwrap();
        assert_eq!(v["event"], "auth-required");
        assert_eq!(v["data"]["timeoutSecs"], 10);
        assert!(v["ts"].is_string());
        let v: Value = serde_json::from_str(
            &ServerMessage::Resumed {
                from: 3,
                to: 9,
                gap: false,
            }
            .to_frame(),
        )
        .unwrap();
        assert_eq!(v["event"], "resumed");
        assert_eq!(v["data"], serde_json::json!({"from":3,"to":9,"gap":false}));
        let v: Value = serde_json::from_str(
            &ServerMessage::StatusChanged {
                status: Status::Busy,
            }
            .to_frame(),
        )
        .unwrap();
        assert_eq!(v["event"], "status-changed");
        assert_eq!(v["data"]["status"], "busy");
    }
}
