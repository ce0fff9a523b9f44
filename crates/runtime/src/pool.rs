//! The worker pool: apalis drives concurrency and draining; our Redis backend feeds it
//! through a `CustomBackend` stream of leased jobs. Lease renewal and retention run
//! beside it. See ARCHITECTURE.md for why outcomes are recorded by the handler rather
//! than through apalis's acknowledgement path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use aftercall_actions::Executors;
use aftercall_core::JobState;
use aftercall_queue::{Finish, FinishMode, Leased, Queue, StateInfo, now_ms};
use apalis::prelude::WorkerBuilderExt;
use apalis_core::backend::custom::BackendBuilder;
use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::acker;
use crate::handler::{self, Ctx};
use crate::leases::Leases;
use crate::{RuntimeError, WorkerConfig};

/// The longest an idle worker waits before looking at the queue again on its own.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The fetch loop's backoff after a failed fetch: 200 ms, doubling, at most 5 s.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_factor(2.0)
    .with_max_delay(RECONNECT_MAX)
    .without_max_times();

pub async fn run(
    cfg: WorkerConfig,
    queue: Queue,
    executors: Executors,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let leases: Arc<Leases> = Default::default();
    let grace = cfg.grace;
    let batchers_stop = CancellationToken::new();
    let (acker, acker_task) = acker::acker(queue.clone(), batchers_stop.clone());
    let (fan_outs, fan_outs_task) =
        acker::fan_outs(queue.clone(), leases.clone(), batchers_stop.clone());
    let (agents, agents_task) = acker::agents(queue.clone(), batchers_stop.clone());
    let otel = crate::otel::Otel::from_env()
        .map_err(RuntimeError::Worker)?
        .map(Arc::new);
    if otel.is_some() {
        info!("exporting traces over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT)");
    }
    let (alerts, alerts_rx) = crate::alerts::Alerts::channel();
    let ctx = Arc::new(Ctx {
        queue: queue.clone(),
        executors,
        cfg: cfg.clone(),
        leases: leases.clone(),
        acker,
        fan_outs,
        agents,
        otel: otel.clone(),
        health: Default::default(),
        alerts,
    });
    let buffer: Arc<std::sync::Mutex<VecDeque<Leased>>> = Default::default();

    let side = CancellationToken::new();
    let renewer = tokio::spawn(renew_loop(ctx.clone(), side.clone()));
    let _ = queue.heartbeat(&cfg.worker_id).await;
    let sweeper = tokio::spawn(sweep_loop(ctx.clone(), side.clone()));
    let alerter = tokio::spawn(crate::alerts::run(ctx.clone(), alerts_rx, side.clone()));

    let fetching: Arc<tokio::sync::Mutex<()>> = Default::default();
    let fetcher = Fetcher {
        ctx: ctx.clone(),
        buffer: buffer.clone(),
        shutdown: shutdown.clone(),
        fetching: fetching.clone(),
    };
    let backend = BackendBuilder::new()
        .database(fetcher)
        .fetcher(|f: &mut Fetcher, _: &(), _| f.clone().stream())
        .sink(|_, _| futures::sink::drain().sink_map_err(|e| -> BoxDynError { match e {} }))
        .build()
        .map_err(|e| RuntimeError::Worker(e.to_string()))?;

    async fn handle(job: Leased, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
        // Boxed here, where the future's type is concrete: apalis's generic service
        // otherwise trips the compiler's higher-ranked `Send` inference.
        let ctx: Arc<Ctx> = (*ctx).clone();
        let fut: futures::future::BoxFuture<'static, ()> =
            Box::pin(async move { handler::process(&ctx, job).await });
        fut.await;
        Ok(())
    }

    let worker = WorkerBuilder::new(cfg.worker_id.as_str())
        .backend(backend)
        .data(ctx.clone())
        .concurrency(cfg.concurrency)
        .build(handle);
    // run_until stops the worker context on shutdown: apalis then drains in-flight jobs.
    let stop = shutdown.clone();
    let run = worker.run_until(async move {
        stop.cancelled().await;
        Ok::<(), apalis_core::error::WorkerError>(())
    });
    // Boxed so that dropping it below really cancels jobs cut off by the grace period.
    let mut run = Box::pin(run);
    let result = tokio::select! {
        r = &mut run => r.map_err(|e| RuntimeError::Worker(e.to_string())),
        _ = shutdown.cancelled() => {
            info!(grace_ms = grace.as_millis() as u64, "shutdown: no new jobs; finishing in-flight ones");
            match tokio::time::timeout(grace, &mut run).await {
                Ok(r) => r.map_err(|e| RuntimeError::Worker(e.to_string())),
                Err(_) => {
                    warn!("grace period over; returning unfinished jobs to the queue");
                    Ok(())
                }
            }
        }
    };
    drop(run);
    // Outcomes already handed over are recorded before anything is returned, and a
    // fetch still in flight has put what it leased among the held jobs.
    batchers_stop.cancel();
    let _ = tokio::join!(acker_task, fan_outs_task, agents_task);
    let _fetching = fetching.lock().await;
    // Whatever is still held (buffered, or cut off by the grace period) goes back.
    let leftovers = leases.drain();
    if !leftovers.is_empty() {
        let now = chrono::Utc::now();
        let items: Vec<Finish> = leftovers
            .into_iter()
            .map(|(id, token, started)| {
                if !started {
                    return Finish {
                        mode: FinishMode::Release,
                        id,
                        token,
                        run_at_ms: 0,
                        state: StateInfo::new(JobState::Queued),
                        attempt: None,
                    };
                }
                // Cut off mid-attempt: it may have reached its destination, so it counts.
                let attempt = token.attempt().unwrap_or(0);
                let settled = aftercall_core::Settled::interrupted(attempt, now);
                handler::finish(id, token, settled, &cfg.worker_id, None)
            })
            .collect();
        let cut = items.iter().filter(|f| f.mode == FinishMode::Retry).count();
        match queue.finish(&items).await {
            Ok(v) => info!(
                returned = v.iter().filter(|x| **x).count(),
                interrupted = cut,
                "returned unfinished jobs to the queue"
            ),
            Err(e) => {
                warn!(error = %e, "could not return jobs; their leases will expire and they will be retried")
            }
        }
    }
    side.cancel();
    let _ = tokio::join!(renewer, sweeper);
    // The last alerts (a dead letter recorded during the drain), a few seconds at most.
    if tokio::time::timeout(Duration::from_secs(5), alerter)
        .await
        .is_err()
    {
        warn!("operational alerts still unsent at shutdown were dropped");
    }
    let _ = queue.worker_stopped(&cfg.worker_id).await;
    if let Some(otel) = otel {
        // Blocking until the last batch is sent, which needs this runtime: off its thread.
        let _ = tokio::task::spawn_blocking(move || otel.shutdown()).await;
    }
    info!("worker stopped");
    result
}

