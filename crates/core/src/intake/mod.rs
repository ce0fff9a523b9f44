//! Voice platforms' own post-call messages, read into call-ended events: Retell's
//! webhook, Vapi's server messages and Bland's post-call webhook. Pure: the API verifies
//! the platform's signature and enqueues what this returns. The field-by-field mapping
//! of each platform is documented in `docs/platforms.md`; the tables there and the code
//! here are kept side by side.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::event::{Analysis, CallEvent, Direction, EndedReason, EventError, is_e164};

mod bland;
mod retell;
mod vapi;

/// A platform aftercall takes post-call messages from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Retell,
    Vapi,
    Bland,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Retell, Platform::Vapi, Platform::Bland];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Retell => "retell",
            Platform::Vapi => "vapi",
            Platform::Bland => "bland",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Reads one message of this platform (its raw body, already authenticated). The
    /// message is kept with its event as `raw` when the two fit in `max_event_bytes`.
    pub fn read(self, body: &[u8], max_event_bytes: usize) -> Result<Message, IntakeError> {
        let raw: Value = serde_json::from_slice(body)
            .map_err(|e| IntakeError::new("", format!("not JSON: {e}")))?;
        if !raw.is_object() {
            return Err(IntakeError::new("", "a message must be a JSON object"));
        }
        let mut message = match self {
            Platform::Retell => retell::read(&raw),
            Platform::Vapi => vapi::read(&raw),
            Platform::Bland => bland::read(&raw),
        }?;
        if let Message::Ended { event, .. } | Message::Analyzed { event } = &mut message {
            // The message as `raw` adds at most its own bytes (compact JSON is never
            // longer than the JSON it was read from) and the key; the event's own fields
            // are copied from the message, so (escapes aside) they take no more than it
            // either. Only a message near the limit is measured exactly.
            let fits = body.len() * 3 + 4096 <= max_event_bytes || {
                let base = serde_json::to_vec(&**event)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                base.saturating_add(body.len() + 8) <= max_event_bytes
            };
            if fits {
                event.raw = Some(raw);
            }
        }
        Ok(message)
    }
}

/// What one platform message means for aftercall.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The call ended. `analysis_follows`: the platform sends its analysis in a later
    /// message (Retell's `call_analyzed`), which an agent may wait for.
    Ended {
        event: Box<CallEvent>,
        analysis_follows: bool,
    },
    /// The platform's analysis of a call, with the whole call again (Retell's
    /// `call_analyzed`).
    Analyzed { event: Box<CallEvent> },
    /// A message aftercall does not use (a status update, `call_started`, ...): it is
    /// acknowledged and counted, nothing else.
    Ignored { kind: String },
}

impl Message {
    /// The message's kind for answers and metrics.
    pub fn kind(&self) -> &str {
        match self {
            Message::Ended { .. } => "ended",
            Message::Analyzed { .. } => "analyzed",
            Message::Ignored { kind } => kind,
        }
    }
}

/// A message of a kind aftercall uses that cannot become an event (no call id, say).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct IntakeError {
    pub field: String,
    pub message: String,
}

impl IntakeError {
    fn new(field: &str, message: impl Into<String>) -> IntakeError {
        IntakeError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<EventError> for IntakeError {
    fn from(e: EventError) -> IntakeError {
        IntakeError::new(e.field(), e.to_string())
    }
}

/// Explicit agent ids: `(platform, the platform's agent id) → aftercall agent id`,
/// from `AFTERCALL_INGEST_AGENTS` (`retell:agent_123=support,vapi:asst_9=sales`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentMap(Vec<(Platform, String, String)>);

impl AgentMap {
    pub fn parse(s: &str) -> Result<AgentMap, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                format!(
                    "`{part}` is not platform:platform_agent_id=aftercall_agent_id (platforms: retell, vapi, bland)"
                )
            };
            let (from, to) = part.split_once('=').ok_or_else(bad)?;
            let (platform, id) = from.split_once(':').ok_or_else(bad)?;
            let platform = Platform::parse(platform.trim()).ok_or_else(bad)?;
            let (id, to) = (id.trim(), to.trim());
            if id.is_empty() || to.is_empty() {
                return Err(bad());
            }
            out.push((platform, id.to_string(), to.to_string()));
        }
        Ok(AgentMap(out))
    }

    /// The aftercall agent id of a platform's agent: the mapped one, else the same id.
    pub fn agent_id<'a>(&'a self, platform: Platform, id: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(p, from, _)| *p == platform && from == id)
            .map(|(_, _, to)| to.as_str())
            .unwrap_or(id)
    }

    /// Applies the map to an event read from `platform`.
    pub fn apply(&self, platform: Platform, event: &mut CallEvent) {
        let mapped = self.agent_id(platform, &event.agent_id);
        if mapped != event.agent_id {
            event.agent_id = mapped.to_string();
        }
    }
}

// ---- helpers shared by the three readers ----

