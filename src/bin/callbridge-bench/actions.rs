//! `--actions N`: call actions (contract §14) through the daemon to the
//! Telnyx API stand-in in this process ([`telnyx_calls`]), and what
//! callbridge adds to them.
//!
//! One signed `call.initiated` webhook, routed to `bench0` by its
//! `client_state`, binds a call to that user; then one more session of
//! `bench0` sends N `{"type":"call-action","action":"send_dtmf","call":…,
//! "params":{"digits":"1"},"ref":…}` (unique refs), at most
//! `--action-window` waiting for their answer at a time (1: one at a time;
//! the daemon runs 4 of a connection at once and queues the rest). Each
//! action is timed at four instants on this process's clock: t0 the client
//! writes it, t1 the stand-in receives its command, t2 the stand-in hands
//! its answer to hyper, t3 the client reads its `call-action-result`. The
//! command is known by its `command_id`, which the daemon derives from the
//! user and the `ref` ([`callbridge::actions::command_id`]).
//!
//! Printed: actions per second, errors, p50/p90/p99/max of t1 − t0
//! ("client → Telnyx"), t3 − t2 ("Telnyx → client": with the first, what
//! callbridge adds), t2 − t1 (the stand-in) and t3 − t0 (the round trip),
//! the daemon's CPU per action (utime + stime from `/proc`, as per webhook
//! elsewhere) and its `callbridge_call_actions_total` counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::{
    counter_value, cpu_ms, event_id, fetch_metrics, open_session, pct, post_signed_once, Args,
    Clients, Setup,
};
use crate::telnyx_calls::Commands;
use crate::telnyx_log;

/// The user whose session sends the actions (bound to the call).
const USER: &str = "bench0";
/// The metric counting call actions by action and outcome.
const ACTIONS_TOTAL: &str = "callbridge_call_actions_total{";

/// One action the client sent and had answered.
struct Done {
    reference: String,
    /// t0: written; t3: its answer read.
    written: Instant,
    read: Instant,
}

/// What the actions client measured.
struct Sent {
    elapsed_secs: f64,
    /// Answered with `call-action-result`.
    done: Vec<Done>,
    /// Answered with `error`, by code.
    errors: HashMap<String, u64>,
}

/// The four intervals of the answered actions, µs, each sorted.
#[derive(Default)]
struct Legs {
    to_telnyx: Vec<u64>,
    in_telnyx: Vec<u64>,
    from_telnyx: Vec<u64>,
    round_trip: Vec<u64>,
    /// Answered to the client but never seen by the stand-in.
    unseen: u64,
}

/// `--actions`: the stand-in, the bound call, the actions, the report.
pub async fn run(args: &Args, setup: &Setup, clients: Clients) {
    let first = args.url[0].as_str();
    let port = args.telnyx_port.expect("--telnyx-port");
    let empty = telnyx_log::DeliveryLog::generate(0, 1, 0, event_id);
    let stand_in = telnyx_log::serve(port, &args.telnyx_key, empty).await;
    let call = bind_call(args, setup).await;
    let metrics_before = fetch_metrics(first, &setup.tls).await;
    let cpu_before = args.pid.and_then(cpu_ms);
    let sent = send_actions(args, setup, &call).await;
    let cpu_after = args.pid.and_then(cpu_ms);
    let metrics_after = fetch_metrics(first, &setup.tls).await;
    let legs = legs(&sent, &stand_in.commands);
    print_actions(args, &sent, &legs);
    println!(
        "[{}] stand-in: {} commands answered, {} requests refused",
        args.label,
        stand_in.commands.len(),
        stand_in.refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    print_outcomes(&args.label, &metrics_before, &metrics_after);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        let ms = b.saturating_sub(a);
        println!(
            "[{}] daemon CPU: {} ms = {:.0} us per action",
            args.label,
            ms,
            ms as f64 * 1000.0 / args.actions.max(1) as f64
        );
    }
    for h in clients.readers {
        h.abort();
    }
    let errors: u64 = sent.errors.values().sum();
    if errors + legs.unseen > 0 {
        std::process::exit(3);
    }
}

/// One inbound `call.initiated` for [`USER`] (by `client_state`): once
/// stored, the call is bound to them (routing rule 2 for what follows,
/// and who may act on it). Returns its call_control_id.
async fn bind_call(args: &Args, setup: &Setup) -> String {
    let call = format!("v3:bench-actions-{}", &event_id(0)[6..14]);
    let state = json!({ "userId": USER }).to_string();
    let body = json!({
        "data": {"record_type": "event", "id": format!("{call}-initiated"),
                 "event_type": "call.initiated",
                 "occurred_at": callbridge::clock::now_rfc3339(),
                 "payload": {"call_control_id": call, "call_session_id": format!("{call}-session"),
                             "call_leg_id": format!("{call}-leg"), "direction": "incoming",
                             "connection_id": "bench", "state": "parked",
                             "client_state": base64::Engine::encode(
                                 &base64::engine::general_purpose::STANDARD, state),
                             "from": "+15551230001", "to": "+15559870002"}},
        "meta": {"attempt": 1}
    });
    post_signed_once(args, setup, body.to_string(), "the call's webhook").await;
    call
}

