//! Test harness for the end-to-end suite: a real `redis-server` per test on a free
//! port, real HTTP receivers on 127.0.0.1, and the built `aftercall-worker` and
//! `aftercall` binaries run as processes (so they can be killed with SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::collections::{BTreeMap, HashMap};

use aftercall_queue::{CallStatus, JobRecord, Queue, QueueConfig};
pub use aftercall_testkit::{
    ADMIN, Http, READ, Received, Receiver, RedisOptions, RedisServer, Reply, TestQueue, free_port,
    plain_url,
};
use serde_json::json;

/// Where cargo put the binaries: next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// One test's world: a [`TestQueue`] (its own Redis, queue prefix and scratch folder,
/// reached through `Deref`: `w.redis`, `w.queue`, `w.dir`) and the environment its
/// worker and CLI processes get.
pub struct World {
    pub t: TestQueue,
    /// The URL every process of this world uses to reach `redis`.
    pub url: String,
    pub prefix: String,
    /// Extra environment for every worker started by this world.
    pub env: Vec<(String, String)>,
}

impl std::ops::Deref for World {
    type Target = TestQueue;
    fn deref(&self) -> &TestQueue {
        &self.t
    }
}

impl std::ops::DerefMut for World {
    fn deref_mut(&mut self) -> &mut TestQueue {
        &mut self.t
    }
}

impl World {
    pub async fn new() -> World {
        World::with_redis(RedisOptions::default(), plain_url).await
    }

    /// A world whose workers and CLI get `env` on top of the defaults (see [`World::set`]).
    pub async fn with_env(env: &[(&str, &str)]) -> World {
        World::partitioned(1, env).await
    }

    /// A world whose Redis runs with `opts` and is reached at `url(port)` (e.g. with
    /// credentials for an ACL user, or `rediss://` on a TLS port). Its queue prefix
    /// starts with `t` (the ACL test's key pattern counts on it).
    pub async fn with_redis(opts: RedisOptions, url: impl FnOnce(u16) -> String) -> World {
        World::start(opts, url, 1).await
    }

    /// A world whose queue, workers and CLI use `AFTERCALL_PARTITIONS=n`, plus `env`.
    pub async fn partitioned(n: usize, env: &[(&str, &str)]) -> World {
        let mut w = World::start(RedisOptions::default(), plain_url, n).await;
        if n > 1 {
            w.set("AFTERCALL_PARTITIONS", &n.to_string());
        }
        for (k, v) in env {
            w.set(k, v);
        }
        w
    }

    async fn start(
        opts: RedisOptions,
        url: impl FnOnce(u16) -> String,
        partitions: usize,
    ) -> World {
        let t = TestQueue::start_at("t", opts, url, |c| {
            c.response_timeout = QueueConfig::default().response_timeout;
            c.partitions = partitions;
        })
        .await;
        let env = vec![
            ("AFTERCALL_ALLOW_CIDRS".into(), "127.0.0.0/8".into()),
            ("AFTERCALL_RETRY_BASE".into(), "200ms".into()),
            ("AFTERCALL_RETRY_FACTOR".into(), "2".into()),
            ("AFTERCALL_MAX_ATTEMPTS".into(), "4".into()),
            ("AFTERCALL_LEASE".into(), "2s".into()),
            ("AFTERCALL_GRACE".into(), "5s".into()),
            // Every receiver of a test is 127.0.0.1, one destination: tests of retries
            // and dead letters would otherwise open its breaker for each other. The
            // breaker's own tests turn it on (tests/tests/destinations.rs).
            ("AFTERCALL_BREAKERS".into(), "off".into()),
            (
                "AFTERCALL_OUTBOX".into(),
                t.dir.join("outbox").display().to_string(),
            ),
        ];
        World {
            url: t.url().to_string(),
            prefix: t.queue.config().prefix.clone(),
            t,
            env,
        }
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
    }

    /// Gives the world's workers an API on a free port that takes `tokens` (as in
    /// `AFTERCALL_API_TOKENS`); returns a client for it.
    pub fn with_api(&mut self, tokens: &str) -> Http {
        let port = free_port();
        self.set("AFTERCALL_API_ADDR", &format!("127.0.0.1:{port}"));
        self.set("AFTERCALL_API_TOKENS", tokens);
        Http::new(format!("http://127.0.0.1:{port}"))
    }

    /// [`World::with_api`] with one token, [`ADMIN`].
    pub fn with_admin_api(&mut self) -> Http {
        self.with_api(&format!("admin:{ADMIN}"))
    }

