//! The WebSocket handshake of `GET /ws` (contract §4): origin, upgrade
//! headers, where the token comes from, the subprotocol answer, then the
//! 101. The upgrade itself is finished by [`super::upgrade_and_run`] with
//! our own buffer sizes (see `session::READ_BUFFER`), which is why warp's
//! `ws()` filter is not used: hyper's `OnUpgrade` is taken from the
//! request's extensions instead.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::UpgradeInfo;
use crate::app::App;
use crate::error::ApiError;
use crate::http::{reply, with_app};
use crate::protocol::SUBPROTOCOL;

/// `Sec-WebSocket-Key` is 16 random bytes in base64 (RFC 6455 §4.1).
const KEY_BYTES: usize = 16;

pub(crate) fn route(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("ws")
        .and(warp::get())
        .and(with_app(app))
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<OnUpgrade>())
        .map(|app: Arc<App>, headers: HeaderMap, query, on_upgrade| {
            reply(handshake(app, headers, query, on_upgrade))
        })
}

/// A key the client made as RFC 6455 asks: base64 of exactly 16 bytes.
fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == KEY_BYTES)
}

/// Where the dialer's token came from, first match wins: query, header,
/// subprotocol. Whether `callbridge.v1` was offered decides the answer.
fn upgrade_info(headers: &HeaderMap, query: &HashMap<String, String>) -> (UpgradeInfo, bool) {
    let mut offered_v1 = false;
    let mut proto_token = None;
    for value in headers.get_all("sec-websocket-protocol") {
        for entry in value.to_str().unwrap_or("").split(',').map(str::trim) {
            if entry.eq_ignore_ascii_case(SUBPROTOCOL) {
                offered_v1 = true;
            } else if let Some(t) = entry.strip_prefix("bearer.") {
                proto_token = Some(t.to_string());
            }
        }
    }
    let header_token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    let token = query
        .get("token")
        .filter(|t| !t.is_empty())
        .cloned()
        .or(header_token)
        .or(proto_token);
    // An unparseable `since` is ignored rather than refused: the client
    // then gets `connected` + `snapshot`, which is always safe.
    let since = query.get("since").and_then(|s| s.parse::<u64>().ok());
    (UpgradeInfo { token, since }, offered_v1)
}

fn origin_allowed(app: &App, headers: &HeaderMap) -> bool {
    let (Some(allowed), Some(origin)) = (&app.config.allowed_origins, headers.get("origin")) else {
        return true;
    };
    let origin = crate::config::normalize_origin(origin.to_str().unwrap_or(""));
    allowed.contains(&origin)
}

fn handshake(
    app: Arc<App>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    on_upgrade: Option<OnUpgrade>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&app, &headers) {
        app.metrics.auth_failed("origin");
        tracing::info!("websocket upgrade refused: origin not allowed");
        return Err(ApiError::OriginRefused);
    }
    if app.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let connection_upgrade = header("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    let upgrade_websocket = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key = header("sec-websocket-key").filter(|k| valid_key(k));
    let (Some(key), true, Some("13"), Some(on_upgrade)) = (
        key,
        connection_upgrade && upgrade_websocket,
        header("sec-websocket-version"),
        on_upgrade,
    ) else {
        return Err(ApiError::BadRequest(
            "expected a WebSocket upgrade (version 13)".into(),
        ));
    };
    let (info, offered_v1) = upgrade_info(&headers, &query);
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept);
    if offered_v1 {
        resp = resp.header("sec-websocket-protocol", SUBPROTOCOL);
    }
    let resp = resp
        .body(Default::default())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The session starts once hyper has sent the 101 and handed over the stream.
    tokio::spawn(super::upgrade_and_run(app, on_upgrade, info));
    Ok(resp)
}
