//! A `redis-server` child process on a loopback port, with its data in a folder, that
//! can be killed and restarted on the same port and data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Finds `redis-server`, installing Debian's package when it is missing and we may.
pub fn ensure_redis_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = find("redis-server") {
        return Ok(p);
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root && find("apt-get").is_some() {
        eprintln!("redis-server is missing; installing Debian's redis-server package…");
        let quiet = |c: &mut std::process::Command| {
            c.env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
        };
        let _ = quiet(std::process::Command::new("apt-get").arg("update"));
        let st = quiet(std::process::Command::new("apt-get").args([
            "install",
            "-y",
            "--no-install-recommends",
            "redis-server",
        ]))?;
        if st.success()
            && let Some(p) = find("redis-server")
        {
            return Ok(p);
        }
    }
    bail!(
        "redis-server is not installed: install it (Debian: `apt-get install redis-server`) or point AFTERCALL_REDIS_URL at a running Redis"
    )
}

fn find(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/usr/local/bin"),
        ])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound and released), for a server started after.
///
/// Taken below the kernel's ephemeral range (32768–60999 by default), not from port 0:
/// an ephemeral port can go to any outgoing connection (a webhook, a Redis client)
/// between this check and the server's bind, which made a test's worker fail with
/// "address already in use". Each process walks the range from its own start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `redis://127.0.0.1:<port>`: a server of this module reached without credentials.
pub fn plain_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync always`: nothing acknowledged is lost on a crash.
    pub aof: bool,
    pub port: Option<u16>,
    /// Extra `redis-server` arguments.
    pub args: Vec<String>,
}

impl RedisOptions {
    /// No persistence: fastest, for tests that never restart Redis.
    pub fn fast() -> RedisOptions {
        RedisOptions {
            aof: false,
            ..RedisOptions::default()
        }
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            aof: true,
            port: None,
            args: Vec::new(),
        }
    }
}

pub struct RedisServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    opts: RedisOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with its data in `dir` and waits until it answers PING.
    pub async fn start(dir: &Path, opts: RedisOptions) -> anyhow::Result<RedisServer> {
        let bin = ensure_redis_server()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = opts.port.unwrap_or_else(free_port);
        let mut s = RedisServer {
            bin,
            dir: dir.to_path_buf(),
            port,
            opts,
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        plain_url(self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if self.opts.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.opts.args);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port).await {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!("redis-server exited with {status}: {}", tail.join(" | "));
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within 10 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to save anything beyond what the AOF already has.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the child (used by the demo to supervise it).
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(c) => c.wait().await.ok(),
            None => None,
        }
    }
}

async fn ping(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await, Ok(Ok(n)) if buf[..n].starts_with(b"+PONG"))
}
