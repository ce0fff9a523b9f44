//! `cargo xtask bench`: starts its own redis-server (AOF off for throughput; one pipeline
//! figure with AOF everysec), a webhook receiver process, and the release binaries as
//! processes, then measures enqueue, pipeline, pure-queue, latency, slow-receiver, memory
//! and backlog-flatness figures against the Redis ceiling measured in the same run.
//! Prints a table and writes JSON to `target/bench/results.json`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aftercall_core::{AgentConfig, Attempt, AttemptOutcome, CallEvent};
use aftercall_queue::{Finish, FinishMode, Leased, Queue, QueueConfig, StateInfo};
use aftercall_testkit::{RedisOptions, RedisServer};
use anyhow::{Context, bail, ensure};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::probe::{self, Meter, Sampler, Usage, now_us, round};
use crate::report::{Report, int, mb};

mod api;
mod bytes;
mod intake;
mod outage;
mod partitions;
mod pipeline;
mod procs;
mod queue;
mod workload;

use api::*;
use bytes::*;
use intake::*;
use outage::*;
use partitions::*;
use pipeline::*;
use procs::*;
use queue::*;
use workload::*;

const SCENARIOS: &[&str] = &[
    "ceiling",
    "memory",
    "enqueue",
    "noop",
    "pipeline",
    "latency",
    "slow",
    "flatness",
    "aof",
    "stalled",
    "intake",
    "bytes",
    "outage",
    "partitions",
];

struct Opts {
    quick: bool,
    full: bool,
    only: Option<Vec<String>>,
    build: bool,
    out: Option<PathBuf>,
    /// Overrides every scenario's event count (profiling runs).
    n: Option<usize>,
    /// Every scenario sends the `bytes` scenario's 6 KB event.
    big_event: bool,
}

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut o = Opts {
            quick: false,
            full: false,
            only: None,
            build: true,
            out: None,
            n: None,
            big_event: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--full" => o.full = true,
                "--no-build" => o.build = false,
                "--big-event" => o.big_event = true,
                "--only" => {
                    let list: Vec<String> = it
                        .next()
                        .context("--only needs a list")?
                        .split(',')
                        .map(str::to_string)
                        .collect();
                    for s in &list {
                        ensure!(SCENARIOS.contains(&s.as_str()), "unknown scenario {s}");
                    }
                    o.only = Some(list);
                }
                "--n" => o.n = Some(it.next().context("--n needs a number")?.parse()?),
                "--out" => o.out = Some(it.next().context("--out needs a file")?.into()),
                other => bail!("unknown argument {other}\n{}", crate::USAGE),
            }
        }
        Ok(o)
    }

    fn wants(&self, s: &str) -> bool {
        self.only.as_ref().is_none_or(|l| l.iter().any(|x| x == s))
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let opts = Opts::parse(args)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if opts.build {
        eprintln!("building the release binaries (incremental)…");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "aftercall-worker",
                "-p",
                "aftercall-cli",
            ])
            .status()?;
        ensure!(st.success(), "cargo build --release failed");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(opts, target))
}

