//! `GET /dev` and `GET /dev/token` (contract §7), in `--dev` mode only
//! (404 otherwise): the one-page web dialer built on the client package
//! (`clients/js`, bundled into `dev_page.html` by its `build:dev-page`
//! script and embedded in the binary), with a token for the demo user
//! filled in, and a fresh token whenever the page's client needs another.

use std::sync::Arc;

use serde_json::json;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::app::App;
use crate::error::ApiError;
use crate::http::{json_reply, reply, with_app};

/// The page, built from `clients/js/dev/` (see the module's note).
const PAGE: &str = include_str!("dev_page.html");
/// Where the page's token goes: a JSON string's content.
const TOKEN_SLOT: &str = "__CALLBRIDGE_DEV_TOKEN__";
/// Tokens the page gets live an hour; its client refreshes them before.
const PAGE_TOKEN_TTL_SECS: i64 = 3600;
/// The page runs an inline script and talks to this origin only.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self' wss: ws:; img-src 'self' data:; base-uri 'none'; form-action 'none'";

pub(super) fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let page = warp::path!("dev")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| reply(page(&app)));
    let token = warp::path!("dev" / "token")
        .and(warp::get())
        .and(with_app(app))
        .map(|app: Arc<App>| {
            reply(demo_token(&app).map(|t| json_reply(StatusCode::OK, &json!({ "token": t }))))
        });
    page.or(token).unify()
}

fn demo_token(app: &App) -> Result<String, ApiError> {
    if !app.config.dev {
        return Err(ApiError::NotFound("/dev is served in --dev mode only"));
    }
    crate::dev::demo_token(&app.config, PAGE_TOKEN_TTL_SECS).ok_or(ApiError::NotFound(
        "no token: the dev JWT key is a public key",
    ))
}

fn page(app: &App) -> Result<Response, ApiError> {
    let token = demo_token(app)?;
    // A JWT is base64url and dots: nothing in it needs escaping in a JSON
    // string or in HTML, but escape anyway rather than trust that.
    let escaped = serde_json::to_string(&token).expect("strings serialize");
    let html = PAGE.replacen(TOKEN_SLOT, escaped.trim_matches('"'), 1);
    let mut res = warp::reply::html(html).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}
