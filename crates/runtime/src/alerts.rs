//! Operational alerts: a job dead-lettered, a destination's circuit opened or closed, the
//! dead letters above `AFTERCALL_ALERTS_DEAD_THRESHOLD`. Sent to `AFTERCALL_ALERTS_URL`
//! and, for a dead letter, to its agent's own `alerts` target: a Standard-Webhooks
//! signed JSON POST, or a Slack message for a Slack incoming webhook.
//!
//! Deduplicated where they arise: a circuit's change is reported by the one replica
//! whose report changed it, a dead letter by the worker that recorded it, a threshold
//! crossing by the one replica that raises its latch in Redis (counted after each dead
//! letter's alert, and every [`CHECK_EVERY`], which lowers it too). Rate-limited here: alerts
//! are gathered for [`WINDOW`]; a target that has more than [`DIGEST_AFTER`] of them in
//! one window gets one digest instead. Best effort, off the jobs' path: a few tries
//! each, then a warning and `aftercall_alerts_total{result="failed"}`; alerts are not
//! durable jobs (an alert about a dead alert target would have nowhere to go).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aftercall_core::Outcome;
use aftercall_core::target::Target;
use aftercall_queue::JobId;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::handler::Ctx;

/// How long alerts are gathered before they are sent.
const WINDOW: Duration = Duration::from_secs(2);
/// More alerts than this for one target in one window: one digest instead.
const DIGEST_AFTER: usize = 3;
/// The alerts listed in a digest (the count says how many there were).
const DIGEST_LISTS: usize = 20;
/// Alerts waiting to be sent; past it they are dropped (and counted).
const CAPACITY: usize = 1024;
/// How often the dead letters are counted against the threshold.
const CHECK_EVERY: Duration = Duration::from_secs(15);

/// Something to tell operators.
#[derive(Debug)]
pub(crate) enum Alert {
    /// A job was dead-lettered; the rest is read from the queue when sent.
    Dead { id: JobId },
    /// A destination's circuit opened (`opened`) or closed.
    Circuit {
        destination: String,
        opened: bool,
        failures: u32,
        error: String,
    },
}

/// The sending side, held by every job.
#[derive(Clone)]
pub(crate) struct Alerts {
    tx: mpsc::Sender<Alert>,
}

impl Alerts {
    pub fn channel() -> (Alerts, mpsc::Receiver<Alert>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (Alerts { tx }, rx)
    }

    /// Queues `alert`; never waits (a full queue drops it, counted).
    pub fn send(&self, alert: Alert) {
        if self.tx.try_send(alert).is_err() {
            crate::metrics::alert("dropped");
        }
    }
}

/// Sends alerts until `stop`, then what is left.
pub(crate) async fn run(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Alert>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            a = rx.recv() => a,
            _ = tick.tick() => {
                threshold(&ctx).await;
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + WINDOW;
        while let Ok(Some(a)) = tokio::time::timeout_at(until, rx.recv()).await {
            batch.push(a);
        }
        let dead = batch.iter().any(|a| matches!(a, Alert::Dead { .. }));
        deliver(&ctx, batch).await;
        if dead {
            threshold(&ctx).await;
        }
    }
    let mut rest = Vec::new();
    while let Ok(a) = rx.try_recv() {
        rest.push(a);
    }
    if !rest.is_empty() {
        deliver(&ctx, rest).await;
    }
}

/// One alert about the dead letters crossing the threshold, from one replica.
async fn threshold(ctx: &Ctx) {
    let cfg = &ctx.cfg.alerts;
    let Some(target) = &cfg.target else { return };
    if cfg.dead_threshold == 0 {
        return;
    }
    let Ok(n) = ctx.queue.dead_count().await else {
        return;
    };
    let above = n > cfg.dead_threshold;
    match ctx.queue.latch("dead_above_threshold", above).await {
        Ok(true) => {
            let notice = notice(
                "dead_letters.above_threshold",
                format!(
                    "{n} dead letters wait (threshold {}): `aftercall dlq list`",
                    cfg.dead_threshold
                ),
                json!({"dead": n, "threshold": cfg.dead_threshold}),
            );
            send(ctx, target, vec![notice]).await;
        }
        Ok(false) => {}
        Err(e) => debug!(error = %e, "the dead-letter threshold's latch failed"),
    }
}

