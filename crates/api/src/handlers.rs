//! Route handlers: HTTP in, one `Queue` operation, HTTP out. Nothing here decides
//! anything the CLI would decide differently.

use std::time::Duration;

use aftercall_queue::{BulkFilter, DlqFilter, Enqueued, JobRecord, Page, QueueError, present};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Id, Params, RawBody};
use crate::ingest::{BodyFormat, Calls, parse_calls};
use crate::patch::{apply_agent_patch, redact_record};

type Result<T, E = ApiError> = std::result::Result<T, E>;

// ---- health ----

/// What the health routes answer.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Status")]
pub(crate) struct Status {
    /// `ok`, `ready` or `unavailable` (and `starting` while the process waits for Redis).
    status: &'static str,
    /// What is risky about the Redis, when ready: eviction allowed, no persistence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

pub(crate) async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok",
        warnings: Vec::new(),
    })
}

pub(crate) async fn readyz(State(s): State<ApiState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), s.queue.ping()).await {
        Ok(Ok(())) => Json(Status {
            status: "ready",
            warnings: s.queue.warnings().to_vec(),
        })
        .into_response(),
        failed => {
            let error = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer within 2 s".to_string(),
            };
            // Probes repeat; WARN, and the body says no more than "not ready".
            tracing::warn!(%error, "not ready: Redis is unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Status {
                    status: "unavailable",
                    warnings: Vec::new(),
                }),
            )
                .into_response()
        }
    }
}

pub(crate) async fn openapi_json(State(s): State<ApiState>) -> Json<Value> {
    Json(crate::openapi::openapi_for(s.queue.partitions()))
}

// ---- agents ----

/// `GET /agents`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct AgentList {
    agents: Vec<AgentSummary>,
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, JsonSchema)]
pub(crate) struct AgentSummary {
    agent_id: String,
    name: Option<String>,
    enabled: bool,
    actions: usize,
}

pub(crate) async fn list_agents(State(s): State<ApiState>) -> Result<Json<AgentList>> {
    let ids = s.queue.list_agents().await?;
    // One read per agent, a few at a time; an agent deleted meanwhile is left out.
    let agents: Vec<AgentSummary> = futures::stream::iter(ids)
        .map(|id| {
            let q = s.queue.clone();
            async move { q.get_agent(&id).await.map(|c| (id, c)) }
        })
        .buffered(16)
        .try_filter_map(|(agent_id, c)| async move {
            Ok(c.map(|c| {
                let f = c.follow_up();
                AgentSummary {
                    agent_id,
                    name: c.name.clone(),
                    enabled: f.is_some_and(|f| f.enabled),
                    actions: f.map_or(0, |f| f.actions.len()),
                }
            }))
        })
        .try_collect()
        .await?;
    Ok(Json(AgentList { agents }))
}

pub(crate) async fn get_agent(State(s): State<ApiState>, Id(id): Id) -> Result<Response> {
    match s.queue.get_agent(&id).await? {
        Some(c) => Ok(Json(c.redacted()).into_response()),
        None => Err(no_agent(&id)),
    }
}

pub(crate) async fn patch_agent(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Id(id): Id,
    body: RawBody,
) -> Result<Response> {
    check_agent_id(&id)?;
    let patch = body.json()?;
    // Read, merge, and store only if nobody changed it meanwhile; else merge again.
    let mut tries = 0;
    let (cfg, created) = loop {
        let (stored, raw) = s.queue.get_agent_versioned(&id).await?;
        let cfg = apply_agent_patch(stored.as_ref(), &patch).map_err(ApiError::InvalidConfig)?;
        if s.queue.set_agent_if(&id, raw.as_deref(), &cfg).await? {
            break (cfg, stored.is_none());
        }
        tries += 1;
        if tries == 5 {
            return Err(ApiError::Conflict(format!(
                "agent `{id}` kept changing while this patch was applied; try again"
            )));
        }
    };
    tracing::info!(agent_id = %id, by = %caller.name, created, "agent config saved");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(cfg.redacted())).into_response())
}

