use super::*;

pub const SEED_BODY: &str = r#"{
"voice_tools": {
  "post_call_follow_up": {
    "enabled": true,
    "actions": [
      {
        "type": "sms",
        "template": "Thanks for calling {agent_name}! Your reference number is {call_id}."
      },
      {
        "type": "webhook",
        "url": "https://your-crm.com/api/call-completed",
        "include_transcript": true,
        "include_recording_url": true
      },
      {
        "type": "email",
        "to": "{caller_email}",
        "subject": "Your call summary — {date}",
        "body_template": "call_summary"
      }
    ]
  }
}
  }"#;

#[test]
fn webhook_bodies_are_templates_of_json_and_methods_are_named() {
    let p = "voice_tools.post_call_follow_up.actions[1]";
    let ok = with_action(
        r#"{"type":"webhook","url":"https://crm.example/calls","method":"PUT","body":"{\"name\": {{caller_name|tojson}}, \"summary\": {{ summary | tojson }}, \"secs\": {{duration_seconds}}}"}"#,
    );
    let cfg = AgentConfig::parse(ok.as_bytes()).unwrap();
    let Some(Action::Webhook(w)) = cfg.follow_up().map(|f| &f.actions[1]) else {
        panic!("a webhook")
    };
    assert_eq!(w.method, Some(WebhookMethod::Put));
    for (action, want) in [
        (
            r#"{"type":"webhook","url":"https://x.example","body":"{\"name\": {{caller_name}}}"}"#,
            format!("{p}.body: does not render to JSON for the sample call"),
        ),
        (
            r#"{"type":"webhook","url":"https://x.example","body":"{\"a\": {{nope|tojson}}}"}"#,
            format!("{p}.body: unknown variable `nope`"),
        ),
        (
            r#"{"type":"webhook","url":"https://x.example","method":"DELETE"}"#,
            format!("{p}: unknown variant `DELETE`"),
        ),
    ] {
        let e = AgentConfig::parse(with_action(action).as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e} (wanted {want})");
    }
}

#[test]
fn slack_actions_check_their_templates_and_blocks() {
    let p = "voice_tools.post_call_follow_up.actions[1]";
    let ok = with_action(
        r#"{"type":"slack","url":"https://hooks.slack.com/services/T/B/x","text":"Call from {caller_name}","blocks":"[{\"type\": \"section\", \"text\": {\"type\": \"mrkdwn\", \"text\": {{ summary|tojson }}}}]"}"#,
    );
    let cfg = AgentConfig::parse(ok.as_bytes()).unwrap();
    assert_eq!(cfg.follow_up().unwrap().actions[1].kind(), "slack");
    for (action, want) in [
        (
            r#"{"type":"slack","url":"https://hooks.slack.com/x","text":"Hi {{nope}}"}"#,
            format!("{p}.text: unknown variable `nope`"),
        ),
        (
            r#"{"type":"slack","url":"https://hooks.slack.com/x","text":"x","blocks":"{\"type\": \"section\"}"}"#,
            format!("{p}.blocks: must render to a JSON array"),
        ),
        (
            r#"{"type":"slack","url":"https://hooks.slack.com/x","text":"x","blocks":"[{{summary}}]"}"#,
            format!("{p}.blocks: does not render to JSON"),
        ),
        (
            r#"{"type":"slack","url":"not a url","text":"x"}"#,
            format!("{p}.url:"),
        ),
    ] {
        let e = AgentConfig::parse(with_action(action).as_bytes()).unwrap_err();
        assert!(e.to_string().starts_with(&want), "{e} (wanted {want})");
    }
}

#[test]
fn seed_body_parses() {
    let c = AgentConfig::parse(SEED_BODY.as_bytes()).unwrap();
    let f = c.follow_up().unwrap();
    assert!(f.enabled);
    let kinds: Vec<_> = f.actions.iter().map(Action::kind).collect();
    assert_eq!(kinds, ["sms", "webhook", "email"]);
}

fn with_action(action: &str) -> String {
    format!(
        r#"{{"voice_tools":{{"post_call_follow_up":{{"enabled":true,"actions":[{{"type":"webhook","url":"https://x.example/h"}},{action}]}}}}}}"#
    )
}

#[test]
fn errors_carry_the_field_path() {
    let p = "voice_tools.post_call_follow_up.actions[1]";
    let cases: Vec<(String, String)> = vec![
        (
            with_action(r#"{"type":"fax"}"#),
            format!("{p}.type: unknown variant `fax`"),
        ),
        (
            with_action(r#"{"type":"webhook","url":"not a url"}"#),
            format!("{p}.url:"),
        ),
        (
            with_action(r#"{"type":"webhook","url":"ftp://x.example"}"#),
            format!("{p}.url:"),
        ),
        (
            with_action(r#"{"type":"sms","template":"Hi {{nope}}"}"#),
            format!("{p}.template: unknown variable `nope`"),
        ),
        (
            with_action(r#"{"type":"sms","template":"Hi {{ unclosed"}"#),
            format!("{p}.template:"),
        ),
        (
            with_action(r#"{"type":"email","to":"{caller_email}","body_template":"nope"}"#),
            format!("{p}.body_template: unknown template `nope`"),
        ),
        (
            with_action(r#"{"type":"email","to":"not-an-address"}"#),
            format!("{p}.to:"),
        ),
        (
            with_action(r#"{"type":"email","to":"{{caller_email}}","subject":"{{ secret_key }}"}"#),
            format!("{p}.subject: unknown variable `secret_key`"),
        ),
        (
            with_action(r#"{"type":"webhook","url":"https://x.example","colour":1}"#),
            format!("{p}.colour: unknown field `colour`"),
        ),
        (
            with_action(r#"{"type":"webhook","url":"https://x.example","secret":"abc"}"#),
            format!("{p}.secret:"),
        ),
        (
            with_action(r#"{"type":"sms","template":"x","delay":"soon"}"#),
            format!("{p}.delay:"),
        ),
        (
            with_action(r#"{"type":"sms","template":"x","when":"duration_seconds >"}"#),
            format!("{p}.when: condition syntax error"),
        ),
        (
            with_action(r#"{"type":"sms","template":"x","when":"secret_key == 1"}"#),
            format!("{p}.when: unknown variable `secret_key`"),
        ),
        (
            with_action(r#"{"type":"sms","template":"x","expires_after":"soon"}"#),
            format!("{p}.expires_after:"),
        ),
        (
            with_action(r#"{"type":"task","provider":"github","project":"nope"}"#),
            format!("{p}.project:"),
        ),
        (
            r#"{"voice_tools":{"post_call_follow_up":{"enabled":"yes"}}}"#.into(),
            "voice_tools.post_call_follow_up.enabled: invalid type".into(),
        ),
        (
            r#"{"nmae":"x"}"#.into(),
            "nmae: unknown field `nmae`".into(),
        ),
    ];
    for (body, want) in cases {
        let err = AgentConfig::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with(&want), "{body}\n got: {err}\nwant: {want}");
    }
}

#[test]
fn redaction_hides_secrets() {
    let body = with_action(
        r#"{"type":"webhook","url":"https://x.example","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}"#,
    );
    let c = AgentConfig::parse(body.as_bytes()).unwrap();
    let shown = serde_json::to_string(&c.redacted()).unwrap();
    assert!(!shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert!(shown.contains(REDACTED));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
    assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
    assert_eq!(parse_duration("30").unwrap().as_secs(), 30);
    assert!(parse_duration("1w").is_err());
}
