//! The create-task executor against local stand-ins for Linear, Jira, Asana and GitHub:
//! each checks the documented request shape and plays the providers' answers.

use aftercall_actions::task::{TaskConfig, TaskExecutor};
use aftercall_core::Outcome;
use aftercall_core::config::TaskAction;
use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{
    Reply, TestServer, basic, client, delivered, http_cfg, job_of, kind, parse_action, seed_event,
    silent_server,
};

fn executor(cfg: TaskConfig) -> TaskExecutor {
    let http = http_cfg();
    TaskExecutor::new(client(&http), http, &cfg).unwrap()
}

fn task(v: Value) -> TaskAction {
    parse_action(v)
}

/// `a` run against the providers of `cfg`, for the seed's call.
async fn run(cfg: TaskConfig, job_id: &str, a: &TaskAction) -> Outcome {
    executor(cfg)
        .execute(job_id, &job_of(seed_event(), a), a)
        .await
}

fn linear_cfg(base: &str) -> TaskConfig {
    TaskConfig {
        linear_api_key: Some("lin_api_key".into()),
        linear_url: format!("{base}/graphql"),
        ..TaskConfig::default()
    }
}

fn jira_cfg(base: &str) -> TaskConfig {
    TaskConfig {
        jira_url: Some(base.into()),
        jira_email: Some("bot@acme.example".into()),
        jira_api_token: Some("jira-token".into()),
        ..TaskConfig::default()
    }
}

fn asana_cfg(base: &str) -> TaskConfig {
    TaskConfig {
        asana_token: Some("asana-pat".into()),
        asana_url: base.into(),
        ..TaskConfig::default()
    }
}

fn github_cfg(base: &str) -> TaskConfig {
    TaskConfig {
        github_token: Some("ghp_token".into()),
        github_url: base.into(),
        ..TaskConfig::default()
    }
}

const DEFAULT_TITLE: &str = "Follow up: call call_xyz789 with John Smith";

fn linear_action() -> TaskAction {
    task(
        json!({"type": "task", "provider": "linear", "project": "team-uuid", "assignee": "user-uuid", "labels": ["label-uuid"], "due_in_days": 2}),
    )
}

#[tokio::test]
async fn linear_sends_the_issue_create_mutation() {
    let created = json!({"data": {"issueCreate": {"success": true, "issue": {"id": "x", "identifier": "ENG-7", "url": "https://linear.app/acme/issue/ENG-7"}}}});
    let server = TestServer::start(vec![Reply::json(200, created)]).await;
    let a = linear_action();
    let out = run(linear_cfg(&server.base), "job_lin.0", &a).await;
    let (status, d) = delivered(&out);
    assert!(status == Some(200) && d.contains("ENG-7"), "{out:?}");

    let r = server.single_to(Method::POST, "/graphql");
    assert_eq!(r.header("authorization"), Some("lin_api_key"));
    let body = r.json();
    let query = body["query"].as_str().unwrap();
    assert!(query.contains("issueCreate(input: $input)"), "{body}");
    let input = &body["variables"]["input"];
    assert_eq!(input["teamId"], "team-uuid");
    assert_eq!(input["title"], DEFAULT_TITLE);
    assert_eq!(input["assigneeId"], "user-uuid");
    assert_eq!(input["labelIds"], json!(["label-uuid"]));
    assert_eq!(input["dueDate"], "2026-03-17");
    let description = input["description"].as_str().unwrap();
    assert!(
        description.starts_with("Caller inquired about order #12345."),
        "{input}"
    );
    assert_eq!(
        input["id"].as_str().unwrap().len(),
        36,
        "a stable issue id derived from the job id"
    );
}

#[tokio::test]
async fn linear_graphql_errors_are_not_delivered() {
    let error = json!({"data": null, "errors": [{"message": "Entity not found: Team", "extensions": {"code": "INVALID_INPUT"}}]});
    let not_found = json!({"data": {"issue": null}, "errors": [{"message": "Entity not found"}]});
    let server =
        TestServer::start(vec![Reply::json(200, error), Reply::json(200, not_found)]).await;
    let a = linear_action();
    let out = run(linear_cfg(&server.base), "job_lin.1", &a).await;
    assert!(
        matches!(&out, Outcome::Permanent { error, .. } if error.contains("Entity not found: Team")),
        "{out:?}"
    );
    // The failed create is followed by a look-up of the stable id.
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let (create, lookup) = (reqs[0].json(), reqs[1].json());
    assert!(lookup["query"].as_str().unwrap().contains("issue(id: $id)"));
    assert_eq!(
        lookup["variables"]["id"],
        create["variables"]["input"]["id"]
    );
}

