//! The dashboard over HTTP, in-process (no browser): the router merged beside the API's
//! as `aftercall_api::serve_with` does, a real `redis-server`, requests through `oneshot`.
//! Login and the cookie, CSRF refusals, scopes, escaping, and that nothing shadows the
//! API's routes.

use aftercall_api::{ApiConfig, ApiState, Scope, Token};
use aftercall_testkit::{ADMIN, READ, RedisOptions, TestQueue};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8080";

struct Harness {
    _t: TestQueue,
    app: Router,
}

async fn start(api: ApiConfig) -> Harness {
    let t = TestQueue::start_with("dash", RedisOptions::fast(), |c| c.prefix = "dash".into()).await;
    let state = ApiState::new(t.queue.clone(), api);
    let app = aftercall_api::router(state.clone()).merge(aftercall_dashboard::router(state));
    Harness { _t: t, app }
}

/// An API that asks no one to authenticate (`AFTERCALL_API_INSECURE_NO_AUTH`).
fn no_auth() -> ApiConfig {
    ApiConfig {
        insecure_no_auth: true,
        ..ApiConfig::default()
    }
}

fn tokens() -> ApiConfig {
    ApiConfig {
        tokens: vec![
            Token {
                name: "admin-1".into(),
                secret: ADMIN.into(),
                scope: Scope::Admin,
            },
            Token {
                name: "read-1".into(),
                secret: READ.into(),
                scope: Scope::Read,
            },
        ],
        rate_limit_per_minute: 0,
        ..ApiConfig::default()
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// A request as a browser on our own page sends it.
    fn req(method: Method, uri: &str, cookie: Option<&str>) -> axum::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        b
    }

    async fn get(&self, uri: &str, cookie: Option<&str>) -> Resp {
        self.send(
            Self::req(Method::GET, uri, cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Logs in with `token`; the `Cookie` header value to send from then on.
    async fn login(&self, token: &str) -> String {
        let r = self
            .send(
                Self::req(Method::POST, "/ui/login", None)
                    .header(header::ORIGIN, format!("http://{HOST}"))
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token={token}&next=%2Fui%2Fagents")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
        assert_eq!(r.header(header::LOCATION), "/ui/agents");
        let set = r.header(header::SET_COOKIE).to_string();
        set.split(';').next().unwrap().to_string()
    }

    /// The CSRF token the pages carry for this session.
    async fn csrf(&self, cookie: &str) -> String {
        let page = self.get("/ui/agents", Some(cookie)).await.text;
        let at = page
            .find("name=\"csrf-token\" content=\"")
            .expect("csrf meta")
            + 27;
        page[at..at + 32].to_string()
    }

    async fn json(
        &self,
        method: Method,
        uri: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Value,
    ) -> Resp {
        let mut b = Self::req(method, uri, Some(cookie))
            .header(header::ORIGIN, format!("http://{HOST}"))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = csrf {
            b = b.header("x-csrf-token", t);
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// `PATCH /ui/api/agents/a1` from the session `cookie`, with `csrf` when given.
    async fn patch_a1(&self, cookie: &str, csrf: Option<&str>, body: Value) -> Resp {
        self.json(Method::PATCH, "/ui/api/agents/a1", cookie, csrf, body)
            .await
    }
}

#[tokio::test]
async fn pages_need_a_session_and_login_sets_a_strict_http_only_cookie() {
    let h = start(tokens()).await;
    let r = h.get("/", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header(header::LOCATION), "/ui/");
    let r = h.get("/ui/calls?call_id=c1", None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.header(header::LOCATION),
        "/ui/login?next=%2Fui%2Fcalls%3Fcall_id%3Dc1"
    );
    let r = h.get("/ui/login?next=%2Fui%2Fcalls", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text
            .contains(r#"name="next" value="&#x2f;ui&#x2f;calls""#),
        "{}",
        r.text
    );
    for (name, value) in [
        ("content-security-policy", "script-src 'self'"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert!(r.headers[name].to_str().unwrap().contains(value), "{name}");
    }

    // A wrong token, or a post from another site, gets the form again.
    let form = |token: &str, origin: &str| {
        Harness::req(Method::POST, "/ui/login", None)
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let r = h
        .send(form("wrong-token-0123456789", "http://127.0.0.1:8080"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("That token is not valid"));
    assert!(r.headers.get(header::SET_COOKIE).is_none());
    let r = h.send(form(ADMIN, "http://evil.example")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.headers.get(header::SET_COOKIE).is_none());

    let r = h.send(form(ADMIN, "http://127.0.0.1:8080")).await;
    let cookie = r.header(header::SET_COOKIE);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains(ADMIN),
        "the token is not in the cookie as such"
    );

    let cookie = h.login(ADMIN).await;
    for page in [
        "/ui/",
        "/ui/overview/live",
        "/ui/agents",
        "/ui/agents/agent_new",
        "/ui/calls",
        "/ui/calls?call_id=unknown",
        "/ui/dead-letters",
        "/ui/dead-letters?since=nonsense",
        "/ui/destinations",
    ] {
        let r = h.get(page, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK, "{page}: {}", r.text);
        assert!(
            r.header(header::CONTENT_TYPE).starts_with("text/html"),
            "{page}"
        );
    }
    let r = h
        .get("/ui/dead-letters?since=nonsense", Some(&cookie))
        .await;
    assert!(
        r.text.contains("The filter is not valid: since:"),
        "{}",
        r.text
    );
    assert_eq!(
        h.get("/ui/nope", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/ui/dead-letters/job_nope", Some(&cookie))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Logging out needs the CSRF token too, and clears the cookie.
    let no_csrf = h
        .send(
            Harness::req(Method::POST, "/ui/logout", Some(&cookie))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let csrf = h.csrf(&cookie).await;
    let out = h
        .send(
            Harness::req(Method::POST, "/ui/logout", Some(&cookie))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("csrf={csrf}")))
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.header(header::SET_COOKIE).contains("Max-Age=0"));
}

#[tokio::test]
async fn mutations_need_the_csrf_token_from_our_origin_and_the_apis_scope() {
    let h = start(tokens()).await;
    let admin = h.login(ADMIN).await;
    let csrf = h.csrf(&admin).await;
    let body = json!({"voice_tools": {"post_call_follow_up": {"enabled": true, "actions": [
        {"type": "webhook", "url": "not a url"}]}}});

    let r = h.patch_a1(&admin, None, body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "csrf");
    let r = h
        .patch_a1(&admin, Some("0".repeat(32).as_str()), body.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let cross_site = h
        .send(
            Harness::req(Method::PATCH, "/ui/api/agents/a1", Some(&admin))
                .header(header::ORIGIN, "http://evil.example")
                .header("x-csrf-token", &csrf)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);

    // The API's own validation answers, with the field's path.
    let r = h.patch_a1(&admin, Some(&csrf), body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json()["field"],
        "voice_tools.post_call_follow_up.actions[0].url"
    );
    let good = json!({"name": "<script>alert(1)</script>", "voice_tools": {"post_call_follow_up": {
        "enabled": true, "actions": [{"type": "sms", "template": "Hi {caller_name}"}]}}});
    let r = h.patch_a1(&admin, Some(&csrf), good).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.header(header::CACHE_CONTROL), "no-store");

    // What users typed is shown escaped.
    let list = h.get("/ui/agents", Some(&admin)).await.text;
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{list}"
    );
    assert!(!list.contains("<script>alert"));
    let editor = h.get("/ui/agents/a1", Some(&admin)).await.text;
    assert!(editor.contains(r#"data-path="voice_tools.post_call_follow_up.actions[0].template""#));
    assert!(editor.contains(">Hi {caller_name}</textarea>"), "{editor}");

    // A read token may look, but the API refuses its changes, and previews.
    let read = h.login(READ).await;
    let read_csrf = h.csrf(&read).await;
    assert_ne!(read_csrf, csrf);
    let r = h
        .json(
            Method::POST,
            "/ui/api/dead-letters/replay",
            &read,
            Some(&read_csrf),
            json!({"all": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "forbidden");
    let r = h
        .json(
            Method::POST,
            "/ui/preview",
            &read,
            Some(&read_csrf),
            json!({"source": "{{call_id}}"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let editor = h.get("/ui/agents/a1", Some(&read)).await.text;
    assert!(editor.contains(r#"<fieldset class="plain" disabled>"#));

    // An admin's preview renders the sample call.
    let r = h
        .json(
            Method::POST,
            "/ui/preview",
            &admin,
            Some(&csrf),
            json!({"source": "Hi {caller_name}, ref {{call_id}}", "agent": {"name": "Acme"}}),
        )
        .await;
    assert_eq!(r.json(), json!({"text": "Hi John Smith, ref call_xyz789"}));
    let r = h
        .json(
            Method::POST,
            "/ui/preview",
            &admin,
            None,
            json!({"source": "x"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "previews need the CSRF token too"
    );

    // Reads through the proxy need no CSRF token; without a session they get the API's 401.
    let r = h.get("/ui/api/agents", Some(&read)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["agents"][0]["agent_id"], "a1");
    assert_eq!(
        h.get("/ui/api/agents", None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_api_is_untouched_beside_the_dashboard() {
    let h = start(tokens()).await;
    assert_eq!(h.get("/healthz", None).await.status, StatusCode::OK);
    // The session cookie is scoped to /ui and the API ignores cookies anyway.
    let cookie = h.login(ADMIN).await;
    let r = h.get("/stats", Some(&cookie)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .send(
            Harness::req(Method::GET, "/stats", None)
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["queue"], "dash");
    // Unknown paths outside /ui still get the API's JSON 404.
    let r = h.get("/nope", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "no_route");

    let page = h.get("/ui/", Some(&cookie)).await.text;
    let css = page
        .split("href=\"")
        .find(|s| s.starts_with("&#x2f;ui&#x2f;assets&#x2f;app.css"))
        .unwrap();
    let css = css.split('"').next().unwrap().replace("&#x2f;", "/");
    let r = h.get(&css, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header(header::CONTENT_TYPE), "text/css; charset=utf-8");
    assert!(r.header(header::CACHE_CONTROL).contains("immutable"));
    assert!(r.text.contains("prefers-color-scheme: dark"));
}

#[tokio::test]
async fn without_authentication_the_pages_need_no_login() {
    let h = start(no_auth()).await;
    let r = h.get("/ui/", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("anonymous"));
    assert!(!r.text.contains("Log out"), "nothing to log out of");
    let r = h.get("/ui/login?next=%2Fui%2Fcalls", None).await;
    assert_eq!(r.header(header::LOCATION), "/ui/calls");
}

/// A call from a voice platform shows where it came from, why it ended, that it waits
/// for the platform's analysis, and the analysis once it joined.
#[tokio::test]
async fn a_call_from_a_platform_shows_its_source_and_its_analysis() {
    use aftercall_core::CallEvent;
    use aftercall_core::event::Analysis;
    use aftercall_queue::IntakeOutcome;
    let h = start(no_auth()).await;
    let q = &h._t.queue;
    let event = CallEvent::parse(
        br#"{"call_id":"p1","agent_id":"a1","platform":"retell","direction":"inbound","ended_reason":"voicemail"}"#,
        1 << 20,
    )
    .unwrap();
    let r = q
        .enqueue_waiting(event.clone(), std::time::Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(r.outcome, IntakeOutcome::Waiting);
    let page = h.get("/ui/calls?call_id=p1", None).await.text;
    assert!(
        page.contains("from <strong>retell</strong>, inbound, ended: voicemail"),
        "{page}"
    );
    assert!(page.contains("waiting for analysis until"), "{page}");
    assert!(!page.contains("call-analysis"), "{page}");

    let mut analyzed = event;
    analyzed.analysis = Some(Analysis {
        successful: Some(false),
        sentiment: Some("neutral".into()),
        data: None,
    });
    let r = q.join_analysis(analyzed.clone()).await.unwrap();
    assert_eq!(r.outcome, IntakeOutcome::Joined);
    let page = h.get("/ui/calls?call_id=p1", None).await.text;
    assert!(
        page.contains("Analysis from the platform arrived"),
        "{page}"
    );
    assert!(
        page.contains("not successful · sentiment neutral"),
        "{page}"
    );
    assert!(!page.contains("waiting for analysis"), "{page}");
    // A second analysis of the same call changes nothing.
    let again = q.join_analysis(analyzed).await.unwrap();
    assert_eq!(
        (again.outcome, again.job_id),
        (IntakeOutcome::Duplicate, r.job_id)
    );
}

#[tokio::test]
async fn destinations_show_their_health_and_pauses_with_buttons_for_admins() {
    let h = start(tokens()).await;
    let q = &h._t.queue;
    q.report(
        "crm.example",
        aftercall_queue::Health::Fail,
        "HTTP 503",
        1,
        std::time::Duration::from_secs(30),
        0,
    )
    .await
    .unwrap();
    q.pause(&aftercall_queue::PauseScope::Agent("a1".into()))
        .await
        .unwrap();
    let admin = h.login(ADMIN).await;
    let r = h.get("/ui/destinations", Some(&admin)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for want in [
        "<code>crm.example</code>",
        "HTTP 503",
        "<code>agent:a1</code>",
        r#"data-scope-verb="resume" data-scope-kind="agent" data-scope-value="a1""#,
        r#"data-scope-verb="pause" data-scope-kind="destination" data-scope-value="crm.example""#,
    ] {
        assert!(r.text.contains(want), "lacks {want}: {}", r.text);
    }
    let reader = h.login(READ).await;
    let r = h.get("/ui/destinations", Some(&reader)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.text.contains("data-scope-verb"),
        "no buttons for a reader"
    );
    assert!(r.text.contains("need an <code>admin</code> token"));
}
