//! The job model: what the queue carries, how an attempt ends, and the fan-out rule
//! that turns one call-ended job into one job per configured action.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Action, AgentConfig};
use crate::event::{CallEvent, ValidEvent};
use crate::template::{DateStyle, Vars};

/// One durable unit of work. Immutable once enqueued: retries re-run the same job.
///
/// Serialized flat (`kind` beside the body's fields); decoded through [`JobWire`], since
/// serde's `flatten` of an internally tagged enum buffers the whole job into an
/// intermediate tree first (the largest part of the worker's per-job decoding cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "JobWire")]
pub struct Job {
    pub id: String,
    pub call_id: String,
    pub agent_id: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub body: JobBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// A job is decoded once per attempt and never stored in bulk in memory: boxing the
// larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum JobBody {
    /// A call ended; fan it out into action jobs.
    CallEnded { event: Arc<CallEvent> },
    /// One action of one call, carrying everything it needs.
    Action(ActionJob),
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionJob {
    /// Position of the action in the agent's config at fan-out time.
    pub index: usize,
    pub action: Action,
    /// The call's event, shared with the call-ended job it came from and the call's other
    /// actions. Not stored with the action: the queue keeps one copy per call, under the
    /// call-ended job ([`call_ended_id`]), and [`Job::decode`] joins the two.
    #[serde(skip_serializing)]
    pub event: Arc<CallEvent>,
    pub agent_name: Option<String>,
    pub date_format: Option<String>,
    pub utc_offset: Option<String>,
    pub email_from: Option<String>,
    /// Set when fan-out found the action's `when` false (or not computable): the job is
    /// recorded as skipped with this reason, never executed. Decided once, at fan-out,
    /// so a replay does not re-decide.
    pub skip: Option<String>,
    /// The agent's quiet hours at fan-out: an SMS or e-mail due inside them waits.
    pub quiet_hours: Option<crate::quiet::QuietHours>,
    /// The call's completion callback (`on_complete`): its `action` is the webhook that
    /// reaches the target, its body the call's outcomes ([`crate::payload::Completion`]),
    /// and it waits until the call's other action jobs have settled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub completion: bool,
}

/// A job as stored: the union of both kinds' fields, read in one pass.
#[derive(Deserialize)]
struct JobWire {
    id: String,
    call_id: String,
    agent_id: String,
    created_at: DateTime<Utc>,
    kind: WireKind,
    /// Always there for a call-ended job; for an action job only in data stored before
    /// actions referred to their call's event.
    event: Option<Arc<CallEvent>>,
    index: Option<usize>,
    action: Option<Action>,
    agent_name: Option<String>,
    date_format: Option<String>,
    utc_offset: Option<String>,
    email_from: Option<String>,
    skip: Option<String>,
    quiet_hours: Option<crate::quiet::QuietHours>,
    #[serde(default)]
    completion: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireKind {
    CallEnded,
    Action,
}

impl TryFrom<JobWire> for Job {
    type Error = &'static str;

    fn try_from(w: JobWire) -> Result<Job, &'static str> {
        w.into_job(None)
    }
}

impl JobWire {
    /// The job, its action's event from `call_event` (the call-ended job's) when the
    /// action's own data does not carry one.
    fn into_job(self, call_event: Option<Arc<CallEvent>>) -> Result<Job, &'static str> {
        let w = self;
        let body = match w.kind {
            WireKind::CallEnded => JobBody::CallEnded {
                event: w.event.ok_or("missing field `event`")?,
            },
            WireKind::Action => JobBody::Action(ActionJob {
                index: w.index.ok_or("missing field `index`")?,
                action: w.action.ok_or("missing field `action`")?,
                event: w
                    .event
                    .or(call_event)
                    .ok_or("the call's event is not stored (its call-ended job's data is gone)")?,
                agent_name: w.agent_name,
                date_format: w.date_format,
                utc_offset: w.utc_offset,
                email_from: w.email_from,
                skip: w.skip,
                quiet_hours: w.quiet_hours,
                completion: w.completion,
            }),
        };
        Ok(Job {
            id: w.id,
            call_id: w.call_id,
            agent_id: w.agent_id,
            created_at: w.created_at,
            body,
        })
    }
}

