//! `/api/users/{id}`: create or replace (`PUT`), read with presence, status
//! and active calls (`GET`), delete with history (`DELETE`), and revoke
//! every token issued so far (`POST …/revoke`).

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::{apply_everywhere, brief, Result, MAX_ADMIN_BODY};
use crate::app::App;
use crate::clock::{now_secs, rfc3339_ms};
use crate::domain::{Control, Role, User};
use crate::error::ApiError;
use crate::http::{json_reply, read_limited, reply, with_app};
use crate::protocol::close;
use crate::routing::{mask_phone, normalize_phone};
use crate::store::bounded;

/// Longest user id: ids appear in every stored event and log line.
const MAX_ID_LEN: usize = 128;

/// The body of `PUT /api/users/{id}`, validated into a [`User`] by [`parse_user`].
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

pub(super) fn put(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("users" / String)
        .and(warp::put())
        .and(with_app(app))
        .and(warp::body::stream())
        .then(|id: String, app: Arc<App>, body| async move {
            let answer = async {
                let body = read_limited(body, MAX_ADMIN_BODY).await?;
                put_user(app, &id, body).await
            };
            reply(answer.await)
        })
}

async fn put_user(app: Arc<App>, id: &str, body: Bytes) -> Result<Response> {
    let t = app.config.store_timeout;
    let user = parse_user(id, &body)?;
    // Revocation is not part of the document: it survives a replace.
    let existing = bounded(t, app.store.get_user(id)).await?;
    let user = User {
        tokens_revoked_at: existing.and_then(|u| u.tokens_revoked_at),
        ..user
    };
    let stored = bounded(t, app.store.upsert_user(user)).await?;
    if stored.disabled {
        // On every instance, as delete and revoke (contract §12).
        apply_everywhere(&app, close_user(&stored.id, "user disabled")).await?;
    }
    tracing::info!(user = %stored.id, "user upserted");
    Ok(json_reply(StatusCode::OK, &stored))
}

pub(super) fn get(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("users" / String)
        .and(warp::get())
        .and(with_app(app))
        .then(|id: String, app: Arc<App>| async move {
            let view = bounded(app.config.store_timeout, app.store.user_view(&id)).await;
            reply(match view {
                Ok(Some(view)) => Ok(json_reply(StatusCode::OK, &view)),
                Ok(None) => Err(ApiError::NotFound("user")),
                Err(e) => Err(e.into()),
            })
        })
}

pub(super) fn delete(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("users" / String)
        .and(warp::delete())
        .and(with_app(app))
        .then(|id: String, app: Arc<App>| async move { reply(delete_user(app, &id).await) })
}

async fn delete_user(app: Arc<App>, id: &str) -> Result<Response> {
    if !bounded(app.config.store_timeout, app.store.delete_user(id)).await? {
        return Err(ApiError::NotFound("user"));
    }
    apply_everywhere(&app, close_user(id, "user deleted")).await?;
    tracing::info!(user = %id, "user deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn revoke(
    app: Arc<App>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("users" / String / "revoke")
        .and(warp::post())
        .and(with_app(app))
        .then(|id: String, app: Arc<App>| async move { reply(revoke_user(app, &id).await) })
}

async fn revoke_user(app: Arc<App>, id: &str) -> Result<Response> {
    let at = now_secs();
    if !bounded(app.config.store_timeout, app.store.revoke_tokens(id, at)).await? {
        return Err(ApiError::NotFound("user"));
    }
    let closed = apply_everywhere(&app, close_user(id, "tokens revoked")).await?;
    tracing::info!(user = %id, closed, "tokens revoked");
    Ok(json_reply(
        StatusCode::OK,
        &json!({"ok":true,"revokedAt":rfc3339_ms(at * 1000),"closed":closed}),
    ))
}

fn close_user(user: &str, reason: &str) -> Control {
    Control::CloseUser {
        user: user.to_string(),
        code: close::REVOKED,
        reason: reason.to_string(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
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
    if b.id.as_deref().is_some_and(|body_id| body_id != id) {
        return Err(ApiError::BadRequest(
            "`id` in the body differs from the path".into(),
        ));
    }
    Ok(User {
        id: id.to_string(),
        email: b.email.filter(|e| !e.is_empty()),
        name: b.name,
        role: b.role,
        phone_numbers: phones(&b.phone_numbers)?,
        connection_ids: b.connection_ids,
        disabled: b.disabled,
        tokens_revoked_at: None,
    })
}

/// E.164, de-duplicated in order; the error masks the number.
fn phones(raw: &[String]) -> Result<Vec<String>> {
    let mut phones = Vec::with_capacity(raw.len());
    for r in raw {
        let n = normalize_phone(r).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "phone number `{}` is not E.164 (+ and 8-15 digits)",
                mask_phone(r)
            ))
        })?;
        if !phones.contains(&n) {
            phones.push(n);
        }
    }
    Ok(phones)
}
