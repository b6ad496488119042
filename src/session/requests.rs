//! Requests of a session that wait on something slow: a call action waits
//! for Telnyx (up to 15 s). It runs in a task of its own, so the session
//! keeps reading, pinging and delivering meanwhile (contract §14: "the
//! socket keeps working"); its answer reaches the asking connection
//! through the hub, like any other message to it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::actions::{self, ActionError};
use crate::app::App;
use crate::protocol::{CallActionRequest, ServerMessage};

/// Call actions of one connection in flight at once; more wait for a slot.
/// A dialer clicks a few buttons a minute; 4 lets a burst through while
/// the client's rate limit (`CALLBRIDGE_CLIENT_RATE_PER_MIN`) bounds how
/// many can wait.
pub const ACTIONS_IN_FLIGHT: usize = 4;
/// An action's whole bound: the store reads, and Telnyx's own 15 s.
const ACTION_BOUND: Duration = Duration::from_secs(20);

/// Run `req` for `user` in a task; its answer goes to connection `conn`.
pub fn spawn_call_action(
    app: &Arc<App>,
    user: &str,
    conn: &str,
    slots: Arc<Semaphore>,
    req: CallActionRequest,
) {
    let span = tracing::info_span!(
        "call_action",
        user,
        action = req.action.as_deref().unwrap_or(""),
        call = req.call.as_deref().unwrap_or(""),
        r#ref = req.reference.as_deref().unwrap_or(""),
    );
    let (app2, user, conn) = (app.clone(), user.to_string(), conn.to_string());
    let task = async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(ACTION_BOUND, actions::act(&app2, &user, &req)) => {
                r.unwrap_or_else(|_| Err(ActionError::Unavailable("no answer within 20 s".into())))
            }
            _ = app2.shutdown.cancelled() => return,
        };
        let frame = answer(&req, outcome).to_frame();
        app2.hub.send_to_conn(&user, &conn, frame.into());
    };
    app.tracker.spawn(task.instrument(span));
}

fn answer(req: &CallActionRequest, outcome: Result<actions::Done, ActionError>) -> ServerMessage {
    match outcome {
        Ok(done) => ServerMessage::CallActionResult {
            reference: req.reference.clone(),
            action: req.action.clone().unwrap_or_default(),
            call: done.call,
            result: done.result,
        },
        Err(e) => ServerMessage::Error {
            code: e.code().into(),
            message: e.client_message(),
            reference: Some(req.reference.clone()),
            telnyx: e.telnyx(),
        },
    }
}
