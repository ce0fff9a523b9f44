//! `aftercall-worker`: runs the worker pool; `aftercall-worker demo` runs the whole
//! product on an embedded default (its own Redis, a local receiver, the seed's call).

/// mimalloc rather than glibc's malloc: with thousands of jobs in flight, glibc spent a
/// quarter of the worker's CPU in its bins (`_int_malloc`, `unlink_chunk`,
/// `malloc_consolidate`). See BENCHMARKS.md, item 24.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod log;

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
        match cli.command {
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
/// Runs the worker pool, the HTTP API, or both, on one Redis connection.
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
    let queue = aftercall_queue::Queue::connect(cfg.queue.clone()).await?;
    let metrics = aftercall_runtime::metrics::install();
    let api = match api_addr.filter(|_| role != "worker") {
        Some(addr) => {
            let get = |k: &str| std::env::var(k).ok();
            let api_cfg = aftercall_api::ApiConfig::from_settings(
                &aftercall_core::settings::Settings::new(&get),
            )
            .context("invalid API configuration")?;
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("AFTERCALL_API_ADDR: cannot listen on {addr}"))?;
            let stop = shutdown.clone();
            let state = aftercall_api::ApiState::new(queue.clone(), api_cfg);
            // The ops dashboard under /ui/ (docs/dashboard.md), and Prometheus metrics,
            // beside the API.
            let extra = aftercall_dashboard::router(state.clone()).route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { m.render() }
                }),
            );
            Some(tokio::spawn(aftercall_api::serve_with(
                listener,
                state,
                extra,
                async move { stop.cancelled().await },
            )))
        }
        None => None,
    };
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
