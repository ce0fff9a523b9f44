//! Prometheus metrics of the worker: job outcomes and attempts by action, retry delays,
//! queue depths, the oldest queued job's age, workers alive, lease losses, delivery
//! latency (enqueue to done), per-destination errors and Redis round-trip time. Recorded through the `metrics` facade; rendered by
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
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &secs)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            register_all();
            handle
        })
        .clone()
}

/// Job kinds, as the `action` label says them.
const KINDS: [&str; 7] = [
    "call_ended",
    "email",
    "sms",
    "webhook",
    "task",
    "slack",
    "on_complete",
];
/// Follow-up rules that skip an action, as the `rule` label says them.
const RULES: [&str; 4] = ["condition", "expired", "opted_out", "frequency_cap"];
/// Redis calls timed by `aftercall_redis_round_trip_seconds`.
const OPS: [&str; 1] = ["fetch"];

/// Every series whose labels are known in advance exists from the first scrape, at
/// zero, so that `rate()` and alert rules see a start rather than an absent series.
/// `aftercall_destination_errors_total` is labelled by destinations not known yet: it
/// has HELP and TYPE lines ([`render`]) but no series until a destination fails.
fn register_all() {
    for action in KINDS {
        for outcome in ["delivered", "skipped", "retry", "dead"] {
            counter!("aftercall_attempts_total", "action" => action, "outcome" => outcome)
                .increment(0);
            if outcome != "retry" {
                counter!("aftercall_jobs_total", "action" => action, "outcome" => outcome)
                    .increment(0);
            }
        }
        counter!("aftercall_held_back_total", "action" => action).increment(0);
        if matches!(action, "sms" | "email") {
            counter!("aftercall_quiet_hours_deferred_total", "action" => action).increment(0);
        }
        if action != "call_ended" {
            for rule in RULES {
                counter!("aftercall_rule_skips_total", "action" => action, "rule" => rule)
                    .increment(0);
            }
        }
        for reason in ["circuit_open", "throttled", "paused"] {
            counter!("aftercall_destination_held_total", "action" => action, "reason" => reason)
                .increment(0);
        }
        let _ = histogram!("aftercall_attempt_duration_seconds", "action" => action);
        let _ = histogram!("aftercall_delivery_latency_seconds", "action" => action);
        let _ = histogram!("aftercall_retry_delay_seconds", "action" => action);
    }
    for op in OPS {
        let _ = histogram!("aftercall_redis_round_trip_seconds", "op" => op);
    }
    counter!("aftercall_leases_lost_total").increment(0);
    counter!("aftercall_dead_expired_total").increment(0);
    for result in ["sent", "failed", "dropped"] {
        counter!("aftercall_alerts_total", "result" => result).increment(0);
    }
    metrics::describe_counter!(
        "aftercall_destination_errors_total",
        DESTINATION_ERRORS_HELP
    );
}

/// Renders the metrics for a scrape, after sampling the queue's depths, the oldest
/// queued job's age, the workers alive and Redis's eviction figures (bounded by 2 s: a
/// slow Redis leaves the previous sample).
pub async fn render(handle: &PrometheusHandle, queue: &aftercall_queue::Queue) -> String {
    let sample = async {
        tokio::join!(
            queue.stats(),
            queue.oldest_queued_age_ms(),
            queue.destinations()
        )
    };
    match tokio::time::timeout(Duration::from_secs(2), sample).await {
        Ok((Ok(stats), oldest, dests)) => {
            match dests {
                Ok(list) => destinations(&list),
                Err(e) => tracing::debug!(error = %e, "sampling destinations failed"),
            }
            queue_depths(&stats);
            match oldest {
                Ok(ms) => oldest_queued(&stats.queue, ms),
                Err(e) => tracing::debug!(error = %e, "sampling the oldest queued job failed"),
            }
        }
        Ok((Err(e), _, _)) => {
            tracing::debug!(error = %e, "sampling queue depths for /metrics failed")
        }
        Err(_) => tracing::debug!("sampling queue depths for /metrics took over 2 s"),
    }
    let mut text = handle.render();
    // The exporter leaves out a family without series; say it exists all the same (a
    // family with no samples is valid exposition text).
    for (name, kind, help) in LABELLED_LATER {
        if !text.contains(&format!("# TYPE {name} ")) {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        }
    }
    text
}

