//! OpenTelemetry traces over OTLP (HTTP/protobuf, or gRPC with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`), on when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_SDK_DISABLED` are
//! read as the SDK reads them). Off, the job path pays one `Option` check.
//!
//! One span per attempt and one per job, built whole when an attempt settles (their times
//! known by then) and handed to the SDK's batch processor, which exports from its own
//! thread. A job's attempts run hours apart, on any replica, so ids are derived rather
//! than remembered: a job's span id from its id, an attempt's from the job id and attempt
//! number (the span id its webhook's `traceparent` carries, so a receiver's spans nest
//! under it), the trace id from the event's `traceparent` or else from the call id. An
//! action job's span is a child of its call's call-ended job span, which is a child of
//! the producer's span when the event names one. Attributes: the action type, outcome,
//! attempt number, HTTP status and job id; never the event's contents.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime};

use aftercall_core::{AttemptOutcome, Job, JobBody, Settled, Transition};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use sha2::{Digest, Sha256};

/// The exporter of one worker process.
pub struct Otel {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otel").finish_non_exhaustive()
    }
}

/// Whether the standard variables ask for traces.
fn wanted(get: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());
    let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let none = get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled
        && !none
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

impl Otel {
    /// The exporter the environment asks for, or `None`. Must be called inside the
    /// worker's Tokio runtime: requests are sent on it.
    pub fn from_env() -> Result<Option<Otel>, String> {
        if !wanted(|k| std::env::var(k).ok()) {
            return Ok(None);
        }
        // OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: `http/protobuf` (the default) or `grpc`.
        let protocol = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "http/protobuf".into());
        let exporter = match protocol.trim() {
            "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(OtlpClient::new()?)
                .with_timeout(Duration::from_secs(10))
                .build(),
            // tonic's own HTTP/2 client; the endpoint and headers are read from the same
            // variables by the SDK.
            "grpc" => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(Duration::from_secs(10))
                .build(),
            other => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL: `{other}` is not supported; use http/protobuf or grpc"
                ));
            }
        }
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
        // The SDK reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; without either
        // naming the service, it is `aftercall-worker` rather than `unknown_service`.
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
                v.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        let resource = if named {
            Resource::builder().build()
        } else {
            Resource::builder()
                .with_service_name("aftercall-worker")
                .build()
        };
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(&resource);
        let scope = InstrumentationScope::builder("aftercall")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Some(Otel { processor, scope }))
    }

    /// Records one settled attempt of `job` (and, when it is the job's last, the job's
    /// span). `started` is when the attempt began.
    pub(crate) fn attempt(
        &self,
        job: &Job,
        attempt: u32,
        kind: &'static str,
        settled: &Settled,
        started: Instant,
    ) {
        let traceparent = match &job.body {
            JobBody::CallEnded { event } => event.traceparent.as_deref(),
            JobBody::Action(a) => a.event.traceparent.as_deref(),
        };
        let Some(ids) = TraceIds::of(job, traceparent) else {
            return;
        };
        let now = SystemTime::now();
        let outcome = match settled.transition {
            Transition::Delivered { .. } | Transition::FannedOut { .. } => "delivered",
            Transition::Skipped { .. } => "skipped",
            Transition::Retry { .. } => "retry",
            Transition::Dead { .. } => "dead",
        };
        let failed = matches!(
            settled.attempt.outcome,
            AttemptOutcome::Retry | AttemptOutcome::Failed
        );
        let mut attrs = vec![
            KeyValue::new("aftercall.action", kind),
            KeyValue::new("aftercall.outcome", outcome),
            KeyValue::new("aftercall.attempt", i64::from(attempt)),
            KeyValue::new("aftercall.job_id", job.id.clone()),
        ];
        if let Some(status) = settled.attempt.status {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let job_span = job_span_id(&job.id);
        self.emit(Span {
            trace: ids.trace,
            flags: ids.flags,
            id: attempt_span_id(&job.id, attempt),
            parent: job_span,
            parent_remote: false,
            kind: if kind == "call_ended" {
                SpanKind::Internal
            } else {
                SpanKind::Client
            },
            name: format!("{kind} attempt"),
            start: now - started.elapsed(),
            end: now,
            attrs,
            // An error's text may quote what a receiver said about the caller: only the
            // outcome goes out.
            status: if failed {
                Status::error(outcome)
            } else {
                Status::Ok
            },
        });
        if outcome == "retry" {
            return;
        }
        let start = SystemTime::from(job.created_at).min(now - started.elapsed());
        self.emit(Span {
            trace: ids.trace,
            flags: ids.flags,
            id: job_span,
            parent: ids.parent,
            parent_remote: ids.parent_remote,
            kind: SpanKind::Internal,
            name: format!("{kind} job"),
            start,
            end: now,
            attrs: vec![
                KeyValue::new("aftercall.action", kind),
                KeyValue::new("aftercall.outcome", outcome),
                KeyValue::new("aftercall.attempts", i64::from(attempt)),
                KeyValue::new("aftercall.job_id", job.id.clone()),
            ],
            status: if outcome == "dead" {
                Status::error(outcome)
            } else {
                Status::Ok
            },
        });
    }

    fn emit(&self, s: Span) {
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(s.trace, s.id, s.flags, false, TraceState::default()),
            parent_span_id: s.parent,
            parent_span_is_remote: s.parent_remote,
            span_kind: s.kind,
            name: Cow::Owned(s.name),
            start_time: s.start,
            end_time: s.end,
            attributes: s.attrs,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: s.status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Exports what is still batched (at most 10 s). Blocking: run it off the runtime's
    /// threads, which the export itself needs.
    pub fn shutdown(&self) {
        if let Err(e) = self
            .processor
            .shutdown_with_timeout(Duration::from_secs(10))
        {
            tracing::warn!(error = %e, "OpenTelemetry: exporting the last spans failed");
        }
    }
}

struct Span {
    trace: TraceId,
    flags: TraceFlags,
    id: SpanId,
    parent: SpanId,
    parent_remote: bool,
    kind: SpanKind,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attrs: Vec<KeyValue>,
    status: Status,
}

/// The trace a job's spans belong to, and its job span's parent.
struct TraceIds {
    trace: TraceId,
    flags: TraceFlags,
    parent: SpanId,
    parent_remote: bool,
}

impl TraceIds {
    /// `None` when the producer's `traceparent` says its trace is not sampled.
    fn of(job: &Job, traceparent: Option<&str>) -> Option<TraceIds> {
        let producer = traceparent.and_then(parse_traceparent);
        if let Some((_, _, flags)) = producer
            && !flags.is_sampled()
        {
            return None;
        }
        let (trace, producer_span) = match producer {
            Some((trace, span, _)) => (trace, Some(span)),
            None => (derived_trace_id(&job.call_id), None),
        };
        let (parent, parent_remote) = match &job.body {
            // An action job's id is its call-ended job's id, a dot, and its index.
            JobBody::Action(_) => match job.id.rsplit_once('.') {
                Some((parent, _)) => (job_span_id(parent), false),
                None => (
                    producer_span.unwrap_or(SpanId::INVALID),
                    producer_span.is_some(),
                ),
            },
            JobBody::CallEnded { .. } => (
                producer_span.unwrap_or(SpanId::INVALID),
                producer_span.is_some(),
            ),
        };
        Some(TraceIds {
            trace,
            flags: TraceFlags::SAMPLED,
            parent,
            parent_remote,
        })
    }
}

fn parse_traceparent(tp: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = tp.trim().split('-');
    let (_version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let trace = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, span, TraceFlags::new(flags)))
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A call's trace when its producer sent none: the same for each of its jobs.
fn derived_trace_id(call_id: &str) -> TraceId {
    let d = digest(&[b"aftercall-trace\0", call_id.as_bytes()]);
    TraceId::from_bytes(d[..16].try_into().expect("16 bytes"))
}

/// A job's span, whichever attempt or replica refers to it.
fn job_span_id(job_id: &str) -> SpanId {
    let d = digest(&[b"aftercall-job\0", job_id.as_bytes()]);
    SpanId::from_bytes(d[..8].try_into().expect("8 bytes"))
}

/// An attempt's span: the span id of the `traceparent` its webhook sends
/// (`aftercall_actions`' `continue_trace`: SHA-256 of `job_id:attempt`).
fn attempt_span_id(job_id: &str, attempt: u32) -> SpanId {
    let d = digest(&[format!("{job_id}:{attempt}").as_bytes()]);
    SpanId::from_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The exporter's HTTP client: reqwest (already the providers' client), on the worker's
/// runtime. The batch processor exports from its own thread, so each request is spawned
/// onto the runtime and awaited from there.
#[derive(Debug)]
struct OtlpClient {
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
}

impl OtlpClient {
    fn new() -> Result<OtlpClient, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("OpenTelemetry exporter's HTTP client: {e}"))?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| "OpenTelemetry needs a Tokio runtime".to_string())?;
        Ok(OtlpClient { http, rt })
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let sent = self.rt.spawn(async move {
            let (parts, body) = request.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            let mut out = Response::builder().status(status).body(body)?;
            *out.headers_mut() = headers;
            Ok::<_, HttpError>(out)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_turns_traces_on() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("OTEL_SERVICE_NAME", "x")], false),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], true),
            (
                &[(
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                )],
                true,
            ),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")], false),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "true"),
                ],
                false,
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none"),
                ],
                false,
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(wanted(env(pairs)), *want, "{pairs:?}");
        }
    }

    #[test]
    fn ids_are_derived_and_match_the_webhooks_traceparent() {
        // The span id of a webhook's traceparent (aftercall_actions, continue_trace).
        let d = Sha256::digest(b"job_1.2:3");
        let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(attempt_span_id("job_1.2", 3).to_string(), hex);
        assert_eq!(job_span_id("job_1"), job_span_id("job_1"));
        assert_ne!(job_span_id("job_1"), job_span_id("job_1.0"));
        assert_eq!(derived_trace_id("c1"), derived_trace_id("c1"));
        assert_ne!(derived_trace_id("c1"), derived_trace_id("c2"));

        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (t, s, f) = parse_traceparent(tp).unwrap();
        assert_eq!(t.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(s.to_string(), "b7ad6b7169203331");
        assert!(f.is_sampled());
        assert!(
            !parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
                .unwrap()
                .2
                .is_sampled()
        );
        for bad in [
            "",
            "00-zz-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
