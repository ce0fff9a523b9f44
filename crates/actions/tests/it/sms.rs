//! The SMS executor against a local Twilio stand-in (checks the exact request and plays
//! Twilio's answers) and against the outbox.

use std::path::Path;
use std::time::Duration;

use aftercall_actions::HttpConfig;
use aftercall_actions::sms::{SmsConfig, SmsExecutor, TwilioConfig};
use aftercall_core::Outcome;
use aftercall_core::config::SmsAction;
use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{
    Reply, TempDir, TestServer, assert_within, basic, client, delivered, http_cfg,
    job_of as sms_job, kind, parse_action, seed_event, silent_server,
};

const SID: &str = "ACtest0123456789";
const TOKEN: &str = "twilio-secret-token";

fn twilio(base: &str) -> TwilioConfig {
    TwilioConfig {
        account_sid: SID.into(),
        auth_token: TOKEN.into(),
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
        base_url: base.into(),
    }
}

fn executor(t: TwilioConfig, http: HttpConfig) -> SmsExecutor {
    SmsExecutor::new(
        client(&http),
        http,
        &SmsConfig { twilio: Some(t) },
        Path::new("/nonexistent-outbox"),
    )
    .unwrap()
}

/// `a` for the seed call, as job `job_id`.
async fn send(exec: &SmsExecutor, job_id: &str, a: &SmsAction) -> Outcome {
    exec.execute(job_id, &sms_job(seed_event(), a), a).await
}

fn sms(v: Value) -> SmsAction {
    parse_action(v)
}

fn seed_sms() -> SmsAction {
    sms(
        json!({"type": "sms", "template": "Thanks for calling {agent_name}! Your reference number is {call_id}."}),
    )
}

#[tokio::test]
async fn sends_the_documented_request_and_reports_segments() {
    let reply = json!({"sid": "SM0001", "status": "queued", "num_segments": "1"});
    let server = TestServer::start(vec![Reply::json(201, reply)]).await;
    let exec = executor(twilio(&server.base), http_cfg());
    assert_eq!(exec.provider(), "twilio");
    let a = seed_sms();
    let out = send(&exec, "job_sms.0", &a).await;
    assert_eq!(
        out,
        Outcome::Delivered {
            status: Some(201),
            detail: Some("1 segment (GSM-7); Twilio message SM0001 (queued)".into())
        }
    );

    let r = server.single();
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, format!("/2010-04-01/Accounts/{SID}/Messages.json"));
    assert_eq!(r.header("authorization"), Some(basic(SID, TOKEN).as_str()));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("i-twilio-idempotency-token"), Some("job_sms.0"));
    let form = r.form();
    let want = [
        ("To", "+14155551234"),
        (
            "Body",
            "Thanks for calling Acme Support! Your reference number is call_xyz789.",
        ),
        ("From", "+15005550006"),
    ];
    assert_eq!(
        form,
        want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
    );
}

#[tokio::test]
async fn messaging_service_and_long_unicode_messages() {
    let reply = json!({"sid": "SM0002", "status": "accepted"});
    let server = TestServer::start(vec![Reply::json(201, reply)]).await;
    let t = TwilioConfig {
        from: None,
        messaging_service_sid: Some("MGservice01".into()),
        ..twilio(&server.base)
    };
    let exec = executor(t, http_cfg());
    // 71 UCS-2 units: two segments of 67.
    let a = sms(
        json!({"type": "sms", "to": "+447700900123", "template": format!("Grüße aus Kraków {}", "x".repeat(55))}),
    );
    let out = send(&exec, "job_sms.1", &a).await;
    let (_, d) = delivered(&out);
    assert!(d.starts_with("2 segments (UCS-2)"), "{out:?}");
    let form = server.single().form();
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["To", "Body", "MessagingServiceSid"]);
    assert_eq!(form[0].1, "+447700900123");
    assert_eq!(form[2].1, "MGservice01");
}

