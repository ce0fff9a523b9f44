//! The producer side: call-ended events into `enqueue.lua`, in atomic chunks, single
//! events from concurrent producers coalesced, and a part-way failure reported as how
//! far it got.

use std::time::Duration;

use aftercall_core::{CallEvent, Job, ValidEvent};
use chrono::Utc;
use redis::RedisError;
use serde::{Deserialize, Serialize};

use crate::handle::Inner;
use crate::worker::stored_budget;
use crate::{Queue, QueueError, conn, partition};

/// Events per enqueue script call (and per `MULTI`).
const ENQUEUE_CHUNK: usize = 500;

/// A chunk of this many bytes of events or more is sealed on a blocking thread
/// ([`Queue::seal_chunk`]); a smaller one (a single event's) inline.
const SEAL_APART_BYTES: usize = 256 << 10;

type Waiter = tokio::sync::oneshot::Sender<Result<Enqueued, QueueError>>;

#[derive(Default)]
pub(crate) struct Singles {
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
    /// `n`: the queue's partitions (the job's id names its call's).
    fn decoded(event: CallEvent, now: chrono::DateTime<Utc>, n: usize) -> NewJob {
        let id = partition::call_job_id(&event.call_id, n);
        let job = Job::call_ended_as(event, now, id);
        let json = job.to_json().into_bytes();
        NewJob {
            call_id: job.call_id,
            id: job.id,
            json,
        }
    }

    fn valid(event: &ValidEvent<'_>, now: chrono::DateTime<Utc>, n: usize) -> NewJob {
        let id = partition::call_job_id(&event.call_id, n);
        let (id, json) = Job::call_ended_json_as(event, now, id);
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
    partitions: usize,
}

impl Iterator for ValidJobs<'_, '_> {
    type Item = NewJob;

