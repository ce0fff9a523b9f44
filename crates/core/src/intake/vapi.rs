//! Vapi's server messages: `{"message": {"type": "end-of-call-report", ...}}`. Every
//! other type (status updates, transcripts, tool calls) is acknowledged and ignored.

use serde_json::Value;

use super::{Draft, IntakeError, Message, Platform, at, boolean, call_id, object, text, time_text};
use crate::event::{Direction, EndedReason};

pub(super) fn read(raw: &Value) -> Result<Message, IntakeError> {
    let Some(m) = at(raw, "/message").filter(|m| m.is_object()) else {
        return Err(IntakeError::new("message", "is missing"));
    };
    let kind = text(m, "/type").ok_or_else(|| IntakeError::new("message.type", "is missing"))?;
    if kind != "end-of-call-report" {
        return Ok(Message::Ignored { kind });
    }
    let id =
        call_id(m, &["/call/id"]).map_err(|e| IntakeError::new("message.call.id", e.message))?;
    let mut d = Draft::new(Platform::Vapi, id);
    d.agent_id = text(m, "/call/assistantId").or_else(|| text(m, "/assistant/id"));
    d.agent_name = text(m, "/assistant/name");
    d.direction = match text(m, "/call/type").as_deref() {
        Some("inboundPhoneCall") => Some(Direction::Inbound),
        Some("outboundPhoneCall") => Some(Direction::Outbound),
        _ => None,
    };
    // Vapi's customer is the other party in either direction.
    let customer = |field: &str| {
        text(m, &format!("/customer/{field}"))
            .or_else(|| text(m, &format!("/call/customer/{field}")))
    };
    d.number = customer("number");
    d.caller_name = customer("name");
    d.caller_email = customer("email");
    d.started_at = time_text(m, "/startedAt").or_else(|| time_text(m, "/call/startedAt"));
    d.ended_at = time_text(m, "/endedAt").or_else(|| time_text(m, "/call/endedAt"));
    d.duration_seconds = at(m, "/durationSeconds")
        .and_then(Value::as_f64)
        .filter(|s| *s >= 0.0)
        .map(|s| s.ceil() as u64);
    d.transcript = text(m, "/artifact/transcript").or_else(|| text(m, "/transcript"));
    d.recording_url = text(m, "/artifact/recordingUrl")
        .or_else(|| text(m, "/artifact/recording/mono/combinedUrl"))
        .or_else(|| text(m, "/recordingUrl"));
    d.metadata = object(m, "/call/metadata").unwrap_or_default();
    d.dynamic_variables = object(m, "/artifact/variableValues")
        .or_else(|| object(m, "/call/assistantOverrides/variableValues"))
        .unwrap_or_default();
    d.summary = text(m, "/analysis/summary").or_else(|| text(m, "/summary"));
    d.analysis.successful = boolean(m, "/analysis/successEvaluation");
    d.analysis.data = object(m, "/analysis/structuredData").map(Value::Object);
    d.platform_ended_reason = text(m, "/endedReason").or_else(|| text(m, "/call/endedReason"));
    d.ended_reason = d.platform_ended_reason.as_deref().map(ended_reason);
    Ok(Message::Ended {
        event: Box::new(d.finish()?),
        analysis_follows: false,
    })
}

/// Vapi's `endedReason`, normalised.
pub(super) fn ended_reason(r: &str) -> EndedReason {
    use EndedReason as E;
    match r {
        "voicemail" => E::Voicemail,
        "customer-busy" | "call.forwarding.operator-busy" => E::Busy,
        "customer-did-not-answer" | "call.forwarding.no-answer" | "vonage-rejected" => E::NoAnswer,
        "silence-timed-out" | "exceeded-max-duration" => E::TimedOut,
        "assistant-forwarded-call" => E::Transferred,
        "call.ringing.sip-inbound-caller-hungup-before-call-connect" => E::NoAnswer,
        r if r.starts_with("customer-ended-call") => {
            if r.contains("transfer") {
                E::Transferred
            } else {
                E::CallerHungUp
            }
        }
        r if r.starts_with("assistant-ended-call") || r == "assistant-said-end-call-phrase" => {
            E::AgentHungUp
        }
        r if r.contains("transfer") => E::Transferred,
        r if r.contains("error") || r.contains("fault") || r.contains("failed") => E::Failed,
        "call.in-progress.twilio-completed-call"
        | "call.in-progress.sip-completed-call"
        | "vonage-completed" => E::Completed,
        _ => E::Other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::intake::check::{assert_has, ended};

    #[test]
    fn end_of_call_report_maps_every_field() {
        let body = json!({"message": {
            "type": "end-of-call-report", "endedReason": "customer-ended-call",
            "timestamp": 1764763290000i64,
            "startedAt": "2025-12-03T12:00:00.000Z", "endedAt": "2025-12-03T12:01:30.200Z",
            "durationSeconds": 90.2,
            "call": {"id": "vapi-call-1", "orgId": "org", "type": "outboundPhoneCall", "assistantId": "asst_1",
                     "metadata": {"order_id": "A7"}},
            "assistant": {"name": "Sales"},
            "customer": {"number": "+14155550123", "name": "Grace", "email": "grace@example.com"},
            "artifact": {"transcript": "AI: hi", "recordingUrl": "https://vapi.example/r.wav",
                         "variableValues": {"plan": "pro"}},
            "analysis": {"summary": "Booked a demo.", "structuredData": {"demo": true}, "successEvaluation": "true"},
        }});
        let (e, analysis_follows) = ended(Platform::Vapi, &body);
        assert!(!analysis_follows);
        assert_has(
            &e,
            json!({
                "call_id": "vapi-call-1", "agent_id": "asst_1", "agent_name": "Sales",
                "direction": "outbound", "caller_number": "+14155550123", "duration_seconds": 91,
                "summary": "Booked a demo.", "transcript": "AI: hi",
                "recording_url": "https://vapi.example/r.wav", "ended_reason": "caller_hung_up",
                "analysis": {"successful": true, "data": {"demo": true}},
                "metadata": {"dynamic_variables": {"plan": "pro"}},
                "raw": {"message": {"type": "end-of-call-report"}},
            }),
        );
        assert_eq!(e.duration(), Some(91));
        assert_eq!(
            (e.caller_name(), e.caller_email()),
            (Some("Grace"), Some("grace@example.com"))
        );
        assert_eq!(e.meta_str("order_id"), Some("A7"));
    }

    #[test]
    fn other_types_are_ignored() {
        for t in ["status-update", "transcript", "conversation-update", "hang"] {
            let m = Platform::Vapi
                .read(
                    json!({"message": {"type": t}}).to_string().as_bytes(),
                    1 << 20,
                )
                .unwrap();
            assert_eq!(m, Message::Ignored { kind: t.into() });
        }
        let err = Platform::Vapi
            .read(
                br#"{"message": {"type": "end-of-call-report", "call": {}}}"#,
                1 << 20,
            )
            .unwrap_err();
        assert_eq!(err.field, "message.call.id");
    }
}
