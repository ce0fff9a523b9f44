//! `aftercall-worker`: runs the worker pool; `aftercall-worker demo` runs the whole
//! product on an embedded default (its own Redis, a local receiver, the seed's call).

/// mimalloc rather than glibc's malloc: with thousands of jobs in flight, glibc spent a
/// quarter of the worker's CPU in its bins (`_int_malloc`, `unlink_chunk`,
/// `malloc_consolidate`). See BENCHMARKS.md, item 24.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "demo")]
mod demo;
mod log;

/// mimalloc returns freed pages to the system only when it is next called after its
/// purge delay, so a process that went quiet after a burst kept them: 2,000 stalled
/// API clients left an idle worker at 68 MB RSS after they closed, against 17 MB before
/// (`cargo xtask bench --only stalled`). Collecting every few seconds gives them back.
async fn give_back_memory_every_few_seconds() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        collect_freed_memory();
    }
}

/// The one `unsafe` block in aftercall (see `unsafe_code` in Cargo.toml).
#[allow(unsafe_code)]
fn collect_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called at any time, from any
    // thread; with `force = false` it only releases what the heap no longer uses.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Turns call-ended events into follow-up actions, durably.
///
/// Every setting is an AFTERCALL_* environment variable (see README, Configuration);
/// the flags below override the most common ones.
#[derive(Parser)]
#[command(name = "aftercall-worker", version)]
struct Cli {
    /// Redis URL (AFTERCALL_REDIS_URL).
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// Queue name: the hash tag of every key (AFTERCALL_QUEUE_PREFIX).
    #[arg(long, global = true)]
    prefix: Option<String>,
    /// Jobs run at once (AFTERCALL_CONCURRENCY).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Serve the HTTP API on this address, e.g. 0.0.0.0:8080 (AFTERCALL_API_ADDR).
    #[arg(long, env = "AFTERCALL_API_ADDR")]
    api_addr: Option<String>,
    /// What this process does: `both` (worker and, with an address, API), `worker`, or `api` (AFTERCALL_ROLE).
    #[arg(long, env = "AFTERCALL_ROLE", default_value = "both")]
    role: String,
    /// Runtime threads (AFTERCALL_THREADS): 1 runs everything on one thread, the fastest
    /// per job (scale out with more processes); 0 is one per core. Default: 1, or 0 for
    /// `--role api`.
    #[arg(long, env = "AFTERCALL_THREADS")]
    threads: Option<usize>,
    /// Log format: text or json (AFTERCALL_LOG_FORMAT).
    #[arg(
        long,
        env = "AFTERCALL_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    #[cfg(feature = "demo")]
    /// Run everything locally: Redis (installed if missing, data in .aftercall/),
    /// a worker, a webhook receiver; push the seed's example call and show the outcome.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    log::init(&cli.log_format);
    // Dropped after the runtime: what is still waiting is written before main returns
    // (and before the returned error is printed).
    let _flush = log::FlushOnDrop;
    // One thread by default: jobs, their HTTP connections and Redis then never wake one
    // another across threads, which cost about a quarter of the worker's CPU per job in the
    // pipeline benchmark (BENCHMARKS.md). An API-only replica uses every core.
    let threads = cli.threads.unwrap_or(if cli.role == "api" { 0 } else { 1 });
    let rt = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    // Log lines are written out when a thread goes idle (see log.rs).
    .on_thread_park(log::flush)
    .enable_all()
    .build()?;
    rt.block_on(async move {
        tokio::spawn(log::flush_every_tick());
        tokio::spawn(give_back_memory_every_few_seconds());
        match cli.command {
            #[cfg(feature = "demo")]
            Some(Command::Demo(args)) => demo::run(args).await,
            None => {
                let mut cfg =
                    aftercall_runtime::WorkerConfig::from_env().context("invalid configuration")?;
                if let Some(u) = cli.redis_url {
                    cfg.queue.url = u;
                }
                if let Some(p) = cli.prefix {
                    cfg.queue.prefix = p;
                }
                if let Some(c) = cli.concurrency {
                    cfg.concurrency = c.max(1);
                }
                let shutdown = CancellationToken::new();
                tokio::spawn(signal(shutdown.clone()));
                serve(cfg, cli.api_addr, &cli.role, shutdown).await
            }
        }
    })
}

