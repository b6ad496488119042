//! HTTP routes (contract §3), all on the one TLS listener.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::app::App;
use crate::error::{recover, ApiError};
use crate::protocol::{close, SUBPROTOCOL};
use crate::routing::normalize_phone;
use crate::session::{self, UpgradeInfo};
use crate::domain::{Control, Role, User};
use crate::store::bounded;
use crate::telnyx::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::webhook::{self, MAX_BODY};

/// Admin request bodies are small documents.
const MAX_ADMIN_BODY: usize = 64 * 1024;

type Result<T, E = ApiError> = std::result::Result<T, E>;

pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };

    let webhook = warp::path!("webhooks" / "telnyx")
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|app: Arc<App>, headers: HeaderMap, body| async move {
            reply(webhook_route(app, headers, body).await)
        });

    let ws = warp::path!("ws")
        .and(warp::get())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::ext::optional::<session::PendingUpgrade>())
        .map(|app: Arc<App>, headers: HeaderMap, query, pending| {
            reply(ws_route(app, headers, query, pending))
        });

    let health = warp::path!("health")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| {
            json_reply(
                StatusCode::OK,
                &json!({"status":"ok","version":env!("CARGO_PKG_VERSION"),"uptimeSecs":app.uptime_secs()}),
            )
        });

    let ready = warp::path!("ready")
        .and(warp::get())
        .and(with_app.clone())
        .then(|app: Arc<App>| async move { ready_route(app).await });

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| {
            warp::reply::with_header(
                app.metrics.render(),
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .into_response()
        });

    let api = warp::path("api")
        .and(with_app.clone())
        .and(warp::method())
        .and(warp::path::tail())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::stream())
        .then(
            |app, method, tail: warp::path::Tail, authz, body| async move {
                reply(api_route(app, method, tail.as_str().to_string(), authz, body).await)
            },
        );

    webhook
        .or(ws)
        .unify()
        .or(health)
        .unify()
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(api)
        .unify()
        .recover(recover)
        .unify()
}

