//! The HTTP API served by a real worker process: the product's PATCH body, ingestion,
//! per-call status, and a dead letter replayed over HTTP ending in delivery.

use std::time::Duration;

use aftercall_tests::{ADMIN, READ, Receiver, Reply, World, assert_all, fixture, settled};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread")]
async fn seed_patch_ingest_and_replay_over_http() {
    let mut w = World::new().await;
    let http = w.with_api(&format!("admin:{ADMIN},read:{READ}"));
    w.set("AFTERCALL_MAX_ATTEMPTS", "1");
    let rx = Receiver::answering(Reply::status(400).body("crm says no")).await;
    let worker = w.worker();
    worker.wait_status(&http, "/readyz", 200).await;

    // The product's PATCH body, byte for byte (the URL pointed at the local receiver).
    let body =
        fixture("seed-agent.json").replace("https://your-crm.com/api/call-completed", &rx.url);
    let r = http
        .json(Method::PATCH, "/agents/agent_abc123", ADMIN, body)
        .await;
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    // A read-only token may not change it.
    let r = http
        .json(Method::PATCH, "/agents/agent_abc123", READ, "{}")
        .await;
    assert_eq!(r.status(), 403);

    let call = fixture("seed-call.json");
    let r = http.json(Method::POST, "/calls", ADMIN, call.clone()).await;
    assert_eq!(r.status(), 202);
    let r = http.json(Method::POST, "/calls", ADMIN, call).await;
    assert_eq!(r.status(), 200, "a second push is a duplicate");
    let dup: serde_json::Value = r.json().await.unwrap();
    assert_eq!(dup["duplicate"], true);

    let s = w
        .wait_call("call_xyz789", Duration::from_secs(20), settled)
        .await;
    let hook = s.actions.iter().find(|a| a.kind == "webhook").unwrap();
    assert_eq!(hook.state.state, "dead");

    let status = http.get_json("/calls/call_xyz789", READ).await;
    assert_eq!(status["actions"].as_array().unwrap().len(), 3);

    // Fix the receiver, replay over HTTP, see it delivered.
    rx.set_default(Reply::status(200));
    let r = http
        .request(
            Method::POST,
            &format!("/dead-letters/{}/replay", hook.id),
            Some(ADMIN),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let s = w
        .wait_call("call_xyz789", Duration::from_secs(20), |s| {
            s.actions.iter().all(|a| a.state.state == "delivered")
        })
        .await;
    assert_all(&s, "delivered");
    let page = http.get_json("/dead-letters", READ).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
    assert_eq!(rx.count(), 2);

    // Prometheus metrics count what happened; /stats sees the worker's heartbeat.
    let metrics = http.get("/metrics", None).await.text().await.unwrap();
    for want in [
        r#"aftercall_jobs_total{action="webhook",outcome="dead"} 1"#,
        r#"aftercall_jobs_total{action="webhook",outcome="delivered"} 1"#,
        r#"aftercall_jobs_total{action="email",outcome="delivered"} 1"#,
        "aftercall_delivery_latency_seconds_bucket",
        r#"aftercall_destination_errors_total{action="webhook",destination="127.0.0.1"} 1"#,
    ] {
        assert!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
    }
    let stats = http.get_json("/stats", READ).await;
    assert_eq!(stats["workers_alive"], 1, "{stats}");
}