async fn run(opts: Opts, target: PathBuf) -> anyhow::Result<()> {
    let bins = target.join("release");
    for b in ["aftercall-worker", "aftercall"] {
        ensure!(
            bins.join(b).exists(),
            "{} is missing: run without --no-build",
            bins.join(b).display()
        );
    }
    ensure!(
        which("redis-benchmark"),
        "redis-benchmark is missing: install Debian's redis-tools (`./dev bench` does)"
    );
    let out_dir = target.join("bench");
    let scratch = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;

    let machine = probe::machine();
    println!("machine: {machine}");
    println!(
        "Redis: AOF off (throughput figures), except the `aof` scenario (appendfsync everysec)"
    );
    let redis = start_redis(&scratch.join("redis"), false).await?;
    let info = redis_conn(&redis.url()).await?;
    let rx = RxProc::start(0).await?;
    let mut b = Bench {
        n_override: opts.n,
        quick: opts.quick,
        full: opts.full,
        bins,
        scratch,
        redis,
        info,
        rx,
        report: Report::default(),
        json: serde_json::Map::new(),
        ceiling: None,
        seq: 0,
        events: Arc::new(if opts.big_event {
            Events::big()?
        } else {
            Events::new()?
        }),
    };
    b.json.insert("machine".into(), machine);
    b.json.insert(
        "mode".into(),
        json!(if opts.quick {
            "quick"
        } else if opts.full {
            "full"
        } else {
            "default"
        }),
    );
    let started = Instant::now();
    for s in SCENARIOS {
        if !opts.wants(s) {
            continue;
        }
        println!("\n== {s}  (load {})", probe::loadavg());
        let load0 = probe::loadavg();
        let r = match b.flush().await {
            Err(e) => Err(e),
            Ok(()) => match *s {
                "ceiling" => ceiling(&mut b).await,
                "memory" => memory(&mut b).await,
                "enqueue" => enqueue(&mut b).await,
                "noop" => noop(&mut b).await,
                "pipeline" => pipeline_scenario(&mut b).await,
                "latency" => latency(&mut b).await,
                "slow" => slow(&mut b).await,
                "flatness" => flatness(&mut b).await,
                "aof" => aof(&mut b).await,
                "stalled" => stalled(&mut b).await,
                "intake" => intake(&mut b).await,
                "bytes" => bytes(&mut b).await,
                "outage" => outage(&mut b).await,
                "partitions" => partitions(&mut b).await,
                _ => unreachable!(),
            },
        };
        match r {
            Ok(mut v) => {
                if let Value::Object(m) = &mut v {
                    m.insert("loadavg_before".into(), json!(load0));
                }
                b.json.insert((*s).into(), v);
            }
            Err(e) => {
                eprintln!("scenario {s} failed: {e:#}");
                b.report
                    .row(format!("{s}: FAILED"), format!("{e:#}"))
                    .target("runs", false);
                b.json
                    .insert((*s).into(), json!({ "error": format!("{e:#}") }));
            }
        }
    }
    b.json.insert(
        "total_s".into(),
        json!(round(started.elapsed().as_secs_f64(), 1)),
    );
    let table = b.report.table();
    println!("\n{table}");
    let out = opts.out.unwrap_or_else(|| out_dir.join("results.json"));
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    b.json.insert("table".into(), json!(table));
    std::fs::write(&out, serde_json::to_string_pretty(&Value::Object(b.json))?)?;
    println!("results written to {}", out.display());
    Ok(())
}

struct Bench {
    n_override: Option<usize>,
    quick: bool,
    full: bool,
    bins: PathBuf,
    scratch: PathBuf,
    redis: RedisServer,
    /// A connection of the harness's own, for INFO and counts.
    info: MultiplexedConnection,
    rx: RxProc,
    report: Report,
    json: serde_json::Map<String, Value>,
    ceiling: Option<Ceiling>,
    seq: u32,
    events: Arc<Events>,
}

impl Bench {
    fn n(&self, full: usize, quick: usize) -> usize {
        self.n_override
            .unwrap_or(if self.quick { quick } else { full })
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let _: () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query_async(&mut self.info)
            .await?;
        Ok(())
    }

    /// A queue handle on a fresh prefix.
    async fn queue(&mut self, name: &str) -> anyhow::Result<Queue> {
        self.seq += 1;
        // With AFTERCALL_ENCRYPTION_KEYS in the environment (which the workers inherit),
        // every figure is measured with encryption at rest.
        let encryption = match std::env::var("AFTERCALL_ENCRYPTION_KEYS") {
            Ok(k) if !k.trim().is_empty() => {
                Some(aftercall_queue::Keyring::parse(&k).map_err(anyhow::Error::msg)?)
            }
            _ => None,
        };
        Ok(Queue::connect(QueueConfig {
            url: self.redis.url(),
            prefix: format!("b{}{name}", self.seq),
            encryption,
            ..Default::default()
        })
        .await?)
    }

