//! The worker side: fetch (leases), finish (under the lease token), fan-out, lease
//! renewal and the retention sweep.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aftercall_core::job::call_ended_id;
use aftercall_core::{Job, JobBody, JobState};
use serde::{Deserialize, Serialize};

use crate::{JobId, LeaseToken, Queue, QueueError, now_ms};

/// A job this worker holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub id: JobId,
    pub data: String,
    /// For an action job, its call-ended job's stored JSON, which holds the call's event
    /// (one copy per call, shared by the call's jobs of one fetch): see
    /// [`aftercall_core::Job::decode`]. `None` if that data is gone.
    pub call_ended: Option<std::sync::Arc<str>>,
    /// Why the stored data cannot be read (sealed with a key this process lacks): the
    /// job is dead-lettered with it, in view.
    pub unreadable: Option<String>,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    pub token: LeaseToken,
}

/// A job's attempt budget as the scripts store it: empty for the default, which is not
/// stored (an absent budget reads as [`aftercall_core::DEFAULT_MAX_ATTEMPTS`]). One
/// hash field fewer per job: 11 % of an enqueue's Redis instructions.
pub(crate) fn stored_budget(max: u32) -> String {
    if max == aftercall_core::DEFAULT_MAX_ATTEMPTS {
        String::new()
    } else {
        max.to_string()
    }
}

/// A batch of leased jobs and when the next scheduled job or lease falls due.
#[derive(Debug, Default)]
pub struct Fetched {
    pub jobs: Vec<Leased>,
    pub next_due_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishMode {
    Done,
    Retry,
    Dead,
    /// Give the job back untouched (shutdown): the attempt is not counted.
    Release,
    /// Run it again at `run_at_ms` without counting the attempt (held back by a limit).
    Defer,
}

/// One finished attempt, applied only if the lease token still matches.
#[derive(Debug, Clone)]
pub struct Finish {
    pub mode: FinishMode,
    pub id: JobId,
    pub token: LeaseToken,
    /// Run-at time (Unix ms) for retries.
    pub run_at_ms: i64,
    pub state: StateInfo,
    /// The attempt to append to the job's history (JSON), if any.
    pub attempt: Option<aftercall_core::Attempt>,
}

/// A call-ended job's fan-out, for [`Queue::fan_out_many`]: its action jobs (each with
/// an optional first-run delay) and the records that finish the parent.
#[derive(Debug, Clone)]
pub struct FanOutRecord {
    pub parent_id: JobId,
    pub token: LeaseToken,
    pub call_id: String,
    pub jobs: Vec<(Job, Option<Duration>)>,
    pub state: StateInfo,
    pub attempt: aftercall_core::Attempt,
    /// Lease the call's first action job that is due now to this worker, for this long,
    /// so it runs next without a fetch (see [`FannedOut::Claimed`]).
    pub claim: Option<(String, Duration)>,
}

/// What recording a fan-out did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FannedOut {
    /// The parent's lease was lost: another worker owns it, nothing was written.
    Stale,
    /// Recorded (or the call had fanned out before: then nothing new was created).
    Applied,
    /// Recorded, and this action job (the first due now) is leased to the fanning-out
    /// worker for its first attempt: run it, then finish it like any fetched job. Its
    /// `data` is empty: the worker has the job it just created.
    Claimed(Leased),
}

/// A job's current state as stored (the Lua scripts write the same shape).
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
    pub state: JobState,
    /// Unix ms of the transition.
    pub at: i64,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub run_at: Option<i64>,
    pub worker: Option<String>,
    pub replayed: Option<bool>,
    pub actions: Option<usize>,
}

impl StateInfo {
    pub fn new(state: JobState) -> StateInfo {
        StateInfo {
            state,
            at: now_ms(),
            ..Default::default()
        }
    }
}

impl Queue {
    /// Promotes due jobs, reaps expired leases, and leases up to `batch` ready jobs.
    pub async fn fetch(
        &self,
        worker: &str,
        batch: usize,
        lease: Duration,
    ) -> Result<Fetched, QueueError> {
        self.fetch_at(worker, batch, lease, now_ms()).await
    }