/// Feeds apalis one leased job at a time from a locally buffered batch.
#[derive(Clone)]
struct Fetcher {
    ctx: Arc<Ctx>,
    buffer: Arc<std::sync::Mutex<VecDeque<Leased>>>,
    shutdown: CancellationToken,
    /// Held while a fetch is in flight. Shutdown takes it before returning what is held,
    /// so a fetch started in the background cannot lease jobs after that.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

type Item = Result<Option<Task<Leased>>, BoxDynError>;

impl Fetcher {
    fn stream(self) -> futures::stream::BoxStream<'static, Item> {
        futures::stream::unfold((self, None), |(f, mut blocking)| async move {
            let next = f.next_job(&mut blocking).await?;
            Some((Ok(Some(Task::new(next))), (f, blocking)))
        })
        .boxed()
    }

    /// The next job, waiting as long as it takes; `None` once shutdown began.
    async fn next_job(&self, blocking: &mut Option<aftercall_queue::Conn>) -> Option<Leased> {
        let cfg = &self.ctx.cfg;
        // 64 per fetch; more for a worker with thousands of slots (slow receivers), so
        // filling them is not one round trip per 64 jobs.
        let batch = cfg
            .concurrency
            .clamp(1, 64)
            .max((cfg.concurrency / 16).min(512));
        // Reset by a fetch that answers; built afresh after it.
        let mut failures: Option<ExponentialBackoff> = None;
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            if let Some(j) = self.pop(batch) {
                return Some(j);
            }
            let guard = self.fetching.lock().await;
            // A background fetch may have filled the buffer while we waited for it.
            if let Some(j) = self.pop(batch) {
                return Some(j);
            }
            let asked = std::time::Instant::now();
            let fetched = self.ctx.queue.fetch(&cfg.worker_id, batch, cfg.lease).await;
            crate::metrics::redis_round_trip("fetch", asked.elapsed());
            match fetched {
                Ok(fetched) if !fetched.jobs.is_empty() => {
                    failures = None;
                    self.take(fetched.jobs);
                    drop(guard);
                }
                Ok(fetched) => {
                    drop(guard);
                    failures = None;
                    let wait = match fetched.next_due_ms {
                        Some(due) => Duration::from_millis(
                            (due - now_ms()).clamp(1, IDLE_POLL.as_millis() as i64) as u64,
                        ),
                        None => IDLE_POLL,
                    };
                    self.wait(blocking, wait).await;
                }
                Err(e) => {
                    drop(guard);
                    let backoff = failures
                        .get_or_insert_with(|| RECONNECT.build())
                        .next()
                        .unwrap_or(RECONNECT_MAX);
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "fetching jobs failed; retrying");
                    *blocking = None;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => return None,
                    }
                    // A fetch that timed out here may still run when a stalled Redis wakes,
                    // leasing jobs to nobody (their attempts then expire). So probe with a
                    // PING, which changes nothing, until Redis answers, before fetching again.
                    while self.ctx.queue.ping().await.is_err() {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = self.shutdown.cancelled() => return None,
                        }
                    }
                }
            }
        }
    }

    /// A buffered job. When the buffer runs down to half a batch, the next batch is
    /// fetched in the background, so jobs keep starting during that round trip instead
    /// of waiting for it (one fetch at a time; an empty queue or an error is left to the
    /// inline fetch, which waits and backs off).
    fn pop(&self, batch: usize) -> Option<Leased> {
        let mut buffer = self.buffer.lock().expect("buffer lock");
        let job = buffer.pop_front()?;
        if buffer.len() <= batch / 2
            && let Ok(guard) = self.fetching.clone().try_lock_owned()
        {
            drop(buffer);
            let f = self.clone();
            tokio::spawn(async move {
                let _guard = guard;
                if f.shutdown.is_cancelled() {
                    return;
                }
                let cfg = &f.ctx.cfg;
                let asked = std::time::Instant::now();
                let fetched = f.ctx.queue.fetch(&cfg.worker_id, batch, cfg.lease).await;
                crate::metrics::redis_round_trip("fetch", asked.elapsed());
                if let Ok(fetched) = fetched {
                    f.take(fetched.jobs);
                }
            });
        }
        Some(job)
    }

    /// Holds (for lease renewal and shutdown) and buffers freshly leased jobs.
    fn take(&self, jobs: Vec<Leased>) {
        if jobs.is_empty() {
            return;
        }
        self.ctx.leases.hold(&jobs);
        debug!(n = jobs.len(), "fetched");
        self.buffer.lock().expect("buffer lock").extend(jobs);
    }

    /// Blocks on the wake-up list so a new job starts within milliseconds.
    async fn wait(&self, blocking: &mut Option<aftercall_queue::Conn>, wait: Duration) {
        if blocking.is_none() {
            match self.ctx.queue.blocking_connection().await {
                Ok(c) => *blocking = Some(c),
                Err(e) => {
                    warn!(error = %e, "no connection for wake-ups; polling");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                    return;
                }
            }
        }
        let conn = blocking.as_mut().expect("just set");
        tokio::select! {
            r = self.ctx.queue.wait_for_work(conn, wait) => {
                if r.is_err() {
                    *blocking = None;
                }
            }
            _ = self.shutdown.cancelled() => {
                // The blocked command may still be in flight on this connection.
                *blocking = None;
            }
        }
    }
}

