//! The browser's session: a random 256-bit id in an HttpOnly, SameSite=Strict cookie
//! scoped to `/ui`, naming a session stored in Redis (the queue's `SessionRecord`: the
//! token's digest, never the token, and an expiry Redis enforces and every read checks).
//! Each request finds the session's token in the current `AFTERCALL_API_TOKENS` and has
//! the API's own gate check it, so removing a token ends its sessions and logging out
//! deletes the session. And the CSRF defences every state-changing request must pass.

use aftercall_api::{ApiError, Caller, Scope};
use aftercall_queue::SessionRecord;
use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Dash;

pub(crate) const COOKIE: &str = "aftercall_session";
/// A session lasts a working day at most: Redis expires it then, and the cookie's
/// `Max-Age` is the same.
const MAX_AGE_SECS: u64 = 8 * 3600;
/// The header the page's script sends with every state-changing request.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Who is using the page, checked for this request.
pub(crate) struct Session {
    /// The API token the session stands for, as configured now (absent when the API runs
    /// without authentication). Only ever sent to the API's router, in-process.
    pub token: Option<String>,
    pub caller: Caller,
    pub csrf: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.caller.scope >= Scope::Admin
    }
}

/// A live session: its id (from the cookie) and the configured token it stands for.
pub(crate) struct Live {
    pub id: String,
    pub token: String,
}

/// The session id in the cookie, if it has the shape of one (64 hex digits).
pub(crate) fn cookie_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

/// The cookie's session, if it exists, has not expired, and its token is still
/// configured. `Err` only when Redis cannot say.
pub(crate) async fn live_session(
    dash: &Dash,
    headers: &HeaderMap,
) -> Result<Option<Live>, ApiError> {
    let Some(id) = cookie_session(headers) else {
        return Ok(None);
    };
    let Some(record) = dash.api.queue.session(&id).await? else {
        return Ok(None);
    };
    // The token was removed from the configuration: its sessions end for good (deleted,
    // so putting the same token back does not revive a cookie someone may have kept).
    let Some(token) = configured_token(dash, &record.token_sha256) else {
        tracing::info!(by = %record.token_name, "dashboard session of a token no longer configured ended");
        dash.api.queue.delete_session(&id).await?;
        return Ok(None);
    };
    Ok(Some(Live { id, token }))
}

/// The configured token whose digest is `sha256_hex`, compared in constant time over
/// every token.
fn configured_token(dash: &Dash, sha256_hex: &str) -> Option<String> {
    let mut found = None;
    for t in &dash.api.cfg.tokens {
        if constant_time_eq(token_digest(&t.secret).as_bytes(), sha256_hex.as_bytes()) {
            found = Some(t.secret.clone());
        }
    }
    found
}

/// What a session stores to name its token: its SHA-256, as the API's gate keeps it.
fn token_digest(token: &str) -> String {
    hex_encode(&Sha256::digest(token.trim().as_bytes()))
}

