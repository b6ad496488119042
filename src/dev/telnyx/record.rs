//! What the stand-in remembers of calls, bounded: the legs it dialled and
//! every call it was sent a command for, with what later commands and
//! webhooks depend on (ended, answered, a recording or a playback under
//! way, the queue, the other leg of a bridge, recent `command_id`s), and
//! Telnyx's refusals (`422 90018` on a call that ended, `422 10004` for a
//! missing parameter).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde_json::{json, Value};

use super::webhooks::LegInfo;
use crate::telnyx::api::TelnyxError;

/// Calls remembered: the last 1,000 the stand-in heard of (oldest first
/// out). A dev session handles a few calls a minute; 1,000 is hours of
/// them, at under 1 KB each. A call pushed out is a stranger again: its
/// commands are accepted, as for a `callbridge simulate` call.
pub const MAX_CALLS: usize = 1_000;
/// `command_id`s remembered per call. Telnyx ignores a repeat within 60 s;
/// a dialer repeats one ref after a timeout or a reconnect, so the last
/// 16 commands of a call cover every repeat in practice.
const MAX_COMMAND_IDS: usize = 16;

/// Something under way on a call whose end is a webhook of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Speak,
    Playback,
}

impl Media {
    /// The event that ends it.
    pub fn ended_event(self) -> &'static str {
        match self {
            Media::Speak => "call.speak.ended",
            Media::Playback => "call.playback.ended",
        }
    }
}

/// A recording started by `record_start` and not yet stopped.
#[derive(Debug, Clone)]
pub struct Recording {
    pub format: String,
    pub channels: String,
    pub started_at: String,
}

#[derive(Debug)]
pub struct Leg {
    pub info: LegInfo,
    pub ended: bool,
    pub answered: bool,
    pub recording: Option<Recording>,
    /// The speech or audio playing, with its generation: its completion
    /// is posted only if nothing stopped or replaced it meanwhile.
    pub media: Option<(Media, u64)>,
    /// The queue the call waits in, and since when (ms).
    pub queue: Option<(String, i64)>,
    /// The other leg of a bridge or transfer: it hangs up with this one.
    pub peer: Option<String>,
    /// When this leg's latest command's first webhook is due: the next
    /// command's webhooks come after it, so a quick `answer` then `hangup`
    /// arrive in that order.
    pub last_due: Option<Instant>,
    /// `(command_id, dial answer)` of the dial that created this leg.
    pub dial: Option<(String, Value)>,
    commands: VecDeque<String>,
}

impl Leg {
    pub fn new(info: LegInfo) -> Leg {
        Leg {
            info,
            ended: false,
            answered: false,
            recording: None,
            media: None,
            queue: None,
            peer: None,
            last_due: None,
            dial: None,
            commands: VecDeque::new(),
        }
    }

    /// Whether `command_id` was seen on this call.
    pub fn seen(&self, command_id: &str) -> bool {
        self.commands.iter().any(|c| c == command_id)
    }

    /// Remember `command_id` (the last [`MAX_COMMAND_IDS`]).
    pub fn remember(&mut self, command_id: &str) {
        if self.seen(command_id) {
            return;
        }
        if self.commands.len() == MAX_COMMAND_IDS {
            self.commands.pop_front();
        }
        self.commands.push_back(command_id.to_string());
    }
}

/// A condition a webhook is posted under, checked when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    Always,
    /// The leg has not ended.
    Live(String),
    /// The leg has not ended; it is answered from now on (a dialled leg
    /// picked up).
    Answer(String),
    /// This speech or playback is still the one under way; it ends now.
    Media(String, u64),
}

#[derive(Debug, Default)]
pub struct Calls {
    legs: HashMap<String, Leg>,
    /// Control ids, oldest first: who is pushed out past [`MAX_CALLS`].
    order: VecDeque<String>,
    generation: u64,
}

impl Calls {
    pub fn get(&self, call: &str) -> Option<&Leg> {
        self.legs.get(call)
    }

