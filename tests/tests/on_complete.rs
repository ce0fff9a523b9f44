//! The per-call completion callback (`on_complete`): one signed POST per call once every
//! action has settled, listing each action's outcome; once more per settling after a
//! replay. Real receivers on 127.0.0.1; the signature checked by `standardwebhooks`.

use std::time::Duration;

use aftercall_tests::{Receiver, Reply, World, settled, verify_with_python};

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn set_agent(w: &World, crm: &Receiver, flaky: &Receiver, done: &Receiver) {
    let body = serde_json::json!({"name": "Acme", "voice_tools": {"post_call_follow_up": {
        "enabled": true,
        "actions": [
            {"type": "webhook", "url": format!("{}/ok", crm.url)},
            {"type": "webhook", "url": format!("{}/flaky", flaky.url)},
            {"type": "webhook", "url": format!("{}/never", crm.url), "when": "duration_seconds > 100000"},
        ],
        "on_complete": {"url": format!("{}/done", done.url), "secret": SECRET},
    }}});
    let cfg = aftercall_core::AgentConfig::parse(body.to_string().as_bytes()).expect("config");
    w.queue.set_agent("a1", &cfg).await.unwrap();
}

/// The agent's three receivers (the CRM, the flaky one, the callback's), each answering
/// 200 until a test says otherwise, and the agent pointing at them.
async fn receivers(w: &World) -> (Receiver, Receiver, Receiver) {
    let (crm, flaky, done) = (
        Receiver::start().await.unwrap(),
        Receiver::start().await.unwrap(),
        Receiver::start().await.unwrap(),
    );
    for r in [&crm, &flaky, &done] {
        r.set_default(Reply::ok());
    }
    set_agent(w, &crm, &flaky, &done).await;
    (crm, flaky, done)
}

