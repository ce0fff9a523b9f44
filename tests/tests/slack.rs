//! The Slack action against a local incoming-webhook receiver: `{"text": …, "blocks":
//! […]}` rendered from the call.

use std::time::Duration;

use aftercall_testkit::Receiver;
use aftercall_tests::{Reply, World, action_states, agent_config, store_agent};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_slack_message_with_blocks_reaches_the_incoming_webhook() {
    let w = World::new().await;
    let rx = Receiver::answering(Reply::ok().body("ok")).await;
    let blocks =
        r#"[{"type": "section", "text": {"type": "mrkdwn", "text": {{ summary|tojson }}}}]"#;
    let slack = json!({
        "type": "slack",
        "url": format!("{}/services/T0/B0/x", rx.url),
        "text": "Call from {caller_name} ({caller_number})",
        "blocks": blocks,
    });
    store_agent(&w.queue, "a1", &agent_config(Some("Acme"), json!([slack]))).await;
    let _w1 = w.worker();
    let s = w.push_settled("sl1", "a1", Duration::from_secs(10)).await;
    assert_eq!(action_states(&s), vec![("slack", "delivered")]);
    let r = rx.single();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/services/T0/B0/x")
    );
    let v = r.json();
    assert_eq!(v["text"], "Call from Ann (+14155551234)");
    assert_eq!(v["blocks"][0]["text"]["text"], "s");

    // A channel gone for good (Slack's 410) is permanent: dead-lettered at once.
    rx.set_default(Reply::status(410).body("channel_is_archived"));
    let s = w.push_settled("sl2", "a1", Duration::from_secs(10)).await;
    assert_eq!(action_states(&s), vec![("slack", "dead")]);
    assert_eq!(s.actions[0].attempts, 1);
}
