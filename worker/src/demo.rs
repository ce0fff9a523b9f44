//! The embedded default: a supervised local Redis, the worker, a webhook receiver, and
//! the seed's example call pushed through all of it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aftercall_core::{AgentConfig, CallEvent};
use aftercall_queue::{CallStatus, Queue};
use aftercall_testkit::{Receiver, RedisOptions, RedisServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where Redis keeps its data and the outbox its files.
    #[arg(long, default_value = ".aftercall")]
    data_dir: PathBuf,
    /// Call id of the pushed call; the same id twice shows idempotency.
    #[arg(long)]
    call_id: Option<String>,
    /// Keep running after the call is done (Ctrl-C to stop).
    #[arg(long)]
    keep_running: bool,
}

/// The seed's API body, byte for byte (the webhook URL is pointed at the local receiver).
pub const SEED_AGENT_BODY: &str = include_str!("../../tests/fixtures/seed-agent.json");
/// The seed's example call, as a producer would push it.
pub const SEED_CALL: &str = include_str!("../../tests/fixtures/seed-call.json");

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let data = std::path::absolute(&args.data_dir)?;
    println!(
        "▸ starting Redis (data in {})",
        data.join("redis").display()
    );
    let mut redis = RedisServer::start(&data.join("redis"), RedisOptions::default()).await?;
    let receiver = Receiver::start().await?;
    println!("▸ webhook receiver listening on {}", receiver.url);
    // A local stand-in for GitHub's Issues API, so the create-task action runs too.
    let tasks = Receiver::start().await?;
    tasks.set_default(
        aftercall_testkit::Reply::status(201)
            .body(r#"{"number":1,"html_url":"http://github.local/acme/support/issues/1"}"#),
    );
    println!(
        "▸ stand-in task provider (GitHub Issues API) on {}",
        tasks.url
    );

    let mut cfg = aftercall_runtime::WorkerConfig::from_env().context("invalid configuration")?;
    cfg.queue.url = redis.url();
    cfg.actions.http.allow = vec!["127.0.0.0/8".parse().map_err(anyhow::Error::msg)?];
    cfg.actions.outbox_dir = data.join("outbox");
    cfg.actions.task.github_url = tasks.url.clone();
    cfg.actions.task.github_token = Some("demo-token".into());
    let queue = Queue::connect(cfg.queue.clone()).await?;

    let body = SEED_AGENT_BODY.replace("https://your-crm.com", &receiver.url);
    let mut agent: serde_json::Value = serde_json::from_str(&body)?;
    agent["name"] = "Acme Support".into();
    // The seed's three actions, plus a follow-up task for the team.
    agent["voice_tools"]["post_call_follow_up"]["actions"]
        .as_array_mut()
        .expect("seed actions")
        .push(serde_json::json!({
            "type": "task", "provider": "github", "project": "acme/support",
            "title": "Follow up with {{caller_name}} ({{call_id}})", "labels": ["follow-up"]
        }));
    let agent = AgentConfig::from_value(agent)?;
    queue.set_agent("agent_abc123", &agent).await?;
    println!(
        "▸ agent agent_abc123 configured with the seed's three actions (sms, webhook, email) and a task"
    );

    let shutdown = CancellationToken::new();
    // The worker runs beside the demo's steps on this task (apalis's worker future is
    // not `Send`, so it is joined rather than spawned).
    let worker = aftercall_runtime::run_with_queue(cfg.clone(), queue.clone(), shutdown.clone());
    let redis_url = redis.url();
    let receivers = [&receiver, &tasks];
    let steps = steps(
        args.call_id,
        args.keep_running,
        &queue,
        &receivers,
        &data,
        &redis_url,
        cfg.queue.max_event_bytes,
        shutdown.clone(),
    );
    let (w, s) = tokio::join!(worker, steps);
    redis.kill().await;
    w?;
    s
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    call_id: Option<String>,
    keep_running: bool,
    queue: &Queue,
    receivers: &[&Receiver],
    data: &std::path::Path,
    redis_url: &str,
    max_event_bytes: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _guard = shutdown.clone().drop_guard();

    let mut event = CallEvent::parse(SEED_CALL.as_bytes(), max_event_bytes)?;
    if let Some(id) = call_id {
        event.call_id = id;
    }
    let call_id = event.call_id.clone();
    let enq = queue.enqueue(vec![event]).await?.remove(0);
    if enq.duplicate {
        println!(
            "▸ call {call_id} was pushed before (duplicate): nothing new enqueued; showing its status"
        );
    } else {
        println!("▸ pushed call {call_id} as job {}", enq.job_id);
    }

    let status = wait_until_settled(queue, &call_id, Duration::from_secs(30)).await?;
    print_status(&status);
    for (receiver, name) in receivers
        .iter()
        .zip(["webhook receiver", "task provider stand-in"])
    {
        for r in receiver.received() {
            println!(
                "\n▸ the {name} got {} {} (webhook-id {}):",
                r.method,
                r.path,
                r.header("webhook-id").unwrap_or("-")
            );
            println!("{}", serde_json::to_string_pretty(&r.json())?);
        }
    }
    let outbox = data.join("outbox");
    if outbox.exists() {
        println!("\n▸ outbox ({}):", outbox.display());
        for entry in walk(&outbox) {
            println!("  {}", entry.display());
        }
    }
    if keep_running {
        println!("\n▸ running; Redis at {redis_url}; Ctrl-C to stop");
        crate::signal(shutdown.clone()).await;
    }
    Ok(())
}

async fn wait_until_settled(
    queue: &Queue,
    call_id: &str,
    timeout: Duration,
) -> anyhow::Result<CallStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = queue.call_status(call_id).await? {
            let settled = |st: &str| matches!(st, "delivered" | "skipped" | "dead" | "purged");
            let parent_done = matches!(
                s.call_ended.state.state.as_str(),
                "fanned_out" | "skipped" | "dead"
            );
            if parent_done && s.actions.iter().all(|a| settled(a.state.state.as_str())) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Ok(s);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "call {call_id} not found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_status(s: &CallStatus) {
    println!("\n▸ what happened to call {}:", s.call_id);
    for a in &s.actions {
        let detail = a.state.reason.as_deref().or(a.last_error()).unwrap_or("");
        println!(
            "  action {} {:<8} {:<10} after {} attempt(s)  {}",
            a.action_index.unwrap_or(0),
            a.kind,
            a.state.state,
            a.attempts,
            detail
        );
    }
    if s.actions.is_empty() {
        println!(
            "  {} {}",
            s.call_ended.state.state,
            s.call_ended.state.reason.as_deref().unwrap_or("")
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