/// Flags are applied to the parsed config directly; nothing to set in the environment.
/// Runs the worker pool, the HTTP API, or both, on one Redis connection. The API (with
/// `/healthz`) is served from the start; the rest of it, and the worker, once Redis
/// answers.
async fn serve(
    cfg: aftercall_runtime::WorkerConfig,
    api_addr: Option<String>,
    role: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(role, "both" | "worker" | "api"),
        "AFTERCALL_ROLE: `{role}` is not both, worker or api"
    );
    anyhow::ensure!(
        role != "api" || api_addr.is_some(),
        "AFTERCALL_ROLE=api needs AFTERCALL_API_ADDR"
    );
    // Before anything counts (the API's counters start at zero when its state is made).
    aftercall_runtime::metrics::install();
    let api = match api_addr.filter(|_| role != "worker") {
        Some(addr) => {
            let get = |k: &str| std::env::var(k).ok();
            let mut api_cfg = aftercall_api::ApiConfig::from_settings(
                &aftercall_core::settings::Settings::new(&get),
            )
            .context("invalid API configuration")?;
            fit_connections(&mut api_cfg.server);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("AFTERCALL_API_ADDR: cannot listen on {addr}"))?;
            let (routes, rx) =
                tokio::sync::watch::channel(aftercall_api::starting_router("waiting for Redis"));
            let stop = shutdown.clone();
            let server = tokio::spawn(aftercall_api::serve_listening(
                listener,
                api_cfg.server.clone(),
                rx,
                async move { stop.cancelled().await },
            ));
            Some((server, routes, api_cfg))
        }
        None => None,
    };
    let queue = match wait_for_redis(cfg.queue.clone(), &shutdown).await? {
        Some(q) => q,
        None => return Ok(()),
    };
    let api = api.map(|(server, routes, api_cfg)| {
        let state = aftercall_api::ApiState::new(queue.clone(), api_cfg)
            .with_outbox(cfg.actions.outbox_dir.clone());
        // The ops dashboard under /ui/ (docs/dashboard.md), and Prometheus metrics,
        // beside the API.
        let extra = ops_routes(&state, &queue);
        drop(routes.send_replace(aftercall_api::full_router(state, extra)));
        server
    });
    let work = async {
        if role == "api" {
            shutdown.cancelled().await;
            Ok(())
        } else {
            aftercall_runtime::run_with_queue(cfg, queue, shutdown.clone())
                .await
                .context("worker failed")
        }
    };
    let Some(mut api) = api else {
        return work.await;
    };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => {
            shutdown.cancel();
            // In-flight requests get a bounded time; a hung client cannot hold the exit.
            match tokio::time::timeout(std::time::Duration::from_secs(10), api).await {
                Ok(a) => a?.context("API server failed")?,
                Err(_) => tracing::warn!("API did not stop within 10 s; exiting anyway"),
            }
            r
        }
        a = &mut api => {
            // After SIGTERM the API usually stops before the worker has drained: that
            // is the shutdown, not a failure.
            let on_signal = shutdown.is_cancelled();
            // The API ended on its own: stop the worker cleanly, then report why.
            shutdown.cancel();
            let r = work.await;
            a?.context("API server failed")?;
            if on_signal {
                r
            } else {
                r.and(Err(anyhow::anyhow!("API server stopped unexpectedly")))
            }
        }
    }
}

/// Connects to Redis, retrying with backoff while it cannot be reached (in a rollout
/// Redis often comes up after the workers): the first attempts are logged each, then
/// one line a minute. Anything but an unreachable Redis (an evicting one, a bad URL)
/// ends the wait at once. `None` when shut down while waiting.
async fn wait_for_redis(
    cfg: aftercall_queue::QueueConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<aftercall_queue::Queue>> {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_log: Option<std::time::Instant> = None;
    for attempt in 1u32.. {
        match aftercall_queue::Queue::connect(cfg.clone()).await {
            Ok(q) => {
                if attempt > 1 {
                    tracing::info!(attempt, "Redis answers; starting");
                }
                return Ok(Some(q));
            }
            Err(e @ aftercall_queue::QueueError::Unreachable { .. }) => {
                let quiet =
                    last_log.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60));
                if attempt <= 3 || !quiet {
                    tracing::warn!(attempt, error = %e, "waiting for Redis");
                    last_log = Some(std::time::Instant::now());
                }
            }
            Err(e) => return Err(e.into()),
        }
        let delay = delays.next().unwrap_or(std::time::Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
    }
    unreachable!("the attempts never run out")
}

/// Raises the open-file limit to its hard limit (as Go's runtime does), then keeps the
/// API's connection cap to half of it, so that clients can never take the descriptors
/// Redis and outbound deliveries need.
fn fit_connections(limits: &mut aftercall_api::ServerLimits) {
    let Ok(fds) = rlimit::increase_nofile_limit(u64::MAX) else {
        return;
    };
    let most = usize::try_from(fds / 2).unwrap_or(usize::MAX).max(1);
    if limits.max_connections > most {
        tracing::warn!(
            configured = limits.max_connections,
            open_file_limit = fds,
            "AFTERCALL_API_MAX_CONNECTIONS lowered to {most}, half the open-file limit"
        );
        limits.max_connections = most;
    }
}

/// SIGTERM or Ctrl-C cancels the token once.
pub async fn signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown signal received");
    token.cancel();
}

/// What a worker serves beside the API: the ops dashboard under /ui/
/// (docs/dashboard.md) and Prometheus metrics, sampled from the queue at each scrape.
fn ops_routes(state: &aftercall_api::ApiState, queue: &aftercall_queue::Queue) -> axum::Router {
    // Installed once per process; a second call returns the same handle.
    let metrics = aftercall_runtime::metrics::install();
    let sampled = queue.clone();
    aftercall_dashboard::router(state.clone()).route(
        "/metrics",
        axum::routing::get(move || {
            let (m, q) = (metrics.clone(), sampled.clone());
            async move { aftercall_runtime::metrics::render(&m, &q).await }
        }),
    )
}
