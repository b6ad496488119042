//! Errors at the HTTP edge: every typed error of the crate becomes a status
//! code and a JSON body `{"error":"<kebab-code>","message":"…"}` here, and
//! only here.

use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::domain::RunFailure;
use crate::store::StoreError;
use crate::telnyx::{EnvelopeError, VerifyError};
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Signature(#[from] VerifyError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong admin bearer token")]
    Unauthorized,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("origin not allowed")]
    OriginRefused,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// `/ready`: something the daemon needs is not there yet.
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The new certificate did not load; the previous one stays in service.
    #[error("{0}; the previous certificate stays in service")]
    ReloadRefused(#[from] TlsError),
    /// A recovery run asked for through the admin API did not complete.
    #[error(transparent)]
    Recovery(#[from] RunFailure),
    /// Every console stream slot is taken (`app::MAX_CONSOLE_STREAMS`).
    #[error("{0} console streams are open already: close one (another tab?) and retry")]
    TooManyStreams(usize),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Signature(_) | ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Envelope(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Store(_)
            | ApiError::ShuttingDown
            | ApiError::NotReady(_)
            | ApiError::TooManyStreams(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::OriginRefused => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ReloadRefused(_) => StatusCode::CONFLICT,
            // Contract §13: 409 when recovery is off (or busy elsewhere),
            // 503 when the API refuses or the store is away.
            ApiError::Recovery(RunFailure::Off | RunFailure::Busy) => StatusCode::CONFLICT,
            ApiError::Recovery(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Signature(VerifyError::StaleTimestamp) => "stale-timestamp",
            ApiError::Signature(VerifyError::MissingSignature | VerifyError::MissingTimestamp) => {
                "missing-signature"
            }
            ApiError::Signature(_) => "invalid-signature",
            ApiError::Envelope(EnvelopeError::NotJson) => "invalid-json",
            ApiError::Envelope(EnvelopeError::NotEnvelope(_)) => "invalid-envelope",
            ApiError::Store(StoreError::Timeout(_)) => "store-timeout",
            ApiError::Store(_) => "store-unavailable",
            ApiError::TooLarge(_) => "payload-too-large",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound(_) => "not-found",
            ApiError::OriginRefused => "origin-not-allowed",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::ShuttingDown => "shutting-down",
            ApiError::NotReady(_) => "not-ready",
            ApiError::ReloadRefused(_) => "reload-refused",
            ApiError::TooManyStreams(_) => "too-many-streams",
            ApiError::Recovery(f) => match f {
                RunFailure::Off => "recovery-off",
                RunFailure::Busy => "recovery-busy",
                RunFailure::Unauthorized(_) => "telnyx-unauthorized",
                RunFailure::Unavailable(_) => "telnyx-unavailable",
                RunFailure::Store(_) => "store-unavailable",
                RunFailure::ShuttingDown => "shutting-down",
            },
        }
    }

    /// The message shown to the client. Store errors can carry driver text
    /// with host names; the client gets a generic sentence, the log the detail.
    fn public_message(&self) -> String {
        match self {
            ApiError::Store(StoreError::Timeout(_)) => {
                "the store did not answer in time; retry later".into()
            }
            ApiError::Store(_) | ApiError::Recovery(RunFailure::Store(_)) => {
                "the store is unavailable; retry later".into()
            }
            other => other.to_string(),
        }
    }
}

pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

impl ApiError {
    /// The JSON answer, also for an error a rejection carries by reference.
    pub fn response(&self) -> Response {
        json_error(self.status(), self.code(), &self.public_message())
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        self.response()
    }
}

/// An [`ApiError`] raised by a filter that guards several routes (the admin
/// token check), carried as a warp rejection to [`recover`].
#[derive(Debug)]
pub struct Refused(pub ApiError);

impl warp::reject::Reject for Refused {}

/// Turn warp's own rejections (unknown path, wrong method, …) into JSON.
pub async fn recover(rej: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    let resp = if let Some(Refused(e)) = rej.find::<Refused>() {
        e.response()
    } else if rej.is_not_found() {
        json_error(StatusCode::NOT_FOUND, "not-found", "no such endpoint")
    } else if rej.find::<warp::reject::MethodNotAllowed>().is_some() {
        json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "method not allowed for this endpoint",
        )
    } else if rej.find::<warp::reject::PayloadTooLarge>().is_some() {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "body is too large",
        )
    } else if let Some(e) = rej.find::<warp::reject::InvalidHeader>() {
        json_error(StatusCode::BAD_REQUEST, "bad-request", &e.to_string())
    } else if rej.find::<warp::reject::MissingHeader>().is_some()
        || rej.find::<warp::reject::InvalidQuery>().is_some()
    {
        json_error(StatusCode::BAD_REQUEST, "bad-request", "bad request")
    } else if rej.find::<warp::reject::UnsupportedMediaType>().is_some() {
        json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "unsupported media type",
        )
    } else {
        tracing::debug!(?rej, "unhandled rejection");
        json_error(StatusCode::BAD_REQUEST, "bad-request", "bad request")
    };
    Ok(resp)
}
