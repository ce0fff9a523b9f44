//! What an action job would send, rendered by the executors' own preparation and sent
//! nowhere: the answer of `POST /agents/{id}/preview` and `aftercall agents preview`.

use aftercall_core::config::Action;
use aftercall_core::payload::WebhookPayload;
use aftercall_core::{ActionJob, Outcome};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A stored call under `cfg`: the fan-out as the worker would make it now (conditions
/// decided, delays), each action rendered. `(why the call fans out to nothing, the
/// actions)`; each action has `index`, `type`, `fires`, and `output`, `reason` or
/// `error`.
pub fn call(
    cfg: &aftercall_core::AgentConfig,
    event: aftercall_core::CallEvent,
    now: DateTime<Utc>,
) -> (Option<String>, Vec<Value>) {
    use aftercall_core::job::{FanOut, fan_out};
    let event = std::sync::Arc::new(event);
    let parent = aftercall_core::Job::call_ended((*event).clone(), now);
    match fan_out(&parent, &event, Some(cfg), now) {
        FanOut::Skip(reason) => (Some(reason), Vec::new()),
        FanOut::Jobs(jobs) => (
            None,
            jobs.iter()
                .filter_map(|(job, delay)| {
                    let aftercall_core::JobBody::Action(a) = &job.body else {
                        return None;
                    };
                    let mut v = render(&job.id, a, None, now);
                    v["index"] = a.index.into();
                    v["type"] = a.action.kind().into();
                    if let Some(d) = delay {
                        v["delay_seconds"] = d.as_secs().into();
                    }
                    Some(v)
                })
                .collect(),
        ),
    }
}

/// One action job as it would go out: `fires`, and either the rendered output or the
/// reason it would not fire (a false condition, an empty recipient) or the error it
/// would end in (a bad template, a bad address).
pub fn render(
    job_id: &str,
    job: &ActionJob,
    default_from: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    if let Some(reason) = &job.skip {
        return json!({"fires": false, "reason": reason});
    }
    let rendered = match &job.action {
        Action::Email(a) => {
            let vars = job.vars(now);
            crate::email::message::render_parts(job, a, default_from, &vars).map(|p| {
                let list = |m: &[lettre::message::Mailbox]| -> Vec<String> {
                    m.iter().map(ToString::to_string).collect()
                };
                json!({
                    "to": p.to.to_string(),
                    "cc": list(&p.cc),
                    "bcc": list(&p.bcc),
                    "from": p.from.to_string(),
                    "subject": p.subject,
                    "text": p.text,
                })
            })
        }
        Action::Sms(a) => crate::sms::render(job, a, now).map(|(to, text, seg)| {
            json!({
                "to": to,
                "text": text,
                "segments": seg.count,
                "encoding": seg.encoding.as_str(),
            })
        }),
        Action::Webhook(a) => {
            // The user's body template when there is one, else the standard payload.
            let body = match &a.body {
                Some(src) => crate::webhook::render_body(src, job).map_err(Outcome::permanent),
                None => Ok(WebhookPayload::new(&job.event, a).to_bytes()),
            };
            body.map(|b| {
                json!({
                    "url": a.url,
                    "method": a.method.unwrap_or_default().as_str(),
                    "payload": serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
                })
            })
        }
        Action::Slack(a) => crate::slack::message(job, a)
            .map(|m| json!({"message": m}))
            .map_err(Outcome::permanent),
        Action::Task(a) => crate::task::draft(job_id, job, a, now).map(|d| {
            json!({
                "provider": a.provider,
                "title": d.title,
                "description": d.description,
                "project": d.project,
                "labels": d.labels,
                "due": d.due,
            })
        }),
    };
    match rendered {
        Ok(output) => json!({"fires": true, "output": output}),
        Err(Outcome::Skipped { reason }) => json!({"fires": false, "reason": reason}),
        Err(other) => json!({"fires": false, "error": outcome_text(&other)}),
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Permanent { error, .. } | Outcome::Retry { error, .. } => error.clone(),
        other => format!("{other:?}"),
    }
}
