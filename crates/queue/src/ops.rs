//! Read and repair operations shared by the CLI and the HTTP API: per-call status,
//! dead letters (list, show, replay, purge) and queue statistics.

use aftercall_core::job::call_ended_id;
use aftercall_core::{Attempt, Job};
use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, StateInfo, now_ms};

mod jobs;

/// A job's stored data once opened (decrypted): absent, or the bytes, or why not.
type Opened = Option<Result<Vec<u8>, String>>;

/// Everything stored about one job.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `call_ended`, `email`, `sms`, `webhook`, `task` (or `unknown` if undecodable).
    pub kind: String,
    pub call_id: Option<String>,
    pub agent_id: Option<String>,
    /// Position of the action in the agent's config.
    pub action_index: Option<usize>,
    pub state: StateInfo,
    pub attempts: u32,
    pub max_attempts: u32,
    pub history: Vec<Attempt>,
    /// The job as enqueued (absent once purged or swept).
    pub job: Option<serde_json::Value>,
}

/// Blanks `action.secret` and `action.headers` values of a stored job's JSON.
pub fn redact_job(job: &mut serde_json::Value) {
    use aftercall_core::config::{REDACTED, REDACTED_HEADER};
    use serde_json::Value;
    let Some(action) = job.get_mut("action").and_then(Value::as_object_mut) else {
        return;
    };
    match action.get_mut("secret") {
        Some(Value::Array(items)) => items
            .iter_mut()
            .for_each(|s| *s = Value::String(REDACTED.into())),
        Some(s) if !s.is_null() => *s = Value::String(REDACTED.into()),
        _ => {}
    }
    if let Some(Value::Object(headers)) = action.get_mut("headers") {
        headers
            .values_mut()
            .for_each(|v| *v = Value::String(REDACTED_HEADER.into()));
    }
}

impl JobRecord {
    /// The record with signing secrets and custom header values blanked, for display.
    pub fn redacted(mut self) -> JobRecord {
        if let Some(job) = self.job.as_mut() {
            redact_job(job);
        }
        self
    }

    /// The error of the last failed attempt.
    pub fn last_error(&self) -> Option<&str> {
        self.history
            .iter()
            .rev()
            .find_map(|a| a.error.as_deref())
            .or(self.state.error.as_deref())
    }
    /// HTTP status of the last attempt that had one.
    pub fn last_status(&self) -> Option<u16> {
        self.history.iter().rev().find_map(|a| a.status)
    }
}

/// One call: its call-ended job and each action's job.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallStatus {
    pub call_id: String,
    pub call_ended: JobRecord,
    pub actions: Vec<JobRecord>,
    /// The platform's analysis, when one arrived after the call (Retell's
    /// `call_analyzed`): joined before the fan-out, or kept after it.
    pub analysis: Option<crate::AnalysisRecord>,
}

impl CallStatus {
    /// Every record of the call with secrets blanked, for display.
    pub fn redacted(self) -> CallStatus {
        CallStatus {
            call_id: self.call_id,
            call_ended: self.call_ended.redacted(),
            actions: self.actions.into_iter().map(JobRecord::redacted).collect(),
            analysis: self.analysis,
        }
    }
}

/// A dead letter as listed.
pub type DeadLetter = JobRecord;

/// What a replay did: how many dead letters went back to the queue, and which stayed
/// dead because their action expired (a forced replay sends them anyway).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    pub replayed: u64,
    pub expired: Vec<String>,
}

/// Filters for dead-letter listing, replay and purge. All set fields must match; a text
/// field that is empty or only whitespace counts as absent (see [`DlqFilter::normalized`]),
/// wherever the filter came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DlqFilter {
    pub agent: Option<String>,
    /// `email`, `sms`, `webhook`, `task` or `call_ended`.
    pub action: Option<String>,
    /// Dead since (Unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Dead until (Unix ms, inclusive).
    pub until_ms: Option<i64>,
    /// Error class: `http_4xx`, `http_5xx`, `http_429`, `timeout`, `connection`, `blocked`,
    /// `lease_expired`, `undecodable`, or a substring of the last error.
    pub error: Option<String>,
}