pub(crate) async fn delete_agent(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Id(id): Id,
) -> Result<StatusCode> {
    if !s.queue.delete_agent(&id).await? {
        return Err(no_agent(&id));
    }
    tracing::info!(agent_id = %id, by = %caller.name, "agent config deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn no_agent(id: &str) -> ApiError {
    ApiError::NotFound(format!("agent `{id}` has no configuration"))
}

/// Events name agents with ids that have no spaces or control characters and are at
/// most 256 bytes (core's rule); a config under any other id could never be used.
fn check_agent_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::BadRequest {
            code: "invalid_path",
            message: "agent_id must be 1 to 256 bytes without spaces or control characters".into(),
        });
    }
    Ok(())
}

// ---- calls ----

#[derive(Serialize, JsonSchema)]
pub(crate) struct BatchResult {
    /// Events enqueued now.
    accepted: usize,
    /// Events whose call was seen before: nothing new was enqueued for them.
    duplicates: usize,
    results: Vec<Enqueued>,
}

pub(crate) async fn post_calls(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: RawBody,
) -> Result<Response> {
    let format = body
        .content_type
        .as_deref()
        .and_then(BodyFormat::from_content_type)
        .ok_or_else(|| {
            ApiError::UnsupportedMediaType(format!(
                "`{}`; send application/json or application/x-ndjson",
                body.content_type.as_deref().unwrap_or("none")
            ))
        })?;
    match parse_calls(&body.bytes, format, s.queue.config().max_event_bytes)? {
        Calls::One(event) => {
            let call_id = event.call_id.clone();
            let r = s
                .queue
                .enqueue_valid(&[*event])
                .await
                .map_err(|e| ApiError::enqueue_failed(e, 1, |_| call_id.clone()))?
                .remove(0);
            tracing::info!(call_id = %r.call_id, job_id = %r.job_id, duplicate = r.duplicate, by = %caller.name, "call ingested");
            let status = if r.duplicate {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(r)).into_response())
        }
        Calls::Many(events) => {
            let results = s.queue.enqueue_valid(&events).await.map_err(|e| {
                ApiError::enqueue_failed(e, events.len(), |i| events[i].call_id.clone())
            })?;
            let duplicates = results.iter().filter(|r| r.duplicate).count();
            let accepted = results.len() - duplicates;
            tracing::info!(accepted, duplicates, by = %caller.name, "calls ingested");
            let status = if accepted > 0 {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(BatchResult {
                    accepted,
                    duplicates,
                    results,
                }),
            )
                .into_response())
        }
    }
}

pub(crate) async fn erase_call(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Id(call_id): Id,
) -> Result<Response> {
    let Some(mut erased) = s.queue.erase_call(&call_id, &caller.name).await? else {
        return Err(ApiError::NotFound(format!("call `{call_id}` is unknown")));
    };
    if let Some(dir) = s.outbox.clone() {
        let ids = std::mem::take(&mut erased.ids);
        erased.outbox_files =
            tokio::task::spawn_blocking(move || aftercall_actions::outbox::erase(&dir, &ids))
                .await
                .map_err(|e| ApiError::Outbox(e.to_string()))?
                .map_err(|e| ApiError::Outbox(e.to_string()))?;
    }
    tracing::info!(call_id = %erased.call_id, jobs = erased.jobs, cancelled = erased.cancelled, by = %caller.name, "call erased");
    Ok(Json(erased).into_response())
}

pub(crate) async fn get_call(State(s): State<ApiState>, Id(call_id): Id) -> Result<Response> {
    let Some(mut status) = s.queue.call_status(&call_id).await? else {
        return Err(ApiError::NotFound(format!("call `{call_id}` is unknown")));
    };
    status.call_ended = redact_record(status.call_ended);
    status.actions = status.actions.into_iter().map(redact_record).collect();
    Ok(Json(status).into_response())
}

// ---- dead letters ----

pub(crate) const KINDS: &[&str] = &["email", "sms", "webhook", "task", "slack", "call_ended"];

