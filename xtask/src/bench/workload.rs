//! What the scenarios send: the benchmark event, its agent, and filling a queue.

use super::*;

/// The benchmark's call-ended event: the README's example, about 1 KB.
pub(super) const EVENT: &str = r#"{"call_id":"call_0","agent_id":"agent_bench","caller_number":"+14155551234","agent_name":"Acme Support","started_at":"2026-03-14T16:16:10Z","ended_at":"2026-03-14T16:20:00Z","summary":"Caller inquired about order #12345. Agent confirmed delivery date of March 15.","transcript":"Agent: Thanks for calling Acme Support, how can I help? Caller: Hi, I'd like to check on order 12345, it was supposed to ship last week. Agent: Let me look that up for you. I can see the order shipped on Tuesday and is scheduled for delivery on March 15. Caller: Great, can I get a confirmation by e-mail? Agent: Of course, you'll receive a summary shortly. Anything else? Caller: No, that's all, thanks! Agent: Have a great day.","recording_url":"https://api.thinnest.ai/calls/call_xyz789/recording","details":"Order #12345 arrives March 15","metadata":{"order_id":"12345","caller_name":"John Smith","caller_email":"john@example.com"}}"#;

/// One webhook action, signed, with transcript and recording URL: the seed's webhook.
pub(super) fn agent_body(url: &str) -> String {
    format!(
        r#"{{"name":"Acme Support","voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"{url}","include_transcript":true,"include_recording_url":true,"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}]}}}}}}"#
    )
}

pub(super) async fn set_agent(queue: &Queue, url: &str) -> anyhow::Result<()> {
    let cfg = AgentConfig::parse(agent_body(url).as_bytes())
        .map_err(|e| anyhow::anyhow!("agent body: {e}"))?;
    queue.set_agent("agent_bench", &cfg).await?;
    Ok(())
}

pub(super) struct Events {
    pub(super) template: CallEvent,
}

impl Events {
    pub(super) fn new() -> anyhow::Result<Events> {
        Ok(Events {
            template: CallEvent::parse(EVENT.as_bytes(), 1 << 20)
                .map_err(|e| anyhow::anyhow!("event template: {e}"))?,
        })
    }

    /// The `bytes` scenario's 6 KB call for every scenario (`--big-event`).
    pub(super) fn big() -> anyhow::Result<Events> {
        Ok(Events {
            template: big_event(&Events::new()?),
        })
    }

    pub(super) fn event(&self, i: usize, sent_us: Option<u64>) -> CallEvent {
        let mut e = self.template.clone();
        e.call_id = format!("call_{i:08}");
        if let Some(s) = sent_us {
            e.metadata.insert("sent_us".into(), s.into());
        }
        e
    }

    pub(super) fn batch(&self, from: usize, n: usize) -> Vec<CallEvent> {
        (from..from + n).map(|i| self.event(i, None)).collect()
    }
}

/// Enqueues `n` events through the Rust API in chunks (untimed setup).
pub(super) async fn fill(
    queue: &Queue,
    events: &Events,
    from: usize,
    n: usize,
) -> anyhow::Result<()> {
    let mut i = from;
    while i < from + n {
        let k = (from + n - i).min(10_000);
        let r = queue.enqueue(events.batch(i, k)).await?;
        ensure!(r.iter().all(|e| !e.duplicate), "duplicate call ids in fill");
        i += k;
    }
    Ok(())
}
