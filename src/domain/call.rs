//! Call legs: what an event tells about its call, the per-leg record every
//! backend keeps, and the rules that move its state (Telnyx delivers late
//! and twice: state follows `occurred_at`, and a hangup is final).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    Ringing,
    Answered,
    Bridged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveCall {
    pub call_control_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub state: CallState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

/// How an event changes the state of its call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Initiated,
    Answered,
    Bridged,
    Hangup,
    /// Any other call event: binds the call, changes no state.
    None,
}

/// The call-related part of an event, as the store needs it.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    pub call_control_id: Option<String>,
    pub call_session_id: Option<String>,
    pub direction: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub start_time: Option<String>,
}

impl CallInfo {
    /// Keys the call is bound under: session first (it groups the legs of a
    /// transfer), then the leg's control id.
    pub fn binding_keys(&self) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if let Some(s) = &self.call_session_id {
            keys.push(session_key(s));
        }
        if let Some(c) = &self.call_control_id {
            keys.push(control_key(c));
        }
        keys
    }
}

/// The binding key of a call by its `call_session_id`.
pub fn session_key(id: &str) -> String {
    format!("s:{id}")
}

/// The binding key of a call leg by its `call_control_id`.
pub fn control_key(id: &str) -> String {
    format!("c:{id}")
}

/// What one event says about its call leg: the part of a stored webhook
/// (`Ingest::leg_event`) that the leg's state follows.
#[derive(Debug, Clone, Copy)]
pub struct LegEvent<'a> {
    pub call: &'a CallInfo,
    /// The normalized event name (`call-answered`): the leg's timeline.
    pub event: &'a str,
    pub transition: Transition,
    /// `occurred_at` in ms: orders state changes.
    pub occurred_ms: i64,
    /// `occurred_at` as RFC 3339: fills `startedAt` / `answeredAt`.
    pub ts: &'a str,
    /// The users the event was routed to (the leg's users when not empty).
    pub targets: &'a [String],
}

/// Per-leg call record, kept by every backend in this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub call_control_id: String,
    #[serde(default)]
    pub call_session_id: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub state: Option<CallState>,
    /// `occurred_at` (ms) of the event that set `state`.
    #[serde(default)]
    pub state_ms: i64,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub answered_at: Option<String>,
    #[serde(default)]
    pub ended: bool,
    #[serde(default)]
    pub ended_ms: Option<i64>,
    /// The leg's events in `occurred_at` order, the last [`MAX_TIMELINE`]
    /// (the console's call timeline). A record written before timelines
    /// existed reads as an empty one.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

/// A call leg's timeline keeps this many events: a long call's DTMF keys
/// and recordings do not grow its record (about 60 bytes each) without end.
pub const MAX_TIMELINE: usize = 50;

/// One event on a leg's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// Normalized event name (`call-answered`).
    pub event: String,
    /// `occurred_at` as RFC 3339.
    pub ts: String,
    /// `occurred_at` in ms: the order of the timeline.
    pub ms: i64,
}

impl CallRecord {
    pub fn new(control_id: &str) -> Self {
        CallRecord {
            call_control_id: control_id.to_string(),
            call_session_id: None,
            users: Vec::new(),
            direction: None,
            from: None,
            to: None,
            state: None,
            state_ms: i64::MIN,
            started_at: None,
            answered_at: None,
            ended: false,
            ended_ms: None,
            timeline: Vec::new(),
        }
    }

    /// Put the event on the timeline in `occurred_at` order (a late event
    /// goes where it happened, after events of the same instant), keeping
    /// the last [`MAX_TIMELINE`].
    fn record_timeline(&mut self, ev: &LegEvent<'_>) {
        let at = self.timeline.partition_point(|e| e.ms <= ev.occurred_ms);
        self.timeline.insert(
            at,
            TimelineEntry {
                event: ev.event.to_string(),
                ts: ev.ts.to_string(),
                ms: ev.occurred_ms,
            },
        );
        if self.timeline.len() > MAX_TIMELINE {
            let extra = self.timeline.len() - MAX_TIMELINE;
            self.timeline.drain(..extra);
        }
    }