/// `GET /dead-letters` query. Its schema is the document's query parameters.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this agent id.
    agent: Option<String>,
    /// Only this kind.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::kind")]
    action: Option<String>,
    /// Dead since: RFC 3339, Unix milliseconds, or an age such as 2h.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::time_text")]
    since: Option<String>,
    /// Dead until: RFC 3339, Unix milliseconds, or an age such as 10m.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::time_text")]
    until: Option<String>,
    /// Error class (http_4xx, http_5xx, http_429, timeout, connection, blocked,
    /// lease_expired, undecodable) or text in the last error.
    error: Option<String>,
    /// Page size (default 50).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[schemars(regex(pattern = crate::openapi::CURSOR))]
    cursor: Option<String>,
}

/// The largest Unix milliseconds a JSON number may give (2^53 - 1, 285,000 years): every
/// integer up to it is exact as a JSON reader's double, so `1400.0` and `1400` agree.
pub(crate) const MAX_MS: i64 = (1 << 53) - 1;

/// A time given as RFC 3339 text, an age (`2h`), or Unix milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum TimeArg {
    Ms(i64),
    /// JSON has one kind of number: `1400.0` is the integer 1400 (as JSON Schema says).
    Float(f64),
    Text(String),
}

/// Body of `POST /dead-letters/replay` and `/purge`. `null` is the same as absent.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BulkFilter", transform = crate::openapi::filter_not_empty)]
pub(crate) struct BulkBody {
    /// Every dead letter: required (true) when no filter is given.
    #[serde(default)]
    all: bool,
    /// Only this agent id.
    agent: Option<String>,
    /// Only this kind.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::kind")]
    action: Option<String>,
    /// Dead since: RFC 3339, an age such as 2h, or Unix milliseconds.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::time_arg")]
    since: Option<TimeArg>,
    /// Dead until: RFC 3339, an age such as 2h, or Unix milliseconds.
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::time_arg")]
    until: Option<TimeArg>,
    /// Error class or text in the last error.
    error: Option<String>,
    /// Count what would be touched, touch nothing.
    #[serde(default)]
    dry_run: bool,
    /// Replay only: also replay dead letters past their action's `expires_after`
    /// (docs/rules.md); without it they stay dead and are listed in `expired`.
    #[serde(default)]
    force: bool,
}

/// `POST /agents/{agent_id}/preview` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    /// How many of the agent's most recent calls (1 to 100; default 20).
    #[schemars(range(min = 1, max = 100))]
    limit: Option<usize>,
}

/// What a candidate config would do, call by call.
#[derive(Serialize, JsonSchema)]
pub(crate) struct AgentPreview {
    agent_id: String,
    /// The agent's most recent stored calls, newest first.
    calls: Vec<CallPreview>,
}

#[serde_with::skip_serializing_none]
#[derive(Serialize, JsonSchema)]
pub(crate) struct CallPreview {
    call_id: String,
    /// Why the call would fan out to nothing (follow-up disabled, no actions), if so.
    skipped: Option<String>,
    /// Per action: `index`, `type`, `fires`, and the rendered `output`, or the
    /// `reason` it would not fire, or the `error` it would end in.
    actions: Vec<serde_json::Value>,
}

pub(crate) async fn preview_agent(
    State(s): State<ApiState>,
    Id(id): Id,
    Params(q): Params<PreviewQuery>,
    body: RawBody,
) -> Result<Response> {
    check_agent_id(&id)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "limit: must be between 1 and 100".into(),
        });
    }
    let patch = body.json()?;
    let stored = s.queue.get_agent(&id).await?;
    let cfg = apply_agent_patch(stored.as_ref(), &patch).map_err(ApiError::InvalidConfig)?;
    let events = s.queue.recent_calls(&id, limit, 5_000).await?;
    let now = chrono::Utc::now();
    let calls = events
        .into_iter()
        .map(|event| preview_call(&cfg, event, now))
        .collect();
    Ok(Json(AgentPreview {
        agent_id: id,
        calls,
    })
    .into_response())
}

/// One stored call under `cfg` (aftercall_actions::preview::call).
fn preview_call(
    cfg: &aftercall_core::AgentConfig,
    event: aftercall_core::CallEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> CallPreview {
    let call_id = event.call_id.clone();
    let (skipped, actions) = aftercall_actions::preview::call(cfg, event, now);
    CallPreview {
        call_id,
        skipped,
        actions,
    }
}

/// `POST /dead-letters/{job_id}/replay` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayQuery {
    /// Replay even when the action's `expires_after` has passed (docs/rules.md).
    force: Option<bool>,
}