    /// Starts a release worker on `queue`'s prefix; its log goes to the scratch folder.
    fn worker(&self, queue: &Queue, env: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let prefix = &queue.config().prefix;
        let log = self.scratch.join(format!("worker-{prefix}.log"));
        // AFTERCALL_BENCH_WRAP="valgrind --tool=callgrind": run the worker under a profiler.
        let wrap: Vec<String> = std::env::var("AFTERCALL_BENCH_WRAP")
            .map(|w| w.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let bin = self.bins.join("aftercall-worker");
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("AFTERCALL_") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("AFTERCALL_REDIS_URL", self.redis.url())
            .env("AFTERCALL_QUEUE_PREFIX", prefix)
            .env("AFTERCALL_ALLOW_CIDRS", "127.0.0.0/8")
            .env("AFTERCALL_OUTBOX", self.scratch.join("outbox"))
            .env("RUST_LOG", "info");
        // Encryption at rest measured as configured for the harness's own queue.
        if let Ok(k) = std::env::var("AFTERCALL_ENCRYPTION_KEYS") {
            cmd.env("AFTERCALL_ENCRYPTION_KEYS", k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // AFTERCALL_BENCH_WORKER_ENV="K=V K2=V2": extra worker environment (experiments).
        if let Ok(extra) = std::env::var("AFTERCALL_BENCH_WORKER_ENV") {
            for kv in extra.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    cmd.env(k, v);
                }
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        Ok(Proc {
            child: cmd.spawn().context("starting aftercall-worker")?,
        })
    }

    /// Redis's share of the work behind a figure of `units` jobs or events: how busy its
    /// one core was, what one unit cost it, that cost in pipelined simple commands (the
    /// ceiling measured in this run), and the rate Redis alone would allow at that cost.
    fn redis_note(&self, u: &Usage, units: usize, unit: &str) -> String {
        let per = |s: f64| s * 1e6 / units.max(1) as f64;
        let us = per(u.redis_cpu * u.wall.as_secs_f64());
        let simple = self
            .ceiling
            .as_ref()
            .map(|c| {
                format!(
                    " ≈ {:.0} pipelined simple commands",
                    us * c.commands_per_s / 1e6
                )
            })
            .unwrap_or_default();
        format!(
            "busy {:.0}%; {us:.1} µs/{unit} ({:.1} in scripts, {:.1} sys){simple}; Redis-bound limit ≈ {}/s",
            u.redis_cpu * 100.0,
            per(u.redis_script_s),
            per(u.redis_sys),
            int(1e6 / us.max(1e-9))
        )
    }

    /// Redis's share (`redis_note`), then each process's (`cpu_note`).
    fn usage_note(&self, u: &Usage, units: usize, unit: &str) -> String {
        format!(
            "{}; {}",
            self.redis_note(u, units, unit),
            Self::cpu_note(u, units, unit)
        )
    }

    /// "worker 80% (70 µs/event), receiver 30% (…)".
    fn cpu_note(u: &Usage, units: usize, unit: &str) -> String {
        u.procs
            .iter()
            .map(|(n, c)| {
                format!(
                    "{n} {:.0}% ({:.0} µs/{unit})",
                    c * 100.0,
                    c * u.wall.as_secs_f64() * 1e6 / units.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn zcard(&mut self, key: &str) -> anyhow::Result<u64> {
        Ok(redis::cmd("ZCARD")
            .arg(key)
            .query_async(&mut self.info)
            .await?)
    }

    async fn llen(&mut self, key: &str) -> anyhow::Result<u64> {
        Ok(redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut self.info)
            .await?)
    }

    async fn used_memory(&mut self) -> anyhow::Result<u64> {
        Ok(probe::redis_counters(&mut self.info).await?.used_memory)
    }
}
