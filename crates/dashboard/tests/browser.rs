//! The dashboard in a real browser: Debian's chromium driven by playwright-core
//! (`tests/e2e/dashboard.mjs`) against a real `aftercall-worker` process, a real
//! `redis-server` and a local webhook receiver. The script asks this test to script the
//! receiver (`@@ {"cmd": …}` lines on its stdout; the answer is one JSON line on its
//! stdin).
//!
//! Needs `node`, `chromium` and `npm ci` in `tests/e2e` (`./dev test` installs them) and
//! a built worker (`cargo build -p aftercall-worker`). `AFTERCALL_SCREENSHOTS=docs/screenshots`
//! writes the screenshots there instead of a scratch folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aftercall_testkit::{ADMIN, READ, Receiver, RedisOptions, RedisServer, Reply, free_port};
use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const INGEST: &str = "ingest-token-0123456789abcdef";
/// The whole browser run, start to end.
const DEADLINE: Duration = Duration::from_secs(240);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put the binaries: next to the test executable's `deps/` folder.
fn worker_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory")?;
    let bin = dir.join("aftercall-worker");
    ensure!(
        bin.exists(),
        "{} is missing: run `cargo build -p aftercall-worker` first (`./dev test` does)",
        bin.display()
    );
    // The pages are compiled into the worker: an older binary serves older pages.
    let built = std::fs::metadata(&bin)?.modified()?;
    for dir in ["src", "templates", "assets"] {
        for entry in std::fs::read_dir(manifest_dir().join(dir))? {
            let entry = entry?;
            ensure!(
                entry.metadata()?.modified()? <= built,
                "{} is older than {}: run `cargo build -p aftercall-worker` first",
                bin.display(),
                entry.path().display()
            );
        }
    }
    Ok(bin)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// node, chromium and playwright-core, or a message saying how to get them.
fn prerequisites() -> anyhow::Result<(PathBuf, PathBuf)> {
    let hint = "`./dev test` installs them; by hand: `apt-get install chromium nodejs npm` and `npm ci --prefix crates/dashboard/tests/e2e`";
    let node = find_in_path("node").with_context(|| format!("node is not installed: {hint}"))?;
    let chromium = std::env::var_os("AFTERCALL_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_in_path("chromium"))
        .with_context(|| format!("chromium is not installed: {hint}"))?;
    let pw = manifest_dir().join("tests/e2e/node_modules/playwright-core");
    ensure!(
        pw.is_dir(),
        "playwright-core is not installed in {}: {hint}",
        pw.display()
    );
    Ok((node, chromium))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() -> anyhow::Result<()> {
    let (node, chromium) = prerequisites()?;
    let worker_bin = worker_bin()?;
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "aftercall-dashboard-e2e-{}-{}",
        std::process::id(),
        free_port()
    )));
    let dir = &scratch.0;
    std::fs::create_dir_all(dir)?;

    let redis = RedisServer::start(
        &dir.join("redis"),
        RedisOptions {
            aof: false,
            ..Default::default()
        },
    )
    .await?;
    let receiver = Receiver::start().await?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let worker_log = dir.join("worker.log");
    let mut worker = Command::new(&worker_bin)
        .env("AFTERCALL_REDIS_URL", redis.url())
        .env("AFTERCALL_QUEUE_PREFIX", "e2e")
        .env("AFTERCALL_API_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "AFTERCALL_API_TOKENS",
            format!("admin:{ADMIN},read:{READ},ingest:{INGEST}"),
        )
        .env("AFTERCALL_ALLOW_CIDRS", "127.0.0.0/8")
        .env("AFTERCALL_RETRY_BASE", "100ms")
        .env("AFTERCALL_RETRY_FACTOR", "2")
        .env("AFTERCALL_MAX_ATTEMPTS", "2")
        // Every receiver here is 127.0.0.1, one destination: the calls it fails on purpose
        // would open its circuit and hold the replays that follow for the cool-down.
        .env("AFTERCALL_BREAKERS", "off")
        .env("AFTERCALL_OUTBOX", dir.join("outbox"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting aftercall-worker")?;

    let shots = match std::env::var_os("AFTERCALL_SCREENSHOTS") {
        // Relative to the repository root, where `./dev` runs.
        Some(p) => manifest_dir().join("../..").join(p),
        None => dir.join("screenshots"),
    };
    std::fs::create_dir_all(&shots)?;
    let script = manifest_dir().join("tests/e2e/dashboard.mjs");
    let mut browser = Command::new(node)
        .arg(&script)
        .current_dir(manifest_dir().join("tests/e2e"))
        .env("BASE_URL", &base)
        .env("ADMIN_TOKEN", ADMIN)
        .env("READ_TOKEN", READ)
        .env("INGEST_TOKEN", INGEST)
        .env(
            "RECEIVER_URL",
            format!("{}/api/call-completed", receiver.url),
        )
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .env("SEED_CALL", manifest_dir().join("assets/sample-call.json"))
        .env("PROFILE_DIR", dir.join("chromium-profile"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;

    let outcome = tokio::time::timeout(DEADLINE, drive(&mut browser, &receiver)).await;
    let worker_alive = worker.try_wait()?.is_none();
    let _ = worker.start_kill();
    let failure = match outcome {
        Err(_) => Some(format!("the browser run took longer than {DEADLINE:?}")),
        Ok(Err(e)) => Some(format!("{e:#}")),
        Ok(Ok(())) if !worker_alive => Some("the worker exited during the run".into()),
        Ok(Ok(())) => None,
    };
    if let Some(f) = failure {
        let log = std::fs::read_to_string(&worker_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{f}\n--- worker log (last 40 lines) ---\n{}",
            tail.join("\n")
        );
    }
    drop(redis);
    Ok(())
}

/// Relays the script's output and answers its requests until it exits.
async fn drive(browser: &mut Child, receiver: &Receiver) -> anyhow::Result<()> {
    let mut stdin = browser.stdin.take().context("node stdin")?;
    let mut lines = BufReader::new(browser.stdout.take().context("node stdout")?).lines();
    while let Some(line) = lines.next_line().await? {
        let Some(request) = line.strip_prefix("@@ ") else {
            println!("{line}");
            continue;
        };
        let request: Value = serde_json::from_str(request).context("a request from the script")?;
        let answer = answer(&request, receiver);
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .context("answering the script")?;
    }
    let status = browser.wait().await?;
    ensure!(status.success(), "the browser script failed ({status})");
    Ok(())
}

fn answer(request: &Value, receiver: &Receiver) -> Value {
    match request["cmd"].as_str() {
        // Every later request gets this reply.
        Some("receiver") => {
            let status = request["status"].as_u64().unwrap_or(200) as u16;
            let body = request["body"].as_str().unwrap_or("ok");
            receiver.set_default(Reply::status(status).body(body));
            json!({"ok": true})
        }
        Some("received") => {
            let got = receiver.received();
            let last = got.last();
            json!({
                "count": got.len(),
                "last": last.map(|r| json!({
                    "path": r.path,
                    "webhook_id": r.header("webhook-id"),
                    "body": r.json(),
                })),
            })
        }
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}
