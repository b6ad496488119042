//! The route table (contract §3): every endpoint on the one TLS listener,
//! and where its handler lives. Handlers sit beside their types:
//! `webhook` here, the admin API in [`crate::api`], the WebSocket
//! handshake beside the session ([`crate::session::handshake`]).

mod body;
mod probes;
mod webhook;

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::App;
use crate::error::{recover, ApiError};

pub(crate) use body::read_limited;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    webhook::route(app.clone())
        .or(crate::session::handshake::route(app.clone()))
        .unify()
        .or(probes::health(app.clone()))
        .unify()
        .or(probes::ready(app.clone()))
        .unify()
        .or(probes::metrics(app.clone()))
        .unify()
        .or(crate::api::routes(app))
        .unify()
        .recover(recover)
        .unify()
}

/// The shared state, for every handler.
pub(crate) fn with_app(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// A handler's result as the response: errors become their JSON (see `error`).
pub(crate) fn reply(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

pub(crate) fn json_reply(status: StatusCode, v: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}
