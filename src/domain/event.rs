//! Events as stored per user, what one verified webhook writes, and the
//! history rules every backend shares.

use std::sync::Arc;

use serde_json::Value;

use super::call::{CallInfo, LegEvent, Transition};

/// One event as stored once, whatever the number of its users: what Telnyx
/// said, with `data` serialized to JSON text once, at ingest. Every user's
/// frame is built from these bytes and that user's `seq`
/// ([`crate::protocol::event_frame`]); `data` is never serialized again, and
/// a broadcast to 200 users stores and holds one body, not 200 copies.
#[derive(Debug, PartialEq, Eq)]
pub struct EventBody {
    /// Telnyx event id.
    pub id: String,
    /// Normalized event name (`call-answered`).
    pub event: String,
    /// `occurred_at` as RFC 3339.
    pub ts: String,
    /// The normalized `data` object as JSON text.
    pub data_json: String,
}

impl EventBody {
    /// Serialize `data` once.
    pub fn new(id: String, event: String, ts: String, data: &Value) -> Self {
        EventBody {
            id,
            event,
            ts,
            data_json: serde_json::to_string(data).expect("JSON values always serialize"),
        }
    }

    /// `data` as a JSON value (parsed anew: for tools and tests, not the
    /// delivery path).
    pub fn data(&self) -> Value {
        serde_json::from_str(&self.data_json).unwrap_or(Value::Null)
    }
}

/// One event as one user has it: that user's `seq`, pointing at the body
/// every target user shares.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub user_id: String,
    pub seq: u64,
    pub body: Arc<EventBody>,
}

/// Everything one verified webhook writes.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// The event, stored once for all of `targets`.
    pub body: Arc<EventBody>,
    /// `occurred_at` in ms since the epoch; orders state transitions.
    pub occurred_ms: i64,
    pub targets: Vec<String>,
    pub call: CallInfo,
    pub transition: Transition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// Stored: one entry per target user, each with its `seq`, all sharing
    /// one body.
    Stored(Vec<StoredEvent>),
    /// This Telnyx event id was stored before; nothing was written.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    pub events: Vec<StoredEvent>,
    /// True when history no longer reaches back to `since + 1`.
    pub gap: bool,
}

impl Ingest {
    /// What this event says about its call leg.
    pub fn leg_event(&self) -> LegEvent<'_> {
        LegEvent {
            call: &self.call,
            event: &self.body.event,
            transition: self.transition,
            occurred_ms: self.occurred_ms,
            ts: &self.body.ts,
            targets: &self.targets,
        }
    }

    /// The event as `user` has it under that user's next `seq`: the body is
    /// shared, not copied.
    pub fn stored_for(&self, user: &str, seq: u64) -> StoredEvent {
        StoredEvent {
            user_id: user.to_string(),
            seq,
            body: self.body.clone(),
        }
    }
}

/// Whether a client resuming after `since` missed events that history no
/// longer holds: events after `since` were stored (`since < last_seq`), but
/// the oldest one still held is later than `since + 1`, or none is held.
pub fn history_gap(since: u64, last_seq: u64, oldest_held: Option<u64>) -> bool {
    since < last_seq && oldest_held.is_none_or(|o| o > since + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_rule() {
        // Nothing stored after `since`: never a gap.
        assert!(!history_gap(5, 5, Some(1)));
        assert!(!history_gap(7, 5, None));
        // The next event is still held.
        assert!(!history_gap(4, 9, Some(5)));
        assert!(!history_gap(0, 9, Some(1)));
        // Pruned past `since + 1`, or pruned entirely.
        assert!(history_gap(4, 9, Some(6)));
        assert!(history_gap(4, 9, None));
    }
}
