//! Queue scenarios: the Redis ceiling, memory per event, enqueue rates, no-op jobs.

use super::*;

// ---- scenarios ----

pub(super) struct Ceiling {
    /// Simple commands per second Redis executes here when clients pipeline (LPUSH,
    /// RPOP, ZADD averaged): what commands run inside our scripts are compared with.
    pub(super) commands_per_s: f64,
}

pub(super) async fn redis_benchmark(
    port: u16,
    n: usize,
    pipeline: usize,
    what: &[&str],
) -> anyhow::Result<Vec<(String, f64)>> {
    let out = tokio::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "--csv",
            "-c",
            "50",
        ])
        .args(["-n", &n.to_string(), "-P", &pipeline.to_string()])
        .args(what)
        .output()
        .await?;
    ensure!(out.status.success(), "redis-benchmark failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split("\",\"").map(|c| c.trim_matches('"')).collect();
        if cols.len() >= 2 {
            let name = cols[0]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_uppercase();
            res.push((name, cols[1].parse().unwrap_or(0.0)));
        }
    }
    Ok(res)
}

pub(super) async fn ceiling(b: &mut Bench) -> anyhow::Result<Value> {
    let port = b.redis.port();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCR', KEYS[1])")
        .query_async(&mut b.info)
        .await?;
    let n = if b.quick { 100_000 } else { 200_000 };
    let mut v = serde_json::Map::new();
    for (label, p, n) in [("plain", 1, n), ("pipelined_16", 16, n * 5)] {
        let mut r = redis_benchmark(port, n, p, &["-t", "lpush,rpop,zadd"]).await?;
        r.extend(redis_benchmark(port, n, p, &["evalsha", &sha, "1", "bench:evalsha"]).await?);
        let get = |k: &str| r.iter().find(|(n, _)| n == k).map(|x| x.1).unwrap_or(0.0);
        b.report.row(
            format!(
                "Redis ceiling, 50 clients, {}: LPUSH / RPOP / ZADD / EVALSHA (INCR script)",
                if p == 1 {
                    "no pipelining".to_string()
                } else {
                    format!("pipeline {p}")
                }
            ),
            format!(
                "{} / {} / {} / {} ops/s",
                int(get("LPUSH")),
                int(get("RPOP")),
                int(get("ZADD")),
                int(get("EVALSHA"))
            ),
        );
        if p > 1 {
            b.ceiling = Some(Ceiling {
                commands_per_s: (get("LPUSH") + get("RPOP") + get("ZADD")) / 3.0,
            });
        }
        v.insert(
            label.into(),
            json!({ "lpush": get("LPUSH"), "rpop": get("RPOP"), "zadd": get("ZADD"), "evalsha": get("EVALSHA") }),
        );
    }
    v.insert(
        "ceiling_commands_per_s".into(),
        json!(b.ceiling.as_ref().map(|c| c.commands_per_s)),
    );
    Ok(Value::Object(v))
}

pub(super) async fn memory(b: &mut Bench) -> anyhow::Result<Value> {
    // Idle worker: started on an empty queue, measured after it settled.
    let q = b.queue("idle").await?;
    let mut w = b.worker(&q, &[])?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = probe::status_bytes(w.pid(), "VmRSS:").context("worker RSS")?;
    w.terminate(Duration::from_secs(10));
    b.report
        .row("worker RSS, idle", mb(idle))
        .target("<= 30 MB", idle <= 30_000_000);

    let n = b.n(100_000, 20_000);
    let q = b.queue("mem").await?;
    let before = b.used_memory().await?;
    fill(&q, &b.events, 0, n).await?;
    let after = b.used_memory().await?;
    let per_job = (after.saturating_sub(before)) as f64 / n as f64;
    b.report.row(
        format!(
            "Redis bytes per queued call-ended job (INFO used_memory, {} queued, ~1 KB event)",
            int(n as f64)
        ),
        format!("{} B", int(per_job)),
    );
    Ok(json!({ "worker_idle_rss_bytes": idle, "redis_bytes_per_queued_job": per_job, "queued": n }))
}

