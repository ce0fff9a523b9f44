//! Reading `POST /calls` bodies: one event, a JSON array, or JSON Lines. Every event is
//! validated before anything is enqueued, and every bad one is reported. Pure, so the
//! CLI can read its input the same way.

use aftercall_core::batch::{self, BatchError, Format};
use axum::http::StatusCode;

pub use aftercall_core::batch::ItemError;

/// The events of a body, each kept as its bytes in the body (stored as they are).
pub type Calls<'a> = batch::Parsed<aftercall_core::ValidEvent<'a>>;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    JsonLines,
}

impl BodyFormat {
    pub fn from_content_type(ct: &str) -> Option<BodyFormat> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(BodyFormat::Json),
            "application/x-ndjson" | "application/jsonl" | "application/json-lines" => {
                Some(BodyFormat::JsonLines)
            }
            e if e.starts_with("application/") && e.ends_with("+json") => Some(BodyFormat::Json),
            _ => None,
        }
    }
}

/// Parses a body with the shared batch reader and maps its errors onto HTTP: a bad batch
/// answers with the worst problem in it (413 too large, else 400 malformed, else 422).
pub fn parse_calls(
    body: &[u8],
    format: BodyFormat,
    max_event_bytes: usize,
) -> Result<Calls<'_>, ApiError> {
    let format = match format {
        BodyFormat::Json => Format::Json,
        BodyFormat::JsonLines => Format::JsonLines,
    };
    batch::parse_valid(body, format, max_event_bytes).map_err(|e| {
        // Core's reader already refuses an event's repeated fields (`duplicate field`,
        // 422); only on this error path is the body read again, so that a repeated key
        // answers as it does on every other JSON body, and nothing is added to a good
        // body's path.
        if let Some((field, line)) = first_duplicate(body, format) {
            return ApiError::DuplicateKey { field, line };
        }
        batch_error(e)
    })
}

/// The first key repeated within one object, with its line in JSON Lines.
fn first_duplicate(body: &[u8], format: Format) -> Option<(String, Option<usize>)> {
    let dup = |bytes: &[u8]| match crate::json::parse(bytes) {
        Err(crate::json::JsonError::Duplicate { path }) => Some(path),
        _ => None,
    };
    match format {
        Format::Json => dup(body).map(|p| (p, None)),
        Format::JsonLines => body
            .split(|b| *b == b'\n')
            .enumerate()
            .find_map(|(i, line)| dup(line).map(|p| (p, Some(i + 1)))),
    }
}

fn batch_error(e: BatchError<aftercall_core::ValidEvent<'_>>) -> ApiError {
    match e {
        BatchError::Malformed {
            message,
            line,
            column,
        } => malformed(message, line, column),
        BatchError::TooLarge { message } => ApiError::EventTooLarge { message },
        BatchError::Invalid { field, message } => ApiError::InvalidEvent { field, message },
        BatchError::Empty => ApiError::BadRequest {
            code: "empty_batch",
            message: "the body holds no events".into(),
        },
        BatchError::Items { errors, total, .. } => {
            let has = |code: &str| errors.iter().any(|e| e.error == code);
            let status = if has("event_too_large") {
                StatusCode::PAYLOAD_TOO_LARGE
            } else if has("malformed_json") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let message = format!(
                "{} of {total} events are invalid; nothing was enqueued",
                errors.len()
            );
            ApiError::InvalidBatch {
                status,
                message,
                errors,
            }
        }
    }
}

/// Decodes a JSON body, reporting syntax errors with their position and refusing a key
/// repeated in one object (`crate::json`).
pub fn json_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    crate::json::parse(body).map_err(|e| match e {
        crate::json::JsonError::Duplicate { path } => ApiError::DuplicateKey {
            field: path,
            line: None,
        },
        crate::json::JsonError::Syntax {
            message,
            line,
            column,
        } => malformed(message, line, column),
    })
}

