//! The route table: every route's method, path, scope, handler and documentation in one
//! place. The router and the OpenAPI document are both built from it, so neither can
//! name a route the other lacks.

use std::time::Instant;

use aftercall_core::intake::Platform;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::ApiState;
use crate::config::Scope;
use crate::error::ApiError;
use crate::extract::RawBody;
use crate::handlers as h;
use crate::platforms;

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
    /// The schema of the type the query is read into: its fields are the parameters.
    pub query: Option<fn(&mut SchemaGenerator) -> Schema>,
    /// Accepted content types, each with the name of its body's schema (`None`: text).
    pub body: Option<&'static [(&'static str, Option<&'static str>)]>,
    /// (status, description, schema) of successful answers.
    pub ok: &'static [(u16, &'static str, Option<&'static str>)],
    /// Client errors besides the ones auth adds (401, 403, 429).
    pub errors: &'static [u16],
    /// OpenAPI links of the first successful answer: (operationId, parameter, where the
    /// answer holds its value), so clients and schemathesis can follow ids.
    pub links: &'static [(&'static str, &'static str, &'static str)],
}

const DOC: Doc = Doc {
    id: "",
    tag: "",
    summary: "",
    query: None,
    body: None,
    ok: &[],
    errors: &[],
    links: &[],
};

