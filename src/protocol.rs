//! The dialer WebSocket protocol (contract §4): what clients send, what the
//! server sends, as typed serde enums. Every server message is one JSON text
//! frame `{"event":…,"data":…,["seq":…,"id":…,]"ts":…}`.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::domain::{ActiveCall, EventBody, Status, StoredEvent};
use crate::signing::{Envelope, SigningInfo};

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

/// The client messages of contract §4 and §8. `send` carries its
/// `payload` as the client wrote it ([`RawValue`]), so it is parsed apart
/// from the others (serde's tagged enums buffer, and would lose that).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Ping,
    Auth { token: String },
    Resume { since: u64 },
    Status { status: Status },
    Send(SendRequest),
    CallAction(CallActionRequest),
    Signal(SignalRequest),
}

/// The four fixed-shape messages, as serde reads them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Simple {
    Ping {
        #[serde(default)]
        #[allow(dead_code)]
        data: Option<IgnoredAny>,
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

/// `{"type":"send","to"|"call":…,"payload":…,"ref":…}` (contract §8), as
/// sent: the rules (exactly one of `to` and `call`, a payload, its size)
/// are checked by [`crate::messages`], which answers with the `ref`.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub to: Option<String>,
    pub call: Option<String>,
    /// The payload's JSON text exactly as the client sent it.
    pub payload: Option<Box<RawValue>>,
    pub reference: Option<String>,
}

impl PartialEq for SendRequest {
    fn eq(&self, other: &Self) -> bool {
        let raw = |p: &Option<Box<RawValue>>| p.as_ref().map(|r| r.get().to_string());
        self.to == other.to
            && self.call == other.call
            && raw(&self.payload) == raw(&other.payload)
            && self.reference == other.reference
    }
}

/// `{"type":"call-action","action":…,"call":…,"params":{…},"ref":…}`
/// (contract §14), as sent: [`crate::actions`] checks the rules and
/// answers with the `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallActionRequest {
    pub action: Option<String>,
    pub call: Option<String>,
    /// `params` as sent; `None` when absent or `null`.
    pub params: Option<Value>,
    pub reference: Option<String>,
}

/// `{"type":"signal","to"|"call":…,"name":…,"data":…}` (contract §14):
/// `data` kept as the client wrote it, like a message's payload.
#[derive(Debug, Clone)]
pub struct SignalRequest {
    pub to: Option<String>,
    pub call: Option<String>,
    pub name: Option<String>,
    pub data: Option<Box<RawValue>>,
    pub reference: Option<String>,
}

impl PartialEq for SignalRequest {
    fn eq(&self, other: &Self) -> bool {
        let raw = |p: &Option<Box<RawValue>>| p.as_ref().map(|r| r.get().to_string());
        self.to == other.to
            && self.call == other.call
            && self.name == other.name
            && raw(&self.data) == raw(&other.data)
            && self.reference == other.reference
    }
}

/// One text frame from a client: a plain message or a signed envelope (§9).
#[derive(Debug)]
pub enum Incoming {
    Plain(ClientMessage),
    Signed(Envelope),
}

/// A frame that is not a client message: the text goes back to the client
/// in an `error` (`bad-request`), so it describes the shape and never
/// echoes the content; `reference` is the `ref` of a `send`, echoed.
#[derive(Debug, Clone, PartialEq)]
pub struct BadMessage {
    pub message: String,
    pub reference: Option<String>,
    /// The frame is not a JSON object: not JSON at all, or JSON of another
    /// kind (a signed envelope's inner text must be an object, else
    /// `bad-signature`, contract §9).
    pub not_an_object: bool,
}

impl BadMessage {
    /// A frame refused before parsing (binary, not UTF-8).
    pub fn plain(message: impl Into<String>) -> Self {
        BadMessage::new(message)
    }

    fn new(message: impl Into<String>) -> Self {
        BadMessage {
            message: message.into(),
            reference: None,
            not_an_object: false,
        }
    }
}

/// The top-level members of a frame, values unparsed.
type Members<'a> = HashMap<String, &'a RawValue>;

