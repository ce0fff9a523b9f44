//! The pages: overview, agents, agent editor, calls, dead letters, destinations. Each reads what it
//! shows from the API (in-process, as the signed-in caller) and renders a template.

use aftercall_api::{ApiError, Scope};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::Value as Safe;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::history::{self, Sample, Summary};
use crate::session::{Session, authenticate, login_url};
use crate::view::{ctx, path_segment};
use crate::{Dash, editor, proxy};

/// The signed-in reader of a page. Without a valid token the browser is sent to the login
/// page (and back here after it); any other refusal (over its rate limit) is shown as an
/// error page.
pub(crate) struct Viewer(pub(crate) Session);

impl FromRequestParts<Dash> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Viewer, Response> {
        authenticate(dash, &parts.headers, Scope::Read)
            .await
            .map(Viewer)
            .map_err(|e| match e {
                ApiError::MissingToken | ApiError::InvalidToken => {
                    let here = parts.uri.path_and_query().map_or("/ui/", |p| p.as_str());
                    Redirect::to(&login_url(here)).into_response()
                }
                other => error_page(dash, None, other.status(), &other.to_string()),
            })
    }
}

fn error_page(
    dash: &Dash,
    session: Option<&Session>,
    status: StatusCode,
    message: &str,
) -> Response {
    let body = dash.views.render(
        "error.html",
        json!({"status": status.as_u16(), "message": message}),
    );
    dash.views.page(status, session, "Error", "", body)
}

/// An API answer that is not the one a page expected, as an error page.
fn api_error(dash: &Dash, session: &Session, status: StatusCode, body: &Value) -> Response {
    let message = body["message"].as_str().unwrap_or("the API call failed");
    error_page(dash, Some(session), status, message)
}

/// `?done=replayed-3` after an action, as a sentence (only the ones we write).
fn flash(done: Option<&str>) -> Option<String> {
    let (verb, n) = done?.split_once('-')?;
    let n: u64 = n.parse().ok()?;
    let noun = if n == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    let queued = if n == 1 { "it is" } else { "they are" };
    match verb {
        "replayed" => Some(format!("Replayed {n} {noun}; {queued} queued again.")),
        "purged" => Some(format!("Purged {n} {noun}.")),
        _ => None,
    }
}

pub(crate) async fn not_found(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    uri: Uri,
) -> Response {
    error_page(
        &dash,
        Some(&session),
        StatusCode::NOT_FOUND,
        &format!("There is no page {}.", uri.path()),
    )
}

// ---- overview ----

async fn overview_ctx(dash: &Dash, session: &Session) -> Safe {
    let (status, stats) = proxy::call(dash, session, Method::GET, "/stats", None).await;
    let now = aftercall_queue::now_ms();
    let error = if status == StatusCode::OK {
        let parsed: Result<aftercall_queue::Stats, _> = serde_json::from_value(stats.clone());
        if let Ok(s) = parsed {
            dash.history.record(Sample::of(&s, now));
        }
        None
    } else {
        Some(
            stats["message"]
                .as_str()
                .unwrap_or("the stats are unavailable")
                .to_string(),
        )
    };
    let buckets = history::buckets(&dash.history.snapshot(), now);
    let summary = Summary::of(&buckets);
    let data = json!({
        "stats": if error.is_none() { stats } else { Value::Null },
        "error": error,
        "finished": summary.finished,
        "dead": summary.dead,
        "rate": summary.failure_rate().map(|r| format!("{r:.1} %")),
        "since": summary.since_ms,
        "full_hour": summary.since_ms.is_some_and(|s| s <= now - history::WINDOW_MS + 60_000),
        "updated": now,
    });
    ctx(
        data,
        [(
            "chart",
            Safe::from_safe_string(history::chart_svg(&buckets)),
        )],
    )
}

pub(crate) async fn overview(State(dash): State<Dash>, Viewer(session): Viewer) -> Response {
    let live_ctx = overview_ctx(&dash, &session).await;
    let body = dash
        .views
        .render("overview_live.html", &live_ctx)
        .and_then(|live| {
            dash.views.render(
                "overview.html",
                ctx(json!({}), [("live", Safe::from_safe_string(live))]),
            )
        });
    dash.views
        .page(StatusCode::OK, Some(&session), "Overview", "overview", body)
}

pub(crate) async fn overview_live(State(dash): State<Dash>, Viewer(session): Viewer) -> Response {
    let live_ctx = overview_ctx(&dash, &session).await;
    dash.views.fragment("overview_live.html", &live_ctx)
}