impl ActionJob {
    /// The time after which this action is skipped as expired: its `expires_after`
    /// from the call's end (`ended_at`, else `created_at`, the fan-out's time).
    pub fn expires_at(&self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = self.action.expires_after()?;
        let end = self
            .event
            .ended_at
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(created_at);
        Some(end + chrono::TimeDelta::from_std(after).ok()?)
    }

    pub fn date_style(&self) -> DateStyle {
        DateStyle {
            format: self.date_format.clone(),
            utc_offset: self.utc_offset.clone(),
        }
    }

    /// The template variables of this job's call, in its agent's date style; `now`
    /// stands in for the call's date when the event carries no time.
    pub fn vars(&self, now: DateTime<Utc>) -> Vars {
        Vars::new(
            &self.event,
            self.agent_name.as_deref(),
            &self.date_style(),
            now,
        )
    }
}

/// The id of the call-ended job whose event an action job `id` reads (`<parent>.<index>`,
/// [`fan_out`]); `None` for an id that is not an action job's.
pub fn call_ended_id(id: &str) -> Option<&str> {
    let (parent, index) = id.split_once('.')?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(parent)
}

impl Job {
    /// Reads a stored job. An action job's event is stored once per call, with its
    /// call-ended job: `call_ended` is that job's stored JSON, read only when the
    /// action's own data has no event.
    pub fn decode(data: &[u8], call_ended: Option<&[u8]>) -> Result<Job, String> {
        let wire: JobWire = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let event = match (&wire.kind, &wire.event, call_ended) {
            (WireKind::Action, None, Some(parent)) => {
                let parent: JobWire =
                    serde_json::from_slice(parent).map_err(|e| format!("the call's event: {e}"))?;
                parent.event
            }
            _ => None,
        };
        wire.into_job(event).map_err(str::to_string)
    }

    /// A new call-ended job for `event`, with a time-ordered id.
    pub fn call_ended(event: CallEvent, now: DateTime<Utc>) -> Job {
        Self::call_ended_as(event, now, new_id())
    }

    /// [`Job::call_ended`] under the id given (a partitioned queue's ids name their
    /// partition).
    pub fn call_ended_as(event: CallEvent, now: DateTime<Utc>, id: String) -> Job {
        Job {
            id,
            call_id: event.call_id.clone(),
            agent_id: event.agent_id.clone(),
            created_at: now,
            body: JobBody::CallEnded {
                event: Arc::new(event),
            },
        }
    }

