//! A webhook with a `body` template and a `method`: the receiver gets the JSON it asked
//! for, with the call's values, by PUT, still signed per Standard Webhooks.

use std::time::Duration;

use aftercall_testkit::Receiver;
use aftercall_tests::{Reply, World, action_states, agent_config, store_agent};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_templated_body_is_sent_with_its_method() {
    let w = World::new().await;
    let rx = Receiver::answering(Reply::ok()).await;
    let body = r#"{"call": {{ call_id|tojson }}, "caller": {{ caller_number|tojson }}, "agent": {{ agent_name|tojson }}, "seconds": {{ duration_seconds }}}"#;
    let hook = json!({
        "type": "webhook",
        "url": format!("{}/crm", rx.url),
        "method": "PUT",
        "body": body,
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    });
    let cfg = agent_config(Some("Acme \"Support\""), json!([hook]));
    store_agent(&w.queue, "a1", &cfg).await;
    let _w1 = w.worker();
    let s = w.push_settled("tb1", "a1", Duration::from_secs(10)).await;
    assert_eq!(action_states(&s), vec![("webhook", "delivered")]);
    let r = rx.single();
    assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/crm"));
    let v = r.json();
    assert_eq!(v["call"], "tb1");
    assert_eq!(v["agent"], "Acme \"Support\"", "{v}");
    assert_eq!(v["seconds"], 61, "{v}");
    assert_eq!(v["caller"], "+14155551234");
    assert!(
        r.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,"))
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}