/// Renews every held lease at a third of the lease time, in one call.
async fn renew_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let every = ctx.cfg.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let held = ctx.leases.tokens();
        match ctx.queue.renew(ctx.cfg.lease, &held).await {
            Ok(lost) => {
                for id in lost {
                    // Not lost if this worker recorded its outcome (or is recording it)
                    // while the renewal was on its way: that ends the lease too.
                    if !ctx.leases.lose(&id) {
                        continue;
                    }
                    warn!(job_id = %id, "lease lost: the job was reaped and belongs to another worker now");
                    crate::metrics::lease_lost();
                }
            }
            Err(e) => warn!(error = %e, "renewing leases failed"),
        }
    }
}

/// Writes the worker's heartbeat every few seconds, and applies the retention period
/// and the payload retention every minute. (Queue depths are sampled when `/metrics` is scraped.)
async fn sweep_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = ctx.queue.heartbeat(&ctx.cfg.worker_id).await {
            debug!(error = %e, "heartbeat failed");
        }
        ticks += 1;
        if !ticks.is_multiple_of(12) {
            continue;
        }
        match ctx.queue.sweep(ctx.cfg.retention, 1000).await {
            Ok(0) => {}
            Ok(n) => debug!(removed = n, "retention sweep"),
            Err(e) => warn!(error = %e, "retention sweep failed"),
        }
        match ctx
            .queue
            .expire_payloads(ctx.cfg.payload_retention, 1000)
            .await
        {
            Ok(0) => {}
            Ok(n) => debug!(expired = n, "payload retention"),
            Err(e) => warn!(error = %e, "payload retention failed"),
        }
        match ctx.queue.expire_dead(ctx.cfg.dead_retention, 1000).await {
            Ok(0) => {}
            Ok(n) => {
                crate::metrics::dead_expired(n);
                info!(
                    jobs = n,
                    retention_s = ctx.cfg.dead_retention.as_secs(),
                    "dead letters kept past AFTERCALL_DEAD_RETENTION: their payload was dropped (audited)"
                );
            }
            Err(e) => warn!(error = %e, "dead-letter retention failed"),
        }
    }
}