    /// `call_ended`, `email`, `sms`, `webhook`, `task`, `slack`, or `on_complete` (a
    /// call's completion callback).
    pub fn kind(&self) -> &'static str {
        match &self.body {
            JobBody::CallEnded { .. } => "call_ended",
            JobBody::Action(a) if a.completion => "on_complete",
            JobBody::Action(a) => a.action.kind(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serializes")
    }

    /// A new call-ended job for an event kept as its producer's bytes: the job's id and
    /// its stored JSON. The JSON reads as the job [`Job::call_ended`] makes of the same
    /// event (tested), with the event's bytes copied in rather than encoded again.
    pub fn call_ended_json(event: &ValidEvent<'_>, now: DateTime<Utc>) -> (String, Vec<u8>) {
        Self::call_ended_json_as(event, now, new_id())
    }

    /// [`Job::call_ended_json`] under the id given (a partitioned queue's ids name their
    /// partition).
    pub fn call_ended_json_as(
        event: &ValidEvent<'_>,
        now: DateTime<Utc>,
        id: String,
    ) -> (String, Vec<u8>) {
        let mut out = Vec::with_capacity(event.json().len() + 192);
        put(&mut out, "{\"id\":", &id);
        put(&mut out, ",\"call_id\":", &event.call_id);
        put(&mut out, ",\"agent_id\":", &event.agent_id);
        put(&mut out, ",\"created_at\":", &now);
        out.extend_from_slice(b",\"kind\":\"call_ended\",\"event\":");
        out.extend_from_slice(event.json());
        out.push(b'}');
        (id, out)
    }
}

/// Appends `key` (JSON up to a value) and `value` as JSON.
fn put(out: &mut Vec<u8>, key: &str, value: &impl Serialize) {
    out.extend_from_slice(key.as_bytes());
    serde_json::to_writer(&mut *out, value).expect("a string or a time always serializes");
}

/// A job id: `job_` and a UUIDv7, so ids sort by creation time.
fn new_id() -> String {
    new_job_id(None)
}

/// A new call-ended job id: `job_` and a UUIDv7 (ids sort by creation time), or in a
/// queue of several partitions `job<p>_` and one, naming partition `p` (its action
/// jobs' ids, `<id>.<index>`, begin the same).
pub fn new_job_id(partition: Option<usize>) -> String {
    let uuid = uuid::Uuid::now_v7().simple();
    match partition {
        Some(p) => format!("job{p}_{uuid}"),
        None => format!("job_{uuid}"),
    }
}

/// The partition a job id names ([`new_job_id`]); `None` for a one-partition id or
/// anything else.
pub fn partition_of(id: &str) -> Option<usize> {
    let (digits, _) = id.strip_prefix("job")?.split_once('_')?;
    digits.parse().ok()
}

/// What fan-out decided for one call-ended job.
#[derive(Debug, Clone, PartialEq)]
pub enum FanOut {
    /// Nothing to do, and why (shown as the call's outcome).
    Skip(String),
    /// One job per enabled action, each with an optional first-run delay.
    Jobs(Vec<(Job, Option<Duration>)>),
}

/// Pure fan-out: the agent's config as it is now decides the action jobs. Action job ids
/// derive from the call-ended job's id, so running fan-out twice yields the same jobs.
pub fn fan_out(
    parent: &Job,
    event: &Arc<CallEvent>,
    config: Option<&AgentConfig>,
    now: DateTime<Utc>,
) -> FanOut {
    let Some(config) = config else {
        return FanOut::Skip(format!("agent `{}` has no configuration", event.agent_id));
    };
    let Some(f) = config.follow_up() else {
        return FanOut::Skip("post_call_follow_up is not configured".into());
    };
    if !f.enabled {
        return FanOut::Skip("post_call_follow_up is disabled".into());
    }
    if f.actions.is_empty() {
        return FanOut::Skip("post_call_follow_up has no actions".into());
    }
    // The call's variables, built only when a condition needs them.
    let vars = f.actions.iter().any(|a| a.when().is_some()).then(|| {
        let style = DateStyle {
            format: config.date_format.clone(),
            utc_offset: config.utc_offset.clone(),
        };
        Vars::new(event, config.name.as_deref(), &style, now)
    });
    // Action job `index` of the call; `action.completion` set for the callback.
    let job = |index: usize, body: ActionJob| Job {
        id: format!("{}.{index}", parent.id),
        call_id: event.call_id.clone(),
        agent_id: event.agent_id.clone(),
        created_at: now,
        body: JobBody::Action(body),
    };
    let mut jobs = f
        .actions
        .iter()
        .enumerate()
        .map(|(index, action)| {
            let skip = match (action.when(), &vars) {
                (Some(when), Some(vars)) => condition_skip(when, vars),
                _ => None,
            };
            let body = ActionJob {
                index,
                action: action.clone(),
                event: Arc::clone(event),
                agent_name: config.name.clone(),
                date_format: config.date_format.clone(),
                utc_offset: config.utc_offset.clone(),
                email_from: config.email_from.clone(),
                skip,
                quiet_hours: f.quiet_hours.clone(),
                completion: false,
            };
            (job(index, body), action.delay())
        })
        .collect::<Vec<_>>();
    // The completion callback: one more job, after the actions, waiting for them.
    if let Some(target) = &f.on_complete {
        let index = jobs.len();
        let body = ActionJob {
            index,
            action: Action::Webhook(target.webhook()),
            event: Arc::clone(event),
            agent_name: config.name.clone(),
            date_format: None,
            utc_offset: None,
            email_from: None,
            skip: None,
            quiet_hours: None,
            completion: true,
        };
        jobs.push((job(index, body), None));
    }
    FanOut::Jobs(jobs)
}

/// Why an action whose condition is `when` is skipped for a call with `vars`, if it is.
pub fn condition_skip(when: &str, vars: &Vars) -> Option<String> {
    match crate::template::eval_condition(when, vars) {
        Ok(true) => None,
        Ok(false) => Some(format!("condition false (when: {when})")),
        Err(e) => Some(format!("condition not evaluated (when: {when}): {e}")),
    }
}

/// How one attempt of an action ended, decided where the error is typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered {
        status: Option<u16>,
        detail: Option<String>,
    },
    Skipped {
        reason: String,
    },
    /// The provider refused the recipient as opted out (Twilio's 21610): recorded as a
    /// skip, never retried, and the runtime adds the recipient to the opt-outs.
    OptedOut {
        reason: String,
    },
    /// Transient: try again later, at the server's `retry_after` if it gave one.
    Retry {
        error: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
        snippet: Option<String>,
    },
    /// Permanent: straight to dead letters.
    Permanent {
        error: String,
        status: Option<u16>,
        snippet: Option<String>,
    },
}

