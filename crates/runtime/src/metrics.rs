//! Prometheus metrics of the worker: job outcomes and attempts by action, retry delays,
//! queue depths, lease losses, delivery latency (enqueue to done), per-destination
//! errors and Redis round-trip time. Recorded through the `metrics` facade; rendered by
//! the exporter's handle at `/metrics`.

use std::time::Duration;

use aftercall_queue::Stats;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder once and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let secs = [
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                300.0, 3600.0, 86_400.0,
            ];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &secs)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once")
        })
        .clone()
}

/// An attempt ended. `outcome`: delivered, skipped, retry, dead.
pub fn attempt(action: &'static str, outcome: &'static str, took: Duration) {
    counter!("aftercall_attempts_total", "action" => action, "outcome" => outcome).increment(1);
    histogram!("aftercall_attempt_duration_seconds", "action" => action).record(took.as_secs_f64());
    if outcome != "retry" {
        counter!("aftercall_jobs_total", "action" => action, "outcome" => outcome).increment(1);
    }
}

/// From enqueue to the job's final outcome.
pub fn delivery_latency(action: &'static str, latency: Duration) {
    histogram!("aftercall_delivery_latency_seconds", "action" => action)
        .record(latency.as_secs_f64());
}

pub fn retry_delay(action: &'static str, delay: Duration) {
    histogram!("aftercall_retry_delay_seconds", "action" => action).record(delay.as_secs_f64());
}

/// A failed attempt against a destination (a host, an SMS sender, a task provider).
pub fn destination_error(action: &'static str, destination: &str) {
    counter!("aftercall_destination_errors_total", "action" => action, "destination" => destination.to_string()).increment(1);
}

/// Work held back by a per-destination limit (not an attempt).
pub fn held_back(action: &'static str) {
    counter!("aftercall_held_back_total", "action" => action).increment(1);
}

pub fn lease_lost() {
    counter!("aftercall_leases_lost_total").increment(1);
}

pub fn redis_round_trip(op: &'static str, took: Duration) {
    histogram!("aftercall_redis_round_trip_seconds", "op" => op).record(took.as_secs_f64());
}

pub fn queue_depths(s: &Stats) {
    let q = s.queue.clone();
    for (state, v) in [
        ("queued", s.queued),
        ("running", s.running),
        ("scheduled", s.scheduled),
        ("dead", s.dead),
    ] {
        gauge!("aftercall_queue_depth", "queue" => q.clone(), "state" => state).set(v as f64);
    }
}
