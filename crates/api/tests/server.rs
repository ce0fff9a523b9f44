//! The API as the worker runs it: `serve` on a real socket, hit with a real HTTP client,
//! then shut down gracefully; and the refusal to start without a token.

mod common;

use aftercall_api::{ApiConfig, ApiState};
use common::{ADMIN, Options, READ, SEED_AGENT, SEED_CALL, Served, start_with};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn serves_over_http_and_shuts_down_gracefully() {
    let h = start_with(Options::default()).await;
    let served = h.serve().await;
    let http = served.http();

    // The seed's curl, byte for byte.
    let r = http
        .json(Method::PATCH, "/agents/agent_abc123", ADMIN, SEED_AGENT)
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, serde_json::from_str::<Value>(SEED_AGENT).unwrap());

    let r = http.json(Method::POST, "/calls", ADMIN, SEED_CALL).await;
    assert_eq!(r.status(), 202);
    let job_id = r.json::<Value>().await.unwrap()["job_id"].clone();

    let r = http.get("/calls/call_xyz789", Some(READ)).await;
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert_eq!(status["call_ended"]["id"], job_id);
    assert_eq!(status["call_ended"]["agent_id"], json!("agent_abc123"));

    let r = http.get("/stats", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"aftercall\""
    );
    assert_eq!(http.get("/readyz", None).await.status(), 200);

    served.stop().await;
    assert!(
        http.request(Method::GET, "/healthz", None)
            .send()
            .await
            .is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn refuses_to_start_without_a_token() {
    let h = start_with(Options::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = ApiState::new(h.queue.clone(), ApiConfig::default());
    let err = aftercall_api::serve(listener, state, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("AFTERCALL_API_TOKENS"), "{err}");
}

#[tokio::test]
async fn insecure_flag_serves_without_a_token() {
    let h = start_with(Options::default()).await;
    let state = ApiState::new(
        h.queue.clone(),
        ApiConfig {
            insecure_no_auth: true,
            ..ApiConfig::default()
        },
    );
    let served = Served::start(state).await;
    let r = served.http().get("/stats", None).await;
    assert_eq!(r.status(), 200);
    served.stop().await;
}

/// Hardening item 1: a blank filter field (`""`, `"  "`, `null`) is absent, so a bulk
/// purge or replay with only blank fields is refused without `"all": true`, as an empty
/// filter is; and `"dry_run": true` answers how many would be touched and touches none.
#[tokio::test]
async fn blank_filters_are_absent_and_dry_runs_touch_nothing() {
    let h = start_with(Options::default()).await;
    let (served, http) = h.serve_seeded().await;
    let post = |path: &'static str, body: &'static str| http.json(Method::POST, path, ADMIN, body);
    let ids = h
        .dead_letters_for(&common::call("c1", "agent_abc123"))
        .await;
    let dead = ids.len() as u64;
    assert!(dead >= 2, "the seed agent has several actions");

    for path in ["/dead-letters/purge", "/dead-letters/replay"] {
        for body in [
            r#"{"error": ""}"#,
            r#"{"error": "  "}"#,
            r#"{"error": null}"#,
            r#"{"agent": "", "action": " ", "since": "", "until": "\t", "error": ""}"#,
            r#"{"error": "", "all": false}"#,
            r#"{"error": "", "dry_run": true}"#,
        ] {
            let r = post(path, body).await;
            assert_eq!(r.status(), 400, "{path} {body}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"], "empty_filter", "{path} {body}: {v}");
            assert_eq!(h.queue.stats().await.unwrap().dead, dead, "{path} {body}");
        }
    }

    // Dry runs count with the same filter semantics and change nothing.
    let cases = [
        (
            "/dead-letters/purge",
            r#"{"all": true, "dry_run": true}"#,
            json!({"would_purge": dead}),
        ),
        (
            "/dead-letters/replay",
            r#"{"all": true, "dry_run": true}"#,
            json!({"would_replay": dead}),
        ),
        (
            "/dead-letters/purge",
            r#"{"all": true, "error": " ", "dry_run": true}"#,
            json!({"would_purge": dead}),
        ),
        (
            "/dead-letters/purge",
            r#"{"error": "http_5xx", "dry_run": true}"#,
            json!({"would_purge": dead}),
        ),
        (
            "/dead-letters/replay",
            r#"{"error": "timeout", "dry_run": true}"#,
            json!({"would_replay": 0}),
        ),
        (
            "/dead-letters/purge",
            r#"{"action": "sms", "error": "", "dry_run": true}"#,
            json!({"would_purge": 1}),
        ),
    ];
    for (path, body, want) in cases {
        let r = post(path, body).await;
        assert_eq!(r.status(), 200, "{path} {body}");
        assert_eq!(r.json::<Value>().await.unwrap(), want, "{path} {body}");
    }
    assert_eq!(h.queue.stats().await.unwrap().dead, dead);
    for id in &ids {
        let job = h.queue.job(id).await.unwrap().unwrap();
        assert_eq!(job.state.state, "dead", "{id}");
    }

    // A blank field beside a real one is ignored; the real one still filters.
    let r = post("/dead-letters/purge", r#"{"action": "sms", "error": ""}"#).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"purged": 1}));
    assert_eq!(h.queue.stats().await.unwrap().dead, dead - 1);

    served.stop().await;
}
