//! Retell's webhook: `{"event": "call_ended" | "call_analyzed" | ..., "call": {...}}`.

use serde_json::Value;

use super::{
    Draft, IntakeError, Message, Platform, at, boolean, call_id, object, sentiment, text, time_ms,
};
use crate::event::{Direction, EndedReason};

pub(super) fn read(raw: &Value) -> Result<Message, IntakeError> {
    let kind = text(raw, "/event").ok_or_else(|| IntakeError::new("event", "is missing"))?;
    let analyzed = match kind.as_str() {
        "call_ended" => false,
        "call_analyzed" => true,
        _ => return Ok(Message::Ignored { kind }),
    };
    if !at(raw, "/call").is_some_and(Value::is_object) {
        return Err(IntakeError::new("call", "is missing"));
    }
    let event = Box::new(draft(raw)?.finish()?);
    Ok(if analyzed {
        Message::Analyzed { event }
    } else {
        Message::Ended {
            event,
            analysis_follows: true,
        }
    })
}

fn draft(raw: &Value) -> Result<Draft, IntakeError> {
    let c = &raw["call"];
    let mut d = Draft::new(
        Platform::Retell,
        call_id(c, &["/call_id"]).map_err(|e| IntakeError::new("call.call_id", e.message))?,
    );
    d.agent_id = text(c, "/agent_id");
    d.agent_name = text(c, "/agent_name");
    d.direction = match text(c, "/direction").as_deref() {
        Some("inbound") => Some(Direction::Inbound),
        Some("outbound") => Some(Direction::Outbound),
        _ => None,
    };
    // The other party: who called in, or who was called.
    d.number = match d.direction {
        Some(Direction::Outbound) => text(c, "/to_number"),
        _ => text(c, "/from_number"),
    };
    d.started_at = time_ms(c, "/start_timestamp");
    d.ended_at = time_ms(c, "/end_timestamp");
    d.duration_seconds = at(c, "/duration_ms")
        .and_then(Value::as_u64)
        .map(|ms| ms.div_ceil(1000));
    d.transcript = text(c, "/transcript");
    d.recording_url = text(c, "/recording_url");
    d.metadata = object(c, "/metadata").unwrap_or_default();
    for vars in [
        "/retell_llm_dynamic_variables",
        "/collected_dynamic_variables",
    ] {
        d.dynamic_variables
            .extend(object(c, vars).unwrap_or_default());
    }
    d.summary = text(c, "/call_analysis/call_summary");
    d.analysis.successful = boolean(c, "/call_analysis/call_successful");
    d.analysis.sentiment = sentiment(text(c, "/call_analysis/user_sentiment"));
    d.analysis.data = object(c, "/call_analysis/custom_analysis_data").map(Value::Object);
    d.platform_ended_reason = text(c, "/disconnection_reason");
    d.ended_reason = d.platform_ended_reason.as_deref().map(ended_reason);
    if boolean(c, "/call_analysis/in_voicemail") == Some(true) {
        d.ended_reason = Some(EndedReason::Voicemail);
    }
    Ok(d)
}

