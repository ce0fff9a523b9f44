//! Extractors whose rejections are `ApiError`s, so even a bad path, query or body gets
//! the API's JSON error shape.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::error::ApiError;

/// Implements `FromRequestParts` for `$name`, a wrapper of what axum's `$axum` extracts,
/// its rejection answered as a 400 with `$code` and axum's own message.
macro_rules! part_extractor {
    ($name:ident $(<$t:ident: $bound:path>)?, $axum:ident<$inner:ty>, $code:literal) => {
        impl<$($t: $bound,)? S: Send + Sync> FromRequestParts<S> for $name$(<$t>)? {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let $axum(value) = $axum::<$inner>::from_request_parts(parts, state)
                    .await
                    .map_err(|e| ApiError::BadRequest {
                        code: $code,
                        message: e.body_text(),
                    })?;
                Ok($name(value))
            }
        }
    };
}

/// The one path parameter of a route (`agent_id`, `call_id`, `job_id`).
pub(crate) struct Id(pub String);
part_extractor!(Id, Path<String>, "invalid_path");

/// Query parameters; unknown ones are refused by the target type.
pub(crate) struct Params<T>(pub T);
part_extractor!(Params<T: DeserializeOwned>, Query<T>, "invalid_query");

/// The raw body with its `Content-Type`, bounded by `max_body_bytes` (413 beyond).
pub(crate) struct RawBody {
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl FromRequest<ApiState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let limit = state.cfg.max_body_bytes;
        // Refuse early when the client announces a body that is too large.
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                ApiError::BodyTooLarge { limit }
            }
            other => ApiError::BadRequest {
                code: "unreadable_body",
                message: other.body_text(),
            },
        })?;
        Ok(RawBody {
            content_type,
            bytes,
        })
    }
}

impl RawBody {
    /// The body as JSON, refusing other content types (415) and broken JSON (400).
    pub(crate) fn json(&self) -> Result<serde_json::Value, ApiError> {
        self.require_json()?;
        crate::ingest::json_value(&self.bytes)
    }

    /// Refuses a body that is not declared JSON.
    pub(crate) fn require_json(&self) -> Result<(), ApiError> {
        match self
            .content_type
            .as_deref()
            .and_then(crate::ingest::BodyFormat::from_content_type)
        {
            Some(crate::ingest::BodyFormat::Json) => Ok(()),
            _ => Err(ApiError::UnsupportedMediaType(format!(
                "`{}`; send application/json",
                self.content_type.as_deref().unwrap_or("none")
            ))),
        }
    }
}
