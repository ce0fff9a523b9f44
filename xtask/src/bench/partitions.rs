//! Partitions (issue 18): one queue on a real 3-primary Redis Cluster (started here, no
//! replicas), with `AFTERCALL_PARTITIONS` 1 and 3. The same workload as `pipeline` (N
//! events queued, then one worker, one webhook each): events/s, and each primary's share
//! of the Redis CPU, which is what partitions spread (one tag is one primary's CPU).

use super::*;

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    async fn start(dir: &Path) -> anyhow::Result<Cluster> {
        let mut nodes = Vec::new();
        for i in 0..3 {
            // The cluster bus listens on the port + 10000.
            let port = loop {
                let p = aftercall_testkit::free_port();
                if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
                    break p;
                }
            };
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--maxclients",
                "20000",
            ];
            let opts = RedisOptions {
                aof: false,
                port: Some(port),
                args: args.map(String::from).to_vec(),
            };
            nodes.push(RedisServer::start(&dir.join(format!("n{i}")), opts).await?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create")?;
        ensure!(out.status.success(), "cluster create: {out:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = Cluster { nodes };
        while !c.nodes.iter().all(|n| {
            c.cli(n.port(), &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            ensure!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(c)
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Each node's Redis CPU seconds so far (user + system).
    fn cpu(&self) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| {
                self.cli(n.port(), &["INFO", "cpu"])
                    .lines()
                    .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                    .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
                    .sum()
            })
            .collect()
    }
}

pub(super) async fn partitions(b: &mut Bench) -> anyhow::Result<Value> {
    let n = b.n(20_000, 5_000);
    let c = Cluster::start(&b.scratch.join("cluster")).await?;
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
        let cpu0 = c.cpu();
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
        let cpu: Vec<f64> = c.cpu().iter().zip(&cpu0).map(|(a, b)| a - b).collect();
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
