//! `POST /api/broadcast`: a custom message to some users' sessions, or to
//! everyone's, on every instance.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::{apply_everywhere, brief, Result, MAX_ADMIN_BODY};
use crate::app::App;
use crate::domain::{control_key, session_key, Control};
use crate::error::ApiError;
use crate::http::{json_reply, read_limited, reply, with_app};
use crate::store::bounded;

/// Longest custom event name accepted.
const MAX_EVENT_NAME: usize = 64;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Broadcast {
    #[serde(default)]
    user_ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    /// Everyone bound to this call (by either of its ids), contract §14.
    #[serde(default)]
    call: Option<String>,
    /// Left out, whichever of the above chose the users.
    #[serde(default)]
    except_user_ids: Vec<String>,
    event: String,
    #[serde(default)]
    data: Option<Value>,
}

pub(super) fn post(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("broadcast")
        .and(warp::post())
        .and(with_app(app))
        .and(warp::body::stream())
        .then(|app: Arc<App>, body| async move {
            let answer = async {
                let body = read_limited(body, MAX_ADMIN_BODY).await?;
                handle(app, body).await
            };
            reply(answer.await)
        })
}

async fn handle(app: Arc<App>, body: Bytes) -> Result<Response> {
    let req: Broadcast = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid broadcast body: {}", brief(&e))))?;
    let event = req.event.trim();
    if event.is_empty() || event.len() > MAX_EVENT_NAME {
        return Err(ApiError::BadRequest(
            "`event` must be a non-empty name".into(),
        ));
    }
    let frame = crate::protocol::custom_frame(event, &req.data.unwrap_or(json!({})));
    let users = users(&app, req.all, req.user_ids, req.call, &req.except_user_ids).await?;
    // `delivered` counts this instance's connections; other instances
    // deliver through the store's feed.
    let control = Control::Broadcast {
        users,
        frame,
        except_conn: None,
    };
    let delivered = apply_everywhere(&app, control).await?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "delivered": delivered }),
    ))
}

/// Who gets it: `None` is everyone. Exactly one of `all`, `userIds` and
/// `call`; `exceptUserIds` is taken out of the list (everyone but some is
/// read from the store as a list).
async fn users(
    app: &App,
    all: bool,
    user_ids: Option<Vec<String>>,
    call: Option<String>,
    except: &[String],
) -> Result<Option<Vec<String>>> {
    let t = app.config.store_timeout;
    let chosen = match (all, user_ids, call) {
        (true, None, None) if except.is_empty() => return Ok(None),
        (true, None, None) => bounded(t, app.store.all_user_ids()).await?,
        (false, Some(ids), None) => ids,
        (false, None, Some(call)) => {
            let keys = [session_key(&call), control_key(&call)];
            bounded(t, app.store.call_binding(&keys))
                .await?
                .ok_or(ApiError::NotFound("call"))?
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give one of `userIds`, `call` or `\"all\": true`".into(),
            ))
        }
    };
    Ok(Some(
        chosen.into_iter().filter(|u| !except.contains(u)).collect(),
    ))
}
