//! `aftercall`: push call-ended events, configure agents, and inspect what happened:
//! per-call status, dead letters (list, show, replay, purge), destination health and
//! pauses, and queue stats. Also prints
//! its own shell completions and manual page.

mod input;
mod show;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use aftercall_core::AgentConfig;
use aftercall_core::settings::Settings;
use aftercall_queue::{BulkFilter, DlqFilter, Queue, QueueConfig, QueueError, present};
use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aftercall",
    version,
    about = "Push call-ended events and operate the aftercall queue"
)]
struct Cli {
    /// Redis URL (default: AFTERCALL_REDIS_URL, else redis://127.0.0.1:6379).
    #[arg(long, global = true)]
    redis_url: Option<String>,
    /// Queue name (default: AFTERCALL_QUEUE_PREFIX, else aftercall).
    #[arg(long, global = true)]
    prefix: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enqueue call-ended events: one JSON object, a JSON array, or JSON Lines.
    Enqueue {
        /// A file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Enqueue the valid events and report the invalid ones, instead of refusing all.
        #[arg(long)]
        skip_invalid: bool,
        /// Print one JSON result per event.
        #[arg(long)]
        json: bool,
    },
    /// Agent configuration (the `voice_tools.post_call_follow_up` body).
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// What happened to a call.
    #[command(subcommand)]
    Calls(CallsCmd),
    /// Dead letters: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Encryption at rest (AFTERCALL_ENCRYPTION_KEYS).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Opted-out contacts: no SMS or e-mail goes to them from any agent.
    #[command(subcommand)]
    OptOuts(OptOutsCmd),
    /// Destination health and pauses: list, pause, resume.
    #[command(subcommand)]
    Destinations(DestinationsCmd),
    /// Queue depths and recent throughput.
    Stats {
        #[arg(long)]
        json: bool,
        /// Refresh every second with live rates.
        #[arg(long)]
        watch: bool,
    },
    /// Print a shell completion script, e.g. `aftercall completions bash >
    /// /etc/bash_completion.d/aftercall`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `aftercall man | man -l -`; with --dir, write
    /// it and one page per subcommand there.
    Man {
        /// Write aftercall.1, aftercall-dlq.1, aftercall-dlq-replay.1, … into this folder.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// Store an agent's config (validated first; nothing stored if invalid).
    Set {
        agent_id: String,
        #[arg(long)]
        file: String,
    },
    /// Print an agent's config (secrets redacted).
    Get { agent_id: String },
    /// List agent ids.
    List,
    /// Remove an agent's config.
    Delete { agent_id: String },
    /// What a candidate config would do on the agent's most recent stored calls: each
    /// action firing or skipped and why, and what it would send. Nothing is sent or
    /// stored.
    Preview {
        agent_id: String,
        /// The candidate config (the same body as `agents set`).
        #[arg(long)]
        file: String,
        /// How many recent calls.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OptOutsCmd {
    /// Every opt-out, with when and how it was recorded.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Record an opt-out.
    Add {
        /// `sms` or `email`.
        channel: String,
        /// An E.164 number or an e-mail address.
        address: String,
    },
    /// Remove an opt-out (the contact opted in again).
    Remove { channel: String, address: String },
}

#[derive(Subcommand)]
enum CallsCmd {
    /// Each action's state and attempts.
    Show {
        call_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Erases the call's personal data (event, analysis, attempt errors) and cancels its
    /// work in flight; its ids, states and outcomes stay, with an audit entry.
    Erase { call_id: String },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Seal every job's data and agent config with the first key of
    /// AFTERCALL_ENCRYPTION_KEYS (older keys and plaintext are rewritten, live traffic
    /// is safe); afterwards the older keys can be removed.
    Rotate,
}

#[derive(Args, Clone, Default)]
struct FilterArgs {
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only this action type (email, sms, webhook, task, call_ended).
    #[arg(long)]
    action: Option<String>,
    /// Dead since: RFC 3339 time or an age such as 2h.
    #[arg(long)]
    since: Option<String>,
    /// Dead until: RFC 3339 time or an age such as 10m.
    #[arg(long)]
    until: Option<String>,
    /// Error class (http_4xx, http_5xx, http_429, timeout, connection, blocked,
    /// lease_expired, undecodable) or text in the last error.
    #[arg(long)]
    error: Option<String>,
}

impl Selection {
    /// The filter to apply when no ids were named; refuses an empty one (blank flags
    /// count as absent) without `--all`: the queue's rule.
    fn filter(&self) -> anyhow::Result<BulkFilter> {
        self.filter
            .to_filter()?
            .bulk(self.all)
            .map_err(|e| match e {
                QueueError::EmptyFilter => anyhow::anyhow!("name job ids, a filter, or --all"),
                e => e.into(),
            })
    }
}

impl FilterArgs {
    /// The filter; a blank flag (`--error ""`) is absent, as everywhere.
    fn to_filter(&self) -> anyhow::Result<DlqFilter> {
        let time = |v: &Option<String>| present(v.clone()).as_deref().map(parse_time).transpose();
        Ok(DlqFilter {
            agent: self.agent.clone(),
            action: self.action.clone(),
            since_ms: time(&self.since).context("--since")?,
            until_ms: time(&self.until).context("--until")?,
            error: self.error.clone(),
        }
        .normalized())
    }
}

/// Which dead letters an operation applies to.
#[derive(Args)]
struct Selection {
    /// These jobs.
    job_ids: Vec<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Say how many dead letters would be touched, and touch none.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(clap::Args)]
struct ReplaySelection {
    #[command(flatten)]
    sel: Selection,
    /// Also replay dead letters past their action's `expires_after` (docs/rules.md);
    /// without it they stay dead and are named.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum DlqCmd {
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue from a previous page's cursor.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with every attempt.
    Show {
        job_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-run dead letters with a fresh attempt budget.
    Replay(ReplaySelection),
    /// Delete dead letters for good.
    Purge(Selection),
}

#[derive(Subcommand)]
enum DestinationsCmd {
    /// Each destination's state (closed, open, half_open, paused), failure streak, last
    /// error and held jobs, then the pauses in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Hold the work of a destination, an agent or an action type: it waits, its
    /// attempts are not spent, nothing fails (until `AFTERCALL_MAX_HOLD`).
    Pause(ScopeArgs),
    /// Let paused work go again (within a few seconds).
    Resume(ScopeArgs),
}

/// One of a destination (`crm.example.com`, `smtp`, `sms`, `task:github`), an agent or
/// an action type.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    #[arg(long)]
    destination: Option<String>,
    #[arg(long)]
    agent: Option<String>,
    /// webhook, email, sms or task (and any later type).
    #[arg(long)]
    action: Option<String>,
}

impl ScopeArgs {
    fn scope(self) -> aftercall_queue::PauseScope {
        use aftercall_queue::PauseScope;
        match (self.destination, self.agent, self.action) {
            (Some(d), _, _) => PauseScope::Destination(d),
            (_, Some(a), _) => PauseScope::Agent(a),
            (_, _, Some(t)) => PauseScope::Action(t),
            _ => unreachable!("clap requires one"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes.
            // One line: the error and those of its causes that add something.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !line.contains(&cause) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&cause);
                }
            }
            eprintln!("aftercall: {line}");
            ExitCode::from(1)
        }
    }
}

fn queue_config(cli: &Cli) -> anyhow::Result<QueueConfig> {
    let get = |k: &str| std::env::var(k).ok();
    let mut cfg = QueueConfig::from_settings(&Settings::new(&get))?;
    if let Some(u) = &cli.redis_url {
        cfg.url = u.clone();
    }
    if let Some(p) = &cli.prefix {
        cfg.prefix = p.clone();
    }
    Ok(cfg)
}

/// Completions and the manual page need neither Redis nor a valid configuration.
fn print_docs(command: &Command) -> anyhow::Result<bool> {
    match command {
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "aftercall", &mut out);
            std::io::Write::write_all(&mut std::io::stdout(), &out)?;
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            std::io::Write::write_all(&mut std::io::stdout(), &out)?;
        }
        Command::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if print_docs(&cli.command)? {
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = queue_config(&cli)?;
    // Validate input before touching Redis: bad input is reported even when Redis is down.
    if let Command::Enqueue {
        file,
        skip_invalid,
        json,
    } = &cli.command
    {
        let raw = input::read_input(file)?;
        let parsed = input::parse_events(&raw, cfg.max_event_bytes);
        for bad in &parsed.invalid {
            eprintln!("{bad}");
        }
        if !parsed.invalid.is_empty() && !skip_invalid {
            bail!(
                "{} invalid event(s); nothing enqueued (use --skip-invalid to enqueue the valid ones)",
                parsed.invalid.len()
            );
        }
        let queue = connect(cfg, true).await?;
        let results =
            input::enqueue_all(&queue, &parsed.events, std::io::stderr().is_terminal()).await?;
        let (mut new, mut dup) = (0, 0);
        for r in &results {
            if *json {
                println!("{}", serde_json::to_string(r)?);
            } else if results.len() <= 20 {
                println!(
                    "{} {} ({})",
                    if r.duplicate {
                        "duplicate"
                    } else {
                        "enqueued "
                    },
                    r.call_id,
                    r.job_id
                );
            }
            if r.duplicate { dup += 1 } else { new += 1 }
        }
        if !json {
            println!(
                "{new} enqueued, {dup} duplicate, {} invalid",
                parsed.invalid.len()
            );
        }
        return Ok(if parsed.invalid.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    if let Command::Agents(AgentsCmd::Set { file, .. }) = &cli.command {
        // Same rule: a bad config is refused before Redis is asked.
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        AgentConfig::parse(&bytes).map_err(|e| anyhow::anyhow!("invalid agent config: {e}"))?;
    }
    // Commands that write refuse an evicting Redis; those that only read still show
    // what is there.
    let writes = matches!(
        cli.command,
        Command::Agents(AgentsCmd::Set { .. } | AgentsCmd::Delete { .. })
            | Command::Dlq(DlqCmd::Replay(_) | DlqCmd::Purge(_))
            | Command::Calls(CallsCmd::Erase { .. })
            | Command::Keys(KeysCmd::Rotate)
            | Command::OptOuts(OptOutsCmd::Add { .. } | OptOutsCmd::Remove { .. })
            | Command::Destinations(DestinationsCmd::Pause(_) | DestinationsCmd::Resume(_))
    );
    let queue = connect(cfg, writes).await?;
    match cli.command {
        Command::Enqueue { .. } => unreachable!("handled above"),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled first"),
        Command::Agents(cmd) => match cmd {
            AgentsCmd::Set { agent_id, file } => {
                let cfg = AgentConfig::parse(&std::fs::read(&file)?)
                    .map_err(|e| anyhow::anyhow!("invalid agent config: {e}"))?;
                queue.set_agent(&agent_id, &cfg).await?;
                let n = cfg.follow_up().map(|f| f.actions.len()).unwrap_or(0);
                println!("agent {agent_id} configured with {n} action(s)");
            }
            AgentsCmd::Preview {
                agent_id,
                file,
                limit,
                json,
            } => {
                let cfg = AgentConfig::parse(&std::fs::read(&file)?)
                    .map_err(|e| anyhow::anyhow!("invalid agent config: {e}"))?;
                let now = chrono::Utc::now();
                let calls = queue
                    .recent_calls(&agent_id, limit.clamp(1, 100), 5_000)
                    .await?;
                if calls.is_empty() {
                    println!("agent {agent_id} has no stored calls to preview on");
                }
                for event in calls {
                    let call_id = event.call_id.clone();
                    let (skipped, actions) = aftercall_actions::preview::call(&cfg, event, now);
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"call_id": call_id, "skipped": skipped, "actions": actions})
                        );
                        continue;
                    }
                    println!("call {call_id}");
                    if let Some(why) = skipped {
                        println!("  nothing: {why}");
                    }
                    for a in actions {
                        let head =
                            format!("  [{}] {:<8}", a["index"], a["type"].as_str().unwrap_or(""));
                        if a["fires"] == true {
                            println!("{head} fires: {}", a["output"]);
                        } else if let Some(e) = a["error"].as_str() {
                            println!("{head} would fail: {e}");
                        } else {
                            println!("{head} skipped: {}", a["reason"].as_str().unwrap_or(""));
                        }
                    }
                }
            }
            AgentsCmd::Get { agent_id } => match queue.get_agent(&agent_id).await? {
                Some(cfg) => println!("{}", serde_json::to_string_pretty(&cfg.redacted())?),
                None => bail!("agent {agent_id} has no configuration"),
            },
            AgentsCmd::List => {
                for id in queue.list_agents().await? {
                    println!("{id}");
                }
            }
            AgentsCmd::Delete { agent_id } => {
                if !queue.delete_agent(&agent_id).await? {
                    bail!("agent {agent_id} has no configuration");
                }
                println!("agent {agent_id} deleted");
            }
        },
        Command::Calls(CallsCmd::Show { call_id, json }) => {
            match queue.call_status(&call_id).await? {
                Some(s) if json => {
                    println!("{}", serde_json::to_string_pretty(&s.redacted())?)
                }
                Some(s) => show::print_call(&s),
                None => bail!("no call {call_id} is known (never pushed, or past retention)"),
            }
        }
        Command::Calls(CallsCmd::Erase { call_id }) => {
            let by = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            );
            match queue.erase_call(&call_id, &by).await? {
                Some(e) => {
                    // The outbox folder a worker on this machine writes to.
                    let get = |k: &str| std::env::var(k).ok();
                    let dir = aftercall_actions::outbox::dir(&Settings::new(&get));
                    let files = aftercall_actions::outbox::erase(&dir, &e.ids)
                        .with_context(|| format!("erasing outbox files in {}", dir.display()))?;
                    println!(
                        "call {call_id} erased: {} job(s), {} in flight cancelled, {files} outbox file(s) removed",
                        e.jobs, e.cancelled
                    )
                }
                None => bail!("no call {call_id} is known (never pushed, or past retention)"),
            }
        }
        Command::Dlq(cmd) => dlq(&queue, cmd).await?,
        Command::Keys(KeysCmd::Rotate) => {
            let mut shown = std::time::Instant::now();
            let r = queue
                .rotate_keys(|r| {
                    if shown.elapsed() >= std::time::Duration::from_secs(1) {
                        eprintln!(
                            "rotating: {} of ~{} values looked at, {} sealed again",
                            r.scanned, r.total, r.rewritten
                        );
                        shown = std::time::Instant::now();
                    }
                })
                .await?;
            println!(
                "keys rotated: {} values looked at, {} sealed again with the current key",
                r.scanned, r.rewritten
            );
        }
        Command::Destinations(cmd) => destinations(&queue, cmd).await?,
        Command::Stats { json, watch } => stats(&queue, json, watch).await?,
        Command::OptOuts(cmd) => opt_outs(&queue, cmd).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn opt_outs(queue: &Queue, cmd: OptOutsCmd) -> anyhow::Result<()> {
    use aftercall_core::contact::{Channel, normalize};
    let contact = |channel: &str, address: &str| -> anyhow::Result<(Channel, String)> {
        let c = Channel::parse(channel).map_err(anyhow::Error::msg)?;
        Ok((c, normalize(c, address).map_err(anyhow::Error::msg)?))
    };
    match cmd {
        OptOutsCmd::List { json } => {
            let all = queue.opt_outs().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            }
            for o in all.iter().filter(|_| !json) {
                let at = chrono::DateTime::from_timestamp_millis(o.at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_default();
                println!("{:<6} {:<32} {at}  {}", o.channel, o.address, o.source);
            }
        }
        OptOutsCmd::Add { channel, address } => {
            let (c, a) = contact(&channel, &address)?;
            if queue.opt_out(c, &a, "cli").await? {
                println!("opted out  {c} {a}");
            } else {
                println!("already opted out  {c} {a}");
            }
        }
        OptOutsCmd::Remove { channel, address } => {
            let (c, a) = contact(&channel, &address)?;
            if !queue.opt_in(c, &a).await? {
                bail!("{c} {a} has no opt-out");
            }
            println!("removed  {c} {a}");
        }
    }
    Ok(())
}

async fn destinations(queue: &Queue, cmd: DestinationsCmd) -> anyhow::Result<()> {
    match cmd {
        DestinationsCmd::List { json } => {
            let (list, pauses) = (queue.destinations().await?, queue.pauses().await?);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "destinations": list, "pauses": pauses })
                );
            } else {
                show::print_destinations(&list, &pauses);
            }
        }
        DestinationsCmd::Pause(scope) => {
            let scope = scope.scope();
            queue.pause(&scope).await?;
            println!("paused {}: its work waits", scope.key());
        }
        DestinationsCmd::Resume(scope) => {
            let scope = scope.scope();
            if !queue.resume(&scope).await? {
                bail!("{} is not paused", scope.key());
            }
            println!("resumed {}", scope.key());
        }
    }
    Ok(())
}

