//! The OpenAPI 3.1 document. Paths, methods, scopes and statuses come from the route
//! table (`routes::routes`); request bodies and query parameters are the JSON Schemas of
//! the types the handlers read (schemars, which follows their serde attributes), with
//! the rules serde does not see written beside those types; answers are the schemas of
//! the types the handlers write (core's and the queue's `schema` features).
//!
//! The document is true to the server both ways (schemathesis checks it,
//! `tests/schemathesis.rs`): what it allows the server accepts, what it forbids the
//! server refuses. One exception, said in the document: a body that fits the schema may
//! still fail a rule no schema can hold (template syntax, a URL, an e-mail address, a
//! time zone, `ended_at` before `started_at`), with `422`.

use std::sync::OnceLock;

use aftercall_core::{AgentConfig, CallEvent};
use aftercall_queue::{CallStatus, Enqueued, JobRecord, Page, Stats};
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::config::Scope;
use crate::handlers::{self, BulkBody, KINDS, MAX_MS};
use crate::routes::routes;

/// A dead-letter page's `next_cursor`: a position ([`openapi_for`] gives a partitioned
/// queue's, a position per partition).
pub(crate) const CURSOR: &str = r"^[+-]?[0-9]{1,18}$";

/// Unix milliseconds, or an age: what `parse_time` reads besides RFC 3339.
/// Whitespace only (or nothing): what counts as an absent filter field.
const BLANK: &str = r"^[ \t\n\x0C\r]*$";
const MS_OR_AGE: &str = r"^[ \t\n\r]*([+-]?[0-9]{1,18}|[0-9]{1,12}(ms|s|m|h|d))[ \t\n\r]*$";

/// The `action` filter: a job kind.
pub(crate) fn kind(_: &mut SchemaGenerator) -> Schema {
    let kinds: Vec<Value> = KINDS.iter().map(|k| json!(k)).collect();
    // A blank value is no filter (`aftercall_queue::present`).
    json_schema!({"anyOf": [
        {"type": "string", "enum": kinds},
        {"type": "string", "pattern": BLANK},
        {"type": "null"},
    ]})
}

/// A time as text (a query parameter): RFC 3339, Unix milliseconds, or an age.
pub(crate) fn time_text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": MS_OR_AGE},
        {"type": "string", "pattern": BLANK},
        {"type": "null"},
    ]})
}

/// A time in a JSON body: the same texts, or Unix milliseconds as a number.
pub(crate) fn time_arg(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"anyOf": [
        {"type": "integer", "minimum": -MAX_MS, "maximum": MAX_MS},
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": MS_OR_AGE},
        {"type": "string", "pattern": BLANK},
        {"type": "null"},
    ]})
}

/// A bulk filter names something, or says `"all": true` (`handlers::bulk_filter`).
pub(crate) fn filter_not_empty(schema: &mut Schema) {
    let mut branches = vec![json!({"required": ["all"], "properties": {"all": {"const": true}}})];
    // Blank or null is no filter (`aftercall_queue::present`).
    let absent = json!({"anyOf": [{"type": "null"}, {"type": "string", "pattern": BLANK}]});
    for field in ["agent", "action", "since", "until", "error"] {
        branches.push(json!({"required": [field], "properties": {field: {"not": absent}}}));
    }
    schema.insert("anyOf".into(), Value::Array(branches));
}

/// The document, built once.
pub fn openapi() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build).clone()
}

/// The document for a queue of `partitions` partitions: its dead-letter cursors hold a
/// position per partition (`12.0.7`), which a one-partition server refuses.
pub fn openapi_for(partitions: usize) -> Value {
    let mut doc = openapi();
    if partitions > 1 {
        let cursor = format!(r"^[0-9]{{1,18}}(\.[0-9]{{1,18}}){{{}}}$", partitions - 1);
        replace_string(&mut doc, CURSOR, &cursor);
    }
    doc
}

/// Replaces every string `from` in `v` by `to`.
fn replace_string(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(a) => a.iter_mut().for_each(|x| replace_string(x, from, to)),
        Value::Object(o) => o.values_mut().for_each(|x| replace_string(x, from, to)),
        _ => {}
    }
}

/// Schemas under `#/components/schemas`, of what the server reads (`for_deserialize`:
/// requests) or writes (`for_serialize`: answers).
fn generator(reads: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    if reads {
        settings.for_deserialize().into_generator()
    } else {
        settings.for_serialize().into_generator()
    }
}

/// Query parameters from the schema of the type the handler reads them into. A query
/// has no `null`: an absent parameter is the type's `None`.
fn query_parameters(schema: Schema) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut prop = prop.clone();
            let description = prop
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            strip_null(&mut prop);
            let mut p = json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": prop});
            if !description.is_null() {
                p["description"] = description;
            }
            p
        })
        .collect()
}

fn strip_null(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = o.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let t = types[0].clone();
            o.insert("type".into(), t);
        }
    }
    if let Some(Value::Array(values)) = o.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(Value::Array(alts)) = o.get_mut("anyOf") {
        alts.retain(|a| a != &json!({"type": "null"}));
    }
    o.remove("default");
}

