//! OpenTelemetry export, against a real OTLP/HTTP receiver written in Python that decodes
//! each request with the official protobuf definitions (`opentelemetry-proto` from PyPI,
//! installed by `./dev test`): a worker configured by the standard `OTEL_*` variables
//! sends one span per job and per attempt, children of the event's `traceparent`, with
//! the action, outcome, attempt and status code, and nothing of the call's contents.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aftercall_tests::{Receiver, Reply, World, call_event, settled};
use serde_json::Value;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PRODUCER_SPAN: &str = "b7ad6b7169203331";

/// The Python receiver, and the spans it has printed so far.
struct Collector {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    fn start() -> Collector {
        Collector::start_with(&[])
    }

    /// `&["grpc"]` for an OTLP/gRPC receiver.
    fn start_with(args: &[&str]) -> Collector {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("otlp/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (./dev test installs opentelemetry-proto)");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        let port = first
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the receiver said {first:?}"))
            .parse()
            .unwrap();
        let spans: Arc<Mutex<Vec<Value>>> = Default::default();
        let seen = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Collector { child, port, spans }
    }

    /// Waits until `n` spans arrived (or the deadline passed); returns them all.
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// A world whose workers export their spans to `collector` as `service`, at once.
async fn exporting_world(collector: &Collector, service: &str) -> World {
    let mut w = World::new().await;
    w.set(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("http://127.0.0.1:{}", collector.port),
    );
    w.set("OTEL_SERVICE_NAME", service);
    w.set("OTEL_BSP_SCHEDULE_DELAY", "100");
    w
}

/// Enqueues the test call `call_id` of agent `a1`, continuing the producer's trace.
async fn push_traced(w: &World, call_id: &str) {
    let mut traced: Value = serde_json::from_str(&call_event(call_id, "a1")).unwrap();
    traced["traceparent"] = format!("00-{TRACE}-{PRODUCER_SPAN}-01").into();
    w.queue
        .enqueue_json(traced.to_string().as_bytes())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_and_attempts_are_exported_as_spans_under_the_events_trace() {
    let collector = Collector::start();
    let mut w = exporting_world(&collector, "aftercall-test").await;
    w.set("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test");
    let rx = Receiver::start().await.unwrap();
    rx.script([Reply::status(503)]);
    w.webhook_agent("a1", &format!("{}/hook", rx.url)).await;

    // One call continuing a producer's trace; one without a traceparent.
    push_traced(&w, "traced").await;
    w.push("untraced", "a1").await;
    let mut worker = w.worker();
    for call in ["traced", "untraced"] {
        let s = w.wait_call(call, Duration::from_secs(30), settled).await;
        assert!(settled(&s), "{s:?}");
    }
    // Per call: the call-ended job and its attempt; the webhook job and its attempts
    // (the first receiver answer was a 503, for one of the two calls).
    let spans = collector.wait_for(4 + 5, Duration::from_secs(20)).await;
    assert!(worker.terminate(Duration::from_secs(20)).is_some());
    assert!(
        spans.iter().all(|s| s.get("error").is_none()),
        "the receiver could not decode a request: {spans:#?}"
    );
    assert_eq!(spans.len(), 9, "{spans:#?}");

    for s in &spans {
        assert_eq!(s["resource"]["service.name"], "aftercall-test", "{s}");
        assert_eq!(s["resource"]["deployment.environment"], "test", "{s}");
        assert_eq!(s["scope"], "aftercall");
        // Nothing of the call's contents: ids, types, outcomes and numbers only.
        let text = s["attributes"].to_string();
        for personal in ["+1415", "Ann", "ann@example.com", "traced"] {
            assert!(!text.contains(personal), "{personal} in {text}");
        }
    }
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    let named = |trace: &str, name: &str| -> Vec<&Value> {
        let mut v: Vec<&Value> = spans
            .iter()
            .filter(|s| s["trace_id"] == trace && s["name"] == name)
            .collect();
        v.sort_by_key(|s| attr(s, "aftercall.attempt").as_i64());
        v
    };

    // The traced call: its call-ended job span is the producer span's child; the webhook
    // job's span is the call-ended job's child; each attempt is its job's child.
    let fan_job = named(TRACE, "call_ended job");
    assert_eq!(fan_job.len(), 1, "{spans:#?}");
    let fan_job = fan_job[0];
    assert_eq!(fan_job["parent_span_id"], PRODUCER_SPAN);
    assert_eq!(attr(fan_job, "aftercall.outcome"), "delivered");
    let fan_attempt = named(TRACE, "call_ended attempt");
    assert_eq!(fan_attempt.len(), 1);
    assert_eq!(fan_attempt[0]["parent_span_id"], fan_job["span_id"]);
    assert_eq!(attr(fan_attempt[0], "aftercall.attempt"), 1);

    let hook_job = named(TRACE, "webhook job");
    assert_eq!(hook_job.len(), 1, "{spans:#?}");
    let hook_job = hook_job[0];
    assert_eq!(hook_job["parent_span_id"], fan_job["span_id"]);
    assert_eq!(attr(hook_job, "aftercall.action"), "webhook");
    assert_eq!(attr(hook_job, "aftercall.outcome"), "delivered");
    let hook_attempts = named(TRACE, "webhook attempt");
    let outcomes: Vec<(i64, &str, i64, i64)> = hook_attempts
        .iter()
        .map(|s| {
            assert_eq!(s["parent_span_id"], hook_job["span_id"]);
            assert_eq!(s["kind"], 3, "a client span");
            assert!(s["start"].as_u64() <= s["end"].as_u64());
            (
                attr(s, "aftercall.attempt").as_i64().unwrap(),
                attr(s, "aftercall.outcome").as_str().unwrap(),
                attr(s, "http.response.status_code").as_i64().unwrap(),
                s["status"].as_i64().unwrap(),
            )
        })
        .collect();
    // Which call got the 503 depends on which the worker ran first.
    let retried = outcomes.len() == 2;
    if retried {
        // Status codes: 2 is error, 1 is ok.
        assert_eq!(outcomes, [(1, "retry", 503, 2), (2, "delivered", 200, 1)]);
        assert_eq!(attr(hook_job, "aftercall.attempts"), 2);
    } else {
        assert_eq!(outcomes, [(1, "delivered", 200, 1)]);
    }
    // The receiver's traceparent names the attempt's span: its spans nest under ours.
    let last = hook_attempts.last().unwrap()["span_id"].as_str().unwrap();
    let got = rx.received();
    assert!(
        got.iter()
            .filter_map(|r| r.header("traceparent"))
            .any(|tp| tp == format!("00-{TRACE}-{last}-01")),
        "{:?}",
        got.iter()
            .map(|r| r.header("traceparent"))
            .collect::<Vec<_>>()
    );

    // The untraced call: one trace of its own for all its jobs, rooted at its
    // call-ended job.
    let own: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] != TRACE).collect();
    assert_eq!(own.len(), if retried { 4 } else { 5 }, "{own:#?}");
    let trace = own[0]["trace_id"].as_str().unwrap();
    assert!(own.iter().all(|s| s["trace_id"] == trace));
    let root = named(trace, "call_ended job")[0];
    assert_eq!(root["parent_span_id"], "", "a root span");
    for s in own {
        if s["name"] != "call_ended job" {
            let parent = s["parent_span_id"].as_str().unwrap();
            assert!(
                by_id.contains_key(parent),
                "{s} has no parent among {by_id:?}"
            );
        }
    }
}

