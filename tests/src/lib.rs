//! Test harness for the end-to-end suite: a real `redis-server` per test on a free
//! port, real HTTP receivers on 127.0.0.1, and the built `aftercall-worker` and
//! `aftercall` binaries run as processes (so they can be killed with SIGKILL).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use aftercall_embedded::{Receiver, Reply};
use aftercall_embedded::{RedisOptions, RedisServer};
use aftercall_queue::{CallStatus, Queue, QueueConfig};

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

/// One test's world: its own Redis, queue prefix and scratch folder.
pub struct World {
    pub redis: RedisServer,
    pub prefix: String,
    pub dir: PathBuf,
    pub queue: Queue,
    /// Extra environment for every worker started by this world.
    pub env: Vec<(String, String)>,
}

impl World {
    pub async fn new() -> World {
        let dir =
            std::env::temp_dir().join(format!("aftercall-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let redis = RedisServer::start(&dir.join("redis"), RedisOptions::default())
            .await
            .expect("redis-server");
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let queue = Queue::connect(QueueConfig {
            url: redis.url(),
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await
        .expect("connect");
        let env = vec![
            ("AFTERCALL_ALLOW_CIDRS".into(), "127.0.0.0/8".into()),
            ("AFTERCALL_RETRY_BASE".into(), "200ms".into()),
            ("AFTERCALL_RETRY_FACTOR".into(), "2".into()),
            ("AFTERCALL_MAX_ATTEMPTS".into(), "4".into()),
            ("AFTERCALL_LEASE".into(), "2s".into()),
            ("AFTERCALL_GRACE".into(), "5s".into()),
            (
                "AFTERCALL_OUTBOX".into(),
                dir.join("outbox").display().to_string(),
            ),
        ];
        World {
            redis,
            prefix,
            dir,
            queue,
            env,
        }
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
    }

    fn base_env(&self, cmd: &mut Command) {
        cmd.env("AFTERCALL_REDIS_URL", self.redis.url())
            .env("AFTERCALL_QUEUE_PREFIX", &self.prefix)
            .env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }

    /// Starts a worker process; its log goes to `<dir>/worker-N.log`.
    pub fn worker(&self) -> Worker {
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.join(format!("worker-{n}.log"));
        let mut cmd = Command::new(bin("aftercall-worker"));
        self.base_env(&mut cmd);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        Worker {
            child: cmd.spawn().expect("start worker"),
            log,
        }
    }

    /// Runs the CLI with `args`, feeding `stdin`.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(bin("aftercall"));
        self.base_env(&mut cmd);
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

    /// Stores the seed's agent body, its webhook pointed at `url`.
    pub async fn seed_agent(&self, agent_id: &str, webhook_url: &str) {
        let body = fixture("seed-agent.json")
            .replace("https://your-crm.com/api/call-completed", webhook_url);
        let cfg = aftercall_core::AgentConfig::parse(body.as_bytes()).expect("seed body parses");
        self.queue
            .set_agent(agent_id, &cfg)
            .await
            .expect("set agent");
    }

    /// An agent with one webhook action.
    pub async fn webhook_agent(&self, agent_id: &str, url: &str) {
        let body = format!(
            r#"{{"name":"Test","voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"{url}"}}]}}}}}}"#
        );
        let cfg = aftercall_core::AgentConfig::parse(body.as_bytes()).expect("agent body");
        self.queue
            .set_agent(agent_id, &cfg)
            .await
            .expect("set agent");
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

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
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
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
