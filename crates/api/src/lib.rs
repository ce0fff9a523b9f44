//! aftercall's HTTP API: agent configs, call ingestion, per-call status, dead letters
//! and stats over one axum router. Handlers only map HTTP to `aftercall_queue::Queue`
//! operations and core parsing; the pure pieces they need (merge patch, batch parsing,
//! redaction) are public here so the CLI can share them.

mod auth;
mod config;
mod contacts;
mod destinations;
mod error;
mod extract;
mod handlers;
mod ingest;
mod json;
mod openapi;
mod patch;
mod platforms;
mod routes;
mod server;

use std::future::Future;
use std::sync::Arc;

use aftercall_queue::Queue;

pub use auth::Caller;
pub use config::{ApiConfig, MIN_TOKEN_LEN, Scope, Token, listen_addr};
pub use error::ApiError;
pub use handlers::parse_time;
pub use ingest::{BodyFormat, Calls, ItemError, parse_calls};
pub use openapi::{openapi, openapi_for};
pub use patch::{REDACTED_HEADER, apply_agent_patch, merge_patch, redact_job, redact_record};
pub use platforms::PlatformConfig;
pub use routes::router;
pub use server::{BodyTimedOut, ServerLimits, serve_routes};

/// What every handler shares: the queue and the API's settings.
#[derive(Clone)]
pub struct ApiState {
    pub queue: Queue,
    pub cfg: Arc<ApiConfig>,
    /// The worker's outbox folder, where an erasure also removes the call's files.
    pub outbox: Option<Arc<std::path::Path>>,
    gate: Arc<auth::Gate>,
    intake: Arc<platforms::Intake>,
}

impl ApiState {
    pub fn new(queue: Queue, cfg: ApiConfig) -> ApiState {
        let gate = Arc::new(auth::Gate::new(&cfg));
        let intake = Arc::new(platforms::Intake::new(&cfg.platforms));
        ApiState {
            queue,
            cfg: Arc::new(cfg),
            outbox: None,
            gate,
            intake,
        }
    }

    /// The state with the outbox folder `dir` (the worker's `AFTERCALL_OUTBOX`), so that
    /// `DELETE /calls/{id}` removes the call's e-mail and SMS files too.
    pub fn with_outbox(mut self, dir: impl Into<std::path::PathBuf>) -> ApiState {
        self.outbox = Some(Arc::from(dir.into().into_boxed_path()));
        self
    }

    /// Checks a bare token as the `Authorization: Bearer` header is checked (constant-time
    /// lookup, then rate limit, then scope), for front ends that keep the token elsewhere,
    /// such as the dashboard's cookie.
    pub fn authorize(&self, token: &str, needed: Scope) -> Result<Caller, ApiError> {
        self.gate.check_token(token, needed)
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish. Refuses to start without a token unless the insecure
/// flag is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, axum::Router::new(), shutdown).await
}

/// [`serve`] with `extra` routes (the dashboard's) merged beside the API's. They must not
/// use the API's paths and must not set a fallback: unknown paths get the API's 404.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: ApiState,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.cfg.validate().map_err(invalid)?;
    let limits = state.cfg.server.clone();
    let (_routes, rx) = tokio::sync::watch::channel(full_router(state, extra));
    serve_listening(listener, limits, rx, shutdown).await
}

/// The API's routes, `extra` ones beside them, as [`serve_with`] serves them.
pub fn full_router(state: ApiState, extra: axum::Router) -> axum::Router {
    if state.cfg.auth_disabled() {
        tracing::warn!(
            "the API serves without authentication (AFTERCALL_API_INSECURE_NO_AUTH); never do this outside local development"
        );
    }
    router(state).merge(extra)
}

/// What a process serves while it waits for Redis: `/healthz` answers (the process is
/// alive), `/readyz` says why it is not ready, everything else is 503.
pub fn starting_router(reason: &'static str) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let not_ready = move || async move {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({"status": "starting", "reason": reason})),
        )
            .into_response()
    };
    axum::Router::new()
        .route("/healthz", axum::routing::get(handlers::healthz))
        .route("/readyz", axum::routing::get(not_ready))
        .fallback(not_ready)
}

/// Serves whatever router `routes` holds (see [`serve_routes`]), logging start and stop.
pub async fn serve_listening(
    listener: tokio::net::TcpListener,
    limits: ServerLimits,
    routes: tokio::sync::watch::Receiver<axum::Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "API listening");
    serve_routes(listener, limits, routes, shutdown).await?;
    tracing::info!("API stopped");
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}