/// A path into the message (`/call/from_number`).
fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    v.pointer(pointer).filter(|v| !v.is_null())
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    match at(v, pointer)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn object(v: &Value, pointer: &str) -> Option<Map<String, Value>> {
    at(v, pointer)?
        .as_object()
        .filter(|m| !m.is_empty())
        .cloned()
}

fn boolean(v: &Value, pointer: &str) -> Option<bool> {
    match at(v, pointer)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "pass" | "yes" => Some(true),
            "false" | "fail" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn time_ms(v: &Value, pointer: &str) -> Option<DateTime<FixedOffset>> {
    let ms = at(v, pointer)?.as_i64()?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.fixed_offset())
}

fn time_text(v: &Value, pointer: &str) -> Option<DateTime<FixedOffset>> {
    let s = text(v, pointer)?;
    DateTime::parse_from_rfc3339(s.trim()).ok()
}

/// A call id: required, trimmed.
fn call_id(v: &Value, pointers: &[&str]) -> Result<String, IntakeError> {
    pointers
        .iter()
        .find_map(|p| text(v, p))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| {
            IntakeError::new(
                pointers[0].trim_start_matches('/'),
                "is missing: the message names no call",
            )
        })
}

/// The fields every reader fills the same way, then checked as any event is.
struct Draft {
    platform: Platform,
    call_id: String,
    agent_id: Option<String>,
    agent_name: Option<String>,
    number: Option<String>,
    direction: Option<Direction>,
    started_at: Option<DateTime<FixedOffset>>,
    ended_at: Option<DateTime<FixedOffset>>,
    duration_seconds: Option<u64>,
    summary: Option<String>,
    transcript: Option<String>,
    recording_url: Option<String>,
    metadata: Map<String, Value>,
    dynamic_variables: Map<String, Value>,
    caller_name: Option<String>,
    caller_email: Option<String>,
    ended_reason: Option<EndedReason>,
    platform_ended_reason: Option<String>,
    analysis: Analysis,
}

impl Draft {
    fn new(platform: Platform, call_id: String) -> Draft {
        Draft {
            platform,
            call_id,
            agent_id: None,
            agent_name: None,
            number: None,
            direction: None,
            started_at: None,
            ended_at: None,
            duration_seconds: None,
            summary: None,
            transcript: None,
            recording_url: None,
            metadata: Map::new(),
            dynamic_variables: Map::new(),
            caller_name: None,
            caller_email: None,
            ended_reason: None,
            platform_ended_reason: None,
            analysis: Analysis::default(),
        }
    }

    /// The event. What would make a valid message invalid as an event (a number that
    /// is not E.164, a recording URL that is not http(s), times out of order) is kept in
    /// metadata instead of refusing the call.
    fn finish(self) -> Result<CallEvent, IntakeError> {
        let mut metadata = self.metadata;
        if !self.dynamic_variables.is_empty() {
            metadata.insert(
                "dynamic_variables".into(),
                Value::Object(self.dynamic_variables.clone()),
            );
        }
        let var = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                self.dynamic_variables
                    .get(*k)
                    .or_else(|| metadata.get(*k))
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
            })
        };
        let caller_name = self
            .caller_name
            .or_else(|| var(&["caller_name", "customer_name", "name"]));
        let caller_email = self
            .caller_email
            .or_else(|| var(&["caller_email", "customer_email", "email"]));
        if let Some(n) = caller_name {
            metadata.insert("caller_name".into(), Value::String(n));
        }
        if let Some(e) = caller_email {
            metadata.insert("caller_email".into(), Value::String(e));
        }
        let caller_number = match self.number.map(|n| n.trim().to_string()) {
            Some(n) if is_e164(&n) => Some(n),
            Some(n) if !n.is_empty() => {
                metadata.insert("platform_caller_number".into(), Value::String(n));
                None
            }
            _ => None,
        };
        let recording_url = match self.recording_url {
            Some(u)
                if url::Url::parse(&u)
                    .map(|p| matches!(p.scheme(), "http" | "https"))
                    .unwrap_or(false) =>
            {
                Some(u)
            }
            _ => None,
        };
        let (started_at, ended_at) = match (self.started_at, self.ended_at) {
            (Some(s), Some(e)) if e < s => (Some(s), None),
            times => times,
        };
        let agent_id = self
            .agent_id
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.platform.as_str().to_string());
        let analysis = (!self.analysis.is_empty()).then_some(self.analysis);
        let event = CallEvent {
            caller_number,
            agent_name: self.agent_name,
            started_at,
            ended_at,
            duration_seconds: self.duration_seconds,
            summary: self.summary,
            transcript: self.transcript,
            recording_url,
            metadata,
            platform: Some(self.platform.as_str().to_string()),
            ended_reason: self.ended_reason,
            platform_ended_reason: self.platform_ended_reason,
            direction: self.direction,
            analysis,
            ..CallEvent::new(self.call_id, agent_id)
        };
        event.validate()?;
        Ok(event)
    }
}

