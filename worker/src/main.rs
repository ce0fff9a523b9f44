//! `aftercall-worker`: runs the worker pool; `aftercall-worker demo` runs the whole
//! product on an embedded default (its own Redis, a local receiver, the seed's call).

mod demo;

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
    init_tracing(&cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
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
                aftercall_runtime::run(cfg, shutdown)
                    .await
                    .context("worker failed")
            }
        }
    })
}

/// Flags are applied to the parsed config directly; nothing to set in the environment.
fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).with_current_span(true).init();
    } else {
        b.init();
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
