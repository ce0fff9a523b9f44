//! aftercall's Redis queue: our own backend (Lua scripts), the producer API, and the
//! operations ops run on it (dead letters, per-call status, stats, agent configs).
//! See ARCHITECTURE.md for the key layout and the job state machine.

mod conn;
mod ids;
mod keys;
mod ops;
mod scripts;
mod server;

use std::sync::Arc;
use std::time::Duration;

use aftercall_core::{AgentConfig, CallEvent, Job, RetryPolicy, ValidEvent};
use chrono::Utc;
use redis::RedisError;

pub use conn::Conn;
pub use ids::{JobId, LeaseToken};
use serde::{Deserialize, Serialize};

pub use keys::Keys;
pub use ops::{
    CallStatus, DeadLetter, DlqFilter, JobRecord, Page, Stats, WORKER_ALIVE_MS, redact_job,
};
pub use server::{ALLOW_EVICTION, NO_EVICTION, RedisFacts};

/// How to reach Redis and name the queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `redis://[user:pass@]host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// The hash tag every key of the queue shares: `{prefix}:ready`, ...
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// The retry budget given to new jobs.
    pub retry: RetryPolicy,
    pub max_event_bytes: usize,
    /// Talk to a Redis Cluster (also implied by several comma-separated URLs).
    pub cluster: bool,
    /// After an enqueue, wait until this many replicas have the write (`WAIT`), so an
    /// acknowledged event survives the loss of its primary. 0 = don't wait.
    pub wait_replicas: u32,
    /// Run on a Redis whose `maxmemory-policy` is not `noeviction` (with a warning)
    /// instead of refusing to ([`server`]'s reasons).
    pub allow_eviction: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "aftercall".into(),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_event_bytes: aftercall_core::DEFAULT_MAX_EVENT_BYTES,
            cluster: false,
            wait_replicas: 0,
            allow_eviction: false,
        }
    }
}

impl QueueConfig {
    /// AFTERCALL_REDIS_URL, AFTERCALL_QUEUE_PREFIX, AFTERCALL_MAX_EVENT_BYTES,
    /// AFTERCALL_REDIS_TIMEOUT and the retry policy settings.
    pub fn from_settings(
        s: &aftercall_core::settings::Settings,
    ) -> Result<QueueConfig, aftercall_core::settings::SettingError> {
        let d = QueueConfig::default();
        let prefix = s.string("AFTERCALL_QUEUE_PREFIX").unwrap_or(d.prefix);
        if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
            return Err(aftercall_core::settings::SettingError {
                name: "AFTERCALL_QUEUE_PREFIX".into(),
                message: "must not contain braces or spaces".into(),
            });
        }
        Ok(QueueConfig {
            url: s.string("AFTERCALL_REDIS_URL").unwrap_or(d.url),
            prefix,
            connect_timeout: d.connect_timeout,
            response_timeout: s
                .duration("AFTERCALL_REDIS_TIMEOUT")?
                .unwrap_or(d.response_timeout),
            retry: s.retry_policy()?,
            max_event_bytes: s
                .parse("AFTERCALL_MAX_EVENT_BYTES")?
                .unwrap_or(d.max_event_bytes),
            cluster: s.bool("AFTERCALL_REDIS_CLUSTER")?.unwrap_or(d.cluster),
            wait_replicas: s
                .parse("AFTERCALL_REDIS_WAIT_REPLICAS")?
                .unwrap_or(d.wait_replicas),
            allow_eviction: s.bool(ALLOW_EVICTION)?.unwrap_or(d.allow_eviction),
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable { url: String, source: RedisError },
    #[error("Redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unexpected reply from Redis: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error("{0}")]
    Invalid(String),
    /// Fewer replicas than `wait_replicas` confirmed a write in time: it may not survive
    /// a failover, so it is not reported as stored.
    #[error("{0}")]
    Unreplicated(String),
    /// Redis may evict keys: refused at connect ([`RedisFacts::eviction_problem`]).
    #[error("{0}")]
    Evicting(String),
    /// A bulk enqueue stopped part-way: the first `enqueued` events of the batch were
    /// stored (new or duplicate); the one after them was not, and those after it are
    /// not known to be. Enqueue is idempotent, so sending the same batch again finishes
    /// it.
    #[error("{source}; {enqueued} of {total} events were enqueued")]
    Incomplete {
        enqueued: usize,
        total: usize,
        source: Box<QueueError>,
    },
}

impl QueueError {
    /// True for errors that a retry after a reconnect may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Incomplete { source, .. } => source.is_transient(),
            e => matches!(
                e,
                QueueError::Unreachable { .. } | QueueError::Redis(_) | QueueError::Unreplicated(_)
            ),
        }
    }

