//! Erasing a call (issue 18, erasure): through the CLI and the API, with work in flight
//! and a dead letter, checked against every value Redis holds afterwards.

use std::time::Duration;

use aftercall_tests::{ADMIN, Reply, World, assert_all, assert_ok};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_call_keeps_its_outcomes_and_nothing_personal() {
    let mut w = World::new().await;
    let api = w.with_admin_api();
    // Each call's one action waits for its retry: the receiver failed with the
    // caller's e-mail in its answer, which the attempt keeps as its snippet.
    w.set("AFTERCALL_RETRY_BASE", "1h");
    let failing = Reply::status(503).body("no such contact ann@example.com");
    let (rx, _worker) = w.serving("agent_e", failing).await;
    w.push("e-1", "agent_e").await;
    w.push("e-2", "agent_e").await;
    for call in ["e-1", "e-2"] {
        let s = w
            .wait_call(call, Duration::from_secs(20), |s| {
                s.actions.len() == 1 && s.actions[0].state.state.as_str() == "scheduled"
            })
            .await;
        assert_eq!(s.actions[0].state.state.as_str(), "scheduled", "{s:?}");
    }
    let before = w.dump().await;
    for personal in ["+14155551234", "ann@example.com", "\"Ann\""] {
        assert!(
            before.contains(personal),
            "the test's own premise: {personal}"
        );
    }

    // Through the CLI: the scheduled retry is cancelled, visibly.
    let out = w.cli(&["calls", "erase", "e-1"], "");
    assert_ok(&out, "aftercall calls erase e-1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call e-1 erased: 2 job(s), 1 in flight cancelled"),
        "{text}"
    );
    let s = w.status("e-1").await;
    assert_eq!(s.actions[0].state.state.as_str(), "skipped");
    let reason = s.actions[0].state.reason.clone().unwrap_or_default();
    assert!(reason.starts_with("erased by cli:"), "{reason}");
    assert_eq!(s.actions[0].history.len(), 1, "the attempt's outcome stays");
    assert_eq!(s.actions[0].history[0].status, Some(503));
    assert!(s.actions[0].history[0].response.is_none());
    assert_eq!(s.call_ended.state.state.as_str(), "fanned_out");

    // Through the API.
    let erase = |call: &str| {
        api.request(
            reqwest::Method::DELETE,
            &format!("/calls/{call}"),
            Some(ADMIN),
        )
        .send()
    };
    let r = erase("e-2").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["jobs"].as_u64(), body["cancelled"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(erase("nope").await.unwrap().status(), 404);
    let status = api.get_json("/calls/e-2", ADMIN).await;
    assert_eq!(status["actions"][0]["state"]["reason"], "erased by admin-1");
    assert_eq!(
        status["call_ended"]["job"]["event"],
        serde_json::json!({"call_id": "e-2", "agent_id": "agent_e", "metadata": {"payload": "erased"}})
    );
    let shown = w.cli(&["calls", "show", "e-1"], "");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("payload erased"), "{shown}");

    // Nothing of either call's content is left anywhere in Redis; the audit says who.
    let after = w.dump().await;
    for personal in [
        "+14155551234",
        "ann@example.com",
        "\"Ann\"",
        "duration_seconds",
    ] {
        assert!(
            !after.contains(personal),
            "{personal} is still in Redis:\n{after}"
        );
    }
    assert!(
        after.contains("erase") && after.contains("admin-1") && after.contains("cli:"),
        "{after}"
    );

    // Nothing is delivered afterwards: the cancelled retries never run.
    let sent = rx.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), sent);
}

