//! Measuring what the benchmark runs: process CPU, memory and sockets from /proc, and
//! Redis's own counters (INFO cpu, memory, commandstats).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used (all its threads).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// A `Vm*` field of /proc/<pid>/status in bytes (VmRSS, VmHWM).
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Open file descriptors, and how many of them are sockets.
pub fn fds(pid: u32) -> Option<(u64, u64)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let (mut all, mut sockets) = (0, 0);
    for e in dir.flatten() {
        all += 1;
        if std::fs::read_link(e.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false)
        {
            sockets += 1;
        }
    }
    Some((all, sockets))
}

/// Samples a process every 50 ms for its peak RSS, fds and sockets.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak_rss: Arc<AtomicU64>,
    peak_fds: Arc<AtomicU64>,
    peak_sockets: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub rss: u64,
    pub fds: u64,
    pub sockets: u64,
}

impl Sampler {
    pub fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_fds = Arc::new(AtomicU64::new(0));
        let peak_sockets = Arc::new(AtomicU64::new(0));
        let (s, r, f, k) = (
            stop.clone(),
            peak_rss.clone(),
            peak_fds.clone(),
            peak_sockets.clone(),
        );
        let task = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if let Some(rss) = status_bytes(pid, "VmRSS:") {
                    r.fetch_max(rss, Ordering::SeqCst);
                }
                if let Some((all, sockets)) = fds(pid) {
                    f.fetch_max(all, Ordering::SeqCst);
                    k.fetch_max(sockets, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Sampler {
            stop,
            peak_rss,
            peak_fds,
            peak_sockets,
            task,
        }
    }

    pub async fn stop(self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        Peaks {
            rss: self.peak_rss.load(Ordering::SeqCst),
            fds: self.peak_fds.load(Ordering::SeqCst),
            sockets: self.peak_sockets.load(Ordering::SeqCst),
        }
    }
}

/// `INFO <section>` as key → value.
pub async fn info(
    conn: &mut MultiplexedConnection,
    section: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

/// Redis's own counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct RedisCounters {
    /// used_cpu_user + used_cpu_sys, seconds.
    pub cpu: f64,
    /// Every command executed, including those called from scripts.
    pub commands: u64,
    /// Script calls (EVALSHA + EVAL).
    pub scripts: u64,
    /// Microseconds Redis spent running scripts (commandstats usec of EVALSHA + EVAL).
    pub script_usec: u64,
    /// used_cpu_sys alone (syscalls: mostly network reads and writes).
    pub cpu_sys: f64,
    pub used_memory: u64,
}

pub async fn redis_counters(conn: &mut MultiplexedConnection) -> anyhow::Result<RedisCounters> {
    let cpu = info(conn, "cpu").await?;
    let f = |k: &str| {
        cpu.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stats = info(conn, "commandstats").await?;
    let mut commands = 0;
    let mut scripts = 0;
    let mut script_usec = 0;
    for (k, v) in &stats {
        let Some(name) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let calls: u64 = v
            .split(',')
            .find_map(|p| p.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // INFO itself is the harness, not the workload.
        if name == "info" {
            continue;
        }
        if name == "evalsha" || name == "eval" {
            scripts += calls;
            script_usec += v
                .split(',')
                .find_map(|p| p.strip_prefix("usec="))
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0);
        } else {
            commands += calls;
        }
    }
    let mem = info(conn, "memory").await?;
    Ok(RedisCounters {
        cpu: f("used_cpu_user") + f("used_cpu_sys"),
        cpu_sys: f("used_cpu_sys"),
        commands,
        scripts,
        script_usec,
        used_memory: mem
            .get("used_memory")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// CPU and Redis work over one phase of a scenario.
pub struct Meter {
    started: Instant,
    redis0: RedisCounters,
    procs: Vec<(String, u32, f64)>,
}

/// What a phase cost: wall time, Redis CPU and commands, each process's CPU.
#[derive(Debug, Clone)]
pub struct Usage {
    pub wall: Duration,
    /// Fraction of one core Redis used (1.0 = a core).
    pub redis_cpu: f64,
    pub redis_commands: u64,
    pub redis_scripts: u64,
    /// Seconds inside scripts, and in syscalls.
    pub redis_script_s: f64,
    pub redis_sys: f64,
    /// (name, fraction of one core).
    pub procs: Vec<(String, f64)>,
}

impl Usage {
    pub fn to_json(&self) -> serde_json::Value {
        let mut cpu = serde_json::Map::new();
        cpu.insert("redis".into(), round(self.redis_cpu, 3).into());
        for (n, c) in &self.procs {
            cpu.insert(n.clone(), round(*c, 3).into());
        }
        serde_json::json!({
            "wall_s": round(self.wall.as_secs_f64(), 3),
            "cpu_cores": cpu,
            "redis_commands": self.redis_commands,
            "redis_script_calls": self.redis_scripts,
            "redis_script_s": round(self.redis_script_s, 4),
            "redis_sys_s": round(self.redis_sys, 4),
        })
    }
}

impl Meter {
    pub async fn start(
        conn: &mut MultiplexedConnection,
        procs: &[(&str, u32)],
    ) -> anyhow::Result<Meter> {
        let redis0 = redis_counters(conn).await?;
        let procs = procs
            .iter()
            .map(|(n, pid)| (n.to_string(), *pid, cpu_secs(*pid).unwrap_or(0.0)))
            .collect();
        Ok(Meter {
            started: Instant::now(),
            redis0,
            procs,
        })
    }

    pub async fn stop(self, conn: &mut MultiplexedConnection) -> anyhow::Result<Usage> {
        let wall = self.started.elapsed();
        let r = redis_counters(conn).await?;
        let secs = wall.as_secs_f64().max(1e-9);
        Ok(Usage {
            wall,
            redis_cpu: (r.cpu - self.redis0.cpu) / secs,
            redis_commands: r.commands.saturating_sub(self.redis0.commands),
            redis_scripts: r.scripts.saturating_sub(self.redis0.scripts),
            redis_script_s: r.script_usec.saturating_sub(self.redis0.script_usec) as f64 / 1e6,
            redis_sys: r.cpu_sys - self.redis0.cpu_sys,
            procs: self
                .procs
                .into_iter()
                .map(|(n, pid, c0)| {
                    let c1 = cpu_secs(pid).unwrap_or(c0);
                    (n, (c1 - c0) / secs)
                })
                .collect(),
        })
    }
}

pub fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// nproc, CPU model, memory and load, for the report's header.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    serde_json::json!({
        "nproc": nproc,
        "cpu_model": model,
        "memory_gib": round(mem_kb as f64 / 1024.0 / 1024.0, 1),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "redis": redis,
        "loadavg_at_start": loadavg(),
    })
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
