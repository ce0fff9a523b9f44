//! Follow-up rules end to end (docs/rules.md): `when` conditions decided at fan-out and
//! shown as skips, refused at config time with the field's path; `expires_after`, and a
//! forced replay of an expired dead letter.

use std::time::Duration;

use aftercall_tests::{
    ADMIN, Receiver, Reply, World, agent_config, assert_prints, run_ok, settled, stderr, stdout,
};
use reqwest::Method;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn event(call_id: &str, extra: &str) -> String {
    format!(
        r#"{{"call_id":"{call_id}","agent_id":"a1","caller_number":"+14155551234","duration_seconds":61,"summary":"s"{extra}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_voicemail_skips_the_conditioned_action_visibly_everywhere() {
    let mut w = World::new().await;
    let http = w.with_admin_api();
    let rx = Receiver::start().await.unwrap();
    let body = agent_config(
        None,
        json!([
            {"type": "webhook", "url": format!("{}/thanks", rx.url),
             "when": "ended_reason != \"voicemail\" and duration_seconds > 30"},
            {"type": "webhook", "url": format!("{}/always", rx.url)},
        ]),
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
    assert_prints(&out, want);
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
    let http = w.with_admin_api();
    let worker = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;
    let body = |when: &str| {
        agent_config(
            None,
            json!([
                {"type": "webhook", "url": "https://x.example/a"},
                {"type": "sms", "template": "hi", "when": when},
            ]),
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
    let rx = Receiver::answering(Reply::status(400)).await;
    let hook = json!({"type": "webhook", "url": rx.url, "expires_after": "2s"});
    let body = agent_config(None, json!([hook]));
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
    assert_prints(&out, &format!("expired   {id}"));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let s = w.status("fresh").await;
    assert_eq!(s.actions[0].state.state, "dead");

    // Forced, it runs and is delivered.
    let out = w.cli(&["dlq", "replay", &id, "--force"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_prints(&out, "1 dead letter(s) replayed");
    let s = w
        .wait_call("fresh", T, |s| s.actions[0].state.state == "delivered")
        .await;
    assert_eq!(s.actions[0].state.state, "delivered");
    assert_eq!(rx.wait_for(2, T).await.len(), 2);
    w.audit_clean().await;
}

/// Twilio's official Python library signs the request, as Twilio would.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let params: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let out = run_ok(
        std::process::Command::new("python3").args([
            "-c",
            "import sys, json\nfrom twilio.request_validator import RequestValidator\nprint(RequestValidator(sys.argv[1]).compute_signature(sys.argv[2], json.loads(sys.argv[3])))",
            token,
            url,
            &serde_json::Value::Object(params).to_string(),
        ]),
        "python3 with the twilio library (./dev test installs it)",
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn sms_agent() -> String {
    agent_config(
        None,
        json!([{"type": "sms", "template": "Thanks for calling!"}]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_outs_from_the_cli_a_signed_stop_and_twilio_21610_hold_across_agents() {
    const TOKEN: &str = "twilio-auth-token-0123456789";
    let mut w = World::new().await;
    let http = w.with_admin_api();
    let twilio =
        Receiver::answering(Reply::status(201).body(r#"{"sid":"SM1","status":"queued"}"#)).await;
    w.set(
        "AFTERCALL_TWILIO_ACCOUNT_SID",
        "AC0123456789abcdef0123456789abcdef",
    );
    w.set("AFTERCALL_TWILIO_AUTH_TOKEN", TOKEN);
    w.set("AFTERCALL_TWILIO_FROM", "+15005550006");
    w.set("AFTERCALL_TWILIO_BASE_URL", &twilio.url);
    for agent in ["a1", "a2"] {
        let out = w.cli_set_agent(agent, &sms_agent());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Two workers: the opt-outs are in Redis, seen by both.
    let worker = w.worker();
    let _second = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;
    let push = |call: &str, agent: &str| {
        let out = w.cli(
            &["enqueue", "-"],
            &event(call, "").replace(r#""agent_id":"a1""#, &format!(r#""agent_id":"{agent}""#)),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let sms = async |call: &str| {
        let s = w.wait_call(call, T, settled).await;
        (
            s.actions[0].state.state,
            s.actions[0].state.reason.clone().unwrap_or_default(),
        )
    };

    // 1. From the CLI (written any way: stored as E.164), then removed.
    let out = w.cli(&["opt-outs", "add", "sms", "+1 (415) 555-1234"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    push("c1", "a1");
    let (state, reason) = sms("c1").await;
    assert_eq!(state, "skipped");
    assert!(reason.starts_with("opted out (sms since "), "{reason}");
    assert!(reason.ends_with("via cli)"), "{reason}");
    assert_eq!(twilio.count(), 0, "nothing sent");
    let out = w.cli(&["opt-outs", "remove", "sms", "+14155551234"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    push("c2", "a1");
    assert_eq!(sms("c2").await.0, "delivered");
    assert_eq!(twilio.count(), 1);

    // 2. A STOP reply, posted by Twilio with its signature: refused unsigned or
    // mis-signed, then recorded, and it holds for every agent.
    let url = format!("{}/ingest/twilio/inbound", http.base);
    let form = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("From", "+14155551234"),
        ("To", "+15005550006"),
        ("Body", "Stop"),
    ];
    let post = |sig: Option<String>| {
        let mut r = http
            .request(Method::POST, "/ingest/twilio/inbound", None)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form.iter()
                    .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
                    .collect::<Vec<_>>()
                    .join("&"),
            );
        if let Some(sig) = sig {
            r = r.header("x-twilio-signature", sig);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    let wrong = twilio_signature("another-token", &url, &form);
    assert_eq!(post(Some(wrong)).await.unwrap().status(), 401);
    assert!(w.queue.opt_outs().await.unwrap().is_empty());
    let r = post(Some(twilio_signature(TOKEN, &url, &form)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<Response>"));
    let list = http.get_json("/opt-outs", ADMIN).await;
    assert_eq!(list["items"][0]["address"], "+14155551234");
    assert_eq!(list["items"][0]["source"], "twilio_inbound");
    push("c3", "a2");
    let (state, reason) = sms("c3").await;
    assert_eq!(
        (state.as_str(), reason.ends_with("via twilio_inbound)")),
        ("skipped", true)
    );
    assert_eq!(twilio.count(), 1, "nothing sent");

    // 3. Removed over the API; then Twilio refuses the send with 21610: a skip, not a
    // failure, and the number is opted out again.
    let r = http
        .request(
            Method::DELETE,
            "/opt-outs?channel=sms&address=%2B14155551234",
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    twilio.script([Reply::status(400).body(
        r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","status":400}"#,
    )]);
    push("c4", "a1");
    let (state, reason) = sms("c4").await;
    assert_eq!(state, "skipped");
    assert!(reason.starts_with("opted out: "), "{reason}");
    let list = w.queue.opt_outs().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].source, "twilio_21610");
    push("c5", "a2");
    assert_eq!(sms("c5").await.0, "skipped");
    assert_eq!(twilio.count(), 2, "c2, then c4's refused attempt only");
    w.audit_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_frequency_cap_holds_across_agents_and_two_workers() {
    let mut w = World::new().await;
    w.set("AFTERCALL_FREQUENCY_CAP_SMS", "1/24h");
    for agent in ["a1", "a2"] {
        let out = w.cli_set_agent(agent, &sms_agent());
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (_w1, _w2) = (w.worker(), w.worker());
    // Eight calls from the same number to two agents, at once, to two workers; and one
    // from another number.
    let mut events: Vec<String> = (0..8)
        .map(|i| {
            event(&format!("c{i}"), "").replace(
                r#""agent_id":"a1""#,
                &format!(r#""agent_id":"a{}""#, 1 + i % 2),
            )
        })
        .collect();
    events.push(event("other", "").replace("+14155551234", "+14155550000"));
    let out = w.cli(&["enqueue", "-"], &(events.join("\n") + "\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut delivered = 0;
    for s in w.settled_range("c", 0..8, T).await {
        let id = &s.call_id;
        let st = &s.actions[0].state;
        match st.state.as_str() {
            "delivered" => delivered += 1,
            "skipped" => {
                let reason = st.reason.as_deref().unwrap_or_default();
                assert!(
                    reason.starts_with(
                        "frequency cap: at most 1 sms per 1d to this contact; the earlier message at 20"
                    ),
                    "{reason}"
                );
            }
            other => panic!("{id}: {other}"),
        }
    }
    assert_eq!(
        delivered, 1,
        "one SMS per number per day, across agents and workers"
    );
    let other = w.wait_call("other", T, settled).await;
    assert_eq!(
        other.actions[0].state.state, "delivered",
        "another number is not capped"
    );
    w.audit_clean().await;
}

/// Quiet hours: an SMS due inside the agent's window waits for its end, visibly, without
/// spending an attempt, then goes; a window that cannot be read is refused by name.
/// The clock is controlled as retry times are: by the window's setting, a few seconds
/// from now.
#[tokio::test(flavor = "multi_thread")]
async fn an_sms_inside_quiet_hours_waits_for_their_end_without_spending_an_attempt() {
    let w = World::new().await;
    let now = chrono::Utc::now();
    let (start, end) = (
        (now - chrono::Duration::minutes(1)).format("%H:%M:%S"),
        (now + chrono::Duration::seconds(4)).format("%H:%M:%S"),
    );
    let agent = format!(
        r#"{{"voice_tools":{{"post_call_follow_up":{{"enabled":true,"quiet_hours":{{"start":"{start}","end":"{end}","zone":"UTC"}},"actions":[{{"type":"sms","template":"Thanks for calling!"}},{{"type":"webhook","url":"http://127.0.0.1:9/unused","when":"false"}}]}}}}}}"#
    );
    let out = w.cli_set_agent("a1", &agent);
    assert!(out.status.success(), "{}", stderr(&out));
    let bad = agent.replace(r#""zone":"UTC""#, r#""zone":"Mars/Olympus""#);
    let out = w.cli_set_agent("a2", &bad);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("voice_tools.post_call_follow_up.quiet_hours.zone"),
        "{}",
        stderr(&out)
    );
    // Two workers: the window is decided from the job and the clock, on either.
    let (_w1, _w2) = (w.worker(), w.worker());
    let out = w.cli(&["enqueue", "-"], &event("q1", ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = w
        .wait_call("q1", T, |s| {
            s.actions
                .first()
                .is_some_and(|a| a.state.state.as_str() == "scheduled")
        })
        .await;
    let sms = &s.actions[0];
    let reason = sms.state.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("deferred by quiet hours until "),
        "{reason}"
    );
    assert!(
        sms.history.is_empty(),
        "a deferral is not an attempt: {:?}",
        sms.history
    );
    let shown = stdout(&w.cli(&["calls", "show", "q1"], ""));
    assert!(shown.contains("deferred by quiet hours until"), "{shown}");
    // After the window: sent, on its first attempt.
    let s = w.wait_call("q1", Duration::from_secs(30), settled).await;
    let sms = &s.actions[0];
    assert_eq!(sms.state.state.as_str(), "delivered", "{s:?}");
    assert_eq!(sms.history.len(), 1, "{:?}", sms.history);
    assert_eq!(sms.history[0].attempt, 1);
}

/// A preview: a candidate config over the agent's recent stored calls, through the API
/// and the CLI; which actions would fire or skip and why, what they would send; and
/// nothing sent, nothing stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_preview_shows_what_a_candidate_config_would_do_and_sends_nothing() {
    let mut w = World::new().await;
    let http = w.with_admin_api();
    let rx = Receiver::answering(Reply::status(200)).await;
    let agent = format!(
        r#"{{"name":"Front desk","voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"{}"}},{{"type":"sms","template":"Thanks {{{{caller_name}}}}, we got your call."}}]}}}}}}"#,
        rx.url
    );
    let out = w.cli_set_agent("a1", &agent);
    assert!(out.status.success(), "{}", stderr(&out));
    let worker = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;
    let calls = [
        event(
            "p1",
            r#","ended_reason":"voicemail","metadata":{"caller_name":"Ann"}"#,
        ),
        event(
            "p2",
            r#","ended_reason":"completed","metadata":{"caller_name":"Bo"}"#,
        ),
    ];
    let out = w.cli(&["enqueue", "-"], &(calls.join("\n") + "\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    for c in ["p1", "p2"] {
        assert!(settled(&w.wait_call(c, T, settled).await));
    }
    let sent = rx.count();
    let before = http.get_json("/agents/a1", ADMIN).await;

    // The candidate: no SMS to voicemails.
    let patch = r#"{"voice_tools":{"post_call_follow_up":{"actions":[{"type":"webhook","url":"https://crm.example/hook"},{"type":"sms","template":"Thanks {{caller_name}}, we got your call.","when":"ended_reason != \"voicemail\""}]}}}"#;
    let r = http
        .json(Method::POST, "/agents/a1/preview?limit=5", ADMIN, patch)
        .await;
    assert_eq!(r.status(), 200);
    let p: serde_json::Value = r.json().await.unwrap();
    let calls = p["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{p}");
    assert_eq!(calls[0]["call_id"], "p2", "newest first: {p}");
    let by = |call: &str, index: usize| {
        calls.iter().find(|c| c["call_id"] == call).unwrap()["actions"][index].clone()
    };
    let sms_p2 = by("p2", 1);
    assert_eq!(sms_p2["fires"], true, "{sms_p2}");
    assert_eq!(sms_p2["output"]["text"], "Thanks Bo, we got your call.");
    assert_eq!(sms_p2["output"]["to"], "+14155551234");
    assert_eq!(sms_p2["output"]["segments"], 1);
    let sms_p1 = by("p1", 1);
    assert_eq!(sms_p1["fires"], false);
    assert!(
        sms_p1["reason"]
            .as_str()
            .unwrap()
            .starts_with("condition false"),
        "{sms_p1}"
    );
    let hook = by("p1", 0);
    assert_eq!(hook["output"]["url"], "https://crm.example/hook");
    assert_eq!(hook["output"]["payload"]["call_id"], "p1");
    // A candidate that does not validate is refused by name, as a PATCH is.
    let r = http
        .json(
            Method::POST,
            "/agents/a1/preview",
            ADMIN,
            r#"{"voice_tools":{"post_call_follow_up":{"actions":[{"type":"sms","template":"{{nope}}"}]}}}"#,
        )
        .await;
    assert_eq!(r.status(), 422);

    // The CLI prints the same from a whole config.
    let file = w.dir.join("candidate.json");
    std::fs::write(
        &file,
        agent.replace(
            r#""template""#,
            r#""when":"ended_reason != \"voicemail\"","template""#,
        ),
    )
    .unwrap();
    let out = w.cli(
        &["agents", "preview", "a1", "--file", file.to_str().unwrap()],
        "",
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("call p1") && text.contains("skipped: condition false"),
        "{text}"
    );
    assert!(text.contains("Thanks Bo, we got your call."), "{text}");

    // Nothing sent, nothing stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), sent);
    assert_eq!(http.get_json("/agents/a1", ADMIN).await, before);
}