#[tokio::test]
async fn linear_retry_after_a_lost_answer_finds_the_issue() {
    let duplicate = json!({"errors": [{"message": "Conflict on insert", "extensions": {"code": "INVALID_INPUT"}}]});
    let found = json!({"data": {"issue": {"id": "x", "identifier": "ENG-8", "url": "https://linear.app/acme/issue/ENG-8"}}});
    let server =
        TestServer::start(vec![Reply::json(400, duplicate), Reply::json(200, found)]).await;
    let a = linear_action();
    let out = run(linear_cfg(&server.base), "job_lin.2", &a).await;
    let (_, d) = delivered(&out);
    assert!(
        d.contains("ENG-8") && d.contains("already created"),
        "{out:?}"
    );
}

#[tokio::test]
async fn linear_rate_limits_retry() {
    let limited = json!({"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]});
    let server = TestServer::start(vec![Reply::json(400, limited)]).await;
    let a = linear_action();
    let out = run(linear_cfg(&server.base), "job_lin.3", &a).await;
    assert_eq!(kind(&out), "retry", "{out:?}");
    assert_eq!(server.requests().len(), 1, "no look-up after a rate limit");
}

#[tokio::test]
async fn jira_sends_fields_with_an_adf_description() {
    let reply = json!({"id": "10001", "key": "SUP-12", "self": "x"});
    let server = TestServer::start(vec![Reply::json(201, reply)]).await;
    let a = task(json!({
        "type": "task", "provider": "jira", "project": "SUP", "title": "Call back {{caller_name}}",
        "description": "{{summary}}\n\nOrder: {{metadata.order_id}}", "labels": ["call back"], "assignee": "5b10ac8d82e05b22cc7d4ef5", "due_in_days": 1
    }));
    let out = run(jira_cfg(&server.base), "job_jira.0", &a).await;
    let (status, d) = delivered(&out);
    assert!(
        status == Some(201) && d.contains("SUP-12") && d.contains("/browse/SUP-12"),
        "{out:?}"
    );

    let r = server.single_to(Method::POST, "/rest/api/3/issue");
    assert_eq!(
        r.header("authorization"),
        Some(basic("bot@acme.example", "jira-token").as_str())
    );
    let f = &r.json()["fields"];
    assert_eq!(f["project"], json!({"key": "SUP"}));
    assert_eq!(f["summary"], "Call back John Smith");
    assert_eq!(f["issuetype"], json!({"name": "Task"}));
    assert_eq!(f["labels"], json!(["call-back"]));
    assert_eq!(f["assignee"], json!({"id": "5b10ac8d82e05b22cc7d4ef5"}));
    assert_eq!(f["duedate"], "2026-03-16");
    assert_eq!(
        f["description"],
        json!({"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Caller inquired about order #12345. Agent confirmed delivery date of March 15."}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Order: 12345"}]}
        ]})
    );
}

#[tokio::test]
async fn asana_sends_the_task_data() {
    let reply = json!({"data": {"gid": "1200", "permalink_url": "https://app.asana.com/0/1/1200"}});
    let server = TestServer::start(vec![Reply::json(201, reply)]).await;
    let a = task(
        json!({"type": "task", "provider": "asana", "project": "1199", "assignee": "me", "due_in_days": 7, "title": "Follow up {call_id}"}),
    );
    let out = run(asana_cfg(&server.base), "job_asana.0", &a).await;
    let (_, d) = delivered(&out);
    assert!(d.contains("1200"), "{out:?}");
    let r = server.single_to(Method::POST, "/api/1.0/tasks");
    assert_eq!(r.header("authorization"), Some("Bearer asana-pat"));
    let d = &r.json()["data"];
    assert_eq!(d["name"], "Follow up call_xyz789");
    assert_eq!(d["projects"], json!(["1199"]));
    assert_eq!(d["assignee"], "me");
    assert_eq!(d["due_on"], "2026-03-22");
    let notes = d["notes"].as_str().unwrap();
    assert!(notes.contains("Number: +14155551234"), "{d}");
    assert!(d.get("workspace").is_none());

    // Without a project the worker's workspace is used.
    let server = TestServer::start(vec![Reply::json(201, json!({"data": {"gid": "1201"}}))]).await;
    let cfg = TaskConfig {
        asana_workspace: Some("ws-1".into()),
        ..asana_cfg(&server.base)
    };
    let a = task(json!({"type": "task", "provider": "asana"}));
    let out = run(cfg, "job_asana.1", &a).await;
    assert_eq!(kind(&out), "delivered", "{out:?}");
    let d = &server.single().json()["data"];
    assert_eq!(d["workspace"], "ws-1");
    assert!(d.get("projects").is_none());
}

