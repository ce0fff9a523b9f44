//! Operational alerts to real receivers: a dead letter (signed, checked by
//! `standardwebhooks`; and to the agent's own target), a circuit opening and closing, a
//! digest when many fire at once (as a Slack message), and the dead-letter threshold
//! announced once across two replicas.

use std::time::Duration;

use aftercall_tests::{Receiver, Reply, World, poll, settled, verify_with_python};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn set_agent(w: &World, agent: &str, crm: &str, alerts: Option<String>) {
    let mut f = serde_json::json!({"enabled": true, "actions": [{"type": "webhook", "url": crm}]});
    if let Some(url) = alerts {
        f["alerts"] = serde_json::json!({"url": url});
    }
    let body = serde_json::json!({"name": "Acme", "voice_tools": {"post_call_follow_up": f}});
    let cfg = aftercall_core::AgentConfig::parse(body.to_string().as_bytes()).expect("config");
    w.queue.set_agent(agent, &cfg).await.unwrap();
}

/// The alerts `rx` received, once there are `n`.
async fn alerts(rx: &Receiver, n: usize) -> Vec<Value> {
    poll(T, || async { (rx.count() >= n).then(|| rx.received()) })
        .await
        .unwrap_or_else(|| panic!("{n} alerts expected, got {}", rx.count()))
        .iter()
        .map(|r| r.json())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_alerts_the_system_target_signed_and_the_agents_own() {
    let mut w = World::new().await;
    let ops = Receiver::start().await.unwrap();
    let team = Receiver::start().await.unwrap();
    let crm = Receiver::start().await.unwrap();
    ops.set_default(Reply::ok());
    team.set_default(Reply::ok());
    crm.set_default(Reply::status(400).body("bad request"));
    w.set("AFTERCALL_ALERTS_URL", &format!("{}/ops", ops.url));
    w.set("AFTERCALL_ALERTS_SECRET", SECRET);
    set_agent(
        &w,
        "a1",
        &format!("{}/crm", crm.url),
        Some(format!("{}/team", team.url)),
    )
    .await;
    set_agent(&w, "a2", &format!("{}/crm", crm.url), None).await;
    let _w1 = w.worker();
    w.push("d1", "a1").await;
    let s = w.wait_call("d1", T, settled).await;
    assert_eq!(s.actions[0].state.state.as_str(), "dead");
    let got = alerts(&ops, 1).await;
    assert_eq!(got[0]["type"], "aftercall.alert");
    assert_eq!(got[0]["alert"], "job.dead");
    assert_eq!(got[0]["call_id"], "d1");
    assert_eq!(got[0]["agent_id"], "a1");
    assert_eq!(got[0]["job_id"], s.actions[0].id.as_str());
    assert!(
        got[0]["error"].as_str().unwrap().contains("400"),
        "{}",
        got[0]
    );
    // Signed with the alerts secret: checked by the `standardwebhooks` package.
    let r = &ops.received()[0];
    let res = verify_with_python(&w.dir, &[(r.body.to_vec(), r.headers.clone())], &[SECRET]);
    assert_eq!(res[0][SECRET], "ok", "{res:?}");
    // The agent's own target hears of its dead letter too.
    let got = alerts(&team, 1).await;
    assert_eq!(got[0]["alert"], "job.dead");

    // Another agent's dead letter goes to the system target only.
    w.push("d2", "a2").await;
    w.wait_call("d2", T, settled).await;
    let got = alerts(&ops, 2).await;
    assert_eq!(got[1]["call_id"], "d2");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(team.count(), 1, "a2 has no alerts target of its own");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_opening_and_closing_alerts_once_each() {
    let mut w = World::new().await;
    let ops = Receiver::start().await.unwrap();
    let crm = Receiver::start().await.unwrap();
    ops.set_default(Reply::ok());
    crm.set_default(Reply::status(503));
    w.set("AFTERCALL_ALERTS_URL", &format!("{}/ops", ops.url));
    w.set("AFTERCALL_BREAKERS", "*=2/1s");
    w.set("AFTERCALL_RETRY_BASE", "100ms");
    w.set("AFTERCALL_MAX_ATTEMPTS", "100");
    set_agent(&w, "a1", &format!("{}/crm", crm.url), None).await;
    let _w1 = w.worker();
    let _w2 = w.worker();
    for i in 0..4 {
        w.push(&format!("c{i}"), "a1").await;
    }
    let got = alerts(&ops, 1).await;
    assert_eq!(got[0]["alert"], "destination.circuit_opened", "{}", got[0]);
    assert_eq!(got[0]["destination"], "127.0.0.1");
    // Still down over several cool-downs (probes fail): no further alert.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(ops.count(), 1, "one alert per state change");
    // It answers again: the next probe closes the circuit.
    crm.set_default(Reply::ok());
    let got = alerts(&ops, 2).await;
    assert_eq!(got[1]["alert"], "destination.circuit_closed");
    for i in 0..4 {
        w.wait_call(&format!("c{i}"), T, settled).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ops.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_dead_letters_at_once_make_one_slack_digest_and_one_threshold_alert() {
    let mut w = World::new().await;
    let slack = Receiver::start().await.unwrap();
    let crm = Receiver::start().await.unwrap();
    slack.set_default(Reply::ok().body("ok"));
    crm.set_default(Reply::status(410));
    w.set(
        "AFTERCALL_ALERTS_URL",
        &format!("{}/services/T0/B0/x", slack.url),
    );
    w.set("AFTERCALL_ALERTS_FORMAT", "slack");
    w.set("AFTERCALL_ALERTS_DEAD_THRESHOLD", "5");
    set_agent(&w, "a1", &format!("{}/crm", crm.url), None).await;
    w.enqueue_range("m", "a1", 0..12).await;
    let _w1 = w.worker();
    let _w2 = w.worker();
    for i in 0..12 {
        w.wait_call(&format!("m{i}"), T, settled).await;
    }
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let texts: Vec<String> = slack
        .received()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_string())
        .collect();
    let above: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("dead letters wait"))
        .collect();
    assert_eq!(
        above.len(),
        1,
        "the threshold is announced once, by one replica: {texts:#?}"
    );
    assert!(above[0].contains("threshold 5"), "{}", above[0]);
    // Twelve dead letters within a few seconds: digests, not twelve messages.
    let digests: Vec<&String> = texts.iter().filter(|t| t.contains(" alerts: ")).collect();
    assert!(!digests.is_empty(), "{texts:#?}");
    let singles = texts
        .iter()
        .filter(|t| t.contains("Dead letter:") && !t.contains(" alerts: "))
        .count();
    assert!(
        texts.len() <= 5,
        "{} messages for 12 dead letters: {texts:#?}",
        texts.len()
    );
    assert!(singles <= 2 * 3, "{texts:#?}");
}
