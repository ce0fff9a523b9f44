//! The API under stalled clients: `/healthz` latency while connections hang.

use super::*;

/// `/healthz` latencies over a new connection each (as a probe makes them), in ms:
/// p50, p99 and the worst of `n`.
pub(super) async fn healthz_latency(addr: &str, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
            .await
            .context("/healthz did not answer within 30 s")??;
        ensure!(
            got.starts_with(b"HTTP/1.1 200"),
            "/healthz: {}",
            String::from_utf8_lossy(&got)
        );
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Ok((at(0.5), at(0.99), ms[ms.len() - 1]))
}

/// A worker serving the API on a free port (with an admin token and `env`), once
/// `/healthz` answers; its address.
pub(super) async fn api_worker(
    b: &Bench,
    q: &Queue,
    env: &[(&str, &str)],
) -> anyhow::Result<(Proc, String)> {
    let addr = format!("127.0.0.1:{}", aftercall_testkit::free_port());
    let mut all = vec![
        ("AFTERCALL_API_ADDR", addr.as_str()),
        ("AFTERCALL_API_TOKENS", "admin:bench-token-0123456789abcdef"),
    ];
    all.extend_from_slice(env);
    let w = b.worker(q, &all)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while healthz_latency(&addr, 1).await.is_err() {
        ensure!(Instant::now() < deadline, "the API never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((w, addr))
}

/// Hostile clients (issue 14, item 5): 2,000 connections that each send 12 KB of a
/// request head (under the 16 KB cap, so the server must hold them) and stall. The
/// worker's RSS with them open and after they close, and `/healthz` latency before and
/// during. The header timeout is raised to 5 minutes so that none is cut off while
/// measured.
pub(super) async fn stalled(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(2_000, 2_000);
    let q = b.queue("stalled").await?;
    let (mut w, addr) = api_worker(b, &q, &[("AFTERCALL_API_HEADER_TIMEOUT", "300s")]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = probe::status_bytes(w.pid(), "VmRSS:").context("worker RSS")?;
    let (p50_0, p99_0, max_0) = healthz_latency(&addr, 200).await?;

    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    while head.len() < 12 * 1024 {
        head.extend_from_slice(b"X-Stall: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(&head).await?;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = probe::status_bytes(w.pid(), "VmRSS:").context("worker RSS")?;
    let (p50_1, p99_1, max_1) = healthz_latency(&addr, 200).await?;
    // Still held by the server (none answered or closed): a read would see EOF or data.
    let mut open = 0;
    for s in &held {
        let mut one = [0u8; 1];
        if matches!(s.try_read(&mut one), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            open += 1;
        }
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_closed = probe::status_bytes(w.pid(), "VmRSS:").context("worker RSS")?;
    // The worker gives freed memory back every 5 s (worker/src/main.rs).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = probe::status_bytes(w.pid(), "VmRSS:").context("worker RSS")?;
    w.terminate(Duration::from_secs(10));

    b.report
        .row(
            format!(
                "API: worker RSS before / with {} stalled 12 KB heads / 2 s and 7 s after they closed",
                int(n as f64)
            ),
            format!("{} / {} / {} / {}", mb(rss0), mb(rss_held), mb(rss_closed), mb(rss_after)),
        )
        .target(
            "<= 100 MB held, back within 10 % of before",
            rss_held <= 100_000_000 && rss_after as f64 <= rss0 as f64 * 1.1,
        );
    b.report
        .row(
            format!("API: /healthz p50 / p99 / max, new connection each, idle vs {} stalled ({open} still open)", int(n as f64)),
            format!("{p50_0:.2} / {p99_0:.2} / {max_0:.2} ms vs {p50_1:.2} / {p99_1:.2} / {max_1:.2} ms"),
        )
        .target("p99 <= 10 ms", p99_1 <= 10.0);
    Ok(json!({
        "stalled": n, "still_open": open,
        "rss_before": rss0, "rss_held": rss_held, "rss_closed_idle": rss_closed, "rss_after": rss_after,
        "healthz_idle_ms": {"p50": p50_0, "p99": p99_0, "max": max_0},
        "healthz_stalled_ms": {"p50": p50_1, "p99": p99_1, "max": max_1},
    }))
}