/// Payload retention: a settled call's content goes, its outcomes stay; a dead letter
/// keeps its content (to be replayed); a second pass has nothing left to do.
#[tokio::test(flavor = "multi_thread")]
async fn settled_jobs_lose_their_content_after_the_payload_retention_and_dead_letters_keep_it() {
    let w = World::new().await;
    let _ok = w.receiver_for("agent_ok", Reply::status(200)).await;
    let refusing = Reply::status(400).body("rejected ann@example.com");
    let (refusing, _worker) = w.serving("agent_no", refusing).await;
    for (call, agent) in [("p-1", "agent_ok"), ("p-2", "agent_no")] {
        let s = w.push_settled(call, agent, Duration::from_secs(20)).await;
        assert!(aftercall_tests::settled(&s), "{s:?}");
    }
    // Not yet due: nothing changes.
    assert_eq!(
        w.queue
            .expire_payloads(Duration::from_secs(3600), 1000)
            .await
            .unwrap(),
        0
    );
    // Due (a retention of zero): the delivered call's jobs lose their content. The
    // refused call's dead action keeps it, and so does its call-ended job: that is where
    // the call's one copy of the event is stored, which the dead letter reads.
    let n = w.queue.expire_payloads(Duration::ZERO, 1000).await.unwrap();
    assert_eq!(n, 2, "p-1's two jobs");
    let s = w.status("p-1").await;
    for job in std::iter::once(&s.call_ended).chain(&s.actions) {
        let event = &job.job.as_ref().unwrap()["event"];
        assert_eq!(event["metadata"]["payload"], "expired", "{job:?}");
        assert!(event.get("caller_number").is_none(), "{event}");
    }
    assert_eq!(s.actions[0].state.state.as_str(), "delivered");
    let dead = w.status("p-2").await;
    assert_eq!(dead.actions[0].state.state.as_str(), "dead");
    let kept = &dead.actions[0].job.as_ref().unwrap()["event"];
    assert_eq!(
        kept["caller_number"], "+14155551234",
        "a dead letter keeps its payload"
    );
    assert_eq!(
        dead.call_ended.job.as_ref().unwrap()["event"]["caller_number"],
        "+14155551234"
    );
    // Where the last pass stopped, the next one goes on: nothing left.
    assert_eq!(
        w.queue.expire_payloads(Duration::ZERO, 1000).await.unwrap(),
        0
    );
    // Replayed and delivered, the dead letter settles its call: the next pass drops the
    // call's content, from the one copy.
    refusing.set_default(Reply::status(200));
    let dead_id = dead.actions[0].id.clone();
    assert_eq!(w.queue.replay(&[dead_id]).await.unwrap(), 1);
    w.wait_call("p-2", Duration::from_secs(20), |s| {
        aftercall_tests::settled(s) && s.actions[0].state.state.as_str() == "delivered"
    })
    .await;
    assert_eq!(
        w.queue.expire_payloads(Duration::ZERO, 1000).await.unwrap(),
        2,
        "p-2's action, then its call-ended job"
    );
    let s = w.status("p-2").await;
    for job in std::iter::once(&s.call_ended).chain(&s.actions) {
        let event = &job.job.as_ref().unwrap()["event"];
        assert_eq!(event["metadata"]["payload"], "expired", "{job:?}");
    }
    // Where the last pass stopped, the next one goes on: nothing left.
    assert_eq!(
        w.queue.expire_payloads(Duration::ZERO, 1000).await.unwrap(),
        0
    );
}

