//! Agent config updates (JSON merge patch, RFC 7396, that keeps stored secrets when a
//! patch carries the redacted placeholders back) and redaction of stored jobs. Pure, so
//! the CLI can share them.

use aftercall_core::config::REDACTED;
use aftercall_core::{AgentConfig, ConfigError};
use aftercall_queue::JobRecord;
use serde_json::{Map, Value};

/// What `AgentConfig::redacted` shows in place of a webhook header value.
pub use aftercall_core::config::REDACTED_HEADER;

const ACTIONS_PATH: &str = "voice_tools.post_call_follow_up.actions";

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes a key, anything
/// else (arrays included) replaces the target whole.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        unreachable!("target was just made an object")
    };
    for (key, value) in patch {
        if value.is_null() {
            t.shift_remove(key);
        } else {
            merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The config an agent has after `patch` is applied to `stored` (none: a new agent),
/// validated. Redacted placeholders in webhook secrets and headers are replaced by the
/// stored values of the same webhook (same URL), so GET, edit, PATCH keeps secrets; a
/// placeholder with no stored value to stand for is an error, never stored.
pub fn apply_agent_patch(
    stored: Option<&AgentConfig>,
    patch: &Value,
) -> Result<AgentConfig, ConfigError> {
    let stored_json = stored.map(|c| serde_json::to_value(c).expect("a config always serializes"));
    let mut doc = stored_json
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    merge_patch(&mut doc, patch);
    // serde would also read a struct from an array, by position; a config is an object.
    if !doc.is_object() {
        return Err(ConfigError {
            path: "body".into(),
            message: "must be a JSON object".into(),
        });
    }
    restore_redacted(&mut doc, stored_json.as_ref())?;
    AgentConfig::from_value(doc)
}

fn actions(doc: &Value) -> Option<&Vec<Value>> {
    doc.pointer("/voice_tools/post_call_follow_up/actions")?
        .as_array()
}

fn restore_redacted(doc: &mut Value, stored: Option<&Value>) -> Result<(), ConfigError> {
    let stored_actions = stored.and_then(actions).cloned().unwrap_or_default();
    let Some(list) = doc
        .pointer_mut("/voice_tools/post_call_follow_up/actions")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for (i, action) in list.iter_mut().enumerate() {
        if action.get("type").and_then(Value::as_str) != Some("webhook") {
            continue;
        }
        let url = action
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string);
        // The stored webhook this one stands for: same position, else the only other
        // one with the same URL. A different URL never inherits secrets: that would let
        // an edit send them somewhere new.
        let same_url = |a: &&Value| {
            a.get("type").and_then(Value::as_str) == Some("webhook")
                && url.is_some()
                && a.get("url").and_then(Value::as_str) == url.as_deref()
        };
        let source = stored_actions.get(i).filter(|a| same_url(a)).or_else(|| {
            let mut matches = stored_actions.iter().filter(|a| same_url(a));
            match (matches.next(), matches.next()) {
                (Some(a), None) => Some(a),
                _ => None,
            }
        });
        let path = |field: &str| format!("{ACTIONS_PATH}[{i}].{field}");
        let missing = |field: String| {
            ConfigError {
            path: field,
            message: "is the redacted placeholder, but no stored webhook with this url has that value; send the value itself".into(),
        }
        };
        match action.get_mut("secret") {
            Some(Value::String(s)) if s == REDACTED => {
                *s = stored_secret(source, 0).ok_or_else(|| missing(path("secret")))?;
            }
            Some(Value::Array(items)) => {
                for (j, item) in items.iter_mut().enumerate() {
                    if item.as_str() == Some(REDACTED) {
                        *item = Value::String(
                            stored_secret(source, j)
                                .ok_or_else(|| missing(format!("{}[{j}]", path("secret"))))?,
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(Value::Object(headers)) = action.get_mut("headers") {
            for (name, value) in headers.iter_mut() {
                if value.as_str() == Some(REDACTED_HEADER) {
                    let old = source
                        .and_then(|s| s.pointer(&format!("/headers/{}", escape_pointer(name))))
                        .and_then(Value::as_str);
                    *value = Value::String(
                        old.ok_or_else(|| missing(path(&format!("headers.{name}"))))?
                            .to_string(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// The `j`th stored secret of a webhook (a single secret is number 0).
fn stored_secret(source: Option<&Value>, j: usize) -> Option<String> {
    let s = source?.get("secret")?;
    let v = match s {
        Value::String(one) if j == 0 => one,
        Value::Array(many) => many.get(j)?.as_str()?,
        _ => return None,
    };
    Some(v.to_string())
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

pub use aftercall_queue::redact_job;

/// A stored job record with secrets blanked (shared with the CLI).
pub fn redact_record(r: JobRecord) -> JobRecord {
    r.redacted()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SECRET2: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn rfc7396_examples() {
        // RFC 7396, Appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            let before = target.clone();
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "{before} + {patch}");
        }
    }

    #[test]
    fn merge_keeps_key_order() {
        let mut t = json!({"a":1,"b":2,"c":3});
        merge_patch(&mut t, &json!({"b":null,"d":4}));
        assert_eq!(t.to_string(), r#"{"a":1,"c":3,"d":4}"#);
    }

    fn stored() -> AgentConfig {
        AgentConfig::from_value(json!({"name":"Acme","voice_tools":{"post_call_follow_up":{"enabled":true,"actions":[
            {"type":"sms","template":"Hi"},
            {"type":"webhook","url":"https://crm.example/a","secret":SECRET,"headers":{"X-Api-Key":"k-123"}},
            {"type":"webhook","url":"https://crm.example/b","secret":[SECRET, SECRET2]}
        ]}}}))
        .unwrap()
    }

    fn webhook(c: &AgentConfig, i: usize) -> aftercall_core::config::WebhookAction {
        match &c.follow_up().unwrap().actions[i] {
            aftercall_core::Action::Webhook(w) => w.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_field_flips_and_the_rest_stays() {
        let c = apply_agent_patch(
            Some(&stored()),
            &json!({"voice_tools":{"post_call_follow_up":{"enabled":false}}}),
        )
        .unwrap();
        assert!(!c.follow_up().unwrap().enabled);
        assert_eq!(
            c.follow_up().unwrap().actions,
            stored().follow_up().unwrap().actions
        );
        assert_eq!(c.name.as_deref(), Some("Acme"));
    }

    #[test]
    fn redacted_round_trip_keeps_secrets_even_when_reordered() {
        let mut shown = serde_json::to_value(stored().redacted()).unwrap();
        // Edit what was read back: move the webhooks around and add an action.
        let actions = shown
            .pointer_mut("/voice_tools/post_call_follow_up/actions")
            .unwrap()
            .as_array_mut()
            .unwrap();
        actions.swap(1, 2);
        actions.push(json!({"type":"sms","template":"Bye"}));
        let c = apply_agent_patch(Some(&stored()), &shown).unwrap();
        assert_eq!(webhook(&c, 1).secret, webhook(&stored(), 2).secret);
        assert_eq!(webhook(&c, 2).secret, webhook(&stored(), 1).secret);
        assert_eq!(webhook(&c, 2).headers["X-Api-Key"], "k-123");
        assert_eq!(c.follow_up().unwrap().actions.len(), 4);
    }

    #[test]
    fn placeholders_never_reach_storage() {
        let p = "voice_tools.post_call_follow_up.actions";
        let mut moved = serde_json::to_value(stored().redacted()).unwrap();
        moved["voice_tools"]["post_call_follow_up"]["actions"][1]["url"] =
            json!("https://evil.example/a");
        let cases = [
            (
                None,
                json!({"voice_tools":{"post_call_follow_up":{"actions":[{"type":"webhook","url":"https://crm.example/a","secret":REDACTED}]}}}),
                format!("{p}[0].secret"),
            ),
            (Some(stored()), moved, format!("{p}[1].secret")),
            (
                Some(stored()),
                json!({"voice_tools":{"post_call_follow_up":{"actions":[{"type":"webhook","url":"https://crm.example/b","secret":[SECRET, REDACTED, REDACTED]}]}}}),
                format!("{p}[0].secret[2]"),
            ),
            (
                Some(stored()),
                json!({"voice_tools":{"post_call_follow_up":{"actions":[{"type":"webhook","url":"https://crm.example/a","headers":{"X-Other":REDACTED_HEADER}}]}}}),
                format!("{p}[0].headers.X-Other"),
            ),
        ];
        for (stored, patch, want) in cases {
            let err = apply_agent_patch(stored.as_ref(), &patch).unwrap_err();
            assert_eq!(err.path, want, "{patch}");
        }
    }

    #[test]
    fn validation_errors_come_from_core() {
        let err = apply_agent_patch(
            Some(&stored()),
            &json!({"voice_tools":{"post_call_follow_up":{"enabled":"yes"}}}),
        )
        .unwrap_err();
        assert_eq!(err.path, "voice_tools.post_call_follow_up.enabled");
        // Not read by position, as serde would read a struct from an array.
        let err = apply_agent_patch(None, &json!(["not", "an", "object"])).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.message.as_str()),
            ("body", "must be a JSON object")
        );
        let err = apply_agent_patch(Some(&stored()), &json!(null)).unwrap_err();
        assert_eq!(err.path, "body");
    }

    #[test]
    fn core_redaction_uses_our_header_placeholder() {
        let shown = serde_json::to_value(stored().redacted()).unwrap();
        assert_eq!(
            shown.pointer("/voice_tools/post_call_follow_up/actions/1/headers/X-Api-Key"),
            Some(&json!(REDACTED_HEADER))
        );
    }

    #[test]
    fn stored_jobs_are_redacted() {
        let mut job = json!({"kind":"action","action":{"type":"webhook","url":"https://x.example","secret":[SECRET],"headers":{"A":"b"}},"event":{"call_id":"c"}});
        redact_job(&mut job);
        let text = job.to_string();
        assert!(!text.contains(SECRET) && !text.contains("\"b\""), "{text}");
        let mut job = json!({"kind":"action","action":{"type":"webhook","url":"https://x.example","secret":SECRET}});
        redact_job(&mut job);
        assert_eq!(job["action"]["secret"], json!(REDACTED));
        let mut call = json!({"kind":"call_ended","event":{"call_id":"c"}});
        let before = call.clone();
        redact_job(&mut call);
        assert_eq!(call, before);
    }
}
