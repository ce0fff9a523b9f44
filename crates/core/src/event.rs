//! The call-ended event that producers push, its parsing and validation.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod facts;
mod view;

pub use facts::{Analysis, Direction, EndedReason};

/// A call-ended event as producers push it. Unknown top-level fields are rejected.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CallEvent {
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::id"))]
    pub call_id: String,
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::id"))]
    pub agent_id: String,
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::E164)))]
    pub caller_number: Option<String>,
    pub agent_name: Option<String>,
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub started_at: Option<DateTime<FixedOffset>>,
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>", extend("format" = "date-time")))]
    pub ended_at: Option<DateTime<FixedOffset>>,
    pub duration_seconds: Option<u64>,
    pub summary: Option<String>,
    pub transcript: Option<String>,
    pub recording_url: Option<String>,
    /// Key details extracted from the call: a string or an object.
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::details"))]
    // Not required, though its schema is written by hand.
    #[serde(default)]
    pub details: Option<Value>,
    /// Free-form metadata; `caller_name` and `caller_email` live here.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The producer's W3C trace context (`00-<trace id>-<span id>-<flags>`): the job's
    /// span carries the trace id and outgoing webhooks continue the trace.
    pub traceparent: Option<String>,
    /// The voice platform the call came from (`retell`, `vapi`, `bland` from the intake
    /// routes; any short id from other producers).
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::optional_id")
    )]
    // Not required, though its schema is written by hand.
    #[serde(default)]
    pub platform: Option<String>,
    /// Why the call ended, normalised; the platform's own value is `platform_ended_reason`.
    pub ended_reason: Option<EndedReason>,
    pub platform_ended_reason: Option<String>,
    pub direction: Option<Direction>,
    /// The platform's post-call analysis.
    #[serde(default, deserialize_with = "facts::optional_map")]
    pub analysis: Option<Analysis>,
    /// The platform's original message, as it arrived (an object), for ops and for
    /// templates as `raw`.
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::object"))]
    // Not required, though its schema is written by hand.
    #[serde(default)]
    pub raw: Option<Value>,
}

/// Why an event was refused. Every variant names the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("event is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{}{message}", field_prefix(.field))]
    Invalid { field: String, message: String },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

impl EventError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        EventError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
    /// The field path the error is about (empty for whole-document errors).
    pub fn field(&self) -> &str {
        match self {
            EventError::TooLarge { .. } => "",
            EventError::Invalid { field, .. } => field,
        }
    }
}

pub(crate) const MAX_ID_LEN: usize = 256;

impl CallEvent {
    /// An event with its two ids and nothing else.
    pub fn new(call_id: impl Into<String>, agent_id: impl Into<String>) -> CallEvent {
        CallEvent {
            call_id: call_id.into(),
            agent_id: agent_id.into(),
            ..CallEvent::default()
        }
    }

    /// Parses and validates one event from JSON bytes, enforcing `max_bytes`.
    pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<CallEvent, EventError> {
        precheck(bytes, max_bytes)?;
        // Read without tracking the path first: tracking costs about as much as the
        // read itself, and only an error needs it.
        let event: CallEvent =
            serde_json::from_slice(bytes).map_err(|e| Self::read_error(bytes, e))?;
        event.validate()?;
        Ok(event)
    }

    /// The error for bytes that do not read as an event, naming the field: the same bytes
    /// read again, now tracking the path (they fail the same way).
    #[cold]
    fn read_error(bytes: &[u8], plain: serde_json::Error) -> EventError {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, CallEvent>(de) {
            Err(e) => {
                let (field, message) = crate::describe_json_error(e);
                EventError::Invalid { field, message }
            }
            // Only what follows the object fails the plain read alone.
            Ok(_) => EventError::invalid("", plain.to_string()),
        }
    }

    /// Parses an event already decoded as a JSON value.
    pub fn from_value(value: Value, max_bytes: usize) -> Result<CallEvent, EventError> {
        let bytes = serde_json::to_vec(&value).expect("a JSON value always serializes");
        Self::parse(&bytes, max_bytes)
    }

    /// Checks what serde cannot: identifiers, E.164, times, URLs, metadata types.
    pub fn validate(&self) -> Result<(), EventError> {
        Checked {
            call_id: &self.call_id,
            agent_id: &self.agent_id,
            caller_number: self.caller_number.as_deref(),
            started_at: self.started_at,
            ended_at: self.ended_at,
            recording_url: self.recording_url.as_deref(),
            traceparent: self.traceparent.as_deref(),
            details: self.details.as_ref().map(Shape::of),
            caller_name: self.metadata.get("caller_name").map(Shape::of),
            caller_email: self.metadata.get("caller_email").map(Shape::of),
            platform: self.platform.as_deref(),
            analysis_data: self
                .analysis
                .as_ref()
                .and_then(|a| a.data.as_ref())
                .map(Shape::of),
            raw: self.raw.as_ref().map(Shape::of),
        }
        .check()
    }

