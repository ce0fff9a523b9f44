//! The browser's session: the API token the user pasted, kept in an HttpOnly,
//! SameSite=Strict cookie scoped to `/ui`, checked by the API's own constant-time gate;
//! and the CSRF defences every state-changing request must pass.

use aftercall_api::{ApiError, Caller, Scope};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Dash;

pub(crate) const COOKIE: &str = "aftercall_session";
/// A session lasts a working day at most; the browser drops it earlier when it closes.
const MAX_AGE_SECS: u64 = 8 * 3600;
/// The header the page's script sends with every state-changing request.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// Who is using the page, checked for this request.
pub(crate) struct Session {
    /// The API token (absent when the API runs without authentication).
    pub token: Option<String>,
    pub caller: Caller,
    pub csrf: String,
}

impl Session {
    pub fn is_admin(&self) -> bool {
        self.caller.scope >= Scope::Admin
    }
}

/// The token in the session cookie, if any.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| hex_decode(v))
        .filter(|t| !t.is_empty())
}

/// Checks the session's token with the API's gate (401, 429 or 403, like the API).
pub(crate) fn authenticate(
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
    let token = cookie_token(headers).ok_or(ApiError::MissingToken)?;
    let caller = dash.api.authorize(&token, needed)?;
    Ok(Session {
        csrf: csrf_for(&token),
        token: Some(token),
        caller,
    })
}

/// The CSRF token of a session: a digest of its API token, so an attacker who cannot
/// read the cookie cannot make it, and every replica of the API computes the same one.
pub(crate) fn csrf_for(token: &str) -> String {
    let d = Sha256::new()
        .chain_update(b"aftercall-dashboard-csrf\0")
        .chain_update(token.as_bytes())
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Tokens may hold any character but spaces; hex keeps the cookie value plain.
fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
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

/// Form fields of a urlencoded body.
pub(crate) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) async fn login(
    State(dash): State<Dash>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let fields = form_fields(&body);
    let next = safe_next(field(&fields, "next"));
    // Login CSRF (logging a victim into the attacker's token) needs a cross-site post.
    if !same_origin(&headers) {
        return login_page(
            &dash,
            StatusCode::FORBIDDEN,
            &next,
            Some("This form must be sent from this site."),
        );
    }
    let token = field(&fields, "token").unwrap_or("").trim();
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
            tracing::info!(by = %caller.name, "dashboard login");
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut().insert(
                header::SET_COOKIE,
                cookie(&hex_encode(token.as_bytes()), MAX_AGE_SECS, &headers),
            );
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

pub(crate) async fn logout(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let fields = form_fields(&body);
    let token = cookie_token(&headers).unwrap_or_default();
    if let Err(refused) = check_csrf(&headers, &csrf_for(&token), field(&fields, "csrf")) {
        return refused.into_response();
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
        let token = "tok;en=with,odd\"chars";
        let v = cookie(&hex_encode(token.as_bytes()), 10, &HeaderMap::new());
        let pair = v.to_str().unwrap().split(';').next().unwrap().to_string();
        let h = headers(&[("cookie", &format!("other=1; {pair}; x=y"))]);
        assert_eq!(cookie_token(&h).as_deref(), Some(token));
        assert_eq!(
            cookie_token(&headers(&[("cookie", "aftercall_session=zz")])),
            None
        );
        assert_eq!(
            cookie_token(&headers(&[("cookie", "aftercall_session=")])),
            None
        );
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
    fn csrf_needs_the_session_token() {
        let expected = csrf_for("admin-token-0123456789");
        assert_ne!(expected, csrf_for("other-token-0123456789"));
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
