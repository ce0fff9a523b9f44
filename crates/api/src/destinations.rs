//! `/destinations`: each destination's health (circuit breaker, 429 pause, held jobs)
//! and the operators' pauses, by destination, agent or action type. The operations are
//! the queue's, shared with `aftercall destinations`.

use aftercall_queue::{DestinationHealth, Pause, PauseScope};
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::RawBody;

type Result<T> = std::result::Result<T, ApiError>;

/// Every destination seen, and the pauses in force.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DestinationList {
    destinations: Vec<DestinationHealth>,
    pauses: Vec<Pause>,
}

/// What to pause or resume: exactly one of a destination (`crm.example.com`, `smtp`,
/// `sms`, `task:github`), an agent id or an action type. Its schema is written out in
/// `openapi.rs` (`PauseScope`): one property, a non-empty string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopeBody {
    destination: Option<String>,
    agent: Option<String>,
    action: Option<String>,
}

/// The scope paused or resumed, as `destination:<d>`, `agent:<id>` or `action:<type>`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Scoped {
    scope: String,
}

pub(crate) async fn list(State(s): State<ApiState>) -> Result<Json<DestinationList>> {
    let (destinations, pauses) = (s.queue.destinations().await?, s.queue.pauses().await?);
    Ok(Json(DestinationList {
        destinations,
        pauses,
    }))
}

pub(crate) async fn pause(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Scope(scope): Scope,
) -> Result<Json<Scoped>> {
    s.queue.pause(&scope).await?;
    tracing::info!(scope = %scope.key(), by = %caller.name, "paused");
    Ok(Json(Scoped { scope: scope.key() }))
}

pub(crate) async fn resume(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Scope(scope): Scope,
) -> Result<Json<Scoped>> {
    if !s.queue.resume(&scope).await? {
        return Err(ApiError::NotFound(format!("{} is not paused", scope.key())));
    }
    tracing::info!(scope = %scope.key(), by = %caller.name, "resumed");
    Ok(Json(Scoped { scope: scope.key() }))
}

/// The body of a pause or resume, read as its [`PauseScope`] (`invalid_scope` otherwise).
pub(crate) struct Scope(PauseScope);

impl FromRequest<ApiState> for Scope {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self> {
        let body = RawBody::from_request(req, state).await?;
        scope(&body).map(Scope)
    }
}

fn scope(body: &RawBody) -> Result<PauseScope> {
    let bad = |message: String| ApiError::BadRequest {
        code: "invalid_scope",
        message,
    };
    let b: ScopeBody = serde_json::from_value(body.json()?).map_err(|e| bad(e.to_string()))?;
    let one = "give exactly one of `destination`, `agent` or `action`, not empty";
    let scope = match (b.destination, b.agent, b.action) {
        (Some(d), None, None) => PauseScope::Destination(d),
        (None, Some(a), None) => PauseScope::Agent(a),
        (None, None, Some(t)) => PauseScope::Action(t),
        _ => return Err(bad(one.into())),
    };
    // Named as ids are: 1 to 256 bytes, no whitespace or control characters.
    let key = scope.key();
    let name = key.split_once(':').map_or("", |(_, v)| v);
    if name.is_empty()
        || name.len() > 256
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad(one.into()));
    }
    Ok(scope)
}