fn sentiment(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// What the platforms' readers' tests share.
#[cfg(test)]
mod check {
    use serde_json::Value;

    use super::{Message, Platform};
    use crate::event::CallEvent;

    /// The message `body` is on `platform` (read as the webhook would be).
    pub(super) fn message(platform: Platform, body: &Value) -> Message {
        platform.read(body.to_string().as_bytes(), 1 << 20).unwrap()
    }

    /// The call-ended event `body` becomes on `platform`, and whether its analysis follows.
    pub(super) fn ended(platform: Platform, body: &Value) -> (CallEvent, bool) {
        match message(platform, body) {
            Message::Ended {
                event,
                analysis_follows,
            } => (*event, analysis_follows),
            other => panic!("not a call-ended message: {other:?}"),
        }
    }

    /// Asserts that `event`, as it is stored and sent, holds each field of `want`
    /// (objects compared key by key; `null` stands for absent).
    pub(super) fn assert_has(event: &CallEvent, want: Value) {
        fn diff(got: &Value, want: &Value, at: &str, out: &mut Vec<String>) {
            match want {
                Value::Object(fields) => {
                    for (k, w) in fields {
                        let g = got.get(k).unwrap_or(&Value::Null);
                        diff(g, w, &format!("{at}/{k}"), out);
                    }
                }
                _ if got != want => out.push(format!("{at}: {got}, not {want}")),
                _ => {}
            }
        }
        let mut out = Vec::new();
        diff(&serde_json::to_value(event).unwrap(), &want, "", &mut out);
        assert!(out.is_empty(), "{}", out.join("\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each platform's own words for how a call ended, in the one vocabulary rules use.
    #[test]
    fn retell_and_vapi_ended_reasons() {
        use EndedReason as E;
        let retell: fn(&str) -> E = retell::ended_reason;
        let vapi: fn(&str) -> E = vapi::ended_reason;
        for (platform, r, want) in [
            (retell, "agent_hangup", E::AgentHungUp),
            (retell, "voicemail_reached", E::Voicemail),
            (retell, "dial_no_answer", E::NoAnswer),
            (retell, "dial_busy", E::Busy),
            (retell, "call_transfer", E::Transferred),
            (retell, "max_duration_reached", E::TimedOut),
            (retell, "error_llm_websocket_open", E::Failed),
            (retell, "telephony_provider_unavailable", E::Failed),
            (retell, "manual_stopped", E::Other),
            (vapi, "voicemail", E::Voicemail),
            (vapi, "customer-did-not-answer", E::NoAnswer),
            (vapi, "customer-busy", E::Busy),
            (vapi, "assistant-said-end-call-phrase", E::AgentHungUp),
            (vapi, "assistant-forwarded-call", E::Transferred),
            (vapi, "customer-ended-call-during-transfer", E::Transferred),
            (vapi, "silence-timed-out", E::TimedOut),
            (vapi, "pipeline-error-openai-llm-failed", E::Failed),
            (vapi, "manually-canceled", E::Other),
        ] {
            assert_eq!(platform(r), want, "{r}");
        }
    }

    #[test]
    fn agent_map_reads_and_applies() {
        let m = AgentMap::parse("retell:agent_1=support, vapi:asst-9=sales").unwrap();
        assert_eq!(m.agent_id(Platform::Retell, "agent_1"), "support");
        assert_eq!(m.agent_id(Platform::Vapi, "agent_1"), "agent_1");
        assert_eq!(m.agent_id(Platform::Vapi, "asst-9"), "sales");
        for bad in ["retell=x", "zoom:a=b", "retell:=b", "retell:a="] {
            assert!(AgentMap::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(AgentMap::parse(" ").unwrap(), AgentMap::default());
    }

    /// The message is kept as `raw` when the event with it fits the event limit, and
    /// left out (not the call) when it does not.
    #[test]
    fn a_message_too_large_to_keep_is_left_out() {
        let body = serde_json::json!({"call_id": "c1", "summary": "s", "pad": "y".repeat(2000)})
            .to_string();
        let raw_of = |max| match Platform::Bland.read(body.as_bytes(), max).unwrap() {
            Message::Ended { event, .. } => {
                let size = serde_json::to_vec(&*event).unwrap().len();
                assert!(size <= max, "{size} > {max}");
                event.raw
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            raw_of(1 << 20).unwrap()["pad"].as_str().map(str::len),
            Some(2000)
        );
        assert_eq!(raw_of(1500), None);
    }

    #[test]
    fn what_is_not_valid_as_an_event_goes_to_metadata() {
        let mut d = Draft::new(Platform::Bland, "c1".into());
        d.number = Some("555-0100".into());
        d.recording_url = Some("s3://bucket/x".into());
        d.started_at = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").ok();
        d.ended_at = DateTime::parse_from_rfc3339("2026-01-01T09:00:00Z").ok();
        let e = d.finish().unwrap();
        assert_eq!(e.caller_number, None);
        assert_eq!(e.meta_str("platform_caller_number"), Some("555-0100"));
        assert_eq!(e.recording_url, None);
        assert_eq!(e.ended_at, None);
        assert_eq!(e.agent_id, "bland");
        assert_eq!(e.platform.as_deref(), Some("bland"));
    }
}