/// `None` for a value that is absent, empty or only whitespace: an operator who leaves a
/// filter field blank means "any", never "match the empty string" (which every error
/// contains, so `--error ""` would select every dead letter).
pub fn present(v: Option<String>) -> Option<String> {
    // ASCII white space only: the OpenAPI document's pattern for blank says the same.
    v.filter(|s| !s.bytes().all(|b| b.is_ascii_whitespace()))
}

impl DlqFilter {
    /// The filter with blank text fields made absent. Every operation normalises its
    /// filter, so a caller that forgets still gets these semantics.
    pub fn normalized(self) -> DlqFilter {
        DlqFilter {
            agent: present(self.agent),
            action: present(self.action),
            error: present(self.error),
            ..self
        }
    }

    /// True when the filter would match every dead letter (blank fields are absent).
    pub fn is_empty(&self) -> bool {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        blank(&self.agent)
            && blank(&self.action)
            && blank(&self.error)
            && self.since_ms.is_none()
            && self.until_ms.is_none()
    }

    /// The filter of a bulk replay or purge. An empty filter matches every dead letter,
    /// so it is refused unless `all` says that is meant; [`BulkFilter`] can only be made
    /// here, so no bulk operation runs without this check.
    pub fn bulk(self, all: bool) -> Result<BulkFilter, QueueError> {
        let f = self.normalized();
        if f.is_empty() && !all {
            return Err(QueueError::EmptyFilter);
        }
        Ok(BulkFilter(f))
    }

    fn matches(&self, r: &JobRecord) -> bool {
        if self
            .agent
            .as_deref()
            .is_some_and(|a| r.agent_id.as_deref() != Some(a))
        {
            return false;
        }
        if self.action.as_deref().is_some_and(|a| r.kind != a) {
            return false;
        }
        if let Some(e) = &self.error {
            return error_class(r).iter().any(|c| c == e)
                || r.last_error().is_some_and(|le| le.contains(e.as_str()));
        }
        true
    }
}

/// A [`DlqFilter`] that passed the "an empty filter needs `all`" check
/// ([`DlqFilter::bulk`]); what bulk replay, purge and their dry runs take.
#[derive(Debug, Clone)]
pub struct BulkFilter(DlqFilter);

impl BulkFilter {
    pub fn filter(&self) -> &DlqFilter {
        &self.0
    }
}

/// The classes an ops filter can name, derived from the typed attempt record.
pub fn error_class(r: &JobRecord) -> Vec<&'static str> {
    use aftercall_core::AttemptOutcome as O;
    let mut v = Vec::new();
    let Some(last) = r.history.iter().rev().find(|a| a.outcome != O::Replayed) else {
        return v;
    };
    match last.status {
        Some(429) => v.push("http_429"),
        Some(s) if (400..500).contains(&s) => v.push("http_4xx"),
        Some(s) if s >= 500 => v.push("http_5xx"),
        _ => {}
    }
    match last.outcome {
        O::LeaseExpired => v.push("lease_expired"),
        O::Undecodable => v.push("undecodable"),
        _ => {}
    }
    let err = last.error.as_deref().unwrap_or("");
    if err.starts_with("timeout") {
        v.push("timeout");
    } else if err.starts_with("connection") {
        v.push("connection");
    } else if err.starts_with("blocked") {
        v.push("blocked");
    }
    v
}

/// A page of results and the cursor for the next one.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Queue depths and recent throughput.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub queue: String,
    pub queued: u64,
    pub running: u64,
    pub scheduled: u64,
    pub dead: u64,
    pub finished_last_minute: u64,
    pub finished_last_hour: u64,
    pub calls: u64,
    pub agents: u64,
    /// Worker processes that sent a heartbeat within [`WORKER_ALIVE_MS`].
    #[serde(default)]
    pub workers_alive: u64,
    /// The Redis's eviction policy and the keys it has evicted since it started: any
    /// eviction may have been a job (see `AFTERCALL_ALLOW_EVICTION`).
    #[serde(default)]
    pub redis: crate::RedisFacts,
}

/// Dead letters read per `ZRANGEBYSCORE` while listing them.
const SCAN: isize = 200;

