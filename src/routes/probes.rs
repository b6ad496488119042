//! `/health`, `/ready` and `/metrics`: for load balancers, systemd
//! watchdogs and Prometheus. None needs authentication.

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::ApiError;
use crate::http::{json_reply, with_app};
use crate::store::bounded;

/// The media type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /health`: the process answers (no store round trip).
pub(super) fn health(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("health")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| {
            json_reply(
                StatusCode::OK,
                &json!({"status":"ok","version":env!("CARGO_PKG_VERSION"),"uptimeSecs":app.uptime_secs()}),
            )
        })
}

/// `GET /ready`: 503 while draining or when the store does not answer.
pub(super) fn ready(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("ready")
        .and(warp::get())
        .and(with_app(app))
        .then(ready_handler)
}

async fn ready_handler(app: Arc<App>) -> Response {
    if app.is_draining() {
        return ApiError::ShuttingDown.into_response();
    }
    // Contract §15: until the provider's keys were fetched once, its
    // dialers cannot sign in here.
    if app.jwks.as_ref().is_some_and(|j| !j.ready()) {
        return ApiError::NotReady("the identity provider's keys (JWKS) were not fetched yet")
            .into_response();
    }
    match bounded(app.config.store_timeout, app.store.ping()).await {
        Ok(()) => json_reply(StatusCode::OK, &json!({"status":"ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::Store(e).into_response()
        }
    }
}

/// `GET /metrics`: OpenMetrics text.
pub(super) fn metrics(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| {
            warp::reply::with_header(app.metrics.render(), "content-type", OPENMETRICS)
                .into_response()
        })
}