/// Checks the session, then its token with the API's gate (401, 429 or 403, like the
/// API).
pub(crate) async fn authenticate(
    dash: &Dash,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<Session, ApiError> {
    if dash.api.cfg.auth_disabled() {
        let caller = dash.api.authorize("", needed)?;
        return Ok(Session {
            token: None,
            caller,
            csrf: csrf_for(""),
        });
    }
    let live = match live_session(dash, headers).await? {
        Some(live) => live,
        None if cookie_session(headers).is_some() => return Err(ApiError::InvalidToken),
        None => return Err(ApiError::MissingToken),
    };
    let caller = dash.api.authorize(&live.token, needed)?;
    Ok(Session {
        csrf: csrf_for(&live.id),
        token: Some(live.token),
        caller,
    })
}

/// The CSRF token of a session: a digest of its session id, so an attacker who cannot
/// read the cookie cannot make it, and every replica of the API computes the same one.
pub(crate) fn csrf_for(session_id: &str) -> String {
    let d = Sha256::new()
        .chain_update(b"aftercall-dashboard-csrf\0")
        .chain_update(session_id.as_bytes())
        .finalize();
    hex_encode(&d[..16])
}

/// Refuses a state-changing request that another site could have made: it must come
/// from our own origin (`Origin`, `Sec-Fetch-Site`) and carry the session's CSRF token,
/// in the `X-CSRF-Token` header (scripts) or `presented` (a form field).
pub(crate) fn check_csrf(
    headers: &HeaderMap,
    expected: &str,
    presented: Option<&str>,
) -> Result<(), CsrfRefused> {
    if !same_origin(headers) {
        return Err(CsrfRefused("the request did not come from this site"));
    }
    let got = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(presented)
        .unwrap_or("");
    if !constant_time_eq(got.as_bytes(), expected.as_bytes()) {
        return Err(CsrfRefused(
            "missing or wrong CSRF token; reload the page and try again",
        ));
    }
    Ok(())
}

/// A request refused by the CSRF checks: 403 `{"error": "csrf"}`.
#[derive(Debug)]
pub(crate) struct CsrfRefused(&'static str);

impl IntoResponse for CsrfRefused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": "csrf", "message": self.0})),
        )
            .into_response()
    }
}

/// True unless the browser says the request came from elsewhere. Browsers send
/// `Sec-Fetch-Site` and, on POSTs, `Origin`; a request without either is not a
/// cross-site browser request (the CSRF token still has to match).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match get("origin") {
        None => true,
        Some(origin) => {
            let host = get("x-forwarded-host").or_else(|| get("host"));
            let origin_host = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            host.is_some() && origin_host == host
        }
    }
}

/// Lengths are public here (digests and tokens of fixed size); the bytes are compared in
/// constant time.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new session id: 256 random bits, as hex.
fn new_session_id() -> String {
    hex_encode(&rand::random::<[u8; 32]>())
}

/// `Secure` when the page was reached over HTTPS (directly or through a proxy that
/// says so); plain `http://127.0.0.1` in development must still work.
fn cookie(value: &str, max_age: u64, headers: &HeaderMap) -> HeaderValue {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("hex and fixed text make a valid header value")
}

/// Where to go after logging in: only a page of ours, never another site.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/".to_string(),
    }
}

/// The login page's URL that returns to `path_and_query`.
pub(crate) fn login_url(path_and_query: &str) -> String {
    let next: String = url::form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    format!("/ui/login?next={next}")
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

pub(crate) async fn login_form(State(dash): State<Dash>, Query(q): Query<LoginQuery>) -> Response {
    if dash.api.cfg.auth_disabled() {
        return Redirect::to(&safe_next(q.next.as_deref())).into_response();
    }
    login_page(&dash, StatusCode::OK, &safe_next(q.next.as_deref()), None)
}

fn login_page(dash: &Dash, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let body = dash.views.render(
        "login.html",
        serde_json::json!({"next": next, "error": error}),
    );
    dash.views.page(status, None, "Log in", "", body)
}

/// The fields of a urlencoded form body, whatever its `Content-Type` says.
pub(crate) struct FormFields(Vec<(String, String)>);

impl FormFields {
    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequest<S> for FormFields {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(FormFields(
            url::form_urlencoded::parse(&body).into_owned().collect(),
        ))
    }
}

pub(crate) async fn login(
    State(dash): State<Dash>,
    headers: HeaderMap,
    fields: FormFields,
) -> Response {
    let next = safe_next(fields.get("next"));
    // Login CSRF (logging a victim into the attacker's token) needs a cross-site post.
    if !same_origin(&headers) {
        return login_page(
            &dash,
            StatusCode::FORBIDDEN,
            &next,
            Some("This form must be sent from this site."),
        );
    }
    let token = fields.get("token").unwrap_or("").trim();
    if token.is_empty() {
        return login_page(
            &dash,
            StatusCode::UNPROCESSABLE_ENTITY,
            &next,
            Some("Paste an API token."),
        );
    }
    match dash.api.authorize(token, Scope::Read) {
        Ok(caller) => {
            let id = new_session_id();
            let record = session_record(token, &caller, MAX_AGE_SECS as i64 * 1000);
            match dash.api.queue.create_session(&id, &record).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("dashboard login: a fresh session id was already taken");
                    return login_page(
                        &dash,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &next,
                        Some("The session could not be opened; try again."),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard login: the session could not be stored");
                    return login_page(
                        &dash,
                        StatusCode::SERVICE_UNAVAILABLE,
                        &next,
                        Some("The session could not be stored (Redis is unavailable); try again."),
                    );
                }
            }
            tracing::info!(by = %caller.name, "dashboard login");
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut()
                .insert(header::SET_COOKIE, cookie(&id, MAX_AGE_SECS, &headers));
            resp
        }
        Err(ApiError::RateLimited { retry_after_secs }) => login_page(
            &dash,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            Some(&format!(
                "This token is over its rate limit; try again in {retry_after_secs} s."
            )),
        ),
        Err(_) => login_page(
            &dash,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is not valid. Use one listed in AFTERCALL_API_TOKENS."),
        ),
    }
}

