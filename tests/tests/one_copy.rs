//! One copy per call (issue 18): a call's event is stored once, with its call-ended job;
//! its action jobs read it through the reference, on every attempt, after a config
//! change, from a dead letter kept past the retention, and on replay. It goes with the
//! last job of the call that can read it.

use std::time::Duration;

use aftercall_core::CallEvent;
use aftercall_tests::{Receiver, Reply, World, agent_config, assert_all, store_agent};
use serde_json::{Value, json};

const MARK: &str = "transcript-mark-7f3a";

async fn push(w: &World, call_id: &str, agent: &str) {
    let json = format!(
        r#"{{"call_id":"{call_id}","agent_id":"{agent}","caller_number":"+14155551234","summary":"s","transcript":"Agent: hello. Caller: {MARK}","metadata":{{"caller_name":"Ann"}}}}"#
    );
    let event = CallEvent::parse(json.as_bytes(), 1 << 20).unwrap();
    w.queue.enqueue(vec![event]).await.unwrap();
}

/// `n` webhook actions to `url`, each `delay` after the fan-out.
async fn agent(w: &World, id: &str, url: &str, n: usize, delay: &str) {
    let action = json!({"type": "webhook", "url": url, "delay": delay, "include_transcript": true});
    let body = agent_config(None, Value::Array(vec![action; n]));
    store_agent(&w.queue, id, &body).await;
}

/// A receiver answering `reply`, and `id` with `n` webhook actions to it.
async fn serve(w: &World, id: &str, reply: Reply, n: usize, delay: &str) -> Receiver {
    let rx = Receiver::answering(reply).await;
    agent(w, id, &rx.url, n, delay).await;
    rx
}

async fn hlen(w: &World, key: &str) -> u64 {
    redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut w.raw().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_actions_read_one_stored_event_and_a_config_change_does_not_alter_them() {
    let w = World::new().await;
    let rx = serve(&w, "agent_1", Reply::status(200), 3, "2s").await;
    let _worker = w.worker();
    push(&w, "c-1", "agent_1").await;
    let s = w
        .wait_call("c-1", Duration::from_secs(10), |s| s.actions.len() == 3)
        .await;
    assert_all(&s, "scheduled");
    // Fanned out and waiting: the event is in Redis once, under the call-ended job.
    let dump = w.dump().await;
    assert_eq!(dump.matches(MARK).count(), 1, "{dump}");
    // The actions show it through the reference, as the call-ended job does.
    for a in &s.actions {
        assert_eq!(
            a.job.as_ref().unwrap()["event"]["transcript"],
            format!("Agent: hello. Caller: {MARK}")
        );
    }

    // A config change after the fan-out does not alter the queued work.
    let other = Receiver::start().await.unwrap();
    agent(&w, "agent_1", &other.url, 1, "0s").await;
    let s = w
        .wait_call("c-1", Duration::from_secs(20), aftercall_tests::settled)
        .await;
    assert!(aftercall_tests::settled(&s), "{s:?}");
    let got = rx.received();
    assert_eq!(
        got.len(),
        3,
        "each action once, to the URL it was fanned out with"
    );
    for r in &got {
        assert_eq!(
            r.json()["transcript"],
            format!("Agent: hello. Caller: {MARK}")
        );
    }
    assert_eq!(other.count(), 0);
    assert_eq!(w.dump().await.matches(MARK).count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_keeps_its_call_s_event_past_the_retention_until_replayed_or_purged() {
    let w = World::new().await;
    let rx = serve(&w, "agent_d", Reply::status(400), 1, "0s").await;
    let _worker = w.worker();
    for call in ["d-1", "d-2"] {
        push(&w, call, "agent_d").await;
    }
    let mut dead = Vec::new();
    for call in ["d-1", "d-2"] {
        let s = w
            .wait_call(call, Duration::from_secs(20), aftercall_tests::settled)
            .await;
        assert_eq!(s.actions[0].state.state.as_str(), "dead", "{s:?}");
        dead.push(vec![s.actions[0].id.clone()]);
    }
    let k = w.queue.keys().clone();

    // The retention sweeps the call-ended jobs; their data, each call's event, stays
    // for the dead letters.
    let swept = w.queue.sweep(Duration::ZERO, 1000).await.unwrap();
    assert!(swept >= 2, "{swept}");
    assert_eq!(w.dump().await.matches(MARK).count(), 2);
    assert_eq!(hlen(&w, &k.refs).await, 2);

    // Replayed, the dead letter reads the event it was fanned out with.
    rx.set_default(Reply::status(200));
    let before = rx.count();
    assert_eq!(w.queue.replay(&dead[0]).await.unwrap(), 1);
    if aftercall_tests::poll(Duration::from_secs(20), || async {
        (rx.count() == before + 1).then_some(())
    })
    .await
    .is_none()
    {
        panic!(
            "the replay is not delivered: {:?}",
            w.queue.job(&dead[0][0]).await
        );
    }
    let body = rx.received()[before].json();
    assert_eq!(body["transcript"], format!("Agent: hello. Caller: {MARK}"));
    assert_eq!(body["call_id"], "d-1");

    // The other dead letter is purged.
    assert_eq!(w.queue.purge(&dead[1]).await.unwrap(), 1);

    // With the last job of each call forgotten, its event goes: nothing of either call
    // is left in the job data.
    aftercall_tests::poll(Duration::from_secs(10), || async {
        w.queue.sweep(Duration::ZERO, 1000).await.unwrap();
        (w.dump().await.matches(MARK).count() == 0).then_some(())
    })
    .await
    .expect("the events go with their last readers");
    assert_eq!(hlen(&w, &k.refs).await, 0);
    assert_eq!(hlen(&w, &k.data).await, 0);
}