    /// True when Redis refused a write because it is out of memory (`maxmemory` reached
    /// under `noeviction`): a retry helps only once memory is freed.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            QueueError::Incomplete { source, .. } => source.is_out_of_memory(),
            QueueError::Redis(e) => is_oom(e),
            _ => false,
        }
    }
}

/// Redis's `OOM` error, on its own or as the reason a `MULTI` was discarded
/// (`EXECABORT ... OOM command not allowed ...`).
fn is_oom(e: &RedisError) -> bool {
    e.clone()
        .into_server_errors()
        .is_some_and(|errs| errs.iter().any(|(_, e)| e.code() == "OOM"))
}

/// Events per enqueue script call (and per `MULTI`).
const ENQUEUE_CHUNK: usize = 500;

/// The queue handle: cheap to clone, shared by producers, workers and ops.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    client: conn::Client,
    conn: Conn,
    /// The cluster slot of the queue's hash tag (cluster mode only).
    slot: Option<u16>,
    keys: Keys,
    scripts: scripts::Scripts,
    cfg: QueueConfig,
    /// Single-event enqueues from concurrent producers, sent together (`enqueue_one`).
    singles: std::sync::Mutex<Singles>,
    /// What is wrong with the Redis, as found at connect (`/readyz` repeats it).
    warnings: Vec<String>,
}

type Waiter = tokio::sync::oneshot::Sender<Result<Enqueued, QueueError>>;

#[derive(Default)]
struct Singles {
    pending: Vec<(NewJob, Waiter)>,
    /// A task is sending them.
    draining: bool,
}

/// A call-ended job ready for `enqueue.lua`: its call, its id and its stored JSON.
struct NewJob {
    call_id: String,
    id: String,
    json: Vec<u8>,
}

impl NewJob {
    fn decoded(event: CallEvent, now: chrono::DateTime<Utc>) -> NewJob {
        let job = Job::call_ended(event, now);
        let json = job.to_json().into_bytes();
        NewJob {
            call_id: job.call_id,
            id: job.id,
            json,
        }
    }

    fn valid(event: &ValidEvent<'_>, now: chrono::DateTime<Utc>) -> NewJob {
        let (id, json) = Job::call_ended_json(event, now);
        NewJob {
            call_id: event.call_id.clone(),
            id,
            json,
        }
    }
}

/// Encodes events kept as bytes one at a time, as `enqueue_jobs` takes them. (A named
/// type, not a closure: a closure over borrowed events made the futures of the API's
/// handlers unprovably `Send`.)
struct ValidJobs<'a, 'b> {
    events: std::slice::Iter<'a, ValidEvent<'b>>,
    now: chrono::DateTime<Utc>,
}

impl Iterator for ValidJobs<'_, '_> {
    type Item = NewJob;

    fn next(&mut self) -> Option<NewJob> {
        Some(NewJob::valid(self.events.next()?, self.now))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.events.size_hint()
    }
}

impl ExactSizeIterator for ValidJobs<'_, '_> {}

/// Resets the single-event queue if its draining task is dropped mid-way (its runtime
/// stopped): the next producer starts a new one, and the waiters see an error.
struct DrainGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.inner.singles.lock().unwrap_or_else(|e| e.into_inner());
            s.draining = false;
            s.pending.clear();
        }
    }
}

/// A per-destination limit; 0 means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub concurrency: u32,
    pub per_second: u32,
}

/// What enqueueing one event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    pub call_id: String,
    pub job_id: String,
    /// The call was seen before; nothing new was enqueued.
    pub duplicate: bool,
}

