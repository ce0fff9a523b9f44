//! What the derived JSON Schemas (feature `schema`, for the API's OpenAPI document)
//! cannot read off the types: the rules `validate` applies to ids, numbers and
//! durations, written as patterns beside the code that enforces them, and serde's
//! `timezone` alias.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// A character that is neither whitespace nor a control character (`char::is_whitespace`,
/// `char::is_control`): what an id is made of (`event::check_id`).
pub const ID_CHAR: &str =
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// `event::is_e164`: `+`, then 2 to 15 digits, not starting with 0.
pub const E164: &str = r"^\+[1-9][0-9]{1,14}$";

/// `config::parse_duration`: a number of seconds, or with a unit (ms, s, m, h, d).
pub const DURATION: &str = r"^[ \t\n\r]*[0-9]+(ms|s|m|h|d)?[ \t\n\r]*$";

/// An agent or call id: 1 to 256 bytes, no whitespace or control characters. A schema
/// counts characters, so `maxLength` holds the bytes' bound only for ASCII ids.
pub fn id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": crate::event::MAX_ID_LEN,
        "pattern": format!("^{ID_CHAR}+$"),
        "description": "1 to 256 bytes (UTF-8), without whitespace or control characters.",
    })
}

pub fn id(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(id_schema()).expect("an object")
}

/// An optional id (`platform`): an id, or `null` for none.
pub fn optional_id(_: &mut SchemaGenerator) -> Schema {
    let mut s = id_schema();
    s["type"] = json!(["string", "null"]);
    Schema::try_from(s).expect("an object")
}

/// `details`: a string or an object (`null` is no details).
pub fn details(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Key details extracted from the call: a string or an object.",
        "type": ["string", "object", "null"],
    })
}

/// A JSON object (`raw`: the platform's message as it arrived).
pub fn object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["object", "null"]})
}

/// `utc_offset` is also read as `timezone` (serde's alias); both at once is a duplicate.
pub fn timezone_alias(schema: &mut Schema) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(offset) = props.get("utc_offset").cloned() {
        props.insert("timezone".into(), offset);
        schema.insert(
            "not".into(),
            json!({"required": ["utc_offset", "timezone"]}),
        );
    }
}
