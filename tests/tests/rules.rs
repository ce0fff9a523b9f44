//! Follow-up rules end to end (docs/rules.md): `when` conditions decided at fan-out and
//! shown as skips, refused at config time with the field's path; `expires_after`, and a
//! forced replay of an expired dead letter.

use std::time::Duration;

use aftercall_tests::{Receiver, Reply, World, settled, stderr, stdout};
use reqwest::Method;

const T: Duration = Duration::from_secs(20);
const ADMIN: &str = "admin-token-0123456789abcdef";

fn event(call_id: &str, extra: &str) -> String {
    format!(
        r#"{{"call_id":"{call_id}","agent_id":"a1","caller_number":"+14155551234","duration_seconds":61,"summary":"s"{extra}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_voicemail_skips_the_conditioned_action_visibly_everywhere() {
    let mut w = World::new().await;
    let http = w.with_api(&format!("admin:{ADMIN}"));
    let rx = Receiver::start().await.unwrap();
    let body = format!(
        r#"{{"voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[
            {{"type":"webhook","url":"{0}/thanks","when":"ended_reason != \"voicemail\" and duration_seconds > 30"}},
            {{"type":"webhook","url":"{0}/always"}}]}}}}}}"#,
        rx.url
    );
    let out = w.cli_set_agent("a1", &body);
    assert!(out.status.success(), "{}", stderr(&out));
    let worker = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;

    let out = w.cli(
        &["enqueue", "-"],
        &format!(
            "{}\n{}\n",
            event("vm", r#","ended_reason":"voicemail""#),
            event("ok", r#","ended_reason":"completed""#)
        ),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let vm = w.wait_call("vm", T, settled).await;
    let ok = w.wait_call("ok", T, settled).await;
    let want = r#"condition false (when: ended_reason != "voicemail" and duration_seconds > 30)"#;
    assert_eq!(vm.actions[0].state.state, "skipped");
    assert_eq!(vm.actions[0].state.reason.as_deref(), Some(want));
    assert_eq!(vm.actions[1].state.state, "delivered");
    assert_eq!(ok.actions[0].state.state, "delivered");
    let got = rx.wait_for(3, T).await;
    let paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.iter().filter(|p| **p == "/thanks").count(),
        1,
        "only the completed call is thanked: {paths:?}"
    );

    // The CLI, the API and the metrics say why.
    let out = w.cli(&["calls", "show", "vm"], "");
    assert!(stdout(&out).contains(want), "{}", stdout(&out));
    let status = http.get_json("/calls/vm", ADMIN).await;
    assert_eq!(status["actions"][0]["state"]["reason"], want);
    let metrics = http.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aftercall_rule_skips_total{")
                && l.contains(r#"rule="condition""#)
                && l.contains(r#"action="webhook""#)
                && l.ends_with(" 1")),
        "{metrics}"
    );
    w.audit_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_condition_is_refused_naming_the_field() {
    let mut w = World::new().await;
    let http = w.with_api(&format!("admin:{ADMIN}"));
    let worker = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;
    let body = |when: &str| {
        format!(
            r#"{{"voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"https://x.example/a"}},{{"type":"sms","template":"hi","when":"{when}"}}]}}}}}}"#
        )
    };
    let path = "voice_tools.post_call_follow_up.actions[1].when";
    for (when, says) in [
        ("duration_seconds >", "syntax error"),
        ("secret_key == 1", "unknown variable `secret_key`"),
    ] {
        let out = w.cli_set_agent("a1", &body(when));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(path) && stderr(&out).contains(says),
            "{}",
            stderr(&out)
        );
        let r = http
            .json(Method::PATCH, "/agents/a1", ADMIN, body(when))
            .await;
        assert_eq!(r.status(), 422);
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(err.to_string().contains(path), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(w.queue.get_agent("a1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_action_is_skipped_and_an_expired_dead_letter_needs_force() {
    let mut w = World::new().await;
    w.set("AFTERCALL_MAX_ATTEMPTS", "1");
    let rx = Receiver::start().await.unwrap();
    rx.set_default(Reply::status(400));
    let body = format!(
        r#"{{"voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"{}","expires_after":"2s"}}]}}}}}}"#,
        rx.url
    );
    let out = w.cli_set_agent("a1", &body);
    assert!(out.status.success(), "{}", stderr(&out));
    let _worker = w.worker();

    // A call that ended long ago: not started within 2 s of its end, so expired.
    let out = w.cli(
        &["enqueue", "-"],
        &event("old", r#","ended_at":"2026-01-01T10:00:00Z""#),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let old = w.wait_call("old", T, settled).await;
    assert_eq!(old.actions[0].state.state, "skipped");
    let reason = old.actions[0].state.reason.clone().unwrap();
    assert!(reason.starts_with("expired"), "{reason}");

    // A fresh call (no end time: its fan-out counts) fails at once and is dead.
    let out = w.cli(&["enqueue", "-"], &event("fresh", ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = w.wait_call("fresh", T, settled).await;
    assert_eq!(fresh.actions[0].state.state, "dead");
    let id = fresh.actions[0].id.clone();
    rx.set_default(Reply::status(200));
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Past its expiry: a plain replay leaves it dead and says why.
    let out = w.cli(&["dlq", "replay", &id], "");
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains(&format!("expired   {id}")),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let s = w.queue.call_status("fresh").await.unwrap().unwrap();
    assert_eq!(s.actions[0].state.state, "dead");

    // Forced, it runs and is delivered.
    let out = w.cli(&["dlq", "replay", &id, "--force"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 dead letter(s) replayed"),
        "{}",
        stdout(&out)
    );
    let s = w
        .wait_call("fresh", T, |s| s.actions[0].state.state == "delivered")
        .await;
    assert_eq!(s.actions[0].state.state, "delivered");
    assert_eq!(rx.wait_for(2, T).await.len(), 2);
    w.audit_clean().await;
}
