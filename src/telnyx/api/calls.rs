//! Call Control commands: `POST /calls/{call_control_id}/actions/{action}`
//! and `POST /calls` (dial). Bodies are Telnyx's snake_case JSON as the
//! caller built it (`command_id` included); the answer's `data` comes back
//! as sent. A 429 is not waited out: a dialer's click must not sit behind
//! a minute of backoff (it gets `telnyx-unavailable` and may retry).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use warp::http::Method;

use super::{Client, OnRateLimit, TelnyxError};

/// What acting on calls needs from Telnyx: the real API ([`Client`]), or
/// in `--dev` without a key the built-in stand-in (`crate::dev::telnyx`).
#[async_trait]
pub trait CallControl: Send + Sync {
    /// `POST /calls/{call_control_id}/actions/{action}` with `body`;
    /// Telnyx's `data` (`{"result":"ok"}`).
    async fn action(
        &self,
        call_control_id: &str,
        action: &str,
        body: &Value,
    ) -> Result<Value, TelnyxError>;

    /// `POST /calls` with `body` (`connection_id`, `to`, `from`,
    /// `client_state`, `command_id`, …); the new call's `data`
    /// (`call_control_id`, `call_leg_id`, `call_session_id`, …).
    async fn dial(&self, body: &Value) -> Result<Value, TelnyxError>;
}

/// `{"data": …}`, Telnyx's envelope of a command's answer.
#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    data: Value,
}

#[async_trait]
impl CallControl for Client {
    async fn action(
        &self,
        call_control_id: &str,
        action: &str,
        body: &Value,
    ) -> Result<Value, TelnyxError> {
        let path = format!(
            "/calls/{}/actions/{}",
            segment(call_control_id),
            segment(action)
        );
        let answer: Data = self
            .send(Method::POST, &path, Some(body), OnRateLimit::Fail)
            .await?;
        Ok(answer.data)
    }

    async fn dial(&self, body: &Value) -> Result<Value, TelnyxError> {
        let answer: Data = self
            .send(Method::POST, "/calls", Some(body), OnRateLimit::Fail)
            .await?;
        Ok(answer.data)
    }
}

/// Percent-encode a path segment as the official SDKs do (RFC 3986
/// `pchar`: unreserved, sub-delims, `:` and `@` stay): a `v3:…` control
/// id keeps its colon.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_keep_their_colon_and_nothing_escapes_the_segment() {
        assert_eq!(segment("v3:abc-DEF_1.2~"), "v3:abc-DEF_1.2~");
        assert_eq!(segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
    }
}