/// Retell's `disconnection_reason`, normalised.
pub(super) fn ended_reason(r: &str) -> EndedReason {
    use EndedReason as E;
    match r {
        "user_hangup" => E::CallerHungUp,
        "agent_hangup" | "user_requested_dnc" | "user_requested_callback" => E::AgentHungUp,
        "call_transfer" | "transfer_bridged" => E::Transferred,
        "voicemail_reached" => E::Voicemail,
        "dial_busy" => E::Busy,
        "dial_no_answer" | "user_declined" => E::NoAnswer,
        "inactivity" | "max_duration_reached" | "registered_call_timeout" => E::TimedOut,
        "dial_failed"
        | "invalid_destination"
        | "concurrency_limit_reached"
        | "no_concurrency_fallback"
        | "no_valid_payment"
        | "credit_exhausted"
        | "budget_reached"
        | "scam_detected"
        | "sip_routing_error"
        | "marked_as_spam"
        | "network_blocked" => E::Failed,
        r if r.starts_with("error_") || r.starts_with("telephony_provider_") => E::Failed,
        _ => E::Other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::intake::check::{assert_has, ended, message};

    fn call(extra: Value) -> Value {
        let mut c = json!({
            "call_type": "phone_call", "call_id": "call_r1", "agent_id": "agent_r",
            "agent_name": "Front desk", "agent_version": 1, "call_status": "ended",
            "direction": "inbound", "from_number": "+14155550100", "to_number": "+14155550199",
            "start_timestamp": 1764763200000i64, "end_timestamp": 1764763290500i64,
            "duration_ms": 90500, "transcript": "Agent: hi\nUser: hello",
            "recording_url": "https://retell.example/rec.wav",
            "metadata": {"order_id": "12345"},
            "retell_llm_dynamic_variables": {"customer_name": "Ada"},
            "collected_dynamic_variables": {"email": "ada@example.com"},
            "disconnection_reason": "user_hangup",
        });
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn call_ended_maps_every_field() {
        let body = json!({"event": "call_ended", "call": call(json!({}))});
        let (e, analysis_follows) = ended(Platform::Retell, &body);
        assert!(analysis_follows);
        assert_has(
            &e,
            json!({
                "call_id": "call_r1", "agent_id": "agent_r", "agent_name": "Front desk",
                "caller_number": "+14155550100", "direction": "inbound", "duration_seconds": 91,
                "ended_reason": "caller_hung_up", "platform_ended_reason": "user_hangup",
                "platform": "retell", "summary": null, "raw": {"event": "call_ended"},
            }),
        );
        assert_eq!(
            e.started_at.unwrap().to_rfc3339(),
            "2025-12-03T12:00:00+00:00"
        );
        assert_eq!(e.caller_name(), Some("Ada"));
        assert_eq!(e.caller_email(), Some("ada@example.com"));
        assert_eq!(e.meta_str("order_id"), Some("12345"));
    }

    #[test]
    fn call_analyzed_carries_the_analysis_and_voicemail_wins() {
        let analysis = json!({"call_analysis": {"call_summary": "Wants a refund.", "call_successful": true,
            "user_sentiment": "Positive", "in_voicemail": false, "custom_analysis_data": {"callback": true}},
            "direction": "outbound"});
        let Message::Analyzed { event: e } = message(
            Platform::Retell,
            &json!({"event": "call_analyzed", "call": call(analysis)}),
        ) else {
            panic!("analyzed")
        };
        assert_eq!(e.summary.as_deref(), Some("Wants a refund."));
        let a = e.analysis.as_ref().unwrap();
        assert_eq!(
            (a.successful, a.sentiment.as_deref()),
            (Some(true), Some("positive"))
        );
        assert_eq!(a.data.as_ref().unwrap()["callback"], true);
        // Outbound: the number called.
        assert_eq!(e.caller_number.as_deref(), Some("+14155550199"));
        let vm = json!({"call_analysis": {"in_voicemail": true}});
        let Message::Analyzed { event: e } = message(
            Platform::Retell,
            &json!({"event": "call_analyzed", "call": call(vm)}),
        ) else {
            panic!("analyzed")
        };
        assert_eq!(e.ended_reason, Some(EndedReason::Voicemail));
        assert_eq!(e.platform_ended_reason.as_deref(), Some("user_hangup"));
    }

    #[test]
    fn other_events_are_ignored_and_broken_ones_name_the_field() {
        assert_eq!(
            message(
                Platform::Retell,
                &json!({"event": "call_started", "call": call(json!({}))})
            ),
            Message::Ignored {
                kind: "call_started".into()
            }
        );
        let err = Platform::Retell
            .read(
                json!({"event": "call_ended", "call": {"agent_id": "a"}})
                    .to_string()
                    .as_bytes(),
                1 << 20,
            )
            .unwrap_err();
        assert_eq!(err.field, "call.call_id");
        let err = Platform::Retell
            .read(br#"{"call": {}}"#, 1 << 20)
            .unwrap_err();
        assert_eq!(err.field, "event");
    }
}
