//! The e-mail executor against a real SMTP server (Python's aiosmtpd, started per test on
//! 127.0.0.1:0 by `tests/fixtures/smtp_server.py`) and against the outbox.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aftercall_actions::email::{EmailConfig, EmailExecutor};
use aftercall_core::Outcome;
use aftercall_core::config::EmailAction;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{
    TempDir, assert_within, delivered, job_of as email_job, kind, parse_action, seed_event,
    silent_server, until,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/smtp_server.py");

fn python() -> String {
    std::env::var("AFTERCALL_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One aiosmtpd process; killed when dropped.
struct SmtpServer {
    port: u16,
    dir: TempDir,
    _child: tokio::process::Child,
}

impl SmtpServer {
    async fn start(mode: &str) -> SmtpServer {
        Self::start_with(mode, &[]).await
    }

    async fn start_with(mode: &str, extra: &[&str]) -> SmtpServer {
        let dir = TempDir::new("smtp");
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(SCRIPT)
            .args(["--dir", dir.path().to_str().unwrap(), "--mode", mode])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start `{}` for the SMTP test server ({e}); install Python 3 and `pip install aiosmtpd`", python())
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let port = match first {
            Ok(Ok(Some(line))) if line.starts_with("PORT ") => line[5..].trim().parse().unwrap(),
            other => {
                let status = child.try_wait().ok().flatten();
                if status.and_then(|s| s.code()) == Some(3) {
                    panic!(
                        "the SMTP tests need aiosmtpd: run `pip install aiosmtpd` (python: {})",
                        python()
                    );
                }
                panic!("SMTP test server did not start: {other:?}, exit status {status:?}");
            }
        };
        SmtpServer {
            port,
            dir,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        until(
            &format!("{n} message(s) at the SMTP server"),
            Duration::from_secs(10),
            || {
                let m = self.messages();
                (m.len() >= n).then_some(m)
            },
        )
        .await
    }
}

/// `a` for the seed call, as job `job_id`.
async fn send(exec: &EmailExecutor, job_id: &str, a: &EmailAction) -> Outcome {
    exec.execute(job_id, &email_job(seed_event(), a), a).await
}

fn action(v: Value) -> EmailAction {
    parse_action(v)
}

/// An SMTP server in `mode` and an executor sending to it.
async fn smtp(mode: &str) -> (SmtpServer, EmailExecutor) {
    let server = SmtpServer::start(mode).await;
    let exec = smtp_executor(server.url());
    (server, exec)
}

fn smtp_executor(url: String) -> EmailExecutor {
    let cfg = EmailConfig {
        smtp_url: Some(url),
        from: Some("Acme <noreply@acme.example>".into()),
        ..EmailConfig::default()
    };
    EmailExecutor::new(&cfg, Path::new("/nonexistent-outbox")).unwrap()
}

fn part<'a>(msg: &'a Value, content_type: &str) -> &'a str {
    msg["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["content_type"] == content_type)
        .unwrap_or_else(|| panic!("no {content_type} part in {msg:#}"))["body"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn sends_multipart_mail_with_variables_escaping_and_a_stable_message_id() {
    let (server, exec) = smtp("accept").await;
    let mut event = seed_event();
    event["metadata"]["caller_name"] = json!("<script>alert(1)</script>");
    let a = action(json!({
        "type": "email",
        "to": "{caller_email}",
        "subject": "Your call with {agent_name} — {{date}}",
        "body_template": "call_summary",
        "cc": ["team@acme.example"],
        "bcc": ["audit@acme.example"],
        "reply_to": "support@acme.example"
    }));
    let j = email_job(event, &a);

    let out = exec.execute("job_mail.2", &j, &a).await;
    let (status, d) = delivered(&out);
    assert!(
        status == Some(250) && d.contains("j***@example.com") && !d.contains("john@"),
        "{out:?}"
    );
    let m = &server.wait_for(1).await[0];

    assert_eq!(m["mail_from"], "noreply@acme.example");
    assert_eq!(
        m["rcpt_tos"],
        json!([
            "john@example.com",
            "team@acme.example",
            "audit@acme.example"
        ])
    );
    let names: Vec<String> = serde_json::from_value(m["header_names"].clone()).unwrap();
    assert!(
        !names.iter().any(|n| n.eq_ignore_ascii_case("bcc")),
        "Bcc must not be in the headers: {names:?}"
    );
    assert_eq!(
        m["headers"]["subject"],
        "Your call with Acme Support — 2026-03-15"
    );
    assert_eq!(m["headers"]["message-id"], "<job_mail.2@aftercall>");
    assert_eq!(m["headers"]["reply-to"], "support@acme.example");
    assert_eq!(m["headers"]["cc"], "team@acme.example");
    assert_eq!(m["content_type"], "multipart/alternative");

    let text = part(m, "text/plain");
    assert!(
        text.contains("Hi <script>alert(1)</script>,"),
        "plain text is not escaped: {text}"
    );
    assert!(
        text.contains("Caller inquired about order #12345."),
        "{text}"
    );
    assert!(
        text.contains("Call reference: call_xyz789 (4 min)"),
        "{text}"
    );
    let html = part(m, "text/html");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "HTML must escape the name: {html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("<h3>Summary</h3>"), "{html}");

    // A retried send carries the same Message-ID, so it is recognisable as the same mail.
    let again = exec.execute("job_mail.2", &j, &a).await;
    assert_eq!(kind(&again), "delivered", "{again:?}");
    let both = server.wait_for(2).await;
    assert_eq!(both[1]["headers"]["message-id"], "<job_mail.2@aftercall>");
}

#[tokio::test]
async fn cr_lf_in_a_callers_name_cannot_add_headers_or_recipients() {
    let (server, exec) = smtp("accept").await;
    let mut event = seed_event();
    event["metadata"]["caller_name"] = json!("Eve\r\nBcc: victim@evil.example\r\nX-Injected: yes");
    let a = action(
        json!({"type": "email", "to": "{{caller_email}}", "subject": "Hello {{caller_name}}", "body": "Hi {{caller_name}}"}),
    );
    let out = exec
        .execute("job_inject.0", &email_job(event, &a), &a)
        .await;
    assert_eq!(kind(&out), "delivered", "{out:?}");

    let m = &server.wait_for(1).await[0];
    assert_eq!(m["rcpt_tos"], json!(["john@example.com"]));
    let names: Vec<String> = serde_json::from_value(m["header_names"].clone()).unwrap();
    for n in &names {
        assert!(
            !n.eq_ignore_ascii_case("x-injected") && !n.eq_ignore_ascii_case("bcc"),
            "injected header {n}: {names:?}"
        );
    }
    let subject = m["headers"]["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("Hello Eve") && !subject.contains('\n') && !subject.contains('\r'),
        "{subject:?}"
    );
    let to = m["headers"]["to"].as_str().unwrap();
    assert!(
        to.ends_with("<john@example.com>") && !to.contains('\n'),
        "{to:?}"
    );
    // The inline text body is plain text; its HTML twin is derived and escaped.
    assert!(part(m, "text/html").contains("<p>Hi Eve"), "{m:#}");
}

#[tokio::test]
async fn a_451_is_retried_and_the_next_attempt_delivers() {
    let (server, exec) = smtp("tempfail:1").await;
    let a = action(json!({"type": "email", "to": "{{caller_email}}"}));
    let j = email_job(seed_event(), &a);

    let first = exec.execute("job_451.0", &j, &a).await;
    assert!(
        matches!(
            &first,
            Outcome::Retry {
                status: Some(451),
                ..
            }
        ),
        "{first:?}"
    );
    assert!(server.messages().is_empty());

    let second = exec.execute("job_451.0", &j, &a).await;
    assert_eq!(delivered(&second).0, Some(250), "{second:?}");
    let m = server.wait_for(1).await;
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0]["headers"]["subject"],
        "Your call with Acme Support — Summary"
    );
}

#[tokio::test]
async fn a_550_is_permanent_and_does_not_show_the_address() {
    let (server, exec) = smtp("reject").await;
    let a = action(json!({"type": "email", "to": "{{caller_email}}"}));
    let out = send(&exec, "job_550.0", &a).await;
    match &out {
        Outcome::Permanent {
            status: Some(550),
            error,
            ..
        } => {
            assert!(
                error.contains("550") && !error.contains("john@example.com"),
                "{error}"
            );
            assert!(error.contains("j***@example.com"), "{error}");
        }
        other => panic!("want a permanent 550, got {other:?}"),
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exec = smtp_executor(format!("smtp://127.0.0.1:{port}"));
    let a = action(json!({"type": "email", "to": "team@acme.example"}));
    let out = send(&exec, "job_refused.0", &a).await;
    assert_eq!(kind(&out), "retry", "{out:?}");
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_retried() {
    let addr = silent_server().await;
    let cfg = EmailConfig {
        smtp_url: Some(format!("smtp://{addr}")),
        timeout: Duration::from_millis(300),
        ..EmailConfig::default()
    };
    let exec = EmailExecutor::new(&cfg, Path::new("/nonexistent")).unwrap();
    let a = action(json!({"type": "email", "to": "team@acme.example"}));
    let started = std::time::Instant::now();
    let out = send(&exec, "job_slow.0", &a).await;
    assert_eq!(kind(&out), "retry", "{out:?}");
    assert_within(started, Duration::from_secs(5));
}

#[tokio::test]
async fn invalid_and_missing_recipients() {
    let exec = smtp_executor("smtp://127.0.0.1:9".into());
    let mut no_email = seed_event();
    no_email["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("caller_email");
    let a = action(json!({"type": "email", "to": "{caller_email}"}));
    assert_eq!(
        exec.execute("j.0", &email_job(no_email, &a), &a).await,
        Outcome::skipped("no caller_email")
    );

    let mut bad = seed_event();
    bad["metadata"]["caller_email"] = json!("john at example dot com");
    let out = exec.execute("j.1", &email_job(bad, &a), &a).await;
    assert!(
        matches!(&out, Outcome::Permanent { error, .. } if error.starts_with("to:")),
        "{out:?}"
    );
}

/// A certificate for 127.0.0.1, made with the `openssl` CLI.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        "[req]\ndistinguished_name=dn\nx509_extensions=ext\nprompt=no\n[dn]\nCN=aftercall test\n\
         [ext]\nbasicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-config")
        .arg(&cnf)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("the STARTTLS test needs the `openssl` CLI ({e}): apt-get install openssl")
        });
    assert!(
        status.success(),
        "openssl could not make a test certificate"
    );
    (cert, key)
}

#[tokio::test]
async fn starttls_with_auth() {
    let certs = TempDir::new("certs");
    let (cert, key) = self_signed(certs.path());
    let server = SmtpServer::start_with(
        "accept",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--auth",
            "alice:s3cret",
        ],
    )
    .await;
    let url = |pass: &str| format!("smtp://alice:{pass}@127.0.0.1:{}?tls=required", server.port);
    let a = action(
        json!({"type": "email", "to": "team@acme.example", "body_template": "confirmation"}),
    );
    let j = email_job(seed_event(), &a);
    let run = |cfg: EmailConfig| {
        let (j, a) = (j.clone(), a.clone());
        async move {
            EmailExecutor::new(&cfg, Path::new("/nonexistent"))
                .unwrap()
                .execute("job_tls.0", &j, &a)
                .await
        }
    };

    // Trusting the test CA: encrypted, authenticated, delivered.
    let trusted = EmailConfig {
        smtp_url: Some(url("s3cret")),
        ca_file: Some(cert.clone()),
        ..EmailConfig::default()
    };
    let out = run(trusted.clone()).await;
    assert_eq!(kind(&out), "delivered", "{out:?}");
    let m = &server.wait_for(1).await[0];
    assert_eq!(m["tls"], true);
    assert_eq!(m["login"], "alice");
    assert_eq!(m["headers"]["subject"], "Confirmation from Acme Support");

    // The certificate is checked: without the CA the handshake fails (and is retried).
    let untrusted = EmailConfig {
        smtp_url: Some(url("s3cret")),
        ..EmailConfig::default()
    };
    let out = run(untrusted).await;
    assert_eq!(kind(&out), "retry", "{out:?}");

    // The test-only switch accepts it.
    let lax = EmailConfig {
        smtp_url: Some(url("s3cret")),
        accept_invalid_certs: true,
        ..EmailConfig::default()
    };
    let out = run(lax).await;
    assert_eq!(kind(&out), "delivered", "{out:?}");

    // A wrong password is a 535: permanent, and the password is not in the error.
    let wrong = EmailConfig {
        smtp_url: Some(url("nope-wrong")),
        ..trusted
    };
    let out = run(wrong).await;
    assert!(
        matches!(&out, Outcome::Permanent { status: Some(535), error, .. } if !error.contains("nope-wrong")),
        "{out:?}"
    );
    assert_eq!(server.messages().len(), 2);
}

#[tokio::test]
async fn without_smtp_the_mail_goes_to_the_outbox_once() {
    let outbox = TempDir::new("outbox");
    let exec = EmailExecutor::new(&EmailConfig::default(), outbox.path()).unwrap();
    assert_eq!(exec.mode(), "outbox");
    let a = action(
        json!({"type": "email", "to": "{{caller_email}}", "subject": "Your call summary — {date}"}),
    );
    let j = email_job(seed_event(), &a);

    let out = exec.execute("job_out.1", &j, &a).await;
    let (_, d) = delivered(&out);
    assert!(d.starts_with("written to outbox"), "{out:?}");
    let path = outbox.path().join("email/job_out.1.eml");
    let eml = std::fs::read_to_string(&path).unwrap();
    assert!(
        eml.contains("Subject: =?utf-8?b?") || eml.contains("Subject: Your call summary"),
        "{eml}"
    );
    assert!(eml.contains("Message-ID: <job_out.1@aftercall>"), "{eml}");
    assert!(
        eml.contains("To: \"John Smith\" <john@example.com>"),
        "{eml}"
    );
    assert!(eml.contains("From: aftercall@localhost"), "{eml}");
    assert!(eml.contains("multipart/alternative"), "{eml}");

    let again = exec.execute("job_out.1", &j, &a).await;
    assert!(
        matches!(&again, Outcome::Delivered { detail: Some(d), .. } if d.starts_with("already in outbox")),
        "{again:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), eml);
    let files: Vec<_> = std::fs::read_dir(outbox.path().join("email"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "no temporary files left behind");
}
