//! Security claims, end to end with the built binaries: webhook signatures checked by an
//! independent implementation (the `standardwebhooks` package from PyPI), the SSRF guard
//! on real requests (DNS names, IP literals, redirects, https-only), secrets and PII kept
//! out of every log and output, and Redis reached through an ACL user and over TLS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aftercall_tests::{
    Receiver, RedisOptions, Reply, Request, World, action_states, assert_all, assert_failed_with,
    assert_job, call_event, free_port, settled, stderr, stdout, verify_with_python,
};

const T: Duration = Duration::from_secs(20);

async fn set_agent(w: &World, agent_id: &str, body: &serde_json::Value) {
    aftercall_tests::store_agent(&w.queue, agent_id, &body.to_string()).await;
}

fn actions(list: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"name": "Acme", "voice_tools": {"post_call_follow_up": {"enabled": true, "actions": list}}})
}

/// Enqueues `call_id` for agent `a1` through the CLI and waits for its one action to be
/// delivered.
async fn cli_enqueue_delivered(w: &World, call_id: &str) {
    let out = w.cli(&["enqueue"], &call_event(call_id, "a1"));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = w.wait_call(call_id, T, settled).await;
    assert_eq!(
        s.actions[0].state.state, "delivered",
        "{:?}",
        s.actions[0].state
    );
}

// ---------------------------------------------------------------------------------------
// Signatures, verified by the reference implementation.

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_OLD: &str = "whsec_kfqthwQW0P7nP0YnorLnKcwlf34x/T2O";
const SECRET_NEW: &str = "whsec_OS8FylUIkwbHw44png5oWs8noJ4q9pOA";
const SECRET_OTHER: &str = "whsec_jX0SrS3l7AUZicLfWGLUHl6sKk5CYSvK";

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn signatures_verify_with_the_standardwebhooks_package_including_rotation() {
    let w = World::new().await;
    let rx = Receiver::start().await.unwrap();
    let rx_rotated = Receiver::start().await.unwrap();
    // The rotated endpoint fails once, so a retry (new timestamp, same id) is checked too.
    rx_rotated.script([Reply::status(503)]);
    let list = actions(serde_json::json!([
        {"type": "webhook", "url": format!("{}/single", rx.url), "include_transcript": true, "secret": SECRET_A},
        {"type": "webhook", "url": format!("{}/rotated", rx_rotated.url), "secret": [SECRET_OLD, SECRET_NEW]},
    ]));
    set_agent(&w, "a1", &list).await;
    let _worker = w.worker();
    let s = w.push_settled("sig1", "a1", T).await;
    assert_all(&s, "delivered");
    let single = rx.received();
    let rotated = rx_rotated.received();
    assert_eq!(
        (single.len(), rotated.len()),
        (1, 2),
        "one 503, then a retry: {s:?}"
    );
    let got: Vec<_> = single.iter().chain(&rotated).cloned().collect();
    let rotated_sig = rotated[0].header("webhook-signature").unwrap();
    assert_eq!(
        rotated_sig
            .split(' ')
            .filter(|s| s.starts_with("v1,"))
            .count(),
        2,
        "one signature per secret during rotation: {rotated_sig}"
    );

    let as_input = |r: &aftercall_tests::Received| (r.body.to_vec(), r.headers.clone());
    let secrets = [SECRET_A, SECRET_OLD, SECRET_NEW, SECRET_OTHER];
    // Every request, and a copy of the first with one bit of its body flipped.
    let mut reqs: Vec<Request> = got.iter().map(as_input).collect();
    let mut tampered = as_input(&got[0]);
    let n = tampered.0.len();
    tampered.0[n - 2] ^= 1;
    reqs.push(tampered);
    let results = verify_with_python(&w.dir, &reqs, &secrets);
    for (r, res) in got.iter().zip(&results) {
        let ok: Vec<&str> = secrets
            .iter()
            .copied()
            .filter(|s| res[*s] == "ok")
            .collect();
        let want: &[&str] = if r.path == "/single" {
            &[SECRET_A]
        } else {
            &[SECRET_OLD, SECRET_NEW]
        };
        assert_eq!(ok, want, "{} verified with: {res}", r.path);
    }
    let last = results.last().unwrap();
    assert!(
        secrets.iter().all(|s| last[*s] != "ok"),
        "a tampered body must not verify: {last}"
    );
    // The retry carries the same delivery id and its own valid signature.
    assert_eq!(
        rotated[0].header("webhook-id"),
        rotated[1].header("webhook-id")
    );
}