fn reply(r: Result<Response>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

fn json_reply(status: StatusCode, v: &impl serde::Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// Read a body, refusing it (413) as soon as it passes `limit`, whether or
/// not it announced a Content-Length.
async fn read_limited<S, B>(body: S, limit: usize) -> Result<Bytes>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    futures_util::pin_mut!(body);
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|_| ApiError::BadRequest("request body could not be read".into()))?;
        if out.len() + chunk.remaining() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

fn content_length_over(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

async fn webhook_route<S, B>(app: Arc<App>, headers: HeaderMap, body: S) -> Result<Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let received = Instant::now();
    let result = async {
        if app.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        if content_length_over(&headers, MAX_BODY) {
            return Err(ApiError::TooLarge(MAX_BODY));
        }
        let body = read_limited(body, MAX_BODY).await?;
        let sig = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
        let ts = headers.get(TIMESTAMP_HEADER).map(|v| v.as_bytes());
        webhook::handle(&app, sig, ts, body, received).await
    }
    .await;
    let outcome = match &result {
        Ok(ack) if ack.duplicate => "duplicate",
        Ok(_) => "stored",
        Err(e) => e.code(),
    };
    app.metrics.webhook(outcome);
    match result {
        Ok(ack) => {
            crate::metrics::Metrics::observe_since(&app.metrics.webhook_latency, received);
            Ok(json_reply(StatusCode::OK, &ack))
        }
        Err(e) => {
            if e.status().is_client_error() {
                tracing::info!(error = %e, "webhook refused");
            }
            Err(e)
        }
    }
}

async fn ready_route(app: Arc<App>) -> Response {
    if app.is_draining() {
        return ApiError::ShuttingDown.into_response();
    }
    match bounded(app.config.store_timeout, app.store.ping()).await {
        Ok(()) => json_reply(StatusCode::OK, &json!({"status":"ready"})),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::Store(e).into_response()
        }
    }
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

fn ws_route(
    app: Arc<App>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    pending: Option<session::PendingUpgrade>,
) -> Result<Response> {
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
    let key = header("sec-websocket-key");
    let on_upgrade = pending.and_then(|p| p.take());
    let (Some(key), true, Some("13"), Some(on_upgrade)) = (
        key,
        connection_upgrade,
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
    tokio::spawn(session::upgrade_and_run(app, on_upgrade, info));
    Ok(resp)
}

// ---------------------------------------------------------------- admin API

/// Apply an admin action to this instance's sessions and tell the others.
/// Returns the local count (sockets closed / messages queued).
async fn apply_everywhere(app: &App, control: Control) -> Result<usize> {
    let local = match &control {
        Control::CloseUser { user, code, reason } => app.hub.close_user(user, *code, reason),
        Control::Broadcast { users, frame } => {
            app.hub.broadcast(users.as_deref(), frame.clone().into())
        }
    };
    bounded(
        app.config.store_timeout,
        app.store.publish_control(&control),
    )
    .await?;
    Ok(local)
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

async fn api_route<S, B>(
    app: Arc<App>,
    method: warp::http::Method,
    tail: String,
    authz: Option<String>,
    body: S,
) -> Result<Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    check_admin(&app, authz.as_deref())?;
    let parts: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
    use warp::http::Method as M;
    let t = app.config.store_timeout;
    match (method, parts.as_slice()) {
        (M::GET, ["status"]) => Ok(json_reply(StatusCode::OK, &status_body(&app))),
        (M::PUT, ["users", id]) => {
            let body = read_limited(body, MAX_ADMIN_BODY).await?;
            let user = parse_user(id, &body)?;
            let existing = bounded(t, app.store.get_user(id)).await?;
            let user = User {
                tokens_revoked_at: existing.and_then(|u| u.tokens_revoked_at),
                ..user
            };
            let stored = bounded(t, app.store.upsert_user(user)).await?;
            if stored.disabled {
                app.hub
                    .close_user(&stored.id, close::REVOKED, "user disabled");
            }
            tracing::info!(user = %stored.id, "user upserted");
            Ok(json_reply(StatusCode::OK, &stored))
        }
        (M::GET, ["users", id]) => {
            let view = bounded(t, app.store.user_view(id))
                .await?
                .ok_or(ApiError::NotFound("user"))?;
            Ok(json_reply(StatusCode::OK, &view))
        }
        (M::DELETE, ["users", id]) => {
            if !bounded(t, app.store.delete_user(id)).await? {
                return Err(ApiError::NotFound("user"));
            }
            apply_everywhere(&app, close_user(id, "user deleted")).await?;
            tracing::info!(user = %id, "user deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (M::POST, ["users", id, "revoke"]) => {
            let at = crate::clock::now_secs();
            if !bounded(t, app.store.revoke_tokens(id, at)).await? {
                return Err(ApiError::NotFound("user"));
            }
            let closed = apply_everywhere(&app, close_user(id, "tokens revoked")).await?;
            tracing::info!(user = %id, closed, "tokens revoked");
            Ok(json_reply(
                StatusCode::OK,
                &json!({"ok":true,"revokedAt":crate::clock::rfc3339_ms(at * 1000),"closed":closed}),
            ))
        }
        (M::POST, ["broadcast"]) => {
            let body = read_limited(body, MAX_ADMIN_BODY).await?;
            let req: Broadcast = serde_json::from_slice(&body).map_err(|e| {
                ApiError::BadRequest(format!("invalid broadcast body: {}", brief(&e)))
            })?;
            let event = req.event.trim();
            if event.is_empty() || event.len() > 64 {
                return Err(ApiError::BadRequest(
                    "`event` must be a non-empty name".into(),
                ));
            }
            let frame = crate::protocol::custom_frame(event, &req.data.unwrap_or(json!({})));
            let users = match (req.all, req.user_ids) {
                (true, None) => None,
                (false, Some(ids)) => Some(ids),
                _ => {
                    return Err(ApiError::BadRequest(
                        "give either `userIds` or `\"all\": true`".into(),
                    ))
                }
            };
            // `delivered` counts this instance's connections; other
            // instances deliver through the store's feed.
            let delivered = apply_everywhere(&app, Control::Broadcast { users, frame }).await?;
            Ok(json_reply(
                StatusCode::OK,
                &json!({ "delivered": delivered }),
            ))
        }
        (_, ["status"] | ["users", _] | ["users", _, "revoke"] | ["broadcast"]) => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::NotFound("endpoint")),
    }
}

fn close_user(user: &str, reason: &str) -> Control {
    Control::CloseUser {
        user: user.to_string(),
        code: close::REVOKED,
        reason: reason.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Broadcast {
    #[serde(default)]
    user_ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

/// The body of `PUT /api/users/{id}`, validated.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    phone_numbers: Vec<String>,
    #[serde(default)]
    connection_ids: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

fn brief(e: &serde_json::Error) -> String {
    e.to_string()
        .split(" at line")
        .next()
        .unwrap_or_default()
        .to_string()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

fn parse_user(id: &str, body: &[u8]) -> Result<User> {
    if !valid_id(id) {
        return Err(ApiError::BadRequest(
            "user id must be 1-128 characters of letters, digits, - _ . @ :".into(),
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("user document is not JSON".into()))?;
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "user document must be a JSON object".into(),
        ));
    }
    let b: UserBody = serde_json::from_value(v)
        .map_err(|e| ApiError::BadRequest(format!("invalid user document: {}", brief(&e))))?;
    if let Some(body_id) = &b.id {
        if body_id != id {
            return Err(ApiError::BadRequest(
                "`id` in the body differs from the path".into(),
            ));
        }
    }
    let mut phones = Vec::with_capacity(b.phone_numbers.len());
    for raw in &b.phone_numbers {
        let n = normalize_phone(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "phone number `{}` is not E.164 (+ and 8-15 digits)",
                crate::routing::mask_phone(raw)
            ))
        })?;
        if !phones.contains(&n) {
            phones.push(n);
        }
    }
    Ok(User {
        id: id.to_string(),
        email: b.email.filter(|e| !e.is_empty()),
        name: b.name,
        role: b.role,
        phone_numbers: phones,
        connection_ids: b.connection_ids,
        disabled: b.disabled,
        tokens_revoked_at: None,
    })
}

fn status_body(app: &App) -> Value {
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
        }
    })
}