    /// Apply one event to the leg. Telnyx delivers late and twice, so state
    /// moves only with `occurred_at` order and a hangup is final: nothing
    /// after it, however it is dated, revives the call.
    pub fn apply(&mut self, ev: LegEvent<'_>) {
        let call = ev.call;
        self.record_timeline(&ev);
        if !ev.targets.is_empty() {
            self.users = ev.targets.to_vec();
        }
        fill(&mut self.call_session_id, &call.call_session_id);
        fill(&mut self.direction, &call.direction);
        fill(&mut self.from, &call.from);
        fill(&mut self.to, &call.to);
        if self.ended {
            return;
        }
        let newer = ev.occurred_ms >= self.state_ms;
        let next = match ev.transition {
            Transition::None => return,
            Transition::Hangup => {
                self.ended = true;
                self.ended_ms = Some(ev.occurred_ms);
                self.state = None;
                return;
            }
            Transition::Initiated => CallState::Ringing,
            Transition::Answered => CallState::Answered,
            Transition::Bridged => CallState::Bridged,
        };
        if self.started_at.is_none() {
            self.started_at = call
                .start_time
                .clone()
                .or_else(|| (ev.transition == Transition::Initiated).then(|| ev.ts.to_string()));
        }
        if next == CallState::Answered && self.answered_at.is_none() {
            self.answered_at = Some(ev.ts.to_string());
        }
        // A late event (older than the state we hold) fills blanks only.
        if newer || self.state.is_none() {
            self.state = Some(next);
            self.state_ms = self.state_ms.max(ev.occurred_ms);
        }
    }

    pub fn active_call(&self) -> Option<ActiveCall> {
        if self.ended {
            return None;
        }
        Some(ActiveCall {
            call_control_id: self.call_control_id.clone(),
            call_session_id: self.call_session_id.clone(),
            direction: self.direction.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            state: self.state?,
            started_at: self.started_at.clone(),
            answered_at: self.answered_at.clone(),
        })
    }
}

/// Oldest call first (the order `snapshot` and the admin API show).
pub fn sort_active_calls(calls: &mut [ActiveCall]) {
    calls.sort_by(|a, b| {
        (a.started_at.as_deref(), &a.call_control_id)
            .cmp(&(b.started_at.as_deref(), &b.call_control_id))
    });
}

fn fill(slot: &mut Option<String>, value: &Option<String>) {
    if slot.is_none() {
        slot.clone_from(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339_ms;

    const TARGETS: &[String] = &[];

    /// Apply one event of the given transition at `ms` to `r`.
    fn at(r: &mut CallRecord, t: Transition, ms: i64) {
        named(r, t, ms, &format!("{t:?}"));
    }

    fn named(r: &mut CallRecord, t: Transition, ms: i64, event: &str) {
        let call = CallInfo {
            call_control_id: Some("cc".into()),
            ..Default::default()
        };
        let ts = rfc3339_ms(ms);
        r.apply(LegEvent {
            call: &call,
            event,
            transition: t,
            occurred_ms: ms,
            ts: &ts,
            targets: TARGETS,
        });
    }

    #[test]
    fn hangup_is_final() {
        let mut r = CallRecord::new("cc");
        at(&mut r, Transition::Initiated, 1000);
        assert_eq!(r.active_call().unwrap().state, CallState::Ringing);
        at(&mut r, Transition::Hangup, 3000);
        assert!(r.active_call().is_none());
        at(&mut r, Transition::Answered, 2000);
        assert!(r.active_call().is_none());
        at(&mut r, Transition::Initiated, 4000);
        assert!(r.active_call().is_none());
    }

    #[test]
    fn late_events_do_not_regress_state() {
        let mut r = CallRecord::new("cc");
        at(&mut r, Transition::Bridged, 3000);
        at(&mut r, Transition::Answered, 2000);
        at(&mut r, Transition::Initiated, 1000);
        let a = r.active_call().unwrap();
        assert_eq!(a.state, CallState::Bridged);
        assert_eq!(a.started_at.as_deref(), Some(rfc3339_ms(1000).as_str()));
        assert_eq!(a.answered_at.as_deref(), Some(rfc3339_ms(2000).as_str()));
    }

    #[test]
    fn timeline_in_occurred_order_bounded() {
        let mut r = CallRecord::new("cc");
        at(&mut r, Transition::Initiated, 1000);
        at(&mut r, Transition::Bridged, 3000);
        // Late: goes where it happened.
        at(&mut r, Transition::Answered, 2000);
        at(&mut r, Transition::Hangup, 4000);
        let events: Vec<&str> = r.timeline.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["Initiated", "Answered", "Bridged", "Hangup"]);
        assert_eq!(r.timeline[1].ts, rfc3339_ms(2000));
        // A long call keeps its last MAX_TIMELINE events.
        let mut r = CallRecord::new("cc");
        for i in 0..(MAX_TIMELINE as i64 + 10) {
            named(&mut r, Transition::None, 10_000 + i, &format!("dtmf-{i}"));
        }
        assert_eq!(r.timeline.len(), MAX_TIMELINE);
        assert_eq!(r.timeline[0].event, "dtmf-10");
        assert_eq!(
            r.timeline.last().unwrap().event,
            format!("dtmf-{}", MAX_TIMELINE + 9)
        );
        // Serialized with the record (both backends store it so).
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["timeline"][0]["event"], "dtmf-10");
        let back: CallRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        // A record from before timelines existed.
        let old: CallRecord =
            serde_json::from_value(serde_json::json!({"callControlId": "x"})).unwrap();
        assert!(old.timeline.is_empty());
    }
}
