//! The ops dashboard: server-rendered pages under `/ui/` (overview, agents, calls, dead
//! letters) over the HTTP API. Pages read through the API's own router, in-process, with
//! the browser's token, so scopes, redaction, validation and request logs are the API's;
//! the few mutations go through `/ui/api/…`, the same router behind a CSRF check.
//!
//! Served beside the API by `aftercall_api::serve_with`; every path is under `/ui/`
//! (plus `/`, which redirects there), so nothing collides with the API's routes.

mod assets;
mod editor;
mod history;
mod pages;
mod proxy;
mod session;
mod view;

pub use session::{LOGIN_LINK_TTL, login_link};

use std::sync::Arc;

use aftercall_api::ApiState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::{any, get, post};

/// What every dashboard handler shares.
#[derive(Clone)]
pub(crate) struct Dash {
    pub api: ApiState,
    /// The API's router, called in-process.
    pub app: Router,
    pub history: Arc<history::History>,
    pub views: Arc<view::Views>,
}

/// The dashboard's routes, to merge beside the API's (`aftercall_api::serve_with`).
///
/// When called inside a Tokio runtime it also starts sampling `/stats` every few seconds
/// for the overview's chart; the sampler stops once the router is dropped.
pub fn router(state: ApiState) -> Router {
    let history = Arc::new(history::History::default());
    history::spawn_sampler(&history, state.queue.clone());
    let dash = Dash {
        app: aftercall_api::router(state.clone()),
        api: state,
        history,
        views: Arc::new(view::Views::new()),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/overview/live", get(pages::overview_live))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/login/{code}", get(session::login_with_link))
        .route("/ui/logout", post(session::logout))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/agents/{agent_id}", get(pages::agent))
        .route("/ui/preview", post(editor::preview))
        .route("/ui/calls", get(pages::calls))
        .route("/ui/calls/live", get(pages::call_live))
        .route("/ui/dead-letters", get(pages::dead_letters))
        .route("/ui/opt-outs", get(pages::opt_outs))
        .route("/ui/dead-letters/{job_id}", get(pages::dead_letter))
        .route("/ui/destinations", get(pages::destinations))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/api/{*path}", any(proxy::forward))
        .route("/ui/{*rest}", get(pages::not_found))
        .layer(middleware::from_fn(security_headers))
        .with_state(dash)
}

/// The page's policy: only our own scripts, styles and requests; no framing; no
/// referrer to other sites; nothing sniffed. Responses with data are never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/ui/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
