//! The webhook payload: the seed's field names and shape, a wire contract.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::WebhookAction;
use crate::event::CallEvent;

/// The body POSTed to a webhook action's URL.
#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    pub event: &'static str,
    pub call_id: &'a str,
    pub agent_id: &'a str,
    pub caller_number: Option<&'a str>,
    pub duration_seconds: Option<u64>,
    pub summary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<Option<&'a str>>,
    pub metadata: &'a Map<String, Value>,
}

pub const EVENT_NAME: &str = "post_call_follow_up";

impl<'a> WebhookPayload<'a> {
    pub fn new(event: &'a CallEvent, action: &WebhookAction) -> Self {
        WebhookPayload {
            event: EVENT_NAME,
            call_id: &event.call_id,
            agent_id: &event.agent_id,
            caller_number: event.caller_number.as_deref(),
            duration_seconds: event.duration(),
            summary: event.summary.as_deref(),
            transcript: action
                .include_transcript
                .then_some(event.transcript.as_deref()),
            recording_url: action
                .include_recording_url
                .then_some(event.recording_url.as_deref()),
            metadata: &event.metadata,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the payload always serializes")
    }
}

/// The `on_complete` callback's body: once per call per settling, when every action
/// job of the call is delivered, skipped or dead.
#[derive(Debug, Serialize)]
pub struct Completion<'a> {
    /// Always `post_call_follow_up.completed`.
    pub event: &'static str,
    pub call_id: &'a str,
    pub agent_id: &'a str,
    /// When the callback was sent (RFC 3339).
    pub completed_at: String,
    /// How many actions ended in each state.
    pub delivered: usize,
    pub skipped: usize,
    pub dead: usize,
    pub actions: Vec<ActionOutcome>,
}

pub const COMPLETED_EVENT_NAME: &str = "post_call_follow_up.completed";

/// One action's outcome, in the call's completion callback.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize)]
pub struct ActionOutcome {
    /// The action's position in the agent's config.
    pub index: usize,
    /// `email`, `sms`, `webhook`, `task` or `slack`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The action job's id (`aftercall calls status`, `GET /calls/{id}`).
    pub job_id: String,
    /// `delivered`, `skipped` or `dead`.
    pub state: String,
    pub attempts: u32,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// The last attempt's error, for a dead action.
    pub error: Option<String>,
}

impl Completion<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the payload always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(t: bool, r: bool) -> WebhookAction {
        WebhookAction {
            url: "https://x.example".into(),
            include_transcript: t,
            include_recording_url: r,
            secret: None,
            headers: Default::default(),
            delay: None,
            when: None,
            expires_after: None,
            method: None,
            body: None,
        }
    }

    #[test]
    fn includes_transcript_and_recording_only_when_asked() {
        let e = CallEvent::parse(br#"{"call_id":"c","agent_id":"a","transcript":"t","recording_url":"https://r.example/1"}"#, 1 << 20).unwrap();
        let all = serde_json::to_value(WebhookPayload::new(&e, &action(true, true))).unwrap();
        assert_eq!(all["transcript"], "t");
        assert_eq!(all["recording_url"], "https://r.example/1");
        let none = serde_json::to_value(WebhookPayload::new(&e, &action(false, false))).unwrap();
        assert!(none.get("transcript").is_none() && none.get("recording_url").is_none());
        let keys: Vec<_> = all.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "event",
                "call_id",
                "agent_id",
                "caller_number",
                "duration_seconds",
                "summary",
                "transcript",
                "recording_url",
                "metadata"
            ]
        );
    }

    /// Metadata reaches the receiver as the producer wrote it, floats included.
    #[test]
    fn metadata_floats_round_trip_exactly() {
        let raw = r#"{"call_id":"c","agent_id":"a","metadata":{"score":0.30000000000000004,"lat":37.774929,"big":1.7976931348623157e308}}"#;
        let e = CallEvent::parse(raw.as_bytes(), 1 << 20).unwrap();
        let a = action(false, false);
        let body = String::from_utf8(WebhookPayload::new(&e, &a).to_bytes()).unwrap();
        assert!(
            body.contains(r#""score":0.30000000000000004,"lat":37.774929,"#),
            "{body}"
        );
        let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
        let given: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(sent["metadata"], given["metadata"]);
    }
}