/// A worker counts as alive this long after its last heartbeat.
pub const WORKER_ALIVE_MS: i64 = 15_000;

impl Queue {
    /// Every job of a call and where each stands.
    pub async fn call_status(&self, call_id: &str) -> Result<Option<CallStatus>, QueueError> {
        let q = self.for_call(call_id);
        let mut tries = 0;
        loop {
            tries += 1;
            let Some((ids, fanout, analysis)) = q.call_jobs(call_id).await? else {
                return Ok(None);
            };
            let fanned_out = fanout.is_some();
            let mut records = self.jobs(&ids).await?;
            if records.is_empty() || records[0].id != ids[0] {
                return Ok(None);
            }
            let call_ended = records.remove(0);
            // The call fanned out between the two reads: its fan-out record and its state
            // are written together, so reading again shows its actions too.
            if !fanned_out && call_ended.state.state == "fanned_out" && tries < 3 {
                continue;
            }
            let analysis = analysis
                .map(|a| self.analysis_record(call_id, a))
                .transpose()?;
            return Ok(Some(CallStatus {
                call_id: call_id.to_string(),
                call_ended,
                actions: records,
                analysis,
            }));
        }
    }

    /// A call's job ids in this partition (its call-ended job's first, then its actions'),
    /// its fan-out record as stored (if it fanned out), and its stored analysis; `None`
    /// for an unknown call.
    pub(crate) async fn call_jobs(
        &self,
        call_id: &str,
    ) -> Result<Option<(Vec<String>, Option<String>, Option<String>)>, QueueError> {
        let k = self.keys();
        let (parent, fanout, analysis): (Option<String>, Option<String>, Option<String>) =
            redis::pipe()
                .hget(&k.calls, call_id)
                .hget(&k.fanout, call_id)
                .hget(&k.analysis, call_id)
                .query_async(&mut self.conn())
                .await?;
        let Some(parent) = parent else {
            return Ok(None);
        };
        let mut ids = vec![parent];
        if let Some(f) = &fanout {
            let actions: Vec<String> = serde_json::from_str(f)
                .map_err(|e| QueueError::Corrupt(format!("fan-out of {call_id}: {e}")))?;
            ids.extend(actions);
        }
        Ok(Some((ids, fanout, analysis)))
    }

    /// Lists dead letters, oldest first, filtered. `cursor` is opaque (from a previous page).
    pub async fn dlq_list(
        &self,
        filter: &DlqFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<DeadLetter>, QueueError> {
        let filter = &filter.clone().normalized();
        let limit = limit.clamp(1, 1000);
        self.dlq_merged(filter, cursor, limit).await
    }

    /// One scan's worth of this partition's dead letters in the filter's time range, from
    /// place `pos`, with their times.
    async fn dead_range(
        &self,
        filter: &DlqFilter,
        pos: isize,
    ) -> Result<Vec<(String, f64)>, QueueError> {
        let bound = |v: Option<i64>, inf: &str| v.map(|v| v.to_string()).unwrap_or(inf.into());
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(&self.keys().dead)
            .arg(bound(filter.since_ms, "-inf"))
            .arg(bound(filter.until_ms, "+inf"))
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(pos)
            .arg(SCAN)
            .query_async(&mut self.conn())
            .await?)
    }