/// RFC 3339, Unix milliseconds, or an age such as `2h` (that long ago), as Unix ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    aftercall_core::parse_time_arg(s, aftercall_queue::now_ms())
}

fn filter(
    agent: Option<String>,
    action: Option<String>,
    since: Option<TimeArg>,
    until: Option<TimeArg>,
    error: Option<String>,
) -> Result<DlqFilter> {
    let bad = |message: String| ApiError::BadRequest {
        code: "invalid_query",
        message,
    };
    // Blank fields are absent (the queue's rule), before anything validates them.
    let (agent, action, error) = (present(agent), present(action), present(error));
    if let Some(a) = &action
        && !KINDS.contains(&a.as_str())
    {
        return Err(bad(format!(
            "action `{a}` is not one of {}",
            KINDS.join(", ")
        )));
    }
    let time = |name: &str, t: Option<TimeArg>| -> Result<Option<i64>> {
        match t {
            None => Ok(None),
            Some(TimeArg::Ms(ms)) if ms.abs() <= MAX_MS => Ok(Some(ms)),
            Some(TimeArg::Float(f)) if f.fract() == 0.0 && f.abs() <= MAX_MS as f64 => {
                Ok(Some(f as i64))
            }
            Some(TimeArg::Ms(_) | TimeArg::Float(_)) => Err(bad(format!(
                "{name}: Unix milliseconds as a number must be a whole number of at most 2^53 - 1 either side of 0"
            ))),
            Some(TimeArg::Text(s)) => present(Some(s))
                .map(|s| parse_time(&s).map_err(|m| bad(format!("{name}: {m}"))))
                .transpose(),
        }
    };
    Ok(DlqFilter {
        agent,
        action,
        since_ms: time("since", since)?,
        until_ms: time("until", until)?,
        error,
    })
}

fn redact_page(page: Page<JobRecord>) -> Page<JobRecord> {
    Page {
        items: page.items.into_iter().map(redact_record).collect(),
        next_cursor: page.next_cursor,
    }
}

pub(crate) async fn list_dead_letters(
    State(s): State<ApiState>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<JobRecord>>> {
    let limit = match q.limit {
        None => 50,
        Some(l) if (1..=1000).contains(&l) => l,
        Some(l) => {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("limit `{l}` is not a number from 1 to 1000"),
            });
        }
    };
    let f = filter(
        q.agent,
        q.action,
        q.since.map(TimeArg::Text),
        q.until.map(TimeArg::Text),
        q.error,
    )?;
    let page = s.queue.dlq_list(&f, q.cursor.as_deref(), limit).await?;
    Ok(Json(redact_page(page)))
}

pub(crate) async fn get_dead_letter(
    State(s): State<ApiState>,
    Id(id): Id,
) -> Result<Json<JobRecord>> {
    let r = dead_letter(&s, &id).await?;
    Ok(Json(redact_record(r)))
}

/// The record of `id` if it is a dead letter: 404 if unknown or in another state.
async fn dead_letter(s: &ApiState, id: &str) -> Result<JobRecord> {
    match s.queue.job(id).await? {
        Some(r) if r.state.state == "dead" => Ok(r),
        Some(r) => Err(ApiError::NotFound(format!(
            "job `{id}` is not a dead letter (it is {})",
            r.state.state
        ))),
        None => Err(ApiError::NotFound(format!("job `{id}` is unknown"))),
    }
}

/// Why a one-job replay or purge moved nothing: unknown (404) or not dead (409).
async fn not_moved(s: &ApiState, id: &str) -> ApiError {
    match s.queue.job(id).await {
        Ok(Some(r)) => ApiError::Conflict(format!(
            "job `{id}` is not a dead letter (it is {})",
            r.state.state
        )),
        Ok(None) => ApiError::NotFound(format!("job `{id}` is unknown")),
        Err(e) => e.into(),
    }
}

