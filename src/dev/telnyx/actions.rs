//! What each command does to the record and which webhooks follow it, and
//! when: a [`Plan`] of steps, built under the record's lock and played by
//! the stand-in's task. Pure apart from the clock, so tests drive it.
//!
//! | command | webhooks |
//! |---|---|
//! | `answer` | `call.answered` |
//! | `hangup` | `call.hangup` (`normal_clearing`; an outgoing leg not yet answered: `originator_cancel`), and the other leg of a bridge hangs up too |
//! | `reject` | `call.hangup` (`call_rejected`, or `user_busy`/`not_found` per `cause`) |
//! | `transfer` | a new outgoing leg in the same session: its `call.initiated`, ~1 s later its `call.answered`, then `call.bridged` on both legs |
//! | `bridge` | `call.bridged` on both calls |
//! | `speak` | `call.speak.started`, `call.speak.ended` when the text is spoken |
//! | `playback_start` | `call.playback.started`, `call.playback.ended` 3 s later |
//! | `playback_stop` | `call.playback.ended` (`cancelled`), when one is playing |
//! | `record_stop` | `call.recording.saved`, when `record_start` started one |
//! | `enqueue` / `leave_queue` | `call.enqueued` / `call.dequeued` (`reason` `leave`) |
//! | `dial` | `call.initiated` (`outgoing`, `bridging`), ~1 s later `call.answered` |
//! | others (`send_dtmf`, `record_start`/`pause`/`resume`, …) | none |
//!
//! A hangup also ends what was under way: a speech or playback (its end,
//! status `call_hangup`, comes first) and a recording (saved after the
//! hangup), as Telnyx does. `leave_queue` posts `call.dequeued`: the SDK's
//! "left queue" model is that event type.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::record::{
    call_ended, check_required, missing, not_found, Calls, Guard, Leg, Media, Recording,
};
use super::webhooks::{fields, hangup_fields, payload, recording_fields, reject_cause, LegInfo};
use crate::telnyx::api::TelnyxError;

/// Every `POST /calls/{id}/actions/{action}` of Telnyx's Call Control (the
/// SDK's `resources/calls/actions`). Those not in the table above are
/// answered `ok` with no webhook; anything else is a 404 as at Telnyx.
pub const ACTIONS: &[&str] = &[
    "ai_assistant_add_messages",
    "ai_assistant_join",
    "ai_assistant_start",
    "ai_assistant_stop",
    "answer",
    "bridge",
    "client_state_update",
    "conversation_relay_start",
    "conversation_relay_stop",
    "enqueue",
    "fork_start",
    "fork_stop",
    "gather",
    "gather_stop",
    "gather_using_ai",
    "gather_using_audio",
    "gather_using_speak",
    "hangup",
    "leave_queue",
    "pay",
    "playback_start",
    "playback_stop",
    "record_pause",
    "record_resume",
    "record_start",
    "record_stop",
    "refer",
    "reject",
    "send_dtmf",
    "send_sip_info",
    "siprec_start",
    "siprec_stop",
    "speak",
    "streaming_start",
    "streaming_stop",
    "suppression_start",
    "suppression_stop",
    "switch_supervisor_role",
    "transcription_start",
    "transcription_stop",
    "transfer",
];

/// A dialled (or transferred-to) phone rings this long before it answers:
/// long enough for a dialer to show "ringing", short enough for a demo.
pub const RING: Duration = Duration::from_secs(1);
/// A playback's length: the stand-in does not fetch the audio, and 3 s is
/// a short prompt.
pub const PLAYBACK: Duration = Duration::from_secs(3);
/// Speech takes ~65 ms a character (about 15 characters, 2–3 words, a
/// second), at least 0.5 s and at most 5 s, so a demo never waits long.
const SPEECH_PER_CHAR_MS: u64 = 65;
const SPEECH_MIN: Duration = Duration::from_millis(500);
const SPEECH_MAX: Duration = Duration::from_secs(5);
/// A command's first webhook comes at least this long after the previous
/// command's on the same call: a quick `answer` then `hangup` arrive in
/// that order, and their `occurred_at` too.
const ORDER_GAP: Duration = Duration::from_millis(20);

/// One webhook to post, `after` the previous one (the first: when the plan
/// is due), if `guard` still holds then.
#[derive(Debug)]
pub struct Step {
    pub after: Duration,
    pub guard: Guard,
    pub event: &'static str,
    pub payload: Value,
}

