//! A dead destination (issue 17): what one broken CRM costs. Calls queue for a receiver
//! that answers 503 throughout an outage; the row is the requests it receives per queued
//! job (target under 0.1), then it recovers and every job must be delivered, none dead.
//!
//! Time is scaled: the outage lasts `AFTERCALL_BENCH_OUTAGE_S` seconds (60; 20 with
//! `--quick`) with a breaker cool-down of a twentieth of it, the same 20 cool-downs (and
//! so the same probes) as a 10-minute outage at the default `*=5/30s`.
//! `AFTERCALL_BENCH_OUTAGE_S=600` runs the real 10 minutes at the default.

use super::*;

pub(super) async fn outage(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(2_000, 500);
    let outage_s: u64 = match std::env::var("AFTERCALL_BENCH_OUTAGE_S") {
        Ok(v) => v.parse().context("AFTERCALL_BENCH_OUTAGE_S")?,
        Err(_) if b.quick => 20,
        Err(_) => 60,
    };
    let cooldown_ms = outage_s * 1000 / 20;
    let q = b.queue("outage").await?;
    set_agent(&q, &b.rx.url()).await?;
    b.rx.reset().await?;
    b.rx.call("POST", "/_down?on").await?;
    fill(&q, &b.events, 0, n).await?;
    let breakers = format!("*=5/{cooldown_ms}ms");
    let mut w = b.worker(&q, &[("AFTERCALL_BREAKERS", &breakers)])?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(outage_s)).await;
    let during = b.rx.count().await?;
    let keys = q.keys().clone();
    let dead_during = b.zcard(&keys.dead).await?;
    b.rx.call("POST", "/_down?off").await?;
    b.rx.reset().await?;
    b.rx.wait_for(n as u64).await?;
    let recovered_s = started.elapsed().as_secs_f64() - outage_s as f64;
    let dead = b.zcard(&keys.dead).await?;
    w.terminate(Duration::from_secs(30));
    let per_job = during as f64 / n as f64;
    b.report
        .row(
            format!(
                "Requests to a dead destination per queued job ({} jobs; outage {outage_s} s at a {cooldown_ms} ms cool-down = 10 min at 30 s)",
                int(n as f64)
            ),
            format!("{per_job:.4} ({during} requests)"),
        )
        .target("< 0.1", per_job < 0.1);
    b.report
        .row(
            "Dead letters from the outage; all delivered after it",
            format!("{dead} dead; delivered {:.1} s after recovery", recovered_s),
        )
        .target("0 dead", dead == 0 && dead_during == 0);
    Ok(json!({
        "jobs": n,
        "outage_s": outage_s,
        "cooldown_ms": cooldown_ms,
        "requests_during_outage": during,
        "requests_per_job": per_job,
        "dead": dead,
        "delivered_after_recovery_s": recovered_s,
    }))
}
