//! `GET /api/status`: connections and event counters of this instance;
//! and the recovery state (§13) the console shows.

use std::sync::Arc;

use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::app::App;
use crate::http::{json_reply, with_app};

pub(super) fn get(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("status")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| json_reply(StatusCode::OK, &body(&app)))
}

fn body(app: &App) -> Value {
    let m = &app.metrics;
    json!({
        "uptimeSecs": app.uptime_secs(),
        "connections": {
            "total": m.connections.get(),
            "authenticated": m.authenticated.get(),
            "perUser": app.hub.per_user(),
        },
        "events": {
            "received": m.events_received.get(),
            "delivered": m.events_delivered.get(),
            "duplicate": m.events_duplicate.get(),
            "unrouted": m.events_unrouted.get(),
        },
        "recovery": recovery(app),
    })
}

/// The recovery state of §13 (`/api/status`'s `recovery`, the console's
/// panel): this instance's view of it.
pub(super) fn recovery(app: &App) -> Value {
    serde_json::to_value(app.recovery.view()).unwrap_or(Value::Null)
}