/// A job this worker holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub id: JobId,
    pub data: String,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    pub token: LeaseToken,
}

/// A job's attempt budget as the scripts store it: empty for the default, which is not
/// stored (an absent budget reads as [`aftercall_core::DEFAULT_MAX_ATTEMPTS`]). One
/// hash field fewer per job: 11 % of an enqueue's Redis instructions.
fn stored_budget(max: u32) -> String {
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
    /// queued, running, scheduled, delivered, skipped, dead, purged
    pub state: String,
    /// Unix ms of the transition.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<usize>,
}

impl StateInfo {
    pub fn new(state: &str) -> StateInfo {
        StateInfo {
            state: state.into(),
            at: now_ms(),
            ..Default::default()
        }
    }
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Hides the password of a Redis URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Queue {
    /// Connects and checks that Redis answers, failing fast with a clear message, and
    /// that it does not evict keys (unless `allow_eviction`). What else is wrong with it
    /// (no persistence, eviction allowed) is logged once and kept in
    /// [`Queue::warnings`].
    pub async fn connect(cfg: QueueConfig) -> Result<Queue, QueueError> {
        Self::open(cfg, true).await
    }

    /// [`Queue::connect`] for reading only (the CLI's `calls show`, `dlq list`, `stats`):
    /// an evicting Redis is not refused, so ops can still see what is there.
    pub async fn connect_to_read(cfg: QueueConfig) -> Result<Queue, QueueError> {
        Self::open(cfg, false).await
    }

    async fn open(cfg: QueueConfig, writes: bool) -> Result<Queue, QueueError> {
        let url = redact_url(&cfg.url);
        let unreachable = |source| QueueError::Unreachable {
            url: url.clone(),
            source,
        };
        let urls: Vec<&str> = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(QueueError::Invalid("AFTERCALL_REDIS_URL is empty".into()));
        }
        let client = conn::Client::open(
            &urls,
            cfg.cluster,
            cfg.connect_timeout,
            cfg.response_timeout,
        )
        .map_err(unreachable)?;
        let connect = client.shared(cfg.connect_timeout, cfg.response_timeout);
        let mut conn = tokio::time::timeout(cfg.connect_timeout + Duration::from_secs(1), connect)
            .await
            .map_err(|_| {
                unreachable(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            })?
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let keys = Keys::new(&cfg.prefix);
        let slot = if client.is_cluster() {
            let s: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&keys.ready)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Some(s)
        } else {
            None
        };
        let facts = RedisFacts::read(&mut conn, slot)
            .await
            .map_err(unreachable)?;
        if writes && facts.evicts() && !cfg.allow_eviction {
            return Err(QueueError::Evicting(facts.eviction_problem()));
        }
        let warnings = if writes {
            facts.warnings(cfg.allow_eviction)
        } else {
            Vec::new()
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(Queue {
            inner: Arc::new(Inner {
                client,
                conn,
                slot,
                keys,
                scripts: scripts::Scripts::new(),
                cfg,
                singles: Default::default(),
                warnings,
            }),
        })
    }

    /// What is wrong with the Redis, found at connect: eviction allowed on an evicting
    /// Redis, no persistence.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Reads the Redis's policy and eviction count now (stats, metrics).
    pub async fn redis_facts(&self) -> Result<RedisFacts, QueueError> {
        Ok(RedisFacts::read(&mut self.conn(), self.inner.slot).await?)
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// A call of `script` with `keys`, in the order the script's header lists them.
    fn invocation<'a>(script: &'a redis::Script, keys: &[&String]) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        inv
    }

    /// A connection of its own for blocking waits (they would stall a shared one).
    pub async fn blocking_connection(&self) -> Result<Conn, QueueError> {
        Ok(self
            .inner
            .client
            .dedicated(self.inner.cfg.connect_timeout)
            .await?)
    }