#[derive(Debug)]
pub struct Plan {
    /// When the first step is due.
    pub due: Instant,
    pub steps: Vec<Step>,
}

/// The webhook `event` of `leg`, with `extra` fields.
fn step(leg: &LegInfo, event: &'static str, extra: Map<String, Value>, guard: Guard) -> Step {
    Step {
        after: Duration::ZERO,
        guard,
        event,
        payload: payload(event, leg, extra),
    }
}

fn text<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `POST /calls/{call}/actions/{action}` against the record: `Ok(None)`
/// when nothing follows (a repeated `command_id`, a command without
/// webhooks). `delay` is the stand-in's processing time before the first
/// webhook.
pub fn act(
    calls: &mut Calls,
    call: &str,
    action: &str,
    body: &Value,
    now: Instant,
    delay: Duration,
) -> Result<Option<Plan>, TelnyxError> {
    if !ACTIONS.contains(&action) {
        return Err(not_found());
    }
    check_required(action, body)?;
    let command = text(body, "command_id");
    if let Some(leg) = calls.get(call) {
        // Telnyx ignores a repeat: the same answer, nothing happens twice.
        if command.is_some_and(|c| leg.seen(c)) {
            return Ok(None);
        }
        if leg.ended {
            return Err(call_ended());
        }
    }
    if action == "bridge" {
        let other = text(body, "call_control_id").unwrap_or_default();
        if calls.get(other).is_some_and(|l| l.ended) {
            return Err(call_ended());
        }
    }
    let leg = calls.touch(call);
    if let Some(c) = command {
        leg.remember(c);
    }
    // Telnyx puts a command's client_state on the call's later webhooks.
    if let Some(cs) = text(body, "client_state") {
        leg.info.client_state = Some(cs.to_string());
    }
    let steps = steps(calls, call, action, body);
    Ok(schedule(calls, steps, now + delay))
}