/// Sends `batch` to every target it concerns.
async fn deliver(ctx: &Ctx, batch: Vec<Alert>) {
    let mut targets: HashMap<String, (Target, Vec<Value>)> = HashMap::new();
    let mut agents: HashMap<String, Option<Target>> = HashMap::new();
    let system = ctx.cfg.alerts.target.as_ref();
    for alert in batch {
        let (notice, agent) = match alert {
            Alert::Circuit {
                destination,
                opened,
                failures,
                error,
            } => {
                let (name, summary) = if opened {
                    (
                        "destination.circuit_opened",
                        format!(
                            "Circuit opened for {destination} after {failures} consecutive failures ({error}); its jobs are held"
                        ),
                    )
                } else {
                    (
                        "destination.circuit_closed",
                        format!(
                            "Circuit closed for {destination}: it answers again, its held jobs go"
                        ),
                    )
                };
                let detail = json!({"destination": destination, "failures": failures, "error": (!error.is_empty()).then_some(error)});
                (notice(name, summary, detail), None)
            }
            Alert::Dead { id } => match ctx.queue.job(&id).await {
                Ok(Some(r)) => {
                    let error = r.last_error().unwrap_or("no error recorded").to_string();
                    let call = r.call_id.clone().unwrap_or_default();
                    let agent = r.agent_id.clone().unwrap_or_default();
                    let summary = format!(
                        "Dead letter: {} job {} of call {call} (agent {agent}) after {} attempt(s): {error}",
                        r.kind, r.id, r.attempts
                    );
                    let detail = json!({"job_id": r.id, "call_id": call, "agent_id": agent,
                        "action": r.kind, "attempts": r.attempts, "error": error});
                    (notice("job.dead", summary, detail), Some(agent))
                }
                Ok(None) => continue,
                Err(e) => {
                    debug!(error = %e, "reading a dead letter for its alert failed");
                    continue;
                }
            },
        };
        if let Some(agent) = agent.filter(|a| !a.is_empty()) {
            if !agents.contains_key(&agent) {
                let t = match ctx.queue.get_agent(&agent).await {
                    Ok(Some(cfg)) => cfg.follow_up().and_then(|f| f.alerts.clone()),
                    _ => None,
                };
                agents.insert(agent.clone(), t);
            }
            if let Some(t) = agents.get(&agent).cloned().flatten() {
                targets
                    .entry(t.url.clone())
                    .or_insert_with(|| (t, Vec::new()))
                    .1
                    .push(notice.clone());
            }
        }
        if let Some(t) = system {
            targets
                .entry(t.url.clone())
                .or_insert_with(|| (t.clone(), Vec::new()))
                .1
                .push(notice);
        }
    }
    for (_, (target, notices)) in targets {
        send(ctx, &target, notices).await;
    }
}

fn notice(alert: &str, summary: String, detail: Value) -> Value {
    let mut v = json!({
        "type": "aftercall.alert",
        "alert": alert,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "summary": summary,
    });
    if let (Some(o), Value::Object(d)) = (v.as_object_mut(), detail) {
        o.extend(d.into_iter().filter(|(_, v)| !v.is_null()));
    }
    v
}

/// The body for `target`: each notice, or one digest of them.
fn bodies(target: &Target, notices: Vec<Value>) -> Vec<Value> {
    let digest = notices.len() > DIGEST_AFTER;
    let notices = if digest {
        let n = notices.len();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for v in &notices {
            *counts
                .entry(v["alert"].as_str().unwrap_or("").to_string())
                .or_default() += 1;
        }
        let by: Vec<String> = counts.iter().map(|(k, c)| format!("{c} {k}")).collect();
        let listed: Vec<Value> = notices.into_iter().take(DIGEST_LISTS).collect();
        vec![json!({
            "type": "aftercall.alert",
            "alert": "digest",
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "summary": format!("{n} alerts: {}", by.join(", ")),
            "count": n,
            "counts": counts,
            "alerts": listed,
        })]
    } else {
        notices
    };
    if !target.is_slack() {
        return notices;
    }
    notices
        .into_iter()
        .map(|v| {
            let mut text = format!("*aftercall*: {}", v["summary"].as_str().unwrap_or(""));
            if let Some(list) = v["alerts"].as_array() {
                for a in list.iter().take(10) {
                    text.push_str(&format!("\n• {}", a["summary"].as_str().unwrap_or("")));
                }
                if list.len() > 10 {
                    text.push_str("\n• …");
                }
            }
            json!({ "text": text })
        })
        .collect()
}

/// Sends each body to `target`, a few tries each.
async fn send(ctx: &Ctx, target: &Target, notices: Vec<Value>) {
    let webhook = target.webhook();
    for body in bodies(target, notices) {
        let id = format!("alert_{}", uuid::Uuid::now_v7().simple());
        let bytes = serde_json::to_vec(&body).expect("JSON serializes");
        let mut delay = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = ctx
                .executors
                .webhook
                .send_body(&id, tries, None, &webhook, bytes.clone())
                .await;
            match outcome {
                Outcome::Delivered { .. } => {
                    crate::metrics::alert("sent");
                    break;
                }
                Outcome::Retry { error, .. } if tries < 3 => {
                    debug!(error = %error, "an alert failed; trying again");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                other => {
                    let error = match other {
                        Outcome::Retry { error, .. } | Outcome::Permanent { error, .. } => error,
                        _ => "not sent".into(),
                    };
                    warn!(host = %host(&target.url), error = %error, "an operational alert could not be sent");
                    crate::metrics::alert("failed");
                    break;
                }
            }
        }
    }
}

/// The host of a target URL, for logs (its path may hold a token: Slack's does).
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}