/// A body that is not JSON, with where it stops being JSON.
fn malformed(message: String, line: usize, column: usize) -> ApiError {
    ApiError::MalformedJson {
        message,
        line,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"call_id":"c1","agent_id":"a"}"#;

    fn batch_err(body: &str, format: BodyFormat) -> (StatusCode, Vec<ItemError>) {
        match parse_calls(body.as_bytes(), format, 200) {
            Err(ApiError::InvalidBatch { status, errors, .. }) => (status, errors),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn content_types() {
        let cases = [
            ("application/json", Some(BodyFormat::Json)),
            ("Application/JSON; charset=utf-8", Some(BodyFormat::Json)),
            ("application/merge-patch+json", Some(BodyFormat::Json)),
            ("application/x-ndjson", Some(BodyFormat::JsonLines)),
            ("application/jsonl", Some(BodyFormat::JsonLines)),
            ("text/plain", None),
            ("application/x-www-form-urlencoded", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(BodyFormat::from_content_type(ct), want, "{ct}");
        }
    }

    /// Each body format reaches core's reader as itself (core tests the reading).
    #[test]
    fn each_body_format_is_read_as_itself() {
        let lines = format!("{OK}\n{}\n", OK.replace("c1", "c2"));
        let calls = |body: &str, format| match parse_calls(body.as_bytes(), format, 200) {
            Ok(Calls::One(e)) => Ok(vec![e.call_id]),
            Ok(Calls::Many(v)) => Ok(v.into_iter().map(|e| e.call_id).collect()),
            Err(_) => Err(()),
        };
        assert_eq!(calls(OK, BodyFormat::Json), Ok(vec!["c1".into()]));
        assert_eq!(
            calls(&lines, BodyFormat::JsonLines),
            Ok(vec!["c1".into(), "c2".into()])
        );
        assert_eq!(calls(&lines, BodyFormat::Json), Err(()));
    }

    #[test]
    fn every_bad_item_is_reported_and_the_worst_decides_the_status() {
        let (status, errors) = batch_err(
            &format!(
                r#"[{OK},{{"call_id":"c2"}},{OK},{{"call_id":"c3","agent_id":"a","colour":1}}]"#
            ),
            BodyFormat::Json,
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let got: Vec<_> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(got, [(Some(1), "agent_id"), (Some(3), "colour")]);
        assert!(errors[0].message.contains("agent_id"), "{:?}", errors[0]);

        let big = format!(
            r#"{{"call_id":"c9","agent_id":"a","summary":"{}"}}"#,
            "x".repeat(300)
        );
        let (status, errors) =
            batch_err(&format!("{OK}\nnot json\n{big}\n"), BodyFormat::JsonLines);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.error)).collect();
        assert_eq!(
            got,
            [(Some(2), "malformed_json"), (Some(3), "event_too_large")]
        );

        let (status, _) = batch_err(&format!("{OK}\n{{\"call_id\":\n"), BodyFormat::JsonLines);
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Positional arrays are not events, though serde would read them as such.
        let (status, errors) = batch_err(r#"[["c1","a"]]"#, BodyFormat::Json);
        assert_eq!(
            (status, errors[0].message.as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "an event must be a JSON object"
            )
        );
        let (_, errors) = batch_err(&format!("{OK}\n[\"c2\",\"a\"]\n"), BodyFormat::JsonLines);
        assert_eq!(
            (errors[0].line, errors[0].error),
            (Some(2), "invalid_event")
        );
    }

    #[test]
    fn whole_body_errors() {
        let cases: &[(&str, BodyFormat, &str)] = &[
            ("{\"call_id\":", BodyFormat::Json, "malformed_json"),
            ("[1,", BodyFormat::Json, "malformed_json"),
            ("[]", BodyFormat::Json, "empty_batch"),
            ("\n\n", BodyFormat::JsonLines, "empty_batch"),
            ("42", BodyFormat::Json, "invalid_event"),
            (
                r#"{"call_id":"c","agent_id":"a","caller_number":"555"}"#,
                BodyFormat::Json,
                "invalid_event",
            ),
        ];
        for (body, format, code) in cases {
            let err = parse_calls(body.as_bytes(), *format, 200).unwrap_err();
            assert_eq!(err.code(), *code, "{body}: {err:?}");
        }
        let big = format!(
            r#"{{"call_id":"c","agent_id":"a","summary":"{}"}}"#,
            "x".repeat(300)
        );
        let err = parse_calls(big.as_bytes(), BodyFormat::Json, 200).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large")
        );
    }
}
