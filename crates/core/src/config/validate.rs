//! The checks serde cannot make: URLs, addresses, templates, durations.

use super::*;
use crate::template;

impl AgentConfig {
    /// Everything serde cannot check: URLs, addresses, templates, durations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(f) = &self.date_format {
            template::check_date_format(f).map_err(|m| ConfigError::new("date_format", m))?;
        }
        if let Some(o) = &self.utc_offset {
            template::parse_zone(o).map_err(|m| ConfigError::new("utc_offset", m))?;
        }
        if let Some(from) = &self.email_from {
            check_address(from).map_err(|m| ConfigError::new("email_from", m))?;
        }
        let Some(f) = self.follow_up() else {
            return Ok(());
        };
        if let Some(q) = &f.quiet_hours {
            q.validate().map_err(|(field, m)| {
                ConfigError::new(
                    format!("voice_tools.post_call_follow_up.quiet_hours.{field}"),
                    m,
                )
            })?;
        }
        if let Some(w) = &f.wait_for_analysis {
            let d = parse_duration(w).map_err(|m| {
                ConfigError::new("voice_tools.post_call_follow_up.wait_for_analysis", m)
            })?;
            if d > MAX_WAIT_FOR_ANALYSIS {
                return Err(ConfigError::new(
                    "voice_tools.post_call_follow_up.wait_for_analysis",
                    "is longer than 1d",
                ));
            }
        }
        for (i, action) in f.actions.iter().enumerate() {
            let p = |field: &str| format!("{ACTIONS_PATH}[{i}].{field}");
            if let Some(d) = action.delay_str() {
                parse_duration(d).map_err(|m| ConfigError::new(p("delay"), m))?;
            }
            if let Some(w) = action.when() {
                template::check_condition(w).map_err(|m| ConfigError::new(p("when"), m))?;
            }
            if let Some(e) = action.expires_after_str() {
                let d = parse_duration(e).map_err(|m| ConfigError::new(p("expires_after"), m))?;
                if d.is_zero() {
                    return Err(ConfigError::new(
                        p("expires_after"),
                        "must be longer than 0s",
                    ));
                }
            }
            match action {
                Action::Webhook(w) => {
                    check_url(&w.url).map_err(|m| ConfigError::new(p("url"), m))?;
                    if let Some(s) = &w.secret {
                        for secret in s.all() {
                            check_secret(secret).map_err(|m| ConfigError::new(p("secret"), m))?;
                        }
                    }
                    if let Some(body) = &w.body {
                        check_json_body(body).map_err(|m| ConfigError::new(p("body"), m))?;
                    }
                    for (k, v) in &w.headers {
                        check_header(k, v)
                            .map_err(|m| ConfigError::new(p(&format!("headers.{k}")), m))?;
                    }
                }
                Action::Slack(s) => {
                    check_url(&s.url).map_err(|m| ConfigError::new(p("url"), m))?;
                    template::check(&s.text).map_err(|m| ConfigError::new(p("text"), m))?;
                    if let Some(b) = &s.blocks {
                        check_blocks(b).map_err(|m| ConfigError::new(p("blocks"), m))?;
                    }
                }
                Action::Sms(s) => {
                    template::check(&s.template).map_err(|m| ConfigError::new(p("template"), m))?;
                    if let Some(to) = &s.to {
                        check_recipient(to, crate::event::is_e164, "an E.164 number")
                            .map_err(|m| ConfigError::new(p("to"), m))?;
                    }
                }
                Action::Email(e) => {
                    check_recipient(&e.to, |a| check_address(a).is_ok(), "an e-mail address")
                        .map_err(|m| ConfigError::new(p("to"), m))?;
                    for (name, list) in [("cc", &e.cc), ("bcc", &e.bcc)] {
                        for (j, a) in list.iter().enumerate() {
                            check_recipient(a, |a| check_address(a).is_ok(), "an e-mail address")
                                .map_err(|m| ConfigError::new(p(&format!("{name}[{j}]")), m))?;
                        }
                    }
                    for (name, v) in [("reply_to", &e.reply_to), ("from", &e.from)] {
                        if let Some(a) = v {
                            check_address(a).map_err(|m| ConfigError::new(p(name), m))?;
                        }
                    }
                    if let Some(s) = &e.subject {
                        template::check(s).map_err(|m| ConfigError::new(p("subject"), m))?;
                    }
                    match (&e.body_template, &e.body) {
                        (Some(_), Some(_)) => {
                            return Err(ConfigError::new(
                                p("body"),
                                "set either body_template or body, not both",
                            ));
                        }
                        (Some(name), None) => {
                            if template::builtin(name).is_none() {
                                return Err(ConfigError::new(
                                    p("body_template"),
                                    format!(
                                        "unknown template `{name}`; built-in templates are {}",
                                        template::BUILTIN_NAMES.join(", ")
                                    ),
                                ));
                            }
                        }
                        (None, Some(body)) => {
                            template::check(body).map_err(|m| ConfigError::new(p("body"), m))?;
                        }
                        (None, None) => {}
                    }
                }
                Action::Task(t) => {
                    for (name, v) in [("title", &t.title), ("description", &t.description)] {
                        if let Some(src) = v {
                            template::check(src).map_err(|m| ConfigError::new(p(name), m))?;
                        }
                    }
                    let needs_project = matches!(
                        t.provider,
                        TaskProvider::Linear | TaskProvider::Jira | TaskProvider::Github
                    );
                    match &t.project {
                        None if needs_project => {
                            return Err(ConfigError::new(
                                p("project"),
                                "is required for this provider",
                            ));
                        }
                        Some(repo)
                            if t.provider == TaskProvider::Github
                                && repo.split('/').filter(|s| !s.is_empty()).count() != 2 =>
                        {
                            return Err(ConfigError::new(
                                p("project"),
                                "must be `owner/repo` for github",
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(t) = &f.on_complete {
            t.validate("voice_tools.post_call_follow_up.on_complete")?;
            if t.format == Some(crate::target::TargetFormat::Slack) {
                return Err(ConfigError::new(
                    "voice_tools.post_call_follow_up.on_complete.format",
                    "a completion callback is always signed JSON (`standard`)",
                ));
            }
        }
        if let Some(t) = &f.alerts {
            t.validate("voice_tools.post_call_follow_up.alerts")?;
        }
        Ok(())
    }
}

/// The call templates are checked against at config time: the dashboard's sample call.
const SAMPLE_CALL: &str = include_str!("../../../dashboard/assets/sample-call.json");

/// Renders a webhook's `body` template for the sample call and checks it is JSON.
pub fn check_json_body(src: &str) -> Result<(), String> {
    sample_json(src).map(|_| ())
}

/// Renders a Slack action's `blocks` template for the sample call and checks it is a
/// JSON array.
pub fn check_blocks(src: &str) -> Result<(), String> {
    match sample_json(src)? {
        serde_json::Value::Array(_) => Ok(()),
        _ => Err("must render to a JSON array of blocks for the sample call".into()),
    }
}

/// A template rendered for the sample call, read as JSON.
fn sample_json(src: &str) -> Result<serde_json::Value, String> {
    template::check(src)?;
    let event = crate::CallEvent::parse(SAMPLE_CALL.as_bytes(), 1 << 20)
        .map_err(|e| format!("the sample call does not parse: {e}"))?;
    let vars = template::Vars::new(
        &event,
        Some("Acme Support"),
        &template::DateStyle::default(),
        chrono::Utc::now(),
    );
    let text = template::render(src, &vars, false)?;
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("does not render to JSON for the sample call ({e}): {text}"))
}

/// A custom request header: a name without `:` or spaces, neither part empty or with
/// control characters.
pub(crate) fn check_header(k: &str, v: &str) -> Result<(), String> {
    let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_control());
    if bad(k) || bad(v) || k.contains(':') || k.contains(' ') {
        return Err("is not a valid header".into());
    }
    Ok(())
}

pub(crate) fn check_url(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("`{u}` is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{u}` must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{u}` has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not allowed; use headers".into());
    }
    Ok(())
}

pub(crate) fn check_secret(s: &str) -> Result<(), String> {
    use base64_lite::decode_len_ok;
    let Some(b64) = s.strip_prefix("whsec_") else {
        return Err("must start with `whsec_` followed by base64".into());
    };
    if !decode_len_ok(b64) {
        return Err("is not `whsec_` followed by at least 24 base64 bytes".into());
    }
    Ok(())
}

mod base64_lite {
    /// True when `s` is standard base64 of at least 24 bytes (the key length we accept).
    pub fn decode_len_ok(s: &str) -> bool {
        let body = s.trim_end_matches('=');
        let valid = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        valid && s.len().is_multiple_of(4) && body.len() * 3 / 4 >= 24
    }
}

/// An address written by hand: one `@`, no spaces or control characters.
pub fn check_address(a: &str) -> Result<(), String> {
    let a = a.trim();
    let ok = match a.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !a.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ','
                })
                && !domain.contains('@')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{a}` is not an e-mail address"))
    }
}

/// A recipient is either a template (checked as one) or a literal checked by `valid`.
fn check_recipient(v: &str, valid: impl Fn(&str) -> bool, what: &str) -> Result<(), String> {
    let normalized = template::normalize(v);
    if normalized.contains("{{") {
        template::check(v)
    } else if valid(v.trim()) {
        Ok(())
    } else {
        Err(format!(
            "`{v}` is neither {what} nor a template such as {{{{caller_email}}}}"
        ))
    }
}
