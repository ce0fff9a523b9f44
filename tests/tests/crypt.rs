//! Encryption at rest (issue 18): with AFTERCALL_ENCRYPTION_KEYS set, nothing of a call
//! or of an agent's secrets is readable in Redis, workers still deliver, a key rotation
//! under live traffic leaves every value sealed with the new key, and a wrong or
//! missing key stops the process at start with the setting's name.

use std::time::Duration;

use aftercall_tests::{
    K1, K2, Receiver, Reply, World, agent_config, assert_all, assert_ok, settled, store_agent,
};
use serde_json::json;

const WRONG_V1: &str = "v1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn event(call_id: &str) -> aftercall_core::CallEvent {
    aftercall_core::CallEvent::parse(
        format!(
            r#"{{"call_id":"{call_id}","agent_id":"agent_x","caller_number":"+14155551234","transcript":"the caller's secret transcript","metadata":{{"caller_email":"ann@example.com"}}}}"#
        )
        .as_bytes(),
        1 << 20,
    )
    .unwrap()
}

/// Every value of the queue's job data and agent hashes, raw.
async fn values(w: &World, hash: &str) -> Vec<Vec<u8>> {
    let mut c = w.raw().await;
    let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(format!("{{{}}}:{hash}", w.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        !all.is_empty(),
        "no {hash} values: the test would prove nothing"
    );
    all.into_iter().map(|(_, v)| v).collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_at_rest_delivered_in_full_and_rotated_under_traffic() {
    let mut w = World::new().await;
    w.set("AFTERCALL_ENCRYPTION_KEYS", K1);
    let rx = Receiver::answering(Reply::status(200)).await;
    let q1 = w.keyed(K1).await;
    let agent = agent_config(
        None,
        json!([{
            "type": "webhook", "url": rx.url,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "headers": {"Authorization": "Bearer crm-secret-token"},
        }]),
    );
    store_agent(&q1, "agent_x", &agent).await;
    let mut worker = w.worker();
    q1.enqueue(vec![event("x-1")]).await.unwrap();
    let s = w.wait_call("x-1", Duration::from_secs(20), settled).await;
    assert!(settled(&s), "{s:?}\n{}", worker.log_text());
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    let payload = got[0].json();
    assert_eq!(
        payload["caller_number"], "+14155551234",
        "delivered in full"
    );
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer crm-secret-token")
    );
    // Read back through a queue with the key: the event as sent.
    let shown = q1.call_status("x-1").await.unwrap().unwrap();
    let job = shown.call_ended.job.unwrap();
    assert_eq!(job["event"]["transcript"], "the caller's secret transcript");

    // Nothing of it in Redis.
    for hash in ["data", "agents"] {
        for v in values(&w, hash).await {
            for secret in [
                "+14155551234",
                "ann@example.com",
                "secret transcript",
                "crm-secret-token",
                "MfKQ9r8G",
            ] {
                assert!(!contains(&v, secret), "{secret} in the clear in {hash}");
            }
        }
    }

    // A wrong key, and no key at all, stop a process at start with the setting's name.
    let out = w.cli_with(&["stats"], "", &[("AFTERCALL_ENCRYPTION_KEYS", WRONG_V1)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("AFTERCALL_ENCRYPTION_KEYS: key v1 is not the key"),
        "{err}"
    );
    let out = w.cli_with(&["stats"], "", &[("AFTERCALL_ENCRYPTION_KEYS", "")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("encrypted (key v1); set AFTERCALL_ENCRYPTION_KEYS"),
        "{err}"
    );

    // Rotation: every process gets the new key first (v2 first, v1 still read), then
    // `aftercall keys rotate` runs while calls keep coming.
    worker.terminate(Duration::from_secs(10));
    let both = format!("{K2},{K1}");
    w.set("AFTERCALL_ENCRYPTION_KEYS", &both);
    let _worker = w.worker();
    let q2 = w.keyed(&both).await;
    let producer = {
        let q2 = q2.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                q2.enqueue(vec![event(&format!("y-{i}"))]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = w.cli(&["keys", "rotate"], "");
    assert_ok(&out, "aftercall keys rotate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keys rotated:"), "{text}");
    producer.await.unwrap();
    for i in (0..200).step_by(20) {
        let s = w
            .wait_call(&format!("y-{i}"), Duration::from_secs(30), settled)
            .await;
        assert!(settled(&s), "{s:?}");
        assert_all(&s, "delivered");
    }
    // Whatever was written before or during the rotation is now sealed with v2.
    for v in values(&w, "data").await {
        assert!(
            v.starts_with(b"\x01\x02v2"),
            "not sealed with v2: {:?}",
            &v[..v.len().min(8)]
        );
    }
    for v in values(&w, "agents").await {
        assert!(v.starts_with(b"enc:v2:"), "{}", String::from_utf8_lossy(&v));
    }
    // So v1 can go: a queue with v2 alone reads everything.
    let q3 = w.keyed(K2).await;
    let s = q3.call_status("x-1").await.unwrap().unwrap();
    assert_eq!(
        s.call_ended.job.unwrap()["event"]["transcript"],
        "the caller's secret transcript"
    );
    assert!(q3.get_agent("agent_x").await.unwrap().is_some());
}
