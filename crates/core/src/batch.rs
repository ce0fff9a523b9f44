//! Reading one or many call-ended events from a request body or a file: one JSON
//! object, a JSON array of objects, or JSON Lines. Every bad item is reported (by array
//! index or line number, with the field) so nothing of a bad batch is enqueued. The CLI
//! and the HTTP API share this one implementation.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::event::{CallEvent, EventError, ValidEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One object or an array of objects.
    Json,
    /// One object per line.
    JsonLines,
}

impl Format {
    /// A whole JSON document (object or array) is `Json`; anything else is read as lines.
    pub fn detect(body: &[u8]) -> Format {
        let t = body.trim_ascii();
        match t.first() {
            Some(b'[') => Format::Json,
            Some(b'{') if serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok() => {
                Format::Json
            }
            _ => Format::JsonLines,
        }
    }
}

/// What a body held: decoded events, or (from [`parse_valid`]) validated events kept
/// as their bytes.
#[derive(Debug)]
pub enum Parsed<E = CallEvent> {
    One(Box<E>),
    Many(Vec<E>),
}

/// What each item of a body is read into.
trait Item<'a>: Sized + Send {
    fn read(bytes: &'a [u8], max_bytes: usize) -> Result<Self, EventError>;
}

impl Item<'_> for CallEvent {
    fn read(bytes: &[u8], max_bytes: usize) -> Result<Self, EventError> {
        CallEvent::parse(bytes, max_bytes)
    }
}

impl<'a> Item<'a> for ValidEvent<'a> {
    fn read(bytes: &'a [u8], max_bytes: usize) -> Result<Self, EventError> {
        ValidEvent::parse(bytes, max_bytes)
    }
}

/// One bad item of a batch.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemError {
    /// 0-based position in a JSON array.
    pub index: Option<usize>,
    /// 1-based line of JSON Lines.
    pub line: Option<usize>,
    /// `invalid_event`, `event_too_large` or `malformed_json`.
    pub error: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.index, self.line) {
            (Some(i), _) => write!(f, "item {i}: ")?,
            (None, Some(l)) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a body was refused as a whole.
#[derive(Debug)]
pub enum BatchError<E = CallEvent> {
    /// The body is not JSON (for a single document).
    Malformed {
        message: String,
        line: usize,
        column: usize,
    },
    /// A single event over the size limit.
    TooLarge { message: String },
    /// A single event that is not valid.
    Invalid { field: String, message: String },
    /// No events at all.
    Empty,
    /// Some items are bad: each is listed; `valid` holds the good ones (for callers that
    /// choose to enqueue those anyway, such as `aftercall enqueue --skip-invalid`).
    Items {
        errors: Vec<ItemError>,
        valid: Vec<E>,
        total: usize,
    },
}

/// Reads and validates every event of `body`.
pub fn parse(body: &[u8], format: Format, max_event_bytes: usize) -> Result<Parsed, BatchError> {
    parse_items(body, format, max_event_bytes)
}

/// [`parse`], keeping each event as its bytes in `body` rather than decoded: for a bulk
/// enqueue, which stores those bytes ([`crate::Job::call_ended_json`]).
pub fn parse_valid(
    body: &[u8],
    format: Format,
    max_event_bytes: usize,
) -> Result<Parsed<ValidEvent<'_>>, BatchError<ValidEvent<'_>>> {
    parse_items(body, format, max_event_bytes)
}

fn parse_items<'a, E: Item<'a>>(
    body: &'a [u8],
    format: Format,
    max: usize,
) -> Result<Parsed<E>, BatchError<E>> {
    match format {
        Format::Json => parse_json(body, max),
        Format::JsonLines => parse_lines(body, max),
    }
}

fn json_value<E>(body: &[u8]) -> Result<serde_json::Value, BatchError<E>> {
    serde_json::from_slice(body).map_err(malformed)
}

fn malformed<E>(e: serde_json::Error) -> BatchError<E> {
    BatchError::Malformed {
        message: strip_position(&e.to_string()),
        line: e.line(),
        column: e.column(),
    }
}

fn parse_json<'a, E: Item<'a>>(body: &'a [u8], max: usize) -> Result<Parsed<E>, BatchError<E>> {
    match body.trim_ascii_start().first() {
        Some(b'{') => {
            if body.len() > max {
                return Err(BatchError::TooLarge {
                    message: too_large(body.len(), max),
                });
            }
            E::read(body, max)
                .map(|e| Parsed::One(Box::new(e)))
                .map_err(|e| {
                    // Not JSON at all is a malformed body, not an invalid event.
                    if let Err(m) = json_value::<E>(body) {
                        return m;
                    }
                    match e {
                        EventError::TooLarge { size, limit } => BatchError::TooLarge {
                            message: too_large(size, limit),
                        },
                        EventError::Invalid { field, message } => {
                            BatchError::Invalid { field, message }
                        }
                    }
                })
        }
        // Each item is read from its own bytes in the body, as a line is.
        Some(b'[') => {
            let items: Vec<&'a RawValue> = serde_json::from_slice(body).map_err(malformed)?;
            let total = items.len();
            let mut events = Vec::with_capacity(total);
            let mut errors = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let bytes = item.get().as_bytes();
                if bytes.first() != Some(&b'{') {
                    errors.push(not_an_object(Some(i), None));
                    continue;
                }
                match E::read(bytes, max) {
                    Ok(e) => events.push(e),
                    Err(e) => errors.push(item_error(Some(i), None, e)),
                }
            }
            finish(events, errors, total)
        }
        _ => {
            json_value::<E>(body)?;
            Err(BatchError::Invalid {
                field: String::new(),
                message: "the body must be a JSON object or an array of objects".into(),
            })
        }
    }
}

