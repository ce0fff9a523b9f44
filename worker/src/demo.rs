//! The embedded default: a supervised local Redis, the worker, a webhook receiver, and
//! the seed's example call pushed through all of it. With `--keep-running`, also the
//! HTTP API and the dashboard on 127.0.0.1 behind a token made for this run (reached
//! through a one-time login link, the token shown nowhere), and a few more calls that
//! end in every outcome, so each dashboard page has something to show.

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
    /// Keep running after the call is done (Ctrl-C to stop), serving the API and the
    /// dashboard, with sample calls that end in every outcome.
    #[arg(long)]
    keep_running: bool,
    /// Where `--keep-running` serves the API and the dashboard (any free port if this
    /// one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_addr: String,
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
    // Retries a few seconds apart, so the sample that is retried is delivered while you
    // watch (the default first delay is a minute).
    cfg.queue.retry.base = Duration::from_secs(2);
    cfg.queue.retry.cap = Duration::from_secs(30);
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
    let extra = if args.keep_running {
        Some(Samples::start(&queue, &receiver).await?)
    } else {
        None
    };
    // The worker runs beside the demo's steps on this task (apalis's worker future is
    // not `Send`, so it is joined rather than spawned).
    let worker = aftercall_runtime::run_with_queue(cfg.clone(), queue.clone(), shutdown.clone());
    let redis_url = redis.url();
    let receivers = [&receiver, &tasks];
    let steps = steps(
        args.call_id,
        extra.map(|samples| (samples, args.api_addr)),
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
    keep_running: Option<(Samples, String)>,
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
    let Some((samples, api_addr)) = keep_running else {
        println!(
            "\n▸ ./dev demo --keep-running also serves the dashboard, with calls that end in every outcome"
        );
        return Ok(());
    };
    samples.push_and_wait(queue, max_event_bytes).await?;
    let api = serve_api(queue, &api_addr, shutdown.clone()).await?;
    println!(
        "\n▸ the API and the dashboard are on {base} (token made for this run, shown nowhere)",
        base = api.base
    );
    println!(
        "▸ log in (one-time link, valid {} minutes): {}{}",
        aftercall_dashboard::LOGIN_LINK_TTL.as_secs() / 60,
        api.base,
        api.login_path
    );
    samples.print_next_steps(&api.base);
    println!("\n▸ running; Redis at {redis_url}; Ctrl-C to stop");
    crate::signal(shutdown.clone()).await;
    match tokio::time::timeout(Duration::from_secs(10), api.server).await {
        Ok(served) => served?.context("the API server failed")?,
        Err(_) => tracing::warn!("the API did not stop within 10 s; exiting anyway"),
    }
    Ok(())
}

/// The API and the dashboard, served for this run.
struct Api {
    base: String,
    login_path: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves the API, `/metrics` and the dashboard on `addr` (any free port on 127.0.0.1
/// if it is taken) behind an admin token made here, and returns a one-time login link.
/// The token is kept only in this process's configuration: never printed, never logged.
async fn serve_api(queue: &Queue, addr: &str, shutdown: CancellationToken) -> anyhow::Result<Api> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            println!("▸ {addr} is taken; serving the dashboard on a free port instead");
            tokio::net::TcpListener::bind("127.0.0.1:0").await?
        }
        Err(e) => return Err(e).with_context(|| format!("--api-addr: cannot listen on {addr}")),
    };
    let base = format!("http://{}", listener.local_addr()?);
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cfg = aftercall_api::ApiConfig {
        tokens: vec![aftercall_api::Token {
            name: "demo-admin".into(),
            secret: token.clone(),
            scope: aftercall_api::Scope::Admin,
        }],
        ..Default::default()
    };
    aftercall_runtime::metrics::install();
    let state = aftercall_api::ApiState::new(queue.clone(), cfg);
    let login_path = aftercall_dashboard::login_link(&state, &token)
        .await
        .context("making the one-time login link")?;
    drop(token);
    let extra = crate::ops_routes(&state, queue);
    let server = tokio::spawn(aftercall_api::serve_with(
        listener,
        state,
        extra,
        async move { shutdown.cancelled().await },
    ));
    Ok(Api {
        base,
        login_path,
        server,
    })
}

