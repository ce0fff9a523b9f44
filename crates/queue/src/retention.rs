//! Payload retention (`AFTERCALL_PAYLOAD_RETENTION`): a settled job keeps its personal
//! content (the event: transcript, summary, numbers, e-mail addresses, metadata; its
//! attempts' error texts and response snippets; the call's analysis) for a while, then
//! only its ids, state, action config and attempt outcomes, until `AFTERCALL_RETENTION`
//! forgets it. Dead letters keep theirs until replayed or purged.

use std::time::Duration;

use aftercall_core::{Attempt, CallEvent, Job, JobBody};

use crate::{Queue, QueueError, now_ms};

/// The job with its event reduced to the call's and agent's ids, and `metadata.payload`
/// saying why (`expired`, `erased`): what status readers show instead of the content.
pub(crate) fn stripped(mut job: Job, why: &str) -> Job {
    let mut metadata = serde_json::Map::new();
    metadata.insert("payload".into(), why.into());
    let bare = std::sync::Arc::new(CallEvent {
        metadata,
        ..CallEvent::new(job.call_id.clone(), job.agent_id.clone())
    });
    match &mut job.body {
        JobBody::CallEnded { event } => *event = bare,
        JobBody::Action(a) => a.event = bare,
    }
    job
}

/// Whether a job's content is gone already.
fn is_stripped(job: &Job) -> bool {
    let event = match &job.body {
        JobBody::CallEnded { event } => event,
        JobBody::Action(a) => &a.event,
    };
    event.metadata.contains_key("payload") && event.transcript.is_none() && event.summary.is_none()
}

impl Queue {
    /// Drops the personal content of up to `limit` jobs that settled more than
    /// `older_than` ago, oldest first, from where the last call stopped. Returns how
    /// many were rewritten.
    pub async fn expire_payloads(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, QueueError> {
        let k = &self.inner.keys;
        let cutoff = now_ms() - older_than.as_millis() as i64;
        let cursor: Option<String> = redis::cmd("GET")
            .arg(&k.payload_cursor)
            .query_async(&mut self.conn())
            .await?;
        let from = cursor.map_or_else(|| "-inf".to_string(), |c| format!("({c}"));
        let due: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&k.done)
            .arg(&from)
            .arg(cutoff)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await?;
        let Some((_, last)) = due.last() else {
            return Ok(0);
        };
        let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        let (data, logs): (Vec<Option<Vec<u8>>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.data)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.log)
            .arg(&ids)
            .query_async(&mut self.conn())
            .await?;
        // A full batch may stop inside a millisecond: start again at that millisecond
        // (what was done is skipped as stripped), unless the whole batch was one.
        let first = due[0].1;
        let reached = if due.len() == limit && first < *last {
            *last - 1.0
        } else {
            *last
        };
        let mut inv = self.inner.scripts.expire.invocation(k);
        inv.arg(reached as i64);
        for ((id, d), log) in ids.iter().zip(data).zip(logs) {
            let job = d
                .and_then(|d| self.open_data(id, &d).ok().map(|p| p.into_owned()))
                .and_then(|plain| serde_json::from_slice::<Job>(&plain).ok());
            let (data, call) = match job {
                Some(j) if !is_stripped(&j) => {
                    let call = matches!(j.body, JobBody::CallEnded { .. })
                        .then(|| j.call_id.clone())
                        .unwrap_or_default();
                    let json = stripped(j, "expired").to_json().into_bytes();
                    (self.seal_data(id, json), call)
                }
                _ => (Vec::new(), String::new()),
            };
            let log = log
                .and_then(|l| serde_json::from_str::<Vec<Attempt>>(&l).ok())
                .filter(|h| h.iter().any(|a| a.error.is_some() || a.response.is_some()))
                .map(|mut h| {
                    for a in &mut h {
                        a.error = None;
                        a.response = None;
                    }
                    serde_json::to_string(&h).expect("a history always serializes")
                })
                .unwrap_or_default();
            inv.arg(*id).arg(data).arg(log).arg(call);
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }
}
