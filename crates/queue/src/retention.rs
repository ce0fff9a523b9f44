//! Payload retention (`AFTERCALL_PAYLOAD_RETENTION`): a settled job keeps its personal
//! content (the event: transcript, summary, numbers, e-mail addresses, metadata; its
//! attempts' error texts and response snippets; the call's analysis) for a while, then
//! only its ids, state, action config and attempt outcomes, until `AFTERCALL_RETENTION`
//! forgets it. Dead letters keep theirs until replayed, purged, or `AFTERCALL_DEAD_RETENTION`
//! ([`Queue::expire_dead`]), never silently.

use std::time::Duration;

use aftercall_core::job::call_ended_id;
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

type Bytes = Vec<Option<Vec<u8>>>;

impl Queue {
    /// A stored job, opened and decoded on its own (an action job without its call's
    /// event does not read this way: `None`, as for unreadable data).
    fn read(&self, id: &str, data: Vec<u8>) -> Option<Job> {
        let plain = self.open_data(id, &data).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Drops the personal content of up to `limit` jobs that settled more than
    /// `older_than` ago, oldest first, from where the last call stopped. Returns how
    /// many were rewritten.
    pub async fn expire_payloads(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, QueueError> {
        self.summed(|q| async move { q.expire_payloads_here(older_than, limit).await })
            .await
    }

    async fn expire_payloads_here(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, QueueError> {
        let k = self.keys();
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
        // A call's event is stored once, with its call-ended job: it goes when all the
        // call's jobs have settled (in `done`), so it is looked at with each of them
        // and dropped with the last; a dead letter keeps it.
        let mut calls: Vec<&str> = Vec::new();
        for id in &ids {
            let parent = call_ended_id(id).unwrap_or(id);
            if !calls.contains(&parent) {
                calls.push(parent);
            }
        }
        let (data, logs, parents): (Bytes, Vec<Option<String>>, Bytes) = redis::pipe()
            .cmd("HMGET")
            .arg(&k.data)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.log)
            .arg(&ids)
            .cmd("HMGET")
            .arg(&k.data)
            .arg(&calls)
            .query_async(&mut self.conn())
            .await?;
        let parents: Vec<(&str, Job)> = calls
            .iter()
            .zip(parents)
            .filter_map(|(id, d)| Some((*id, self.read(id, d?)?)))
            .filter(|(_, j)| matches!(j.body, JobBody::CallEnded { .. }) && !is_stripped(j))
            .collect();
        let fanouts: Vec<Option<String>> = if parents.is_empty() {
            Vec::new()
        } else {
            let call_ids: Vec<&str> = parents.iter().map(|(_, j)| j.call_id.as_str()).collect();
            redis::cmd("HMGET")
                .arg(&k.fanout)
                .arg(&call_ids)
                .query_async(&mut self.conn())
                .await?
        };
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
        let mut parent_logs = Vec::new();
        for ((id, d), log) in ids.iter().zip(data).zip(logs) {
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
            // A call-ended job is rewritten once, below, with its call's other jobs.
            if parents.iter().any(|(p, _)| p == id) {
                parent_logs.push((*id, log));
                continue;
            }
            // A job that carries an event of its own (stored before one copy per call).
            let data = match d.and_then(|d| self.read(id, d)) {
                Some(j) if matches!(j.body, JobBody::Action(_)) && !is_stripped(&j) => {
                    self.seal_data(id, stripped(j, "expired").to_json().into_bytes())
                }
                _ => Vec::new(),
            };
            inv.arg(*id).arg(data).arg(log).arg("").arg(0);
        }
        for ((id, job), fanout) in parents.into_iter().zip(fanouts) {
            let actions: Vec<String> = fanout
                .and_then(|f| serde_json::from_str(&f).ok())
                .unwrap_or_default();
            let call = job.call_id.clone();
            let json = stripped(job, "expired").to_json().into_bytes();
            let log = parent_logs
                .iter()
                .find(|(p, _)| *p == id)
                .map_or("", |(_, l)| l.as_str());
            inv.arg(id)
                .arg(self.seal_data(id, json))
                .arg(log)
                .arg(call)
                .arg(actions.len());
            for a in &actions {
                inv.arg(a);
            }
        }
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }
}

impl Queue {
    /// Drops the payload of dead letters older than `retention` (AFTERCALL_DEAD_RETENTION),
    /// `limit` at a time: each keeps a `purged` state saying why and its history until
    /// the retention sweep; one audit entry per call. Returns how many.
    pub async fn expire_dead(&self, retention: Duration, limit: usize) -> Result<u64, QueueError> {
        self.summed(|q| async move { q.expire_dead_here(retention, limit).await })
            .await
    }

    async fn expire_dead_here(&self, retention: Duration, limit: usize) -> Result<u64, QueueError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.keys().dead)
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.per_dead_letter(&self.inner.scripts.purge, &ids, Some("expire"))
            .await
    }
}