    /// Waits until a producer or a finished job signals new work, or `timeout` passes.
    pub async fn wait_for_work(
        &self,
        conn: &mut Conn,
        timeout: Duration,
    ) -> Result<bool, QueueError> {
        let secs = timeout.as_secs_f64().max(0.01);
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&self.inner.keys.notify)
            .arg(secs)
            .query_async(conn)
            .await?;
        Ok(got.is_some())
    }

    /// Checks that Redis answers (readiness).
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    // ---- producer ----

    /// Enqueues call-ended events, idempotently on `call_id`. Events must already be
    /// validated. Large batches go in chunks, each one atomic. A single event (the HTTP
    /// ingest's case) is sent together with those of concurrent producers.
    pub async fn enqueue(&self, events: Vec<CallEvent>) -> Result<Vec<Enqueued>, QueueError> {
        let now = Utc::now();
        if events.len() == 1 {
            let event = events.into_iter().next().expect("one event");
            return Ok(vec![self.enqueue_one(NewJob::decoded(event, now)).await?]);
        }
        let jobs = events.into_iter().map(|e| NewJob::decoded(e, now));
        Self::whole(self.enqueue_jobs(jobs, now).await)
    }

    /// A bulk enqueue's answer: all of it, or [`QueueError::Incomplete`] saying how far
    /// it got.
    fn whole(
        (out, failed, total): (Vec<Enqueued>, Option<QueueError>, usize),
    ) -> Result<Vec<Enqueued>, QueueError> {
        match failed {
            None => Ok(out),
            Some(source) => Err(QueueError::Incomplete {
                enqueued: out.len(),
                total,
                source: Box::new(source),
            }),
        }
    }

    /// Enqueues events kept as their producer's bytes (read by
    /// [`aftercall_core::batch::parse_valid`]): they are stored as they are instead of
    /// being decoded and encoded again. Otherwise as [`Queue::enqueue`].
    pub async fn enqueue_valid(
        &self,
        events: &[ValidEvent<'_>],
    ) -> Result<Vec<Enqueued>, QueueError> {
        let now = Utc::now();
        if let [event] = events {
            return Ok(vec![self.enqueue_one(NewJob::valid(event, now)).await?]);
        }
        let jobs = ValidJobs {
            events: events.iter(),
            now,
        };
        Self::whole(self.enqueue_jobs(jobs, now).await)
    }

    /// One event, coalesced: whatever single events arrive while a call to Redis is in
    /// flight go out in the next one (no timer, so a lone event goes at once). Each
    /// producer still gets its own answer; a call twice in one batch is a duplicate of
    /// the first, as if sent in turn.
    async fn enqueue_one(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut s = self.inner.singles.lock().unwrap_or_else(|e| e.into_inner());
            s.pending.push((job, tx));
            !std::mem::replace(&mut s.draining, true)
        };
        if start {
            let q = self.clone();
            tokio::spawn(async move { q.drain_singles().await });
        }
        rx.await.unwrap_or_else(|_| {
            Err(QueueError::Redis(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the enqueue was cut off: its sender stopped",
            ))))
        })
    }

    async fn drain_singles(self) {
        let mut guard = DrainGuard {
            inner: &self.inner,
            armed: true,
        };
        loop {
            let batch: Vec<(NewJob, Waiter)> = {
                let mut s = self.inner.singles.lock().unwrap_or_else(|e| e.into_inner());
                if s.pending.is_empty() {
                    s.draining = false;
                    guard.armed = false;
                    return;
                }
                let n = s.pending.len().min(ENQUEUE_CHUNK);
                s.pending.drain(..n).collect()
            };
            let (jobs, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            // Each producer gets its own event's answer: stored, or the error.
            let (out, failed, _) = self.enqueue_jobs(jobs.into_iter(), Utc::now()).await;
            let mut waiters = waiters.into_iter();
            for (w, e) in waiters.by_ref().zip(out) {
                let _ = w.send(Ok(e));
            }
            if let Some(e) = failed {
                for w in waiters {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }

    /// Enqueues new call-ended jobs in chunks, each chunk atomic, in order. Answers
    /// what was stored, the error that stopped it (if one did: the events after the
    /// stored ones are not known to be stored), and how many there were.
    async fn enqueue_jobs(
        &self,
        jobs: impl ExactSizeIterator<Item = NewJob>,
        now: chrono::DateTime<Utc>,
    ) -> (Vec<Enqueued>, Option<QueueError>, usize) {
        let total = jobs.len();
        let mut out = Vec::with_capacity(total);
        let failed = self.enqueue_chunks(jobs, now, &mut out).await.err();
        (out, failed, total)
    }

    async fn enqueue_chunks(
        &self,
        jobs: impl ExactSizeIterator<Item = NewJob>,
        now: chrono::DateTime<Utc>,
        out: &mut Vec<Enqueued>,
    ) -> Result<(), QueueError> {
        use futures::StreamExt;
        const CHUNK: usize = ENQUEUE_CHUNK;
        let k = &self.inner.keys;
        let max = stored_budget(self.inner.cfg.retry.max_attempts);
        let mut it = jobs.peekable();
        let chunks = std::iter::from_fn(|| {
            it.peek()?;
            let mut inv = Self::invocation(
                &self.inner.scripts.enqueue,
                &[
                    &k.calls,
                    &k.calls_log,
                    &k.ready,
                    &k.data,
                    &k.state,
                    &k.attempts,
                    &k.max,
                    &k.notify,
                ],
            );
            inv.arg(now.timestamp_millis()).arg(&max);
            // The data goes in as a plain HSET in the script's transaction (see
            // enqueue.lua): cheaper for Redis than passing it through Lua.
            let mut data = redis::cmd("HSET");
            data.arg(&k.data);
            let mut jobs = Vec::with_capacity(CHUNK);
            for job in it.by_ref().take(CHUNK) {
                data.arg(&job.id).arg(job.json);
                inv.arg(&job.call_id);
                jobs.push((job.call_id, job.id));
            }
            for (_, id) in &jobs {
                inv.arg(id);
            }
            Some(async move { Ok::<_, QueueError>((self.enqueue_chunk(data, inv).await?, jobs)) })
        });
        // Two chunks in flight: the next one is encoded while Redis runs the previous.
        // One connection keeps them in order; each chunk is atomic on its own.
        let mut results = futures::stream::iter(chunks).buffered(2);
        while let Some(r) = results.next().await {
            let (dups, jobs) = r?;
            let first = out.len();
            out.extend(jobs.into_iter().map(|(call_id, job_id)| Enqueued {
                call_id,
                job_id,
                duplicate: false,
            }));
            // The script answers for duplicates only: (place in the chunk from 1, the
            // id of the job the call already has).
            for pair in dups.chunks(2) {
                let at: usize = redis::from_redis_value(pair[0].clone())?;
                let e = at
                    .checked_sub(1)
                    .and_then(|i| out.get_mut(first + i))
                    .ok_or_else(|| {
                        QueueError::Redis(RedisError::from((
                            redis::ErrorKind::Client,
                            "enqueue answered for a job it was not sent",
                        )))
                    })?;
                e.job_id = redis::from_redis_value(pair[1].clone())?;
                e.duplicate = true;
            }
        }
        Ok(())
    }

    async fn enqueue_chunk(
        &self,
        data: redis::Cmd,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<Vec<redis::Value>, QueueError> {
        let tx = Self::transaction(vec![data], &inv);
        // The shared connection reports a dropped link once before it reconnects;
        // enqueue is idempotent on call_id, so one retry is safe (a write that did
        // land shows as a duplicate, with the same job id).
        let res = match self.transact(&tx, &inv).await {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.transact(&tx, &inv).await?
            }
            r => r?,
        };
        self.wait_for_replicas().await?;
        Ok(res)
    }

    /// `writes` (their replies ignored), then the script, as one MULTI, for
    /// [`Queue::transact`].
    fn transaction(writes: Vec<redis::Cmd>, inv: &redis::ScriptInvocation<'_>) -> redis::Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        for w in writes {
            tx.add_command(w).ignore();
        }
        tx.invoke_script(inv);
        tx
    }

    /// Runs a [`Queue::transaction`] and returns the script's reply. A Redis that
    /// restarted or failed over has no scripts: the script is loaded and the whole
    /// transaction sent again, so its writes must be safe to repeat.
    async fn transact<T: redis::FromRedisValue>(
        &self,
        tx: &redis::Pipeline,
        inv: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let r: redis::RedisResult<(T,)> = tx.query_async(&mut self.conn()).await;
        let (res,) = match r {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                inv.load_async(&mut self.conn()).await?;
                tx.query_async(&mut self.conn()).await?
            }
            r => r?,
        };
        Ok(res)
    }

    /// With `wait_replicas` set, waits until that many replicas acknowledged the writes
    /// so far; too few in time is an error, so the producer does not take it as stored.
    async fn wait_for_replicas(&self) -> Result<(), QueueError> {
        let n = self.inner.cfg.wait_replicas;
        if n == 0 {
            return Ok(());
        }
        let timeout_ms = (self.inner.cfg.response_timeout.as_millis() as u64 / 2).max(100);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(n).arg(timeout_ms);
        let acked: i64 = redis::from_redis_value(
            conn::on_slot_primary(&mut self.conn(), self.inner.slot, cmd).await?,
        )?;
        if acked < n as i64 {
            return Err(QueueError::Unreplicated(format!(
                "only {acked} of {n} replicas confirmed the write within {timeout_ms} ms"
            )));
        }
        Ok(())
    }

    /// Parses, validates and enqueues one event from JSON bytes (stored as they are).
    pub async fn enqueue_json(&self, bytes: &[u8]) -> Result<Enqueued, QueueError> {
        let event = ValidEvent::parse(bytes, self.inner.cfg.max_event_bytes)
            .map_err(|e| QueueError::Invalid(e.to_string()))?;
        self.enqueue_one(NewJob::valid(&event, Utc::now())).await
    }

    // ---- worker side ----

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
    pub async fn fetch_at(
        &self,
        worker: &str,
        batch: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Fetched, QueueError> {
        let k = &self.inner.keys;
        let mut inv = Self::invocation(
            &self.inner.scripts.fetch,
            &[
                &k.ready,
                &k.running,
                &k.scheduled,
                &k.dead,
                &k.data,
                &k.state,
                &k.attempts,
                &k.max,
                &k.log,
                &k.lease,
                &k.notify,
            ],
        );
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
        // leased job is neither purged nor swept, so this reads what the script saw.
        let data: Vec<Option<Vec<u8>>> = if leased.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<&str> = leased.iter().map(|(id, _, _)| id.as_str()).collect();
            redis::cmd("HMGET")
                .arg(&k.data)
                .arg(&ids)
                .query_async(&mut self.conn())
                .await?
        };
        let mut jobs = Vec::with_capacity(leased.len());
        for ((id, attempt, max_attempts), data) in leased.into_iter().zip(data) {
            // Bytes, not String: a payload that is not UTF-8 must fail as its own job
            // (undecodable, dead-lettered), not fail the fetch of its whole batch.
            let data = String::from_utf8(data.unwrap_or_default())
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            let token = LeaseToken::new(worker, attempt);
            jobs.push(Leased {
                id: id.into(),
                data,
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
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.inner.keys;
        let mut inv = Self::invocation(
            &self.inner.scripts.finish,
            &[
                &k.ready,
                &k.running,
                &k.scheduled,
                &k.dead,
                &k.done,
                &k.state,
                &k.attempts,
                &k.log,
                &k.lease,
                &k.notify,
            ],
        );
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
                        attempt: 1,
                        max_attempts: self.inner.cfg.retry.max_attempts,
                        token: LeaseToken::new(worker, 1),
                    }))
                }
            })
            .collect()
    }

    fn fan_out_invocation(&self) -> redis::ScriptInvocation<'_> {
        let k = &self.inner.keys;
        Self::invocation(
            &self.inner.scripts.fanout,
            &[
                &k.ready,
                &k.running,
                &k.scheduled,
                &k.done,
                &k.data,
                &k.state,
                &k.attempts,
                &k.max,
                &k.log,
                &k.lease,
                &k.fanout,
                &k.notify,
            ],
        )
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
            let run_at = delay.map(|d| now + d.as_millis() as i64).unwrap_or(0);
            let mut data = redis::cmd("HSETNX");
            data.arg(&self.inner.keys.data)
                .arg(&job.id)
                .arg(job.to_json());
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
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let k = &self.inner.keys;
        let mut inv = self.inner.scripts.renew.prepare_invoke();
        inv.key(&k.running)
            .key(&k.lease)
            .arg(now_ms() + lease.as_millis() as i64);
        for (id, token) in held {
            inv.arg(id).arg(token);
        }
        let lost: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        Ok(lost.into_iter().map(JobId::from).collect())
    }

    /// Forgets finished jobs and call ids older than `retention`, `limit` at a time.
    pub async fn sweep(&self, retention: Duration, limit: usize) -> Result<u64, QueueError> {
        let k = &self.inner.keys;
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut inv = Self::invocation(
            &self.inner.scripts.sweep,
            &[
                &k.done,
                &k.data,
                &k.state,
                &k.attempts,
                &k.max,
                &k.log,
                &k.calls,
                &k.calls_log,
                &k.fanout,
            ],
        );
        inv.arg(cutoff).arg(limit).arg(retention.as_millis() as u64);
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    // ---- per-destination limits ----

    /// Takes a slot of `destination` for `token` (at most `limit.concurrency` at once and
    /// `limit.per_second` starts a second, across every replica). False: wait and retry
    /// later; that wait is not an attempt.
    pub async fn acquire_slot(
        &self,
        destination: &str,
        token: &str,
        hold: Duration,
        limit: Limit,
    ) -> Result<bool, QueueError> {
        let now = now_ms();
        let k = &self.inner.keys;
        let mut inv = self.inner.scripts.limit.prepare_invoke();
        inv.key(k.limit(destination))
            .key(k.rate(destination, now / 1000));
        inv.arg(now)
            .arg(token)
            .arg(hold.as_millis() as u64)
            .arg(limit.concurrency)
            .arg(limit.per_second);
        let ok: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(ok == 1)
    }

    /// Gives a slot back.
    pub async fn release_slot(&self, destination: &str, token: &str) -> Result<(), QueueError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.inner.keys.limit(destination))
            .arg(token)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    // ---- agents ----

    /// Stores an agent's config (already validated).
    pub async fn set_agent(&self, agent_id: &str, cfg: &AgentConfig) -> Result<(), QueueError> {
        let json = serde_json::to_string(cfg).expect("config serializes");
        let _: () = redis::cmd("HSET")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .arg(json)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn get_agent(&self, agent_id: &str) -> Result<Option<AgentConfig>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        raw.map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| QueueError::Corrupt(format!("agent {agent_id}: {e}")))
        })
        .transpose()
    }

    /// Stored agent configs (JSON) for `ids`, in one round trip; `None` where absent.
    pub async fn agents_raw(&self, ids: &[String]) -> Result<Vec<Option<String>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("HMGET")
            .arg(&self.inner.keys.agents)
            .arg(ids)
            .query_async(&mut self.conn())
            .await?)
    }

    /// An agent's config and its stored form, for [`Queue::set_agent_if`].
    pub async fn get_agent_versioned(
        &self,
        agent_id: &str,
    ) -> Result<(Option<AgentConfig>, Option<String>), QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        let cfg = raw
            .as_deref()
            .map(|r| {
                serde_json::from_str(r)
                    .map_err(|e| QueueError::Corrupt(format!("agent {agent_id}: {e}")))
            })
            .transpose()?;
        Ok((cfg, raw))
    }

    /// Stores `cfg` only if the stored form is still `expected` (`None`: no config yet).
    /// False: someone changed it meanwhile; read again and retry.
    pub async fn set_agent_if(
        &self,
        agent_id: &str,
        expected: Option<&str>,
        cfg: &AgentConfig,
    ) -> Result<bool, QueueError> {
        let json = serde_json::to_string(cfg).expect("config serializes");
        let mut inv = self.inner.scripts.agent_cas.key(&self.inner.keys.agents);
        inv.arg(agent_id)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(json);
        let ok: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(ok == 1)
    }

    pub async fn list_agents(&self) -> Result<Vec<String>, QueueError> {
        let mut ids: Vec<String> = redis::cmd("HKEYS")
            .arg(&self.inner.keys.agents)
            .query_async(&mut self.conn())
            .await?;
        ids.sort();
        Ok(ids)
    }

    pub async fn delete_agent(&self, agent_id: &str) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }
}