/// The sample calls of `--keep-running`, one per outcome, each with its own agent and
/// (where a webhook is involved) its own receiver. Their call ids are new on every run.
struct Samples {
    suffix: String,
    /// Kept for as long as the demo runs: the flaky receiver answers 503 once, then 200
    /// (retried, then delivered); the refusing one 422 once (a permanent refusal: dead
    /// letter at once), then 200, so replaying the dead letter delivers it.
    _receivers: [Receiver; 2],
}

/// (agent, what the call shows, call id suffix)
const SAMPLE_CALLS: [(&str, &str, &str); 4] = [
    ("agent_abc123", "delivered", "ok"),
    ("agent_flaky_crm", "retried, then delivered", "retry"),
    ("agent_paused", "skipped, with the reason", "skipped"),
    (
        "agent_strict_crm",
        "dead-lettered: the receiver refused it",
        "refused",
    ),
];

impl Samples {
    async fn start(queue: &Queue, seed_receiver: &Receiver) -> anyhow::Result<Samples> {
        let flaky = Receiver::start().await?;
        flaky.script([aftercall_testkit::Reply::status(503).body("try again later")]);
        let refusing = Receiver::start().await?;
        refusing.script([aftercall_testkit::Reply::status(422).body("unknown customer")]);
        let webhook = |name: &str, url: String, enabled: bool| {
            serde_json::json!({
                "name": name,
                "voice_tools": {"post_call_follow_up": {"enabled": enabled, "actions": [
                    {"type": "webhook", "url": format!("{url}/api/call-completed")}
                ]}}
            })
        };
        for (id, agent) in [
            (
                "agent_flaky_crm",
                webhook("Flaky CRM", flaky.url.clone(), true),
            ),
            (
                "agent_strict_crm",
                webhook("Strict CRM", refusing.url.clone(), true),
            ),
            (
                "agent_paused",
                webhook("Paused agent", seed_receiver.url.clone(), false),
            ),
        ] {
            queue
                .set_agent(id, &AgentConfig::from_value(agent)?)
                .await?;
        }
        let suffix: String = rand::random::<[u8; 3]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Samples {
            suffix,
            _receivers: [flaky, refusing],
        })
    }

    fn call_id(&self, kind: &str) -> String {
        format!("demo_{}_{kind}", self.suffix)
    }

    async fn push_and_wait(&self, queue: &Queue, max_event_bytes: usize) -> anyhow::Result<()> {
        println!("\n▸ sample calls, one per outcome:");
        let mut events = Vec::new();
        for (agent, _, kind) in SAMPLE_CALLS {
            let mut event = CallEvent::parse(SEED_CALL.as_bytes(), max_event_bytes)?;
            event.call_id = self.call_id(kind);
            event.agent_id = agent.to_string();
            events.push(event);
        }
        queue.enqueue(events).await?;
        for (agent, shows, kind) in SAMPLE_CALLS {
            let call_id = self.call_id(kind);
            let s = wait_until_settled(queue, &call_id, Duration::from_secs(60)).await?;
            let outcome = if s.actions.is_empty() {
                format!(
                    "{} ({})",
                    s.call_ended.state.state,
                    s.call_ended.state.reason.as_deref().unwrap_or("")
                )
            } else {
                s.actions
                    .iter()
                    .map(|a| {
                        format!(
                            "{} {} after {} attempt(s)",
                            a.kind, a.state.state, a.attempts
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!("  {call_id:<22} {agent:<17} {shows}: {outcome}");
        }
        Ok(())
    }

    fn print_next_steps(&self, base: &str) {
        println!("▸ try next:");
        println!(
            "  - replay the dead letter: {base}/ui/dead-letters, open {}'s webhook, Replay (the receiver accepts it now)",
            self.call_id("refused")
        );
        println!("  - edit the agent and watch the preview: {base}/ui/agents/agent_abc123");
        println!(
            "  - see a retry, then the delivery: {base}/ui/calls?call_id={}",
            self.call_id("retry")
        );
        println!("  - metrics: curl {base}/metrics");
    }
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
