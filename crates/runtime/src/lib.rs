//! The worker runtime: `run(config, shutdown)` starts the worker pool (apalis over our
//! Redis backend), lease renewal and retention. Binaries and tests start the whole
//! system through this one function.

mod acker;
mod alerts;
pub mod breakers;
mod completion;
mod config;
mod handler;
mod leases;
pub mod limits;
pub mod metrics;
mod otel;
mod pool;
mod rules;

use aftercall_queue::{Queue, QueueError};
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, ContactCaps, WorkerConfig, new_worker_id};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Actions(#[from] aftercall_actions::ActionsError),
    #[error("worker runtime failed: {0}")]
    Worker(String),
}

/// Runs the worker pool until `shutdown` is cancelled, then drains within the grace
/// period and returns unstarted jobs to the queue.
pub async fn run(cfg: WorkerConfig, shutdown: CancellationToken) -> Result<(), RuntimeError> {
    let queue = Queue::connect(cfg.queue.clone()).await?;
    run_with_queue(cfg, queue, shutdown).await
}

/// As [`run`], with an already connected queue.
pub async fn run_with_queue(
    cfg: WorkerConfig,
    queue: Queue,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    // Keep as many idle connections per host as jobs may run at once: with fewer, a
    // busy destination gets a new TCP connection (and a TIME_WAIT socket) per request.
    let mut actions = cfg.actions.clone();
    actions.http.pool_per_host = actions.http.pool_per_host.max(cfg.concurrency);
    let executors = aftercall_actions::Executors::new(&actions)?;
    tracing::info!(worker = %cfg.worker_id, concurrency = cfg.concurrency, queue = %cfg.queue.prefix, "worker starting");
    pool::run(cfg, queue, executors, shutdown).await
}
