//! `--actions`: the Telnyx API stand-in's second resource, Call Control
//! commands (`POST /v2/calls/{call_control_id}/actions/{action}`), served
//! by [`telnyx_log::serve`](crate::telnyx_log::serve) beside the delivery
//! log. Every command is answered `{"data":{"result":"ok"}}`, as Telnyx
//! answers one it accepted, after the same bearer check (401 `10009`); a
//! body that is not a JSON object with a `command_id` is a 422 `10015`, so
//! a daemon that stopped sending one shows.
//!
//! For each answered command the stand-in keeps, by `command_id`, the
//! instant the request arrived (hyper called the service: its head was
//! read) and the instant its answer was handed back to hyper: the load
//! generator's clients run in this process, so both are on their clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use http_body_util::BodyExt as _;
use hyper::{Method, Request};
use serde_json::{json, Value};

use crate::telnyx_log::percent_decode;

/// When one command reached the stand-in and when its answer left it.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub arrived: Instant,
    pub answered: Instant,
}

/// The commands answered, by `command_id`.
#[derive(Default)]
pub struct Commands {
    by_id: Mutex<HashMap<String, Answered>>,
}

impl Commands {
    pub fn record(&self, command_id: String, at: Answered) {
        self.by_id.lock().unwrap().insert(command_id, at);
    }

    /// The command `command_id`'s instants, once answered.
    pub fn get(&self, command_id: &str) -> Option<Answered> {
        self.by_id.lock().unwrap().get(command_id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap().len()
    }
}

/// `(call_control_id, action)` of a Call Control command's path.
pub fn command_path(method: &Method, path: &str) -> Option<(String, String)> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/v2/calls/")?;
    let (call, action) = rest.split_once("/actions/")?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(call) && ok(action)).then(|| (percent_decode(call), percent_decode(action)))
}

/// Status, body and (when answered 200) the `command_id` of one command
/// whose bearer was checked already: reads the request's body.
pub async fn answer(req: Request<hyper::body::Incoming>) -> (u16, String, Option<String>) {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return (400, error("10015", &format!("unreadable body: {e}")), None),
    };
    let command_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("command_id")?.as_str().map(str::to_string));
    match command_id {
        Some(id) => (200, json!({"data": {"result": "ok"}}).to_string(), Some(id)),
        None => (
            422,
            error("10015", "the body must be a JSON object with a command_id"),
            None,
        ),
    }
}

fn error(code: &str, detail: &str) -> String {
    json!({"errors": [{"code": code, "title": "Invalid parameter", "detail": detail}]}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_paths() {
        assert_eq!(
            command_path(&Method::POST, "/v2/calls/v3:abc%2Fx/actions/send_dtmf"),
            Some(("v3:abc/x".into(), "send_dtmf".into()))
        );
        assert_eq!(command_path(&Method::GET, "/v2/calls/v3:a/actions/x"), None);
        assert_eq!(command_path(&Method::POST, "/v2/calls/v3:a/actions/"), None);
        assert_eq!(command_path(&Method::POST, "/v2/calls"), None);
        assert_eq!(command_path(&Method::POST, "/v2/calls/a/b/actions/x"), None);
    }
}