impl Incoming {
    /// Parse one text frame.
    pub fn parse(text: &str) -> Result<Incoming, BadMessage> {
        let members: Members = serde_json::from_str(text).map_err(|_| {
            let message = if serde_json::from_str::<IgnoredAny>(text).is_ok() {
                "message is not a JSON object"
            } else {
                "message is not JSON"
            };
            BadMessage {
                not_an_object: true,
                ..BadMessage::new(message)
            }
        })?;
        let ty = match members.get("type") {
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                Ok(t) => t,
                Err(_) => return Err(BadMessage::new("`type` must be a string")),
            },
            None if members.contains_key("signed") => {
                return envelope(&members).map(Incoming::Signed)
            }
            None => return Err(BadMessage::new("message has no `type`")),
        };
        let plain = match ty.as_str() {
            "send" => ClientMessage::Send(send_request(&members)?),
            "call-action" => ClientMessage::CallAction(call_action(&members)?),
            "signal" => ClientMessage::Signal(signal(&members)?),
            "ping" | "auth" | "resume" | "status" => simple(text, &ty)?,
            _ => {
                return Err(BadMessage::new(format!(
                    "unknown type `{}`; expected ping, auth, resume, status, send, \
                     call-action or signal",
                    ty.chars().take(32).collect::<String>()
                )))
            }
        };
        Ok(Incoming::Plain(plain))
    }
}

impl ClientMessage {
    /// Parse a plain client message (a signed envelope is a `bad-request` here).
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        match Incoming::parse(text) {
            Ok(Incoming::Plain(m)) => Ok(m),
            Ok(Incoming::Signed(_)) => Err("a signed envelope is not allowed here".into()),
            Err(bad) => Err(bad.message),
        }
    }
}

fn simple(text: &str, ty: &str) -> Result<ClientMessage, BadMessage> {
    // serde's messages quote the offending value (maybe a token): say what
    // shape was expected instead.
    let parsed: Simple = serde_json::from_str(text).map_err(|_| {
        let shape = match ty {
            "ping" => r#"{"type":"ping","data":{}}"#,
            "auth" => r#"{"type":"auth","token":"<JWT>"}"#,
            "resume" => r#"{"type":"resume","since":<seq, 0 or more>}"#,
            _ => r#"{"type":"status","status":"available"|"away"|"busy"}"#,
        };
        BadMessage::new(format!("bad `{ty}` message; expected {shape}"))
    })?;
    Ok(match parsed {
        Simple::Ping { .. } => ClientMessage::Ping,
        Simple::Auth { token } => ClientMessage::Auth { token },
        Simple::Resume { since } => ClientMessage::Resume { since },
        Simple::Status { status } => ClientMessage::Status { status },
    })
}

/// A member that must be a string when present (`null` counts as absent).
fn opt_string(m: &Members, key: &str) -> Result<Option<String>, ()> {
    match m.get(key) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<String>>(raw.get()).map_err(|_| ()),
    }
}

fn send_request(m: &Members) -> Result<SendRequest, BadMessage> {
    let reference = opt_string(m, "ref").map_err(|_| BadMessage::new("`ref` must be a string"))?;
    let bad = |what: &str| BadMessage {
        reference: reference.clone(),
        ..BadMessage::new(format!("`{what}` must be a string"))
    };
    let to = opt_string(m, "to").map_err(|_| bad("to"))?;
    let call = opt_string(m, "call").map_err(|_| bad("call"))?;
    let payload = m.get("payload").map(|raw| (*raw).to_owned());
    Ok(SendRequest {
        to,
        call,
        payload,
        reference,
    })
}

fn call_action(m: &Members) -> Result<CallActionRequest, BadMessage> {
    let reference = opt_string(m, "ref").map_err(|_| BadMessage::new("`ref` must be a string"))?;
    let bad = |what: &str| BadMessage {
        reference: reference.clone(),
        ..BadMessage::new(format!("`{what}` must be a string"))
    };
    let action = opt_string(m, "action").map_err(|_| bad("action"))?;
    let call = opt_string(m, "call").map_err(|_| bad("call"))?;
    let params = match m.get("params") {
        None => None,
        Some(raw) => serde_json::from_str::<Value>(raw.get())
            .ok()
            .filter(|v| !v.is_null()),
    };
    Ok(CallActionRequest {
        action,
        call,
        params,
        reference,
    })
}