/// How long a one-time login link stays valid if nobody opens it.
pub const LOGIN_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What a session (or a login code that will open one) keeps: the token's digest, never
/// the token, who it is and until when.
fn session_record(token: &str, caller: &aftercall_api::Caller, ttl_ms: i64) -> SessionRecord {
    let now = aftercall_queue::now_ms();
    SessionRecord {
        token_sha256: token_digest(token),
        token_name: caller.name.clone(),
        scope: caller.scope.as_str().to_string(),
        created_ms: now,
        expires_ms: now + ttl_ms,
    }
}

/// Makes a one-time login link for `token` (checked with the API's gate, as a login
/// is): the path `/ui/login/<code>`, whose random code is stored in Redis for
/// [`LOGIN_LINK_TTL`] and opens one session the first time it is opened, never again.
/// The token itself is in neither the link nor Redis (only its digest).
pub async fn login_link(state: &aftercall_api::ApiState, token: &str) -> Result<String, ApiError> {
    let caller = state.authorize(token, Scope::Read)?;
    let code = new_session_id();
    let record = session_record(token, &caller, LOGIN_LINK_TTL.as_millis() as i64);
    if !state
        .queue
        .create_login_code(&code, &record, LOGIN_LINK_TTL)
        .await?
    {
        return Err(ApiError::Conflict(
            "a fresh login code was already taken".into(),
        ));
    }
    Ok(format!("/ui/login/{code}"))
}

/// Opens a one-time login link: takes its code from Redis (so the same link fails from
/// then on), opens a session for the token it stands for if that token is still
/// configured, and goes to the overview.
pub(crate) async fn login_with_link(
    State(dash): State<Dash>,
    axum::extract::Path(code): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let used = |status| {
        login_page(
            &dash,
            status,
            "/ui/",
            Some("This login link was used already or has expired. Paste an API token instead."),
        )
    };
    if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return used(StatusCode::NOT_FOUND);
    }
    let record = match dash
        .api
        .queue
        .take_login_code(&code.to_ascii_lowercase())
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => return used(StatusCode::GONE),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard login link: the code could not be read");
            return ApiError::from(e).into_response();
        }
    };
    if record.expires_ms <= aftercall_queue::now_ms()
        || configured_token(&dash, &record.token_sha256).is_none()
    {
        return used(StatusCode::GONE);
    }
    let id = new_session_id();
    let now = aftercall_queue::now_ms();
    let session = SessionRecord {
        created_ms: now,
        expires_ms: now + MAX_AGE_SECS as i64 * 1000,
        ..record
    };
    match dash.api.queue.create_session(&id, &session).await {
        Ok(true) => {}
        Ok(false) => return used(StatusCode::INTERNAL_SERVER_ERROR),
        Err(e) => {
            tracing::warn!(error = %e, "dashboard login link: the session could not be stored");
            return ApiError::from(e).into_response();
        }
    }
    tracing::info!(by = %session.token_name, "dashboard login with a one-time link");
    let mut resp = Redirect::to("/ui/").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&id, MAX_AGE_SECS, &headers));
    resp
}

