//! Partitions (issue 18): one queue on a real 3-primary Redis Cluster (started here, no
//! replicas), with `AFTERCALL_PARTITIONS` 1 and 3. The same workload as `pipeline` (N
//! events queued, then one worker, one webhook each): events/s, and each primary's share
//! of the Redis CPU, which is what partitions spread (one tag is one primary's CPU).

use aftercall_testkit::{Cluster, ClusterOptions};

use super::*;

/// Each node's Redis CPU seconds so far (user + system).
fn cpu(c: &Cluster) -> Vec<f64> {
    c.nodes
        .iter()
        .map(|n| {
            Cluster::cli(n.port(), &["INFO", "cpu"])
                .lines()
                .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                .sum()
        })
        .collect()
}

pub(super) async fn partitions(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(20_000, 5_000);
    let opts = ClusterOptions {
        replicas: 0,
        aof: false,
        ..Default::default()
    };
    let c = Cluster::start(&b.scratch.join("cluster"), opts).await?;
    let mut runs = Vec::new();
    for parts in [1usize, 3] {
        let q = Queue::connect(QueueConfig {
            url: c.urls(),
            cluster: true,
            prefix: format!("bench{parts}"),
            partitions: parts,
            ..Default::default()
        })
        .await?;
        set_agent(&q, &b.rx.url()).await?;
        fill(&q, &b.events, 0, n).await?;
        b.rx.reset().await?;
        let cpu0 = cpu(&c);
        let t0 = now_us();
        let parts_s = parts.to_string();
        let mut w = b.worker(
            &q,
            &[
                ("AFTERCALL_REDIS_URL", &c.urls()),
                ("AFTERCALL_REDIS_CLUSTER", "true"),
                ("AFTERCALL_PARTITIONS", &parts_s),
            ],
        )?;
        let stats = b.rx.wait_for(n as u64).await?;
        let last = stats["last_us"].as_u64().unwrap_or(0);
        let rate = n as f64 / ((last - t0) as f64 / 1e6);
        let cpu: Vec<f64> = cpu(&c).iter().zip(&cpu0).map(|(a, b)| a - b).collect();
        w.terminate(Duration::from_secs(30));
        let total: f64 = cpu.iter().sum();
        let busiest = cpu.iter().cloned().fold(0.0, f64::max) / total.max(1e-9);
        let us_per_event = total * 1e6 / n as f64;
        b.report
            .row(
                format!(
                    "Cluster, 3 primaries, {parts} partition(s): events/s ({} events, 1 worker)",
                    int(n as f64)
                ),
                format!(
                    "{} ev/s; Redis {us_per_event:.0} µs/event, busiest primary {:.0} % of it",
                    int(rate),
                    busiest * 100.0
                ),
            )
            .target(
                if parts == 1 {
                    "one primary does all"
                } else {
                    "spread (busiest ≤ 45 %)"
                },
                parts == 1 || busiest <= 0.45,
            );
        runs.push(json!({
            "partitions": parts,
            "events": n,
            "events_per_s": rate,
            "redis_cpu_s_per_primary": cpu,
            "redis_us_per_event": us_per_event,
            "busiest_primary_share": busiest,
        }));
    }
    Ok(json!({ "runs": runs }))
}