impl Outcome {
    pub fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry {
            error: error.into(),
            status: None,
            retry_after: None,
            snippet: None,
        }
    }
    pub fn permanent(error: impl Into<String>) -> Outcome {
        Outcome::Permanent {
            error: error.into(),
            status: None,
            snippet: None,
        }
    }
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome::Skipped {
            reason: reason.into(),
        }
    }

    /// The same outcome with the error of a retry or a permanent failure rewritten.
    pub fn map_error(self, f: impl FnOnce(String) -> String) -> Outcome {
        match self {
            Outcome::Retry {
                error,
                status,
                retry_after,
                snippet,
            } => Outcome::Retry {
                error: f(error),
                status,
                retry_after,
                snippet,
            },
            Outcome::Permanent {
                error,
                status,
                snippet,
            } => Outcome::Permanent {
                error: f(error),
                status,
                snippet,
            },
            other => other,
        }
    }
}

/// One attempt as recorded in the job's history.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the attempt ended, as Unix milliseconds (the queue's Lua scripts write these too).
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[cfg_attr(feature = "schema", schemars(with = "i64"))]
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// A bounded snippet of the response body.
    pub response: Option<String>,
    pub duration_ms: Option<u64>,
    pub worker: Option<String>,
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<i64>"))]
    pub next_run_at: Option<DateTime<Utc>>,
}