/// Connects; what is wrong with the Redis (no persistence, eviction allowed) goes to
/// stderr, since the CLI logs nothing else.
async fn connect(cfg: QueueConfig, writes: bool) -> anyhow::Result<Queue> {
    let queue = if writes {
        Queue::connect(cfg).await?
    } else {
        Queue::connect_to_read(cfg).await?
    };
    for w in queue.warnings() {
        eprintln!("aftercall: warning: {w}");
    }
    Ok(queue)
}

async fn dlq(queue: &Queue, cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List {
            filter,
            limit,
            cursor,
            json,
        } => {
            let page = queue
                .dlq_list(&filter.to_filter()?, cursor.as_deref(), limit)
                .await?;
            if json {
                let items: Vec<_> = page
                    .items
                    .into_iter()
                    .map(aftercall_queue::JobRecord::redacted)
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "items": items, "next_cursor": page.next_cursor })
                );
            } else {
                show::print_dlq(&page.items);
                if let Some(c) = page.next_cursor {
                    println!("more: --cursor {c}");
                }
            }
        }
        DlqCmd::Show { job_id, json } => match queue.job(&job_id).await? {
            Some(r) if json => {
                println!("{}", serde_json::to_string_pretty(&r.redacted())?)
            }
            Some(r) => show::print_job(&r),
            None => bail!("no job {job_id}"),
        },
        DlqCmd::Replay(r) if r.sel.dry_run => {
            let n = would_touch(queue, &r.sel).await?;
            println!("would replay {n} dead letter(s)");
        }
        DlqCmd::Purge(sel) if sel.dry_run => {
            let n = would_touch(queue, &sel).await?;
            println!("would purge {n} dead letter(s)");
        }
        DlqCmd::Replay(ReplaySelection { sel, force }) => {
            let r = if !sel.job_ids.is_empty() {
                queue.replay_with(&sel.job_ids, force).await?
            } else {
                queue.replay_matching_with(&sel.filter()?, force).await?
            };
            println!("{} dead letter(s) replayed", r.replayed);
            for id in &r.expired {
                println!(
                    "expired   {id}  (past its expires_after; replay with --force to send it anyway)"
                );
            }
            if !r.expired.is_empty() && r.replayed == 0 {
                bail!(
                    "{} dead letter(s) expired and not replayed; use --force",
                    r.expired.len()
                );
            }
        }
        DlqCmd::Purge(sel) => {
            let n = if !sel.job_ids.is_empty() {
                queue.purge(&sel.job_ids).await?
            } else {
                queue.purge_matching(&sel.filter()?).await?
            };
            println!("{n} dead letter(s) purged");
        }
    }
    Ok(())
}

