//! Coalesces the Redis calls of concurrently running jobs: outcomes (`finish.lua`),
//! fan-outs (`fanout.lua`) and agent config reads (`HMGET`) each go out as one call for
//! every job that needs one at that moment, instead of one round trip per job.
//!
//! Each job still waits for its own answer (its lease token checked one by one in the
//! script), and finishes are retried through Redis blips as a lone finish was. No timer:
//! a batch is whatever queued up while the previous call was in flight, so a lone job
//! goes out at once and a busy worker sends hundreds per round trip.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aftercall_core::{AgentConfig, Job};
use aftercall_queue::{FanOutRecord, FannedOut, Finish, Queue, QueueError};
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::leases::Leases;

/// The most items sent in one call.
const MAX_BATCH: usize = 512;

/// A batched call's answer for one item, or why the call failed.
pub type Answer<R> = Result<R, Arc<QueueError>>;

type Pending<T, R> = (T, oneshot::Sender<Answer<R>>);

/// Queues items for a task that sends them in batches.
pub struct Batcher<T, R> {
    tx: mpsc::UnboundedSender<Pending<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task. `call` gets a batch and answers per item, in order. After `stop`,
    /// the task sends what is already queued and ends.
    pub fn spawn<F, Fut>(stop: CancellationToken, call: F) -> (Self, JoinHandle<()>)
    where
        F: FnMut(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, QueueError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        (Batcher { tx }, tokio::spawn(run(rx, stop, call)))
    }

    /// Sends `item` with whatever else is waiting, and returns its answer.
    pub async fn call(&self, item: T) -> Answer<R> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Arc::new(QueueError::Invalid("the worker is stopping".into()));
        self.tx.send((item, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn run<T, R, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<Pending<T, R>>,
    stop: CancellationToken,
    mut call: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, QueueError>>,
{
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            p = rx.recv() => p,
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some((item, w)) = first else { return };
        let mut items = Vec::with_capacity(MAX_BATCH.min(rx.len() + 1));
        items.push(item);
        waiters.push(w);
        while items.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((item, w)) => {
                    items.push(item);
                    waiters.push(w);
                }
                Err(_) => break,
            }
        }
        let n = items.len();
        match call(items).await {
            Ok(answers) if answers.len() == n => {
                for (w, a) in waiters.drain(..).zip(answers) {
                    let _ = w.send(Ok(a));
                }
            }
            res => {
                let e = Arc::new(match res {
                    Err(e) => e,
                    Ok(a) => QueueError::Corrupt(format!("{} answers for {n} items", a.len())),
                });
                for w in waiters.drain(..) {
                    let _ = w.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Records outcomes: per finish, whether the lease was still held.
pub type Acker = Batcher<Finish, bool>;

pub fn acker(queue: Queue, stop: CancellationToken) -> (Acker, JoinHandle<()>) {
    Batcher::spawn(stop, move |items: Vec<Finish>| {
        let queue = queue.clone();
        async move { record(&queue, &items).await }
    })
}

/// One `finish` call, retried briefly through Redis blips (the script is idempotent
/// under lease tokens: a retry of an applied finish reports a lost lease, changes nothing).
async fn record(queue: &Queue, items: &[Finish]) -> Result<Vec<bool>, QueueError> {
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(6);
    (|| async { queue.finish(items).await })
        .retry(policy)
        .when(|e| e.is_transient())
        .notify(|e, d| warn!(error = %e, jobs = items.len(), retry_in_ms = d.as_millis() as u64, "recording outcomes failed; retrying"))
        .await
}

/// Records fan-outs: per call-ended job, whether its lease was still held and which
/// action job it claimed, with that job handed back (moved out of its record, not
/// copied).
pub type FanOuts = Batcher<FanOutRecord, (FannedOut, Option<Box<Job>>)>;

/// A claimed job is held (renewed, and returned at shutdown) from the moment its lease
/// exists, before its job hears of it.
pub fn fan_outs(
    queue: Queue,
    leases: Arc<Leases>,
    stop: CancellationToken,
) -> (FanOuts, JoinHandle<()>) {
    Batcher::spawn(stop, move |records: Vec<FanOutRecord>| {
        let (queue, leases) = (queue.clone(), leases.clone());
        async move {
            let out = queue.fan_out_many(&records).await?;
            let claimed = out.iter().filter_map(|f| match f {
                FannedOut::Claimed(l) => Some(l),
                _ => None,
            });
            leases.hold(claimed);
            Ok(out
                .into_iter()
                .zip(records)
                .map(|(f, mut r)| {
                    let job = match &f {
                        FannedOut::Claimed(l) => {
                            let i = r.jobs.iter().position(|(j, _)| j.id == l.id);
                            i.map(|i| Box::new(r.jobs.swap_remove(i).0))
                        }
                        _ => None,
                    };
                    (f, job)
                })
                .collect())
        }
    })
}

/// Reads agent configs as they are now, parsing each stored form once: a config whose
/// stored JSON is unchanged since the last read is not parsed again. A config that does
/// not parse is that agent's error alone.
pub type Agents = Batcher<String, Result<Option<Arc<AgentConfig>>, String>>;

/// Parsed configs kept at most; past that the cache starts over.
const AGENT_CACHE: usize = 10_000;

type AgentCache = HashMap<String, (String, Arc<AgentConfig>)>;

pub fn agents(queue: Queue, stop: CancellationToken) -> (Agents, JoinHandle<()>) {
    let cache: Arc<std::sync::Mutex<AgentCache>> = Default::default();
    Batcher::spawn(stop, move |ids: Vec<String>| {
        let (queue, cache) = (queue.clone(), cache.clone());
        async move {
            let raws = queue.agents_raw(&ids).await?;
            let mut cache = cache.lock().expect("agent cache lock");
            if cache.len() > AGENT_CACHE {
                cache.clear();
            }
            Ok(ids
                .into_iter()
                .zip(raws)
                .map(|(id, raw)| parse_agent(&mut cache, id, raw))
                .collect())
        }
    })
}

fn parse_agent(
    cache: &mut AgentCache,
    id: String,
    raw: Option<String>,
) -> Result<Option<Arc<AgentConfig>>, String> {
    let Some(raw) = raw else { return Ok(None) };
    if let Some((seen, cfg)) = cache.get(&id)
        && *seen == raw
    {
        return Ok(Some(cfg.clone()));
    }
    let cfg: Arc<AgentConfig> = Arc::new(
        serde_json::from_str(&raw)
            .map_err(|e| format!("stored data is corrupt: agent {id}: {e}"))?,
    );
    cache.insert(id, (raw, cfg.clone()));
    Ok(Some(cfg))
}