// ---- agents ----

#[derive(Deserialize)]
pub(crate) struct AgentsQuery {
    open: Option<String>,
}

pub(crate) async fn agents(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Query(q): Query<AgentsQuery>,
) -> Response {
    if let Some(id) = q.open.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        return Redirect::to(&format!("/ui/agents/{}", path_segment(id))).into_response();
    }
    let page = ("agents.html", "Agents", "agents");
    list_page(&dash, &session, "/agents", "agents", page).await
}

/// A page listing what the API answers at `path`: its `key` list, shown by the page's
/// `(template, title, active menu entry)` with whether the viewer is an admin.
async fn list_page(
    dash: &Dash,
    session: &Session,
    path: &str,
    key: &str,
    (template, title, active): (&str, &str, &str),
) -> Response {
    let (status, body) = proxy::call(dash, session, Method::GET, path, None).await;
    if status != StatusCode::OK {
        return api_error(dash, session, status, &body);
    }
    let page = dash.views.render(
        template,
        json!({key: body[key], "admin": session.is_admin()}),
    );
    dash.views
        .page(StatusCode::OK, Some(session), title, active, page)
}

/// Who may not be contacted: the API's opt-out list, with add and remove for admins.
pub(crate) async fn opt_outs(State(dash): State<Dash>, Viewer(session): Viewer) -> Response {
    let page = ("opt_outs.html", "Opt-outs", "opt-outs");
    list_page(&dash, &session, "/opt-outs", "items", page).await
}

#[derive(Deserialize)]
pub(crate) struct AgentQuery {
    saved: Option<String>,
}

pub(crate) async fn agent(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Path(agent_id): Path<String>,
    Query(q): Query<AgentQuery>,
) -> Response {
    let path = format!("/agents/{}", path_segment(&agent_id));
    let (status, body) = proxy::call(&dash, &session, Method::GET, &path, None).await;
    let (cfg, exists) = match status {
        StatusCode::OK => (body, true),
        StatusCode::NOT_FOUND => (json!({}), false),
        _ => return api_error(&dash, &session, status, &body),
    };
    let follow_up = &cfg["voice_tools"]["post_call_follow_up"];
    let empty = Vec::new();
    let actions = follow_up["actions"].as_array().unwrap_or(&empty);
    let variables = editor::variables();
    let card = |i: usize, a: &Map<String, Value>| {
        let mut c = editor::card(i, a);
        c["variables"] = Value::Array(variables.clone());
        dash.views.render("action.html", c)
    };
    let mut cards = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let a = a.as_object().cloned().unwrap_or_default();
        match card(i, &a) {
            Ok(html) => cards.push(Safe::from_safe_string(html)),
            Err(e) => return dash.views.page(StatusCode::OK, None, "", "", Err(e)),
        }
    }
    let mut blanks = Vec::new();
    for t in editor::TYPES {
        match card(0, &editor::blank(t.kind)) {
            Ok(html) => blanks.push(ctx(
                json!({"type": t.kind}),
                [("html", Safe::from_safe_string(html))],
            )),
            Err(e) => return dash.views.page(StatusCode::OK, None, "", "", Err(e)),
        }
    }
    let text = |k: &str| cfg[k].as_str().unwrap_or("").to_string();
    let data = json!({
        "agent_id": agent_id,
        "exists": exists,
        "saved": q.saved.is_some(),
        "admin": session.is_admin(),
        "name": text("name"),
        "date_format": text("date_format"),
        "utc_offset": text("utc_offset"),
        "email_from": text("email_from"),
        "enabled": follow_up["enabled"].as_bool().unwrap_or(false),
        "types": editor::TYPES.iter().map(|t| json!({"kind": t.kind, "title": t.title})).collect::<Vec<_>>(),
        "variables": variables,
    });
    let title = format!("Agent {agent_id}");
    let page = dash.views.render(
        "agent.html",
        ctx(
            data,
            [("cards", Safe::from(cards)), ("blanks", Safe::from(blanks))],
        ),
    );
    dash.views
        .page(StatusCode::OK, Some(&session), &title, "agents", page)
}

// ---- calls ----

#[derive(Deserialize)]
pub(crate) struct CallQuery {
    call_id: Option<String>,
}

/// The states a job stays in.
const FINAL: &[&str] = &["delivered", "skipped", "dead", "purged"];