/// AFTERCALL_DEAD_RETENTION: a dead letter past it loses its payload, visibly (state,
/// audit), then the payload retention drops the call's event and the retention sweep
/// forgets the call entirely; one still young keeps everything.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_past_their_retention_lose_their_payload_visibly() {
    let w = World::new().await;
    let _refusing = w
        .receiver_for("agent_no", Reply::status(400).body("rejected"))
        .await;
    let mut worker = w.worker();
    w.push("dr-1", "agent_no").await;
    let s = w
        .wait_call("dr-1", Duration::from_secs(20), aftercall_tests::settled)
        .await;
    assert_eq!(s.actions[0].state.state.as_str(), "dead");
    worker.terminate(Duration::from_secs(10));
    // How many dead letters older than `retention` lost their payload.
    let expire_dead = async |retention| w.queue.expire_dead(retention, 1000).await.unwrap();
    // Young: kept.
    assert_eq!(expire_dead(Duration::from_secs(3600)).await, 0);
    assert_eq!(w.queue.stats().await.unwrap().dead, 1);
    // Past the retention: the dead letter's payload goes, saying why.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(expire_dead(Duration::from_millis(1)).await, 1);
    assert_eq!(w.queue.stats().await.unwrap().dead, 0);
    let s = w.status("dr-1").await;
    let a = &s.actions[0];
    assert_eq!(a.state.state.as_str(), "purged");
    assert!(
        a.state
            .reason
            .as_deref()
            .unwrap()
            .contains("AFTERCALL_DEAD_RETENTION"),
        "{a:?}"
    );
    assert!(a.job.is_none(), "its data is gone");
    assert!(
        !a.history.is_empty(),
        "its history stays, for the retention"
    );
    let mut raw = w.raw().await;
    let audit: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(format!("{{{}}}:audit", w.prefix))
        .arg("-")
        .arg("+")
        .query_async(&mut raw)
        .await
        .unwrap();
    let text = format!("{audit:?}");
    assert!(text.contains("dead_expired"), "{text}");
    // The call has settled: payload retention drops its event; the sweep forgets it.
    assert_eq!(
        w.queue.expire_payloads(Duration::ZERO, 1000).await.unwrap(),
        2
    );
    let dump = w.dump().await;
    assert!(!dump.contains("+14155551234"), "no caller number left");
    w.queue.sweep(Duration::ZERO, 1000).await.unwrap();
    assert!(w.queue.call_status("dr-1").await.unwrap().is_none());
    let dump = w.dump().await;
    assert!(!dump.contains("dr-1"), "the call is forgotten: {dump}");
}

/// An erasure removes the call's e-mail and SMS files from the outbox too (CLI and API),
/// and no other call's.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_removes_the_calls_outbox_files() {
    let mut w = World::new().await;
    let api = w.with_admin_api();
    let body = serde_json::json!({"name": "Acme", "voice_tools": {"post_call_follow_up": {"enabled": true, "actions": [
        {"type": "email", "to": "{caller_email}", "subject": "Your call", "body_template": "call_summary"},
        {"type": "sms", "template": "Thanks {caller_name}!"},
    ]}}});
    let cfg = aftercall_core::AgentConfig::parse(body.to_string().as_bytes()).unwrap();
    w.queue.set_agent("agent_o", &cfg).await.unwrap();
    let _worker = w.worker();
    for call in ["o-1", "o-2", "o-3"] {
        w.push(call, "agent_o").await;
        let s = w
            .wait_call(call, Duration::from_secs(20), aftercall_tests::settled)
            .await;
        assert_all(&s, "delivered");
    }
    let outbox = w.dir.join("outbox");
    let files = || {
        let mut v: Vec<String> = ["email", "sms"]
            .iter()
            .flat_map(|d| std::fs::read_dir(outbox.join(d)).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files().len(), 6, "the test's own premise: {:?}", files());
    let ids = |call: &str| {
        let q = w.queue.clone();
        let call = call.to_string();
        async move {
            let s = q.call_status(&call).await.unwrap().unwrap();
            s.actions.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
        }
    };
    let o1 = ids("o-1").await;
    let out = w.cli(&["calls", "erase", "o-1"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 outbox file(s) removed"), "{text}");
    assert!(
        files()
            .iter()
            .all(|f| o1.iter().all(|id| !f.starts_with(&format!("{id}.")))),
        "{:?}",
        files()
    );
    assert_eq!(files().len(), 4);

    let r = api
        .request(reqwest::Method::DELETE, "/calls/o-2", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outbox_files"], 2, "{body}");
    let o3 = ids("o-3").await;
    let left = files();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .all(|f| o3.iter().any(|id| f.starts_with(&format!("{id}."))))
    );
}
