//! The admin API (contract §3): `/api/*`, behind the admin bearer token,
//! one handler per endpoint beside its request and response types:
//! [`users`] (`PUT`/`GET`/`DELETE /api/users/{id}`,
//! `POST /api/users/{id}/revoke`), [`broadcast`] (`POST /api/broadcast`),
//! [`status`] (`GET /api/status`), [`endpoints`] (`/api/endpoints…`,
//! outbound webhooks), [`reload`] (`POST /api/reload`, the certificate),
//! [`recover`] (`POST /api/recover`, missed webhooks from Telnyx's log),
//! [`console`] (`GET /api/console/stream`, the console's live data).
//!
//! The token is checked before anything else, so without it nothing about
//! the API (not even which paths exist) is revealed; with no token
//! configured the API answers 404 as if it did not exist.

mod broadcast;
mod console;
mod endpoints;
mod recover;
mod reload;
mod status;
mod users;

use std::sync::Arc;

use warp::http::Method;
use warp::path::Tail;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::domain::Control;
use crate::error::{ApiError, Refused};
use crate::http::with_app;
use crate::store::bounded;

/// Admin request bodies are small documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let endpoints = users::put(app.clone())
        .or(users::get(app.clone()))
        .unify()
        .or(users::delete(app.clone()))
        .unify()
        .or(users::revoke(app.clone()))
        .unify()
        .or(broadcast::post(app.clone()))
        .unify()
        .or(status::get(app.clone()))
        .unify()
        .or(reload::post(app.clone()))
        .unify()
        .or(recover::post(app.clone()))
        .unify()
        .or(endpoints::routes(app.clone()))
        .unify()
        .or(console::stream(app.clone()))
        .unify()
        .or(unmatched())
        .unify();
    warp::path("api").and(authorized(app)).and(endpoints)
}

/// Passes with the right bearer token; otherwise rejects with the answer
/// (401, or 404 when the admin API is disabled).
fn authorized(app: Arc<App>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    with_app(app)
        .and(warp::header::optional::<String>("authorization"))
        .and_then(|app: Arc<App>, authz: Option<String>| async move {
            check_admin(&app, authz.as_deref()).map_err(|e| warp::reject::custom(Refused(e)))
        })
        .untuple_one()
}

fn check_admin(app: &App, authz: Option<&str>) -> Result<()> {
    let Some(expected) = &app.config.admin_token else {
        // Admin API disabled: look like it does not exist.
        return Err(ApiError::NotFound("endpoint"));
    };
    let given = authz
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    #[allow(deprecated)]
    let ok =
        aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes())
            .is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whatever no endpoint took: a known path with another method is 405,
/// anything else 404.
fn unmatched() -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    warp::method()
        .and(warp::path::tail())
        .map(|method: Method, tail: Tail| {
            let parts: Vec<&str> = tail.as_str().trim_end_matches('/').split('/').collect();
            let allowed: &[Method] = match parts.as_slice() {
                ["status"] => &[Method::GET],
                ["users", _] => &[Method::PUT, Method::GET, Method::DELETE],
                ["users", _, "revoke"] | ["broadcast"] | ["reload"] | ["recover"] => {
                    &[Method::POST]
                }
                ["endpoints"] => &[Method::GET, Method::POST],
                ["endpoints", _] => &[Method::GET, Method::PATCH, Method::DELETE],
                ["endpoints", _, "secret" | "attempts"] => &[Method::GET],
                ["console", "stream"] => &[Method::GET],
                _ => &[],
            };
            let e = if allowed.is_empty() || allowed.contains(&method) {
                ApiError::NotFound("endpoint")
            } else {
                ApiError::MethodNotAllowed
            };
            e.into_response()
        })
}

/// Apply an admin action to this instance's sessions and tell the others.
/// Returns the local count (sockets closed / messages queued).
async fn apply_everywhere(app: &App, control: Control) -> Result<usize> {
    let local = app.hub.apply_control(&control);
    bounded(
        app.config.store_timeout,
        app.store.publish_control(&control),
    )
    .await?;
    Ok(local)
}

/// serde's message without its " at line …" position.
fn brief(e: &serde_json::Error) -> String {
    e.to_string()
        .split(" at line")
        .next()
        .unwrap_or_default()
        .to_string()
}