/// Families whose series appear only with their first label values (a destination).
const LABELLED_LATER: [(&str, &str, &str); 5] = [
    (
        "aftercall_destination_errors_total",
        "counter",
        DESTINATION_ERRORS_HELP,
    ),
    (
        "aftercall_circuit_transitions_total",
        "counter",
        "Destination circuits opened or closed (label to), by destination",
    ),
    (
        "aftercall_destination_state",
        "gauge",
        "1 for each destination's current state (closed, open, half_open, paused)",
    ),
    (
        "aftercall_destination_failure_streak",
        "gauge",
        "Consecutive failed attempts per destination",
    ),
    (
        "aftercall_destination_held",
        "gauge",
        "Jobs held per destination by its circuit, a 429 pause or an operator's pause",
    ),
];

const DESTINATION_ERRORS_HELP: &str =
    "Failed attempts per destination (a host, an SMS sender, a task provider)";

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

/// An action skipped by a follow-up rule (docs/rules.md): `condition`, `expired`,
/// `opted_out`, `frequency_cap`.
pub fn rule_skip(action: &'static str, rule: &'static str) {
    counter!("aftercall_rule_skips_total", "action" => action, "rule" => rule).increment(1);
}

/// An SMS or e-mail put off to the end of its agent's quiet hours (not an attempt).
pub fn quiet_deferred(action: &'static str) {
    counter!("aftercall_quiet_hours_deferred_total", "action" => action).increment(1);
}

/// Work held back by a per-destination limit (not an attempt).
pub fn held_back(action: &'static str) {
    counter!("aftercall_held_back_total", "action" => action).increment(1);
}

/// A job held by its destination's health or a pause (not an attempt).
pub fn held_by_destination(action: &'static str, verdict: aftercall_queue::Verdict) {
    use aftercall_queue::Verdict;
    let reason = match verdict {
        Verdict::Throttled => "throttled",
        Verdict::Paused => "paused",
        _ => "circuit_open",
    };
    counter!("aftercall_destination_held_total", "action" => action, "reason" => reason)
        .increment(1);
}

/// Dead letters whose payload AFTERCALL_DEAD_RETENTION dropped.
pub fn dead_expired(n: u64) {
    counter!("aftercall_dead_expired_total").increment(n);
}

/// An operational alert (or a digest of several) sent, given up on, or dropped.
pub fn alert(result: &'static str) {
    counter!("aftercall_alerts_total", "result" => result).increment(1);
}

/// A destination's circuit opened or closed.
pub fn circuit(destination: &str, to: &'static str) {
    counter!("aftercall_circuit_transitions_total", "destination" => destination.to_string(), "to" => to).increment(1);
}

/// Each destination's health, sampled from Redis at a scrape.
pub fn destinations(list: &[aftercall_queue::DestinationHealth]) {
    for d in list {
        let dest = d.destination.clone();
        for state in ["closed", "open", "half_open", "paused"] {
            let v = if d.state == state { 1.0 } else { 0.0 };
            gauge!("aftercall_destination_state", "destination" => dest.clone(), "state" => state)
                .set(v);
        }
        gauge!("aftercall_destination_failure_streak", "destination" => dest.clone())
            .set(d.failure_streak as f64);
        gauge!("aftercall_destination_held", "destination" => dest).set(d.held as f64);
    }
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
    // Sampled from the heartbeats in Redis, so any replica serving /metrics (an API-only
    // one too) says whether some worker is alive.
    gauge!("aftercall_workers_alive", "queue" => q.clone()).set(s.workers_alive as f64);
    // Any eviction may have been a job: alert on it (docs/production.md).
    if let Some(n) = s.redis.evicted_keys {
        gauge!("aftercall_redis_evicted_keys").set(n as f64);
    }
    let policy = s
        .redis
        .maxmemory_policy
        .clone()
        .unwrap_or_else(|| "unknown".into());
    gauge!("aftercall_redis_maxmemory_policy", "policy" => policy).set(1.0);
}

/// How long the next job to be fetched has been queued (0 when none is): it rises while
/// nothing fetches, whatever the depth.
pub fn oldest_queued(queue: &str, age_ms: Option<i64>) {
    let secs = age_ms.unwrap_or(0) as f64 / 1000.0;
    gauge!("aftercall_oldest_queued_age_seconds", "queue" => queue.to_string()).set(secs);
}
