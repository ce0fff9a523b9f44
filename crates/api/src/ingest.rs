//! Reading `POST /calls` bodies: one event, a JSON array, or JSON Lines. Every event is
//! validated before anything is enqueued, and every bad one is reported. Pure, so the
//! CLI can read its input the same way.

use aftercall_core::{CallEvent, EventError};
use axum::http::StatusCode;
use serde::Serialize;

use crate::error::ApiError;

/// How the body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (or `+json`): one object or an array of them.
    Json,
    /// `application/x-ndjson` or `application/jsonl`: one object per line.
    JsonLines,
}

impl BodyFormat {
    /// The format for a `Content-Type` value, ignoring parameters such as `charset`.
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

/// What a valid body holds.
#[derive(Debug)]
pub enum Calls {
    /// A single JSON object.
    One(Box<CallEvent>),
    /// An array or JSON Lines, in order.
    Many(Vec<CallEvent>),
}

/// One bad event of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    /// Position in a JSON array, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Line of a JSON Lines body, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `invalid_event`, `malformed_json` or `event_too_large`.
    pub error: &'static str,
    /// The field the problem is about; absent when it is about the whole event.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub message: String,
}

/// Parses and validates a body. Errors are API errors so that the status (400, 413,
/// 422) and the per-item detail are decided in one place.
pub fn parse_calls(
    body: &[u8],
    format: BodyFormat,
    max_event_bytes: usize,
) -> Result<Calls, ApiError> {
    match format {
        BodyFormat::Json => parse_json(body, max_event_bytes),
        BodyFormat::JsonLines => parse_lines(body, max_event_bytes),
    }
}

/// Parses a JSON document, or says where it is broken.
pub fn json_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson {
        message: strip_position(&e.to_string()),
        line: e.line(),
        column: e.column(),
    })
}

fn parse_json(body: &[u8], max: usize) -> Result<Calls, ApiError> {
    if let Some(b'{') = body.trim_ascii_start().first() {
        // One event: the raw size counts, as the producer sent it.
        if body.len() > max {
            return Err(ApiError::EventTooLarge {
                message: too_large(body.len(), max),
            });
        }
        json_value(body)?;
        return CallEvent::parse(body, max)
            .map(|e| Calls::One(Box::new(e)))
            .map_err(|e| match e {
                EventError::TooLarge { size, limit } => ApiError::EventTooLarge {
                    message: too_large(size, limit),
                },
                EventError::Invalid { field, message } => ApiError::InvalidEvent { field, message },
            });
    }
    let items = match json_value(body)? {
        serde_json::Value::Array(items) => items,
        _ => {
            return Err(ApiError::InvalidEvent {
                field: String::new(),
                message: "the body must be a JSON object or an array of objects".into(),
            });
        }
    };
    let total = items.len();
    let mut events = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if !item.is_object() {
            errors.push(not_an_object(Some(i), None));
            continue;
        }
        match CallEvent::from_value(item, max) {
            Ok(e) => events.push(e),
            Err(e) => errors.push(item_error(Some(i), None, e)),
        }
    }
    finish(events, errors, total)
}

fn parse_lines(body: &[u8], max: usize) -> Result<Calls, ApiError> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut total = 0;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        total += 1;
        let n = Some(i + 1);
        if line.len() > max {
            errors.push(item_error(
                None,
                n,
                EventError::TooLarge {
                    size: line.len(),
                    limit: max,
                },
            ));
            continue;
        }
        match json_value(line) {
            Err(ApiError::MalformedJson { message, .. }) => {
                errors.push(ItemError {
                    index: None,
                    line: n,
                    error: "malformed_json",
                    field: String::new(),
                    message,
                });
                continue;
            }
            Ok(v) if !v.is_object() => {
                errors.push(not_an_object(None, n));
                continue;
            }
            _ => {}
        }
        match CallEvent::parse(line, max) {
            Ok(e) => events.push(e),
            Err(e) => errors.push(item_error(None, n, e)),
        }
    }
    finish(events, errors, total)
}

fn finish(events: Vec<CallEvent>, errors: Vec<ItemError>, total: usize) -> Result<Calls, ApiError> {
    if total == 0 {
        return Err(ApiError::BadRequest {
            code: "empty_batch",
            message: "the body holds no events".into(),
        });
    }
    if errors.is_empty() {
        return Ok(Calls::Many(events));
    }
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
    Err(ApiError::InvalidBatch {
        status,
        message,
        errors,
    })
}

fn item_error(index: Option<usize>, line: Option<usize>, e: EventError) -> ItemError {
    match e {
        EventError::TooLarge { size, limit } => ItemError {
            index,
            line,
            error: "event_too_large",
            field: String::new(),
            message: too_large(size, limit),
        },
        EventError::Invalid { field, message } => ItemError {
            index,
            line,
            error: "invalid_event",
            field,
            message,
        },
    }
}

/// serde would read an event from an array by position; an event is an object.
fn not_an_object(index: Option<usize>, line: Option<usize>) -> ItemError {
    ItemError {
        index,
        line,
        error: "invalid_event",
        field: String::new(),
        message: "an event must be a JSON object".into(),
    }
}

fn too_large(size: usize, limit: usize) -> String {
    format!("the event is {size} bytes, over the limit of {limit} bytes per event")
}

/// serde_json ends syntax errors with " at line L column C"; the API reports those apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
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

    #[test]
    fn single_array_and_lines() {
        assert!(
            matches!(parse_calls(OK.as_bytes(), BodyFormat::Json, 200), Ok(Calls::One(e)) if e.call_id == "c1")
        );
        let arr = format!("[{OK},{}]", OK.replace("c1", "c2"));
        assert!(
            matches!(parse_calls(arr.as_bytes(), BodyFormat::Json, 200), Ok(Calls::Many(v)) if v.len() == 2)
        );
        let lines = format!("{OK}\r\n\n{}\n", OK.replace("c1", "c2"));
        assert!(
            matches!(parse_calls(lines.as_bytes(), BodyFormat::JsonLines, 200), Ok(Calls::Many(v)) if v.len() == 2)
        );
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
        assert_eq!(got, [(Some(1), ""), (Some(3), "colour")]);
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