/// Bodies from this size on are parsed on several threads (a bulk file from the CLI).
const PARALLEL_FROM: usize = 256 * 1024;

fn parse_lines<'a, E: Item<'a>>(body: &'a [u8], max: usize) -> Result<Parsed<E>, BatchError<E>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if body.len() < PARALLEL_FROM || threads < 2 {
        let (events, errors, total) = parse_line_range(body, 0, max);
        return finish(events, errors, total);
    }
    // Cut into one piece per thread at line ends; each piece knows its first line's
    // number, and the results are joined in order.
    let mut pieces = Vec::with_capacity(threads);
    let (mut start, mut first_line) = (0, 0);
    for t in 1..=threads {
        let mut end = (body.len() * t / threads).max(start);
        while end < body.len() && body[end - 1] != b'\n' {
            end += 1;
        }
        let piece = &body[start..end];
        pieces.push((piece, first_line));
        first_line += newlines(piece);
        start = end;
    }
    let parts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pieces
            .into_iter()
            .map(|(piece, first)| s.spawn(move || parse_line_range(piece, first, max)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a parser thread panicked"))
            .collect()
    });
    let total = parts.iter().map(|(e, _, _)| e.len()).sum();
    let (mut events, mut errors, mut total) = (Vec::with_capacity(total), Vec::new(), 0);
    for (e, err, n) in parts {
        events.extend(e);
        errors.extend(err);
        total += n;
    }
    finish(events, errors, total)
}

/// Parses the lines of `body`, numbering them from `first_line + 1`.
fn parse_line_range<'a, E: Item<'a>>(
    body: &'a [u8],
    first_line: usize,
    max: usize,
) -> (Vec<E>, Vec<ItemError>, usize) {
    let mut events = Vec::with_capacity(newlines(body) + 1);
    let mut errors = Vec::new();
    let mut total = 0;
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let i = first_line + i;
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
        // One pass for a good line; a bad one is parsed again as plain JSON to tell
        // malformed JSON and non-objects from an event's field errors.
        let err = match E::read(line, max) {
            Ok(e) => {
                events.push(e);
                continue;
            }
            Err(e) => e,
        };
        match (json_value::<E>(line), err) {
            (Err(BatchError::Malformed { message, .. }), _) => errors.push(ItemError {
                index: None,
                line: n,
                error: "malformed_json",
                field: String::new(),
                message,
            }),
            (Ok(v), e) if v.is_object() => errors.push(item_error(None, n, e)),
            _ => errors.push(not_an_object(None, n)),
        }
    }
    (events, errors, total)
}

fn newlines(body: &[u8]) -> usize {
    body.iter().filter(|b| **b == b'\n').count()
}

