//! `/api/endpoints…` (contract §10): outbound webhook endpoints. Create
//! (`POST`, answers the secret), list, read with stats, change (`PATCH`),
//! delete, read the secret, and the last attempts.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::{StatusCode, Uri};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{brief, Result, MAX_ADMIN_BODY};
use crate::app::App;
use crate::clock::{now_rfc3339, rfc3339_ms};
use crate::domain::{Delivery, DeliveryStatus, Endpoint};
use crate::error::ApiError;
use crate::http::{json_reply, read_limited, reply, with_app};
use crate::outbound::signature;
use crate::store::bounded;

/// `attempts?limit=N`: default and most.
const DEFAULT_ATTEMPTS: usize = 50;
const MAX_ATTEMPTS: usize = 1000;
/// Limits that keep one endpoint's document small.
const MAX_URL_LEN: usize = 2048;
const MAX_EVENTS: usize = 100;
const MAX_DESCRIPTION: usize = 1024;

/// `POST` and `PATCH` bodies: every field optional here; `POST` requires `url`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    disabled: Option<bool>,
}

/// The endpoint as the API shows it: without its secret.
fn public(e: &Endpoint) -> Value {
    json!({"id": e.id, "url": e.url, "events": e.events, "description": e.description,
           "disabled": e.disabled, "createdAt": e.created_at})
}

pub(super) fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let t = |app: &Arc<App>| with_app(app.clone());
    let create = warp::path!("endpoints")
        .and(warp::post())
        .and(t(&app))
        .and(warp::body::stream())
        .then(|app: Arc<App>, body| async move {
            reply(async { create(&app, read_limited(body, MAX_ADMIN_BODY).await?).await }.await)
        });
    let list = warp::path!("endpoints")
        .and(warp::get())
        .and(t(&app))
        .then(|app: Arc<App>| async move { reply(list(&app).await) });
    let one = warp::path!("endpoints" / String)
        .and(warp::get())
        .and(t(&app))
        .then(|id: String, app: Arc<App>| async move { reply(get(&app, &id).await) });
    let patch = warp::path!("endpoints" / String)
        .and(warp::patch())
        .and(t(&app))
        .and(warp::body::stream())
        .then(|id: String, app: Arc<App>, body| async move {
            reply(async { patch(&app, &id, read_limited(body, MAX_ADMIN_BODY).await?).await }.await)
        });
    create
        .or(list)
        .unify()
        .or(one)
        .unify()
        .or(patch)
        .unify()
        .or(more(app))
        .unify()
}

fn more(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let t = |app: &Arc<App>| with_app(app.clone());
    let delete = warp::path!("endpoints" / String)
        .and(warp::delete())
        .and(t(&app))
        .then(|id: String, app: Arc<App>| async move { reply(delete(&app, &id).await) });
    let secret = warp::path!("endpoints" / String / "secret")
        .and(warp::get())
        .and(t(&app))
        .then(|id: String, app: Arc<App>| async move {
            reply(
                existing(&app, &id)
                    .await
                    .map(|e| json_reply(StatusCode::OK, &json!({"secret": e.secret}))),
            )
        });
    let attempts = warp::path!("endpoints" / String / "attempts")
        .and(warp::get())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(t(&app))
        .then(|id: String, q: String, app: Arc<App>| async move {
            reply(attempts(&app, &id, &q).await)
        });
    delete.or(secret).unify().or(attempts).unify()
}

fn parse_body(body: &Bytes) -> Result<EndpointBody> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("bad endpoint: {}", brief(&e))))
}

/// `https://…`, or `http://` to a loopback address only.
fn check_url(url: &str) -> Result<()> {
    let bad = |why: &str| Err(ApiError::BadRequest(format!("url {why}")));
    if url.len() > MAX_URL_LEN {
        return bad("is too long");
    }
    let Ok(uri) = url.parse::<Uri>() else {
        return bad("is not a URL");
    };
    let Some(host) = uri.host() else {
        return bad("has no host");
    };
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if crate::config::is_loopback(host.trim_matches(['[', ']'])) => Ok(()),
        _ => bad("must be https:// (http:// only to a loopback address)"),
    }
}

fn check_events(events: &[String]) -> Result<()> {
    let ok = !events.is_empty()
        && events.len() <= MAX_EVENTS
        && events.iter().all(|e| !e.is_empty() && e.len() <= 128);
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "events must be a list of 1 to {MAX_EVENTS} event names, or [\"*\"]"
        )))
    }
}

