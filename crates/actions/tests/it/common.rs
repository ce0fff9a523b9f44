//! Shared test parts: call events and jobs, temporary folders, the HTTP settings that
//! allow 127.0.0.1, a recording HTTP server that plays scripted replies, and polling with
//! a deadline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aftercall_actions::HttpConfig;
use aftercall_core::config::{Action, EmailAction, SmsAction, TaskAction};
use aftercall_core::{ActionJob, CallEvent, Outcome};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The seed's call, with a caller name and e-mail collected.
pub fn seed_event() -> Value {
    json!({
        "call_id": "call_xyz789",
        "agent_id": "agent_abc123",
        "caller_number": "+14155551234",
        "duration_seconds": 230,
        "ended_at": "2026-03-15T10:00:00Z",
        "summary": "Caller inquired about order #12345. Agent confirmed delivery date of March 15.",
        "details": {"order_id": "12345"},
        "metadata": {"order_id": "12345", "caller_name": "John Smith", "caller_email": "john@example.com"}
    })
}

pub fn job(event: Value, action: Action) -> ActionJob {
    let event = CallEvent::from_value(event, 1 << 20).expect("test event is valid");
    aftercall_testkit::action_job(event, action)
}

/// An action type's own struct (`EmailAction`, …), out of and into its [`Action`].
pub trait OneAction: Clone {
    fn from_action(a: Action) -> Option<Self>;
    fn into_action(self) -> Action;
}

macro_rules! one_action {
    ($($variant:ident($ty:ty)),*) => {$(
        impl OneAction for $ty {
            fn from_action(a: Action) -> Option<Self> {
                match a {
                    Action::$variant(a) => Some(a),
                    _ => None,
                }
            }

            fn into_action(self) -> Action {
                Action::$variant(self)
            }
        }
    )*};
}

one_action!(Email(EmailAction), Sms(SmsAction), Task(TaskAction));

/// The action a config action's JSON describes, failing the test when it is of another
/// type than the one asked for.
pub fn parse_action<T: OneAction>(v: Value) -> T {
    let a: Action = serde_json::from_value(v.clone()).expect("valid action");
    T::from_action(a).unwrap_or_else(|| panic!("not the type of action asked for: {v}"))
}

/// The job of `a` for `event`.
pub fn job_of<T: OneAction>(event: Value, a: &T) -> ActionJob {
    job(event, a.clone().into_action())
}

/// A delivered outcome's status and detail (`""` without one); fails on any other outcome.
pub fn delivered(out: &Outcome) -> (Option<u16>, &str) {
    match out {
        Outcome::Delivered { status, detail } => (*status, detail.as_deref().unwrap_or("")),
        other => panic!("not delivered: {other:?}"),
    }
}

/// Fails unless less than `limit` passed since `started` (a timeout cut the wait short).
pub fn assert_within(started: std::time::Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}");
}

/// HTTP settings that let the SSRF guard through to local test servers.
pub fn http_cfg() -> HttpConfig {
    HttpConfig {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ..HttpConfig::default()
    }
}

pub fn client(cfg: &HttpConfig) -> reqwest::Client {
    aftercall_actions::http::client(cfg).expect("client builds")
}

/// `delivered`, `retry`, `permanent`, `skipped` or `opted_out`.
pub use aftercall_testkit::outcome_kind as kind;

/// A folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "aftercall-it-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns `Some`, failing the test after `deadline`.
pub async fn until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "request body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The form fields in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
}

/// A scripted reply: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

struct Shared {
    seen: Mutex<Vec<Recorded>>,
    replies: Mutex<Vec<Reply>>,
}

/// A real HTTP server on 127.0.0.1:0 that records every request and answers with the
/// scripted replies in order (the last one repeats).
pub struct TestServer {
    pub base: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(replies: Vec<Reply>) -> TestServer {
        assert!(!replies.is_empty());
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            replies: Mutex::new(replies),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer { base, shared, task }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The only request, failing the test when there were more or none.
    pub fn single(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected exactly one request, got {r:#?}");
        r.into_iter().next().unwrap()
    }

    /// The only request, checked to be a `method` to `path`.
    pub fn single_to(&self, method: Method, path: &str) -> Recorded {
        let r = self.single();
        assert_eq!((r.method.clone(), r.path.as_str()), (method, path));
        r
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.seen.lock().unwrap().push(Recorded {
        method,
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
    });
    let reply = {
        let mut q = s.replies.lock().unwrap();
        if q.len() > 1 {
            q.remove(0)
        } else {
            q[0].clone()
        }
    };
    let mut h = HeaderMap::new();
    for (k, v) in reply.headers {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    (StatusCode::from_u16(reply.status).unwrap(), h, reply.body).into_response()
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A TCP server on 127.0.0.1:0 that accepts connections and never says a word, to test
/// timeouts. Returns its address; it stops with the test's runtime.
pub async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}
