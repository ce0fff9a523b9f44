//! Agent configuration: the seed's `voice_tools.post_call_follow_up` body plus an agent
//! `name`, parsed and validated when it is set, so bad config never reaches delivery.

use serde::{Deserialize, Serialize};

mod actions;
#[cfg(test)]
mod tests;
pub(crate) mod validate;

pub use actions::*;
pub use validate::{check_address, check_blocks, check_json_body};

/// One agent's stored configuration.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(transform = crate::schema::timezone_alias))]
pub struct AgentConfig {
    pub name: Option<String>,
    /// How `{{date}}` is written: a strftime format (default `%Y-%m-%d`).
    pub date_format: Option<String>,
    /// Where the call date is shown: a UTC offset such as `+02:00` or a time zone such as
    /// `Europe/Berlin` (default UTC). Also accepted as `timezone`.
    #[serde(default, alias = "timezone")]
    pub utc_offset: Option<String>,
    /// Default sender for e-mail actions of this agent.
    pub email_from: Option<String>,
    #[serde(default)]
    pub voice_tools: VoiceTools,
}

#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceTools {
    pub post_call_follow_up: Option<PostCallFollowUp>,
}

#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCallFollowUp {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub actions: Vec<Action>,
    /// How long a call from a platform that sends its analysis later (Retell's
    /// `call_analyzed`) waits for it before fanning out anyway, e.g. `5m`. Unset: the call
    /// fans out at once, and a later analysis is stored with it.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub wait_for_analysis: Option<String>,
    /// No SMS or e-mail inside this window; one due inside it waits for its end.
    pub quiet_hours: Option<crate::quiet::QuietHours>,
    /// One signed POST per call once every action has settled, listing each action's
    /// outcome (docs/destinations.md).
    pub on_complete: Option<crate::target::Target>,
    /// Where this agent's dead letters are announced, beside `AFTERCALL_ALERTS_URL`.
    pub alerts: Option<crate::target::Target>,
}

/// The longest `wait_for_analysis`: a call's follow-up should not wait longer for it.
pub const MAX_WAIT_FOR_ANALYSIS: std::time::Duration = std::time::Duration::from_secs(86_400);

impl PostCallFollowUp {
    /// `wait_for_analysis`, once validated.
    pub fn wait_for_analysis(&self) -> Option<std::time::Duration> {
        self.wait_for_analysis
            .as_deref()
            .and_then(|s| parse_duration(s).ok())
            .filter(|d| !d.is_zero())
    }
}

/// One follow-up action, tagged by `type` as in the seed.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Email(EmailAction),
    Sms(SmsAction),
    Webhook(WebhookAction),
    Task(TaskAction),
    Slack(SlackAction),
}

impl Action {
    /// The action's `type` as written in config (`email`, `sms`, `webhook`, `task`).
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Email(_) => "email",
            Action::Sms(_) => "sms",
            Action::Webhook(_) => "webhook",
            Action::Slack(_) => "slack",
            Action::Task(_) => "task",
        }
    }

    fn delay_str(&self) -> Option<&str> {
        match self {
            Action::Email(a) => a.delay.as_deref(),
            Action::Sms(a) => a.delay.as_deref(),
            Action::Webhook(a) => a.delay.as_deref(),
            Action::Slack(a) => a.delay.as_deref(),
            Action::Task(a) => a.delay.as_deref(),
        }
    }

    /// The action's `when` condition, as written.
    pub fn when(&self) -> Option<&str> {
        match self {
            Action::Email(a) => a.when.as_deref(),
            Action::Sms(a) => a.when.as_deref(),
            Action::Webhook(a) => a.when.as_deref(),
            Action::Slack(a) => a.when.as_deref(),
            Action::Task(a) => a.when.as_deref(),
        }
    }

    fn expires_after_str(&self) -> Option<&str> {
        match self {
            Action::Email(a) => a.expires_after.as_deref(),
            Action::Sms(a) => a.expires_after.as_deref(),
            Action::Webhook(a) => a.expires_after.as_deref(),
            Action::Slack(a) => a.expires_after.as_deref(),
            Action::Task(a) => a.expires_after.as_deref(),
        }
    }

    /// How long after the call's end this action may still start, once validated.
    pub fn expires_after(&self) -> Option<std::time::Duration> {
        self.expires_after_str()
            .and_then(|s| parse_duration(s).ok())
    }

    /// The optional delay after the call before this action first runs.
    pub fn delay(&self) -> Option<std::time::Duration> {
        self.delay_str().and_then(|s| parse_duration(s).ok())
    }
}

/// Parses `250ms`, `90s`, `15m`, `2h`, `1d` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{s}` is not a duration like 250ms, 90s, 15m, 2h or 1d"));
    }
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 2h or 1d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` is not a duration like 90s, 15m, 2h or 1d")),
    };
    let secs = n
        .checked_mul(per)
        .ok_or_else(|| format!("`{s}` is too long"))?;
    Ok(std::time::Duration::from_secs(secs))
}

/// A config validation error: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

const ACTIONS_PATH: &str = "voice_tools.post_call_follow_up.actions";

/// The value shown in place of a secret in anything read back.
pub const REDACTED: &str = "whsec_********";

/// The value shown in place of a custom header's value in anything read back.
pub const REDACTED_HEADER: &str = "********";

impl AgentConfig {
    /// Parses and validates a config body (the seed's shape).
    pub fn parse(bytes: &[u8]) -> Result<AgentConfig, ConfigError> {
        // serde would read a struct from a JSON array by position; a config is an object.
        if bytes.trim_ascii_start().first() == Some(&b'[') {
            return Err(ConfigError::new("body", "must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let cfg: AgentConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let (path, msg) = crate::describe_json_error(e);
            ConfigError::new(if path.is_empty() { "body".into() } else { path }, msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_value(v: serde_json::Value) -> Result<AgentConfig, ConfigError> {
        Self::parse(&serde_json::to_vec(&v).expect("a JSON value always serializes"))
    }

    pub fn follow_up(&self) -> Option<&PostCallFollowUp> {
        self.voice_tools.post_call_follow_up.as_ref()
    }

    /// A copy safe to show: every signing secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> AgentConfig {
        let mut c = self.clone();
        if let Some(f) = c.voice_tools.post_call_follow_up.as_mut() {
            for t in f.on_complete.iter_mut().chain(f.alerts.iter_mut()) {
                t.redact();
            }
            for a in &mut f.actions {
                if let Action::Webhook(w) = a {
                    if let Some(s) = &w.secret {
                        w.secret = Some(s.redacted());
                    }
                    for v in w.headers.values_mut() {
                        *v = REDACTED_HEADER.into();
                    }
                }
            }
        }
        c
    }
}
