//! Bland's post-call webhook: the call's details as one object.

use serde_json::Value;

use super::{Draft, IntakeError, Message, Platform, at, boolean, call_id, object, text, time_text};
use crate::event::{Direction, EndedReason};

pub(super) fn read(raw: &Value) -> Result<Message, IntakeError> {
    let id = call_id(raw, &["/call_id", "/c_id"])?;
    let mut d = Draft::new(Platform::Bland, id);
    // Bland has no agent object on a call: its pathway (or persona) names the agent.
    d.agent_id = text(raw, "/pathway_id").or_else(|| text(raw, "/persona_id"));
    d.direction = boolean(raw, "/inbound").map(|inbound| {
        if inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    });
    d.number = match d.direction {
        Some(Direction::Inbound) => text(raw, "/from"),
        _ => text(raw, "/to"),
    };
    d.started_at = time_text(raw, "/started_at");
    d.duration_seconds = text(raw, "/corrected_duration")
        .and_then(|s| s.trim().parse::<f64>().ok())
        .or_else(|| {
            at(raw, "/call_length")
                .and_then(Value::as_f64)
                .map(|m| m * 60.0)
        })
        .filter(|s| *s >= 0.0)
        .map(|s| s.ceil() as u64);
    d.transcript = text(raw, "/concatenated_transcript");
    d.recording_url = text(raw, "/recording_url");
    d.summary = text(raw, "/summary");
    d.metadata = object(raw, "/metadata").unwrap_or_default();
    d.dynamic_variables = object(raw, "/variables").unwrap_or_default();
    d.analysis.data = object(raw, "/analysis").map(Value::Object);
    let answered_by = text(raw, "/answered_by");
    let status = text(raw, "/status").or_else(|| text(raw, "/queue_status"));
    let ended_by = text(raw, "/call_ended_by");
    d.platform_ended_reason = ended_by.clone().or_else(|| status.clone());
    d.ended_reason = Some(ended_reason(
        answered_by.as_deref(),
        status.as_deref(),
        ended_by.as_deref(),
        text(raw, "/error_message").is_some(),
    ));
    Ok(Message::Ended {
        event: Box::new(d.finish()?),
        analysis_follows: false,
    })
}

/// Bland's `answered_by`, `status` and `call_ended_by`, normalised (first match wins).
pub(super) fn ended_reason(
    answered_by: Option<&str>,
    status: Option<&str>,
    ended_by: Option<&str>,
    error: bool,
) -> EndedReason {
    use EndedReason as E;
    let lower = |s: Option<&str>| s.map(|s| s.to_ascii_lowercase());
    match (lower(answered_by).as_deref(), lower(status).as_deref()) {
        (Some("voicemail"), _) => return E::Voicemail,
        (Some("no-answer"), _) | (_, Some("no-answer" | "no_answer")) => return E::NoAnswer,
        (_, Some("busy")) => return E::Busy,
        (_, Some("failed" | "canceled" | "cancelled")) => return E::Failed,
        _ => {}
    }
    match lower(ended_by).as_deref() {
        Some("user") => E::CallerHungUp,
        Some("assistant" | "agent") => E::AgentHungUp,
        _ if error => E::Failed,
        _ => E::Completed,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::intake::check::{assert_has, ended};

    #[test]
    fn post_call_webhook_maps_every_field() {
        let body = json!({
            "call_id": "bland-1", "c_id": "bland-1", "call_length": 1.5, "corrected_duration": "88",
            "to": "+14155550111", "from": "+14155550222", "inbound": true, "completed": true,
            "started_at": "2025-12-03T12:00:00.000Z", "status": "completed",
            "concatenated_transcript": "user: hi", "summary": "Asked about hours.",
            "recording_url": "https://bland.example/r.mp3", "answered_by": "human", "call_ended_by": "USER",
            "pathway_id": "path-9", "metadata": {"caller_name": "Lin"},
            "variables": {"email": "lin@example.com"}, "analysis": {"intent": "hours"},
        });
        let (e, _) = ended(Platform::Bland, &body);
        assert_has(
            &e,
            json!({
                "call_id": "bland-1", "agent_id": "path-9", "caller_number": "+14155550222",
                "direction": "inbound", "duration_seconds": 88, "summary": "Asked about hours.",
                "ended_reason": "caller_hung_up", "platform_ended_reason": "USER",
                "analysis": {"data": {"intent": "hours"}},
            }),
        );
        assert_eq!(
            (e.caller_name(), e.caller_email()),
            (Some("Lin"), Some("lin@example.com"))
        );
    }

    #[test]
    fn ended_reasons() {
        use EndedReason as E;
        for (a, s, by, err, want) in [
            (
                Some("voicemail"),
                Some("completed"),
                Some("ASSISTANT"),
                false,
                E::Voicemail,
            ),
            (None, Some("no-answer"), None, false, E::NoAnswer),
            (None, Some("busy"), None, false, E::Busy),
            (None, Some("failed"), None, true, E::Failed),
            (
                Some("human"),
                Some("completed"),
                Some("ASSISTANT"),
                false,
                E::AgentHungUp,
            ),
            (Some("human"), Some("completed"), None, false, E::Completed),
            (None, None, None, true, E::Failed),
        ] {
            assert_eq!(ended_reason(a, s, by, err), want, "{a:?} {s:?} {by:?}");
        }
    }
}