/// The same spans over OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`), decoded by
/// grpcio's server with the official service definitions.
#[tokio::test(flavor = "multi_thread")]
async fn spans_are_exported_over_grpc_too() {
    let collector = Collector::start_with(&["grpc"]);
    let mut w = exporting_world(&collector, "aftercall-grpc").await;
    w.set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let rx = Receiver::start().await.unwrap();
    w.webhook_agent("a1", &format!("{}/hook", rx.url)).await;
    push_traced(&w, "over-grpc").await;
    let mut worker = w.worker();
    let s = w
        .wait_call("over-grpc", Duration::from_secs(30), settled)
        .await;
    assert!(settled(&s), "{s:?}");
    // The call-ended job and its attempt, the webhook job and its attempt.
    let spans = collector.wait_for(4, Duration::from_secs(20)).await;
    assert!(worker.terminate(Duration::from_secs(20)).is_some());
    assert_eq!(spans.len(), 4, "{spans:#?}\n{}", worker.log_text());
    for s in &spans {
        assert_eq!(s["resource"]["service.name"], "aftercall-grpc", "{s}");
        assert_eq!(s["trace_id"], TRACE, "{s}");
    }
    assert!(
        spans.iter().any(|s| s["parent_span_id"] == PRODUCER_SPAN),
        "the call-ended job continues the producer's span: {spans:#?}"
    );
}
