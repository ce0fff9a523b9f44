//! Fault injection, end to end with the built binaries: workers killed with -9 in a loop,
//! Redis restarted or gone for a while, receivers that flap, SIGTERM mid-run, and poison
//! jobs. Every scenario ends with counted outcomes and the conservation law:
//!
//! - every action ends as exactly one of delivered, skipped or dead, and the queue's
//!   bookkeeping agrees (`World::audit`);
//! - the receiver saw every delivered action at least once, and per delivery id
//!   (`webhook-id`) at most once per recorded attempt; outside crash windows (attempts
//!   ended by a lease expiry) exactly once per attempt.
//!
//! Sizes have CI defaults; `AFTERCALL_SOAK=1` turns them up (see docs/testing.md), and
//! each knob can be set on its own: `AFTERCALL_FAULT_ACTIONS`, `AFTERCALL_FAULT_OUTAGE`,
//! `AFTERCALL_FAULT_KILL_EVERY`, `AFTERCALL_FAULT_SEED`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aftercall_queue::JobRecord;
use aftercall_tests::{
    Receiver, Reply, Worker, World, assert_job, assert_ok, call_event, deliveries, poll, settled,
};

fn soak() -> bool {
    std::env::var("AFTERCALL_SOAK").is_ok_and(|v| v == "1")
}

fn knob(name: &str, ci: usize, soak_value: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}: `{v}` is not a number")),
        Err(_) if soak() => soak_value,
        Err(_) => ci,
    }
}

fn knob_duration(name: &str, ci: Duration, soak_value: Duration) -> Duration {
    match std::env::var(name) {
        Ok(v) => {
            aftercall_core::config::parse_duration(&v).unwrap_or_else(|e| panic!("{name}: {e}"))
        }
        Err(_) if soak() => soak_value,
        Err(_) => ci,
    }
}

/// How many actions a scenario runs (one webhook per call).
fn actions(ci: usize) -> usize {
    knob("AFTERCALL_FAULT_ACTIONS", ci, 10_000)
}

/// Time for a scenario's queue to drain: generous, since CI machines are shared.
fn drain_time(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(n as u64 * 20)
}