pub(super) async fn enqueue(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(100_000, 20_000);
    let mut v = serde_json::Map::new();

    // CLI: a JSON Lines file of N events, timed from process start to exit.
    let file = b.scratch.join("events.jsonl");
    {
        let mut s = String::with_capacity(n * 1100);
        for i in 0..n {
            s.push_str(&serde_json::to_string(&b.events.event(i, None))?);
            s.push('\n');
        }
        std::fs::write(&file, s)?;
    }
    let q = b.queue("cli").await?;
    let meter = Meter::start(&mut b.info, &[]).await?;
    let t = Instant::now();
    let out = tokio::process::Command::new(b.bins.join("aftercall"))
        .arg("--redis-url")
        .arg(b.redis.url())
        .arg("--prefix")
        .arg(&q.config().prefix)
        .arg("enqueue")
        .arg(&file)
        .output()
        .await?;
    let wall = t.elapsed();
    let u = meter.stop(&mut b.info).await?;
    ensure!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("{n} enqueued")),
        "aftercall enqueue: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    enqueue_row(
        b,
        &mut v,
        "cli",
        format!(
            "enqueue, CLI, JSON Lines file of {} events (process start to exit)",
            int(n as f64)
        ),
        n,
        wall,
        &u,
        true,
    );

    // Rust API: one `Queue::enqueue` call with N validated events.
    let q = b.queue("api").await?;
    let events = b.events.batch(0, n);
    let meter = Meter::start(&mut b.info, &[("xtask", std::process::id())]).await?;
    let t = Instant::now();
    let r = q.enqueue(events).await?;
    let wall = t.elapsed();
    let u = meter.stop(&mut b.info).await?;
    ensure!(r.len() == n && r.iter().all(|e| !e.duplicate));
    enqueue_row(
        b,
        &mut v,
        "api",
        format!(
            "enqueue, Rust API, one Queue::enqueue of {} events",
            int(n as f64)
        ),
        n,
        wall,
        &u,
        true,
    );

    // Rust API, one event per call from 64 concurrent producers (the HTTP ingest shape).
    let q = b.queue("api1").await?;
    let m = n / 5;
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(&mut b.info, &[("xtask", std::process::id())]).await?;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (q, next, events) = (q.clone(), next.clone(), b.events.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= m {
                    return anyhow::Ok(());
                }
                q.enqueue(vec![events.event(i, None)]).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let wall = t.elapsed();
    let u = meter.stop(&mut b.info).await?;
    enqueue_row(
        b,
        &mut v,
        "api_single",
        "enqueue, Rust API, one event per call, 64 concurrent producers".into(),
        m,
        wall,
        &u,
        false,
    );
    v.insert("n".into(), json!(n));
    Ok(Value::Object(v))
}

/// Reports `n` events enqueued in `wall` (against the 100,000/s target when `targeted`),
/// and records the rate and usage under `key` in the results.
#[allow(clippy::too_many_arguments)]
pub(super) fn enqueue_row(
    b: &mut Bench,
    v: &mut serde_json::Map<String, Value>,
    key: &str,
    figure: String,
    n: usize,
    wall: Duration,
    u: &Usage,
    targeted: bool,
) {
    let rate = n as f64 / wall.as_secs_f64();
    let note = b.redis_note(u, n, "event");
    let row = b
        .report
        .row(figure, format!("{} events/s", int(rate)))
        .redis(note);
    if targeted {
        row.target(">= 100,000/s", rate >= 100_000.0);
    }
    v.insert(format!("{key}_events_per_s"), json!(rate));
    v.insert(key.into(), u.to_json());
}

/// What the pure-queue driver records per job: what the handler records for a delivery.
pub(super) fn noop_finish(j: &Leased, worker: &str) -> Finish {
    Finish {
        mode: FinishMode::Done,
        id: j.id.clone(),
        token: j.token.clone(),
        run_at_ms: 0,
        state: StateInfo::new(aftercall_core::JobState::Delivered),
        attempt: Some(Attempt {
            attempt: j.attempt,
            at: chrono::Utc::now(),
            outcome: AttemptOutcome::Delivered,
            status: Some(200),
            error: None,
            response: None,
            duration_ms: Some(0),
            worker: Some(worker.to_string()),
            next_run_at: None,
        }),
    }
}

pub(super) const NOOP_DRIVERS: usize = 4;
pub(super) const NOOP_BATCH: usize = 64;

/// Fetches (leases) and finishes `target` jobs with no work in between, `NOOP_DRIVERS`
/// loops at once, `NOOP_BATCH` jobs per fetch and one finish call per batch.
pub(super) async fn drain(queue: &Queue, target: usize) -> anyhow::Result<usize> {
    let taken = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for d in 0..NOOP_DRIVERS {
        let (q, taken) = (queue.clone(), taken.clone());
        set.spawn(async move {
            let wid = format!("bench-noop-{d}");
            loop {
                let left = target.saturating_sub(taken.load(Ordering::SeqCst));
                if left == 0 {
                    return anyhow::Ok(());
                }
                let f = q
                    .fetch(&wid, NOOP_BATCH.min(left), Duration::from_secs(60))
                    .await?;
                if f.jobs.is_empty() {
                    return Ok(());
                }
                taken.fetch_add(f.jobs.len(), Ordering::SeqCst);
                let items: Vec<Finish> = f.jobs.iter().map(|j| noop_finish(j, &wid)).collect();
                let applied = q.finish(&items).await?;
                ensure!(applied.iter().all(|a| *a), "a no-op finish lost its lease");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(taken.load(Ordering::SeqCst))
}

pub(super) async fn noop(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(100_000, 20_000);
    let q = b.queue("noop").await?;
    fill(&q, &b.events, 0, n).await?;
    let perf = perf_record(b, None, "noop").await?;
    let meter = Meter::start(&mut b.info, &[("xtask", std::process::id())]).await?;
    let done = drain(&q, n).await?;
    let u = meter.stop(&mut b.info).await?;
    stop_perf(perf);
    ensure!(done == n, "drained {done} of {n}");
    let rate = n as f64 / u.wall.as_secs_f64();
    let note = b.redis_note(&u, n, "job");
    b.report
        .row(
            format!("pure queue: no-op jobs (fetch {NOOP_BATCH}, finish per batch, {NOOP_DRIVERS} loops), {} backlog", int(n as f64)),
            format!("{} jobs/s", int(rate)),
        )
        .redis(note)
        .target(">= 50,000/s", rate >= 50_000.0);
    Ok(json!({ "jobs_per_s": rate, "n": n, "usage": u.to_json() }))
}