fn finish<E>(
    events: Vec<E>,
    errors: Vec<ItemError>,
    total: usize,
) -> Result<Parsed<E>, BatchError<E>> {
    if total == 0 {
        return Err(BatchError::Empty);
    }
    if errors.is_empty() {
        return Ok(Parsed::Many(events));
    }
    Err(BatchError::Items {
        errors,
        valid: events,
        total,
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

pub fn too_large(size: usize, limit: usize) -> String {
    format!("the event is {size} bytes, over the limit of {limit} bytes per event")
}

/// serde_json ends syntax errors with " at line L column C"; callers report those apart.
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

    fn items(body: &str, format: Format) -> Vec<ItemError> {
        match parse(body.as_bytes(), format, 200) {
            Err(BatchError::Items { errors, .. }) => errors,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn detects_the_format() {
        assert_eq!(Format::detect(b"  {\n\"a\": 1\n}\n"), Format::Json);
        assert_eq!(Format::detect(b"[1]"), Format::Json);
        assert_eq!(Format::detect(b"{\"a\":1}\n{\"a\":2}\n"), Format::JsonLines);
        assert_eq!(Format::detect(b"{\"a\":"), Format::JsonLines);
    }

    #[test]
    fn single_array_and_lines() {
        assert!(
            matches!(parse(OK.as_bytes(), Format::Json, 200), Ok(Parsed::One(e)) if e.call_id == "c1")
        );
        let arr = format!("[{OK},{}]", OK.replace("c1", "c2"));
        assert!(
            matches!(parse(arr.as_bytes(), Format::Json, 200), Ok(Parsed::Many(v)) if v.len() == 2)
        );
        let lines = format!("{OK}\r\n\n{}\n", OK.replace("c1", "c2"));
        assert!(
            matches!(parse(lines.as_bytes(), Format::JsonLines, 200), Ok(Parsed::Many(v)) if v.len() == 2)
        );
    }

    #[test]
    fn every_bad_item_is_reported_with_its_position_and_field() {
        let errors = items(
            &format!(
                r#"[{OK},{{"call_id":"c2"}},{OK},{{"call_id":"c3","agent_id":"a","colour":1}}]"#
            ),
            Format::Json,
        );
        let got: Vec<_> = errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(got, [(Some(1), "agent_id"), (Some(3), "colour")]);
        assert!(errors[0].message.contains("agent_id"));
        let big = format!(
            r#"{{"call_id":"c9","agent_id":"a","summary":"{}"}}"#,
            "x".repeat(300)
        );
        let errors = items(
            &format!("{OK}\nnot json\n{big}\n[\"c2\",\"a\"]\n"),
            Format::JsonLines,
        );
        let got: Vec<_> = errors.iter().map(|e| (e.line, e.error)).collect();
        assert_eq!(
            got,
            [
                (Some(2), "malformed_json"),
                (Some(3), "event_too_large"),
                (Some(4), "invalid_event")
            ]
        );
        assert_eq!(
            errors[2].to_string(),
            "line 4: an event must be a JSON object"
        );
    }

    /// A big body is parsed on several threads: same order, same line numbers.
    #[test]
    fn a_big_body_keeps_order_and_line_numbers() {
        let n = 3000;
        let mut body = String::new();
        for i in 1..=n {
            match i {
                1234 | 2999 => body.push_str("{\"call_id\":\"x\"}\n"),
                77 => body.push('\n'),
                _ => body.push_str(&format!(
                    "{{\"call_id\":\"c{i}\",\"agent_id\":\"a\",\"summary\":\"{}\"}}\n",
                    "s".repeat(80)
                )),
            }
        }
        assert!(body.len() > PARALLEL_FROM);
        let Err(BatchError::Items {
            errors,
            valid,
            total,
        }) = parse(body.as_bytes(), Format::JsonLines, 1 << 20)
        else {
            panic!("two bad lines")
        };
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(1234), Some(2999)]);
        assert_eq!((valid.len(), total), (n - 3, n - 1));
        let ids: Vec<_> = valid.iter().map(|e| e.call_id.as_str()).collect();
        let want: Vec<String> = (1..=n)
            .filter(|i| ![77, 1234, 2999].contains(i))
            .map(|i| format!("c{i}"))
            .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn whole_body_errors() {
        assert!(matches!(
            parse(b"{\"call_id\":", Format::Json, 200),
            Err(BatchError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"[]", Format::Json, 200),
            Err(BatchError::Empty)
        ));
        assert!(matches!(
            parse(b"\n\n", Format::JsonLines, 200),
            Err(BatchError::Empty)
        ));
        assert!(matches!(
            parse(b"42", Format::Json, 200),
            Err(BatchError::Invalid { .. })
        ));
        let big = format!(
            r#"{{"call_id":"c","agent_id":"a","summary":"{}"}}"#,
            "x".repeat(300)
        );
        assert!(matches!(
            parse(big.as_bytes(), Format::Json, 200),
            Err(BatchError::TooLarge { .. })
        ));
    }
}
