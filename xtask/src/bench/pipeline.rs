//! Pipeline scenarios: events through a worker to the receiver, latency, a slow
//! receiver, backlog flatness and AOF (plus perf sampling and the slowlog).

use super::*;

pub(super) struct PipelineRun {
    pub(super) rate: f64,
    pub(super) usage: Usage,
    pub(super) peak_rss: u64,
    pub(super) bytes_per_event: f64,
}

/// N events queued first, then one worker started: events/s from its start to the
/// last webhook received.
pub(super) async fn pipeline(b: &mut Bench, n: usize, tag: &str) -> anyhow::Result<PipelineRun> {
    let q = b.queue(tag).await?;
    set_agent(&q, &b.rx.url()).await?;
    let mem0 = b.used_memory().await?;
    fill(&q, &b.events, 0, n).await?;
    b.rx.reset().await?;
    let t0 = now_us();
    let mut w = b.worker(&q, &[])?;
    let pid = w.pid();
    let sampler = Sampler::start(pid);
    let meter = Meter::start(&mut b.info, &[("worker", pid), ("receiver", b.rx.pid())]).await?;
    let perf = perf_record(b, Some(pid), tag).await?;
    let slowlog = std::env::var_os("AFTERCALL_BENCH_SLOWLOG").is_some();
    if slowlog {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .arg("slowlog-max-len")
            .arg(10_000_000)
            .query_async(&mut b.info)
            .await?;
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut b.info)
            .await?;
    }
    let stats = b.rx.wait_for(n as u64).await?;
    let u = meter.stop(&mut b.info).await?;
    if slowlog {
        print_slowlog(b).await?;
    }
    stop_perf(perf);
    let last = stats["last_us"].as_u64().unwrap_or(0);
    let rate = n as f64 / ((last - t0) as f64 / 1e6);
    // Every job settled, none dead, no duplicate deliveries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let keys = q.keys().clone();
    while b.zcard(&keys.done).await? < 2 * n as u64 {
        ensure!(Instant::now() < deadline, "jobs did not all finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = b.zcard(&keys.dead).await?;
    let got = b.rx.count().await?;
    ensure!(
        dead == 0 && got == n as u64,
        "{dead} dead, {got} webhooks for {n} events"
    );
    let hwm = probe::status_bytes(pid, "VmHWM:").unwrap_or(0);
    let peaks = sampler.stop().await;
    w.terminate(Duration::from_secs(30));
    let mem1 = b.used_memory().await?;
    Ok(PipelineRun {
        rate,
        usage: u,
        peak_rss: hwm.max(peaks.rss),
        bytes_per_event: mem1.saturating_sub(mem0) as f64 / n as f64,
    })
}

/// With AFTERCALL_BENCH_SLOWLOG set: time per command (and per script, by SHA) as the
/// slow log saw it, to tell which script costs what.
pub(super) async fn print_slowlog(b: &mut Bench) -> anyhow::Result<()> {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(10_000)
        .query_async(&mut b.info)
        .await?;
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut b.info)
        .await?;
    let mut by: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for e in entries {
        let redis::Value::Array(f) = e else { continue };
        let us: u64 = redis::from_redis_value(f[2].clone()).unwrap_or(0);
        let args: Vec<String> = redis::from_redis_value(f[3].clone()).unwrap_or_default();
        let name = match args.first().map(|a| a.to_lowercase()) {
            Some(c) if c == "evalsha" => format!(
                "evalsha {} ({} args)",
                &args.get(1).map(|s| &s[..8]).unwrap_or(""),
                if args.len() > 40 { "many" } else { "few" }
            ),
            Some(c) => c,
            None => "?".into(),
        };
        by.entry(name).or_default().push(us);
    }
    // Medians: a mean is swamped by the calls during which the OS preempted Redis.
    for (k, mut v) in by {
        v.sort_unstable();
        let total: u64 = v.iter().sum();
        println!(
            "  slowlog {k:<40} {:>8} calls  p50 {:>6} µs  p90 {:>6} µs  total {total:>9} µs",
            v.len(),
            v[v.len() / 2],
            v[v.len() * 9 / 10]
        );
    }
    Ok(())
}