    /// [`Queue::dlq_list`]: every partition's dead letters merged oldest first; the
    /// cursor holds each partition's place, dot-separated (`12.0.7`; one partition's
    /// is a number).
    async fn dlq_merged(
        &self,
        filter: &DlqFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<DeadLetter>, QueueError> {
        let n = self.partitions();
        let invalid =
            || QueueError::Invalid(format!("cursor `{}` is not valid", cursor.unwrap_or("")));
        let mut pos: Vec<isize> = match cursor {
            Some(c) => c
                .split('.')
                .map(|p| p.parse().map_err(|_| invalid()))
                .collect::<Result<_, _>>()?,
            None => vec![0; n],
        };
        if pos.len() != n {
            return Err(invalid());
        }
        let mut heads: Vec<std::collections::VecDeque<(String, f64)>> = vec![Default::default(); n];
        let mut done = vec![false; n];
        let mut items = Vec::new();
        loop {
            for p in 0..n {
                if heads[p].is_empty() && !done[p] {
                    let fetched = self.partition(p).dead_range(filter, pos[p]).await?;
                    done[p] = (fetched.len() as isize) < SCAN;
                    heads[p].extend(fetched);
                }
            }
            // The oldest heads, in order, until one partition's buffer runs dry.
            let mut round: Vec<(usize, String)> = Vec::new();
            while let Some(p) = (0..n)
                .filter(|&p| !heads[p].is_empty())
                .min_by(|&a, &b| heads[a][0].1.total_cmp(&heads[b][0].1))
            {
                let (id, _) = heads[p].pop_front().expect("not empty");
                round.push((p, id));
                if heads[p].is_empty() && !done[p] {
                    break;
                }
            }
            if round.is_empty() {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
            let ids: Vec<String> = round.iter().map(|(_, id)| id.clone()).collect();
            let records = self.jobs(&ids).await?;
            let mut records = records.into_iter().peekable();
            for (p, id) in round {
                pos[p] += 1;
                if records.peek().is_some_and(|r| r.id == id) {
                    let r = records.next().expect("peeked");
                    if filter.matches(&r) {
                        items.push(r);
                        if items.len() == limit {
                            let next: Vec<String> = pos.iter().map(|p| p.to_string()).collect();
                            return Ok(Page {
                                items,
                                next_cursor: Some(next.join(".")),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Every dead letter matching the filter (for bulk replay and purge).
    async fn dlq_ids(&self, filter: &DlqFilter) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.dlq_list(filter, cursor.as_deref(), 1000).await?;
            out.extend(page.items.into_iter().map(|r| r.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Re-queues dead letters with a fresh attempt budget, except those past their
    /// action's `expires_after` (left dead). Returns how many moved.
    pub async fn replay(&self, ids: &[String]) -> Result<u64, QueueError> {
        Ok(self.replay_with(ids, false).await?.replayed)
    }

    /// Re-queues dead letters with a fresh attempt budget. Without `force`, a dead letter
    /// past its action's `expires_after` stays dead and is named in `expired`; with it,
    /// the replay is recorded as forced and the worker runs the job regardless.
    pub async fn replay_with(&self, ids: &[String], force: bool) -> Result<Replay, QueueError> {
        let mut expired = Vec::new();
        let ids: Vec<String> = if force {
            ids.to_vec()
        } else {
            expired = self.expired(ids).await?;
            ids.iter()
                .filter(|id| !expired.contains(id))
                .cloned()
                .collect()
        };
        let flag = if force { "1" } else { "" };
        let replayed = self
            .per_dead_letter(&self.inner.scripts.replay, &ids, Some(flag))
            .await?;
        Ok(Replay { replayed, expired })
    }

    /// Which of `ids` are action jobs past their `expires_after` now.
    async fn expired(&self, ids: &[String]) -> Result<Vec<String>, QueueError> {
        let now = chrono::Utc::now();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            for (id, job) in chunk.iter().zip(self.decoded(chunk).await?) {
                if let Some(Ok(job)) = job
                    && let aftercall_core::JobBody::Action(a) = &job.body
                    && a.expires_at(job.created_at).is_some_and(|t| t <= now)
                {
                    out.push(id.clone());
                }
            }
        }
        Ok(out)
    }

    /// The stored jobs `ids`, decoded with their call's event (an action job's is its
    /// call-ended job's, read in the same round trip): `None` where nothing is stored.
    pub(crate) async fn decoded(
        &self,
        ids: &[impl AsRef<str>],
    ) -> Result<Vec<Option<Result<Job, String>>>, QueueError> {
        let ids: Vec<String> = ids.iter().map(|s| s.as_ref().to_string()).collect();
        self.routed(&ids, String::as_str, |q, s| Box::pin(q.decoded_here(s)))
            .await
    }

    async fn decoded_here(
        &self,
        ids: &[impl AsRef<str>],
    ) -> Result<Vec<Option<Result<Job, String>>>, QueueError> {
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let mut parents: Vec<&str> = Vec::new();
        for id in &ids {
            if let Some(p) = call_ended_id(id)
                && !parents.contains(&p)
            {
                parents.push(p);
            }
        }
        let mut data: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&self.keys().data)
            .arg(&ids)
            .arg(&parents)
            .query_async(&mut self.conn())
            .await?;
        let open = |id: &str, d: Option<Vec<u8>>| {
            d.map(|d| {
                self.open_data(id, &d)
                    .map(|p| p.into_owned())
                    .map_err(|e| format!("stored data {e}"))
            })
        };
        let events: Vec<(&str, Opened)> = parents
            .iter()
            .zip(data.split_off(ids.len()))
            .map(|(p, d)| (*p, open(p, d)))
            .collect();
        Ok(ids
            .iter()
            .zip(data)
            .map(|(id, d)| {
                let plain = open(id, d)?;
                let parent = call_ended_id(id)
                    .and_then(|p| events.iter().find(|(q, _)| *q == p))
                    .and_then(|(_, e)| e.as_ref())
                    .and_then(|e| e.as_ref().ok());
                Some(plain.and_then(|d| Job::decode(&d, parent.map(Vec::as_slice))))
            })
            .collect())
    }

    /// Whether the job's last replay was forced (`replay_with(.., true)`): read by a
    /// worker only for a job past its expiry, so it costs nothing on the common path.
    pub async fn replay_forced(&self, id: &str) -> Result<bool, QueueError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            outcome: String,
            #[serde(default)]
            forced: bool,
        }
        let log: Option<String> = redis::cmd("HGET")
            .arg(&self.for_job(id).keys().log)
            .arg(id)
            .query_async(&mut self.conn())
            .await?;
        let Some(log) = log else { return Ok(false) };
        let entries: Vec<Entry> = serde_json::from_str(&log)
            .map_err(|e| QueueError::Corrupt(format!("history of {id}: {e}")))?;
        Ok(entries
            .iter()
            .rev()
            .find(|e| e.outcome == "replayed")
            .is_some_and(|e| e.forced))
    }

    /// Runs `script` over dead letters `ids`, 500 per call in each one's partition;
    /// sums what it reports.
    pub(crate) async fn per_dead_letter(
        &self,
        script: &crate::scripts::QueueScript,
        ids: &[String],
        flag: Option<&str>,
    ) -> Result<u64, QueueError> {
        let mut total = 0;
        for (q, share, _) in self.shares(ids, String::as_str) {
            for chunk in share.chunks(500) {
                let mut inv = script.invocation(q.keys());
                inv.arg(now_ms());
                if let Some(flag) = flag {
                    inv.arg(flag);
                }
                for id in chunk {
                    inv.arg(id);
                }
                let n: u64 = inv.invoke_async(&mut self.conn()).await?;
                total += n;
            }
        }
        Ok(total)
    }

    pub async fn replay_matching(&self, filter: &BulkFilter) -> Result<u64, QueueError> {
        Ok(self.replay_matching_with(filter, false).await?.replayed)
    }

    /// [`Queue::replay_with`] over every dead letter matching `filter`.
    pub async fn replay_matching_with(
        &self,
        filter: &BulkFilter,
        force: bool,
    ) -> Result<Replay, QueueError> {
        let ids = self.dlq_ids(filter.filter()).await?;
        self.replay_with(&ids, force).await
    }

    /// How many dead letters a bulk replay or purge with `filter` would touch now; a dry
    /// run, which changes nothing.
    pub async fn count_matching(&self, filter: &BulkFilter) -> Result<u64, QueueError> {
        Ok(self.dlq_ids(filter.filter()).await?.len() as u64)
    }

    /// How many of `ids` are dead letters now: what a replay or purge of them would touch.
    pub async fn count_dead(&self, ids: &[String]) -> Result<u64, QueueError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        // A pipeline per partition: on a cluster one pipeline goes to one slot.
        for (q, share, _) in self.shares(ids, String::as_str) {
            let mut p = redis::pipe();
            for id in &share {
                p.zscore(&q.keys().dead, id);
            }
            let scores: Vec<Option<f64>> = p.query_async(&mut self.conn()).await?;
            n += scores.iter().filter(|s| s.is_some()).count() as u64;
        }
        Ok(n)
    }

    /// Deletes dead letters for good. Returns how many were purged.
    pub async fn purge(&self, ids: &[String]) -> Result<u64, QueueError> {
        self.per_dead_letter(&self.inner.scripts.purge, ids, Some("purge"))
            .await
    }

    pub async fn purge_matching(&self, filter: &BulkFilter) -> Result<u64, QueueError> {
        let ids = self.dlq_ids(filter.filter()).await?;
        self.purge(&ids).await
    }

    pub async fn stats(&self) -> Result<Stats, QueueError> {
        let now = now_ms();
        let h = self.home();
        let (agents, workers_alive): (u64, u64) = redis::pipe()
            .hlen(&h.agents)
            .zcount(&h.workers, now - WORKER_ALIVE_MS, "+inf")
            .query_async(&mut self.conn())
            .await?;
        let (mut queued, mut running, mut scheduled, mut dead) = (0, 0, 0, 0);
        let (mut minute, mut hour, mut calls) = (0, 0, 0);
        for q in self.parts() {
            let k = q.keys();
            type Counts = (u64, u64, u64, u64, u64, u64, u64);
            let c: Counts = redis::pipe()
                .llen(&k.ready)
                .zcard(&k.running)
                .zcard(&k.scheduled)
                .zcard(&k.dead)
                .zcount(&k.done, now - 60_000, now)
                .zcount(&k.done, now - 3_600_000, now)
                .hlen(&k.calls)
                .query_async(&mut self.conn())
                .await?;
            queued += c.0;
            running += c.1;
            scheduled += c.2;
            dead += c.3;
            minute += c.4;
            hour += c.5;
            calls += c.6;
        }
        let redis = self.redis_facts().await?;
        Ok(Stats {
            queue: self.inner.cfg.prefix.clone(),
            queued,
            running,
            scheduled,
            dead,
            finished_last_minute: minute,
            finished_last_hour: hour,
            calls,
            agents,
            workers_alive,
            redis,
        })
    }

    /// Records that `worker` is alive (and forgets workers silent for a day).
    pub async fn heartbeat(&self, worker: &str) -> Result<(), QueueError> {
        let k = self.home();
        let now = now_ms();
        let _: () = redis::pipe()
            .zadd(&k.workers, worker, now)
            .ignore()
            .zrembyscore(&k.workers, "-inf", now - 86_400_000)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Removes `worker` at a clean shutdown.
    pub async fn worker_stopped(&self, worker: &str) -> Result<(), QueueError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(&self.home().workers)
            .arg(worker)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Workers seen within [`WORKER_ALIVE_MS`], with their last heartbeat (Unix ms).
    pub async fn workers(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let now = now_ms();
        let v: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.home().workers)
            .arg(now - WORKER_ALIVE_MS)
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        Ok(v.into_iter().map(|(w, t)| (w, t as i64)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_fields_are_absent_and_an_empty_filter_needs_all() {
        let text = |v: Option<&str>| DlqFilter {
            agent: v.map(Into::into),
            ..DlqFilter::default()
        };
        let error = |v: Option<&str>| DlqFilter {
            error: v.map(Into::into),
            ..DlqFilter::default()
        };
        for blank in [None, Some(""), Some("  "), Some("\t\n")] {
            for f in [text(blank), error(blank)] {
                assert!(f.is_empty(), "{f:?}");
                assert!(matches!(
                    f.clone().bulk(false),
                    Err(QueueError::EmptyFilter)
                ));
                let all = f.bulk(true).unwrap();
                assert_eq!(all.filter().agent, None);
                assert_eq!(all.filter().error, None);
            }
        }
        let f = error(Some("timeout")).bulk(false).unwrap();
        assert_eq!(f.filter().error.as_deref(), Some("timeout"));
        let since = DlqFilter {
            since_ms: Some(0),
            error: Some(String::new()),
            ..DlqFilter::default()
        };
        assert!(!since.is_empty());
        assert_eq!(since.bulk(false).unwrap().filter().error, None);
    }
}
