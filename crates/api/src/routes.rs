//! The route table: every route's method, path, scope, handler and documentation in one
//! place. The router and the OpenAPI document are both built from it, so neither can
//! name a route the other lacks.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde_json::{Map, Value, json};

use crate::ApiState;
use crate::config::Scope;
use crate::error::ApiError;
use crate::handlers as h;

/// One route. `scope: None` is public (no token).
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub scope: Option<Scope>,
    pub doc: Doc,
    handler: MethodRouter<ApiState>,
}

/// What the OpenAPI document says about a route.
pub(crate) struct Doc {
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// (name, description) of query parameters.
    pub query: &'static [(&'static str, &'static str)],
    /// Accepted content types and the schema of the body.
    pub body: Option<(&'static [&'static str], &'static str)>,
    /// (status, description, schema) of successful answers.
    pub ok: &'static [(u16, &'static str, Option<&'static str>)],
    /// Client errors besides the ones auth adds (401, 403, 429).
    pub errors: &'static [u16],
}

const DOC: Doc = Doc {
    id: "",
    tag: "",
    summary: "",
    query: &[],
    body: None,
    ok: &[],
    errors: &[],
};

const JSON: &[&str] = &["application/json"];
const DLQ_FILTER: &[(&str, &str)] = &[
    ("agent", "Only this agent id."),
    (
        "action",
        "Only this kind: email, sms, webhook, task or call_ended.",
    ),
    (
        "since",
        "Dead since: RFC 3339, Unix milliseconds, or an age such as 2h.",
    ),
    (
        "until",
        "Dead until: RFC 3339, Unix milliseconds, or an age such as 10m.",
    ),
    (
        "error",
        "Error class (http_4xx, http_5xx, http_429, timeout, connection, blocked, lease_expired, undecodable) or text in the last error.",
    ),
    ("limit", "Page size, 1 to 1000 (default 50)."),
    ("cursor", "`next_cursor` of the previous page."),
];

fn route<H, T>(
    method: Method,
    path: &'static str,
    scope: Option<Scope>,
    handler: H,
    doc: Doc,
) -> Route
where
    H: Handler<T, ApiState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        scope,
        doc,
        handler: on(filter, handler),
    }
}

