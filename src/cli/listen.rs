//! `callbridge listen --url wss://… --token T …`: a command-line dialer. It
//! connects, authenticates, and prints each server message as one JSON
//! line; with `--send-to`/`--call` it sends each stdin line as a message.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{CliError, CliResult};

/// A command-line dialer: connect, authenticate, print each message as one JSON line.
#[derive(clap::Args, Debug)]
pub struct Listen {
    /// wss://host:port/ws
    #[arg(long)]
    url: String,
    #[arg(long)]
    token: String,
    /// PEM CA file to trust (besides the public web roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Resume after this seq.
    #[arg(long)]
    since: Option<u64>,
    /// Send each line typed on stdin to this user, as `payload` text (§8).
    #[arg(long, value_name = "USER", conflicts_with = "call")]
    send_to: Option<String>,
    /// Send each line typed on stdin to everyone on this call (§8); with
    /// `--action`, the call to act on (its callControlId).
    #[arg(long, value_name = "ID")]
    call: Option<String>,
    /// Once connected, act on `--call` (answer, hangup, transfer,
    /// send_dtmf, …) or `dial`, and print the `call-action-result` (§14).
    #[arg(long, value_name = "ACTION", conflicts_with = "send_to")]
    action: Option<String>,
    /// The action's params, a JSON object in Telnyx's names, e.g.
    /// '{"to":"+15551230002"}' for dial or '{"digits":"1"}' for send_dtmf.
    #[arg(long, value_name = "JSON", requires = "action")]
    params: Option<String>,
    /// Sign what is sent (HMAC-SHA256, §9).
    #[arg(long)]
    sign: bool,
}

impl Listen {
    pub async fn run(self) -> CliResult {
        let action = self.action_message()?;
        let lines_to = match (self.send_to, self.call, &action) {
            (Some(u), _, _) => Some(("to", u)),
            (None, Some(c), None) => Some(("call", c)),
            _ => None,
        };
        let outgoing = (lines_to.is_some() || action.is_some()).then(|| Outgoing {
            lines_to,
            action,
            sign: self.sign,
            token: self.token.clone(),
            user: None,
            sent: 0,
        });
        listen(
            &self.url,
            &self.token,
            self.ca.as_deref(),
            self.since,
            outgoing,
        )
        .await
    }
}

impl Listen {
    /// `--action` as the `call-action` message to send once connected.
    fn action_message(&self) -> Result<Option<Value>, CliError> {
        let Some(action) = &self.action else {
            return Ok(None);
        };
        let params = match &self.params {
            None => json!({}),
            Some(p) => match serde_json::from_str::<Value>(p) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err(CliError::usage("--params must be a JSON object")),
            },
        };
        if action != crate::actions::DIAL && self.call.is_none() {
            return Err(CliError::usage(format!(
                "--action {action} needs --call ID"
            )));
        }
        let mut msg =
            json!({"type": "call-action", "action": action, "params": params, "ref": "action-1"});
        if let Some(call) = &self.call {
            msg["call"] = json!(call);
        }
        Ok(Some(msg))
    }
}

/// What `listen` sends: each stdin line as a `send` payload (§8), and a
/// call action once (§14), signed when asked (§9). Both wait until
/// `connected` has named the user (the signing key needs the user id).
struct Outgoing {
    /// Where stdin lines go: (`"to"` or `"call"`, its value).
    lines_to: Option<(&'static str, String)>,
    /// `--action`'s message, until sent.
    action: Option<Value>,
    sign: bool,
    token: String,
    /// From `connected.data.userId`.
    user: Option<String>,
    sent: u64,
}

impl Outgoing {
    fn frame(&mut self, line: &str) -> String {
        self.sent += 1;
        let mut msg =
            json!({"type": "send", "payload": line, "ref": format!("line-{}", self.sent)});
        if let Some((key, value)) = &self.lines_to {
            msg[*key] = json!(value);
        }
        self.wrap(msg.to_string())
    }

    /// The call action, once the user is known; then never again.
    fn take_action(&mut self) -> Option<String> {
        self.user.as_ref()?;
        let msg = self.action.take()?;
        Some(self.wrap(msg.to_string()))
    }

    /// Signed (§9) when asked and the user is known.
    fn wrap(&self, inner: String) -> String {
        match (&self.user, self.sign) {
            (Some(user), true) => {
                crate::signing::envelope_json(&self.token, user, &inner, crate::clock::now_ms())
            }
            _ => inner,
        }
    }

    /// Learn the user id from `connected`.
    fn observe(&mut self, text: &str) {
        if self.user.is_some() {
            return;
        }
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            if v["event"] == "connected" {
                self.user = v["data"]["userId"].as_str().map(str::to_string);
            }
        }
    }
}

async fn listen(
    url: &str,
    token: &str,
    ca: Option<&Path>,
    since: Option<u64>,
    mut outgoing: Option<Outgoing>,
) -> CliResult {
    use futures_util::SinkExt;
    use tokio::io::AsyncBufReadExt;
    let ca_err = |e: &dyn std::fmt::Display| CliError::usage(format!("--ca: {e}"));
    let ca_pem = ca.map(std::fs::read).transpose().map_err(|e| ca_err(&e))?;
    let tls = crate::tls::client_config(ca_pem.as_deref()).map_err(|e| ca_err(&e))?;
    let url = match since {
        Some(s) if url.contains('?') => format!("{url}&since={s}"),
        Some(s) => format!("{url}?since={s}"),
        None => url.to_string(),
    };
    let bearer = format!("Bearer {token}");
    let (mut ws, _) = crate::client::ws_connect(&url, &[("authorization", bearer.as_str())], tls)
        .await
        .map_err(|e| CliError::runtime(format!("{url}: {e}")))?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = outgoing.as_ref().is_some_and(|o| o.lines_to.is_some());
    loop {
        if let Some(frame) = outgoing.as_mut().and_then(Outgoing::take_action) {
            ws.send(Message::Text(frame.into()))
                .await
                .map_err(CliError::runtime)?;
        }
        let ready = outgoing.as_ref().is_some_and(|o| o.user.is_some());
        tokio::select! {
            msg = ws.next() => {
                let Some(msg) = msg else { break };
                if let Some(end) = print_server_message(msg.map_err(CliError::runtime)?, outgoing.as_mut()) {
                    return end;
                }
            }
            line = lines.next_line(), if stdin_open && ready => match line {
                Ok(Some(line)) if !line.trim().is_empty() => {
                    let frame = outgoing.as_mut().expect("ready").frame(&line);
                    ws.send(Message::Text(frame.into())).await.map_err(CliError::runtime)?;
                }
                Ok(Some(_)) => {}
                // End of input: keep listening.
                Ok(None) | Err(_) => stdin_open = false,
            },
        }
    }
    Err(CliError::Closed("connection ended".into()))
}

/// Print one server message; `Some` when the connection ended.
fn print_server_message(msg: Message, outgoing: Option<&mut Outgoing>) -> Option<CliResult> {
    match msg {
        Message::Text(t) => {
            if let Some(o) = outgoing {
                o.observe(t.as_str());
            }
            println!("{}", t.as_str());
            None
        }
        Message::Close(frame) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((crate::protocol::close::NO_STATUS, String::new()));
            let closed = CliError::Closed(format!("{code} {reason}"));
            if code != crate::protocol::close::NORMAL {
                return Some(Err(closed));
            }
            // A normal close is the end of the session, not a failure.
            closed.report();
            Some(Ok(()))
        }
        _ => None,
    }
}
