//! The API's one error type: every failure a handler or the guard can return, mapped to
//! a status and a JSON body. Client errors carry detail and are not logged as errors;
//! server errors get an opaque body and are logged once, here.

use aftercall_core::ConfigError;
use aftercall_queue::QueueError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::Scope;
use crate::ingest::ItemError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("unknown bearer token")]
    InvalidToken,
    /// A platform's message without a valid signature or secret (or the platform has no
    /// credentials configured). The reason never quotes the body.
    #[error("{0}")]
    Unsigned(String),
    #[error("this route needs a token with scope `{needed}`; token `{name}` has scope `{has}`")]
    Forbidden {
        needed: Scope,
        has: Scope,
        name: String,
    },
    #[error("rate limit exceeded; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A well-formed request about something in the wrong state (e.g. not a dead letter).
    #[error("{0}")]
    Conflict(String),
    /// `code` names the problem for programs: `invalid_query`, `empty_filter`, ...
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("malformed JSON: {message}")]
    MalformedJson {
        message: String,
        line: usize,
        column: usize,
    },
    /// A key repeated within one object of a JSON body, by its path: refused, since
    /// readers disagree on which of the two counts.
    #[error("duplicate key `{field}`: a key may appear once per object")]
    DuplicateKey { field: String, line: Option<usize> },
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(String),
    #[error("request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("{message}")]
    EventTooLarge { message: String },
    #[error("{}: {}", .0.path, .0.message)]
    InvalidConfig(ConfigError),
    #[error("{message}")]
    InvalidEvent { field: String, message: String },
    /// A batch with bad items: nothing was enqueued. The status follows the worst
    /// problem: 413 (an event too large), else 400 (a line not JSON), else 422.
    #[error("{message}")]
    InvalidBatch {
        status: StatusCode,
        message: String,
        errors: Vec<ItemError>,
    },
    /// Redis could not be reached (or timed out): worth a retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(#[source] QueueError),
    #[error("internal error: {0}")]
    Internal(#[source] QueueError),
    /// The call was erased from Redis, but its outbox files could not all be removed.
    #[error("the call was erased from Redis, but not from the outbox: {0}")]
    Outbox(String),
    /// An enqueue that stopped part-way (or did not start): the first `enqueued` events
    /// of the body are stored, the next one is not. 507 when Redis is out of memory, else
    /// 503. Sending the same body again finishes it (the stored ones are duplicates).
    #[error("{} of {} events were enqueued", .progress.enqueued, .progress.total)]
    Incomplete {
        progress: Progress,
        #[source]
        source: QueueError,
    },
}

/// How far an enqueue got, as the 507/503 body says it.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Progress {
    pub enqueued: usize,
    pub total: usize,
    /// The first event not enqueued: its place in the body (from 0) and its call.
    pub first_not_enqueued: Option<NotEnqueued>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct NotEnqueued {
    pub index: usize,
    pub call_id: String,
}

impl ApiError {
    /// The error of an enqueue of `total` events, whose `i`-th has the call
    /// `call_id(i)`: how far it got when Redis refused, or the error as it is.
    pub(crate) fn enqueue_failed(
        e: QueueError,
        total: usize,
        call_id: impl Fn(usize) -> String,
    ) -> ApiError {
        let (enqueued, cause) = match e {
            QueueError::Incomplete {
                enqueued, source, ..
            } => (enqueued, *source),
            e => (0, e),
        };
        if !cause.is_transient() && !cause.is_out_of_memory() {
            return cause.into();
        }
        let first_not_enqueued = (enqueued < total).then(|| NotEnqueued {
            index: enqueued,
            call_id: call_id(enqueued),
        });
        ApiError::Incomplete {
            progress: Progress {
                enqueued,
                total,
                first_not_enqueued,
            },
            source: cause,
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            // The queue's only client-caused error: a cursor it cannot read.
            QueueError::Invalid(message) => ApiError::BadRequest {
                code: "invalid_query",
                message,
            },
            e if e.is_transient() => ApiError::Unavailable(e),
            e => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::Unsigned(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest { .. }
            | ApiError::MalformedJson { .. }
            | ApiError::DuplicateKey { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTooLarge { .. } | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::InvalidConfig(_) | ApiError::InvalidEvent { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::InvalidBatch { status, .. } => *status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Outbox(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Incomplete { source, .. } if source.is_out_of_memory() => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ApiError::Incomplete { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::Unsigned(_) => {
                "unauthorized"
            }
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::BadRequest { code, .. } => code,
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::DuplicateKey { .. } => "duplicate_key",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::EventTooLarge { .. } => "event_too_large",
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::InvalidEvent { .. } => "invalid_event",
            ApiError::InvalidBatch { .. } => "invalid_events",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Outbox(_) => "outbox",
            ApiError::Incomplete { source, .. } if source.is_out_of_memory() => {
                "insufficient_storage"
            }
            ApiError::Incomplete { .. } => "unavailable",
        }
    }
}

/// Every error's body.
#[serde_with::skip_serializing_none]
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub(crate) struct Body<'a> {
    /// Stable code: unauthorized, forbidden, rate_limited, not_found, no_route,
    /// method_not_allowed, conflict, malformed_json, duplicate_key, invalid_path,
    /// invalid_query, invalid_filter, empty_filter, empty_batch, unreadable_body,
    /// unsupported_media_type, body_too_large, event_too_large, invalid_config,
    /// invalid_event, invalid_events, unavailable, internal.
    error: &'static str,
    /// Path of the offending field, e.g. voice_tools.post_call_follow_up.actions[1].url.
    field: Option<&'a str>,
    message: String,
    line: Option<usize>,
    column: Option<usize>,
    /// Each bad item of a batch (`invalid_events`).
    errors: Option<&'a [ItemError]>,
    #[serde(flatten)]
    progress: Option<&'a Progress>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "queue unavailable");
                "the queue is unavailable; retry later".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "request failed");
                "internal error".to_string()
            }
            ApiError::Incomplete { progress, source } => {
                tracing::error!(error = %source, enqueued = progress.enqueued, total = progress.total, "enqueue stopped part-way");
                let why = if source.is_out_of_memory() {
                    "Redis is out of memory"
                } else {
                    "the queue is unavailable"
                };
                format!(
                    "{why}: {} of {} events were enqueued; send the same body again to finish (the enqueued ones come back as duplicates)",
                    progress.enqueued, progress.total
                )
            }
            other => other.to_string(),
        };
        let mut body = Body {
            error: self.code(),
            field: None,
            message,
            line: None,
            column: None,
            errors: None,
            progress: None,
        };
        match &self {
            ApiError::InvalidConfig(e) => {
                body.field = Some(&e.path);
                body.message = e.message.clone();
            }
            ApiError::DuplicateKey { field, line } => {
                body.field = Some(field);
                body.line = *line;
            }
            ApiError::InvalidEvent { field, message } => {
                body.field = Some(field);
                body.message = message.clone();
            }
            ApiError::MalformedJson { line, column, .. } => {
                body.line = Some(*line);
                body.column = Some(*column);
            }
            ApiError::InvalidBatch { errors, .. } => body.errors = Some(errors),
            ApiError::Incomplete { progress, .. } => body.progress = Some(progress),
            _ => {}
        }
        let mut resp = (status, axum::Json(&body)).into_response();
        let headers = resp.headers_mut();
        match &self {
            ApiError::MissingToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aftercall\""),
                );
            }
            ApiError::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"aftercall\", error=\"invalid_token\""),
                );
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unavailable(_) | ApiError::Incomplete { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}
