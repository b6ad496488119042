//! Signals (contract §14): ephemeral notes between dialers ("the supervisor
//! is typing on this call"). A signal goes to the recipients' connections
//! and to the sender's other connections, on every instance, and nowhere
//! else: it is not stored, has no `seq`, is not replayed and not sent to
//! outbound endpoints. Who may signal whom is §8's rule for messages
//! ([`crate::messages::recipients`]); `data` is at most 1,024 bytes of JSON
//! text as sent, kept as the client wrote it.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::app::App;
use crate::domain::Control;
use crate::messages::{recipients, MessageError, Target};
use crate::protocol::SignalRequest;
use crate::store::bounded;

/// Contract §14: `data` is small.
pub const MAX_DATA_BYTES: usize = 1024;
/// A signal's name: a short word (`typing`, `note.started`).
const MAX_NAME: usize = 64;

#[derive(Serialize)]
struct SignalData<'a> {
    from: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<&'a str>,
    name: &'a str,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Frame<'a> {
    event: &'static str,
    data: SignalData<'a>,
    ts: String,
}

/// Check and fan out one signal of `sender` from connection `conn`;
/// returns the number of this instance's connections it was queued to.
pub async fn signal(
    app: &App,
    sender: &str,
    conn: &str,
    req: &SignalRequest,
) -> Result<usize, MessageError> {
    let target = match (&req.to, &req.call) {
        (Some(to), None) => Target::User(to.clone()),
        (None, Some(call)) => Target::Call(call.clone()),
        (Some(_), Some(_)) => {
            return Err(MessageError::BadRequest("give `to` or `call`, not both"))
        }
        (None, None) => return Err(MessageError::BadRequest("give `to` (a user) or `call`")),
    };
    let name = req
        .name
        .as_deref()
        .filter(|n| valid_name(n))
        .ok_or(MessageError::BadRequest(
            "`name` must be 1-64 letters, digits, - _ or .",
        ))?;
    let null = RawValue::from_string("null".into()).expect("null is JSON");
    let data = req.data.as_deref().unwrap_or(&null);
    if data.get().len() > MAX_DATA_BYTES {
        return Err(MessageError::TooLarge);
    }
    let mut users = recipients(app, sender, &target).await?;
    users.push(sender.to_string());
    let (to, call) = match &target {
        Target::User(u) => (Some(u.as_str()), None),
        Target::Call(c) => (None, Some(c.as_str())),
    };
    let frame = Frame {
        event: "signal",
        data: SignalData {
            from: sender,
            to,
            call,
            name,
            data,
        },
        ts: crate::clock::now_rfc3339(),
    };
    let frame = serde_json::to_string(&frame).expect("a signal always serializes");
    let control = Control::Broadcast {
        users: Some(users),
        frame,
        except_conn: Some(conn.to_string()),
    };
    let local = app.hub.apply_control(&control);
    // Other instances' connections of the same users get it through the
    // store's feed.
    bounded(
        app.config.store_timeout,
        app.store.publish_control(&control),
    )
    .await?;
    Ok(local)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
