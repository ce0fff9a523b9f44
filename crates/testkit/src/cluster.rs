//! A real Redis Cluster on loopback ports, for the cluster tests and the benchmark:
//! `redis-server` nodes started here, joined by `redis-cli --cluster create` (Debian's
//! redis-tools), which slices the slots evenly over the primaries in order.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::{RedisOptions, RedisServer, free_port};

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub primaries: usize,
    /// Replicas per primary.
    pub replicas: usize,
    /// Each node's AOF (`appendfsync always`, as [`RedisOptions::aof`]).
    pub aof: bool,
    /// `cluster-node-timeout`: how soon a silent primary fails over.
    pub node_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            primaries: 3,
            replicas: 1,
            aof: true,
            node_timeout: Duration::from_millis(1500),
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    pub dir: PathBuf,
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl Cluster {
    /// Starts the nodes in `dir`, creates the cluster, and waits until every node sees
    /// all slots and every primary has its replicas online.
    pub async fn start(dir: &Path, opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let mut nodes = Vec::new();
        for i in 0..opts.primaries * (1 + opts.replicas) {
            let node = RedisOptions {
                aof: opts.aof,
                port: Some(cluster_port()),
                args: [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &opts.node_timeout.as_millis().to_string(),
                    "--maxclients",
                    "20000",
                ]
                .map(String::from)
                .to_vec(),
            };
            nodes.push(RedisServer::start(&dir.join(format!("n{i}")), node).await?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args([
                "--cluster-replicas",
                &opts.replicas.to_string(),
                "--cluster-yes",
            ])
            .output()
            .context("redis-cli --cluster create (Debian's redis-tools)")?;
        ensure!(out.status.success(), "redis-cli --cluster create: {out:?}");
        let c = Cluster {
            nodes,
            dir: dir.to_path_buf(),
        };
        c.wait_ok(&c.nodes.iter().map(|n| n.port()).collect::<Vec<_>>())
            .await?;
        // Replicas attach after the slots are assigned.
        if opts.replicas > 0 {
            c.wait_replicas(&opts).await?;
        }
        Ok(c)
    }

    /// Waits until every primary has its replicas online.
    async fn wait_replicas(&self, opts: &ClusterOptions) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let want = format!("connected_slaves:{}", opts.replicas);
        loop {
            let primaries: Vec<String> = self
                .nodes
                .iter()
                .map(|n| Self::cli(n.port(), &["INFO", "replication"]))
                .filter(|i| i.contains("role:master"))
                .collect();
            if primaries.len() == opts.primaries
                && primaries
                    .iter()
                    .all(|i| i.contains(&want) && i.contains("state=online"))
            {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "replicas did not attach");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis-cli -p <port> <args>`'s output.
    pub fn cli(port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Waits until every listed node reports `cluster_state:ok` and sees all slots.
    pub async fn wait_ok(&self, ports: &[u16]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = ports.iter().all(|p| {
                let info = Self::cli(*p, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the cluster did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node, as `AFTERCALL_REDIS_URL` lists them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The slot of `key`, as the cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        Self::cli(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap_or(u16::MAX)
    }

    /// Kills the primary serving `slot` and waits until its replica has taken over
    /// (after the node timeout) and the cluster is whole again. Returns the killed
    /// node's index.
    pub async fn fail_over(&mut self, slot: u16) -> anyhow::Result<usize> {
        let victim = self
            .primary_for(slot)
            .context("no primary serves the slot")?;
        let victim_port = self.nodes[victim].port();
        self.nodes[victim].kill().await;
        let survivor = self
            .nodes
            .iter()
            .map(|n| n.port())
            .find(|p| *p != victim_port)
            .context("a survivor")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = Self::cli(survivor, &["CLUSTER", "INFO"]);
            if info.contains("cluster_state:ok")
                && self.primary_for(slot).is_some_and(|p| p != victim)
            {
                return Ok(victim);
            }
            ensure!(Instant::now() < deadline, "no failover: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the healthy primary that serves `slot`, if one does right now.
    pub fn primary_for(&self, slot: u16) -> Option<usize> {
        let nodes = Self::cli(self.nodes[0].port(), &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                    && (a..=b).contains(&slot)
                {
                    return self.nodes.iter().position(|n| n.port() == port);
                }
            }
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
