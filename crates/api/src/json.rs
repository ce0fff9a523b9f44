//! Reading JSON bodies as `serde_json::Value`s that refuse a key repeated in one object.
//! `Value` keeps the last of two equal keys without a word, and a typed reader keeps
//! whichever its own rules say: one body, two meanings (`{"all": false, "all": true}`
//! replayed every dead letter). Every JSON body the API reads as a whole goes through
//! [`parse`], so the rule is the same everywhere.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Where a value sits in the document, for the error only: built on the stack as the
/// reader descends, formatted only when a key repeats.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(parent, key) => {
                if matches!(parent, At::Root) {
                    write!(f, "{key}")
                } else {
                    write!(f, "{parent}.{key}")
                }
            }
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A repeated key, by its path (`voice_tools.post_call_follow_up.enabled`).
const DUPLICATE: &str = "duplicate key `";

struct Seed<'a>(At<'a>);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity; serde_json refuses out-of-range numbers.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed(At::Index(&self.0, items.len())))? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE}{}`",
                    At::Key(&self.0, &key)
                )));
            }
            let v = map.next_value_seed(Seed(At::Key(&self.0, &key)))?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Why a body is not one JSON document with unique keys.
#[derive(Debug, PartialEq)]
pub(crate) enum JsonError {
    /// A key repeated within one object, by its path.
    Duplicate { path: String },
    /// Not JSON: serde_json's message without its position, and the position.
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
}

/// Parses one JSON document, refusing a key that appears twice in one object.
pub(crate) fn parse(body: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Seed(At::Root)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    value.map_err(|e| {
        let msg = e.to_string();
        let message = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        match message
            .strip_prefix(DUPLICATE)
            .and_then(|p| p.strip_suffix('`'))
        {
            Some(path) if e.is_data() => JsonError::Duplicate { path: path.into() },
            _ => JsonError::Syntax {
                message,
                line: e.line(),
                column: e.column(),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_repeated_key_is_refused_by_its_path() {
        let cases = [
            (r#"{"all": false, "all": true}"#, "all"),
            (r#"{"a": {"b": 1, "b": 1}}"#, "a.b"),
            (
                r#"{"a": [{}, {"x": [0, {"k": 1, "j": 2, "k": 3}]}]}"#,
                "a[1].x[1].k",
            ),
            (r#"{"a\u0062": 1, "ab": 2}"#, "ab"),
            (r#"[{"": 1, "": 2}]"#, "[0]."),
        ];
        for (body, path) in cases {
            assert_eq!(
                parse(body.as_bytes()),
                Err(JsonError::Duplicate { path: path.into() }),
                "{body}"
            );
        }
    }

    #[test]
    fn anything_else_reads_as_serde_json_reads_it() {
        for body in [
            r#"{"a": 1, "b": {"a": 2}, "c": [{"a": 3}, {"a": 4}]}"#,
            r#"[1, -2, 2.5, 1e300, 18446744073709551615, "x\n", null, true]"#,
            r#""just a string""#,
            "  {}  ",
        ] {
            let want: Value = serde_json::from_str(body).unwrap();
            assert_eq!(parse(body.as_bytes()), Ok(want), "{body}");
        }
        // Key order is kept, as the merge patch keeps it.
        let v = parse(br#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(v.to_string(), r#"{"z":1,"a":2}"#);
        assert_eq!(v, json!({"z": 1, "a": 2}));
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let Err(JsonError::Syntax { line, column, .. }) = parse(b"{\n  \"a\": }") else {
            panic!("not a syntax error")
        };
        assert_eq!((line, column), (2, 8));
        assert!(matches!(parse(b"{} {}"), Err(JsonError::Syntax { .. })));
        assert!(matches!(parse(b""), Err(JsonError::Syntax { .. })));
    }
}