    /// [`Queue::fetch`] with the clock given: due times and lease expiry are judged
    /// against `now_ms` (model tests drive a virtual clock through this).
    /// With several partitions, each fetch starts at the next one and takes from the
    /// first that has work, so every partition is served (and its due jobs promoted, its
    /// expired leases reaped) in turn.
    pub async fn fetch_at(
        &self,
        worker: &str,
        batch: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Fetched, QueueError> {
        let n = self.partitions();
        if n == 1 {
            return self.fetch_from(0, worker, batch, lease, now_ms).await;
        }
        let start = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        let mut next_due_ms: Option<i64> = None;
        for i in 0..n {
            let f = self
                .fetch_from((start + i) % n, worker, batch, lease, now_ms)
                .await?;
            if !f.jobs.is_empty() {
                return Ok(f);
            }
            next_due_ms = match (next_due_ms, f.next_due_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(Fetched {
            jobs: Vec::new(),
            next_due_ms,
        })
    }

    /// One fetch from partition `part`.
    async fn fetch_from(
        &self,
        part: usize,
        worker: &str,
        batch: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Fetched, QueueError> {
        let q = self.partition(part);
        let k = q.keys();
        let mut inv = self.inner.scripts.fetch.invocation(k);
        inv.arg(now_ms)
            .arg(batch)
            .arg(lease.as_millis() as u64)
            .arg(worker)
            .arg(aftercall_core::DEFAULT_MAX_ATTEMPTS);
        let res: Vec<redis::Value> = inv.invoke_async(&mut self.conn()).await?;
        let mut it = res.into_iter();
        let next_due: i64 = match it.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => -1,
        };
        let mut leased = Vec::with_capacity(it.len() / 3);
        while let (Some(id), Some(attempt), Some(max)) = (it.next(), it.next(), it.next()) {
            let id: String = redis::from_redis_value(id)?;
            let attempt: u32 = redis::from_redis_value(attempt)?;
            let max_attempts: u32 = redis::from_redis_value(max)?;
            leased.push((id, attempt, max_attempts));
        }
        // The jobs' data is read here rather than in the script: every string crossing
        // into Lua costs Redis a hash of each of its bytes. Job data is immutable, and a
        // leased job is neither purged nor swept, so this reads what the script saw; an
        // action job's call-ended job keeps its data while the action is not forgotten
        // (`refs`), and is read in the same HMGET, once per call.
        let mut parents: Vec<String> = Vec::new();
        for (id, _, _) in &leased {
            if let Some(p) = call_ended_id(id)
                && !parents.iter().any(|q| q == p)
            {
                parents.push(p.to_string());
            }
        }
        let mut data: Vec<Option<Vec<u8>>> = if leased.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<&str> = leased.iter().map(|(id, _, _)| id.as_str()).collect();
            redis::cmd("HMGET")
                .arg(&k.data)
                .arg(&ids)
                .arg(&parents)
                .query_async(&mut self.conn())
                .await?
        };
        type Event = Result<std::sync::Arc<str>, String>;
        let events: Vec<(String, Option<Event>)> = parents
            .into_iter()
            .zip(data.split_off(leased.len()))
            .map(|(p, d)| {
                let event = d.map(|d| match self.open_data(&p, &d) {
                    Ok(plain) => Ok(String::from_utf8_lossy(&plain).into()),
                    Err(e) => Err(format!("the call's event: stored data {e}")),
                });
                (p, event)
            })
            .collect();
        let mut jobs = Vec::with_capacity(leased.len());
        for ((id, attempt, max_attempts), data) in leased.into_iter().zip(data) {
            // Bytes, not String: a payload that is not UTF-8 must fail as its own job
            // (undecodable, dead-lettered), not fail the fetch of its whole batch.
            let (data, mut unreadable) = match data.as_deref().map(|d| self.open_data(&id, d)) {
                Some(Ok(plain)) => (plain.into_owned(), None),
                Some(Err(e)) => (Vec::new(), Some(format!("stored data {e}"))),
                None => (Vec::new(), None),
            };
            let data = String::from_utf8(data)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            let event = call_ended_id(&id)
                .and_then(|p| events.iter().find(|(q, _)| q == p))
                .and_then(|(_, e)| e.clone());
            let call_ended = match event {
                Some(Ok(json)) => Some(json),
                Some(Err(e)) => {
                    unreadable.get_or_insert(e);
                    None
                }
                None => None,
            };
            let token = LeaseToken::new(worker, attempt);
            jobs.push(Leased {
                id: id.into(),
                data,
                call_ended,
                unreadable,
                attempt,
                max_attempts,
                token,
            });
        }
        Ok(Fetched {
            jobs,
            next_due_ms: (next_due >= 0).then_some(next_due),
        })
    }

    /// Applies finished attempts in one round trip. Returns, per item, whether the lease
    /// was still held (false: another worker owns the job now; nothing was changed).
    pub async fn finish(&self, items: &[Finish]) -> Result<Vec<bool>, QueueError> {
        self.routed(items, |f| f.id.as_str(), |q, s| Box::pin(q.finish_here(s)))
            .await
    }

    async fn finish_here(&self, items: &[Finish]) -> Result<Vec<bool>, QueueError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = self.inner.scripts.finish.invocation(k);
        inv.arg(now_ms());
        for f in items {
            let mode = match f.mode {
                FinishMode::Done => "done",
                FinishMode::Retry => "retry",
                FinishMode::Dead => "dead",
                FinishMode::Release => "release",
                FinishMode::Defer => "defer",
            };
            let state = serde_json::to_string(&f.state).expect("state serializes");
            let entry = f
                .attempt
                .as_ref()
                .map(|a| serde_json::to_string(a).expect("attempt serializes"))
                .unwrap_or_default();
            inv.arg(mode)
                .arg(&f.id)
                .arg(&f.token)
                .arg(f.run_at_ms)
                .arg(state)
                .arg(entry);
        }
        let res: Vec<i64> = inv.invoke_async(&mut self.conn()).await?;
        Ok(res.into_iter().map(|v| v == 1).collect())
    }

    /// Several fan-outs in one script call, each atomic and applied as if in turn.
    pub async fn fan_out_many(
        &self,
        records: &[FanOutRecord],
    ) -> Result<Vec<FannedOut>, QueueError> {
        self.routed(
            records,
            |r| r.parent_id.as_str(),
            |q, s| Box::pin(q.fan_out_here(s)),
        )
        .await
    }

    async fn fan_out_here(&self, records: &[FanOutRecord]) -> Result<Vec<FannedOut>, QueueError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.fan_out_invocation();
        let mut writes = Vec::with_capacity(records.iter().map(|r| r.jobs.len()).sum());
        let now = now_ms();
        let max = stored_budget(self.inner.cfg.retry.max_attempts);
        inv.arg(now);
        for r in records {
            self.fan_out_args(&mut inv, &mut writes, now, &max, r);
        }
        let tx = Self::transaction(writes, &inv);
        let replies: Vec<redis::Value> = self.transact(&tx, &inv).await?;
        if replies.len() != records.len() {
            return Err(QueueError::Corrupt(format!(
                "fan-out: {} replies for {} records",
                replies.len(),
                records.len()
            )));
        }
        replies
            .into_iter()
            .zip(records)
            .map(|(v, r)| match v {
                redis::Value::Int(0) => Ok(FannedOut::Stale),
                redis::Value::Int(_) => Ok(FannedOut::Applied),
                v => {
                    let id: String = redis::from_redis_value(v)?;
                    let (worker, _) = r.claim.as_ref().ok_or_else(|| {
                        QueueError::Corrupt(format!("fan-out claimed {id} unasked"))
                    })?;
                    Ok(FannedOut::Claimed(Leased {
                        id: id.into(),
                        data: String::new(),
                        call_ended: None,
                        unreadable: None,
                        attempt: 1,
                        max_attempts: self.inner.cfg.retry.max_attempts,
                        token: LeaseToken::new(worker, 1),
                    }))
                }
            })
            .collect()
    }

