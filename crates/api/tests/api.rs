//! The API driven in-process against a real Redis: agent configs, ingestion, call
//! status, dead letters, auth, limits, and the OpenAPI document against the router.

mod common;

use std::time::{Duration, Instant};

use aftercall_api::{ApiConfig, REDACTED_HEADER};
use aftercall_core::AgentConfig;
use aftercall_core::config::REDACTED;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use common::{ADMIN, INGEST, Options, READ, SEED_AGENT, SEED_CALL, call, start, start_with};
use expect_test::expect;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Sms, a signed webhook with an API-key header, e-mail.
fn agent_with_secret() -> Value {
    json!({"name": "Acme", "voice_tools": {"post_call_follow_up": {"enabled": true, "actions": [
        {"type": "sms", "template": "Thanks for calling {{agent_name}}!"},
        {"type": "webhook", "url": "https://crm.example/hook", "secret": SECRET, "headers": {"X-Api-Key": "crm-key-123"}},
        {"type": "email", "to": "{{caller_email}}", "body_template": "call_summary"},
    ]}}})
}

#[tokio::test]
async fn seed_patch_body_round_trips() {
    let h = start().await;
    let r = h.patch_agent("agent_abc123", SEED_AGENT).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The wire format is a contract: the whole stored config comes back.
    expect![[r#"{"voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[{"type":"sms","template":"Thanks for calling {agent_name}! Your reference number is {call_id}."},{"type":"webhook","url":"https://your-crm.com/api/call-completed","include_transcript":true,"include_recording_url":true},{"type":"email","to":"{caller_email}","subject":"Your call summary — {date}","body_template":"call_summary"}]}}}"#]].assert_eq(&r.text);
    let stored = h.queue.get_agent("agent_abc123").await.unwrap().unwrap();
    assert_eq!(stored, AgentConfig::parse(SEED_AGENT.as_bytes()).unwrap());

    let got = h.get("/agents/agent_abc123", READ).await;
    assert_eq!((got.status, &got.text), (StatusCode::OK, &r.text));
    // Sending the same body again changes nothing and says so with 200.
    let again = h
        .send(
            Method::PATCH,
            "/agents/agent_abc123",
            Some(ADMIN),
            Some("application/merge-patch+json"),
            SEED_AGENT,
        )
        .await;
    assert_eq!((again.status, &again.text), (StatusCode::OK, &r.text));
    assert_eq!(
        h.queue.get_agent("agent_abc123").await.unwrap().unwrap(),
        stored
    );
}

#[tokio::test]
async fn merge_patch_changes_only_what_it_names() {
    let h = start().await;
    assert_eq!(
        h.patch_agent("a1", SEED_AGENT).await.status,
        StatusCode::CREATED
    );

    let r = h
        .patch_agent(
            "a1",
            r#"{"voice_tools":{"post_call_follow_up":{"enabled":false}}}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut want: Value = serde_json::from_str(SEED_AGENT).unwrap();
    want["voice_tools"]["post_call_follow_up"]["enabled"] = json!(false);
    assert_eq!(r.json, want);

    // One action edited: arrays replace whole (RFC 7396), so the client sends the list.
    let mut actions = r.json["voice_tools"]["post_call_follow_up"]["actions"].clone();
    actions[1]["url"] = json!("https://crm.example/v2/calls");
    let r = h
        .json(
            Method::PATCH,
            "/agents/a1",
            ADMIN,
            json!({"name": "Acme", "voice_tools": {"post_call_follow_up": {"actions": actions}}})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    want["name"] = json!("Acme");
    want["voice_tools"]["post_call_follow_up"]["actions"][1]["url"] =
        json!("https://crm.example/v2/calls");
    assert_eq!(r.json, want);

    // null removes a member.
    let r = h.patch_agent("a1", r#"{"name":null}"#).await;
    assert_eq!(r.json.get("name"), None);
    let stored = h.queue.get_agent("a1").await.unwrap().unwrap();
    assert_eq!(stored.name, None);
    assert!(!stored.follow_up().unwrap().enabled);
}

#[tokio::test]
async fn secrets_are_redacted_and_survive_a_read_edit_write() {
    let h = start().await;
    let r = h.patch_agent("a1", agent_with_secret().to_string()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(
        !r.text.contains(SECRET) && !r.text.contains("crm-key-123"),
        "{}",
        r.text
    );

    let mut shown = h.get("/agents/a1", READ).await.json;
    assert_eq!(
        shown["voice_tools"]["post_call_follow_up"]["actions"][1]["secret"],
        json!(REDACTED)
    );
    assert_eq!(
        shown["voice_tools"]["post_call_follow_up"]["actions"][1]["headers"]["X-Api-Key"],
        json!(REDACTED_HEADER)
    );

    // Edit what was read and send it all back: the stored secret and header stay.
    shown["voice_tools"]["post_call_follow_up"]["enabled"] = json!(false);
    let r = h.patch_agent("a1", shown.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let stored = serde_json::to_value(h.queue.get_agent("a1").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        stored["voice_tools"]["post_call_follow_up"]["actions"][1]["secret"],
        json!(SECRET)
    );
    assert_eq!(
        stored["voice_tools"]["post_call_follow_up"]["actions"][1]["headers"]["X-Api-Key"],
        json!("crm-key-123")
    );
    assert_eq!(
        stored["voice_tools"]["post_call_follow_up"]["enabled"],
        json!(false)
    );

    // Pointing the webhook elsewhere does not carry the secret along.
    shown["voice_tools"]["post_call_follow_up"]["actions"][1]["url"] =
        json!("https://elsewhere.example/hook");
    let r = h.patch_agent("a1", shown.to_string()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json["field"],
        json!("voice_tools.post_call_follow_up.actions[1].secret")
    );
    let after = serde_json::to_value(h.queue.get_agent("a1").await.unwrap().unwrap()).unwrap();
    assert_eq!(after, stored, "a refused patch stores nothing");
}

#[tokio::test]
async fn every_validation_error_is_422_with_the_field_path() {
    let h = start().await;
    let p = "voice_tools.post_call_follow_up.actions";
    let with = |action: Value| {
        json!({"voice_tools": {"post_call_follow_up": {"enabled": true, "actions": [{"type": "sms", "template": "Hi"}, action]}}}).to_string()
    };
    // An action after a valid one: each refused at `actions[1].<field>`, saying `message`.
    #[rustfmt::skip]
    let actions = [
        (json!({"type": "webhook", "url": "not a url"}), "url", "not a valid URL"),
        (json!({"type": "webhook", "url": "ftp://x.example"}), "url", "http or https"),
        (json!({"type": "webhook", "url": "https://x.example", "secret": "abc"}), "secret", "whsec_"),
        (json!({"type": "webhook", "url": "https://x.example", "colour": 1}), "colour", "unknown field"),
        (json!({"type": "fax"}), "type", "unknown variant"),
        (json!({"type": "sms", "template": "Hi {{nope}}"}), "template", "unknown variable `nope`"),
        (json!({"type": "sms", "template": "x", "delay": "soon"}), "delay", "duration"),
        (json!({"type": "email", "to": "not-an-address"}), "to", "e-mail address"),
        (json!({"type": "email", "to": "{{caller_email}}", "body_template": "nope"}), "body_template", "unknown template"),
        (json!({"type": "task", "provider": "github", "project": "nope"}), "project", "owner/repo"),
    ];
    let mut cases: Vec<(String, String, &str)> = actions
        .into_iter()
        .map(|(action, field, message)| (with(action), format!("{p}[1].{field}"), message))
        .collect();
    cases.extend([
        (
            r#"{"voice_tools":{"post_call_follow_up":{"enabled":"yes"}}}"#.into(),
            "voice_tools.post_call_follow_up.enabled".into(),
            "invalid type",
        ),
        (r#"{"nmae":"x"}"#.into(), "nmae".into(), "unknown field"),
        (r#"{"utc_offset":"later"}"#.into(), "utc_offset".into(), ""),
        (r#"[1,2]"#.into(), "body".into(), "must be a JSON object"),
    ]);
    for (body, field, message) in cases {
        let r = h.patch_agent("a_bad", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text
        );
        assert_eq!(r.json["error"], json!("invalid_config"), "{body}");
        assert_eq!(r.json["field"], json!(field), "{body}: {}", r.text);
        let got = r.json["message"].as_str().unwrap();
        assert!(!got.is_empty() && got.contains(message), "{body}: {got}");
    }
    expect![[r#"{"error":"invalid_config","field":"voice_tools.post_call_follow_up.actions[1].url","message":"`not a url` is not a valid URL (relative URL without a base)"}"#]]
        .assert_eq(&h.patch_agent("a_bad", with(json!({"type": "webhook", "url": "not a url"}))).await.text);

    let r = h.patch_agent("a_bad", "{\"voice_tools\":").await;
    r.assert_error(StatusCode::BAD_REQUEST, "malformed_json");
    assert_eq!(r.json["line"], json!(1));
    let r = h
        .send(
            Method::PATCH,
            "/agents/a_bad",
            Some(ADMIN),
            Some("text/plain"),
            SEED_AGENT,
        )
        .await;
    assert_eq!(
        r.error(),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("unsupported_media_type")
        )
    );
    let r = h.patch_agent("has%20space", SEED_AGENT).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_path");

    let r = h.get("/agents/a_bad", READ).await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "nothing was stored: {}",
        r.text
    );
    assert_eq!(h.queue.list_agents().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn agents_are_listed_and_deleted() {
    let h = start().await;
    h.patch_agent("b", SEED_AGENT).await;
    h.patch_agent("a", agent_with_secret().to_string()).await;
    let r = h.get("/agents", READ).await;
    assert_eq!(
        r.json,
        json!({"agents": [
            {"agent_id": "a", "name": "Acme", "enabled": true, "actions": 3},
            {"agent_id": "b", "enabled": true, "actions": 3},
        ]})
    );
    assert_eq!(
        h.delete("/agents/b", ADMIN).await.status,
        StatusCode::NO_CONTENT
    );
    let r = h.delete("/agents/b", ADMIN).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(h.get("/agents/b", READ).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.queue.list_agents().await.unwrap(), ["a"]);
}

#[tokio::test]
async fn ingestion_is_idempotent_on_call_id() {
    let h = start().await;
    let first = h.json(Method::POST, "/calls", INGEST, SEED_CALL).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.json["call_id"], json!("call_xyz789"));
    assert_eq!(first.json["duplicate"], json!(false));
    let job_id = first.json["job_id"].as_str().unwrap().to_string();

    let again = h.json(Method::POST, "/calls", ADMIN, SEED_CALL).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(
        again.json,
        json!({"call_id": "call_xyz789", "job_id": job_id, "duplicate": true})
    );
    assert_eq!(h.queue.stats().await.unwrap().queued, 1);

    let status = h.get("/calls/call_xyz789", READ).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json["call_ended"]["id"], json!(job_id));
    assert_eq!(status.json["call_ended"]["state"]["state"], json!("queued"));
    assert_eq!(status.json["actions"], json!([]));
    let r = h.get("/calls/call_unknown", READ).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");

    let r = h
        .json(
            Method::POST,
            "/calls",
            INGEST,
            r#"{"call_id":"c","agent_id":"a","caller_number":"4155551234"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        (r.json["error"].as_str(), r.json["field"].as_str()),
        (Some("invalid_event"), Some("caller_number"))
    );
    assert!(
        !r.text.contains("4155551234"),
        "the number is masked: {}",
        r.text
    );
    let r = h
        .json(Method::POST, "/calls", INGEST, r#"{"call_id":"c","#)
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "malformed_json");
    let r = h
        .send(
            Method::POST,
            "/calls",
            Some(INGEST),
            Some("application/x-www-form-urlencoded"),
            SEED_CALL,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = h
        .send(Method::POST, "/calls", Some(INGEST), None, SEED_CALL)
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(h.queue.stats().await.unwrap().calls, 1);
}

#[tokio::test]
async fn a_bad_item_in_a_batch_enqueues_nothing() {
    let h = start().await;
    let lines = format!(
        "{}\n{}\n{}\n",
        call("c1", "a"),
        r#"{"call_id":"c2","agent_id":"a","duration_seconds":"long"}"#,
        call("c3", "a")
    );
    let r = h.ndjson(INGEST, lines).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    expect![[r#"{"error":"invalid_events","message":"1 of 3 events are invalid; nothing was enqueued","errors":[{"line":2,"error":"invalid_event","field":"duration_seconds","message":"invalid type: string \"long\", expected u64"}]}"#]].assert_eq(&r.text);
    let stats = h.queue.stats().await.unwrap();
    assert_eq!((stats.calls, stats.queued), (0, 0));
    assert!(h.queue.call_status("c1").await.unwrap().is_none());

    let arr = format!(
        "[{},{},{}]",
        call("c1", "a"),
        r#"{"call_id":"c2"}"#,
        r#"{"call_id":"c3","agent_id":"a","x":1}"#
    );
    let r = h.json(Method::POST, "/calls", INGEST, arr).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let errors: Vec<(u64, &str)> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(errors, [(1, "agent_id"), (2, "x")]);
    assert_eq!(h.queue.stats().await.unwrap().calls, 0);

    // All valid: every event goes in, in order; a replay of the batch is all duplicates.
    let lines = format!(
        "{}\n\n{}\r\n{}",
        call("c1", "a"),
        call("c2", "a"),
        call("c3", "a")
    );
    let r = h.ndjson(INGEST, lines.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        (r.json["accepted"].as_u64(), r.json["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    let ids = r.column("results", "call_id");
    assert_eq!(ids, ["c1", "c2", "c3"]);
    let r = h.ndjson(INGEST, lines).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json["accepted"].as_u64(), r.json["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    let stats = h.queue.stats().await.unwrap();
    assert_eq!((stats.calls, stats.queued), (3, 3));

    let r = h.json(Method::POST, "/calls", INGEST, "[]").await;
    r.assert_error(StatusCode::BAD_REQUEST, "empty_batch");
}

#[tokio::test]
async fn oversized_bodies_and_events_are_413() {
    let api = ApiConfig {
        max_body_bytes: 16 * 1024,
        ..Options::default().api
    };
    let h = start_with(Options {
        api,
        max_event_bytes: 2048,
    })
    .await;
    let big =
        json!({"call_id": "big", "agent_id": "a", "transcript": "x".repeat(3000)}).to_string();

    let r = h.json(Method::POST, "/calls", INGEST, big.clone()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.json["error"], json!("event_too_large"));
    assert_eq!(r.json.get("field"), None);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 2048 bytes"),
        "{}",
        r.text
    );

    let batch = format!("{}\n{big}\n", call("small", "a"));
    let r = h.ndjson(INGEST, batch).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.json["errors"][0]["line"], json!(2));

    let huge: String = (0..20)
        .map(|i| call(&format!("c{i}"), &"a".repeat(200)) + "\n")
        .collect::<String>()
        .repeat(5);
    assert!(huge.len() > 16 * 1024);
    let r = h.ndjson(INGEST, huge.clone()).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    // Without a Content-Length (a stream), the limit still holds.
    let stream = futures::stream::iter(
        huge.into_bytes()
            .chunks(1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = h.ndjson(INGEST, Body::from_stream(stream)).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    assert_eq!(h.queue.stats().await.unwrap().calls, 0);
}

#[tokio::test]
async fn tokens_and_scopes_are_enforced() {
    let h = start().await;
    let r = h.public(Method::GET, "/stats").await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"aftercall\""
    );
    let r = h.get("/stats", "not-a-token-at-all-really").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // (token, method, path, body, expected)
    let cases: &[(&str, Method, &str, Option<&str>, StatusCode)] = &[
        (READ, Method::GET, "/stats", None, StatusCode::OK),
        (READ, Method::GET, "/agents", None, StatusCode::OK),
        (
            READ,
            Method::PATCH,
            "/agents/a",
            Some(SEED_AGENT),
            StatusCode::FORBIDDEN,
        ),
        (
            READ,
            Method::DELETE,
            "/agents/a",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            READ,
            Method::POST,
            "/calls",
            Some(SEED_CALL),
            StatusCode::FORBIDDEN,
        ),
        (
            READ,
            Method::POST,
            "/dead-letters/replay",
            Some(r#"{"all":true}"#),
            StatusCode::FORBIDDEN,
        ),
        (
            READ,
            Method::DELETE,
            "/dead-letters/job_x",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            INGEST,
            Method::PATCH,
            "/agents/a",
            Some(SEED_AGENT),
            StatusCode::FORBIDDEN,
        ),
        (
            INGEST,
            Method::POST,
            "/dead-letters/job_x/replay",
            None,
            StatusCode::FORBIDDEN,
        ),
        (INGEST, Method::GET, "/dead-letters", None, StatusCode::OK),
        (
            INGEST,
            Method::POST,
            "/calls",
            Some(SEED_CALL),
            StatusCode::ACCEPTED,
        ),
        (
            ADMIN,
            Method::PATCH,
            "/agents/a",
            Some(SEED_AGENT),
            StatusCode::CREATED,
        ),
        (
            ADMIN,
            Method::POST,
            "/dead-letters/purge",
            Some(r#"{"all":true}"#),
            StatusCode::OK,
        ),
    ];
    for (token, method, path, body, want) in cases {
        let r = match body {
            Some(b) => h.json(method.clone(), path, token, *b).await,
            None => {
                h.send(method.clone(), path, Some(token), None, Body::empty())
                    .await
            }
        };
        assert_eq!(r.status, *want, "{method} {path}: {}", r.text);
        if *want == StatusCode::FORBIDDEN {
            assert_eq!(r.json["error"], json!("forbidden"));
        }
    }
    // Health is public; nothing needs a token there.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            h.public(Method::GET, path).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let api = ApiConfig {
        rate_limit_per_minute: 3,
        ..Options::default().api
    };
    let h = start_with(Options {
        api,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.get("/stats", ADMIN).await.status, StatusCode::OK);
    }
    let r = h.get("/stats", ADMIN).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=20).contains(&retry),
        "3 a minute frees one every 20 s, got {retry}"
    );
    // Buckets are per token; health checks are not limited.
    assert_eq!(h.get("/stats", READ).await.status, StatusCode::OK);
    assert_eq!(
        h.public(Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_and_purged() {
    let h = start().await;
    assert_eq!(
        h.patch_agent("a1", agent_with_secret().to_string())
            .await
            .status,
        StatusCode::CREATED
    );
    let ids = h.dead_letters_for(&call("c1", "a1")).await;
    assert_eq!(ids.len(), 3);

    let r = h.get("/dead-letters", READ).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let kinds = r.column("items", "kind");
    assert_eq!(kinds.len(), 3);
    assert_eq!(r.json.get("next_cursor"), None);
    assert!(
        !r.text.contains(SECRET) && !r.text.contains("crm-key-123"),
        "secrets leak: {}",
        r.text
    );

    for (q, want) in [
        ("action=webhook".to_string(), 1),
        ("agent=a1&error=http_5xx".into(), 3),
        ("agent=other".into(), 0),
        ("error=timeout".into(), 0),
        ("since=2h".into(), 3),
        ("since=2999-01-01T00:00:00Z".into(), 0),
        (
            format!("until={}", aftercall_queue::now_ms() - 3_600_000),
            0,
        ),
        (
            format!("since={}", aftercall_queue::now_ms() - 3_600_000),
            3,
        ),
    ] {
        let r = h.get(&format!("/dead-letters?{q}"), READ).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
        assert_eq!(r.json["items"].as_array().unwrap().len(), want, "{q}");
    }

    // Paging: one at a time, every item exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/dead-letters?limit=1&cursor={c}"),
            None => "/dead-letters?limit=1".to_string(),
        };
        let r = h.get(&q, READ).await;
        seen.extend(
            r.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match r.json.get("next_cursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() <= 3, "paging does not end");
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);

    for (q, field) in [
        ("action=fax", "action"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("agnet=a1", "agnet"),
        ("cursor=zz", "cursor"),
    ] {
        let r = h.get(&format!("/dead-letters?{q}"), READ).await;
        assert_eq!(
            r.error(),
            (StatusCode::BAD_REQUEST, Some("invalid_query")),
            "{q}: {}",
            r.text
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(field),
            "{q}: {}",
            r.text
        );
    }

    // One dead letter, redacted.
    let webhook = &ids[1];
    let r = h.get(&format!("/dead-letters/{webhook}"), READ).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["state"]["state"], json!("dead"));
    assert_eq!(r.json["job"]["action"]["secret"], json!(REDACTED));
    assert_eq!(
        r.json["job"]["action"]["headers"]["X-Api-Key"],
        json!(REDACTED_HEADER)
    );
    assert_eq!(r.json["history"][0]["status"], json!(500));
    assert_eq!(
        h.get("/dead-letters/job_nope", READ).await.status,
        StatusCode::NOT_FOUND
    );
    let r = h.get("/calls/c1", READ).await;
    assert_eq!(r.json["actions"].as_array().unwrap().len(), 3);
    assert!(
        !r.text.contains(SECRET) && !r.text.contains("crm-key-123"),
        "secrets leak: {}",
        r.text
    );

    // Replay one: back in the queue with a fresh budget.
    let r = h
        .post(&format!("/dead-letters/{webhook}/replay"), ADMIN)
        .await;
    assert_eq!(
        (r.status, &r.json),
        (StatusCode::OK, &json!({"replayed": 1})),
        "{}",
        r.text
    );
    let job = h.queue.job(webhook).await.unwrap().unwrap();
    assert_eq!((job.state.state.as_str(), job.attempts), ("queued", 0));
    let r = h
        .post(&format!("/dead-letters/{webhook}/replay"), ADMIN)
        .await;
    r.assert_error(StatusCode::CONFLICT, "conflict");
    let gone = h.get(&format!("/dead-letters/{webhook}"), READ).await;
    assert_eq!(
        gone.status,
        StatusCode::NOT_FOUND,
        "no longer a dead letter"
    );
    let r = h.post("/dead-letters/job_nope/replay", ADMIN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Bulk: an empty filter is refused unless it says all.
    for body in ["{}", r#"{"all":false}"#] {
        let r = h.post_json("/dead-letters/replay", body).await;
        assert_eq!(
            r.error(),
            (StatusCode::BAD_REQUEST, Some("empty_filter")),
            "{body}"
        );
    }
    let r = h
        .post_json("/dead-letters/replay", r#"{"agnet":"a1"}"#)
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_filter");
    let r = h
        .post_json("/dead-letters/replay", r#"{"action":"email","since":0}"#)
        .await;
    assert_eq!(r.json, json!({"replayed": 1}), "{}", r.text);
    assert_eq!(
        h.queue.job(&ids[2]).await.unwrap().unwrap().state.state,
        "queued"
    );
    assert_eq!(h.queue.stats().await.unwrap().dead, 1);

    // Purge one, then the rest by filter.
    let sms = &ids[0];
    assert_eq!(
        h.delete(&format!("/dead-letters/{sms}"), ADMIN)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.queue.job(sms).await.unwrap().map(|j| j.state.state),
        Some(aftercall_core::JobState::Purged)
    );
    assert_eq!(
        h.delete(&format!("/dead-letters/{sms}"), ADMIN)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let more = h.dead_letters_for(&call("c2", "a1")).await;
    let r = h.post_json("/dead-letters/purge", r#"{}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h.post_json("/dead-letters/purge", r#"{"all":true}"#).await;
    assert_eq!(r.json, json!({"purged": more.len()}), "{}", r.text);
    assert_eq!(h.queue.stats().await.unwrap().dead, 0);
    let r = h.post_json("/dead-letters/replay", r#"{"all":true}"#).await;
    assert_eq!(r.json, json!({"replayed": 0}));
}

#[tokio::test]
async fn every_documented_route_is_served_and_nothing_else_on_its_paths() {
    let h = start().await;
    let doc = h.public(Method::GET, "/openapi.json").await.json;
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{}", paths.len());
    let all = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
    ];
    for (path, ops) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "probe" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in &all {
            let op = ops.get(method.as_str().to_ascii_lowercase());
            let r = h.public(method.clone(), &concrete).await;
            match op {
                None => {
                    assert_eq!(
                        r.error(),
                        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
                        "{method} {path}"
                    );
                    let allow = r.headers[header::ALLOW].to_str().unwrap();
                    for m in ops.as_object().unwrap().keys() {
                        let m = m.to_ascii_uppercase();
                        assert!(allow.contains(&m), "{path}: Allow `{allow}` lacks {m}");
                    }
                }
                // The platforms' routes sign instead: unsigned is 401, with no token asked.
                Some(op) if op["tags"][0] == "intake" => {
                    assert_eq!(op["security"], json!([]), "{method} {path}");
                    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                    assert!(!r.headers.contains_key(header::WWW_AUTHENTICATE));
                }
                Some(op) if op["security"] == json!([]) => {
                    assert_eq!(r.status, StatusCode::OK, "{method} {path} is public")
                }
                Some(op) => {
                    assert_eq!(
                        r.status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} needs a token"
                    );
                    let scope = op["x-required-scope"].as_str().unwrap();
                    assert!(
                        ["read", "ingest", "admin"].contains(&scope),
                        "{method} {path}"
                    );
                    assert!(
                        op["responses"].get("401").is_some(),
                        "{method} {path} documents 401"
                    );
                }
            }
        }
    }
    let r = h.get("/nope", ADMIN).await;
    r.assert_error(StatusCode::NOT_FOUND, "no_route");
}

#[tokio::test]
async fn redis_down_is_503_and_readiness_recovers() {
    let mut h = start().await;
    h.t.redis.kill().await;
    assert_eq!(
        h.public(Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
    let r = h.public(Method::GET, "/readyz").await;
    assert_eq!(
        (r.status, &r.json),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable"})
        )
    );
    let r = h.get("/stats", READ).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        !r.text.contains("redis://") && !r.text.contains("127.0.0.1"),
        "server errors are opaque: {}",
        r.text
    );
    assert!(r.headers.contains_key(header::RETRY_AFTER));

    h.t.redis.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = h.public(Method::GET, "/readyz").await;
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again after a restart: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.get("/stats", READ).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_different_fields_all_apply() {
    let h = start().await;
    for round in 0..10 {
        let id = format!("race{round}");
        assert_eq!(
            h.json(Method::PATCH, &format!("/agents/{id}"), ADMIN, SEED_AGENT)
                .await
                .status,
            StatusCode::CREATED
        );
        let patches = [
            r#"{"name":"Acme"}"#.to_string(),
            r#"{"date_format":"%d %B %Y"}"#.to_string(),
            r#"{"utc_offset":"Europe/Berlin"}"#.to_string(),
            r#"{"email_from":"support@acme.example"}"#.to_string(),
            r#"{"voice_tools":{"post_call_follow_up":{"enabled":false}}}"#.to_string(),
        ];
        let path = format!("/agents/{id}");
        let sends = patches
            .iter()
            .map(|p| h.json(Method::PATCH, &path, ADMIN, p.as_str()));
        for r in futures::future::join_all(sends).await {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        let cfg = h.queue.get_agent(&id).await.unwrap().unwrap();
        let got = [
            &cfg.name,
            &cfg.date_format,
            &cfg.utc_offset,
            &cfg.email_from,
        ];
        let want = ["Acme", "%d %B %Y", "Europe/Berlin", "support@acme.example"];
        for (got, want) in got.into_iter().zip(want) {
            assert_eq!(
                got.as_deref(),
                Some(want),
                "round {round}: a patch was lost"
            );
        }
        assert!(
            !cfg.follow_up().unwrap().enabled,
            "round {round}: a patch was lost"
        );
    }
}
