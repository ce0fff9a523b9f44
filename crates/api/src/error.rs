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
            ApiError::MissingToken | ApiError::InvalidToken => StatusCode::UNAUTHORIZED,
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
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken => "unauthorized",
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
        }
    }
}

/// Every error's body.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
    /// Each bad item of a batch (`invalid_events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [ItemError]>,
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
            other => other.to_string(),
        };
        let mut body = Body {
            error: self.code(),
            field: None,
            message,
            line: None,
            column: None,
            errors: None,
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
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        resp
    }
}
