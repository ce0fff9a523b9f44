//! The processes a run starts: Redis, the receiver, the worker, and connections to them.

use super::*;

pub(super) async fn start_redis(dir: &Path, aof_everysec: bool) -> anyhow::Result<RedisServer> {
    let mut args = vec!["--maxclients".to_string(), "20000".to_string()];
    if aof_everysec {
        args.extend(["--appendonly", "yes", "--appendfsync", "everysec"].map(String::from));
    }
    RedisServer::start(
        dir,
        RedisOptions {
            aof: false,
            port: None,
            args,
        },
    )
    .await
}

pub(super) async fn redis_conn(url: &str) -> anyhow::Result<MultiplexedConnection> {
    // No response timeout: FLUSHALL of a million jobs takes a while.
    let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?)
}

pub(super) fn which(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Proc {
    pub(super) child: Child,
}

impl Proc {
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits; SIGKILL after `timeout`.
    pub(super) fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// The receiver process (`xtask receiver`).
pub(super) struct RxProc {
    pub(super) proc: Proc,
    pub(super) port: u16,
}

impl RxProc {
    pub(super) async fn start(delay_ms: u64) -> anyhow::Result<RxProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["receiver", "--delay-ms", &delay_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the receiver")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await??;
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("receiver said {line:?}"))?;
        Ok(RxProc {
            proc: Proc { child },
            port,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub(super) async fn call(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        s.write_all(
            format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").context("receiver reply")?;
        ensure!(head.contains(" 200 "), "receiver answered {head}");
        Ok(if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body)?
        })
    }

    pub(super) async fn reset(&self) -> anyhow::Result<()> {
        self.call("POST", "/_reset").await.map(|_| ())
    }

    pub(super) async fn stats(&self) -> anyhow::Result<Value> {
        self.call("GET", "/_stats").await
    }

    pub(super) async fn count(&self) -> anyhow::Result<u64> {
        Ok(self.stats().await?["count"].as_u64().unwrap_or(0))
    }

    /// Polls until `n` webhooks arrived; fails when nothing arrives for a minute.
    pub(super) async fn wait_for(&self, n: u64) -> anyhow::Result<Value> {
        let mut last = (0, Instant::now());
        loop {
            let s = self.stats().await?;
            let c = s["count"].as_u64().unwrap_or(0);
            if c >= n {
                return Ok(s);
            }
            if c != last.0 {
                last = (c, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(60) {
                bail!("receiver stuck at {c} of {n} webhooks");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