    pub fn get_mut(&mut self, call: &str) -> Option<&mut Leg> {
        self.legs.get_mut(call)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// The leg of `call`, remembered as a simulated call when new.
    pub fn touch(&mut self, call: &str) -> &mut Leg {
        if !self.legs.contains_key(call) {
            let info = LegInfo::simulated(call, crate::clock::now_rfc3339());
            self.insert(Leg::new(info));
        }
        self.legs.get_mut(call).expect("present")
    }

    /// Remember `leg`, forgetting the oldest call past [`MAX_CALLS`].
    pub fn insert(&mut self, leg: Leg) {
        let id = leg.info.call_control_id.clone();
        if self.legs.insert(id.clone(), leg).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_CALLS {
            if let Some(old) = self.order.pop_front() {
                self.legs.remove(&old);
            }
        }
    }

    /// The answer to an earlier dial with this `command_id`.
    pub fn dialled(&self, command_id: &str) -> Option<Value> {
        self.legs.values().find_map(|l| match &l.dial {
            Some((c, answer)) if c == command_id => Some(answer.clone()),
            _ => None,
        })
    }

    /// A fresh generation for a speech or playback.
    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Whether a webhook under `guard` is still to be posted (applying what
    /// it means: a dialled leg answered, a playback over).
    pub fn pass(&mut self, guard: &Guard) -> bool {
        match guard {
            Guard::Always => true,
            Guard::Live(call) => self.legs.get(call).is_some_and(|l| !l.ended),
            Guard::Answer(call) => match self.legs.get_mut(call) {
                Some(l) if !l.ended => {
                    l.answered = true;
                    true
                }
                _ => false,
            },
            Guard::Media(call, generation) => match self.legs.get_mut(call) {
                Some(l) if !l.ended && l.media.is_some_and(|(_, g)| g == *generation) => {
                    l.media = None;
                    true
                }
                _ => false,
            },
        }
    }
}

/// The body fields Telnyx requires (the SDK's `Required[…]` parameters of
/// the actions callbridge offers), as the tests' Telnyx stand-in checks
/// them; `dial`'s are checked by the dial itself.
pub fn required_fields(action: &str) -> &'static [&'static str] {
    match action {
        "bridge" => &["call_control_id"],
        "enqueue" => &["queue_name"],
        "record_start" => &["channels", "format"],
        "reject" => &["cause"],
        "send_dtmf" => &["digits"],
        "speak" => &["payload", "voice"],
        "transfer" => &["to"],
        _ => &[],
    }
}

/// The first required field of `action` that `body` lacks (absent, null
/// or empty text), as Telnyx's `422 10004`.
pub fn check_required(action: &str, body: &Value) -> Result<(), TelnyxError> {
    match required_fields(action)
        .iter()
        .find(|f| matches!(body.get(**f), None | Some(Value::Null)) || body[**f] == "")
    {
        Some(f) => Err(missing(f)),
        None => Ok(()),
    }
}

fn rejected(status: u16, code: &str, title: &str, detail: &str, pointer: &str) -> TelnyxError {
    TelnyxError::Rejected {
        status,
        errors: json!([{
            "code": code,
            "title": title,
            "detail": detail,
            "source": {"pointer": pointer},
        }]),
        summary: format!("{code} {title} {detail}"),
    }
}

/// `422 90018`: a command on a call that hung up.
pub fn call_ended() -> TelnyxError {
    rejected(
        422,
        "90018",
        "Call has already ended",
        "This call is no longer active and can't receive commands.",
        "/call_control_id",
    )
}

/// `422 10004`: a required parameter is missing.
pub fn missing(field: &str) -> TelnyxError {
    rejected(
        422,
        "10004",
        "Missing required parameter",
        &format!("The '{field}' parameter is required."),
        &format!("/{field}"),
    )
}

/// `404 10005`: no such action.
pub fn not_found() -> TelnyxError {
    rejected(
        404,
        "10005",
        "Resource not found",
        "The requested resource or URL could not be found.",
        "/",
    )
}

/// `429 10011`: more commands in flight than the stand-in keeps.
pub fn too_many() -> TelnyxError {
    TelnyxError::RateLimited {
        retry_after: std::time::Duration::from_secs(1),
        errors: json!([{
            "code": "10011",
            "title": "Too many requests",
            "detail": "You have exceeded the maximum number of allowed requests.",
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_the_last_calls() {
        let mut calls = Calls::default();
        for i in 0..MAX_CALLS + 5 {
            calls.touch(&format!("c{i}")).ended = true;
        }
        assert_eq!(calls.len(), MAX_CALLS);
        assert!(calls.get("c4").is_none(), "the oldest are forgotten");
        assert!(calls.get("c5").is_some_and(|l| l.ended));
        // A forgotten call is a stranger again: live.
        assert!(!calls.touch("c0").ended);
        assert_eq!(calls.len(), MAX_CALLS);
        assert!(calls.get("c5").is_none());
    }

    #[test]
    fn touching_a_known_call_keeps_what_it_knows() {
        let mut calls = Calls::default();
        calls.touch("c1").answered = true;
        assert!(calls.touch("c1").answered);
        assert_eq!(calls.get("c1").unwrap().info.call_session_id, "session-c1");
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn command_ids_are_remembered_per_call_and_bounded() {
        let mut leg = Leg::new(LegInfo::simulated("c1", String::new()));
        assert!(!leg.seen("a"));
        leg.remember("a");
        leg.remember("a");
        assert!(leg.seen("a"));
        for i in 0..MAX_COMMAND_IDS - 1 {
            leg.remember(&format!("x{i}"));
        }
        assert!(leg.seen("a"), "16 are kept");
        leg.remember("last");
        assert!(!leg.seen("a"), "pushed out by 16 newer ones");
        assert!(leg.seen("last") && leg.seen("x0"));
    }

    #[test]
    fn guards_decide_at_the_time_a_webhook_is_due() {
        let mut calls = Calls::default();
        let g = calls.next_generation();
        calls.touch("c1").media = Some((Media::Playback, g));
        assert!(calls.pass(&Guard::Always));
        assert!(calls.pass(&Guard::Live("c1".into())));
        assert!(!calls.pass(&Guard::Live("nobody".into())));
        assert!(!calls.pass(&Guard::Media("c1".into(), g + 1)));
        assert!(calls.pass(&Guard::Media("c1".into(), g)));
        assert!(!calls.pass(&Guard::Media("c1".into(), g)), "ends once");
        assert!(calls.pass(&Guard::Answer("c1".into())));
        assert!(calls.get("c1").unwrap().answered);
        calls.touch("c1").ended = true;
        assert!(!calls.pass(&Guard::Live("c1".into())));
        assert!(!calls.pass(&Guard::Answer("c1".into())));
    }

    #[test]
    fn refusals_are_telnyx_errors() {
        assert!(check_required("send_dtmf", &json!({"digits": "12"})).is_ok());
        assert!(check_required("answer", &json!({})).is_ok());
        for body in [json!({}), json!({"digits": null}), json!({"digits": ""})] {
            match check_required("send_dtmf", &body) {
                Err(TelnyxError::Rejected { status, errors, .. }) => {
                    assert_eq!(status, 422);
                    assert_eq!(errors[0]["code"], "10004");
                    assert_eq!(errors[0]["source"]["pointer"], "/digits");
                }
                other => panic!("{other:?}"),
            }
        }
        match check_required("speak", &json!({"payload": "hi"})) {
            Err(TelnyxError::Rejected { summary, .. }) => assert!(summary.contains("'voice'")),
            other => panic!("{other:?}"),
        }
        match call_ended() {
            TelnyxError::Rejected {
                status,
                errors,
                summary,
            } => {
                assert_eq!(status, 422);
                assert_eq!(errors[0]["code"], "90018");
                assert_eq!(errors[0]["title"], "Call has already ended");
                assert!(summary.starts_with("90018 Call has already ended"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            not_found(),
            TelnyxError::Rejected { status: 404, .. }
        ));
        assert!(matches!(too_many(), TelnyxError::RateLimited { .. }));
    }
}
