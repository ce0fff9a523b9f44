//! Test harness: a real `redis-server` per test on a free loopback port, a queue with its
//! own prefix, the API router driven in-process, and helpers to make dead letters the
//! way a worker would.

#![allow(dead_code)]

use std::time::Duration;

use aftercall_api::{ApiConfig, ApiState, Scope, Token};
use aftercall_core::job::{FanOut, fan_out};
use aftercall_core::{Attempt, AttemptOutcome, CallEvent, Job};
use aftercall_queue::{FanOutRecord, FannedOut, Finish, FinishMode, Queue, StateInfo};
pub use aftercall_testkit::Http;
use aftercall_testkit::{RedisOptions, TestQueue};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

pub use aftercall_testkit::{ADMIN, INGEST, READ};

pub const SEED_AGENT: &str = include_str!("../../../../tests/fixtures/seed-agent.json");
pub const SEED_CALL: &str = include_str!("../../../../tests/fixtures/seed-call.json");

pub fn tokens() -> Vec<Token> {
    vec![
        Token {
            name: "admin-1".into(),
            secret: ADMIN.into(),
            scope: Scope::Admin,
        },
        Token {
            name: "ingest-1".into(),
            secret: INGEST.into(),
            scope: Scope::Ingest,
        },
        Token {
            name: "read-1".into(),
            secret: READ.into(),
            scope: Scope::Read,
        },
    ]
}

pub struct Options {
    pub api: ApiConfig,
    pub max_event_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api: ApiConfig {
                tokens: tokens(),
                rate_limit_per_minute: 0,
                ..ApiConfig::default()
            },
            max_event_bytes: aftercall_core::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

pub struct Harness {
    /// The queue's own Redis (`t.redis`), to kill or restart.
    pub t: TestQueue,
    pub queue: Queue,
    pub state: ApiState,
    pub app: Router,
}

/// One response, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// The status and the body's `error` code: what a refusal is checked by.
    pub fn error(&self) -> (StatusCode, Option<&str>) {
        (self.status, self.json["error"].as_str())
    }

    /// Fails unless the answer is `status` with the error code `code`.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.error(), (status, Some(code)), "{}", self.text);
    }

    /// The string `field` of each item of the body's array `list`.
    pub fn column(&self, list: &str, field: &str) -> Vec<&str> {
        let items = self.json[list].as_array().expect("an array");
        items.iter().map(|i| i[field].as_str().unwrap()).collect()
    }
}

pub async fn start() -> Harness {
    start_with(Options::default()).await
}

/// An API served by `aftercall_api::serve` on a real socket on 127.0.0.1.
pub struct Served {
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub async fn start(state: ApiState) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(aftercall_api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Served { base, stop, server }
    }

    /// A client for this API.
    pub fn http(&self) -> Http {
        Http::new(self.base.clone())
    }

    /// Shuts down gracefully; fails unless `serve` returns `Ok` within 10 s.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

pub async fn start_with(opts: Options) -> Harness {
    let t = TestQueue::start_with("api-test", RedisOptions::fast(), |c| {
        c.max_event_bytes = opts.max_event_bytes
    })
    .await;
    let state = ApiState::new(t.queue.clone(), opts.api);
    let app = aftercall_api::router(state.clone());
    Harness {
        queue: t.queue.clone(),
        t,
        state,
        app,
    }
}

impl Harness {
    /// This harness's API on a real socket.
    pub async fn serve(&self) -> Served {
        Served::start(self.state.clone()).await
    }

    /// [`Harness::serve`], then the seed agent stored over HTTP as `agent_abc123`: the
    /// served API and a client for it.
    pub async fn serve_seeded(&self) -> (Served, Http) {
        let served = self.serve().await;
        let http = served.http();
        let r = http
            .json(Method::PATCH, "/agents/agent_abc123", ADMIN, SEED_AGENT)
            .await;
        assert_eq!(r.status(), 201, "the seed agent is stored");
        (served, http)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None, Body::empty())
            .await
    }