/// A dry run: how many dead letters a replay or purge of `sel` would touch now.
async fn would_touch(queue: &Queue, sel: &Selection) -> anyhow::Result<u64> {
    Ok(if !sel.job_ids.is_empty() {
        queue.count_dead(&sel.job_ids).await?
    } else {
        queue.count_matching(&sel.filter()?).await?
    })
}

async fn stats(queue: &Queue, json: bool, watch: bool) -> anyhow::Result<()> {
    let mut prev: Option<(std::time::Instant, u64)> = None;
    loop {
        let s = queue.stats().await?;
        if json {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            let rate = prev.map(|(t, n)| {
                s.finished_last_hour.saturating_sub(n) as f64 / t.elapsed().as_secs_f64()
            });
            println!(
                "queue {}: queued {}  running {}  scheduled {}  dead {}  finished {}/min {}/h  workers {}{}  redis: maxmemory-policy {} evicted_keys {}",
                s.queue,
                s.queued,
                s.running,
                s.scheduled,
                s.dead,
                s.finished_last_minute,
                s.finished_last_hour,
                s.workers_alive,
                rate.map(|r| format!("  now {r:.0}/s")).unwrap_or_default(),
                s.redis.maxmemory_policy.as_deref().unwrap_or("unknown"),
                s.redis
                    .evicted_keys
                    .map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            );
            // Once, not every second of `--watch`.
            if prev.is_none() && s.redis.evicts() {
                eprintln!("aftercall: warning: {}", s.redis.eviction_problem());
            }
        }
        if !watch {
            return Ok(());
        }
        prev = Some((std::time::Instant::now(), s.finished_last_hour));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// RFC 3339, Unix milliseconds, or an age (`2h` = two hours ago).
fn parse_time(s: &str) -> anyhow::Result<i64> {
    aftercall_core::parse_time_arg(s, aftercall_queue::now_ms()).map_err(anyhow::Error::msg)
}
