//! The pure core of aftercall: call-ended events, agent configuration, templates,
//! wire payloads, the retry policy, the job model and how an attempt settles. Nothing
//! here does IO.

pub mod batch;
pub mod config;
pub mod contact;
pub mod event;
pub mod intake;
pub mod job;
pub mod payload;
pub mod quiet;
pub mod retry;
#[cfg(feature = "schema")]
pub mod schema;
pub mod settings;
pub mod settle;
pub mod target;
pub mod template;

pub use config::{Action, AgentConfig, ConfigError};
pub use event::{CallEvent, EventError, ValidEvent};
pub use job::{ActionJob, Attempt, AttemptOutcome, Job, JobBody, Outcome};
pub use retry::{DEFAULT_MAX_ATTEMPTS, RetryPolicy};
pub use settle::{JobState, Settled, Transition, settle};

/// Default upper bound on the size of one serialized call-ended event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Turns a `serde_path_to_error` failure into "path: message", the shape every
/// validation error of this crate uses.
pub(crate) fn describe_json_error(
    err: serde_path_to_error::Error<serde_json::Error>,
) -> (String, String) {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let msg = inner.to_string();
    // serde_json appends " at line L column C"; keep it only for syntax errors.
    let msg = if inner.is_syntax() || inner.is_eof() {
        msg
    } else {
        match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        }
    };
    let mut path = if path == "." { String::new() } else { path };
    // Point at the unknown or missing field itself, not at the object that holds it.
    let named = msg
        .strip_prefix("unknown field `")
        .or_else(|| msg.strip_prefix("missing field `"));
    if let Some(name) = named.and_then(|r| r.split('`').next()) {
        if path.is_empty() {
            path = name.to_string();
        } else if !path.ends_with(name) {
            path = format!("{path}.{name}");
        }
    }
    (path, msg)
}

/// Parses a point in time given as RFC 3339, Unix milliseconds, or an age such as `2h`
/// (that long before `now_ms`). Shared by the CLI's and the API's filters.
pub fn parse_time_arg(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    match config::parse_duration(s) {
        Ok(age) => Ok(now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))),
        Err(_) => Err(format!(
            "`{s}` is not an RFC 3339 time, Unix milliseconds or an age such as 2h"
        )),
    }
}
