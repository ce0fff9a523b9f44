//! Hardening against the Redis and the clients a deployment really meets: an evicting
//! Redis, a Redis out of memory mid-enqueue, a Redis that comes up after the workers,
//! stalled and oversized HTTP clients, and a first scrape that must already say
//! everything (issue 14, items 2, 3, 4, 5 and 10).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aftercall_tests::{ADMIN, Http, RedisOptions, RedisServer, Reply, World, call_event, settled};
use reqwest::Method;

/// Gives the world an API with the admin token; a client for it, patient (20 s).
fn with_api(w: &mut World) -> Http {
    w.with_admin_api().with_timeout(Duration::from_secs(20))
}

async fn config_set(w: &World, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(&mut w.raw().await)
        .await
        .unwrap();
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- item 2: an evicting Redis ----

#[tokio::test(flavor = "multi_thread")]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let mut w = World::new().await;
    let api = with_api(&mut w);
    config_set(&w, "maxmemory-policy", "allkeys-lru").await;

    // The worker refuses to start, with one line naming the setting and both fixes.
    let mut worker = w.worker();
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker exits");
    assert!(!status.success());
    let log = worker.log_text();
    for needle in [
        "maxmemory-policy is `allkeys-lru`",
        "maxmemory-policy noeviction",
        "AFTERCALL_ALLOW_EVICTION=true",
    ] {
        assert!(log.contains(needle), "{needle} not in: {log}");
    }

    // The CLI refuses to write, and writes nothing.
    let out = w.cli(&["enqueue", "-"], &call_event("c-evict", "a"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("maxmemory-policy is `allkeys-lru`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(w.queue.stats().await.unwrap().calls, 0);
    // Reading still works, and says what the policy is.
    let out = w.cli(&["stats"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("maxmemory-policy allkeys-lru evicted_keys 0"),
        "{}",
        text(&out.stdout)
    );

    // With the override it runs, and says so at start and in /readyz.
    w.set("AFTERCALL_ALLOW_EVICTION", "true");
    let worker = w.worker();
    let ready = worker.wait_status(&api, "/readyz", 200).await;
    let body: serde_json::Value = ready.json().await.unwrap();
    let warnings = body["warnings"].to_string();
    assert!(
        warnings.contains("AFTERCALL_ALLOW_EVICTION=true") && warnings.contains("allkeys-lru"),
        "{body}"
    );
    assert!(worker.log_text().contains("jobs may be lost"));
    let out = w.cli(&["enqueue", "-"], &call_event("c-allowed", "a"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Where `CONFIG` is disabled (as on managed Redis), `INFO`'s policy is read instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_policy_is_read_from_info_where_config_is_disabled() {
    let w = World::new().await;
    let dir = w.dir.join("managed");
    let managed = RedisServer::start(
        &dir,
        RedisOptions {
            args: [
                "--rename-command",
                "CONFIG",
                "",
                "--maxmemory-policy",
                "volatile-lru",
            ]
            .map(String::from)
            .to_vec(),
            ..RedisOptions::default()
        },
    )
    .await
    .unwrap();
    let url = managed.url();
    let env = [("AFTERCALL_REDIS_URL", url.as_str())];
    let out = w.cli_with(&["enqueue", "-"], &call_event("c1", "a"), &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("maxmemory-policy is `volatile-lru`"),
        "{}",
        text(&out.stderr)
    );
}

/// A Redis that persists nothing is warned about (not refused).
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_without_persistence_is_warned_about() {
    let w = World::new().await;
    config_set(&w, "appendonly", "no").await;
    config_set(&w, "save", "").await;
    let out = w.cli(&["enqueue", "-"], &call_event("c1", "a"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Redis persists nothing"),
        "{}",
        text(&out.stderr)
    );
}

// ---- item 3: out of memory mid-enqueue ----

/// Events of about 1 KB each.
fn events(n: usize) -> String {
    let pad = "x".repeat(900);
    (0..n)
        .map(|i| format!(r#"{{"call_id":"oom-{i:05}","agent_id":"a","summary":"{pad}"}}"#,))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_memory_mid_enqueue_says_how_far_it_got_and_a_rerun_finishes() {
    let mut w = World::new().await;
    // Room for a few thousand of the 20,000 events.
    let used: u64 = w
        .info("memory")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let room = (used + 6 * 1024 * 1024).to_string();
    config_set(&w, "maxmemory", &room).await;
    let input = events(20_000);

    let out = w.cli(&["enqueue", "-"], &input);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let stored = w.queue.stats().await.unwrap().calls as usize;
    assert!(stored > 0 && stored < 20_000, "{stored}: {err}");
    for needle in [
        "Redis is out of memory".to_string(),
        format!("{stored} of 20000 events were enqueued"),
        format!(
            "the first not enqueued is event {} (call_id oom-{stored:05})",
            stored + 1
        ),
        "Run the same input again".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle} not in: {err}");
    }

    // The API says the same with 507, counting from the start of its body.
    let api = with_api(&mut w);
    w.set("AFTERCALL_ROLE", "api");
    let worker = w.worker();
    worker.wait_status(&api, "/readyz", 200).await;
    let body: String = (0..3000)
        .map(|i| call_event(&format!("api-{i:05}"), "a") + "\n")
        .collect();
    let r = api
        .request(Method::POST, "/calls", Some(ADMIN))
        .header("content-type", "application/x-ndjson")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["error"], "insufficient_storage", "{got}");
    assert_eq!(got["total"], 3000, "{got}");
    let n = got["enqueued"].as_u64().unwrap();
    assert_eq!(got["first_not_enqueued"]["index"], n, "{got}");
    assert_eq!(
        got["first_not_enqueued"]["call_id"],
        format!("api-{n:05}"),
        "{got}"
    );

    // Memory freed: the same input again finishes the job, the first part as duplicates.
    config_set(&w, "maxmemory", "0").await;
    let out = w.cli(&["enqueue", "-"], &input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "{} enqueued, {stored} duplicate, 0 invalid",
            20_000 - stored
        )),
        "{}",
        text(&out.stdout)
    );
}

// ---- item 4: Redis comes up after the worker ----

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_started_before_redis_waits_and_serves_healthz() {
    let mut w = World::new().await;
    let api = with_api(&mut w);
    let _rx = w.receiver_for("a", Reply::ok()).await;
    w.redis.kill().await;

    let mut worker = w.worker();
    // Alive and saying so; not ready.
    worker.wait_status(&api, "/healthz", 200).await;
    let r = worker.wait_status(&api, "/readyz", 503).await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "waiting for Redis", "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.is_running(), "{}", worker.log_text());
    assert!(worker.log_text().contains("waiting for Redis"));

    // The CLI still fails fast.
    let t = Instant::now();
    let out = w.cli(&["stats"], "");
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(15));

    w.redis.restart().await.unwrap();
    worker.wait_status(&api, "/readyz", 200).await;
    w.push("c-late", "a").await;
    w.wait_call("c-late", Duration::from_secs(30), settled)
        .await;
    assert!(worker.log_text().contains("Redis answers; starting"));
}

// ---- item 5: stalled and oversized clients ----

fn connect(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes; the bytes it sent.
fn read_to_close(mut s: TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_oversized_clients_are_cut_off() {
    let mut w = World::new().await;
    let api = with_api(&mut w);
    w.set("AFTERCALL_API_HEADER_TIMEOUT", "1s");
    w.set("AFTERCALL_API_BODY_TIMEOUT", "1s");
    w.set("AFTERCALL_API_MAX_CONNECTIONS", "8");
    let worker = w.worker();
    worker.wait_status(&api, "/readyz", 200).await;

    // Half a head, then nothing: the server closes the connection (it used to wait
    // forever).
    let mut half = connect(&api.base);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let closed = tokio::task::spawn_blocking(move || read_to_close(half))
        .await
        .unwrap();
    assert!(
        closed.is_ok(),
        "the read timed out: the connection stayed open"
    );

    // An idle keep-alive connection is closed too.
    let mut idle = connect(&api.base);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = tokio::task::spawn_blocking(move || read_to_close(idle))
        .await
        .unwrap()
        .expect("closed after the idle timeout");
    assert!(text(&got).starts_with("HTTP/1.1 200"), "{}", text(&got));

    // A head over 16 KB gets 431, not a 400 KB buffer.
    let mut big = connect(&api.base);
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..400 {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "y".repeat(100)).as_bytes());
    }
    let _ = big.write_all(&head);
    let got = tokio::task::spawn_blocking(move || read_to_close(big))
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(text(&got).starts_with("HTTP/1.1 431"), "{}", text(&got));

    // A body that stops arriving is given up on, with an answer.
    let mut slow = connect(&api.base);
    slow.write_all(
        format!(
            "POST /calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"call_id\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let got = tokio::task::spawn_blocking(move || read_to_close(slow))
        .await
        .unwrap()
        .expect("answered and closed");
    let got = text(&got);
    assert!(
        got.starts_with("HTTP/1.1 400") && got.contains("did not arrive within 1s"),
        "{got}"
    );

    // More stalled clients than the cap: each is cut off in turn, and /healthz is
    // answered all the same (it waits in the backlog at worst).
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect(&api.base);
            let _ = s.write_all(b"GET / HTTP/1.1\r\n");
            s
        })
        .collect();
    // A new client: none of its connections is one the server has cut off.
    let fresh = Http::new(api.base.clone()).with_timeout(Duration::from_secs(20));
    let r = fresh.get("/healthz", None).await;
    assert_eq!(r.status(), 200);
    drop(stalled);
}

// ---- item 10: the first scrape says everything ----

/// The metric families `docs/production.md` lists under `GET /metrics`.
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/production.md"),
    )
    .unwrap();
    let start = doc.find("- `GET /metrics`").expect("the metrics paragraph");
    let para = &doc[start..];
    let para = &para[..para.find("\n\n").unwrap_or(para.len())];
    let mut names: Vec<String> = para
        .split('`')
        .filter(|s| s.starts_with("aftercall_"))
        .map(|s| s.split('{').next().unwrap().to_string())
        .collect();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_metric_is_in_the_first_scrape() {
    let mut w = World::new().await;
    let api = with_api(&mut w);
    w.set("AFTERCALL_ROLE", "api");
    w.queue
        .enqueue_json(call_event("c1", "a").as_bytes())
        .await
        .unwrap();
    let worker = w.worker();
    worker.wait_status(&api, "/readyz", 200).await;
    let scrape = api.get("/metrics", None).await.text().await.unwrap();
    // Parsed by Prometheus's Python client, not by us.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
             for f in p(sys.stdin.read()):\n  for s in f.samples:\n    print(s.name, dict(sorted(s.labels.items())), float(s.value))\n  print('family', f.name, f.type)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(scrape.as_bytes())?;
            c.wait_with_output()
        })
        .expect("python3 runs (./dev test installs prometheus_client)");
    assert!(parsed.status.success(), "{}", text(&parsed.stderr));
    let parsed = text(&parsed.stdout);
    let names = documented_metrics();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        // The Python client names counter families without `_total`.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            parsed.contains(&format!("family {family} ")),
            "{name} missing from the first scrape:\n{scrape}"
        );
    }
    for sample in [
        "aftercall_jobs_total {'action': 'webhook', 'outcome': 'dead'} 0.0".to_string(),
        format!(
            "aftercall_queue_depth {{'queue': '{}', 'state': 'queued'}} 1.0",
            w.prefix
        ),
        "aftercall_redis_maxmemory_policy {'policy': 'noeviction'} 1.0".to_string(),
        "aftercall_redis_evicted_keys {} 0.0".to_string(),
    ] {
        assert!(parsed.contains(&sample), "{sample} not in:\n{parsed}");
    }
}
