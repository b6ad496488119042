//! Outbound webhook endpoints and their deliveries (contract §10), and the
//! rules every backend shares: which endpoints an event goes to, what an
//! attempt's outcome does to a delivery.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An endpoint of the team's backend that gets every matching event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// Event names (`call-hangup`, `message`), or `*` for all.
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub disabled: bool,
    /// `whsec_<base64 of 32 random bytes>`: never logged, answered only on
    /// create and by `GET …/secret`.
    pub secret: String,
    pub created_at: String,
}

impl Endpoint {
    /// Whether an event named `event` is sent to this endpoint now.
    pub fn wants(&self, event: &str) -> bool {
        !self.disabled && self.events.iter().any(|e| e == "*" || e == event)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One event for one endpoint: a message in Standard Webhooks' terms, sent
/// until an attempt succeeds or the retry schedule is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `{endpoint id}:{message id}`: enqueuing an event twice (a Telnyx
    /// retry after a lost answer) stores it once.
    pub id: String,
    pub endpoint_id: String,
    /// `webhook-id`: the Telnyx event id, or the §8 message id; the same
    /// on every attempt.
    pub message_id: String,
    pub event: String,
    /// `{"type","timestamp","data"}` as JSON text, built once.
    pub body: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due (ms since the epoch); meaningless once done.
    pub next_attempt_ms: i64,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
}

impl Delivery {
    pub fn new(
        endpoint_id: &str,
        message_id: &str,
        event: &str,
        body: String,
        now_ms: i64,
    ) -> Self {
        Delivery {
            id: format!("{endpoint_id}:{message_id}"),
            endpoint_id: endpoint_id.to_string(),
            message_id: message_id.to_string(),
            event: event.to_string(),
            body,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_status_code: None,
            last_error: None,
            created_ms: now_ms,
        }
    }
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The answer's status code, if one came.
    pub status_code: Option<u16>,
    /// Why it failed (no answer, timeout, a non-2xx code); `None` on success.
    pub error: Option<String>,
}

impl Attempt {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// The delivery's state after an attempt, by the retry schedule: attempt n
/// (1-based) that fails is retried after `schedule[n - 1]`; past the end
/// of the schedule the delivery is `failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
}

pub fn after_attempt(
    d: &Delivery,
    attempt: &Attempt,
    schedule: &[Duration],
    now_ms: i64,
) -> AttemptResult {
    let attempts = d.attempts + 1;
    let (status, next) = if attempt.succeeded() {
        (DeliveryStatus::Delivered, now_ms)
    } else {
        match schedule.get(d.attempts as usize) {
            Some(delay) => (DeliveryStatus::Pending, now_ms + delay.as_millis() as i64),
            None => (DeliveryStatus::Failed, now_ms),
        }
    };
    AttemptResult {
        status,
        attempts,
        next_attempt_ms: next,
        last_status_code: attempt.status_code,
        last_error: attempt.error.clone(),
    }
}

/// Per endpoint: messages by their state (contract §10 `stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_then_failed() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        let mut d = Delivery::new("ep", "ev1", "call-hangup", "{}".into(), 0);
        let fail = Attempt {
            status_code: Some(500),
            error: Some("HTTP 500".into()),
        };
        let r = after_attempt(&d, &fail, &schedule, 1_000);
        assert_eq!(
            (r.status, r.attempts, r.next_attempt_ms),
            (DeliveryStatus::Pending, 1, 6_000)
        );
        d.attempts = r.attempts;
        let r = after_attempt(&d, &fail, &schedule, 6_000);
        assert_eq!(
            (r.status, r.attempts, r.next_attempt_ms),
            (DeliveryStatus::Pending, 2, 306_000)
        );
        d.attempts = r.attempts;
        let r = after_attempt(&d, &fail, &schedule, 306_000);
        assert_eq!((r.status, r.attempts), (DeliveryStatus::Failed, 3));
        let ok = Attempt {
            status_code: Some(204),
            error: None,
        };
        assert_eq!(
            after_attempt(&d, &ok, &schedule, 9).status,
            DeliveryStatus::Delivered
        );
    }

    #[test]
    fn filters() {
        let mut ep = Endpoint {
            id: "e".into(),
            url: "https://x".into(),
            events: vec!["call-hangup".into()],
            description: String::new(),
            disabled: false,
            secret: "whsec_x".into(),
            created_at: String::new(),
        };
        assert!(ep.wants("call-hangup"));
        assert!(!ep.wants("call-answered"));
        ep.events = vec!["*".into()];
        assert!(ep.wants("message"));
        ep.disabled = true;
        assert!(!ep.wants("message"));
    }
}