/// The callback's POSTs so far, waiting until there are `n` of them.
async fn callbacks(done: &Receiver, n: usize) -> Vec<aftercall_tests::Received> {
    aftercall_tests::poll(T, || async { (done.count() >= n).then(|| done.received()) })
        .await
        .unwrap_or_else(|| panic!("{n} callbacks expected, got {}", done.count()))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_signed_callback_per_call_after_a_retry_and_a_skip() {
    let mut w = World::new().await;
    w.set("AFTERCALL_RETRY_BASE", "100ms");
    let (crm, flaky, done) = receivers(&w).await;
    // The flaky action fails once, then is delivered on its retry.
    flaky.script([Reply::status(503)]);
    let _w1 = w.worker();
    let _w2 = w.worker();
    w.push("c1", "a1").await;
    let s = w.wait_call("c1", T, settled).await;
    assert_eq!(s.actions.len(), 4, "three actions and the callback");
    let cb = &s.actions[3];
    assert_eq!(
        (cb.kind.as_str(), cb.state.state.as_str()),
        ("on_complete", "delivered")
    );

    let got = callbacks(&done, 1).await;
    // Nothing more arrives: exactly once for the call.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<_> = done
        .received()
        .iter()
        .map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    assert_eq!(done.count(), 1, "one callback per call: {ids:?}");
    let v = got[0].json();
    assert_eq!(v["event"], "post_call_follow_up.completed");
    assert_eq!(v["call_id"], "c1");
    assert_eq!(v["agent_id"], "a1");
    assert_eq!(
        (
            v["delivered"].as_u64(),
            v["skipped"].as_u64(),
            v["dead"].as_u64()
        ),
        (Some(2), Some(1), Some(0))
    );
    let actions = v["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[1]["state"], "delivered");
    assert_eq!(actions[1]["attempts"], 2, "the retried action: {v}");
    assert_eq!(actions[2]["state"], "skipped");
    assert!(
        actions[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("condition false")
    );
    assert_eq!(
        got[0].header("webhook-id"),
        Some(format!("{}.1", cb.id).as_str())
    );
    // No personal content of the call in the callback.
    let text = String::from_utf8_lossy(&got[0].body);
    assert!(!text.contains("+1415"), "{text}");
    // Signed: checked by the `standardwebhooks` package.
    let reqs = [(got[0].body.to_vec(), got[0].headers.clone())];
    let res = verify_with_python(&w.dir, &reqs, &[SECRET]);
    assert_eq!(res[0][SECRET], "ok", "{res:?}");
    // Sent after every action had settled: the last action's request came first.
    let last = flaky.received().last().map(|r| r.at).unwrap();
    assert!(got[0].at > last);
    assert_eq!(crm.count(), 1, "the skipped action sent nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_dead_action_settles_the_call_again_and_calls_back_again() {
    let mut w = World::new().await;
    w.set("AFTERCALL_MAX_ATTEMPTS", "1");
    let (_crm, flaky, done) = receivers(&w).await;
    flaky.set_default(Reply::status(500));
    let _w1 = w.worker();
    w.push("c2", "a1").await;
    let s = w.wait_call("c2", T, settled).await;
    let dead_id = s.actions[1].id.clone();
    assert_eq!(s.actions[1].state.state.as_str(), "dead");
    let got = callbacks(&done, 1).await;
    let v = got[0].json();
    assert_eq!(
        (v["delivered"].as_u64(), v["dead"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        v["actions"][1]["error"].as_str().map(|e| e.contains("500")),
        Some(true),
        "{v}"
    );
    let cb_id = s.actions[3].id.clone();

    // While the dead action waits, the call is not settled again: no second callback.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(done.count(), 1);
    // Replayed, it is delivered: the call settles a second time.
    flaky.set_default(Reply::ok());
    let out = w.cli(&["dlq", "replay", &dead_id], "");
    assert!(out.status.success(), "{}", aftercall_tests::stderr(&out));
    let got = callbacks(&done, 2).await;
    let v = got[1].json();
    assert_eq!(
        (v["delivered"].as_u64(), v["dead"].as_u64()),
        (Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(
        got[1].header("webhook-id"),
        Some(format!("{cb_id}.2").as_str())
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(done.count(), 2, "one callback per settling");
    // The callback's history says when the call settled.
    let s = w.wait_call("c2", T, settled).await;
    let settlings = s.actions[3]
        .history
        .iter()
        .filter(|a| a.outcome == aftercall_core::AttemptOutcome::Settled)
        .count();
    assert_eq!(settlings, 2);

    // The retention sweep forgets the call's callback bookkeeping with it.
    let k = w.queue.keys().clone();
    let mut raw = w.raw().await;
    let completion: u64 = redis::cmd("HLEN")
        .arg(&k.completion)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(completion, 1);
    w.queue.sweep(Duration::ZERO, 1000).await.unwrap();
    let left: (u64, u64) = redis::pipe()
        .hlen(&k.completion)
        .hlen(&k.pending)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn on_complete_is_checked_at_config_time() {
    let bad = r#"{"voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[],"on_complete":{"url":"ftp://x.example/h"}}}}"#;
    let e = aftercall_core::AgentConfig::parse(bad.as_bytes()).unwrap_err();
    assert_eq!(e.path, "voice_tools.post_call_follow_up.on_complete.url");
    let bad = r#"{"voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[],"on_complete":{"url":"https://x.example/h","secret":"nope"}}}}"#;
    let e = aftercall_core::AgentConfig::parse(bad.as_bytes()).unwrap_err();
    assert_eq!(e.path, "voice_tools.post_call_follow_up.on_complete.secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_calls_at_once_each_call_back_exactly_once() {
    let mut w = World::new().await;
    w.set("AFTERCALL_RETRY_BASE", "50ms");
    let (_crm, flaky, done) = receivers(&w).await;
    // Every third request to the flaky action fails once: some calls settle after a retry.
    flaky.script((0..60).map(|i| {
        if i % 3 == 0 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    }));
    // Enqueued before the workers start, so fan-outs and finishes come in batches.
    w.enqueue_range("m", "a1", 0..60).await;
    let _w1 = w.worker();
    let _w2 = w.worker();
    let got = callbacks(&done, 60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut calls: Vec<String> = done
        .received()
        .iter()
        .map(|r| r.json()["call_id"].as_str().unwrap().to_string())
        .collect();
    calls.sort();
    calls.dedup();
    assert_eq!(
        (done.count(), calls.len()),
        (60, 60),
        "one callback per call"
    );
    for r in &got {
        let v = r.json();
        assert_eq!(
            (v["delivered"].as_u64(), v["skipped"].as_u64()),
            (Some(2), Some(1)),
            "{v}"
        );
    }
}