#[tokio::test]
async fn twilio_errors_are_classified() {
    let err = |code: u64, status: u16| {
        Reply::json(
            status,
            json!({"code": code, "message": "The 'To' number +14155551234 is not valid.", "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status}),
        )
    };
    let cases: Vec<(Reply, &str)> = vec![
        (err(21211, 400), "permanent"),
        (err(21610, 400), "opted_out"),
        (err(21614, 400), "permanent"),
        (err(20003, 401), "permanent"),
        (err(20429, 429).with_header("retry-after", "3"), "retry"),
        (
            Reply {
                status: 500,
                headers: vec![],
                body: "Internal Server Error".into(),
            },
            "retry",
        ),
        (
            Reply {
                status: 503,
                headers: vec![],
                body: String::new(),
            },
            "retry",
        ),
    ];
    for (reply, want) in cases {
        let status = reply.status;
        let server = TestServer::start(vec![reply]).await;
        let exec = executor(twilio(&server.base), http_cfg());
        let a = seed_sms();
        let out = send(&exec, "job_err.0", &a).await;
        assert_eq!(kind(&out), want, "HTTP {status}: {out:?}");
        let shown = format!("{out:?}");
        assert!(
            !shown.contains("4155551234"),
            "the full number leaked: {shown}"
        );
        assert!(!shown.contains(TOKEN));
        if status == 429 {
            assert!(
                matches!(out, Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3))
            );
        }
        if status == 400 && want == "permanent" {
            assert!(
                matches!(&out, Outcome::Permanent { error, status: Some(400), .. } if error.contains("Twilio error 21")),
                "{out:?}"
            );
        }
        if want == "opted_out" {
            assert!(
                matches!(&out, Outcome::OptedOut { reason } if reason.contains("Twilio error 21610")),
                "{out:?}"
            );
        }
        assert_eq!(server.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_silent_provider_times_out_and_is_retried() {
    let addr = silent_server().await;
    let http = HttpConfig {
        timeout: Duration::from_millis(300),
        ..http_cfg()
    };
    let exec = executor(twilio(&format!("http://{addr}")), http);
    let a = seed_sms();
    let started = std::time::Instant::now();
    let out = send(&exec, "job_slow.0", &a).await;
    assert!(
        matches!(&out, Outcome::Retry { error, .. } if error.starts_with("timeout")),
        "{out:?}"
    );
    assert_within(started, Duration::from_secs(5));
}

#[tokio::test]
async fn recipients_are_checked_before_sending() {
    let server = TestServer::start(vec![Reply::json(201, json!({"sid": "SM1"}))]).await;
    let exec = executor(twilio(&server.base), http_cfg());
    let a = seed_sms();

    let mut no_number = seed_event();
    no_number.as_object_mut().unwrap().remove("caller_number");
    assert_eq!(
        exec.execute("j.0", &sms_job(no_number, &a), &a).await,
        Outcome::skipped("no caller_number")
    );

    let bad = sms(json!({"type": "sms", "to": "{{metadata.order_id}}", "template": "hi"}));
    let out = exec
        .execute("j.1", &sms_job(seed_event(), &bad), &bad)
        .await;
    assert!(
        matches!(&out, Outcome::Permanent { error, .. } if error.contains("E.164") && !error.contains("12345")),
        "{out:?}"
    );
    assert!(
        server.requests().is_empty(),
        "nothing may be sent to an invalid recipient"
    );
}

#[tokio::test]
async fn the_ssrf_guard_applies_to_the_base_url() {
    let server = TestServer::start(vec![Reply::json(201, json!({"sid": "SM1"}))]).await;
    let exec = executor(twilio(&server.base), HttpConfig::default());
    let a = seed_sms();
    let out = send(&exec, "j.0", &a).await;
    assert!(
        matches!(&out, Outcome::Permanent { error, .. } if error.contains("blocked")),
        "{out:?}"
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn without_a_provider_the_sms_goes_to_the_outbox() {
    let outbox = TempDir::new("sms-outbox");
    let http = http_cfg();
    let exec = SmsExecutor::new(client(&http), http, &SmsConfig::default(), outbox.path()).unwrap();
    assert_eq!(exec.provider(), "outbox");
    let a = sms(json!({"type": "sms", "template": format!("{{agent_name}}: {}", "y".repeat(200))}));
    let out = send(&exec, "job_sms_out.0", &a).await;
    let (_, d) = delivered(&out);
    assert!(
        d.starts_with("2 segments (GSM-7); written to outbox"),
        "{out:?}"
    );
    let doc: Value = serde_json::from_slice(
        &std::fs::read(outbox.path().join("sms/job_sms_out.0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["to"], "+14155551234");
    assert_eq!(doc["segments"], 2);
    assert_eq!(doc["body"], format!("Acme Support: {}", "y".repeat(200)));
    let again = send(&exec, "job_sms_out.0", &a).await;
    assert!(
        matches!(&again, Outcome::Delivered { detail: Some(d), .. } if d.contains("already in outbox")),
        "{again:?}"
    );
}