pub(crate) async fn replay_one(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Id(id): Id,
    Params(q): Params<ReplayQuery>,
) -> Result<Json<Replayed>> {
    let force = q.force.unwrap_or(false);
    let r = s
        .queue
        .replay_with(std::slice::from_ref(&id), force)
        .await?;
    if !r.expired.is_empty() {
        return Err(ApiError::Conflict(format!(
            "job `{id}` is past its action's expires_after; replay with ?force=true to send it anyway"
        )));
    }
    if r.replayed == 0 {
        return Err(not_moved(&s, &id).await);
    }
    tracing::info!(job_id = %id, by = %caller.name, force, "dead letter replayed");
    Ok(Json(Replayed {
        replayed: 1,
        expired: Vec::new(),
    }))
}

pub(crate) async fn delete_dead_letter(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Id(id): Id,
) -> Result<StatusCode> {
    if s.queue.purge(std::slice::from_ref(&id)).await? == 0 {
        return Err(not_moved(&s, &id).await);
    }
    tracing::info!(job_id = %id, by = %caller.name, "dead letter purged");
    Ok(StatusCode::NO_CONTENT)
}

/// How many dead letters went back to the queue.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Replayed {
    replayed: u64,
    /// Dead letters left dead because their action expired (replay with `force`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    expired: Vec<String>,
}

/// How many dead letters were purged.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Purged {
    purged: u64,
}

/// A bulk replay's answer: how many went back, or with `"dry_run": true`, how many
/// would (the key differs on purpose, so that one is never taken for the other).
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum BulkReplayed {
    Done(Replayed),
    DryRun { would_replay: u64 },
}

/// A bulk purge's answer, as [`BulkReplayed`].
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum BulkPurged {
    Done(Purged),
    DryRun { would_purge: u64 },
}

/// The filter of a bulk replay or purge, and whether it is a dry run. An empty filter
/// (blank fields count as absent) needs `"all": true`: the queue's rule.
fn bulk_filter(body: &RawBody) -> Result<(BulkFilter, bool)> {
    bulk_body(body).map(|(f, dry_run, _)| (f, dry_run))
}

/// [`bulk_filter`], and the body's `force`.
fn bulk_body(body: &RawBody) -> Result<(BulkFilter, bool, bool)> {
    let value = body.json()?;
    let b: BulkBody = serde_json::from_value(value).map_err(|e| ApiError::BadRequest {
        code: "invalid_filter",
        message: e.to_string(),
    })?;
    let f = filter(b.agent, b.action, b.since, b.until, b.error)?;
    let f = f.bulk(b.all).map_err(|e| match e {
        QueueError::EmptyFilter => ApiError::BadRequest {
            code: "empty_filter",
            message: "an empty filter would match every dead letter; give a filter, or {\"all\": true} to mean every one".into(),
        },
        e => e.into(),
    })?;
    Ok((f, b.dry_run, b.force))
}

/// `{"replayed": n}`, or with `"dry_run": true`, `{"would_replay": n}` and nothing moved.
pub(crate) async fn replay_matching(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: RawBody,
) -> Result<Json<BulkReplayed>> {
    let (f, dry_run, force) = bulk_body(&body)?;
    if dry_run {
        let would_replay = s.queue.count_matching(&f).await?;
        return Ok(Json(BulkReplayed::DryRun { would_replay }));
    }
    let r = s.queue.replay_matching_with(&f, force).await?;
    tracing::info!(replayed = r.replayed, expired = r.expired.len(), force, by = %caller.name, "dead letters replayed");
    Ok(Json(BulkReplayed::Done(Replayed {
        replayed: r.replayed,
        expired: r.expired,
    })))
}

/// `{"purged": n}`, or with `"dry_run": true`, `{"would_purge": n}` and nothing deleted.
pub(crate) async fn purge_matching(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: RawBody,
) -> Result<Json<BulkPurged>> {
    let (f, dry_run) = bulk_filter(&body)?;
    if dry_run {
        let would_purge = s.queue.count_matching(&f).await?;
        return Ok(Json(BulkPurged::DryRun { would_purge }));
    }
    let n = s.queue.purge_matching(&f).await?;
    tracing::info!(purged = n, by = %caller.name, "dead letters purged");
    Ok(Json(BulkPurged::Done(Purged { purged: n })))
}

// ---- stats ----

pub(crate) async fn stats(State(s): State<ApiState>) -> Result<Json<aftercall_queue::Stats>> {
    Ok(Json(s.queue.stats().await?))
}
