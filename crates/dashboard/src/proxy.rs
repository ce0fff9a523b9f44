//! The dashboard talks to the API through the API's own router, in-process, with the
//! session's token (found in the current config by the session) as the bearer: pages
//! read through [`call`], and the page's script sends its few mutations (save an agent,
//! replay, purge) to `/ui/api/…`, forwarded by [`forward`] once the CSRF checks pass. Scopes, validation, redaction, rate limits and
//! request logs are therefore exactly the API's.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tower::ServiceExt;

use crate::Dash;
use crate::session::{Session, check_csrf, csrf_for, live_session};

/// The prefix under which the API is reachable with the session cookie.
const PREFIX: &str = "/ui/api";

/// Calls the API as the session's caller; the answer's status and JSON body (`Null`
/// when there is none).
pub(crate) async fn call(
    dash: &Dash,
    session: &Session,
    method: Method,
    path_and_query: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut b = axum::http::Request::builder()
        .method(method)
        .uri(path_and_query);
    if let Some(h) = bearer(session.token.as_deref()) {
        b = b.header(header::AUTHORIZATION, h);
    }
    let body = match body {
        Some(v) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(v).expect("a JSON value serializes"))
        }
        None => Body::empty(),
    };
    let req = match b.body(body) {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let resp = dash
        .app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = resp.status();
    match axum::body::to_bytes(resp.into_body(), usize::MAX).await {
        Ok(bytes) if bytes.is_empty() => (status, Value::Null),
        Ok(bytes) => (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        Err(e) => internal(&e),
    }
}

fn internal(e: &dyn std::fmt::Display) -> (StatusCode, Value) {
    tracing::error!(error = %e, "dashboard: in-process API call failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({"error": "internal", "message": "internal error"}),
    )
}

fn bearer(token: Option<&str>) -> Option<HeaderValue> {
    // `from_bytes`: a token may hold non-ASCII characters.
    token.and_then(|t| HeaderValue::from_bytes(format!("Bearer {t}").as_bytes()).ok())
}

/// `/ui/api/<path>` → the API's `/<path>`, with the session's token as the bearer.
/// Anything but GET and HEAD must pass the CSRF checks first.
pub(crate) async fn forward(State(dash): State<Dash>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Without a live session the request goes without a bearer: the API answers 401.
    let live = if dash.api.cfg.auth_disabled() {
        None
    } else {
        match live_session(&dash, &parts.headers).await {
            Ok(live) => live,
            Err(e) => return e.into_response(),
        }
    };
    let (id, token) = match live {
        Some(l) => (l.id, Some(l.token)),
        None => (String::new(), None),
    };
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        let expected = csrf_for(&id);
        if let Err(refused) = check_csrf(&parts.headers, &expected, None) {
            return refused.into_response();
        }
    }
    let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or("/");
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut b = axum::http::Request::builder()
        .method(parts.method)
        .uri(path_and_query);
    for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            b = b.header(name, v);
        }
    }
    if let Some(h) = bearer(token.as_deref()) {
        b = b.header(header::AUTHORIZATION, h);
    }
    let req = match b.body(body) {
        Ok(r) => r,
        Err(e) => {
            let (status, body) = internal(&e);
            return (status, axum::Json(body)).into_response();
        }
    };
    let mut resp = dash
        .app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