    fn fan_out_invocation(&self) -> redis::ScriptInvocation<'_> {
        self.inner.scripts.fanout.invocation(self.keys())
    }

    /// One parent's arguments, after `now`: see the header of `fanout.lua`. Its action
    /// jobs' data goes to `writes`, an HSETNX each, to run before the script; `max` is
    /// their budget as stored ([`stored_budget`]).
    fn fan_out_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        writes: &mut Vec<redis::Cmd>,
        now: i64,
        max: &str,
        r: &FanOutRecord,
    ) {
        let ids: Vec<&str> = r.jobs.iter().map(|(j, _)| j.id.as_str()).collect();
        let (claim, deadline) = match &r.claim {
            Some((worker, lease)) => (
                LeaseToken::new(worker, 1).into(),
                now + lease.as_millis() as i64,
            ),
            None => (String::new(), 0),
        };
        inv.arg(&r.parent_id)
            .arg(&r.token)
            .arg(&r.call_id)
            .arg(serde_json::to_string(&r.state).expect("state serializes"))
            .arg(serde_json::to_string(&r.attempt).expect("attempt serializes"))
            .arg(serde_json::to_string(&ids).expect("ids serialize"))
            .arg(claim)
            .arg(deadline)
            .arg(r.jobs.len());
        for (job, delay) in &r.jobs {
            // -1: the call's completion callback, waiting for the others (fanout.lua).
            let completion = matches!(&job.body, JobBody::Action(a) if a.completion);
            let run_at = match delay {
                _ if completion => -1,
                Some(d) => now + d.as_millis() as i64,
                None => 0,
            };
            let mut data = redis::cmd("HSETNX");
            data.arg(&self.keys().data)
                .arg(&job.id)
                .arg(self.seal_data(&job.id, job.to_json().into_bytes()));
            writes.push(data);
            inv.arg(&job.id).arg(max).arg(run_at);
        }
    }

    /// Renews the leases in `held` (id, token). Returns the ids whose lease was lost.
    pub async fn renew(
        &self,
        lease: Duration,
        held: &[(JobId, LeaseToken)],
    ) -> Result<Vec<JobId>, QueueError> {
        let lost = self
            .routed(
                held,
                |(id, _)| id.as_str(),
                |q, s| Box::pin(q.renew_here(lease, s)),
            )
            .await?;
        Ok(held
            .iter()
            .zip(lost)
            .filter(|(_, lost)| *lost)
            .map(|((id, _), _)| id.clone())
            .collect())
    }

    /// Per held job, whether its lease was lost.
    async fn renew_here(
        &self,
        lease: Duration,
        held: &[(JobId, LeaseToken)],
    ) -> Result<Vec<bool>, QueueError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = self.inner.scripts.renew.invocation(k);
        inv.arg(now_ms() + lease.as_millis() as i64);
        for (id, token) in held {
            inv.arg(id).arg(token);
        }
        let lost: std::collections::HashSet<String> = inv.invoke_async(&mut self.conn()).await?;
        Ok(held
            .iter()
            .map(|(id, _)| lost.contains(id.as_str()))
            .collect())
    }

    /// Forgets finished jobs and call ids older than `retention`, `limit` at a time.
    pub async fn sweep(&self, retention: Duration, limit: usize) -> Result<u64, QueueError> {
        self.summed(|q| async move { q.sweep_here(retention, limit).await })
            .await
    }

    async fn sweep_here(&self, retention: Duration, limit: usize) -> Result<u64, QueueError> {
        let k = self.keys();
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut inv = self.inner.scripts.sweep.invocation(k);
        inv.arg(cutoff).arg(limit).arg(retention.as_millis() as u64);
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }
}