/// Every route of the API. Add routes here and only here.
pub(crate) fn routes() -> Vec<Route> {
    use Method as M;
    let (read, ingest, admin) = (Some(Scope::Read), Some(Scope::Ingest), Some(Scope::Admin));
    vec![
        route(
            M::GET,
            "/healthz",
            None,
            h::healthz,
            Doc {
                id: "healthz",
                tag: "health",
                summary: "The process is up.",
                ok: &[(200, "Up.", None)],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/readyz",
            None,
            h::readyz,
            Doc {
                id: "readyz",
                tag: "health",
                summary: "Redis answers: ready to serve.",
                ok: &[(200, "Ready.", None)],
                errors: &[503],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/openapi.json",
            None,
            h::openapi_json,
            Doc {
                id: "openapi",
                tag: "health",
                summary: "This document.",
                ok: &[(200, "OpenAPI 3.1 document.", None)],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/agents",
            read,
            h::list_agents,
            Doc {
                id: "listAgents",
                tag: "agents",
                summary: "Every configured agent: id, name, whether follow-up is enabled, number of actions.",
                ok: &[(200, "The agents, by id.", Some("AgentList"))],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/agents/{agent_id}",
            read,
            h::get_agent,
            Doc {
                id: "getAgent",
                tag: "agents",
                summary: "An agent's stored config, secrets redacted.",
                ok: &[(200, "The config.", Some("AgentConfig"))],
                errors: &[404],
                ..DOC
            },
        ),
        route(
            M::PATCH,
            "/agents/{agent_id}",
            admin,
            h::patch_agent,
            Doc {
                id: "patchAgent",
                tag: "agents",
                summary: "Creates or updates an agent's config with a JSON merge patch (RFC 7396); redacted placeholders keep the stored secrets.",
                body: Some((
                    &["application/json", "application/merge-patch+json"],
                    "AgentConfig",
                )),
                ok: &[
                    (
                        200,
                        "Updated; the whole config, secrets redacted.",
                        Some("AgentConfig"),
                    ),
                    (
                        201,
                        "Created; the whole config, secrets redacted.",
                        Some("AgentConfig"),
                    ),
                ],
                errors: &[400, 413, 415, 422],
                ..DOC
            },
        ),
        route(
            M::DELETE,
            "/agents/{agent_id}",
            admin,
            h::delete_agent,
            Doc {
                id: "deleteAgent",
                tag: "agents",
                summary: "Deletes an agent's config; its later calls are skipped.",
                ok: &[(204, "Deleted.", None)],
                errors: &[404],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/calls",
            ingest,
            h::post_calls,
            Doc {
                id: "postCalls",
                tag: "calls",
                summary: "Ingests call-ended events: one object, a JSON array, or JSON Lines. All are validated before any is enqueued; idempotent on call_id.",
                body: Some((&["application/json", "application/x-ndjson"], "CallEvent")),
                ok: &[
                    (
                        202,
                        "Enqueued (one event: `Enqueued`; a batch: `BatchResult`).",
                        Some("Enqueued"),
                    ),
                    (
                        200,
                        "Every call was seen before; nothing new was enqueued.",
                        Some("Enqueued"),
                    ),
                ],
                errors: &[400, 413, 415, 422],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/calls/{call_id}",
            read,
            h::get_call,
            Doc {
                id: "getCall",
                tag: "calls",
                summary: "A call's call-ended job and every action's state and attempts.",
                ok: &[(200, "The call.", Some("CallStatus"))],
                errors: &[404],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/dead-letters",
            read,
            h::list_dead_letters,
            Doc {
                id: "listDeadLetters",
                tag: "dead-letters",
                summary: "Dead letters, oldest first, filtered and paged.",
                query: DLQ_FILTER,
                ok: &[(200, "A page of dead letters.", Some("DeadLetterPage"))],
                errors: &[400],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/dead-letters/{job_id}",
            read,
            h::get_dead_letter,
            Doc {
                id: "getDeadLetter",
                tag: "dead-letters",
                summary: "One dead letter with every attempt.",
                ok: &[(200, "The dead letter.", Some("JobRecord"))],
                errors: &[404],
                ..DOC
            },
        ),
        route(
            M::DELETE,
            "/dead-letters/{job_id}",
            admin,
            h::delete_dead_letter,
            Doc {
                id: "deleteDeadLetter",
                tag: "dead-letters",
                summary: "Purges one dead letter for good.",
                ok: &[(204, "Purged.", None)],
                errors: &[404, 409],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/dead-letters/{job_id}/replay",
            admin,
            h::replay_one,
            Doc {
                id: "replayDeadLetter",
                tag: "dead-letters",
                summary: "Re-queues one dead letter with a fresh attempt budget.",
                ok: &[(200, "Replayed.", Some("Replayed"))],
                errors: &[404, 409],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/dead-letters/replay",
            admin,
            h::replay_matching,
            Doc {
                id: "replayDeadLetters",
                tag: "dead-letters",
                summary: "Re-queues every dead letter matching a filter (an empty filter needs `\"all\": true`).",
                body: Some((JSON, "BulkFilter")),
                ok: &[(200, "How many were replayed.", Some("Replayed"))],
                errors: &[400, 413, 415],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/dead-letters/purge",
            admin,
            h::purge_matching,
            Doc {
                id: "purgeDeadLetters",
                tag: "dead-letters",
                summary: "Purges every dead letter matching a filter (an empty filter needs `\"all\": true`).",
                body: Some((JSON, "BulkFilter")),
                ok: &[(200, "How many were purged.", Some("Purged"))],
                errors: &[400, 413, 415],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/stats",
            read,
            h::stats,
            Doc {
                id: "stats",
                tag: "stats",
                summary: "Queue depths and recent throughput.",
                ok: &[(200, "The numbers.", Some("Stats"))],
                ..DOC
            },
        ),
    ]
}

/// What the guard needs to know about its route.
#[derive(Clone)]
struct Guard {
    state: ApiState,
    method: Method,
    path: &'static str,
    scope: Option<Scope>,
}

/// Authenticates, rate-limits and authorizes, then logs the request once, by route
/// template (never by raw URI, never with a token).
async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut by = None;
    let resp = match g.scope {
        None => next.run(req).await,
        Some(needed) => match g.state.gate.check(req.headers(), needed) {
            Ok(caller) => {
                by = Some(caller.name.clone());
                req.extensions_mut().insert(caller);
                next.run(req).await
            }
            Err(e) => e.into_response(),
        },
    };
    let mut resp = resp;
    if g.scope.is_some() {
        // Whatever needs a token (configs, events, dead letters) is not for caches,
        // errors included: a 404 names the id that was asked for.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let (status, elapsed_ms) = (resp.status().as_u16(), started.elapsed().as_millis() as u64);
    let by = by.as_deref().unwrap_or("-");
    if g.scope.is_none() {
        tracing::debug!(method = %g.method, route = g.path, status, elapsed_ms, "api request");
    } else {
        tracing::info!(method = %g.method, route = g.path, status, by, elapsed_ms, "api request");
    }
    resp
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Every answer of the API, fallbacks and errors included: JSON is never sniffed into
/// something a browser would render.
async fn nosniff(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The API's router. Every route comes from [`routes`].
pub fn router(state: ApiState) -> Router {
    let mut router = Router::new();
    for r in routes() {
        let g = Guard {
            state: state.clone(),
            method: r.method,
            path: r.path,
            scope: r.scope,
        };
        router = router.route(
            r.path,
            r.handler
                .route_layer(middleware::from_fn_with_state(g, guard)),
        );
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::map_response(nosniff))
        .with_state(state)
}

/// The OpenAPI 3.1 document of every route in [`routes`].
pub fn openapi() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build_openapi).clone()
}

fn error_description(code: u16) -> &'static str {
    match code {
        400 => {
            "Malformed JSON, a bad query or filter (`malformed_json`, `invalid_query`, `empty_filter`, `empty_batch`, ...)."
        }
        401 => "No token or an unknown one (`unauthorized`); see `WWW-Authenticate`.",
        403 => "The token's scope is too low for this route (`forbidden`).",
        404 => "Not found (`not_found`).",
        409 => "The job is not a dead letter (`conflict`).",
        413 => {
            "The body is over AFTERCALL_API_MAX_BODY (`body_too_large`) or an event is over AFTERCALL_MAX_EVENT_BYTES (`event_too_large`)."
        }
        415 => "Unsupported content type (`unsupported_media_type`).",
        422 => {
            "Validation failed (`invalid_config`, `invalid_event`, `invalid_events`), with the field path."
        }
        429 => "Rate limit exceeded (`rate_limited`); see `Retry-After`.",
        503 => "Redis is unreachable.",
        _ => "Error.",
    }
}

fn build_openapi() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let d = &r.doc;
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(d.query.iter().map(|(name, desc)| json!({"name": name, "in": "query", "required": false, "description": desc, "schema": {"type": "string"}})));
        let mut responses = Map::new();
        for (code, desc, schema) in d.ok {
            let mut resp = json!({"description": desc});
            if let Some(s) = schema {
                resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}});
            }
            responses.insert(code.to_string(), resp);
        }
        let mut errors: Vec<u16> = d.errors.to_vec();
        match r.scope {
            Some(Scope::Read) => errors.extend([401, 429]),
            Some(_) => errors.extend([401, 403, 429]),
            None => {}
        }
        errors.sort_unstable();
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
        if let Some((types, schema)) = d.body {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| {
                    (
                        t.to_string(),
                        json!({"schema": {"$ref": format!("#/components/schemas/{schema}")}}),
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
            "description": "Agent follow-up configs, call ingestion, per-call status, dead letters and stats. Bearer tokens have a scope: read < ingest < admin; each route names the scope it needs in `x-required-scope`.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let str_ = json!({"type": "string"});
    let int = json!({"type": "integer"});
    json!({
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "Stable code: unauthorized, forbidden, rate_limited, not_found, conflict, malformed_json, invalid_query, invalid_filter, empty_filter, empty_batch, unsupported_media_type, body_too_large, event_too_large, invalid_config, invalid_event, invalid_events, unavailable, internal, ..."},
                "message": str_,
                "field": {"type": "string", "description": "Path of the offending field, e.g. voice_tools.post_call_follow_up.actions[1].url."},
                "line": int, "column": int,
                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ItemError"}},
            },
        },
        "ItemError": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "index": {"type": "integer", "description": "Position in a JSON array, from 0."},
                "line": {"type": "integer", "description": "Line of a JSON Lines body, from 1."},
                "error": {"type": "string", "enum": ["invalid_event", "malformed_json", "event_too_large"]},
                "field": str_, "message": str_,
            },
        },
        "Status": {"type": "object", "properties": {"status": str_}},
        "AgentConfig": {
            "type": "object",
            "description": "The seed's body (`voice_tools.post_call_follow_up` with `enabled` and `actions`) plus optional `name`, `date_format`, `utc_offset`, `email_from`. Secrets read back as `whsec_********`, header values as `********`.",
            "properties": {
                "name": str_, "date_format": str_, "utc_offset": str_, "email_from": str_,
                "voice_tools": {"type": "object", "properties": {"post_call_follow_up": {"type": "object", "properties": {
                    "enabled": {"type": "boolean"},
                    "actions": {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string", "enum": ["email", "sms", "webhook", "task"]}}}},
                }}}},
            },
        },
        "AgentList": {"type": "object", "properties": {"agents": {"type": "array", "items": {"type": "object", "properties": {
            "agent_id": str_, "name": str_, "enabled": {"type": "boolean"}, "actions": int,
        }}}}},
        "CallEvent": {
            "type": "object",
            "description": "A call-ended event (or, in a batch, an array of them / one per line).",
            "required": ["call_id", "agent_id"],
            "properties": {
                "call_id": str_, "agent_id": str_, "caller_number": str_, "agent_name": str_,
                "started_at": {"type": "string", "format": "date-time"}, "ended_at": {"type": "string", "format": "date-time"},
                "duration_seconds": int, "summary": str_, "transcript": str_, "recording_url": str_,
                "details": {}, "metadata": {"type": "object"},
            },
        },
        "Enqueued": {"type": "object", "properties": {"call_id": str_, "job_id": str_, "duplicate": {"type": "boolean"}}},
        "BatchResult": {"type": "object", "properties": {
            "accepted": int, "duplicates": int,
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Enqueued"}},
        }},
        "JobRecord": {
            "type": "object",
            "properties": {
                "id": str_, "kind": str_, "call_id": str_, "agent_id": str_, "action_index": int,
                "state": {"type": "object", "properties": {"state": {"type": "string", "enum": ["queued", "running", "scheduled", "delivered", "skipped", "dead", "purged", "fanned_out"]}, "at": int, "reason": str_, "error": str_, "run_at": int}},
                "attempts": int, "max_attempts": int,
                "history": {"type": "array", "items": {"type": "object"}},
                "job": {"type": "object", "description": "The job as enqueued, secrets redacted."},
            },
        },
        "CallStatus": {"type": "object", "properties": {
            "call_id": str_,
            "call_ended": {"$ref": "#/components/schemas/JobRecord"},
            "actions": {"type": "array", "items": {"$ref": "#/components/schemas/JobRecord"}},
        }},
        "DeadLetterPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/JobRecord"}},
            "next_cursor": str_,
        }},
        "BulkFilter": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "all": {"type": "boolean", "description": "Required (true) when no filter is given."},
                "agent": str_, "action": str_,
                "since": {"description": "RFC 3339, an age such as 2h, or Unix milliseconds.", "type": ["string", "integer"]},
                "until": {"description": "RFC 3339, an age such as 2h, or Unix milliseconds.", "type": ["string", "integer"]},
                "error": str_,
            },
        },
        "Replayed": {"type": "object", "properties": {"replayed": int}},
        "Purged": {"type": "object", "properties": {"purged": int}},
        "Stats": {"type": "object", "properties": {
            "queue": str_, "queued": int, "running": int, "scheduled": int, "dead": int,
            "finished_last_minute": int, "finished_last_hour": int, "calls": int, "agents": int,
        }},
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn document_lists_each_route_once_and_refs_resolve() {
        let doc = openapi();
        let table: BTreeSet<(String, String)> = routes()
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_string()))
            .collect();
        assert_eq!(table.len(), routes().len(), "a route is listed twice");
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(documented, table);
        let ids: BTreeSet<&str> = routes().iter().map(|r| r.doc.id).collect();
        assert_eq!(ids.len(), routes().len(), "operationIds must be unique");
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "missing schema {name}"
            );
        }
    }
}