/// The objects a merge patch merges into, key by key (anything else it replaces whole).
const MERGED: [&str; 3] = ["AgentConfig", "VoiceTools", "PostCallFollowUp"];

/// `<Name>Patch` for each merged object: every member optional, `null` to remove it
/// (also a member the config does not have: removing nothing is no error); objects are
/// patches in turn; arrays, such as `actions`, replace the stored ones and so are whole.
fn merge_patch_schemas(defs: &mut Map<String, Value>) {
    for name in MERGED {
        let mut patch = defs[name].clone();
        let o = patch.as_object_mut().expect("an object schema");
        o.remove("required");
        o.remove("not");
        o.insert("additionalProperties".into(), json!({"type": "null"}));
        o.insert(
            "description".into(),
            json!(format!(
                "A JSON merge patch (RFC 7396) of {name}: members merge one by one, `null` removes one."
            )),
        );
        if let Some(Value::Object(props)) = o.get_mut("properties") {
            for prop in props.values_mut() {
                if let Some(p) = prop.as_object_mut() {
                    p.remove("default");
                }
                patch_refs(prop);
                if !takes_null(prop) {
                    *prop = json!({"anyOf": [prop.take(), {"type": "null"}]});
                }
            }
        }
        defs.insert(format!("{name}Patch"), patch);
    }
}

/// Whether a schema already allows `null` (an `Option`'s, as schemars writes them).
fn takes_null(schema: &Value) -> bool {
    let null = json!("null");
    match (&schema["type"], &schema["anyOf"]) {
        (Value::Array(types), _) => types.contains(&null),
        (_, Value::Array(alts)) => alts.iter().any(|a| a["type"] == null),
        _ => false,
    }
}

fn patch_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
                && MERGED.contains(&name)
            {
                *r = format!("{r}Patch");
            }
            o.values_mut().for_each(patch_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(patch_refs),
        _ => {}
    }
}

fn error_description(code: u16) -> &'static str {
    match code {
        400 => {
            "Malformed JSON, a key repeated in an object, a bad path, query or filter (`malformed_json`, `duplicate_key`, `invalid_path`, `invalid_query`, `invalid_filter`, `empty_filter`, `empty_batch`, ...)."
        }
        401 => {
            "No token or an unknown one (`unauthorized`); see `WWW-Authenticate`. On `/ingest/*`: a missing, forged or stale signature, or no credentials configured for the platform."
        }
        403 => "The token's scope is too low for this route (`forbidden`).",
        404 => "Not found (`not_found`).",
        409 => {
            "The job is not a dead letter, or the agent kept changing during the patch (`conflict`)."
        }
        413 => {
            "The body is over AFTERCALL_API_MAX_BODY (`body_too_large`) or an event is over AFTERCALL_MAX_EVENT_BYTES (`event_too_large`)."
        }
        415 => "Unsupported content type (`unsupported_media_type`).",
        422 => {
            "Validation failed (`invalid_config`, `invalid_event`, `invalid_events`), with the field path. The body may fit the schema and still fail a rule no schema holds: template syntax, a URL, an e-mail address, a time zone or date format, `ended_at` before `started_at`."
        }
        429 => "Rate limit exceeded (`rate_limited`); see `Retry-After`.",
        503 => {
            "Redis is unreachable (`unavailable`); see `Retry-After`. On `POST /calls`, `enqueued` of `total` events were stored and `first_not_enqueued` names the next: send the same body again to finish."
        }
        507 => {
            "Redis is out of memory (`insufficient_storage`): `enqueued` of `total` events were stored, `first_not_enqueued` names the next; send the same body again once memory is freed."
        }
        _ => "Error.",
    }
}