fn apply(e: &mut Endpoint, b: EndpointBody) -> Result<()> {
    if let Some(url) = b.url {
        check_url(&url)?;
        e.url = url;
    }
    if let Some(events) = b.events {
        check_events(&events)?;
        e.events = events;
    }
    if let Some(d) = b.description {
        if d.len() > MAX_DESCRIPTION {
            return Err(ApiError::BadRequest("description is too long".into()));
        }
        e.description = d;
    }
    if let Some(disabled) = b.disabled {
        e.disabled = disabled;
    }
    Ok(())
}

async fn create(app: &App, body: Bytes) -> Result<Response> {
    let b = parse_body(&body)?;
    if b.url.is_none() {
        return Err(ApiError::BadRequest("url is required".into()));
    }
    let mut e = Endpoint {
        id: format!("ep_{}", uuid::Uuid::new_v4().simple()),
        url: String::new(),
        events: vec!["*".into()],
        description: String::new(),
        disabled: false,
        secret: signature::new_secret(),
        created_at: now_rfc3339(),
    };
    apply(&mut e, b)?;
    bounded(app.config.store_timeout, app.store.put_endpoint(e.clone())).await?;
    app.outbound_wake.notify_one();
    tracing::info!(endpoint = %e.id, events = ?e.events, "outbound endpoint created");
    let mut answer = public(&e);
    answer["secret"] = json!(e.secret);
    Ok(json_reply(StatusCode::CREATED, &answer))
}

async fn existing(app: &App, id: &str) -> Result<Endpoint> {
    bounded(app.config.store_timeout, app.store.get_endpoint(id))
        .await?
        .ok_or(ApiError::NotFound("endpoint"))
}

async fn list(app: &App) -> Result<Response> {
    let all = bounded(app.config.store_timeout, app.store.list_endpoints()).await?;
    let endpoints: Vec<Value> = all.iter().map(public).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "endpoints": endpoints }),
    ))
}

async fn get(app: &App, id: &str) -> Result<Response> {
    let e = existing(app, id).await?;
    Ok(json_reply(StatusCode::OK, &with_stats(app, &e).await?))
}

/// What `GET /api/endpoints/{id}` answers: the endpoint without its secret,
/// with its deliveries by state (the console shows every endpoint so).
pub(super) async fn with_stats(app: &App, e: &Endpoint) -> Result<Value> {
    let stats = bounded(app.config.store_timeout, app.store.endpoint_stats(&e.id)).await?;
    let mut answer = public(e);
    answer["stats"] = json!(stats);
    Ok(answer)
}

async fn patch(app: &App, id: &str, body: Bytes) -> Result<Response> {
    let b = parse_body(&body)?;
    let mut e = existing(app, id).await?;
    apply(&mut e, b)?;
    bounded(app.config.store_timeout, app.store.put_endpoint(e.clone())).await?;
    app.outbound_wake.notify_one();
    tracing::info!(endpoint = %e.id, disabled = e.disabled, "outbound endpoint changed");
    Ok(json_reply(StatusCode::OK, &public(&e)))
}

async fn delete(app: &App, id: &str) -> Result<Response> {
    if !bounded(app.config.store_timeout, app.store.delete_endpoint(id)).await? {
        return Err(ApiError::NotFound("endpoint"));
    }
    app.outbound_wake.notify_one();
    tracing::info!(endpoint = %id, "outbound endpoint deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn attempt_json(d: &Delivery) -> Value {
    let next = (d.status == DeliveryStatus::Pending).then(|| rfc3339_ms(d.next_attempt_ms));
    json!({"messageId": d.message_id, "event": d.event, "status": d.status.as_str(),
           "attempts": d.attempts, "lastStatusCode": d.last_status_code,
           "lastError": d.last_error, "nextAttemptAt": next, "createdAt": rfc3339_ms(d.created_ms)})
}

async fn attempts(app: &App, id: &str, query: &str) -> Result<Response> {
    existing(app, id).await?;
    let mut limit = DEFAULT_ATTEMPTS;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k == "limit" {
            limit = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_ATTEMPTS).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit must be 1 to {MAX_ATTEMPTS}"))
                })?;
        }
    }
    let recent = bounded(
        app.config.store_timeout,
        app.store.recent_deliveries(id, limit),
    )
    .await?;
    let attempts: Vec<Value> = recent.iter().map(attempt_json).collect();
    Ok(json_reply(StatusCode::OK, &json!({ "attempts": attempts })))
}
