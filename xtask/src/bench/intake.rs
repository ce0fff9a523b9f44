//! The platform intake (issue 15): `POST /ingest/retell` acknowledgements under an
//! open-loop load. A platform that does not retry (Vapi) needs the answer fast and
//! only after the write.

use std::sync::atomic::AtomicU64;

use super::*;

const RETELL_KEY: &str = "key_bench_0123456789";

/// A signed Retell `call_ended` for call `i` (about 2 KB, as a short call's is), signed
/// as Retell signs: hex HMAC-SHA256 of the body followed by the ms timestamp.
fn retell_request(i: usize, addr: &str, now_ms: i64) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let body = json!({
        "event": "call_ended",
        "call": {
            "call_type": "phone_call", "call_id": format!("intake-{i}"), "agent_id": "bench_agent",
            "agent_version": 1, "call_status": "ended", "direction": "inbound",
            "from_number": "+14155550100", "to_number": "+14155550199",
            "start_timestamp": now_ms - 90_000, "end_timestamp": now_ms, "duration_ms": 90_000,
            "transcript": "Agent: Thanks for calling. How can I help?\nUser: I'd like to check my order. ".repeat(20),
            "recording_url": "https://example.com/recording.wav",
            "metadata": {"order_id": "12345"}, "disconnection_reason": "user_hangup",
        }
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(RETELL_KEY.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    mac.update(now_ms.to_string().as_bytes());
    let d: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut req = format!(
        "POST /ingest/retell HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-retell-signature: v={now_ms},d={d}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body) from a kept-alive
/// connection; its status.
async fn read_answer(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        ensure!(n > 0, "the API closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(buf)? {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            let status = resp.code.unwrap_or(0);
            while buf.len() < head + len {
                let n = s.read(&mut chunk).await?;
                ensure!(n > 0, "the API closed the connection mid-answer");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
    }
}

/// `rate` requests a second for `secs` seconds, each due at its own time (open loop:
/// latency counts from when the request was due, so a stall shows), over 64 kept-alive
/// connections. The worker also fans out every call (agent without config: skipped),
/// as it would in production.
pub(super) async fn intake(b: &mut Bench) -> anyhow::Result<Value> {
    // A worker that also fans every call out on the same core, and an API replica
    // (`AFTERCALL_ROLE=api`, what a deployment puts in front of its workers).
    let all = intake_run(b, "worker (API and jobs on one core)", &[], false).await?;
    let api = intake_run(
        b,
        "API replica (AFTERCALL_ROLE=api)",
        &[("AFTERCALL_ROLE", "api")],
        true,
    )
    .await?;
    Ok(json!({"worker": all, "api_replica": api}))
}

async fn intake_run(
    b: &mut Bench,
    what: &str,
    env: &[(&str, &str)],
    targeted: bool,
) -> anyhow::Result<Value> {
    let secs = if b.quick { 3 } else { 10 };
    let rate = 1_000usize;
    let n = b.n(rate * secs, rate * secs);
    let q = b.queue("intake").await?;
    let mut all_env = vec![("AFTERCALL_RETELL_API_KEY", RETELL_KEY)];
    all_env.extend_from_slice(env);
    let (mut w, addr) = api_worker(b, &q, &all_env).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let requests: Arc<Vec<Vec<u8>>> =
        Arc::new((0..n).map(|i| retell_request(i, &addr, now_ms)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (requests, next, failed, addr) =
            (requests.clone(), next.clone(), failed.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut s = tokio::net::TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let mut buf = Vec::with_capacity(1024);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let due = t0 + Duration::from_micros((i as u64 * 1_000_000) / rate as u64);
                tokio::time::sleep_until(due.into()).await;
                s.write_all(req).await?;
                let status = read_answer(&mut s, &mut buf).await?;
                if status != 202 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                lat.push(due.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut ms = Vec::with_capacity(n);
    for t in tasks {
        ms.extend(t.await??);
    }
    let wall = t0.elapsed().as_secs_f64();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    let (p50, p99, max) = (at(0.5), at(0.99), ms[ms.len() - 1]);
    let failed = failed.load(Ordering::Relaxed);
    // Every acknowledged call is in Redis: the queue knows each of them.
    let mut stored = 0;
    for i in (0..n).step_by((n / 50).max(1)) {
        if q.call_status(&format!("intake-{i}")).await?.is_some() {
            stored += 1;
        }
    }
    w.terminate(Duration::from_secs(10));
    let row = b.report.row(
        format!(
            "intake, {what}: POST /ingest/retell, {} signed 2 KB call_ended at {rate}/s (open loop, 64 connections), ack p50 / p99 / max",
            int(n as f64)
        ),
        format!("{p50:.2} / {p99:.2} / {max:.2} ms, {failed} not 202, {:.0}/s achieved", n as f64 / wall),
    );
    if targeted {
        row.target("p99 < 5 ms, all 202", p99 < 5.0 && failed == 0);
    }
    Ok(json!({
        "requests": n, "rate": rate, "not_202": failed, "sampled_stored": stored,
        "ack_ms": {"p50": p50, "p99": p99, "max": max},
    }))
}