/// True when nothing more will happen to the call without an operator.
fn settled(call: &Value) -> bool {
    let parent = call["call_ended"]["state"]["state"].as_str().unwrap_or("");
    let actions_done = call["actions"].as_array().is_none_or(|a| {
        a.iter()
            .all(|j| FINAL.contains(&j["state"]["state"].as_str().unwrap_or("")))
    });
    matches!(parent, "fanned_out" | "skipped" | "dead" | "purged") && actions_done
}

/// The timeline's context: the call, or why there is none.
async fn call_ctx(dash: &Dash, session: &Session, call_id: &str) -> Result<Value, Box<Response>> {
    let path = format!("/calls/{}", path_segment(call_id));
    let (status, body) = proxy::call(dash, session, Method::GET, &path, None).await;
    match status {
        StatusCode::OK => {
            let mut jobs = Vec::new();
            let mut parent = body["call_ended"].clone();
            parent["label"] = "Call ended".into();
            jobs.push(parent);
            for a in body["actions"].as_array().into_iter().flatten() {
                let mut a = a.clone();
                a["label"] = match a["action_index"].as_u64() {
                    Some(i) => format!("Action {} · {}", i + 1, a["kind"].as_str().unwrap_or("")),
                    None => a["kind"].as_str().unwrap_or("action").to_string(),
                }
                .into();
                jobs.push(a);
            }
            Ok(json!({
                "call_id": call_id,
                "call": body,
                "jobs": jobs,
                "settled": settled(&body),
                "updated": aftercall_queue::now_ms(),
            }))
        }
        StatusCode::NOT_FOUND => Ok(json!({"call_id": call_id, "missing": true})),
        _ => Err(Box::new(api_error(dash, session, status, &body))),
    }
}

pub(crate) async fn calls(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Query(q): Query<CallQuery>,
) -> Response {
    let call_id = q
        .call_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let live = match call_id {
        None => None,
        Some(id) => match call_ctx(&dash, &session, id).await {
            Ok(ctx) => match dash.views.render("call_live.html", ctx) {
                Ok(html) => Some(Safe::from_safe_string(html)),
                Err(e) => return dash.views.page(StatusCode::OK, None, "", "", Err(e)),
            },
            Err(r) => return *r,
        },
    };
    let page = dash.views.render(
        "calls.html",
        ctx(json!({"call_id": call_id}), [("live", Safe::from(live))]),
    );
    let title = match call_id {
        Some(id) => format!("Call {id}"),
        None => "Calls".into(),
    };
    dash.views
        .page(StatusCode::OK, Some(&session), &title, "calls", page)
}

pub(crate) async fn call_live(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Query(q): Query<CallQuery>,
) -> Response {
    let call_id = q.call_id.unwrap_or_default();
    match call_ctx(&dash, &session, call_id.trim()).await {
        Ok(ctx) => dash.views.fragment("call_live.html", ctx),
        Err(r) => *r,
    }
}

// ---- dead letters ----

