//! The platform intake end to end, through a real worker serving the API: messages
//! built from each platform's documented payload, checked against its official SDK's
//! types and signed by its official SDK where it has a signer (tests/fixtures/platforms.py:
//! retell-sdk, vapi-server-sdk), posted to `/ingest/*`, fanned out to a real receiver.

use std::time::Duration;

use aftercall_tests::{Receiver, Reply, World, settled, store_agent};
use serde_json::Value;

const RETELL_KEY: &str = "key_retell_0123456789";
const VAPI_TOKEN: &str = "vapi-bearer-0123456789";
const VAPI_HMAC: &str = "vapi-hmac-0123456789";
const BLAND_SECRET: &str = "bland-secret-0123456789";

/// One signed message: the exact body and the headers the platform would send.
struct Signed {
    body: String,
    headers: Vec<(String, String)>,
}

/// One message to sign: platform, kind, call id, agent id, secret, timestamp (ms).
type Ask<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Option<i64>);

/// Runs the fixture script (the platforms' SDKs) once for all of a test's messages.
fn signed(asks: &[Ask<'_>]) -> Vec<Signed> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/platforms.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let asks: Vec<Value> = asks
        .iter()
        .map(|(p, k, c, a, s, ts)| serde_json::json!([p, k, c, a, s, ts]))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&asks).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("platforms.py ends");
    assert!(
        out.status.success(),
        "platforms.py failed (are retell-sdk and vapi-server-sdk installed? ./dev test installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).expect("platforms.py prints JSON");
    all.iter()
        .map(|v| Signed {
            body: v["body"].as_str().unwrap().to_string(),
            headers: v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
        })
        .collect()
}

/// [`signed`] for a fixed number of messages.
fn sign_all<const N: usize>(asks: &[Ask<'_>; N]) -> [Signed; N] {
    signed(asks)
        .try_into()
        .unwrap_or_else(|_| panic!("platforms.py answers once per message"))
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// Posts `m` and fails unless the answer is `status` with `outcome`.
    async fn expect(&self, platform: &str, m: &Signed, status: u16, outcome: &str) {
        let (got, answer) = self.post(platform, m).await;
        let said = answer["outcome"].as_str();
        assert_eq!((got, said), (status, Some(outcome)), "{platform}: {answer}");
    }

    async fn post(&self, platform: &str, m: &Signed) -> (u16, Value) {
        self.post_raw(platform, &m.body, &m.headers).await
    }

    async fn post_raw(
        &self,
        platform: &str,
        body: &str,
        headers: &[(String, String)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/ingest/{platform}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A worker serving the API with every platform's credentials, and two agents: one
/// that waits for Retell's analysis and one that does not, both posting to `rx`.
async fn start(w: &mut World, rx: &Receiver) -> (aftercall_tests::Worker, Api) {
    let base = w.with_admin_api().base;
    w.set("AFTERCALL_RETELL_API_KEY", RETELL_KEY);
    w.set("AFTERCALL_VAPI_SECRET", VAPI_TOKEN);
    w.set("AFTERCALL_VAPI_HMAC_SECRET", VAPI_HMAC);
    w.set("AFTERCALL_BLAND_WEBHOOK_SECRET", BLAND_SECRET);
    w.set("AFTERCALL_INGEST_AGENTS", "bland:pathway-7=agent_now");
    for (agent, wait) in [
        ("agent_wait", r#","wait_for_analysis":"30s""#),
        ("agent_now", ""),
    ] {
        let body = format!(
            r#"{{"name":"Front desk","voice_tools":{{"post_call_follow_up":{{"enabled":true{wait},"actions":[{{"type":"webhook","url":"{}"}}]}}}}}}"#,
            rx.url
        );
        store_agent(&w.queue, agent, &body).await;
    }
    let worker = w.worker();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api {
        http: reqwest::Client::new(),
        base,
    };
    let ready = aftercall_tests::poll(Duration::from_secs(20), || async {
        let r = api
            .http
            .get(format!("{}/readyz", api.base))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "API never ready: {}", worker.log_text());
    (worker, api)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Deliveries the receiver got for `call_id`.
fn delivered(rx: &Receiver, call_id: &str) -> Vec<Value> {
    rx.received()
        .iter()
        .map(|r| r.json())
        .filter(|j| j["call_id"] == call_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retell_call_waits_for_its_analysis_and_fans_out_once_with_it() {
    let mut w = World::new().await;
    let rx = Receiver::answering(Reply::status(200)).await;
    let (worker, api) = start(&mut w, &rx).await;
    let stale_ts = Some(now_ms() - 6 * 60 * 1000);
    let [
        good,
        forged,
        stale,
        ended,
        analyzed,
        ended_2,
        analyzed_2,
        started,
    ] = sign_all(&[
        (
            "retell",
            "call_ended",
            "r-forged",
            "agent_wait",
            RETELL_KEY,
            None,
        ),
        (
            "retell",
            "call_ended",
            "r-forged",
            "agent_wait",
            "not-the-key",
            None,
        ),
        (
            "retell",
            "call_ended",
            "r-forged",
            "agent_wait",
            RETELL_KEY,
            stale_ts,
        ),
        (
            "retell",
            "call_ended",
            "r-1",
            "agent_wait",
            RETELL_KEY,
            None,
        ),
        (
            "retell",
            "call_analyzed",
            "r-1",
            "agent_wait",
            RETELL_KEY,
            None,
        ),
        ("retell", "call_ended", "r-2", "agent_now", RETELL_KEY, None),
        (
            "retell",
            "call_analyzed",
            "r-2",
            "agent_now",
            RETELL_KEY,
            None,
        ),
        (
            "retell",
            "call_started",
            "r-3",
            "agent_now",
            RETELL_KEY,
            None,
        ),
    ]);

    // Unsigned, forged, stale and tampered messages: 401, nothing enqueued.
    let tampered = good.body.replace("+14155550100", "+14155550101");
    for (what, body, headers) in [
        ("unsigned", good.body.as_str(), &vec![]),
        ("forged", forged.body.as_str(), &forged.headers),
        ("stale", stale.body.as_str(), &stale.headers),
        ("tampered", tampered.as_str(), &good.headers),
    ] {
        let (status, answer) = api.post_raw("retell", body, headers).await;
        assert_eq!(status, 401, "{what}: {answer}");
        assert_eq!(answer["error"], "unauthorized", "{what}");
    }
    assert!(w.queue.call_status("r-forged").await.unwrap().is_none());
    let log = worker.log_text();
    assert!(
        !log.contains("refund"),
        "a refused body reached the log: {log}"
    );

    // call_ended: held for the analysis, visibly.
    api.expect("retell", &ended, 202, "waiting").await;
    api.expect("retell", &ended, 200, "duplicate").await;
    let s = w.status("r-1").await;
    assert_eq!(s.call_ended.state.state.as_str(), "scheduled");
    let reason = s.call_ended.state.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("waiting for analysis until "),
        "{reason}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        delivered(&rx, "r-1").is_empty(),
        "fanned out before the analysis"
    );

    // call_analyzed: joins it; the call fans out once, with the analysis summary.
    api.expect("retell", &analyzed, 202, "joined").await;
    let s = settled_call(&w, "r-1").await;
    assert_eq!(s.actions.len(), 1);
    assert_eq!(s.actions[0].state.state.as_str(), "delivered");
    let analysis = s.analysis.expect("the analysis is kept with the call");
    assert_eq!(
        analysis.summary.as_deref(),
        Some("The caller wants a refund for order 12345.")
    );
    api.expect("retell", &analyzed, 200, "duplicate").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = delivered(&rx, "r-1");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["summary"],
        "The caller wants a refund for order 12345."
    );
    assert_eq!(got[0]["caller_number"], "+14155550100");
    assert_eq!(got[0]["metadata"]["caller_name"], "Ada Lovelace");
    let event = &s.call_ended.job.as_ref().unwrap()["event"];
    assert_eq!(event["platform"], "retell");
    assert_eq!(event["ended_reason"], "caller_hung_up");
    assert_eq!(event["analysis"]["sentiment"], "negative");
    assert_eq!(event["raw"]["event"], "call_analyzed");

    // An agent that does not wait: the call fans out at once; a later analysis is kept
    // with the call and runs nothing again.
    api.expect("retell", &ended_2, 202, "enqueued").await;
    settled_call(&w, "r-2").await;
    api.expect("retell", &analyzed_2, 200, "late").await;
    let s = w.status("r-2").await;
    assert!(s.analysis.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = delivered(&rx, "r-2");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["summary"],
        Value::Null,
        "sent before the analysis: {:?}",
        got[0]
    );

    // A message the product does not use: acknowledged, nothing else.
    api.expect("retell", &started, 200, "ignored").await;
    assert!(w.queue.call_status("r-3").await.unwrap().is_none());

    // Counted by platform and outcome.
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"aftercall_ingest_messages_total{platform="retell",outcome="unauthorized"} 4"#,
        r#"aftercall_ingest_messages_total{platform="retell",outcome="joined"} 1"#,
        r#"aftercall_ingest_messages_total{platform="retell",outcome="ignored"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn vapi_and_bland_messages_become_calls_with_every_mapped_field() {
    let mut w = World::new().await;
    let rx = Receiver::answering(Reply::status(200)).await;
    let (_worker, api) = start(&mut w, &rx).await;

    let (bearer, hmac) = (format!("bearer:{VAPI_TOKEN}"), format!("hmac:{VAPI_HMAC}"));
    let stale_ts = Some(now_ms() - 600_000);
    let [by_bearer, by_hmac, wrong, stale, update, post, forged] = sign_all(&[
        (
            "vapi",
            "end-of-call-report",
            "v-1",
            "agent_now",
            &bearer,
            None,
        ),
        (
            "vapi",
            "end-of-call-report",
            "v-2",
            "agent_now",
            &hmac,
            None,
        ),
        (
            "vapi",
            "end-of-call-report",
            "v-3",
            "agent_now",
            "bearer:nope",
            None,
        ),
        (
            "vapi",
            "end-of-call-report",
            "v-3",
            "agent_now",
            &hmac,
            stale_ts,
        ),
        ("vapi", "status-update", "v-3", "agent_now", &bearer, None),
        ("bland", "post_call", "b-1", "pathway-7", BLAND_SECRET, None),
        ("bland", "post_call", "b-2", "pathway-7", "wrong", None),
    ]);

    // Vapi: a Bearer Token credential and an HMAC credential both work; a wrong token,
    // a stale signature and other message types do not enqueue.
    for m in [&by_bearer, &by_hmac] {
        api.expect("vapi", m, 202, "enqueued").await;
    }
    assert_eq!(api.post("vapi", &wrong).await.0, 401);
    assert_eq!(api.post("vapi", &stale).await.0, 401);
    let (status, answer) = api.post("vapi", &update).await;
    assert_eq!(
        (status, answer["kind"].as_str()),
        (200, Some("status-update")),
        "{answer}"
    );
    assert!(w.queue.call_status("v-3").await.unwrap().is_none());

    let s = settled_call(&w, "v-1").await;
    let e = &s.call_ended.job.as_ref().unwrap()["event"];
    assert_fields(
        e,
        &[
            ("/call_id", "v-1"),
            ("/agent_id", "agent_now"),
            ("/agent_name", "Sales"),
            ("/caller_number", "+14155550123"),
            ("/direction", "outbound"),
            ("/ended_reason", "caller_hung_up"),
            ("/platform_ended_reason", "customer-ended-call"),
            ("/platform", "vapi"),
            ("/summary", "Grace booked a demo for Friday."),
            ("/transcript", "AI: Hi Grace.\nUser: Book me a demo."),
            ("/recording_url", "https://storage.vapi.ai/recording.wav"),
            ("/started_at", "2025-12-03T12:00:00Z"),
            ("/ended_at", "2025-12-03T12:01:31Z"),
            ("/metadata/caller_name", "Grace Hopper"),
            ("/metadata/caller_email", "grace@example.com"),
            ("/metadata/dynamic_variables/plan", "pro"),
            ("/analysis/data/demo_day", "Friday"),
            ("/raw/message/type", "end-of-call-report"),
        ],
    );
    assert_eq!(e["analysis"]["successful"], true);
    let got = delivered(&rx, "v-1");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["duration_seconds"], 91);

    // Bland: signed with its webhook secret; its pathway is mapped to an agent.
    api.expect("bland", &post, 202, "enqueued").await;
    assert_eq!(api.post("bland", &forged).await.0, 401);
    assert!(w.queue.call_status("b-2").await.unwrap().is_none());
    let s = settled_call(&w, "b-1").await;
    let e = &s.call_ended.job.as_ref().unwrap()["event"];
    assert_fields(
        e,
        &[
            ("/agent_id", "agent_now"),
            ("/caller_number", "+14155550222"),
            ("/direction", "inbound"),
            ("/ended_reason", "caller_hung_up"),
            ("/platform_ended_reason", "USER"),
            ("/platform", "bland"),
            ("/summary", "The caller asked about opening hours."),
            (
                "/transcript",
                "user: What are your hours? assistant: Nine to five.",
            ),
            (
                "/recording_url",
                "https://server.aws.dialpad.com/recording.mp3",
            ),
            ("/started_at", "2025-12-03T12:00:00Z"),
            ("/metadata/caller_name", "Lin Wei"),
            ("/metadata/caller_email", "lin@example.com"),
            ("/analysis/data/intent", "hours"),
        ],
    );
    assert_eq!(e["duration_seconds"], 88);
    assert_eq!(delivered(&rx, "b-1").len(), 1);
}

/// The call once every action has settled, failing the test when it does not in time.
async fn settled_call(w: &World, call_id: &str) -> aftercall_queue::CallStatus {
    let s = w.wait_call(call_id, Duration::from_secs(20), settled).await;
    assert!(settled(&s), "{s:?}");
    s
}

/// Fails unless each JSON pointer of `fields` holds its text in `event`.
fn assert_fields(event: &Value, fields: &[(&str, &str)]) {
    for (field, want) in fields {
        assert_eq!(
            event.pointer(field).and_then(Value::as_str),
            Some(*want),
            "{field} in {event}"
        );
    }
}