fn steps(calls: &mut Calls, call: &str, action: &str, body: &Value) -> Vec<Step> {
    match action {
        "answer" => {
            let leg = calls.touch(call);
            leg.answered = true;
            vec![step(&leg.info, "call.answered", Map::new(), Guard::Always)]
        }
        "hangup" => hang_up(calls, call, None),
        "reject" => hang_up(calls, call, Some(reject_cause(text(body, "cause")))),
        "transfer" => transfer(calls, call, body),
        "bridge" => bridge(
            calls,
            call,
            text(body, "call_control_id").unwrap_or_default(),
        ),
        "speak" => {
            let spoken = text(body, "payload").map_or(0, |p| p.chars().count()) as u64;
            let length = Duration::from_millis(spoken.saturating_mul(SPEECH_PER_CHAR_MS))
                .clamp(SPEECH_MIN, SPEECH_MAX);
            play(calls, call, Media::Speak, length, Map::new())
        }
        "playback_start" => {
            // The event names what plays: `media_url` is the command's
            // `audio_url`, `media_name` its `media_name`.
            let mut extra = Map::new();
            for (from, to) in [("audio_url", "media_url"), ("media_name", "media_name")] {
                if let Some(v) = text(body, from) {
                    extra.insert(to.into(), json!(v));
                }
            }
            extra.insert("overlay".into(), json!(body["overlay"] == true));
            play(calls, call, Media::Playback, PLAYBACK, extra)
        }
        "playback_stop" => playback_stop(calls.touch(call)),
        "record_start" => {
            calls.touch(call).recording = Some(Recording {
                format: text(body, "format").unwrap_or("mp3").to_string(),
                channels: text(body, "channels").unwrap_or("single").to_string(),
                started_at: crate::clock::now_rfc3339(),
            });
            Vec::new()
        }
        "record_stop" => record_stop(calls.touch(call)).into_iter().collect(),
        "enqueue" => enqueue(
            calls.touch(call),
            text(body, "queue_name").unwrap_or_default(),
        ),
        "leave_queue" => leave_queue(calls.touch(call), "leave")
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// When the plan's first webhook is due: after `earliest`, and after the
/// previous command's on every leg it touches (which then wait for it).
fn schedule(calls: &mut Calls, steps: Vec<Step>, earliest: Instant) -> Option<Plan> {
    if steps.is_empty() {
        return None;
    }
    let legs: Vec<String> = steps
        .iter()
        .filter_map(|s| s.payload["call_control_id"].as_str().map(str::to_string))
        .collect();
    let due = legs
        .iter()
        .filter_map(|c| calls.get(c).and_then(|l| l.last_due))
        .map(|d| d + ORDER_GAP)
        .fold(earliest, Instant::max);
    for c in &legs {
        if let Some(l) = calls.get_mut(c) {
            l.last_due = Some(due);
        }
    }
    Some(Plan { due, steps })
}

/// `hangup` (`reject` with its cause): the leg ends, with what was under
/// way on it, and the other leg of its bridge.
fn hang_up(calls: &mut Calls, call: &str, cause: Option<&'static str>) -> Vec<Step> {
    let leg = calls.touch(call);
    leg.ended = true;
    let cause = cause.unwrap_or(if leg.info.outgoing && !leg.answered {
        "originator_cancel"
    } else {
        "normal_clearing"
    });
    let mut steps = Vec::new();
    if let Some((media, _)) = leg.media.take() {
        let status = fields(&[("status", json!("call_hangup"))]);
        steps.push(step(&leg.info, media.ended_event(), status, Guard::Always));
    }
    let hangup = hangup_fields(&leg.info, cause);
    steps.push(step(&leg.info, "call.hangup", hangup, Guard::Always));
    steps.extend(record_stop(leg));
    let peer = leg.peer.take();
    if let Some(peer) = peer.and_then(|p| calls.get_mut(&p)).filter(|p| !p.ended) {
        peer.ended = true;
        peer.peer = None;
        let hangup = hangup_fields(&peer.info, "normal_clearing");
        steps.push(step(&peer.info, "call.hangup", hangup, Guard::Always));
        steps.extend(record_stop(peer));
    }
    steps
}

/// `transfer`: Telnyx dials `to` on a new leg of the same call session
/// (caller id: `from`, else the original call's `to`) and bridges the
/// call to it once it answers.
fn transfer(calls: &mut Calls, call: &str, body: &Value) -> Vec<Step> {
    let a = calls.touch(call);
    let from = text(body, "from").unwrap_or(&a.info.to).to_string();
    let to = text(body, "to").unwrap_or_default();
    let mut b = LegInfo::outgoing(
        Some(&a.info.call_session_id),
        &a.info.connection_id,
        &from,
        to,
    );
    b.client_state = text(body, "target_leg_client_state").map(str::to_string);
    a.peer = Some(b.call_control_id.clone());
    let a_info = a.info.clone();
    let b_id = b.call_control_id.clone();
    let mut answered = step(&b, "call.answered", Map::new(), Guard::Answer(b_id.clone()));
    answered.after = RING;
    let steps = vec![
        step(&b, "call.initiated", Map::new(), Guard::Always),
        answered,
        step(
            &a_info,
            "call.bridged",
            Map::new(),
            Guard::Live(call.to_string()),
        ),
        step(&b, "call.bridged", Map::new(), Guard::Live(b_id)),
    ];
    let mut leg = Leg::new(b);
    leg.peer = Some(call.to_string());
    calls.insert(leg);
    steps
}

/// `bridge`: both calls are bridged to each other.
fn bridge(calls: &mut Calls, call: &str, other: &str) -> Vec<Step> {
    let a = calls.touch(call);
    a.peer = Some(other.to_string());
    let a_info = a.info.clone();
    let b = calls.touch(other);
    b.peer = Some(call.to_string());
    vec![
        step(
            &a_info,
            "call.bridged",
            Map::new(),
            Guard::Live(call.to_string()),
        ),
        step(
            &b.info,
            "call.bridged",
            Map::new(),
            Guard::Live(other.to_string()),
        ),
    ]
}

/// `speak` or `playback_start`: started now, ended `length` later unless
/// stopped. One plays at a time: a new one replaces what was under way,
/// whose end comes first (`cancelled` for a playback; a speech has no such
/// status in Telnyx's model: `completed`).
fn play(
    calls: &mut Calls,
    call: &str,
    media: Media,
    length: Duration,
    extra: Map<String, Value>,
) -> Vec<Step> {
    let generation = calls.next_generation();
    let leg = calls.touch(call);
    let mut steps = Vec::new();
    if let Some((old, _)) = leg.media.replace((media, generation)) {
        steps.push(step(
            &leg.info,
            old.ended_event(),
            stopped(old),
            Guard::Always,
        ));
    }
    let started = match media {
        Media::Speak => "call.speak.started",
        Media::Playback => "call.playback.started",
    };
    steps.push(step(&leg.info, started, extra.clone(), Guard::Always));
    let mut done = extra;
    done.insert("status".into(), json!("completed"));
    let guard = Guard::Media(call.to_string(), generation);
    let mut ended = step(&leg.info, media.ended_event(), done, guard);
    ended.after = length;
    steps.push(ended);
    steps
}

fn stopped(media: Media) -> Map<String, Value> {
    let status = match media {
        Media::Speak => "completed",
        Media::Playback => "cancelled",
    };
    fields(&[("status", json!(status))])
}

fn playback_stop(leg: &mut Leg) -> Vec<Step> {
    match leg.media {
        Some((Media::Playback, _)) => {
            leg.media = None;
            let status = stopped(Media::Playback);
            vec![step(
                &leg.info,
                "call.playback.ended",
                status,
                Guard::Always,
            )]
        }
        _ => Vec::new(),
    }
}

/// The recording under way, saved.
fn record_stop(leg: &mut Leg) -> Option<Step> {
    let r = leg.recording.take()?;
    let extra = recording_fields(&leg.info, &r.format, &r.channels, &r.started_at);
    Some(step(
        &leg.info,
        "call.recording.saved",
        extra,
        Guard::Always,
    ))
}

fn enqueue(leg: &mut Leg, queue: &str) -> Vec<Step> {
    leg.queue = Some((queue.to_string(), crate::clock::now_ms()));
    let extra = fields(&[
        ("queue", json!(queue)),
        ("current_position", json!(1)),
        ("queue_avg_wait_time_secs", json!(0)),
    ]);
    vec![step(&leg.info, "call.enqueued", extra, Guard::Always)]
}

fn leave_queue(leg: &mut Leg, reason: &str) -> Option<Step> {
    let (queue, since) = leg.queue.take()?;
    let waited = (crate::clock::now_ms() - since).max(0) / 1000;
    let extra = fields(&[
        ("queue", json!(queue)),
        ("queue_position", json!(1)),
        ("reason", json!(reason)),
        ("wait_time_secs", json!(waited)),
    ]);
    Some(step(&leg.info, "call.dequeued", extra, Guard::Always))
}

/// `POST /calls`: a new outgoing leg; Telnyx's answer (`is_alive` false:
/// dialling is asynchronous) and its webhooks. `from` and `to` are
/// required as at Telnyx; `connection_id` is not (a dev daemon has none
/// configured): the simulated calls' one stands in.
pub fn dial(
    calls: &mut Calls,
    body: &Value,
    now: Instant,
    delay: Duration,
) -> Result<(Value, Option<Plan>), TelnyxError> {
    // `to` may be a list (simultaneous ringing); the first one answers.
    let to = match body.get("to") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str),
        Some(v) => v.as_str(),
        None => None,
    }
    .filter(|s| !s.is_empty())
    .ok_or_else(|| missing("to"))?;
    let from = text(body, "from").ok_or_else(|| missing("from"))?;
    let command = text(body, "command_id");
    if let Some(answer) = command.and_then(|c| calls.dialled(c)) {
        return Ok((answer, None));
    }
    let connection = text(body, "connection_id").unwrap_or(crate::dev::DEV_CONNECTION_ID);
    let mut info = LegInfo::outgoing(None, connection, from, to);
    info.client_state = text(body, "client_state").map(str::to_string);
    let mut answer = json!({
        "call_control_id": info.call_control_id,
        "call_leg_id": info.call_leg_id,
        "call_session_id": info.call_session_id,
        "is_alive": false,
        "record_type": "call",
        "start_time": info.start_time,
    });
    if let Some(cs) = &info.client_state {
        answer["client_state"] = json!(cs);
    }
    let id = info.call_control_id.clone();
    let mut answered = step(&info, "call.answered", Map::new(), Guard::Answer(id));
    answered.after = RING;
    let steps = vec![
        step(&info, "call.initiated", Map::new(), Guard::Always),
        answered,
    ];
    let mut leg = Leg::new(info);
    leg.dial = command.map(|c| (c.to_string(), answer.clone()));
    calls.insert(leg);
    Ok((answer, schedule(calls, steps, now + delay)))
}

#[cfg(test)]
mod tests;