    fn base_env(&self, cmd: &mut Command) {
        cmd.env("AFTERCALL_REDIS_URL", &self.url)
            .env("AFTERCALL_QUEUE_PREFIX", &self.prefix)
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }

    /// Starts a worker process; its log goes to `<dir>/worker-N.log`.
    pub fn worker(&self) -> Worker {
        self.worker_with(&[])
    }

    /// Starts a worker with extra environment on top of the world's.
    pub fn worker_with(&self, extra: &[(&str, &str)]) -> Worker {
        let n = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("worker-"))
                })
                .count()
            })
            .unwrap_or(0);
        let log = self.dir.join(format!("worker-{n}.log"));
        let mut cmd = Command::new(bin("aftercall-worker"));
        self.base_env(&mut cmd);
        cmd.envs(extra.iter().map(|(k, v)| (*k, *v)));
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        Worker {
            child: cmd.spawn().expect("start worker"),
            log,
        }
    }

    /// Runs the CLI with `args`, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        self.cli_with(args, stdin, &[])
    }

    /// The dead letters `aftercall dlq list --error <class> --json` prints.
    pub fn dead_letters_by_error(&self, class: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&["dlq", "list", "--error", class, "--json"], "");
        assert_ok(&out, &format!("aftercall dlq list --error {class} --json"));
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a page");
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// Runs the CLI with extra environment.
    pub fn cli_with(&self, args: &[&str], stdin: &str, extra: &[(&str, &str)]) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(bin("aftercall"));
        self.base_env(&mut cmd);
        cmd.envs(extra.iter().map(|(k, v)| (*k, *v)));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start aftercall");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("aftercall output")
    }

    /// Configures `agent` through the CLI, as an operator would: `body` written to
    /// `<dir>/agent.json`, then `aftercall agents set <agent> --file <that file>`.
    pub fn cli_set_agent(&self, agent: &str, body: &str) -> Output {
        let file = self.dir.join("agent.json");
        std::fs::write(&file, body).expect("agent file");
        let file = file.to_str().expect("a UTF-8 path");
        self.cli(&["agents", "set", agent, "--file", file], "")
    }

    /// Stores the seed's agent body, its webhook pointed at `url`.
    pub async fn seed_agent(&self, agent_id: &str, webhook_url: &str) {
        let body = fixture("seed-agent.json")
            .replace("https://your-crm.com/api/call-completed", webhook_url);
        store_agent(&self.queue, agent_id, &body).await;
    }

    /// An agent with one webhook action.
    pub async fn webhook_agent(&self, agent_id: &str, url: &str) {
        let body = agent_config(Some("Test"), json!([{"type": "webhook", "url": url}]));
        store_agent(&self.queue, agent_id, &body).await;
    }

    /// A receiver answering `reply` (unless scripted otherwise), and `agent` with one
    /// webhook action to it.
    pub async fn receiver_for(&self, agent: &str, reply: Reply) -> Receiver {
        let rx = Receiver::answering(reply).await;
        self.webhook_agent(agent, &rx.url).await;
        rx
    }

    /// A receiver answering `reply` for `agent`'s one webhook action, and a worker to
    /// run it.
    pub async fn serving(&self, agent: &str, reply: Reply) -> (Receiver, Worker) {
        let rx = self.receiver_for(agent, reply).await;
        (rx, self.worker())
    }

    /// A worker with jobs in flight: `n` calls `prefix0`… for agent `a1`, whose
    /// receiver answers 200 after `delay`, returned once `reached` requests have reached
    /// the receiver (within `within`).
    pub async fn busy_worker(
        &self,
        delay: Duration,
        (prefix, n): (&str, usize),
        reached: usize,
        within: Duration,
    ) -> (Receiver, Worker) {
        let (rx, worker) = self.serving("a1", Reply::status(200).delay(delay)).await;
        self.enqueue_range(prefix, "a1", 0..n).await;
        rx.wait_for(reached, within).await;
        (rx, worker)
    }

    /// The status of a call that must be known.
    pub async fn status(&self, call_id: &str) -> CallStatus {
        let s = self.queue.call_status(call_id).await.expect("status");
        s.unwrap_or_else(|| panic!("call {call_id} unknown"))
    }

    /// Polls a call until `done` holds or the deadline passes; returns the last status.
    pub async fn wait_call(
        &self,
        call_id: &str,
        timeout: Duration,
        done: impl Fn(&CallStatus) -> bool,
    ) -> CallStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.queue.call_status(call_id).await.expect("status");
            if let Some(s) = s {
                if done(&s) || Instant::now() > deadline {
                    return s;
                }
            } else if Instant::now() > deadline {
                panic!("call {call_id} unknown after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl World {
    /// Enqueues the test call `call_id` of `agent` (see [`call_event`]).
    pub async fn push(&self, call_id: &str, agent: &str) {
        let event =
            aftercall_core::CallEvent::parse(call_event(call_id, agent).as_bytes(), 1 << 20)
                .expect("test event parses");
        self.queue.enqueue(vec![event]).await.expect("enqueue");
    }

    /// Enqueues the test call `call_id` of `agent` and waits for it to settle.
    pub async fn push_settled(&self, call_id: &str, agent: &str, timeout: Duration) -> CallStatus {
        self.push(call_id, agent).await;
        self.wait_call(call_id, timeout, settled).await
    }

    /// Enqueues `call_event(prefix{i}, agent)` for `i` in `range`, in batches, through
    /// the Rust producer API.
    pub async fn enqueue_range(&self, prefix: &str, agent: &str, range: std::ops::Range<usize>) {
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(500) {
            let events = chunk
                .iter()
                .map(|i| {
                    aftercall_core::CallEvent::parse(
                        call_event(&format!("{prefix}{i}"), agent).as_bytes(),
                        1 << 20,
                    )
                    .expect("test event parses")
                })
                .collect();
            self.queue.enqueue(events).await.expect("enqueue");
        }
    }

    /// Waits for calls `prefix{i}`, `i` in `range` (as [`World::enqueue_range`] made
    /// them), to settle, each within `timeout`; their statuses, in order.
    pub async fn settled_range(
        &self,
        prefix: &str,
        range: std::ops::Range<usize>,
        timeout: Duration,
    ) -> Vec<CallStatus> {
        let mut out = Vec::with_capacity(range.len());
        for i in range {
            out.push(
                self.wait_call(&format!("{prefix}{i}"), timeout, settled)
                    .await,
            );
        }
        out
    }

    /// Another handle on this world's queue, its configuration changed by `change`
    /// (encryption keys, a partition count).
    pub async fn connect_with(
        &self,
        change: impl FnOnce(&mut QueueConfig),
    ) -> Result<Queue, aftercall_queue::QueueError> {
        let mut cfg = self.queue.config().clone();
        change(&mut cfg);
        Queue::connect(cfg).await
    }

    /// A handle on this world's queue with `AFTERCALL_ENCRYPTION_KEYS` = `keys`.
    pub async fn keyed(&self, keys: &str) -> Queue {
        let ring = aftercall_queue::Keyring::parse(keys).expect("test keys parse");
        self.connect_with(|c| c.encryption = Some(ring))
            .await
            .expect("connects with the keys")
    }

    /// A raw connection to this world's Redis (for fault injection and audits).
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.queue.config().url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("raw redis connection")
    }

    /// Every key's content under the world's Redis, as text (hashes, lists, sets, sorted
    /// sets, streams, strings).
    pub async fn dump(&self) -> String {
        let mut c = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut out = String::new();
        for k in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap();
            // The command that reads a key of each type whole.
            let read: &[&str] = match kind.as_str() {
                "hash" => &["HGETALL"],
                "list" => &["LRANGE", "0", "-1"],
                "zset" => &["ZRANGE", "0", "-1"],
                "set" => &["SMEMBERS"],
                "stream" => &["XRANGE", "-", "+"],
                _ => &["GET"],
            };
            let mut cmd = redis::cmd(read[0]);
            cmd.arg(&k).arg(&read[1..]);
            let v: redis::Value = cmd.query_async(&mut c).await.unwrap();
            out.push_str(&format!("{k}: "));
            flatten(&v, &mut out);
            out.push('\n');
        }
        out
    }

    /// One section of Redis's `INFO` (`server`, `commandstats`, ...).
    pub async fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.raw().await)
            .await
            .expect("INFO")
    }

    /// Reads the whole queue straight from Redis and checks its bookkeeping: every job is
    /// in exactly one place (ready, running, scheduled, dead or done) and its state
    /// agrees with that place.
    /// [`World::audit`], failing the test on any inconsistency it finds.
    pub async fn audit_clean(&self) -> Audit {
        let audit = self.audit().await;
        assert!(audit.violations.is_empty(), "{:?}", audit.violations);
        audit
    }

    pub async fn audit(&self) -> Audit {
        let k = self.queue.keys().clone();
        let mut c = self.raw().await;
        use redis::AsyncCommands;
        let data_ids: Vec<String> = c.hkeys(&k.data).await.expect("HKEYS");
        let mut hash =
            async |key: &str| -> HashMap<String, String> { c.hgetall(key).await.expect("HGETALL") };
        let (states, calls, fanout) = (
            hash(&k.state).await,
            hash(&k.calls).await,
            hash(&k.fanout).await,
        );
        let mut places: HashMap<String, Vec<&'static str>> = HashMap::new();
        for (place, ids) in job_places(&self.queue, &mut c).await {
            for id in ids {
                places.entry(id).or_default().push(place);
            }
        }
        let parents: std::collections::HashSet<&String> = calls.values().collect();
        let mut actions = std::collections::HashSet::new();
        for ids in fanout.values() {
            let ids: Vec<String> = serde_json::from_str(ids).expect("fanout ids");
            actions.extend(ids);
        }
        let mut a = Audit {
            calls: calls.len(),
            ..Default::default()
        };
        for id in &data_ids {
            let state = states
                .get(id)
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| v["state"].as_str().map(str::to_string))
                .unwrap_or_else(|| "<none>".into());
            let at = places.remove(id).unwrap_or_default();
            let agrees = match at.as_slice() {
                ["ready"] => state == "queued",
                ["running"] => state == "running",
                ["scheduled"] => state == "scheduled",
                ["dead"] => state == "dead",
                ["done"] => matches!(state.as_str(), "delivered" | "skipped" | "fanned_out"),
                _ => false,
            };
            if !agrees {
                a.violations
                    .push(format!("{id}: state {state} but in {at:?}"));
            }
            let kind = if parents.contains(id) {
                "call_ended"
            } else if actions.contains(id) {
                "action"
            } else {
                a.violations.push(format!(
                    "{id}: neither a call's job nor a fanned-out action"
                ));
                continue;
            };
            *a.by_state.entry(format!("{kind}:{state}")).or_default() += 1;
        }
        for (id, at) in places {
            a.violations.push(format!("{id}: in {at:?} without data"));
        }
        let with_data: std::collections::HashSet<&String> = data_ids.iter().collect();
        for id in calls.values() {
            if !with_data.contains(id) {
                a.violations.push(format!("call job {id}: no data"));
            }
        }
        a
    }
}