const FILTER: &[(&str, Option<&str>)] = &[("application/json", Some("BulkFilter"))];
const SCOPE: &[(&str, Option<&str>)] = &[("application/json", Some("PauseScope"))];

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
                body: Some(&[
                    ("application/json", Some("AgentConfigPatch")),
                    ("application/merge-patch+json", Some("AgentConfigPatch")),
                ]),
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
                errors: &[400, 409, 413, 415, 422],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/agents/{agent_id}/preview",
            admin,
            h::preview_agent,
            Doc {
                id: "previewAgent",
                tag: "agents",
                summary: "What a candidate config (the PATCH body, merged onto the stored config) would do on the agent's most recent stored calls: each action firing or skipped and why, and what it would send. Nothing is sent or stored.",
                query: Some(<h::PreviewQuery as JsonSchema>::json_schema),
                body: Some(&[
                    ("application/json", Some("AgentConfigPatch")),
                    ("application/merge-patch+json", Some("AgentConfigPatch")),
                ]),
                ok: &[(
                    200,
                    "One entry per recent call, newest first.",
                    Some("AgentPreview"),
                )],
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
                body: Some(&[
                    ("application/json", Some("Calls")),
                    ("application/x-ndjson", None),
                ]),
                ok: &[
                    (
                        202,
                        "Enqueued (one event: `Enqueued`; a batch: `BatchResult`).",
                        Some("Ingested"),
                    ),
                    (
                        200,
                        "Every call was seen before; nothing new was enqueued.",
                        Some("Ingested"),
                    ),
                ],
                errors: &[400, 413, 415, 422, 507],
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
            M::DELETE,
            "/calls/{call_id}",
            admin,
            h::erase_call,
            Doc {
                id: "eraseCall",
                tag: "calls",
                summary: "Erases the call's personal data (event, analysis, attempt errors and snippets) and cancels its work in flight; ids, states and outcomes stay, and an audit entry says who and when.",
                ok: &[(200, "What was erased.", Some("Erased"))],
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
                query: Some(<h::ListQuery as JsonSchema>::json_schema),
                ok: &[(200, "A page of dead letters.", Some("DeadLetterPage"))],
                errors: &[400],
                links: &[
                    ("getDeadLetter", "job_id", "$response.body#/items/0/id"),
                    ("replayDeadLetter", "job_id", "$response.body#/items/0/id"),
                    ("deleteDeadLetter", "job_id", "$response.body#/items/0/id"),
                ],
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
                summary: "Re-queues one dead letter with a fresh attempt budget (one past its action's `expires_after` only with `force=true`: 409 otherwise).",
                query: Some(<h::ReplayQuery as JsonSchema>::json_schema),
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
                summary: "Re-queues every dead letter matching a filter (an empty filter needs `\"all\": true`; blank fields are absent).",
                body: Some(FILTER),
                ok: &[(
                    200,
                    "How many were replayed (with `dry_run`, would be).",
                    Some("BulkReplayed"),
                )],
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
                summary: "Purges every dead letter matching a filter (an empty filter needs `\"all\": true`; blank fields are absent).",
                body: Some(FILTER),
                ok: &[(
                    200,
                    "How many were purged (with `dry_run`, would be).",
                    Some("BulkPurged"),
                )],
                errors: &[400, 413, 415],
                ..DOC
            },
        ),
        route(
            M::GET,
            "/destinations",
            read,
            crate::destinations::list,
            Doc {
                id: "listDestinations",
                tag: "destinations",
                summary: "Each destination's health (state, failure streak, last error, held jobs) and the pauses in force.",
                ok: &[(200, "The destinations and pauses.", Some("DestinationList"))],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/destinations/pause",
            admin,
            crate::destinations::pause,
            Doc {
                id: "pauseDestinations",
                tag: "destinations",
                summary: "Pauses the work of a destination, an agent or an action type: it waits (no attempt spent, nothing fails) until resumed.",
                body: Some(SCOPE),
                ok: &[(200, "Paused.", Some("Scoped"))],
                errors: &[400, 413, 415],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/destinations/resume",
            admin,
            crate::destinations::resume,
            Doc {
                id: "resumeDestinations",
                tag: "destinations",
                summary: "Lets paused work go again.",
                body: Some(SCOPE),
                ok: &[(200, "Resumed.", Some("Scoped"))],
                errors: &[400, 404, 413, 415],
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
        route(
            M::GET,
            "/opt-outs",
            read,
            crate::contacts::list_opt_outs,
            Doc {
                id: "listOptOuts",
                tag: "contacts",
                summary: "Every opted-out contact (channel and address), across agents: no SMS or e-mail is sent to them (docs/rules.md).",
                ok: &[(200, "The opt-outs.", Some("OptOutList"))],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/opt-outs",
            admin,
            crate::contacts::add_opt_out,
            Doc {
                id: "addOptOut",
                tag: "contacts",
                summary: "Records an opt-out: the contact receives no follow-up on that channel from any agent.",
                body: Some(&[("application/json", Some("OptOutRequest"))]),
                ok: &[(
                    200,
                    "Recorded (or recorded before: `added` false).",
                    Some("OptOutAdded"),
                )],
                errors: &[400, 413, 415, 422],
                ..DOC
            },
        ),
        route(
            M::DELETE,
            "/opt-outs",
            admin,
            crate::contacts::remove_opt_out,
            Doc {
                id: "removeOptOut",
                tag: "contacts",
                summary: "Removes an opt-out (the contact opted in again).",
                query: Some(<crate::contacts::OptOutQuery as JsonSchema>::json_schema),
                ok: &[(204, "Removed.", None)],
                errors: &[400, 404, 422],
                ..DOC
            },
        ),
        route(
            M::POST,
            "/ingest/twilio/inbound",
            None,
            crate::contacts::twilio_inbound,
            Doc {
                id: "ingestTwilioInbound",
                tag: "intake",
                summary: "Twilio's incoming-message webhook, signed with `X-Twilio-Signature` (AFTERCALL_TWILIO_AUTH_TOKEN; the URL as AFTERCALL_TWILIO_INBOUND_URL): STOP (and Twilio's other opt-out words) from a number adds its SMS opt-out, START removes it. No bearer token.",
                body: Some(&[("application/x-www-form-urlencoded", Some("TwilioInbound"))]),
                ok: &[(200, "Empty TwiML.", None)],
                errors: &[401],
                ..DOC
            },
        ),
        ingest_route(
            "/ingest/retell",
            "ingestRetell",
            "Retell's webhook (`call_ended`, `call_analyzed`; others are ignored), signed with `x-retell-signature` (AFTERCALL_RETELL_API_KEY). No bearer token.",
            Platform::Retell,
        ),
        ingest_route(
            "/ingest/vapi",
            "ingestVapi",
            "Vapi's server messages (`end-of-call-report`; others are ignored), with a Bearer Token credential, the legacy `x-vapi-secret` (AFTERCALL_VAPI_SECRET) or an HMAC credential (AFTERCALL_VAPI_HMAC_SECRET). No bearer token of the API.",
            Platform::Vapi,
        ),
        ingest_route(
            "/ingest/bland",
            "ingestBland",
            "Bland's post-call webhook, signed with `X-Webhook-Signature` (AFTERCALL_BLAND_WEBHOOK_SECRET). No bearer token.",
            Platform::Bland,
        ),
    ]
}

/// A platform's intake route: public (the platform signs instead of a token).
fn ingest_route(
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    platform: Platform,
) -> Route {
    route(
        Method::POST,
        path,
        None,
        move |s: State<ApiState>, h: HeaderMap, b: RawBody| platforms::ingest(s, platform, h, b),
        Doc {
            id,
            tag: "intake",
            summary,
            body: Some(&[("application/json", Some("PlatformMessage"))]),
            ok: &[
                (
                    202,
                    "A new call: enqueued, waiting for its analysis, or released by it.",
                    Some("IngestAnswer"),
                ),
                (
                    200,
                    "Acknowledged: a duplicate, a late analysis, or a message aftercall does not use.",
                    Some("IngestAnswer"),
                ),
            ],
            errors: &[401, 422, 429, 503, 507],
            ..DOC
        },
    )
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::openapi::openapi;

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
