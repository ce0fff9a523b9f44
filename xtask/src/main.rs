//! Project tasks. `cargo xtask bench [--quick] [--full]`: the benchmark harness (see
//! BENCHMARKS.md). `xtask receiver` is the harness's webhook receiver process.

mod bench;
mod probe;
mod receiver;
mod report;

const USAGE: &str = "usage: cargo xtask bench [--quick] [--full] [--only a,b,..] [--no-build] [--big-event] [--out FILE]
  --quick     smaller N everywhere (a minute or two)
  --full      adds the 1,000,000-job backlog to the flatness check
  --only      scenarios: ceiling,enqueue,pipeline,noop,latency,slow,memory,flatness,aof,stalled
  --no-build  use target/release binaries as they are
  --n N       every scenario with N events (profiling; AFTERCALL_BENCH_WRAP=\"valgrind --tool=callgrind\"
              runs the worker under a profiler, AFTERCALL_BENCH_PERF=1 samples it with perf)
  --big-event every scenario sends the `bytes` scenario's 6 KB call (compressed at rest)
              instead of the 1 KB one
  --out FILE  JSON results (default target/bench/results.json)";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("bench") => bench::main(&args[1..]),
        Some("receiver") => receiver::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