/// What [`World::audit`] found: counts per `kind:state` and every inconsistency.
#[derive(Debug, Default)]
pub struct Audit {
    pub calls: usize,
    /// `call_ended:fanned_out`, `action:delivered`, `action:dead`, ...
    pub by_state: BTreeMap<String, usize>,
    pub violations: Vec<String>,
}

impl Audit {
    pub fn count(&self, key: &str) -> usize {
        self.by_state.get(key).copied().unwrap_or(0)
    }
    /// Actions that ended: delivered + skipped + dead.
    pub fn actions_settled(&self) -> usize {
        self.count("action:delivered") + self.count("action:skipped") + self.count("action:dead")
    }
    pub fn actions_total(&self) -> usize {
        self.by_state
            .iter()
            .filter(|(k, _)| k.starts_with("action:"))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The ids in each place a job can be: the ready list, then the running, scheduled,
/// dead and done sets, read straight from Redis.
pub async fn job_places(
    queue: &Queue,
    c: &mut redis::aio::MultiplexedConnection,
) -> Vec<(&'static str, Vec<String>)> {
    let k = queue.keys();
    let ready: Vec<String> = redis::cmd("LRANGE")
        .arg(&k.ready)
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .expect("ready");
    let mut out = vec![("ready", ready)];
    for (place, key) in [
        ("running", &k.running),
        ("scheduled", &k.scheduled),
        ("dead", &k.dead),
        ("done", &k.done),
    ] {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(c)
            .await
            .expect("zrange");
        out.push((place, ids));
    }
    out
}

/// Delivery ids seen by a receiver: id -> how many requests carried it.
pub fn deliveries(got: &[Received]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in got {
        let id = r.header("webhook-id").unwrap_or("<none>").to_string();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An agent config's JSON: `name` (if any) and `actions`, a JSON array of actions, as
/// its enabled follow-up.
pub fn agent_config(name: Option<&str>, actions: serde_json::Value) -> String {
    let mut cfg = json!({
        "voice_tools": {"post_call_follow_up": {"enabled": true, "actions": actions}}
    });
    if let Some(name) = name {
        cfg["name"] = name.into();
    }
    cfg.to_string()
}

/// Stores `body`, an agent config's JSON, as `agent`'s config.
pub async fn store_agent(queue: &Queue, agent: &str, body: &str) {
    let cfg = aftercall_core::AgentConfig::parse(body.as_bytes())
        .unwrap_or_else(|e| panic!("agent body {body}: {e}"));
    queue.set_agent(agent, &cfg).await.expect("set agent");
}

/// True when every action of the call has settled (delivered, skipped or dead).
pub fn settled(s: &CallStatus) -> bool {
    let parent = matches!(
        s.call_ended.state.state.as_str(),
        "fanned_out" | "skipped" | "dead"
    );
    parent
        && s.actions
            .iter()
            .all(|a| matches!(a.state.state.as_str(), "delivered" | "skipped" | "dead"))
}

/// Each action of the call as `(kind, state)`, in the agent's order.
pub fn action_states(s: &CallStatus) -> Vec<(&str, &str)> {
    s.actions
        .iter()
        .map(|a| (a.kind.as_str(), a.state.state.as_str()))
        .collect()
}

/// Fails unless every action of the call is in `state`.
/// Encryption keys for tests (`AFTERCALL_ENCRYPTION_KEYS` entries).
pub const K1: &str = "v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const K2: &str = "v2:HxwdHhscGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

pub fn assert_all(s: &CallStatus, state: &str) {
    assert!(
        s.actions.iter().all(|a| a.state.state == state),
        "{:?}",
        s.actions.iter().map(|a| &a.state).collect::<Vec<_>>()
    );
}

/// Fails unless the job is in `state` after `attempts` attempts.
pub fn assert_job(job: &JobRecord, state: &str, attempts: u32) {
    assert_eq!(
        (job.state.state.as_str(), job.attempts),
        (state, attempts),
        "{} of call {:?}: {:?}, history {:?}",
        job.id,
        job.call_id,
        job.state,
        job.history
    );
}

/// Fails unless the process failed with standard error starting with `prefix`.
pub fn assert_failed_with(out: &Output, prefix: &str) {
    assert!(!out.status.success(), "succeeded: {}", stdout(out));
    assert!(stderr(out).starts_with(prefix), "{}", stderr(out));
}

/// Fails the test unless the process succeeded, with `what` it was and what it printed.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout(out),
        stderr(out)
    );
}

/// Runs `cmd` (`what`) to its end, failing the test unless it succeeded.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert_ok(&out, what);
    out
}

/// Fails unless the process printed `text` on standard output.
pub fn assert_prints(out: &Output, text: &str) {
    assert!(stdout(out).contains(text), "{}{}", stdout(out), stderr(out));
}

/// A process's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A process's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn call_event(call_id: &str, agent_id: &str) -> String {
    format!(
        r#"{{"call_id":"{call_id}","agent_id":"{agent_id}","caller_number":"+14155551234","duration_seconds":61,"summary":"s","metadata":{{"caller_name":"Ann","caller_email":"ann@example.com"}}}}"#
    )
}