// ---------------------------------------------------------------------------------------
// SSRF guard.

/// Waits for the call and returns its single action's (state, attempts, last error).
async fn outcome(w: &World, call_id: &str) -> (String, u32, String) {
    let s = w.wait_call(call_id, T, settled).await;
    let a = s
        .actions
        .first()
        .unwrap_or_else(|| panic!("{call_id} has no action: {:?}", s.call_ended));
    (
        a.state.state.to_string(),
        a.attempts,
        a.last_error().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_targets_are_refused_after_dns_and_as_literals() {
    let mut w = World::new().await;
    w.set("AFTERCALL_ALLOW_CIDRS", "");
    let rx4 = Receiver::start().await.unwrap();
    let rx6 = Receiver::start_on("[::1]:0").await.unwrap();
    let p4 = rx4.url.rsplit(':').next().unwrap().to_string();
    let p6 = rx6.url.rsplit(':').next().unwrap().to_string();
    // (agent, url, what the refusal must say)
    let cases = [
        // A name, not a literal: only the resolver's check can stop it.
        (
            "dns",
            format!("http://localhost:{p4}/hook"),
            "localhost resolves to 127.0.0.1, a loopback address",
        ),
        ("v6", format!("http://[::1]:{p6}/hook"), "loopback address"),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{p4}/hook"),
            "loopback address",
        ),
        (
            "decimal",
            format!("http://2130706433:{p4}/hook"),
            "loopback address",
        ),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "cloud metadata address",
        ),
        (
            "private",
            "http://10.1.2.3/hook".to_string(),
            "private address",
        ),
    ];
    for (agent, url, _) in &cases {
        w.webhook_agent(agent, url).await;
        w.push(&format!("ssrf-{agent}"), agent).await;
    }
    let mut worker = w.worker();
    for (agent, url, want) in &cases {
        let (state, attempts, err) = outcome(&w, &format!("ssrf-{agent}")).await;
        assert_eq!(
            (state.as_str(), attempts),
            ("dead", 1),
            "{url}: a blocked target is permanent ({err})"
        );
        assert!(
            err.starts_with("blocked: ") && err.contains(want),
            "{url}: {err}"
        );
    }
    assert_eq!(
        (rx4.count(), rx6.count()),
        (0, 0),
        "nothing reached the receivers"
    );
    assert_eq!(w.dead_letters_by_error("blocked").len(), cases.len());

    // Control: the same loopback receivers are reachable once allowed, so the refusals
    // above were the guard's doing.
    worker.kill9();
    let _allowed = w.worker_with(&[("AFTERCALL_ALLOW_CIDRS", "127.0.0.0/8,::1/128")]);
    for agent in ["dns", "v6"] {
        w.push(&format!("allowed-{agent}"), agent).await;
        let (state, _, err) = outcome(&w, &format!("allowed-{agent}")).await;
        assert_eq!(state, "delivered", "{agent}: {err}");
    }
    assert_eq!((rx4.count(), rx6.count()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed() {
    let w = World::new().await; // allows 127.0.0.0/8, so only the redirect rule is tested
    let target = Receiver::start().await.unwrap();
    let rx = Receiver::answering(
        Reply::status(302).header("location", &format!("{}/stolen", target.url)),
    )
    .await;
    w.webhook_agent("to-loopback", &format!("{}/a", rx.url))
        .await;
    let rx2 = Receiver::answering(
        Reply::status(307).header("location", "http://169.254.169.254/latest/meta-data/"),
    )
    .await;
    w.webhook_agent("to-metadata", &format!("{}/b", rx2.url))
        .await;
    let _worker = w.worker();
    w.push("r1", "to-loopback").await;
    w.push("r2", "to-metadata").await;
    for (call, status) in [("r1", 302), ("r2", 307)] {
        let s = w.wait_call(call, T, settled).await;
        let a = &s.actions[0];
        assert_job(a, "dead", 1);
        assert_eq!(a.last_status(), Some(status));
        assert!(
            a.last_error()
                .unwrap()
                .contains("redirects are not followed"),
            "{:?}",
            a.last_error()
        );
    }
    assert_eq!((rx.count(), rx2.count()), (1, 1));
    assert_eq!(target.count(), 0, "the redirect target was never called");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_only_refuses_plain_http() {
    let mut w = World::new().await;
    w.set("AFTERCALL_HTTPS_ONLY", "true");
    let rx = w.receiver_for("lit", Reply::ok()).await;
    let port = rx.url.rsplit(':').next().unwrap();
    w.webhook_agent("name", &format!("http://localhost:{port}/"))
        .await;
    let _worker = w.worker();
    w.push("h1", "lit").await;
    w.push("h2", "name").await;
    for call in ["h1", "h2"] {
        let (state, attempts, err) = outcome(&w, call).await;
        assert_eq!((state.as_str(), attempts), ("dead", 1), "{call}: {err}");
        assert!(err.contains("not https"), "{call}: {err}");
    }
    assert_eq!(rx.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_in_the_environment_does_not_bypass_the_guard() {
    // With HTTP_PROXY set, a client sends the target's name to the proxy, which resolves
    // it: a guard that checks only the client's own DNS answers would never see it.
    let mut w = World::new().await;
    w.set("AFTERCALL_ALLOW_CIDRS", "");
    let proxy = Receiver::start().await.unwrap();
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
    ] {
        w.set(var, &proxy.url);
    }
    let target = Receiver::start().await.unwrap();
    let port = target.url.rsplit(':').next().unwrap();
    w.webhook_agent("a1", &format!("http://localhost:{port}/hook"))
        .await;
    let _worker = w.worker();
    w.push("px1", "a1").await;
    let (state, attempts, err) = outcome(&w, "px1").await;
    assert_eq!(
        (proxy.count(), target.count()),
        (0, 0),
        "the request went out ({state}, {err})"
    );
    assert_eq!((state.as_str(), attempts), ("dead", 1), "{err}");
    assert!(err.contains("loopback address"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Secrets and PII never in logs or outputs.

const PHONE: &str = "+14155559876";
const EMAIL: &str = "zed.canary@example.org";
const TRANSCRIPT: &str = "Transcript canary: the caller said purple elephant 4471";
const SUMMARY: &str = "Summary canary: order 8812 confirmed";
const HEADER_VALUE: &str = "hdr-canary-8d1e5a9c0b";
const API_TOKEN: &str = "tok-canary-5f0c2b7e9a41d3";
const BAD_PHONE: &str = "004155550011";

/// Every string that must never be printed, with a name for the report.
fn canaries() -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("webhook secret", SECRET_A.to_string()),
        ("webhook secret key", SECRET_A["whsec_".len()..].to_string()),
        ("rotated secret", SECRET_OLD.to_string()),
        (
            "rotated secret key",
            SECRET_OLD["whsec_".len()..].to_string(),
        ),
        ("rotated secret (new)", SECRET_NEW.to_string()),
        ("header value", HEADER_VALUE.to_string()),
        ("API token", API_TOKEN.to_string()),
    ];
    v.extend(pii());
    v
}

/// Personal data: may appear only inside the stored event that read outputs return.
fn pii() -> Vec<(&'static str, String)> {
    vec![
        ("phone number", PHONE.to_string()),
        ("phone digits", PHONE[2..].to_string()),
        ("invalid phone", BAD_PHONE.to_string()),
        ("e-mail", EMAIL.to_string()),
        ("e-mail local part", "zed.canary".to_string()),
        ("transcript", TRANSCRIPT.to_string()),
        ("transcript words", "purple elephant".to_string()),
        ("summary", SUMMARY.to_string()),
    ]
}

fn leaks<'a>(text: &str, list: &'a [(&'static str, String)]) -> Vec<&'a str> {
    list.iter()
        .filter(|(_, v)| text.contains(v.as_str()))
        .map(|(name, _)| *name)
        .collect()
}

/// Read outputs return the stored job, event included (docs/api.md: "Read responses
/// include stored events"); this drops every `job` member so the rest can be checked
/// for personal data. Secrets are checked on the whole output, `job` included.
fn without_stored_jobs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("job");
            m.values_mut().for_each(without_stored_jobs);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_stored_jobs),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_personal_data_stay_out_of_logs_and_outputs() {
    let w = World::new().await;
    let ok = Receiver::start().await.unwrap();
    let bad =
        Receiver::answering(Reply::status(400).body(r#"{"error":"missing field crm_id"}"#)).await;
    let flaky = Receiver::start().await.unwrap();
    flaky.script([Reply::status(503).body("try later")]);
    let hook = |url: &str, secret: serde_json::Value| {
        serde_json::json!({"type": "webhook", "url": url, "include_transcript": true,
            "include_recording_url": true, "secret": secret,
            "headers": {"x-api-key": HEADER_VALUE}})
    };
    let list = actions(serde_json::json!([
        hook(&format!("{}/ok", ok.url), SECRET_A.into()),
        hook(&format!("{}/bad", bad.url), SECRET_A.into()),
        hook(&format!("{}/flaky", flaky.url), serde_json::json!([SECRET_OLD, SECRET_NEW])),
        {"type": "sms", "template": "Thanks {caller_name}, your reference is {call_id}."},
        {"type": "email", "to": "{caller_email}", "subject": "Your call", "body_template": "call_summary"},
    ]));
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut run = |what: &str, out: std::process::Output| {
        outputs.push((format!("{what} (stdout)"), stdout(&out)));
        outputs.push((format!("{what} (stderr)"), stderr(&out)));
        out
    };
    // Configured through the CLI, as an operator would.
    let out = run("agents set", w.cli_set_agent("pii", &list.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));

    let api_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let mut worker = w.worker_with(&[
        ("AFTERCALL_LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
        ("AFTERCALL_API_ADDR", &format!("127.0.0.1:{api_port}")),
        ("AFTERCALL_API_TOKENS", &format!("admin:{API_TOKEN}")),
    ]);
    let event = serde_json::json!({
        "call_id": "pii1", "agent_id": "pii", "caller_number": PHONE,
        "summary": SUMMARY, "transcript": TRANSCRIPT,
        "recording_url": "https://rec.example/pii1",
        "metadata": {"caller_name": "Zed", "caller_email": EMAIL}
    });
    let out = run("enqueue", w.cli(&["enqueue", "-"], &event.to_string()));
    assert!(out.status.success(), "{}", stderr(&out));
    // Refused events name the field without echoing the value.
    let invalid = event
        .to_string()
        .replace(PHONE, BAD_PHONE)
        .replace("pii1", "pii-bad");
    let out = run("enqueue invalid", w.cli(&["enqueue", "-"], &invalid));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("caller_number"), "{}", stderr(&out));

    let s = w.wait_call("pii1", T, settled).await;
    assert_eq!(
        action_states(&s),
        [
            ("webhook", "delivered"),
            ("webhook", "dead"),
            ("webhook", "delivered"),
            ("sms", "delivered"),
            ("email", "delivered"),
        ]
    );
    assert_eq!(s.actions[2].attempts, 2, "the 503 was retried");
    // The deliveries themselves carry the data (that is their job).
    let delivered = &ok.received()[0];
    assert_eq!(delivered.header("x-api-key"), Some(HEADER_VALUE));
    assert_eq!(delivered.json()["transcript"], TRANSCRIPT);
    let dead_id = s.actions[1].id.clone();

    for args in [
        vec!["agents", "get", "pii"],
        vec!["calls", "show", "pii1"],
        vec!["calls", "show", "pii1", "--json"],
        vec!["dlq", "list"],
        vec!["dlq", "list", "--json"],
        vec!["dlq", "show", &dead_id],
        vec!["dlq", "show", &dead_id, "--json"],
        vec!["stats", "--json"],
    ] {
        let out = run(&args.join(" "), w.cli(&args, ""));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // A wrong Redis password is reported without the password.
    let out = run(
        "stats with a bad Redis URL",
        w.cli_with(
            &["stats"],
            "",
            &[(
                "AFTERCALL_REDIS_URL",
                &format!("redis://user:{API_TOKEN}@127.0.0.1:1"),
            )],
        ),
    );
    assert!(!out.status.success());

    let http = aftercall_testkit::http_client();
    let auth = format!("Bearer {API_TOKEN}");
    let ready = aftercall_tests::poll(T, || {
        let http = http.clone();
        let url = format!("{api}/healthz");
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    assert!(ready.is_some(), "API up; log:\n{}", worker.log_text());
    let mut api_outputs = Vec::new();
    for path in [
        "/agents/pii".to_string(),
        "/agents".into(),
        "/calls/pii1".into(),
        "/dead-letters".into(),
        format!("/dead-letters/{dead_id}"),
        "/stats".into(),
    ] {
        let r = http
            .get(format!("{api}{path}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        api_outputs.push((format!("GET {path}"), r.text().await.unwrap()));
    }
    for (what, body) in [
        ("POST /calls", event.to_string().replace("pii1", "pii2")),
        (
            "POST /calls invalid",
            invalid.replace("pii-bad", "pii-bad2"),
        ),
    ] {
        let r = http
            .post(format!("{api}/calls"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        api_outputs.push((format!("{what} -> {}", r.status()), r.text().await.unwrap()));
    }
    w.wait_call("pii2", T, settled).await;
    let status = worker.terminate(T).expect("worker stops");
    assert!(status.success(), "{status}; log:\n{}", worker.log_text());
    let log = worker.log_text();
    assert!(
        log.lines().count() > 50 && log.contains("\"level\":\"DEBUG\""),
        "debug JSON log captured:\n{log}"
    );
    // The log is JSON, and carries the masked forms where it mentions a recipient.
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    let secrets_and_pii = canaries();
    let mut found = Vec::new();
    for (what, text) in outputs
        .iter()
        .chain(&api_outputs)
        .chain([&("worker log".to_string(), log)])
    {
        // Secrets: nowhere, stored jobs included.
        let secret_list: Vec<_> = secrets_and_pii
            .iter()
            .filter(|(n, _)| !pii().iter().any(|(p, _)| p == n))
            .cloned()
            .collect();
        for l in leaks(text, &secret_list) {
            found.push(format!("{what}: {l}"));
        }
        // Personal data: nowhere but inside the stored jobs read outputs return.
        let rest = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut v) => {
                without_stored_jobs(&mut v);
                v.to_string()
            }
            // Not one JSON document: JSON Lines (the log) or text, checked whole.
            Err(_) => text.clone(),
        };
        for l in leaks(&rest, &pii()) {
            found.push(format!("{what}: {l}"));
        }
    }
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
    // The check can fail: the canaries are really in the stored data it skipped.
    let calls_json = &outputs
        .iter()
        .find(|(w, _)| w == "calls show pii1 --json (stdout)")
        .unwrap()
        .1;
    assert!(calls_json.contains(TRANSCRIPT) && calls_json.contains(EMAIL));
}

// ---------------------------------------------------------------------------------------
// Redis ACL and TLS.

const REDIS_PASS: &str = "redis-canary-pass-3c9e";

#[tokio::test(flavor = "multi_thread")]
async fn works_as_a_least_privilege_acl_user_and_never_shows_its_password() {
    // The default user may only PING (the harness's readiness probe); the worker's user
    // may touch only this queue's keys, and no dangerous commands.
    let prefix_pattern = "~{t*}:*";
    let opts = RedisOptions {
        args: format!(
            "--user default on nopass -@all +ping \
             --user aftercall on >{REDIS_PASS} {prefix_pattern} resetchannels +@all -@dangerous +info"
        )
        .split_whitespace()
        .map(String::from)
        .collect(),
        ..Default::default()
    };
    let mut w = World::with_redis(opts, |port| {
        format!("redis://aftercall:{REDIS_PASS}@127.0.0.1:{port}")
    })
    .await;
    w.set("RUST_LOG", "debug");
    let (_rx, mut worker) = w.serving("a1", Reply::ok()).await;
    cli_enqueue_delivered(&w, "acl1").await;
    for args in [
        vec!["calls", "show", "acl1"],
        vec!["stats"],
        vec!["dlq", "list"],
    ] {
        let out = w.cli(&args, "");
        assert!(
            out.status.success(),
            "{args:?} as the ACL user: {}",
            stderr(&out)
        );
    }

    let port = w.redis.port();
    // No credentials: the default user may not run anything.
    let out = w.cli_with(
        &["stats"],
        "",
        &[("AFTERCALL_REDIS_URL", &format!("redis://127.0.0.1:{port}"))],
    );
    assert_failed_with(&out, "aftercall: ");
    // A wrong password: a one-line error that hides the password given.
    let wrong = "wrong-canary-pass-77";
    let out = w.cli_with(
        &["enqueue"],
        &call_event("acl2", "a1"),
        &[(
            "AFTERCALL_REDIS_URL",
            &format!("redis://aftercall:{wrong}@127.0.0.1:{port}"),
        )],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with("aftercall: ") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!err.contains(wrong), "password shown: {err}");
    assert!(w.queue.call_status("acl2").await.unwrap().is_none());

    worker.terminate(T).expect("worker stops");
    let log = worker.log_text();
    assert!(!log.contains(REDIS_PASS), "password in the worker log");
}

/// A throwaway CA and a server certificate for localhost / 127.0.0.1, via the openssl CLI.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let sh = format!(
        r#"set -e
cd '{}'
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=aftercall-test-ca -keyout ca.key -out ca.crt
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.crt
"#,
        dir.display()
    );
    let out = Command::new("sh").arg("-c").arg(sh).output().expect("sh");
    assert!(out.status.success(), "openssl: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_over_tls_with_rediss_urls() {
    let certs = std::env::temp_dir().join(format!("aftercall-tls-{}", uuid_like()));
    make_certs(&certs);
    let tls_port = free_port();
    let c = |f: &str| certs.join(f).display().to_string();
    let opts = RedisOptions {
        args: vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            c("server.crt"),
            "--tls-key-file".into(),
            c("server.key"),
            "--tls-ca-cert-file".into(),
            c("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        ..Default::default()
    };
    // The harness keeps the plain port (its readiness probe and its own connection);
    // every process of the test goes over TLS.
    let mut w = World::with_redis(opts, |port| format!("redis://127.0.0.1:{port}")).await;
    w.url = format!("rediss://localhost:{tls_port}");
    let rx = w.receiver_for("a1", Reply::ok()).await;

    // Without trusting the CA: a certificate error, nothing written.
    let out = w.cli(&["enqueue"], &call_event("tls0", "a1"));
    assert_failed_with(&out, "aftercall: cannot reach Redis");
    assert!(w.queue.call_status("tls0").await.unwrap().is_none());
    // Plain redis:// to the TLS port does not work either.
    let out = w.cli_with(
        &["stats"],
        "",
        &[
            (
                "AFTERCALL_REDIS_URL",
                &format!("redis://127.0.0.1:{tls_port}"),
            ),
            ("AFTERCALL_REDIS_TIMEOUT", "1s"),
        ],
    );
    assert!(!out.status.success());

    w.set("SSL_CERT_FILE", &c("ca.crt"));
    let _worker = w.worker();
    cli_enqueue_delivered(&w, "tls1").await;
    // The URL names the TLS port, which speaks nothing but TLS: delivering proves it.
    assert_eq!(rx.count(), 1);
    let _ = std::fs::remove_dir_all(&certs);
}

/// Webhooks to an `https://` receiver go through the webhook client's TLS with the
/// platform verifier, as in production: refused while the receiver's authority is not
/// trusted (a certificate error, retried), delivered once `SSL_CERT_FILE` names it.
/// The receiver sits behind a TLS-terminating proxy that speaks nothing but TLS.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_over_tls_are_verified_against_the_trusted_authorities() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = std::env::temp_dir().join(format!("aftercall-tls-{}", uuid_like()));
    make_certs(&certs);
    let c = |f: &str| certs.join(f).display().to_string();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_file(c("server.crt")).unwrap()],
            PrivateKeyDer::from_pem_file(c("server.key")).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let rx = Receiver::start().await.unwrap();
    let plain: std::net::SocketAddr = rx
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(plain).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    let mut w = World::new().await;
    w.webhook_agent("a1", &format!("https://localhost:{port}/hook"))
        .await;

    // The authority is not trusted: the attempt fails on the certificate, and is retried.
    let mut untrusting = w.worker();
    w.push("tls-hook", "a1").await;
    let s = w
        .wait_call("tls-hook", T, |s| {
            s.actions.first().is_some_and(|a| !a.history.is_empty())
        })
        .await;
    let first = &s.actions[0].history[0];
    let error = first.error.clone().unwrap_or_default();
    assert!(
        error.contains("TLS") && error.to_lowercase().contains("certificate"),
        "{first:?}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the receiver");
    untrusting.terminate(T).expect("worker stops");

    // Trusted through SSL_CERT_FILE, as docs/security.md says: delivered.
    w.set("SSL_CERT_FILE", &c("ca.crt"));
    let _trusting = w.worker();
    let s = w.wait_call("tls-hook", T, settled).await;
    assert_eq!(
        s.actions[0].state.state, "delivered",
        "{:?}",
        s.actions[0].history
    );
    assert!(rx.single().header("webhook-id").is_some());
    let _ = std::fs::remove_dir_all(&certs);
}