/// With AFTERCALL_BENCH_PERF set, samples the worker and Redis with `perf record`
/// during the pipeline (for `perf report -i target/bench/perf-<tag>.data`).
pub(super) async fn perf_record(
    b: &mut Bench,
    worker: Option<u32>,
    tag: &str,
) -> anyhow::Result<Option<Proc>> {
    if std::env::var_os("AFTERCALL_BENCH_PERF").is_none() {
        return Ok(None);
    }
    let redis_pid = probe::info(&mut b.info, "server")
        .await?
        .get("process_id")
        .cloned()
        .unwrap_or_default();
    let out = b
        .scratch
        .parent()
        .context("bench dir")?
        .join(format!("perf-{tag}.data"));
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-F", "1999", "-q"]);
    // AFTERCALL_BENCH_PERF=dwarf: with call graphs.
    if std::env::var("AFTERCALL_BENCH_PERF").is_ok_and(|v| v == "dwarf") {
        cmd.args(["--call-graph", "dwarf,16384"]);
    }
    let child = cmd
        .arg("-o")
        .arg(&out)
        .arg("-p")
        .arg(match worker {
            Some(w) => format!("{w},{redis_pid}"),
            None => redis_pid,
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf")?;
    Ok(Some(Proc { child }))
}

/// Stops a [`perf_record`] with SIGINT, so that it writes its data, and waits for it.
pub(super) fn stop_perf(perf: Option<Proc>) {
    if let Some(mut p) = perf {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(p.pid().to_string())
            .status();
        p.terminate(Duration::from_secs(30));
    }
}

pub(super) async fn pipeline_scenario(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(100_000, 20_000);
    let r = pipeline(b, n, "pipe").await?;
    let note = b.usage_note(&r.usage, n, "event");
    b.report
        .row(
            format!(
                "pipeline: {} events queued → webhook received, 1 worker (default settings)",
                int(n as f64)
            ),
            format!("{} events/s", int(r.rate)),
        )
        .redis(note)
        .target(">= 10,000/s", r.rate >= 10_000.0);
    b.report
        .row(
            "worker peak RSS (VmHWM) under pipeline load",
            mb(r.peak_rss),
        )
        .target("<= 200 MB", r.peak_rss <= 200_000_000);
    b.report.row(
        "Redis bytes per delivered event, kept for retention (2 jobs, history, call id)",
        format!("{} B", int(r.bytes_per_event)),
    );
    Ok(json!({
        "n": n,
        "events_per_s": r.rate,
        "worker_peak_rss_bytes": r.peak_rss,
        "redis_bytes_per_delivered_event": r.bytes_per_event,
        "usage": r.usage.to_json(),
    }))
}

pub(super) async fn latency(b: &mut Bench) -> anyhow::Result<Value> {
    let q = b.queue("lat").await?;
    set_agent(&q, &b.rx.url()).await?;
    let mut w = b.worker(&q, &[])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secs = if b.quick { 4 } else { 10 };
    let mut v = serde_json::Map::new();
    let mut next = 0usize;
    for rate in [1_000usize, 5_000] {
        b.rx.reset().await?;
        let meter = Meter::start(
            &mut b.info,
            &[
                ("worker", w.pid()),
                ("receiver", b.rx.pid()),
                ("xtask", std::process::id()),
            ],
        )
        .await?;
        let t0 = now_us();
        let sent = produce(&q, &b.events, rate, secs, next).await?;
        next += sent;
        b.rx.wait_for(sent as u64).await?;
        let u = meter.stop(&mut b.info).await?;
        let achieved = sent as f64 / ((now_us() - t0) as f64 / 1e6);
        // The first second is warm-up (connections, JIT of nothing, allocator growth).
        let lat =
            b.rx.call("GET", &format!("/_latency?since_us={}", t0 + 1_000_000))
                .await?;
        let (p50, p99, p999) = (
            lat["p50_ms"].as_f64().unwrap_or(0.0),
            lat["p99_ms"].as_f64().unwrap_or(0.0),
            lat["p999_ms"].as_f64().unwrap_or(0.0),
        );
        let note = b.usage_note(&u, sent, "event");
        let row = b.report.row(
            format!("latency enqueue → received at {} events/s ({secs} s, first s dropped): p50 / p99 / p99.9", int(rate as f64)),
            format!("{p50:.2} / {p99:.2} / {p999:.2} ms"),
        );
        row.redis(note);
        if rate == 1_000 {
            row.target("p99 <= 10 ms", p99 <= 10.0);
        }
        v.insert(
            format!("at_{rate}"),
            json!({ "offered_per_s": rate, "achieved_per_s": achieved, "latency": lat, "usage": u.to_json() }),
        );
    }
    w.terminate(Duration::from_secs(30));
    Ok(Value::Object(v))
}

/// Enqueues one event per call at `rate` for `secs`, each stamped with its send time.
pub(super) async fn produce(
    q: &Queue,
    events: &Arc<Events>,
    rate: usize,
    secs: usize,
    from: usize,
) -> anyhow::Result<usize> {
    let per_tick = (rate / 1000).max(1);
    let ticks = rate * secs / per_tick;
    let mut iv = tokio::time::interval(Duration::from_millis(1));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut set = tokio::task::JoinSet::new();
    let mut i = from;
    for _ in 0..ticks {
        iv.tick().await;
        for _ in 0..per_tick {
            let ev = events.event(i, Some(now_us()));
            let q = q.clone();
            set.spawn(async move { q.enqueue(vec![ev]).await });
            i += 1;
        }
        while let Some(r) = set.try_join_next() {
            r??;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(i - from)
}

pub(super) async fn slow(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(30_000, 12_000);
    let rx = RxProc::start(1000).await?;
    let q = b.queue("slow").await?;
    set_agent(&q, &rx.url()).await?;
    fill(&q, &b.events, 0, n).await?;
    let t = Instant::now();
    let mut w = b.worker(&q, &[("AFTERCALL_CONCURRENCY", "10000")])?;
    let pid = w.pid();
    let sampler = Sampler::start(pid);
    let meter = Meter::start(&mut b.info, &[("worker", pid), ("receiver", rx.pid())]).await?;
    let keys = q.keys().clone();
    let mut last = (0, Instant::now());
    loop {
        let done = b.zcard(&keys.done).await?;
        if done >= 2 * n as u64 {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            bail!("stuck at {done} of {} finished jobs", 2 * n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t.elapsed();
    let u = meter.stop(&mut b.info).await?;
    let hwm = probe::status_bytes(pid, "VmHWM:").unwrap_or(0);
    let peaks = sampler.stop().await;
    let stats = rx.stats().await?;
    let dead = b.zcard(&keys.dead).await?;
    let retried = b.zcard(&keys.scheduled).await? + b.llen(&keys.ready).await?;
    w.terminate(Duration::from_secs(30));
    let rate = n as f64 / wall.as_secs_f64();
    let max_in_flight = stats["max_in_flight"].as_i64().unwrap_or(0);
    let peak = hwm.max(peaks.rss);
    let note = b.usage_note(&u, n, "event");
    b.report
        .row(
            format!(
                "slow receiver (1 s answers), {} events, worker concurrency 10,000: throughput",
                int(n as f64)
            ),
            format!(
                "{} webhooks/s ({} in flight at peak)",
                int(rate),
                int(max_in_flight as f64)
            ),
        )
        .redis(note)
        .target("10,000 in flight", max_in_flight >= 10_000);
    b.report
        .row("slow receiver: worker peak RSS (VmHWM)", mb(peak))
        .target("<= 200 MB", peak <= 200_000_000);
    b.report.row(
        "slow receiver: worker open fds / sockets at peak",
        format!("{} / {}", int(peaks.fds as f64), int(peaks.sockets as f64)),
    );
    ensure!(
        dead == 0,
        "{dead} dead letters ({retried} waiting for a retry)"
    );
    Ok(json!({
        "n": n,
        "webhooks_per_s": rate,
        "max_in_flight": max_in_flight,
        "worker_peak_rss_bytes": peak,
        "worker_peak_fds": peaks.fds,
        "worker_peak_sockets": peaks.sockets,
        "usage": u.to_json(),
    }))
}

pub(super) async fn flatness(b: &mut Bench) -> anyhow::Result<Value> {
    let mut levels = vec![1_000usize, 100_000];
    if b.full {
        levels.push(1_000_000);
    }
    const STEP: usize = 1_000;
    let measured = b.n(50_000, 20_000);
    // Every level has its own queue in the same Redis, and the levels are measured in
    // turn, round after round, so a burst of load on the machine hits them all alike.
    struct Level {
        q: Queue,
        next: usize,
        timed: Duration,
        done: usize,
        commands: u64,
        redis_cpu: f64,
    }
    let mut ls = Vec::new();
    for &level in &levels {
        let q = b.queue(&format!("flat{level}")).await?;
        fill(&q, &b.events, 0, level).await?;
        ls.push(Level {
            q,
            next: level,
            timed: Duration::ZERO,
            done: 0,
            commands: 0,
            redis_cpu: 0.0,
        });
    }
    for _ in 0..measured.div_ceil(STEP) {
        for l in ls.iter_mut() {
            // Top up so the backlog stays between the level and the level + STEP.
            fill(&l.q, &b.events, l.next, STEP).await?;
            l.next += STEP;
            let meter = Meter::start(&mut b.info, &[]).await?;
            l.done += drain(&l.q, STEP).await?;
            let u = meter.stop(&mut b.info).await?;
            l.timed += u.wall;
            l.commands += u.redis_commands + u.redis_scripts;
            l.redis_cpu += u.redis_cpu * u.wall.as_secs_f64();
        }
    }
    let mut v = serde_json::Map::new();
    let mut rates = Vec::new();
    for (level, l) in levels.iter().zip(&ls) {
        let rate = l.done as f64 / l.timed.as_secs_f64();
        let cmds_per_job = l.commands as f64 / l.done as f64;
        let us = l.redis_cpu * 1e6 / l.done as f64;
        rates.push(rate);
        b.report
            .row(
                format!(
                    "backlog flatness: no-op jobs/s with {} jobs queued",
                    int(*level as f64)
                ),
                format!("{} jobs/s", int(rate)),
            )
            .redis(format!(
                "busy {:.0}%; {us:.1} µs/job, {cmds_per_job:.1} commands/job",
                100.0 * l.redis_cpu / l.timed.as_secs_f64(),
            ));
        v.insert(
            level.to_string(),
            json!({
                "jobs_per_s": rate,
                "measured_jobs": l.done,
                "redis_commands_per_job": cmds_per_job,
                "redis_cpu_us_per_job": us,
            }),
        );
    }
    let (lo, hi) = rates
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let spread = if hi > 0.0 { 1.0 - lo / hi } else { 0.0 };
    b.report
        .row(
            "backlog flatness: slowest vs fastest level",
            format!("{:.0}% apart", spread * 100.0),
        )
        .target("flat (within 15%)", spread <= 0.15);
    v.insert("spread".into(), json!(spread));
    Ok(Value::Object(v))
}

pub(super) async fn aof(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(100_000, 20_000);
    let mut redis = start_redis(&b.scratch.join("redis-aof"), true).await?;
    let mut info = redis_conn(&redis.url()).await?;
    std::mem::swap(&mut b.redis, &mut redis);
    std::mem::swap(&mut b.info, &mut info);
    let r = pipeline(b, n, "aof").await;
    std::mem::swap(&mut b.redis, &mut redis);
    std::mem::swap(&mut b.info, &mut info);
    let r = r?;
    let note = b.usage_note(&r.usage, n, "event");
    b.report
        .row(
            format!(
                "pipeline with AOF appendfsync everysec, {} events",
                int(n as f64)
            ),
            format!("{} events/s", int(r.rate)),
        )
        .redis(note);
    Ok(json!({ "n": n, "events_per_s": r.rate, "usage": r.usage.to_json() }))
}