pub struct Worker {
    child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// Waits until `GET path` on `api` answers `status`, or fails after 30 s with the
    /// worker's log.
    pub async fn wait_status(&self, api: &Http, path: &str, status: u16) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = api.request(reqwest::Method::GET, path, None).send().await
                && r.status().as_u16() == status
            {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.sigterm();
        self.wait_exit(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time the process has used so far (user + system), from /proc/<pid>/stat.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let total = ticks(11) + ticks(12);
        let hz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(100);
        Duration::from_millis(total * 1000 / hz)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn flatten(v: &redis::Value, out: &mut String) {
    match v {
        redis::Value::BulkString(b) => out.push_str(&String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => out.push_str(s),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for i in items {
                flatten(i, out);
                out.push(' ');
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                flatten(k, out);
                out.push('=');
                flatten(v, out);
                out.push(' ');
            }
        }
        other => out.push_str(&format!("{other:?}")),
    }
}

/// Verifies each recorded request with `standardwebhooks.Webhook(secret).verify(body,
/// headers)`, once per secret; returns per request and secret "ok" or the error.
const VERIFY_PY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
reqs = json.load(open(sys.argv[1]))
out = []
for r in reqs:
    body = bytes(r["body"])
    row = {}
    for secret in r["secrets"]:
        try:
            Webhook(secret).verify(body, r["headers"])
            row[secret] = "ok"
        except WebhookVerificationError as e:
            row[secret] = "fail: " + str(e)
    out.append(row)
print(json.dumps(out))
"#;

/// A recorded request: body bytes and headers.
pub type Request = (Vec<u8>, Vec<(String, String)>);

pub fn verify_with_python(
    dir: &Path,
    reqs: &[Request],
    secrets: &[&str],
) -> Vec<serde_json::Value> {
    let input: Vec<_> = reqs
        .iter()
        .map(|(body, headers)| {
            let h: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            serde_json::json!({"body": body, "headers": h, "secrets": secrets})
        })
        .collect();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("requests-{}-{n}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&input).unwrap()).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(VERIFY_PY)
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the verifier failed (is `standardwebhooks` installed? `./dev test` installs it): {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("verifier output")
}