/// Deletes the session in Redis (so the cookie is worthless from now on, wherever it
/// was copied) and clears the cookie.
pub(crate) async fn logout(
    State(dash): State<Dash>,
    headers: HeaderMap,
    fields: FormFields,
) -> Response {
    let id = cookie_session(&headers).unwrap_or_default();
    if let Err(refused) = check_csrf(&headers, &csrf_for(&id), fields.get("csrf")) {
        return refused.into_response();
    }
    if !id.is_empty()
        && let Err(e) = dash.api.queue.delete_session(&id).await
    {
        // The session still works: say so rather than pretend it ended.
        tracing::warn!(error = %e, "dashboard logout: the session could not be deleted");
        return ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, &headers));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_round_trip() {
        let id = new_session_id();
        assert_eq!(id.len(), 64);
        assert_ne!(id, new_session_id());
        let v = cookie(&id, 10, &HeaderMap::new());
        let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
        let h = headers(&[("cookie", &format!("other=1; {pair}; x=y"))]);
        assert_eq!(cookie_session(&h).as_deref(), Some(id.as_str()));
        for bad in ["zz", "", &"g".repeat(64), &id[..63], &format!("{id}0")] {
            let h = headers(&[("cookie", &format!("aftercall_session={bad}"))]);
            assert_eq!(cookie_session(&h), None, "{bad}");
        }
        let attrs = v.to_str().unwrap();
        for a in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=10"] {
            assert!(attrs.contains(a), "{attrs}");
        }
        assert!(!attrs.contains("Secure"));
        let https = cookie("ab", 10, &headers(&[("x-forwarded-proto", "https")]));
        assert!(https.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn origin_checks() {
        let cases: &[(&[(&'static str, &str)], bool)] = &[
            (&[], true),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                ],
                true,
            ),
            (
                &[("host", "ops.example"), ("origin", "https://ops.example")],
                true,
            ),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://evil.example"),
                ],
                false,
            ),
            (&[("host", "127.0.0.1:8080"), ("origin", "null")], false),
            (&[("origin", "http://127.0.0.1:8080")], false),
            (&[("sec-fetch-site", "cross-site")], false),
            (&[("sec-fetch-site", "same-site")], false),
            (&[("sec-fetch-site", "same-origin")], true),
            (
                &[
                    ("host", "internal:8080"),
                    ("x-forwarded-host", "ops.example"),
                    ("origin", "https://ops.example"),
                ],
                true,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(same_origin(&headers(h)), *want, "{h:?}");
        }
    }

    #[test]
    fn csrf_needs_the_sessions_token() {
        let expected = csrf_for(&new_session_id());
        assert_ne!(expected, csrf_for(&new_session_id()));
        assert_eq!(expected.len(), 32);
        let ok = headers(&[(CSRF_HEADER, &expected)]);
        assert!(check_csrf(&ok, &expected, None).is_ok());
        assert!(check_csrf(&HeaderMap::new(), &expected, Some(&expected)).is_ok());
        assert!(check_csrf(&HeaderMap::new(), &expected, None).is_err());
        assert!(check_csrf(&HeaderMap::new(), &expected, Some("nope")).is_err());
        let cross = headers(&[(CSRF_HEADER, &expected), ("sec-fetch-site", "cross-site")]);
        assert!(check_csrf(&cross, &expected, None).is_err());
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        let cases = [
            (None, "/ui/"),
            (Some("/ui/calls?call_id=c1"), "/ui/calls?call_id=c1"),
            (Some("https://evil.example/"), "/ui/"),
            (Some("//evil.example/ui/"), "/ui/"),
            (Some("/ui//evil.example"), "/ui/"),
            (Some("/ui/\\evil"), "/ui/"),
            (Some("/agents"), "/ui/"),
        ];
        for (input, want) in cases {
            assert_eq!(safe_next(input), want, "{input:?}");
        }
    }
}