impl Attempt {
    /// The bare record of attempt number `attempt`, ended `at` with `outcome`; the
    /// other fields are for the caller to fill in.
    pub fn new(attempt: u32, outcome: AttemptOutcome, at: DateTime<Utc>) -> Attempt {
        Attempt {
            attempt,
            at,
            outcome,
            status: None,
            error: None,
            response: None,
            duration_ms: None,
            worker: None,
            next_run_at: None,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    Skipped,
    Retry,
    Failed,
    /// The worker holding the job stopped renewing its lease (crash, kill -9, stall).
    LeaseExpired,
    /// The job could not be decoded.
    Undecodable,
    /// Not an attempt: an operator replayed the dead letter with a fresh budget.
    Replayed,
    /// Not an attempt: every other action of the call settled, and this completion
    /// callback was queued (once per settling: a replayed action settles the call again).
    Settled,
}

/// The longest response snippet kept per attempt.
pub const SNIPPET_BYTES: usize = 512;

/// Cuts `s` to at most [`SNIPPET_BYTES`] on a char boundary.
pub fn snippet(s: &str) -> String {
    if s.len() <= SNIPPET_BYTES {
        return s.to_string();
    }
    let mut end = SNIPPET_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CallEvent {
        CallEvent::parse(br#"{"call_id":"c1","agent_id":"a1"}"#, 1 << 20).unwrap()
    }

    /// The bytes go in as sent (whitespace, escapes and all) and read back as the job
    /// `call_ended` makes; ids that need escaping are escaped.
    #[test]
    fn a_job_from_an_event_s_bytes_reads_as_the_decoded_one() {
        let bytes = b" {\"agent_id\":\"a\\\"1\",\n \"call_id\":\"c\\u00e9/1\",\"metadata\":{\"k\":[1.5e3]}}\n";
        let valid = ValidEvent::parse(bytes, 1 << 20).unwrap();
        assert_eq!(
            (valid.call_id.as_str(), valid.agent_id.as_str()),
            ("c\u{e9}/1", "a\"1")
        );
        assert_eq!(valid.json(), &bytes[1..bytes.len() - 1]);
        let now = Utc::now();
        let (id, json) = Job::call_ended_json(&valid, now);
        let stored: Job = serde_json::from_slice(&json).unwrap();
        let mut want = Job::call_ended(CallEvent::parse(bytes, 1 << 20).unwrap(), now);
        want.id = id;
        assert_eq!(stored, want);
        assert_eq!(stored.kind(), "call_ended");
    }

    #[test]
    fn fan_out_rules() {
        let now = Utc::now();
        let parent = Job::call_ended(event(), now);
        assert!(
            matches!(fan_out(&parent, &Arc::new(event()), None, now), FanOut::Skip(r) if r.contains("no configuration"))
        );
        let disabled = AgentConfig::parse(br#"{"voice_tools":{"post_call_follow_up":{"enabled":false,"actions":[{"type":"sms","template":"x"}]}}}"#).unwrap();
        assert!(
            matches!(fan_out(&parent, &Arc::new(event()), Some(&disabled), now), FanOut::Skip(r) if r.contains("disabled"))
        );
        let cfg = AgentConfig::parse(br#"{"name":"Acme","voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[{"type":"sms","template":"x"},{"type":"webhook","url":"https://x.example","delay":"15m"}]}}}"#).unwrap();
        let FanOut::Jobs(jobs) = fan_out(&parent, &Arc::new(event()), Some(&cfg), now) else {
            panic!()
        };
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].0.id, format!("{}.0", parent.id));
        assert_eq!(jobs[1].1, Some(Duration::from_secs(900)));
        // Deterministic: a second fan-out names the same jobs.
        let FanOut::Jobs(again) = fan_out(&parent, &Arc::new(event()), Some(&cfg), now) else {
            panic!()
        };
        assert_eq!(
            jobs.iter().map(|j| &j.0.id).collect::<Vec<_>>(),
            again.iter().map(|j| &j.0.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn conditions_are_decided_at_fan_out() {
        let now = Utc::now();
        let ev = |reason: &str| {
            Arc::new(
                CallEvent::parse(
                    format!(r#"{{"call_id":"c1","agent_id":"a1","duration_seconds":45,"ended_reason":"{reason}","ended_at":"2026-03-15T10:00:00Z"}}"#).as_bytes(),
                    1 << 20,
                )
                .unwrap(),
            )
        };
        let parent = Job::call_ended(event(), now);
        let cfg = AgentConfig::parse(br#"{"voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[{"type":"sms","template":"x","when":"ended_reason != \"voicemail\" and duration_seconds > 30","expires_after":"2h"},{"type":"webhook","url":"https://x.example"}]}}}"#).unwrap();
        let skips = |e| {
            let FanOut::Jobs(jobs) = fan_out(&parent, &e, Some(&cfg), now) else {
                panic!()
            };
            jobs.into_iter()
                .map(|(j, _)| match j.body {
                    JobBody::Action(a) => a.skip,
                    _ => panic!(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(skips(ev("completed")), [None, None]);
        assert_eq!(
            skips(ev("voicemail")),
            [
                Some(r#"condition false (when: ended_reason != "voicemail" and duration_seconds > 30)"#.to_string()),
                None
            ]
        );
        let FanOut::Jobs(jobs) = fan_out(&parent, &ev("completed"), Some(&cfg), now) else {
            panic!()
        };
        let (JobBody::Action(sms), JobBody::Action(hook)) = (&jobs[0].0.body, &jobs[1].0.body)
        else {
            panic!()
        };
        assert_eq!(
            sms.expires_at(now).unwrap().to_rfc3339(),
            "2026-03-15T12:00:00+00:00"
        );
        assert_eq!(hook.expires_at(now), None);
        // Stored and read back with its decision (and the call's event, stored once).
        let parent = Job::call_ended((*ev("completed")).clone(), now);
        let back = Job::decode(
            jobs[0].0.to_json().as_bytes(),
            Some(parent.to_json().as_bytes()),
        )
        .unwrap();
        assert_eq!(back, jobs[0].0);
    }

    #[test]
    fn job_round_trips() {
        let j = Job::call_ended(event(), Utc::now());
        let back: Job = serde_json::from_str(&j.to_json()).unwrap();
        assert_eq!(j, back);
        assert_eq!(back.kind(), "call_ended");
        let cfg = AgentConfig::parse(br#"{"name":"Acme","date_format":"%d/%m","voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[{"type":"webhook","url":"https://x.example","headers":{"x-a":"1"}}]}}}"#).unwrap();
        let FanOut::Jobs(jobs) = fan_out(&j, &Arc::new(event()), Some(&cfg), Utc::now()) else {
            panic!()
        };
        let action = &jobs[0].0;
        let json = action.to_json();
        assert!(json.contains(r#""kind":"action""#), "stored flat: {json}");
        // One copy per call: the action's data refers to its call-ended job's event.
        assert!(
            !json.contains("\"event\""),
            "no event in an action's data: {json}"
        );
        assert_eq!(call_ended_id(&action.id), Some(j.id.as_str()));
        assert_eq!(call_ended_id(&j.id), None);
        assert_eq!(call_ended_id("job_1.c1"), None);
        let back = Job::decode(json.as_bytes(), Some(j.to_json().as_bytes())).unwrap();
        assert_eq!(action, &back);
        assert_eq!(back.kind(), "webhook");
        // Without it, an error that says what is missing, not a default event.
        let err = Job::decode(json.as_bytes(), None).unwrap_err();
        assert!(err.contains("call's event"), "{err}");
        // Data stored before (the event in every action job) still reads on its own.
        let mut legacy: serde_json::Value = serde_json::from_str(&json).unwrap();
        legacy["event"] = serde_json::to_value(event()).unwrap();
        let legacy = serde_json::to_vec(&legacy).unwrap();
        assert_eq!(&Job::decode(&legacy, None).unwrap(), action);
        // An action job without its action is an error naming the field, not a default.
        let broken = json.replace(r#""index":0,"#, "");
        let err = Job::decode(broken.as_bytes(), Some(j.to_json().as_bytes())).unwrap_err();
        assert!(err.contains("index"), "{err}");
    }

    #[test]
    fn map_error_rewrites_failures_only() {
        let p = |o: Outcome| o.map_error(|e| format!("jira: {e}"));
        let cases = [
            (Outcome::retry("HTTP 503"), Outcome::retry("jira: HTTP 503")),
            (
                Outcome::permanent("HTTP 400"),
                Outcome::permanent("jira: HTTP 400"),
            ),
            (Outcome::skipped("no"), Outcome::skipped("no")),
            (
                Outcome::Delivered {
                    status: Some(201),
                    detail: None,
                },
                Outcome::Delivered {
                    status: Some(201),
                    detail: None,
                },
            ),
        ];
        for (o, want) in cases {
            assert_eq!(p(o), want);
        }
        let kept = Outcome::Retry {
            error: "HTTP 429".into(),
            status: Some(429),
            retry_after: Some(Duration::from_secs(3)),
            snippet: Some("slow".into()),
        };
        let Outcome::Retry {
            error,
            status,
            retry_after,
            snippet,
        } = p(kept)
        else {
            panic!()
        };
        assert_eq!(
            (error.as_str(), status, retry_after, snippet.as_deref()),
            (
                "jira: HTTP 429",
                Some(429),
                Some(Duration::from_secs(3)),
                Some("slow")
            )
        );
    }

    #[test]
    fn snippet_is_bounded_on_char_boundary() {
        let s = "é".repeat(1000);
        let cut = snippet(&s);
        assert!(cut.len() <= SNIPPET_BYTES + 3);
    }
}