/// A tiny deterministic generator (xorshift), so a failing run can be replayed by seed.
struct Rng(u64);
impl Rng {
    fn from_env() -> Rng {
        let seed = knob("AFTERCALL_FAULT_SEED", 0x5eed_f00d, 0x5eed_f00d) as u64;
        eprintln!("AFTERCALL_FAULT_SEED={seed}");
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls the queue until `calls` calls are known and nothing is queued, running or
/// scheduled; panics with the stats at the deadline.
async fn drain(w: &World, calls: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match w.queue.stats().await {
            Ok(s) if s.calls as usize >= calls && s.queued + s.running + s.scheduled == 0 => {
                return;
            }
            Ok(s) if Instant::now() > deadline => {
                panic!("queue did not drain within {timeout:?}: {s:?}")
            }
            Err(e) if Instant::now() > deadline => panic!("stats: {e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every action job's record, from the fan-out index.
async fn action_records(w: &World) -> Vec<JobRecord> {
    let mut c = w.raw().await;
    let fanout: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&w.queue.keys().fanout)
        .query_async(&mut c)
        .await
        .expect("fanout");
    let ids: Vec<String> = fanout
        .values()
        .flat_map(|v| serde_json::from_str::<Vec<String>>(v).expect("fanout ids"))
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        out.extend(w.queue.jobs(chunk).await.expect("job records"));
    }
    out
}

/// What a scenario ended with.
#[derive(Debug, Default)]
struct Tally {
    delivered: usize,
    skipped: usize,
    dead: usize,
    /// Requests the receiver got.
    requests: usize,
    /// Requests beyond the first per delivery id.
    duplicates: usize,
    /// Attempts ended by a lease expiry (a crash window).
    lease_expiries: usize,
    /// The most lease expiries one job had.
    max_expiries: usize,
    attempts: usize,
}

/// Checks the conservation law for `expected` actions against what the receivers got,
/// and returns the counts. Per job, every attempt that recorded an answer made exactly
/// one request, and an attempt ended by a lease expiry (a crash window) at most one.
/// `uncounted` allows that many more requests per job: a job cut off by the shutdown
/// grace period is returned to the queue without counting the attempt it had started.
async fn conservation(
    w: &World,
    got: &[aftercall_tests::Received],
    expected: usize,
    uncounted: usize,
) -> Tally {
    let audit = w.audit().await;
    assert!(
        audit.violations.is_empty(),
        "queue bookkeeping: {} violations, e.g. {:?}",
        audit.violations.len(),
        &audit.violations[..audit.violations.len().min(5)]
    );
    assert_eq!(
        audit.actions_settled(),
        expected,
        "every action ends delivered, skipped or dead: {:?}",
        audit.by_state
    );
    assert_eq!(audit.actions_total(), expected, "{:?}", audit.by_state);
    let per_id = deliveries(got);
    // The same delivery id for every request of one call's webhook.
    let mut ids_per_call: HashMap<String, std::collections::BTreeSet<String>> = HashMap::new();
    for r in got {
        let call = r.json()["call_id"].as_str().unwrap_or("?").to_string();
        ids_per_call
            .entry(call)
            .or_default()
            .insert(r.header("webhook-id").unwrap_or("").to_string());
    }
    for (call, ids) in &ids_per_call {
        assert_eq!(
            ids.len(),
            1,
            "call {call} was sent under several ids: {ids:?}"
        );
    }
    let mut t = Tally {
        requests: got.len(),
        ..Default::default()
    };
    let records = action_records(w).await;
    assert_eq!(records.len(), expected);
    let mut problems = Vec::new();
    for r in &records {
        let reqs = per_id.get(&r.id).copied().unwrap_or(0);
        let expiries = r
            .history
            .iter()
            .filter(|h| h.outcome == aftercall_core::AttemptOutcome::LeaseExpired)
            .count();
        let answered = r.history.len() - expiries;
        t.lease_expiries += expiries;
        t.max_expiries = t.max_expiries.max(expiries);
        t.attempts += r.history.len();
        t.duplicates += reqs.saturating_sub(1);
        let delivered_entries = r
            .history
            .iter()
            .filter(|h| h.outcome == aftercall_core::AttemptOutcome::Delivered)
            .count();
        match r.state.state.as_str() {
            "delivered" => {
                t.delivered += 1;
                if delivered_entries != 1 || reqs == 0 {
                    problems.push(format!(
                        "{}: delivered with {delivered_entries} delivered attempts and {reqs} requests",
                        r.id
                    ));
                }
            }
            "skipped" => t.skipped += 1,
            "dead" => t.dead += 1,
            other => problems.push(format!("{}: ended {other}", r.id)),
        }
        // Each attempt that recorded an answer made exactly one request; an attempt cut
        // short by a crash made at most one.
        if !(answered <= reqs && reqs <= r.history.len() + uncounted) {
            problems.push(format!(
                "{}: {reqs} requests for {} attempts ({expiries} lease expiries): {:?}",
                r.id,
                r.history.len(),
                r.history
                    .iter()
                    .map(|h| (h.outcome, h.status, h.error.clone()))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    let known: std::collections::HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let unknown: Vec<_> = per_id
        .keys()
        .filter(|id| !known.contains(id.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "requests under unknown ids: {unknown:?}"
    );
    t
}

fn report(name: &str, t: &Tally, started: Instant, extra: &str) {
    eprintln!(
        "[{name}] {:.1}s: delivered {} skipped {} dead {} | {} requests, {} repeated (same id), {} attempts, {} lease expiries (at most {} per job){extra}",
        started.elapsed().as_secs_f64(),
        t.delivered,
        t.skipped,
        t.dead,
        t.requests,
        t.duplicates,
        t.attempts,
        t.lease_expiries,
        t.max_expiries
    );
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loop_on_several_workers_loses_nothing() {
    let started = Instant::now();
    let n = actions(600);
    let every = knob_duration(
        "AFTERCALL_FAULT_KILL_EVERY",
        Duration::from_millis(400),
        Duration::from_millis(400),
    );
    let w = World::with_env(&[
        ("AFTERCALL_LEASE", "1s"),
        ("AFTERCALL_CONCURRENCY", "8"),
        // A job in flight at many kills must not run out of attempts.
        ("AFTERCALL_MAX_ATTEMPTS", "25"),
    ])
    .await;
    let rx = w
        .receiver_for("a1", Reply::status(200).delay(Duration::from_millis(80)))
        .await;
    w.enqueue_range("k", "a1", 0..n).await;
    let mut workers: Vec<Worker> = (0..3).map(|_| w.worker()).collect();
    let mut rng = Rng::from_env();
    let mut kills = 0;
    let deadline = Instant::now() + drain_time(n);
    loop {
        let s = w.queue.stats().await.unwrap();
        if s.queued + s.running + s.scheduled == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {s:?}");
        // Pacing of the fault, not a wait for a condition.
        tokio::time::sleep(every).await;
        let victim = rng.below(workers.len() as u64) as usize;
        workers[victim].kill9();
        kills += 1;
        workers[victim] = w.worker();
    }
    drain(&w, n, drain_time(n)).await;
    assert!(
        kills >= 3,
        "only {kills} kills: the run was too short to test anything"
    );
    let t = conservation(&w, &rx.received(), n, 0).await;
    assert_eq!((t.delivered, t.dead), (n, 0));
    assert!(
        t.duplicates <= t.lease_expiries,
        "duplicates only from crash windows"
    );
    report("kill -9 loop", &t, started, &format!(", {kills} kills"));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restart_mid_run_keeps_every_acknowledged_event() {
    let started = Instant::now();
    let n = actions(300);
    let mut w = World::new().await;
    w.set("AFTERCALL_MAX_ATTEMPTS", "10");
    let rx = w
        .receiver_for("a1", Reply::status(200).delay(Duration::from_millis(10)))
        .await;
    let mut workers: Vec<Worker> = (0..2).map(|_| w.worker()).collect();

    // A producer pushing one event at a time, as a web handler would, recording what
    // Redis acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Default::default();
    let failed: Arc<Mutex<Vec<String>>> = Default::default();
    let producer = {
        let (q, acked, failed) = (w.queue.clone(), acked.clone(), failed.clone());
        tokio::spawn(async move {
            for i in 0..n {
                let id = format!("r{i}");
                let ev =
                    aftercall_core::CallEvent::parse(call_event(&id, "a1").as_bytes(), 1 << 20)
                        .unwrap();
                match q.enqueue(vec![ev]).await {
                    Ok(_) => acked.lock().unwrap().push(id),
                    Err(_) => failed.lock().unwrap().push(id),
                }
            }
        })
    };
    let half = poll(drain_time(n), || {
        let a = acked.lock().unwrap().len();
        async move { (a >= n / 2).then_some(()) }
    })
    .await;
    assert!(half.is_some(), "the producer got half way");
    let delivered_before = rx.count();
    w.redis.restart().await.unwrap(); // SIGKILL, then start on the same data
    let restarted_at = Instant::now();
    producer.await.unwrap();
    let (acked, failed) = (
        acked.lock().unwrap().clone(),
        failed.lock().unwrap().clone(),
    );
    // The producer's side of the contract: retry what failed (enqueue is idempotent).
    for id in &failed {
        let ev =
            aftercall_core::CallEvent::parse(call_event(id, "a1").as_bytes(), 1 << 20).unwrap();
        w.queue.enqueue(vec![ev]).await.expect("Redis is back");
    }
    drain(&w, n, drain_time(n)).await;
    for (i, wk) in workers.iter_mut().enumerate() {
        assert!(wk.is_running(), "worker {i} survived the restart");
    }
    // Nothing acknowledged was lost (AOF with appendfsync always).
    for id in &acked {
        let s = w.queue.call_status(id).await.unwrap();
        assert!(
            s.is_some_and(|s| settled(&s)),
            "acknowledged call {id} lost"
        );
    }
    let got = rx.received();
    assert!(
        got.iter().any(|r| r.at > restarted_at) && got.len() > delivered_before,
        "the same workers reconnected and delivered after the restart"
    );
    let t = conservation(&w, &got, n, 0).await;
    assert_eq!((t.delivered, t.dead), (n, 0));
    report(
        "redis restart",
        &t,
        started,
        &format!(
            ", {} acknowledged, {} failed during the restart and were re-sent",
            acked.len(),
            failed.len()
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_outage_fails_producers_clearly_and_workers_wait_then_resume() {
    outage_scenario(Outage::Down).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_hanging_times_producers_out_and_workers_wait_then_resume() {
    outage_scenario(Outage::Hung).await;
}

/// How Redis goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outage {
    /// Killed: connections are refused.
    Down,
    /// SIGSTOP: connections are accepted by the kernel and nothing answers, as with a
    /// network partition or a frozen host.
    Hung,
}

async fn redis_pid(w: &World) -> u32 {
    w.info("server")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id in INFO")
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

async fn outage_scenario(mode: Outage) {
    let started = Instant::now();
    let n = actions(200);
    let outage = knob_duration(
        "AFTERCALL_FAULT_OUTAGE",
        Duration::from_secs(5),
        Duration::from_secs(30),
    );
    let mut w = World::with_env(&[
        // A frozen Redis runs the fetches that timed out once it thaws: each leases a batch
        // to nobody, and each such job loses an attempt (see the report's lease expiries).
        ("AFTERCALL_MAX_ATTEMPTS", "20"),
        ("AFTERCALL_REDIS_TIMEOUT", "2s"),
    ])
    .await;
    let rx = w
        .receiver_for("a1", Reply::status(200).delay(Duration::from_millis(20)))
        .await;
    let pid = redis_pid(&w).await;
    let mut workers: Vec<Worker> = (0..2).map(|_| w.worker()).collect();
    w.enqueue_range("o", "a1", 0..n / 2).await;
    // Take Redis away while work is flowing.
    rx.wait_for(n / 8, drain_time(n)).await;
    match mode {
        Outage::Down => w.redis.kill().await,
        Outage::Hung => signal(pid, "STOP"),
    }
    let down_at = Instant::now();

    // Producers, while the workers' CPU is measured over `outage`: the CLI fails with
    // one clear line; the Rust API returns an error.
    let ev = aftercall_core::CallEvent::parse(call_event("during-api", "a1").as_bytes(), 1 << 20)
        .unwrap();
    let api = {
        let q = w.queue.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let res = q.enqueue(vec![ev]).await;
            (res.is_err(), t.elapsed())
        })
    };
    let cpu_before: Vec<Duration> = workers.iter().map(|w| w.cpu_time()).collect();
    let measured_from = Instant::now();
    let (out, cli_took) = std::thread::scope(|s| {
        let cli = s.spawn(|| {
            let t = Instant::now();
            let out = w.cli(&["enqueue"], &call_event("during-cli", "a1"));
            (out, t.elapsed())
        });
        // Pacing of the fault: the outage lasts this long whatever happens.
        std::thread::sleep(outage);
        cli.join().unwrap()
    });
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.starts_with("aftercall: ") && err.contains("Redis") && err.lines().count() == 1,
        "{err}"
    );
    assert!(cli_took < Duration::from_secs(10), "took {cli_took:?}");
    let (api_failed, api_took) = api.await.unwrap();
    assert!(
        api_failed,
        "enqueue while Redis is away must fail, not pretend"
    );
    assert!(api_took < Duration::from_secs(15), "took {api_took:?}");

    // Workers: alive, and idle rather than spinning.
    let wall = measured_from.elapsed();
    let mut cpu_used = Vec::new();
    for (i, (wk, before)) in workers.iter_mut().zip(&cpu_before).enumerate() {
        assert!(
            wk.is_running(),
            "worker {i} crashed during the outage:\n{}",
            wk.log_text()
        );
        let used = wk.cpu_time().saturating_sub(*before);
        cpu_used.push(used);
        // A spinning loop would use about the whole wall time (a core); backing off
        // reconnects use a few milliseconds. 5 % leaves room for a loaded CI machine.
        assert!(
            used.as_secs_f64() < 0.05 * wall.as_secs_f64() + 0.1,
            "worker {i} used {used:?} of CPU in {wall:?} of outage"
        );
    }
    let outage_total = down_at.elapsed();
    match mode {
        Outage::Down => w.redis.restart().await.unwrap(),
        Outage::Hung => signal(pid, "CONT"),
    }
    // Nothing half-written. The CLI never got to send its event. The API's command may
    // have been sent before the timeout and run once Redis woke up: then the event is
    // there whole (the producer's retry would be a duplicate), otherwise not at all;
    // the audit below checks every job is complete. (The test's own connection may fail
    // its first command after the outage, then reconnects.)
    let mut extra = 0;
    for id in ["during-cli", "during-api"] {
        let known = poll(Duration::from_secs(10), || async {
            w.queue.call_status(id).await.ok().map(|s| s.is_some())
        })
        .await
        .expect("Redis answers again");
        if known {
            assert!(
                mode == Outage::Hung && id == "during-api",
                "{id} was written though its producer got an error"
            );
            extra += 1;
        }
    }
    let rest: String = (n / 2..n)
        .map(|i| call_event(&format!("o{i}"), "a1") + "\n")
        .collect();
    let out = w.cli(&["enqueue", "-"], &rest);
    assert_ok(&out, "aftercall enqueue -");
    drain(&w, n + extra, drain_time(n)).await;
    for (i, wk) in workers.iter_mut().enumerate() {
        assert!(wk.is_running(), "worker {i} after the outage");
    }
    let t = conservation(&w, &rx.received(), n + extra, 0).await;
    assert_eq!((t.delivered, t.dead), (n + extra, 0));
    report(
        &format!("redis outage ({mode:?})"),
        &t,
        started,
        &format!(
            ", outage {outage_total:.1?}, worker CPU during its last {cpu_used:?} over {wall:?}, CLI failed in {cli_took:?}, API in {api_took:?}"
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn flapping_receivers_end_delivered_or_dead_with_every_attempt() {
    let started = Instant::now();
    let n = actions(150);
    let w = World::with_env(&[
        ("AFTERCALL_HTTP_TIMEOUT", "500ms"),
        ("AFTERCALL_MAX_ATTEMPTS", "5"),
        ("AFTERCALL_RETRY_BASE", "100ms"),
        ("AFTERCALL_MAX_RETRY_AFTER", "1s"),
        ("AFTERCALL_CONCURRENCY", "16"),
    ])
    .await;
    let rx = Receiver::start().await.unwrap();
    let mut rng = Rng::from_env();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let script: Vec<Reply> = (0..n * 3)
        .map(|_| {
            let (kind, reply) = match rng.below(100) {
                0..=34 => ("200", Reply::status(200)),
                35..=49 => ("500", Reply::status(500).body("flap")),
                50..=59 => (
                    "timeout",
                    Reply::status(200).delay(Duration::from_millis(900)),
                ),
                60..=69 => ("reset", Reply::reset()),
                70..=79 => ("429", Reply::status(429).header("retry-after", "1")),
                80..=89 => (
                    "slow body",
                    Reply::status(200)
                        .body("slow-but-fine")
                        .trickle(Duration::from_millis(10)),
                ),
                90..=94 => (
                    "slow 503 body",
                    Reply::status(503)
                        .body("x".repeat(40))
                        .trickle(Duration::from_millis(30)),
                ),
                _ => ("400", Reply::status(400).body("bad")),
            };
            *kinds.entry(kind).or_default() += 1;
            reply
        })
        .collect();
    rx.script(script);
    w.webhook_agent("a1", &rx.url).await;
    let _workers: Vec<Worker> = (0..2).map(|_| w.worker()).collect();
    w.enqueue_range("f", "a1", 0..n).await;
    drain(&w, n, drain_time(n)).await;
    let got = rx.received();
    let t = conservation(&w, &got, n, 0).await;
    assert_eq!(t.delivered + t.dead, n);
    // No crash here, so every attempt made exactly one request.
    assert_eq!(t.lease_expiries, 0);
    assert_eq!(t.requests, t.attempts, "one request per attempt");
    // Dead letters carry their attempts: a 400 after any number of tries, or the whole
    // budget of retryable failures, each with its error.
    for r in action_records(&w).await {
        assert_eq!(r.attempts as usize, r.history.len(), "{}", r.id);
        if r.state.state == "dead" {
            let permanent = r.last_status() == Some(400);
            assert!(
                permanent || r.history.len() == 5,
                "{}: dead after {} attempts: {:?}",
                r.id,
                r.history.len(),
                r.history
            );
            assert!(r.history.iter().all(|h| h.error.is_some()));
        }
    }
    // The timeouts, resets and slow bodies were really played and classified.
    let errors: Vec<String> = action_records(&w)
        .await
        .iter()
        .flat_map(|r| r.history.iter().filter_map(|h| h.error.clone()))
        .collect();
    for want in ["timeout", "HTTP 429", "HTTP 500"] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "no `{want}` among the errors"
        );
    }
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("transport error") || e.starts_with("connection")),
        "no reset among the errors: {:?}",
        &errors[..errors.len().min(20)]
    );
    report(
        "flapping receivers",
        &t,
        started,
        &format!(", script {kinds:?}"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_run_finishes_in_flight_jobs_within_the_grace_period() {
    let started = Instant::now();
    let n = actions(60).min(2_000);
    let w = World::with_env(&[("AFTERCALL_CONCURRENCY", "8"), ("AFTERCALL_GRACE", "5s")]).await;
    let (rx, mut first) = w
        .busy_worker(Duration::from_millis(300), ("s", n), 4, drain_time(n))
        .await;
    let term_at = Instant::now();
    first.sigterm();
    let status = first
        .wait_exit(Duration::from_secs(15))
        .expect("the worker exits after SIGTERM");
    let took = term_at.elapsed();
    assert!(status.success(), "clean exit; log:\n{}", first.log_text());
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(2),
        "took {took:?}"
    );
    let st = w.queue.stats().await.unwrap();
    assert_eq!(st.running, 0, "nothing left leased");
    let seen_by_first = rx.count();
    let _second = w.worker();
    drain(&w, n, drain_time(n)).await;
    let t = conservation(&w, &rx.received(), n, 0).await;
    assert_eq!((t.delivered, t.dead), (n, 0));
    // The grace period outlasted every request: in-flight jobs finished, none twice.
    assert_eq!(t.duplicates, 0, "exactly once");
    report(
        "sigterm",
        &t,
        started,
        &format!(", exit {took:?} after SIGTERM, {seen_by_first} requests before"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_short_grace_returns_cut_off_jobs_and_loses_nothing() {
    let started = Instant::now();
    let n = 40;
    let w = World::with_env(&[("AFTERCALL_CONCURRENCY", "8"), ("AFTERCALL_GRACE", "300ms")]).await;
    let (rx, mut first) = w
        .busy_worker(
            Duration::from_millis(1500),
            ("g", n),
            8,
            Duration::from_secs(20),
        )
        .await;
    let term_at = Instant::now();
    first.sigterm();
    first
        .wait_exit(Duration::from_secs(10))
        .expect("the worker exits after SIGTERM");
    let took = term_at.elapsed();
    assert!(took < Duration::from_secs(3), "grace 300 ms, took {took:?}");
    let st = w.queue.stats().await.unwrap();
    assert_eq!(st.running, 0, "cut-off jobs were returned, not left leased");
    let log = first.log_text();
    assert!(
        log.contains("returned unfinished jobs to the queue"),
        "{log}"
    );
    let _second = w.worker();
    drain(&w, n, Duration::from_secs(60)).await;
    let got = rx.received();
    let t = conservation(&w, &got, n, 1).await;
    assert_eq!((t.delivered, t.dead), (n, 0));
    // Returned jobs were re-sent under the same id: duplicates only for those in flight.
    assert!(
        t.duplicates <= 8,
        "{} duplicates, concurrency 8",
        t.duplicates
    );
    report(
        "sigterm, short grace",
        &t,
        started,
        &format!(", exit {took:?} after SIGTERM"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_payloads_are_dead_lettered_and_the_pool_keeps_working() {
    let started = Instant::now();
    let w = World::with_env(&[
        ("AFTERCALL_CONCURRENCY", "8"),
        ("AFTERCALL_MAX_ATTEMPTS", "3"),
        ("AFTERCALL_LEASE", "1s"),
    ])
    .await;
    let rx = w.receiver_for("a1", Reply::ok()).await;
    // Queued, not yet fetched: overwrite two jobs' payloads in place, so each is fetched
    // in one batch with good jobs.
    let events: Vec<_> = (0..10)
        .map(|i| {
            aftercall_core::CallEvent::parse(call_event(&format!("p{i}"), "a1").as_bytes(), 1 << 20)
                .unwrap()
        })
        .collect();
    let enq = w.queue.enqueue(events).await.unwrap();
    let mut raw = w.raw().await;
    let data = w.queue.keys().data.clone();
    let poison: [(&str, Vec<u8>); 2] = [
        ("p3", b"{\"id\": not json at all".to_vec()),
        ("p6", vec![0xff, 0xfe, 0x00, 0x9f, b'{', 0xc3]),
    ];
    for (call, bytes) in &poison {
        let id = &enq.iter().find(|e| e.call_id == *call).unwrap().job_id;
        let _: () = redis::cmd("HSET")
            .arg(&data)
            .arg(id)
            .arg(bytes.as_slice())
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    // And one whose data is gone altogether (its id still on the ready list).
    let gone = &enq.iter().find(|e| e.call_id == "p8").unwrap().job_id;
    let _: () = redis::cmd("HDEL")
        .arg(&data)
        .arg(gone)
        .query_async(&mut raw)
        .await
        .unwrap();
    let mut worker = w.worker();
    for i in 0..10 {
        let call = format!("p{i}");
        let s = w.wait_call(&call, Duration::from_secs(30), settled).await;
        if call == "p8" {
            let r = &s.call_ended;
            assert_job(r, "dead", 1);
            assert!(
                r.last_error()
                    .unwrap()
                    .contains("no data is stored under its id"),
                "{:?}",
                r.last_error()
            );
        } else if poison.iter().any(|(c, _)| *c == call) {
            let r = &s.call_ended;
            assert_eq!(
                (r.state.state.as_str(), r.attempts),
                ("dead", 1),
                "{call}: {:?}; log:\n{}",
                r.state,
                worker.log_text()
            );
            assert!(
                r.last_error().unwrap().contains("undecodable"),
                "{:?}",
                r.last_error()
            );
        } else {
            assert!(
                s.call_ended.state.state == "fanned_out",
                "{call}: the call itself {:?} after {} attempts {:?}",
                s.call_ended.state,
                s.call_ended.attempts,
                s.call_ended.history
            );
            assert_eq!(
                s.actions[0].state.state, "delivered",
                "{call}: {:?}",
                s.actions[0].state
            );
            assert_eq!(
                s.actions[0].attempts, 1,
                "{call}: not held up by its batch-mates"
            );
        }
    }
    let dead = w.dead_letters_by_error("undecodable");
    assert_eq!(dead.len(), 3, "{dead:?}");
    // The pool keeps working.
    w.enqueue_range("after", "a1", 0..5).await;
    for s in w
        .settled_range("after", 0..5, Duration::from_secs(20))
        .await
    {
        let id = &s.call_id;
        assert_eq!(
            s.actions.len(),
            1,
            "{id}: {:?} {:?}",
            s.call_ended.state,
            s.call_ended.history
        );
        assert_eq!(s.actions[0].state.state, "delivered");
    }
    assert!(worker.is_running());
    assert_eq!(rx.count(), 7 + 5, "each good call delivered once");
    let audit = w.audit().await;
    // The one job this test robbed of its data is the audit's only finding.
    let gone = gone.clone();
    assert!(
        audit.violations.len() == 2 && audit.violations.iter().all(|v| v.contains(&gone)),
        "{:?}",
        audit.violations
    );
    eprintln!(
        "[undecodable] {:.1}s: {:?}",
        started.elapsed().as_secs_f64(),
        audit.by_state
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_kills_its_worker_every_time_is_dead_lettered_after_its_budget() {
    // The crash is a real one: the worker holding the job gets SIGKILL the moment its
    // request reaches the receiver, as an OOM kill or a segfault would end it. No
    // test-only hook in the product, and Redis sees exactly what a crash looks like.
    let started = Instant::now();
    let w = World::with_env(&[
        ("AFTERCALL_LEASE", "1s"),
        ("AFTERCALL_MAX_ATTEMPTS", "3"),
        ("AFTERCALL_HTTP_TIMEOUT", "60s"),
    ])
    .await;
    let deadly = Receiver::answering(Reply::status(200).delay(Duration::from_secs(3600))).await;
    let fine = Receiver::start().await.unwrap();
    w.webhook_agent("deadly", &deadly.url).await;
    w.webhook_agent("fine", &fine.url).await;
    // Fresh ids per start (as in production), so the holder of the job is known.
    let mut generation = 0;
    let mut start = |w: &World, slot: usize| {
        generation += 1;
        w.worker_with(&[("AFTERCALL_WORKER_ID", &format!("w{slot}-{generation}"))])
    };
    let mut workers: Vec<Worker> = (0..2).map(|slot| start(&w, slot)).collect();
    w.enqueue_range("poison", "deadly", 0..1).await;
    let mut kills = 0;
    let mut good = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = w.queue.call_status("poison0").await.unwrap();
        if let Some(s) = &s
            && settled(s)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not dead-lettered: {s:?}");
        // Healthy work keeps flowing around the crashes.
        w.enqueue_range("ok", "fine", good..good + 2).await;
        good += 2;
        let arrived = deadly.count();
        if arrived > kills {
            // The poison is in flight: kill whichever worker holds it. The status is read
            // after the request arrived, and only one that names that attempt counts: an
            // older one still names the previous (already killed) holder.
            let s = w.queue.call_status("poison0").await.unwrap();
            let job = s.as_ref().and_then(|s| s.actions.first());
            let holder = job
                .filter(|a| a.attempts as usize == arrived && a.state.state == "running")
                .and_then(|a| a.state.worker.clone())
                .unwrap_or_default();
            let slot = (0..workers.len()).find(|i| holder.starts_with(&format!("w{i}-")));
            if let Some(i) = slot {
                workers[i].kill9();
                kills += 1;
                workers[i] = start(&w, i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = w.status("poison0").await;
    let a = &s.actions[0];
    assert_job(a, "dead", 3);
    assert_eq!(kills, 3, "one crash per attempt");
    assert!(
        a.history
            .iter()
            .all(|h| h.outcome == aftercall_core::AttemptOutcome::LeaseExpired),
        "{:?}",
        a.history
    );
    assert_eq!(deadly.count(), 3);
    assert_eq!(
        deliveries(&deadly.received()).len(),
        1,
        "same delivery id each time"
    );
    assert_eq!(w.dead_letters_by_error("lease_expired").len(), 1);
    // The pool kept working throughout.
    drain(&w, good + 1, Duration::from_secs(30)).await;
    for i in 0..good {
        let s = w.status(&format!("ok{i}")).await;
        assert_eq!(s.actions[0].state.state, "delivered", "ok{i}");
    }
    let t = conservation(
        &w,
        &[deadly.received(), fine.received()].concat(),
        good + 1,
        0,
    )
    .await;
    report(
        "crash every time",
        &t,
        started,
        &format!(", {kills} kills, {good} healthy calls delivered meanwhile"),
    );
}