    fn next(&mut self) -> Option<NewJob> {
        Some(NewJob::valid(
            self.events.next()?,
            self.now,
            self.partitions,
        ))
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

/// What enqueueing one event did.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    pub call_id: String,
    pub job_id: String,
    /// The call was seen before; nothing new was enqueued.
    pub duplicate: bool,
}

impl Queue {
    /// Enqueues call-ended events, idempotently on `call_id`. Events must already be
    /// validated. Large batches go in chunks, each one atomic. A single event (the HTTP
    /// ingest's case) is sent together with those of concurrent producers.
    pub async fn enqueue(&self, events: Vec<CallEvent>) -> Result<Vec<Enqueued>, QueueError> {
        let now = Utc::now();
        if events.len() == 1 {
            let event = events.into_iter().next().expect("one event");
            return Ok(vec![
                self.enqueue_one(NewJob::decoded(event, now, self.partitions()))
                    .await?,
            ]);
        }
        let n = self.partitions();
        let jobs = events.into_iter().map(|e| NewJob::decoded(e, now, n));
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
            let job = NewJob::valid(event, now, self.partitions());
            return Ok(vec![self.enqueue_one(job).await?]);
        }
        let jobs = ValidJobs {
            events: events.iter(),
            now,
            partitions: self.partitions(),
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
        if self.partitions() == 1 {
            let mut out = Vec::with_capacity(total);
            let failed = self.enqueue_chunks(jobs, now, &mut out).await.err();
            return (out, failed, total);
        }
        // Each partition's share goes to its own hash tag, the shares side by side;
        // the answer is in the events' order, stored up to the first one not known to be.
        let mut jobs: Vec<Option<NewJob>> = jobs.map(Some).collect();
        let groups = partition::group(&jobs, |j| {
            self.part_of_job(&j.as_ref().expect("not taken yet").id)
        });
        let shares = groups.into_iter().map(|(p, places)| {
            let share: Vec<NewJob> = places
                .iter()
                .map(|&i| jobs[i].take().expect("each job in one share"))
                .collect();
            let q = self.partition(p);
            async move {
                let mut out = Vec::with_capacity(share.len());
                let failed = q
                    .enqueue_chunks(share.into_iter(), now, &mut out)
                    .await
                    .err();
                (places, out, failed)
            }
        });
        let mut placed: Vec<Option<Enqueued>> = vec![None; total];
        let mut failed = None;
        for (places, out, err) in futures::future::join_all(shares.collect::<Vec<_>>()).await {
            for (i, e) in places.into_iter().zip(out) {
                placed[i] = Some(e);
            }
            failed = failed.or(err);
        }
        let out: Vec<Enqueued> = placed.into_iter().map_while(|e| e).collect();
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
        let k = self.keys();
        let max = &stored_budget(self.inner.cfg.retry.max_attempts);
        let mut it = jobs.peekable();
        let chunks = std::iter::from_fn(|| {
            it.peek()?;
            let chunk: Vec<NewJob> = it.by_ref().take(CHUNK).collect();
            Some(async move {
                let sealed = self.seal_chunk(chunk).await?;
                let mut inv = self.inner.scripts.enqueue.invocation(k);
                inv.arg(now.timestamp_millis()).arg(max);
                // The data goes in as a plain HSET in the script's transaction (see
                // enqueue.lua): cheaper for Redis than passing it through Lua.
                let mut data = redis::cmd("HSET");
                data.arg(&k.data);
                let mut jobs = Vec::with_capacity(sealed.len());
                for (job, stored) in sealed {
                    data.arg(&job.id).arg(stored);
                    inv.arg(&job.call_id);
                    jobs.push((job.call_id, job.id));
                }
                for (_, id) in &jobs {
                    inv.arg(id);
                }
                Ok::<_, QueueError>((self.enqueue_chunk(data, inv).await?, jobs))
            })
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

    /// A chunk's jobs with their data as stored (compressed, sealed). A large chunk is
    /// sealed on a blocking thread: with two chunks in flight, two cores compress while
    /// Redis stores the chunk before (zstd costs ~30 µs per 6 KB event).
    async fn seal_chunk(&self, chunk: Vec<NewJob>) -> Result<Vec<(NewJob, Vec<u8>)>, QueueError> {
        let seal = |q: &Queue, chunk: Vec<NewJob>| -> Vec<(NewJob, Vec<u8>)> {
            chunk
                .into_iter()
                .map(|mut job| {
                    let stored = q.seal_data(&job.id, std::mem::take(&mut job.json));
                    (job, stored)
                })
                .collect()
        };
        // Only compressing and encrypting cost enough to move: small plain events are
        // stored as they are, inline.
        let heavy: usize = chunk
            .iter()
            .map(|j| j.json.len())
            .filter(|n| self.seal_costs(*n))
            .sum();
        if heavy < SEAL_APART_BYTES {
            return Ok(seal(self, chunk));
        }
        let q = self.clone();
        tokio::task::spawn_blocking(move || seal(&q, chunk))
            .await
            .map_err(|e| QueueError::Invalid(format!("sealing a chunk of events failed: {e}")))
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

    /// With `wait_replicas` set, waits until that many replicas acknowledged the writes
    /// so far; too few in time is an error, so the producer does not take it as stored.
    pub(crate) async fn wait_for_replicas(&self) -> Result<(), QueueError> {
        let n = self.inner.cfg.wait_replicas;
        if n == 0 {
            return Ok(());
        }
        let timeout_ms = (self.inner.cfg.response_timeout.as_millis() as u64 / 2).max(100);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(n).arg(timeout_ms);
        // This partition's writes are on its slot's primary.
        let slot = self
            .inner
            .slot
            .map(|_| partition::slot(self.keys().hash_tag()));
        let acked: i64 =
            redis::from_redis_value(conn::on_slot_primary(&mut self.conn(), slot, cmd).await?)?;
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
        self.enqueue_one(NewJob::valid(&event, Utc::now(), self.partitions()))
            .await
    }
}