#[tokio::test]
async fn github_sends_the_issue() {
    let reply = json!({"number": 42, "html_url": "https://github.com/acme/support/issues/42"});
    let server = TestServer::start(vec![Reply::json(201, reply)]).await;
    let a = task(
        json!({"type": "task", "provider": "github", "project": "acme/support", "labels": ["follow-up"], "assignee": "octocat", "due_in_days": 3}),
    );
    let out = run(github_cfg(&server.base), "job_gh.0", &a).await;
    let (status, d) = delivered(&out);
    assert!(status == Some(201) && d.contains("#42"), "{out:?}");
    let r = server.single_to(Method::POST, "/repos/acme/support/issues");
    assert_eq!(r.header("authorization"), Some("Bearer ghp_token"));
    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
    let b = r.json();
    assert_eq!(b["title"], DEFAULT_TITLE);
    assert_eq!(b["labels"], json!(["follow-up"]));
    assert_eq!(b["assignees"], json!(["octocat"]));
    assert!(
        b["body"].as_str().unwrap().ends_with("Due: 2026-03-18"),
        "{b}"
    );
}

#[tokio::test]
async fn provider_failures_are_classified() {
    type MakeConfig = fn(&str) -> TaskConfig;
    // (provider, its settings, a project)
    let configs: [(&str, MakeConfig, &str); 4] = [
        ("linear", linear_cfg, "t"),
        ("jira", jira_cfg, "SUP"),
        ("asana", asana_cfg, "1"),
        ("github", github_cfg, "acme/support"),
    ];
    let plays: Vec<(Reply, &str)> = vec![
        (
            Reply::json(401, json!({"message": "Bad credentials"})),
            "permanent",
        ),
        (
            Reply::json(404, json!({"message": "Not Found"})),
            "permanent",
        ),
        (
            Reply {
                status: 500,
                headers: vec![],
                body: "boom".into(),
            },
            "retry",
        ),
        (
            Reply::json(429, json!({"message": "slow down"})).with_header("retry-after", "5"),
            "retry",
        ),
    ];
    for (name, cfg, project) in configs {
        for (reply, want) in &plays {
            let server = TestServer::start(vec![reply.clone()]).await;
            let a = task(json!({"type": "task", "provider": name, "project": project}));
            let out = run(cfg(&server.base), "job_fail.0", &a).await;
            assert_eq!(kind(&out), *want, "{name} HTTP {}: {out:?}", reply.status);
            let shown = format!("{out:?}");
            for secret in ["lin_api_key", "jira-token", "asana-pat", "ghp_token"] {
                assert!(
                    !shown.contains(secret),
                    "{name} leaked a credential: {shown}"
                );
            }
        }
    }
    // GitHub's primary rate limit is a 403.
    let server = TestServer::start(vec![
        Reply::json(403, json!({"message": "API rate limit exceeded"}))
            .with_header("x-ratelimit-remaining", "0"),
    ])
    .await;
    let a = task(json!({"type": "task", "provider": "github", "project": "acme/support"}));
    let out = run(github_cfg(&server.base), "job_fail.1", &a).await;
    assert_eq!(kind(&out), "retry", "{out:?}");
}

#[tokio::test]
async fn a_provider_without_credentials_fails_permanently_naming_the_setting() {
    let exec = executor(TaskConfig::default());
    let cases = [
        ("linear", "AFTERCALL_LINEAR_API_KEY"),
        ("jira", "AFTERCALL_JIRA_URL"),
        ("asana", "AFTERCALL_ASANA_TOKEN"),
        ("github", "AFTERCALL_GITHUB_TOKEN"),
    ];
    for (provider, setting) in cases {
        let a = task(json!({"type": "task", "provider": provider, "project": "acme/support"}));
        let out = exec
            .execute("job_cfg.0", &job_of(seed_event(), &a), &a)
            .await;
        assert!(
            matches!(&out, Outcome::Permanent { error, .. } if error.contains(setting)),
            "{provider}: {out:?}"
        );
    }
}

#[tokio::test]
async fn a_silent_provider_times_out_and_is_retried() {
    let addr = silent_server().await;
    let http = aftercall_actions::HttpConfig {
        timeout: std::time::Duration::from_millis(300),
        ..http_cfg()
    };
    let exec =
        TaskExecutor::new(client(&http), http, &github_cfg(&format!("http://{addr}"))).unwrap();
    let a = task(json!({"type": "task", "provider": "github", "project": "acme/support"}));
    let out = exec
        .execute("job_slow.0", &job_of(seed_event(), &a), &a)
        .await;
    assert!(
        matches!(&out, Outcome::Retry { error, .. } if error.starts_with("timeout")),
        "{out:?}"
    );
}