    /// A JSON body, as text so the exact bytes are what the client sent.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: impl Into<String>,
    ) -> Resp {
        self.send(
            method,
            path,
            Some(token),
            Some("application/json"),
            body.into(),
        )
        .await
    }

    /// No token, no body: what anyone may send.
    pub async fn public(&self, method: Method, path: &str) -> Resp {
        self.send(method, path, None, None, Body::empty()).await
    }

    /// `POST /calls` with an NDJSON body.
    pub async fn ndjson(&self, token: &str, body: impl Into<Body>) -> Resp {
        let ct = Some("application/x-ndjson");
        self.send(Method::POST, "/calls", Some(token), ct, body)
            .await
    }

    /// `POST path` with a JSON body and the admin token.
    pub async fn post_json(&self, path: &str, body: impl Into<String>) -> Resp {
        self.json(Method::POST, path, ADMIN, body).await
    }

    /// `PATCH /agents/<id>` with `body` and the admin token.
    pub async fn patch_agent(&self, id: &str, body: impl Into<String>) -> Resp {
        self.json(Method::PATCH, &format!("/agents/{id}"), ADMIN, body)
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(Method::DELETE, path, Some(token), None, Body::empty())
            .await
    }

    pub async fn post(&self, path: &str, token: &str) -> Resp {
        self.send(Method::POST, path, Some(token), None, Body::empty())
            .await
    }

    /// Enqueues `call` and plays a worker: fans it out with the agent's stored config,
    /// then dead-letters every action job (as if each failed with HTTP 500). Returns the
    /// action job ids in config order. Other ready jobs it happens to lease stay running.
    pub async fn dead_letters_for(&self, call: &str) -> Vec<String> {
        let q = &self.queue;
        let event = CallEvent::parse(call.as_bytes(), 1 << 20).unwrap();
        let enq = q.enqueue(vec![event.clone()]).await.unwrap().remove(0);
        assert!(!enq.duplicate, "call {} was enqueued before", enq.call_id);
        let lease = Duration::from_secs(60);
        let fetched = q.fetch("test-worker", 100, lease).await.unwrap();
        let parent = fetched
            .jobs
            .into_iter()
            .find(|j| j.id == enq.job_id)
            .expect("the call-ended job is leased");
        let job: Job = serde_json::from_str(&parent.data).unwrap();
        let cfg = q.get_agent(&job.agent_id).await.unwrap();
        let FanOut::Jobs(jobs) = fan_out(
            &job,
            &std::sync::Arc::new(event),
            cfg.as_ref(),
            chrono::Utc::now(),
        ) else {
            panic!("agent {} has no enabled actions", job.agent_id)
        };
        let mut st = StateInfo::new(aftercall_core::JobState::FannedOut);
        st.actions = Some(jobs.len());
        let ids: Vec<String> = jobs.iter().map(|(j, _)| j.id.clone()).collect();
        let record = FanOutRecord {
            parent_id: parent.id.clone(),
            token: parent.token.clone(),
            call_id: job.call_id.clone(),
            jobs,
            state: st,
            attempt: attempt(parent.attempt, AttemptOutcome::Delivered, None),
            claim: None,
        };
        assert_eq!(
            q.fan_out_many(&[record]).await.unwrap(),
            [FannedOut::Applied]
        );
        let fetched = q.fetch("test-worker", 100, lease).await.unwrap();
        let finishes: Vec<Finish> = fetched
            .jobs
            .iter()
            .filter(|l| ids.iter().any(|id| l.id == *id))
            .map(|l| {
                let mut st = StateInfo::new(aftercall_core::JobState::Dead);
                st.error = Some("HTTP 500 from receiver".into());
                Finish {
                    mode: FinishMode::Dead,
                    id: l.id.clone(),
                    token: l.token.clone(),
                    run_at_ms: 0,
                    state: st,
                    attempt: Some(attempt(l.attempt, AttemptOutcome::Failed, Some(500))),
                }
            })
            .collect();
        assert_eq!(finishes.len(), ids.len(), "every action job is leased");
        assert!(q.finish(&finishes).await.unwrap().iter().all(|ok| *ok));
        ids
    }
}

fn attempt(n: u32, outcome: AttemptOutcome, status: Option<u16>) -> Attempt {
    Attempt {
        attempt: n,
        at: chrono::Utc::now(),
        outcome,
        status,
        error: status.map(|s| format!("HTTP {s} from receiver")),
        response: None,
        duration_ms: Some(1),
        worker: Some("test-worker".into()),
        next_run_at: None,
    }
}

/// A call-ended event for `agent` with id `call`.
pub fn call(call: &str, agent: &str) -> String {
    serde_json::json!({"call_id": call, "agent_id": agent, "caller_number": "+14155551234", "summary": "s"}).to_string()
}