    /// Duration in whole seconds: `duration_seconds`, else `ended_at - started_at`.
    pub fn duration(&self) -> Option<u64> {
        self.duration_seconds
            .or_else(|| match (self.started_at, self.ended_at) {
                (Some(s), Some(e)) => u64::try_from((e - s).num_seconds()).ok(),
                _ => None,
            })
    }

    /// A metadata field as a non-empty string.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    pub fn caller_name(&self) -> Option<&str> {
        self.meta_str("caller_name")
    }

    pub fn caller_email(&self) -> Option<&str> {
        self.meta_str("caller_email")
    }
}

/// The kind of a JSON value, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Null,
    String,
    Object,
    Other,
}

impl Shape {
    fn of(v: &Value) -> Shape {
        match v {
            Value::Null => Shape::Null,
            Value::String(_) => Shape::String,
            Value::Object(_) => Shape::Object,
            _ => Shape::Other,
        }
    }
}

/// What validation looks at, from a decoded [`CallEvent`] or from the quick reader
/// (`view.rs`): one set of rules for both.
struct Checked<'a> {
    call_id: &'a str,
    agent_id: &'a str,
    caller_number: Option<&'a str>,
    started_at: Option<DateTime<FixedOffset>>,
    ended_at: Option<DateTime<FixedOffset>>,
    recording_url: Option<&'a str>,
    traceparent: Option<&'a str>,
    details: Option<Shape>,
    caller_name: Option<Shape>,
    caller_email: Option<Shape>,
    platform: Option<&'a str>,
    analysis_data: Option<Shape>,
    raw: Option<Shape>,
}

impl Checked<'_> {
    fn check(&self) -> Result<(), EventError> {
        check_id("call_id", self.call_id)?;
        check_id("agent_id", self.agent_id)?;
        if let Some(p) = self.platform {
            check_id("platform", p)?;
        }
        for (field, shape) in [("analysis.data", self.analysis_data), ("raw", self.raw)] {
            if let Some(s) = shape
                && s != Shape::Object
            {
                return Err(EventError::invalid(field, "must be an object"));
            }
        }
        if let Some(n) = self.caller_number
            && !is_e164(n)
        {
            return Err(EventError::invalid(
                "caller_number",
                format!(
                    "`{}` is not an E.164 number (+ and 2 to 15 digits)",
                    mask_number(n)
                ),
            ));
        }
        if let (Some(s), Some(e)) = (self.started_at, self.ended_at)
            && e < s
        {
            return Err(EventError::invalid("ended_at", "is before started_at"));
        }
        if let Some(u) = self.recording_url {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                _ => {
                    return Err(EventError::invalid(
                        "recording_url",
                        "is not an http(s) URL",
                    ));
                }
            }
        }
        if let Some(tp) = self.traceparent
            && parse_traceparent(tp).is_none()
        {
            return Err(EventError::invalid(
                "traceparent",
                "is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
            ));
        }
        if let Some(d) = self.details
            && !matches!(d, Shape::String | Shape::Object)
        {
            return Err(EventError::invalid(
                "details",
                "must be a string or an object",
            ));
        }
        for (key, shape) in [
            ("caller_name", self.caller_name),
            ("caller_email", self.caller_email),
        ] {
            if let Some(v) = shape
                && !matches!(v, Shape::String | Shape::Null)
            {
                return Err(EventError::invalid(
                    &format!("metadata.{key}"),
                    "must be a string",
                ));
            }
        }
        Ok(())
    }
}

/// An event read and validated, kept as the bytes its producer sent (and the two ids a
/// job needs beside them). A bulk enqueue stores these bytes as they are
/// ([`crate::Job::call_ended_json`]): the event is not kept decoded, nor encoded again.
/// The bytes are the same event: the worker reads them with the same reader, and the
/// reader and validation have accepted them.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent<'a> {
    pub call_id: String,
    pub agent_id: String,
    json: &'a [u8],
}