/// The client: a session of [`USER`] sends `--actions` `send_dtmf`s on
/// `call`, at most `--action-window` unanswered at a time, and reads
/// everything the daemon sends it (answers are matched by `ref`).
async fn send_actions(args: &Args, setup: &Setup, call: &str) -> Sent {
    let now = callbridge::clock::now_secs();
    let token =
        callbridge::auth::mint(setup.jwt_secret.as_bytes(), USER, None, 3600, now).expect("token");
    let (ws, _) = open_session(&args.url, 0, &token, 0, setup.tls.clone()).await;
    let (mut sink, mut stream) = ws.split();
    let mut written: HashMap<String, Instant> = HashMap::new();
    let (mut next, mut answered) = (0usize, 0usize);
    let mut sent = Sent {
        elapsed_secs: 0.0,
        done: Vec::with_capacity(args.actions),
        errors: HashMap::new(),
    };
    let start = Instant::now();
    while answered < args.actions {
        while next < args.actions && next - answered < args.action_window.max(1) {
            let reference = event_id(next);
            let frame = json!({"type": "call-action", "action": "send_dtmf", "call": call,
                               "params": {"digits": "1"}, "ref": reference})
            .to_string();
            written.insert(reference, Instant::now());
            sink.send(Message::text(frame)).await.expect("send");
            next += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an answer within 30 s")
            .expect("the session open")
            .expect("the session readable");
        // Stamped before parsing, as the readers stamp frames.
        let read = Instant::now();
        let Message::Text(t) = msg else { continue };
        if record_answer(t.as_str(), read, &mut written, &mut sent) {
            answered += 1;
        }
    }
    sent.elapsed_secs = start.elapsed().as_secs_f64();
    sent
}

/// One frame the client read: an answer to one of its actions (true) or
/// something else (a `call.initiated` event, …).
fn record_answer(
    text: &str,
    read: Instant,
    written: &mut HashMap<String, Instant>,
    sent: &mut Sent,
) -> bool {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let Some(reference) = v["data"]["ref"].as_str() else {
        return false;
    };
    let Some(at) = written.remove(reference) else {
        return false;
    };
    match v["event"].as_str() {
        Some("call-action-result") => sent.done.push(Done {
            reference: reference.to_string(),
            written: at,
            read,
        }),
        _ => {
            let code = v["data"]["code"].as_str().unwrap_or("?").to_string();
            *sent.errors.entry(code).or_default() += 1;
        }
    }
    true
}

/// Each answered action's intervals, from the client's and the stand-in's
/// instants.
fn legs(sent: &Sent, commands: &Commands) -> Legs {
    let mut l = Legs::default();
    let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
    for d in &sent.done {
        let id = callbridge::actions::command_id(USER, Some(&d.reference));
        let Some(c) = commands.get(&id) else {
            l.unseen += 1;
            continue;
        };
        l.to_telnyx.push(us(d.written, c.arrived));
        l.in_telnyx.push(us(c.arrived, c.answered));
        l.from_telnyx.push(us(c.answered, d.read));
        l.round_trip.push(us(d.written, d.read));
    }
    for v in [
        &mut l.to_telnyx,
        &mut l.in_telnyx,
        &mut l.from_telnyx,
        &mut l.round_trip,
    ] {
        v.sort_unstable();
    }
    l
}

fn print_actions(args: &Args, sent: &Sent, legs: &Legs) {
    let label = &args.label;
    let errors: u64 = sent.errors.values().sum();
    println!(
        "[{label}] actions={} send_dtmf on one call, {} in flight at most, in {:.2}s = {:.0} actions/s (errors {errors} {:?}; answered but unseen by the stand-in {})",
        args.actions,
        args.action_window.max(1),
        sent.elapsed_secs,
        args.actions as f64 / sent.elapsed_secs,
        sent.errors,
        legs.unseen
    );
    let line = |what: &str, v: &[u64]| {
        println!(
            "[{label}] {what} ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  ({} actions)",
            pct(v, 0.50),
            pct(v, 0.90),
            pct(v, 0.99),
            pct(v, 1.0),
            v.len()
        )
    };
    line(
        "client -> Telnyx (written -> stand-in received)",
        &legs.to_telnyx,
    );
    line(
        "Telnyx -> client (stand-in answered -> result read)",
        &legs.from_telnyx,
    );
    line("in the stand-in (received -> answered)", &legs.in_telnyx);
    line("round trip (written -> result read)", &legs.round_trip);
}

/// The daemon's `callbridge_call_actions_total` gained during the run, by
/// action and outcome.
fn print_outcomes(label: &str, before: &str, after: &str) {
    let counts: Vec<String> = after
        .lines()
        .filter(|l| l.starts_with(ACTIONS_TOTAL))
        .filter_map(|l| {
            let (series, _) = l.rsplit_once(' ')?;
            let n = counter_value(after, series) - counter_value(before, series);
            Some(format!("{} {n}", &series[ACTIONS_TOTAL.len() - 1..]))
        })
        .collect();
    println!(
        "[{label}] daemon's callbridge_call_actions_total during the run: {}",
        counts.join(", ")
    );
}