fn build() -> Value {
    let mut generator = self::generator(true);
    generator.subschema_for::<AgentConfig>();
    generator.subschema_for::<CallEvent>();
    generator.subschema_for::<BulkBody>();
    generator.subschema_for::<crate::contacts::OptOutBody>();
    let mut schemas = generator.take_definitions(true);
    merge_patch_schemas(&mut schemas);
    schemas.insert(
        "Calls".into(),
        json!({
            "description": "One call-ended event, or a batch of them: all are validated before any is enqueued.",
            "anyOf": [
                {"$ref": "#/components/schemas/CallEvent"},
                {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/CallEvent"}},
            ],
        }),
    );
    // Answers: what the server writes, so the serializing side of the same types.
    let mut answers = self::generator(false);
    let page = answers.subschema_for::<Page<JobRecord>>();
    answers.subschema_for::<crate::error::Body<'static>>();
    answers.subschema_for::<handlers::Status>();
    answers.subschema_for::<handlers::AgentList>();
    answers.subschema_for::<Enqueued>();
    answers.subschema_for::<handlers::BatchResult>();
    answers.subschema_for::<CallStatus>();
    answers.subschema_for::<Stats>();
    answers.subschema_for::<handlers::Replayed>();
    answers.subschema_for::<handlers::Purged>();
    answers.subschema_for::<handlers::BulkReplayed>();
    answers.subschema_for::<handlers::BulkPurged>();
    answers.subschema_for::<crate::platforms::IngestAnswer>();
    answers.subschema_for::<aftercall_queue::Erased>();
    answers.subschema_for::<handlers::AgentPreview>();
    answers.subschema_for::<crate::contacts::OptOutList>();
    answers.subschema_for::<crate::contacts::OptOutAdded>();
    answers.subschema_for::<crate::destinations::DestinationList>();
    answers.subschema_for::<crate::destinations::Scoped>();
    for (name, schema) in answers.take_definitions(true) {
        // A request type answered back (AgentConfig) keeps its reading schema: what the
        // server writes, it reads.
        schemas.entry(name).or_insert(schema);
    }
    schemas.insert("DeadLetterPage".into(), page.to_value());
    let one = |name: &str, what: &str| {
        let mut v = aftercall_core::schema::id_schema();
        v["description"] = json!(what);
        json!({"type": "object", "required": [name], "additionalProperties": false,
               "properties": {name: v}})
    };
    schemas.insert(
        "PauseScope".into(),
        json!({
            "description": "What to pause or resume: exactly one of a destination, an agent or an action type.",
            "oneOf": [
                one("destination", "A destination: a webhook host, `smtp`, `sms`, `task:<provider>`."),
                one("agent", "An agent id."),
                one("action", "An action type: webhook, email, sms, task."),
            ],
        }),
    );
    schemas.insert(
        "PlatformMessage".into(),
        json!({"type": "object", "description": "The platform's own message, as it sends it (see docs/platforms.md)."}),
    );
    schemas.insert(
        "TwilioInbound".into(),
        json!({"type": "object", "description": "Twilio's incoming-message fields, as it posts them (From, To, Body, MessageSid, …).", "properties": {"From": {"type": "string"}, "Body": {"type": "string"}}, "additionalProperties": {"type": "string"}}),
    );
    schemas.insert(
        "Ingested".into(),
        json!({"anyOf": [{"$ref": "#/components/schemas/Enqueued"}, {"$ref": "#/components/schemas/BatchResult"}]}),
    );

    let mut paths = Map::new();
    for r in routes() {
        let d = &r.doc;
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": aftercall_core::schema::id_schema()}))
            .collect();
        let has_path_id = !params.is_empty();
        if let Some(query) = d.query {
            params.extend(query_parameters(query(&mut generator)));
        }
        let mut responses = Map::new();
        for (i, (code, desc, schema)) in d.ok.iter().enumerate() {
            let mut resp = json!({"description": desc});
            if let Some(s) = schema {
                resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}});
            }
            if i == 0 && !d.links.is_empty() {
                let links: Map<String, Value> = d
                    .links
                    .iter()
                    .map(|(op, param, from)| {
                        (
                            op.to_string(),
                            json!({"operationId": op, "parameters": {*param: from}}),
                        )
                    })
                    .collect();
                resp["links"] = Value::Object(links);
            }
            responses.insert(code.to_string(), resp);
        }
        let mut errors: Vec<u16> = d.errors.to_vec();
        if has_path_id || d.query.is_some() || d.body.is_some() {
            // A path that is not UTF-8 once decoded, a bad query, a body that is not JSON.
            errors.push(400);
        }
        if d.body.is_some() {
            errors.extend([413, 415]);
        }
        match r.scope {
            Some(Scope::Read) => errors.extend([401, 429, 503]),
            Some(_) => errors.extend([401, 403, 429, 503]),
            None => {}
        }
        errors.sort_unstable();
        errors.dedup();
        for code in errors {
            let schema = if code == 503 && r.scope.is_none() {
                "Status"
            } else {
                "Error"
            };
            responses.insert(code.to_string(), json!({"description": error_description(code), "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}));
        }
        let mut op = json!({
            "operationId": d.id,
            "tags": [d.tag],
            "summary": d.summary,
            "responses": responses,
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(types) = d.body {
            let content: Map<String, Value> = types
                .iter()
                .map(|(t, schema)| {
                    (
                        t.to_string(),
                        json!({"schema": schema.map_or_else(
                            || json!({"type": "string", "description": "JSON Lines: one call-ended event per line."}),
                            |s| json!({"$ref": format!("#/components/schemas/{s}")}),
                        )}),
                    )
                })
                .collect();
            op["requestBody"] = json!({"required": true, "content": content});
        }
        match r.scope {
            None => op["security"] = json!([]),
            Some(s) => op["x-required-scope"] = json!(s.as_str()),
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "aftercall API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Agent follow-up configs, call ingestion, per-call status, dead letters and stats. Bearer tokens have a scope: read < ingest < admin; each route names the scope it needs in `x-required-scope`. A JSON body may not repeat a key within an object (400 `duplicate_key`).",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitioned_queue_s_cursor_has_a_position_per_partition() {
        assert_eq!(openapi_for(1), openapi());
        let text = openapi_for(3).to_string();
        assert!(!text.contains(CURSOR), "every cursor pattern replaced");
        assert!(
            text.contains(r#""^[0-9]{1,18}(\\.[0-9]{1,18}){2}$""#),
            "{text}"
        );
    }
}