#[derive(Deserialize, Default)]
pub(crate) struct DlqQuery {
    agent: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    error: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

const PAGE_SIZE: usize = 50;

pub(crate) async fn dead_letters(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Query(q): Query<DlqQuery>,
) -> Response {
    // The filter as given, without blanks: it goes to the listing and, as JSON, to a
    // bulk replay or purge of "everything this filter matches".
    let mut filter = Map::new();
    for (k, v) in [
        ("agent", &q.agent),
        ("action", &q.action),
        ("since", &q.since),
        ("until", &q.until),
        ("error", &q.error),
    ] {
        if let Some(v) = v.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            filter.insert(k.into(), Value::String(v.into()));
        }
    }
    let query = |extra: &[(&str, &str)]| {
        // The serializer is not `Send`: keep it out of the awaits.
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &filter {
            q.append_pair(k, v.as_str().unwrap_or(""));
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        q.finish()
    };
    let mut api_extra = vec![("limit", PAGE_SIZE.to_string())];
    if let Some(c) = q.cursor.as_deref().filter(|c| !c.is_empty()) {
        api_extra.push(("cursor", c.to_string()));
    }
    let api_extra: Vec<(&str, &str)> = api_extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let path = format!("/dead-letters?{}", query(&api_extra));
    let (status, body) = proxy::call(&dash, &session, Method::GET, &path, None).await;
    let (items, next_cursor, error) = match status {
        StatusCode::OK => (body["items"].clone(), body["next_cursor"].clone(), None),
        StatusCode::BAD_REQUEST => (
            json!([]),
            Value::Null,
            body["message"].as_str().map(str::to_string),
        ),
        _ => return api_error(&dash, &session, status, &body),
    };
    let next = next_cursor
        .as_str()
        .map(|c| format!("/ui/dead-letters?{}", query(&[("cursor", c)])));
    // The agent ids, to suggest in the filter.
    let (_, agents) = proxy::call(&dash, &session, Method::GET, "/agents", None).await;
    let ctx = json!({
        "f": filter,
        "filtered": !filter.is_empty(),
        "filter_json": Value::Object(filter.clone()).to_string(),
        "items": items,
        "next": next,
        "paged": q.cursor.is_some(),
        "error": error,
        "admin": session.is_admin(),
        "flash": flash(q.done.as_deref()),
        "agents": agents["agents"],
        "actions": ["email", "sms", "webhook", "task", "slack", "call_ended"],
        "error_classes": ["http_4xx", "http_5xx", "http_429", "timeout", "connection", "blocked", "lease_expired", "undecodable"],
    });
    let page = dash.views.render("dead_letters.html", ctx);
    dash.views.page(
        StatusCode::OK,
        Some(&session),
        "Dead letters",
        "dead-letters",
        page,
    )
}

pub(crate) async fn dead_letter(
    State(dash): State<Dash>,
    Viewer(session): Viewer,
    Path(job_id): Path<String>,
) -> Response {
    let path = format!("/dead-letters/{}", path_segment(&job_id));
    let (status, body) = proxy::call(&dash, &session, Method::GET, &path, None).await;
    if status == StatusCode::NOT_FOUND {
        let page = dash.views.render(
            "dead_letter.html",
            json!({"job_id": job_id, "missing": body["message"]}),
        );
        return dash.views.page(
            StatusCode::NOT_FOUND,
            Some(&session),
            "Dead letter",
            "dead-letters",
            page,
        );
    }
    if status != StatusCode::OK {
        return api_error(&dash, &session, status, &body);
    }
    let page = dash.views.render(
        "dead_letter.html",
        json!({"job_id": job_id, "r": body, "admin": session.is_admin()}),
    );
    dash.views.page(
        StatusCode::OK,
        Some(&session),
        &format!("Dead letter {job_id}"),
        "dead-letters",
        page,
    )
}

// ---- destinations ----

pub(crate) async fn destinations(State(dash): State<Dash>, Viewer(session): Viewer) -> Response {
    let (status, body) = proxy::call(&dash, &session, Method::GET, "/destinations", None).await;
    if status != StatusCode::OK {
        return api_error(&dash, &session, status, &body);
    }
    // Each pause's kind and name apart, for its resume button.
    let pauses: Vec<Value> = body["pauses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let scope = p["scope"].as_str().unwrap_or_default();
            let (kind, value) = scope.split_once(':').unwrap_or(("destination", scope));
            json!({"scope": scope, "at": p["at"], "kind": kind, "value": value})
        })
        .collect();
    let page = dash.views.render(
        "destinations.html",
        json!({
            "destinations": body["destinations"],
            "pauses": pauses,
            "admin": session.is_admin(),
        }),
    );
    dash.views.page(
        StatusCode::OK,
        Some(&session),
        "Destinations",
        "destinations",
        page,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flashes_are_only_ours() {
        assert_eq!(
            flash(Some("replayed-1")).as_deref(),
            Some("Replayed 1 dead letter; it is queued again.")
        );
        assert_eq!(
            flash(Some("purged-3")).as_deref(),
            Some("Purged 3 dead letters.")
        );
        assert_eq!(flash(Some("hacked-3")), None);
        assert_eq!(flash(Some("purged-x")), None);
        assert_eq!(flash(None), None);
    }

    #[test]
    fn settled_calls() {
        let call = |parent: &str, actions: &[&str]| {
            json!({
                "call_ended": {"state": {"state": parent}},
                "actions": actions.iter().map(|s| json!({"state": {"state": s}})).collect::<Vec<_>>(),
            })
        };
        assert!(settled(&call(
            "fanned_out",
            &["delivered", "dead", "skipped"]
        )));
        assert!(settled(&call("skipped", &[])));
        assert!(!settled(&call("queued", &[])));
        assert!(!settled(&call("fanned_out", &["delivered", "scheduled"])));
        assert!(!settled(&call("fanned_out", &["running"])));
    }
}