fn signal(m: &Members) -> Result<SignalRequest, BadMessage> {
    let reference = opt_string(m, "ref").map_err(|_| BadMessage::new("`ref` must be a string"))?;
    let bad = |what: &str| BadMessage {
        reference: reference.clone(),
        ..BadMessage::new(format!("`{what}` must be a string"))
    };
    Ok(SignalRequest {
        to: opt_string(m, "to").map_err(|_| bad("to"))?,
        call: opt_string(m, "call").map_err(|_| bad("call"))?,
        name: opt_string(m, "name").map_err(|_| bad("name"))?,
        data: m.get("data").map(|raw| (*raw).to_owned()),
        reference,
    })
}

const ENVELOPE_SHAPE: &str = r#"expected {"signed":"<message JSON text>","timestamp":<ms>,"nonce":"<base64>","signature":"<base64>"}"#;

fn envelope(m: &Members) -> Result<Envelope, BadMessage> {
    let field = |key: &str| m.get(key).map(|raw| raw.get());
    let string = |key: &str| field(key).and_then(|t| serde_json::from_str::<String>(t).ok());
    let timestamp = field("timestamp").and_then(|t| serde_json::from_str::<i64>(t).ok());
    match (
        string("signed"),
        timestamp,
        string("nonce"),
        string("signature"),
    ) {
        (Some(signed), Some(timestamp), Some(nonce), Some(signature)) => Ok(Envelope {
            signed,
            timestamp,
            nonce,
            signature,
        }),
        _ => Err(BadMessage::new(format!(
            "bad signed envelope; {ENVELOPE_SHAPE}"
        ))),
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
    /// Contract §9: absent when signing is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningInfo>,
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
    /// A `send` was stored (contract §8), to the sending connection.
    Sent {
        #[serde(rename = "ref")]
        reference: Option<String>,
        id: String,
        recipients: Vec<String>,
    },
    Error {
        code: String,
        message: String,
        /// The `ref` of the `send` (or signed message) this answers:
        /// `Some(None)` is written as `"ref":null`; `None` leaves it out.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<Option<String>>,
        /// A `telnyx-rejected` call action: Telnyx's status and `errors`.
        #[serde(skip_serializing_if = "Option::is_none")]
        telnyx: Option<Value>,
    },
    /// A call action's outcome (contract §14), to the asking connection.
    CallActionResult {
        #[serde(rename = "ref")]
        reference: Option<String>,
        action: String,
        call: Option<String>,
        result: Value,
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

    /// An `error` answering a message with this `ref`.
    pub fn error_for(code: &str, message: impl Into<String>, reference: Option<String>) -> Self {
        ServerMessage::Error {
            code: code.into(),
            message: message.into(),
            reference: Some(reference),
            telnyx: None,
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
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","data":{}}"#).unwrap(),
            ClientMessage::Ping
        );
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

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any text parses to a message or a bad-request, never a panic.
            #[test]
            fn any_text_parses_or_is_refused(text in any::<String>()) {
                let _ = Incoming::parse(&text);
            }

            /// JSON-shaped frames with the fields a client may send, in any
            /// types: never a panic, and a `send` keeps its payload text.
            #[test]
            fn json_frames_parse_or_are_refused(
                ty in prop::sample::select(vec!["send", "ping", "auth", "status", "resume", "x"]),
                to in prop::option::of("[a-z]{0,4}|5|null|\\[\\]"),
                payload in "\\{\\}|\\[1,2\\]|\"a\"|1e999|-0|null|true",
                signed in prop::option::of(".{0,20}"),
            ) {
                let mut frame = format!(r#"{{"type":"{ty}","payload":{payload}"#);
                if let Some(to) = &to {
                    let to = if to.chars().all(|c| c.is_ascii_lowercase()) { format!("\"{to}\"") } else { to.clone() };
                    frame.push_str(&format!(r#","to":{to}"#));
                }
                if let Some(signed) = signed {
                    frame.push_str(&format!(r#","signed":{}"#, serde_json::to_string(&signed).unwrap()));
                }
                frame.push('}');
                if let Ok(Incoming::Plain(ClientMessage::Send(req))) = Incoming::parse(&frame) {
                    let got = req.payload.expect("payload present").get().to_string();
                    prop_assert_eq!(got, payload);
                }
            }
        }
    }
}
