use super::*;

const DELAY: Duration = Duration::from_millis(200);

fn run(calls: &mut Calls, call: &str, action: &str, body: Value) -> Option<Plan> {
    act(calls, call, action, &body, Instant::now(), DELAY).unwrap()
}

fn events(plan: &Option<Plan>) -> Vec<&'static str> {
    plan.iter()
        .flat_map(|p| p.steps.iter().map(|s| s.event))
        .collect()
}

fn rejected(r: Result<Option<Plan>, TelnyxError>) -> (u16, String) {
    match r {
        Err(TelnyxError::Rejected { status, errors, .. }) => {
            (status, errors[0]["code"].as_str().unwrap().to_string())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn answer_then_hangup_then_the_call_has_ended() {
    let mut calls = Calls::default();
    let answered = run(&mut calls, "c1", "answer", json!({"command_id": "a"}));
    assert_eq!(events(&answered), ["call.answered"]);
    let p = &answered.as_ref().unwrap().steps[0].payload;
    assert_eq!(p["call_leg_id"], "leg-c1");
    assert_eq!(p["call_session_id"], "session-c1");
    let hangup = run(&mut calls, "c1", "hangup", json!({"command_id": "h"}));
    assert_eq!(events(&hangup), ["call.hangup"]);
    let h = &hangup.as_ref().unwrap().steps[0].payload;
    assert_eq!(h["hangup_cause"], "normal_clearing");
    assert_eq!(h["hangup_source"], "callee");
    // Ordered after the answer's webhook, however short the delay.
    assert!(hangup.unwrap().due > answered.unwrap().due);
    let again = act(
        &mut calls,
        "c1",
        "speak",
        &json!({"payload": "x", "voice": "female"}),
        Instant::now(),
        DELAY,
    );
    assert_eq!(rejected(again), (422, "90018".into()));
    // A repeat of the hangup's command_id is ignored, not refused.
    assert!(run(&mut calls, "c1", "hangup", json!({"command_id": "h"})).is_none());
}

#[test]
fn missing_parameters_and_unknown_actions_change_nothing() {
    let mut calls = Calls::default();
    let r = act(
        &mut calls,
        "c1",
        "send_dtmf",
        &json!({}),
        Instant::now(),
        DELAY,
    );
    assert_eq!(rejected(r), (422, "10004".into()));
    let r = act(
        &mut calls,
        "c1",
        "transfer",
        &json!({"to": ""}),
        Instant::now(),
        DELAY,
    );
    assert_eq!(rejected(r), (422, "10004".into()));
    let r = act(
        &mut calls,
        "c1",
        "explode",
        &json!({}),
        Instant::now(),
        DELAY,
    );
    assert_eq!(rejected(r), (404, "10005".into()));
    assert_eq!(calls.len(), 0);
    // Commands without webhooks are accepted and remembered.
    assert!(run(&mut calls, "c1", "send_dtmf", json!({"digits": "1#"})).is_none());
    assert!(run(&mut calls, "c1", "gather", json!({})).is_none());
    assert_eq!(calls.len(), 1);
}

#[test]
fn client_state_of_a_command_rides_on_later_webhooks() {
    let mut calls = Calls::default();
    run(
        &mut calls,
        "c1",
        "answer",
        json!({"client_state": "eyJ1c2VySWQiOiJ1MSJ9"}),
    );
    let plan = run(&mut calls, "c1", "hangup", json!({}));
    assert_eq!(
        plan.unwrap().steps[0].payload["client_state"],
        "eyJ1c2VySWQiOiJ1MSJ9"
    );
}

#[test]
fn reject_reports_its_cause() {
    let mut calls = Calls::default();
    let plan = run(&mut calls, "c1", "reject", json!({"cause": "USER_BUSY"}));
    let p = &plan.unwrap().steps[0].payload;
    assert_eq!(p["hangup_cause"], "user_busy");
    assert!(calls.get("c1").unwrap().ended);
}

#[test]
fn speech_starts_then_ends_when_spoken() {
    let mut calls = Calls::default();
    let text = "Hello, this is a test of the speech.";
    let plan = run(
        &mut calls,
        "c1",
        "speak",
        json!({"payload": text, "voice": "female"}),
    )
    .unwrap();
    let names: Vec<_> = plan.steps.iter().map(|s| s.event).collect();
    assert_eq!(names, ["call.speak.started", "call.speak.ended"]);
    assert_eq!(
        plan.steps[1].after,
        Duration::from_millis(65 * text.len() as u64)
    );
    assert_eq!(plan.steps[1].payload["status"], "completed");
    assert!(matches!(plan.steps[1].guard, Guard::Media(..)));
    let short = run(
        &mut calls,
        "c2",
        "speak",
        json!({"payload": "Hi", "voice": "male"}),
    )
    .unwrap();
    assert_eq!(short.steps[1].after, SPEECH_MIN);
}

#[test]
fn a_stopped_playback_ends_once() {
    let mut calls = Calls::default();
    let plan = run(
        &mut calls,
        "c1",
        "playback_start",
        json!({"audio_url": "https://example.com/a.mp3"}),
    )
    .unwrap();
    assert_eq!(plan.steps[0].event, "call.playback.started");
    assert_eq!(
        plan.steps[0].payload["media_url"],
        "https://example.com/a.mp3"
    );
    assert_eq!(plan.steps[1].after, PLAYBACK);
    let stop = run(&mut calls, "c1", "playback_stop", json!({})).unwrap();
    assert_eq!(stop.steps[0].event, "call.playback.ended");
    assert_eq!(stop.steps[0].payload["status"], "cancelled");
    // The completion planned at the start no longer passes.
    assert!(!calls.pass(&plan.steps[1].guard));
    assert!(run(&mut calls, "c1", "playback_stop", json!({})).is_none());
}

#[test]
fn a_recording_is_saved_when_stopped_or_at_hangup() {
    let mut calls = Calls::default();
    let body = json!({"channels": "dual", "format": "wav"});
    assert!(run(&mut calls, "c1", "record_start", body.clone()).is_none());
    assert!(run(&mut calls, "c1", "record_pause", json!({})).is_none());
    let saved = run(&mut calls, "c1", "record_stop", json!({})).unwrap();
    assert_eq!(saved.steps[0].event, "call.recording.saved");
    assert!(saved.steps[0].payload["recording_urls"]["wav"].is_string());
    assert!(run(&mut calls, "c1", "record_stop", json!({})).is_none());

    run(&mut calls, "c1", "record_start", body);
    run(
        &mut calls,
        "c1",
        "speak",
        json!({"payload": "x", "voice": "female"}),
    );
    let plan = run(&mut calls, "c1", "hangup", json!({}));
    assert_eq!(
        events(&plan),
        ["call.speak.ended", "call.hangup", "call.recording.saved"]
    );
    assert_eq!(plan.unwrap().steps[0].payload["status"], "call_hangup");
}

#[test]
fn queues() {
    let mut calls = Calls::default();
    let plan = run(
        &mut calls,
        "c1",
        "enqueue",
        json!({"queue_name": "support"}),
    )
    .unwrap();
    assert_eq!(plan.steps[0].event, "call.enqueued");
    assert_eq!(plan.steps[0].payload["queue"], "support");
    let left = run(&mut calls, "c1", "leave_queue", json!({})).unwrap();
    assert_eq!(left.steps[0].event, "call.dequeued");
    assert_eq!(left.steps[0].payload["reason"], "leave");
    assert!(run(&mut calls, "c1", "leave_queue", json!({})).is_none());
}

#[test]
fn a_transfer_dials_a_leg_of_the_same_session_and_bridges_it() {
    let mut calls = Calls::default();
    run(&mut calls, "c1", "answer", json!({}));
    let plan = run(&mut calls, "c1", "transfer", json!({"to": "+15557770000"})).unwrap();
    let names: Vec<_> = plan.steps.iter().map(|s| s.event).collect();
    assert_eq!(
        names,
        [
            "call.initiated",
            "call.answered",
            "call.bridged",
            "call.bridged"
        ]
    );
    let b = &plan.steps[0].payload;
    assert_eq!(b["direction"], "outgoing");
    assert_eq!(b["call_session_id"], "session-c1");
    assert_eq!(b["to"], "+15557770000");
    assert_eq!(b["from"], crate::dev::DEMO_PHONE, "the original call's to");
    assert_eq!(plan.steps[1].after, RING);
    assert_eq!(plan.steps[2].payload["call_control_id"], "c1");
    let b_id = b["call_control_id"].as_str().unwrap().to_string();
    // Hanging up the original call hangs up the new leg too.
    let hangup = run(&mut calls, "c1", "hangup", json!({})).unwrap();
    let ids: Vec<_> = hangup
        .steps
        .iter()
        .map(|s| s.payload["call_control_id"].clone())
        .collect();
    assert_eq!(ids, [json!("c1"), json!(b_id)]);
    assert!(calls.get(&b_id).unwrap().ended);
}

#[test]
fn a_bridge_refuses_a_call_that_ended() {
    let mut calls = Calls::default();
    run(&mut calls, "c2", "hangup", json!({}));
    let r = act(
        &mut calls,
        "c1",
        "bridge",
        &json!({"call_control_id": "c2"}),
        Instant::now(),
        DELAY,
    );
    assert_eq!(rejected(r), (422, "90018".into()));
    let plan = run(&mut calls, "c1", "bridge", json!({"call_control_id": "c3"}));
    assert_eq!(events(&plan), ["call.bridged", "call.bridged"]);
    assert_eq!(calls.get("c3").unwrap().peer.as_deref(), Some("c1"));
}

#[test]
fn dial_answers_like_telnyx_and_rings_then_answers() {
    let mut calls = Calls::default();
    let body = json!({"to": "+15557770000", "from": "+15550000001", "client_state": "e30=", "command_id": "d1"});
    let (answer, plan) = dial(&mut calls, &body, Instant::now(), DELAY).unwrap();
    assert_eq!(answer["record_type"], "call");
    assert_eq!(answer["is_alive"], false);
    assert_eq!(answer["client_state"], "e30=");
    let id = answer["call_control_id"].as_str().unwrap();
    assert!(answer["call_leg_id"].is_string() && answer["call_session_id"].is_string());
    let plan = plan.unwrap();
    let p = &plan.steps[0].payload;
    assert_eq!(plan.steps[0].event, "call.initiated");
    assert_eq!(
        (p["direction"].as_str(), p["state"].as_str()),
        (Some("outgoing"), Some("bridging"))
    );
    assert_eq!(p["client_state"], "e30=");
    assert_eq!(p["connection_id"], crate::dev::DEV_CONNECTION_ID);
    assert_eq!(plan.steps[1].event, "call.answered");
    assert_eq!(plan.steps[1].after, RING);
    // A repeat of the command: the same answer, no second call.
    let (again, none) = dial(&mut calls, &body, Instant::now(), DELAY).unwrap();
    assert_eq!(again, answer);
    assert!(none.is_none());
    assert_eq!(calls.len(), 1);
    // Hung up while ringing: no answer, and a cancel.
    let hangup = run(&mut calls, id, "hangup", json!({})).unwrap();
    assert_eq!(hangup.steps[0].payload["hangup_cause"], "originator_cancel");
    assert!(!calls.pass(&plan.steps[1].guard));
}

#[test]
fn dial_needs_to_and_from_but_no_connection() {
    let mut calls = Calls::default();
    for (body, field) in [
        (json!({"from": "+1"}), "'to'"),
        (json!({"to": [], "from": "+1"}), "'to'"),
        (json!({"to": "+2"}), "'from'"),
    ] {
        match dial(&mut calls, &body, Instant::now(), DELAY) {
            Err(TelnyxError::Rejected {
                status: 422,
                summary,
                ..
            }) => {
                assert!(
                    summary.starts_with("10004") && summary.contains(field),
                    "{summary}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(calls.len(), 0);
    let body = json!({"to": ["+2", "+3"], "from": "+1", "connection_id": "app-1"});
    let (_, plan) = dial(&mut calls, &body, Instant::now(), DELAY).unwrap();
    let p = &plan.unwrap().steps[0].payload;
    assert_eq!(
        (p["to"].as_str(), p["connection_id"].as_str()),
        (Some("+2"), Some("app-1"))
    );
}