impl<'a> ValidEvent<'a> {
    /// Accepts what [`CallEvent::parse`] accepts, with the same errors.
    pub fn parse(bytes: &'a [u8], max_bytes: usize) -> Result<ValidEvent<'a>, EventError> {
        precheck(bytes, max_bytes)?;
        let json = bytes.trim_ascii();
        // The quick reader copies nothing; what it refuses is read again in full, which
        // names the field (and decides, should the two readers ever disagree).
        if let Ok(view) = serde_json::from_slice::<view::EventView>(bytes)
            && view.checked().check().is_ok()
        {
            return Ok(ValidEvent {
                call_id: view.call_id.to_owned(),
                agent_id: view.agent_id.to_owned(),
                json,
            });
        }
        let event = CallEvent::parse(bytes, max_bytes)?;
        Ok(ValidEvent {
            call_id: event.call_id,
            agent_id: event.agent_id,
            json,
        })
    }

    /// The event's JSON as sent, without surrounding whitespace.
    pub fn json(&self) -> &'a [u8] {
        self.json
    }
}

/// What is refused before reading: too many bytes, or not an object.
fn precheck(bytes: &[u8], max_bytes: usize) -> Result<(), EventError> {
    if bytes.len() > max_bytes {
        return Err(EventError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    // serde reads a struct from an array too (positionally): only an object is an event.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(EventError::invalid("", "an event must be a JSON object"));
    }
    Ok(())
}

fn check_id(field: &str, v: &str) -> Result<(), EventError> {
    if v.trim().is_empty() {
        return Err(EventError::invalid(field, "must not be empty"));
    }
    if v.len() > MAX_ID_LEN {
        return Err(EventError::invalid(
            field,
            format!("is longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(EventError::invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    Ok(())
}

/// The trace id and flags of a W3C `traceparent`, if it is well formed.
pub fn parse_traceparent(tp: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, span, flags]
            if *version == "00"
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && span.bytes().any(|b| b != b'0') =>
        {
            Some((trace, flags))
        }
        _ => None,
    }
}

/// `+` followed by 2 to 15 digits, the first not zero.
pub fn is_e164(n: &str) -> bool {
    let Some(digits) = n.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Masks a phone number for logs: keeps the last two digits.
pub fn mask_number(n: &str) -> String {
    // Counted in chars: the value is any string a producer sent, not only digits.
    let head = n.chars().count().saturating_sub(2);
    n.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < head && c.is_ascii_digit() {
                '*'
            } else {
                c
            }
        })
        .collect()
}

/// Masks an e-mail address for logs: `j***@example.com`.
pub fn mask_email(e: &str) -> String {
    match e.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"call_id":"call_xyz789","agent_id":"agent_abc123","caller_number":"+14155551234",
        "duration_seconds":230,"summary":"s","transcript":"t",
        "recording_url":"https://api.thinnest.ai/calls/call_xyz789/recording",
        "metadata":{"order_id":"12345","caller_name":"John Smith","caller_email":"john@example.com"}}"#;

    #[test]
    fn parses_the_seed_event() {
        let e = CallEvent::parse(SEED.as_bytes(), 1 << 20).unwrap();
        assert_eq!(e.caller_email(), Some("john@example.com"));
        assert_eq!(e.duration(), Some(230));
    }

    /// The quick reader behind `ValidEvent` agrees with `CallEvent` where they could
    /// drift apart: numbers out of range, `null`s, repeated keys, escapes, serde_json's
    /// raw-value key, wrong types of fields that are only type-checked.
    #[test]
    fn the_quick_reader_accepts_and_refuses_what_call_event_does() {
        let base = r#""call_id":"c","agent_id":"a""#;
        let cases = [
            (r#""metadata":{"caller_name":1e400}"#, false),
            (r#""metadata":{"n":[1,{"x":-1e999}]}"#, false),
            (r#""details":[1e400]"#, false),
            (r#""details":5"#, false),
            (r#""details":null"#, true),
            (r#""details":{"a":[1,2.5,"x",null,true]}"#, true),
            (r#""metadata":null"#, false),
            (r#""metadata":{"caller_name":1,"caller_name":"x"}"#, true),
            (r#""metadata":{"caller_name":"x","caller_name":1}"#, false),
            (r#""metadata":{"caller_email":null}"#, true),
            (
                r#""metadata":{"x":{"$serde_json::private::RawValue":"[1]"}}"#,
                true,
            ),
            (
                r#""metadata":{"x":{"$serde_json::private::RawValue":5}}"#,
                false,
            ),
            (r#""call_id":"d""#, false),
            (r#""summary":5"#, false),
            (r#""transcript":"a\"b\\c\n\u00e9\ud83d\ude00""#, true),
            (r#""transcript":"\ud800""#, false),
            (r#""agent_name":null,"caller_number":null"#, true),
            (
                r#""started_at":"2026-03-14T16:16:10Z","ended_at":"2026-03-14T16:16:09Z""#,
                false,
            ),
            (r#""started_at":"yesterday""#, false),
            (r#""duration_seconds":-1"#, false),
            (r#""duration_seconds":1.0"#, false),
            (r#""colour":1"#, false),
            (r#""recording_url":"ftp://x/y""#, false),
            (r#""ended_reason":"voicemail","direction":"inbound""#, true),
            (r#""ended_reason":"hung""#, false),
            (r#""direction":"sideways""#, false),
            (
                r#""analysis":{"successful":true,"sentiment":"x","data":{"a":[1e400]}}"#,
                false,
            ),
            (
                r#""analysis":{"successful":null,"sentiment":"x","data":{"a":1}}"#,
                true,
            ),
            (r#""analysis":{"data":[1]}"#, false),
            (r#""analysis":[null,null]"#, false),
            (r#""analysis":[]"#, false),
            (r#""analysis":{"score":1}"#, false),
            (r#""analysis":null,"raw":null"#, true),
            (
                r#""raw":{"a":[1,{"b":null}]},"platform_ended_reason":"x""#,
                true,
            ),
            (r#""raw":"x""#, false),
            (r#""platform":"retell""#, true),
            (r#""platform":"""#, false),
            (r#""platform":"a b""#, false),
        ];
        for (extra, ok) in cases {
            let body = format!("{{{base},{extra}}}");
            let full = CallEvent::parse(body.as_bytes(), 1 << 20).map(|e| (e.call_id, e.agent_id));
            let quick =
                ValidEvent::parse(body.as_bytes(), 1 << 20).map(|v| (v.call_id, v.agent_id));
            assert_eq!(quick, full, "{body}");
            assert_eq!(full.is_ok(), ok, "{body}: {full:?}");
        }
        let escaped = br#"{"call_id":"c\u00e9","agent_id":"a\/b"}"#;
        let v = ValidEvent::parse(escaped, 1 << 20).unwrap();
        assert_eq!(
            (v.call_id.as_str(), v.agent_id.as_str()),
            ("c\u{e9}", "a/b")
        );
    }

    #[test]
    fn nothing_may_follow_the_event() {
        let err = CallEvent::parse(br#"{"call_id":"c","agent_id":"a"} xx"#, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("trailing characters"), "{err}");
        assert!(CallEvent::parse(b"{\"call_id\":\"c\",\"agent_id\":\"a\"} \r\n", 1 << 20).is_ok());
    }

    #[test]
    fn only_an_object_is_an_event() {
        for bad in [r#"["c","a"]"#, r#"  ["c","a",null]"#, "\"c\"", "12"] {
            let err = CallEvent::parse(bad.as_bytes(), 1 << 20).unwrap_err();
            assert!(err.to_string().contains("JSON object"), "{bad}: {err}");
        }
        assert!(CallEvent::parse(br#" {"call_id":"c","agent_id":"a"}"#, 1 << 20).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"agent_id":"a"}"#, "missing field `call_id`"),
            (
                r#"{"call_id":"c","agent_id":"a","colour":1}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","caller_number":"555"}"#,
                "caller_number:",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","duration_seconds":"x"}"#,
                "duration_seconds: invalid type",
            ),
            (
                r#"{"call_id":"","agent_id":"a"}"#,
                "call_id: must not be empty",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","metadata":{"caller_email":5}}"#,
                "metadata.caller_email",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","started_at":"2026-01-01T10:00:00Z","ended_at":"2026-01-01T09:00:00Z"}"#,
                "ended_at",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","recording_url":"ftp://x"}"#,
                "recording_url",
            ),
            (r#"{"call_id":"c","#, "EOF"),
            (
                r#"{"call_id":"c","agent_id":"a","traceparent":"00-zz-1-01"}"#,
                "traceparent:",
            ),
            (
                r#"{"call_id":"c","agent_id":"a","traceparent":"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}"#,
                "traceparent:",
            ),
        ];
        for (input, want) in cases {
            let err = CallEvent::parse(input.as_bytes(), 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{input}: got `{err}`, want `{want}`");
        }
    }

    #[test]
    fn size_limit_is_enforced() {
        let err = CallEvent::parse(SEED.as_bytes(), 10).unwrap_err();
        assert!(matches!(err, EventError::TooLarge { limit: 10, .. }));
    }

    #[test]
    fn duration_from_times() {
        let e = CallEvent::parse(
            br#"{"call_id":"c","agent_id":"a","started_at":"2026-01-01T10:00:00Z","ended_at":"2026-01-01T10:03:50Z"}"#,
            1 << 20,
        )
        .unwrap();
        assert_eq!(e.duration(), Some(230));
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "01"))
        );
        assert_eq!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn masking() {
        assert_eq!(mask_number("+14155551234"), "+*********34");
        assert_eq!(mask_email("john@example.com"), "j***@example.com");
    }
}
