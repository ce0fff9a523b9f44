//! Redis memory per call (issue 18's "one copy"): 6 KB calls with three actions, measured
//! queued (before fan-out), with their actions queued (after it) and settled.

use super::*;

/// The event of this scenario: the workload's, its transcript grown to make the event's
/// JSON about 6,000 bytes.
fn big_event(events: &Events) -> CallEvent {
    let mut e = events.template.clone();
    let line = e.transcript.clone().unwrap_or_default();
    let mut t = String::new();
    while t.len() + 400 < 6_000 - serde_json::to_string(&events.template).map_or(0, |s| s.len()) {
        t.push_str(&line);
        t.push(' ');
    }
    e.transcript = Some(t);
    e
}

/// Three webhook actions to the receiver, each `delay` after the fan-out: long enough to
/// measure the calls with their actions queued (scheduled) before they run.
fn agent(url: &str, delay_s: u64) -> anyhow::Result<AgentConfig> {
    let action = |i: usize| {
        format!(
            r#"{{"type":"webhook","url":"{url}","delay":"{delay_s}s","include_transcript":true,"headers":{{"x-action":"{i}"}},"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}"#
        )
    };
    let body = format!(
        r#"{{"name":"Acme Support","voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{},{},{}]}}}}}}"#,
        action(0),
        action(1),
        action(2)
    );
    AgentConfig::parse(body.as_bytes()).map_err(|e| anyhow::anyhow!("agent body: {e}"))
}

pub(super) async fn bytes(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(10_000, 2_000);
    let event = big_event(&b.events);
    let event_bytes = serde_json::to_vec(&event)?.len() as f64;
    let q = b.queue("bytes").await?;
    // The fan-out must end before the first action is due: a worker fans out several
    // thousand calls a second here.
    let delay_s = 15 + n as u64 / 1_000;
    q.set_agent("agent_bench", &agent(&b.rx.url(), delay_s)?)
        .await?;
    let mem0 = b.used_memory().await?;
    let mut i = 0;
    while i < n {
        let k = (n - i).min(2_000);
        let batch: Vec<CallEvent> = (i..i + k)
            .map(|j| {
                let mut e = event.clone();
                e.call_id = format!("call_{j:08}");
                e
            })
            .collect();
        q.enqueue(batch).await?;
        i += k;
    }
    let queued = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    b.rx.reset().await?;
    let mut w = b.worker(&q, &[])?;
    let keys = q.keys().clone();
    let fanned = Instant::now() + Duration::from_secs(delay_s);
    while b.zcard(&keys.scheduled).await? < 3 * n as u64 {
        ensure!(
            Instant::now() < fanned,
            "the fan-out took longer than the actions' delay ({delay_s} s)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let actions_queued = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    b.rx.wait_for(3 * n as u64).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while b.zcard(&keys.done).await? < 4 * n as u64 {
        ensure!(Instant::now() < deadline, "jobs did not all finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(b.zcard(&keys.dead).await? == 0, "dead letters");
    w.terminate(Duration::from_secs(30));
    let settled = b.used_memory().await?.saturating_sub(mem0) as f64 / n as f64;

    let calls = int(n as f64);
    let ev = int(event_bytes);
    let ratio = |x: f64| format!("{} B ({:.2} × the event)", int(x), x / event_bytes);
    b.report
        .row(
            format!("Redis bytes per call, queued ({calls} calls of {ev} B, 3 actions)"),
            ratio(queued),
        )
        .target(
            "<= 1.3 × event + 1 KB",
            queued <= 1.3 * event_bytes + 1024.0,
        );
    b.report
        .row(
            format!("Redis bytes per call, actions queued ({calls} calls)"),
            ratio(actions_queued),
        )
        .target(
            "<= 1.3 × event + 1 KB",
            actions_queued <= 1.3 * event_bytes + 1024.0,
        );
    b.report
        .row(
            format!("Redis bytes per call, settled ({calls} calls)"),
            ratio(settled),
        )
        .target("<= 1.5 × event", settled <= 1.5 * event_bytes);
    Ok(json!({
        "calls": n,
        "event_bytes": event_bytes,
        "queued_bytes_per_call": queued,
        "actions_queued_bytes_per_call": actions_queued,
        "settled_bytes_per_call": settled,
    }))
}
