//! Agent configuration: the seed's `voice_tools.post_call_follow_up` body plus an agent
//! `name`, parsed and validated when it is set, so bad config never reaches delivery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::template;

/// One agent's stored configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(transform = crate::schema::timezone_alias))]
pub struct AgentConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How `{{date}}` is written: a strftime format (default `%Y-%m-%d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
    /// Where the call date is shown: a UTC offset such as `+02:00` or a time zone such as
    /// `Europe/Berlin` (default UTC). Also accepted as `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "timezone")]
    pub utc_offset: Option<String>,
    /// Default sender for e-mail actions of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_from: Option<String>,
    #[serde(default)]
    pub voice_tools: VoiceTools,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceTools {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_call_follow_up: Option<PostCallFollowUp>,
}

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub wait_for_analysis: Option<String>,
    /// No SMS or e-mail inside this window; one due inside it waits for its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<crate::quiet::QuietHours>,
    /// One signed POST per call once every action has settled, listing each action's
    /// outcome (docs/destinations.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<crate::target::Target>,
    /// Where this agent's dead letters are announced, beside `AFTERCALL_ALERTS_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A message to a Slack channel through an incoming webhook.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackAction {
    /// The incoming webhook's URL (`https://hooks.slack.com/services/…`).
    pub url: String,
    /// The message's text template (also the notification's fallback with `blocks`).
    pub text: String,
    /// A template producing Slack Block Kit blocks (a JSON array), checked at config time
    /// against the sample call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub delay: Option<String>,
    /// A condition over the call's variables (docs/rules.md); unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the call's end the action may still start, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub expires_after: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailAction {
    /// A fixed address or a template such as `{{caller_email}}`.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Name of a built-in template (`call_summary`, `confirmation`, `follow_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_template: Option<String>,
    /// An inline body template (plain text; the HTML part is derived from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub delay: Option<String>,
    /// A condition over the call's variables (docs/rules.md); unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the call's end the action may still start, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub expires_after: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsAction {
    /// Recipient template; defaults to the caller's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The message template.
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub delay: Option<String>,
    /// A condition over the call's variables (docs/rules.md); unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the call's end the action may still start, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub expires_after: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAction {
    pub url: String,
    #[serde(default)]
    pub include_transcript: bool,
    #[serde(default)]
    pub include_recording_url: bool,
    /// Standard Webhooks signing secret(s), `whsec_<base64>`; several during rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secrets>,
    /// Extra request headers (e.g. an API key the receiver expects).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub delay: Option<String>,
    /// A condition over the call's variables (docs/rules.md); unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the call's end the action may still start, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub expires_after: Option<String>,
    /// POST (the default), PUT or PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<WebhookMethod>,
    /// A template producing the request's JSON body, sent instead of the standard payload
    /// (`{{summary|tojson}}` writes a value as JSON). Checked at config time: it must
    /// render to JSON for the sample call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A webhook's HTTP method.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookMethod {
    #[default]
    Post,
    Put,
    Patch,
}

impl WebhookMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookMethod::Post => "POST",
            WebhookMethod::Put => "PUT",
            WebhookMethod::Patch => "PATCH",
        }
    }
}

/// The call templates are checked against at config time: the dashboard's sample call.
const SAMPLE_CALL: &str = include_str!("../../dashboard/assets/sample-call.json");

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

/// One secret or several (rotation).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Secrets {
    One(String),
    Many(Vec<String>),
}

impl Secrets {
    pub fn all(&self) -> Vec<&str> {
        match self {
            Secrets::One(s) => vec![s.as_str()],
            Secrets::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }

    /// The same shape with every secret replaced by [`REDACTED`].
    pub fn redacted(&self) -> Secrets {
        match self {
            Secrets::One(_) => Secrets::One(REDACTED.into()),
            Secrets::Many(v) => Secrets::Many(v.iter().map(|_| REDACTED.into()).collect()),
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskAction {
    pub provider: TaskProvider,
    /// Title template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Description template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Linear team id, Jira project key, Asana project gid or GitHub `owner/repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub delay: Option<String>,
    /// A condition over the call's variables (docs/rules.md); unset: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// How long after the call's end the action may still start, e.g. `1d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = crate::schema::DURATION)))]
    pub expires_after: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskProvider {
    Linear,
    Jira,
    Asana,
    Github,
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

#[cfg(test)]
mod tests {
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
                with_action(
                    r#"{"type":"email","to":"{{caller_email}}","subject":"{{ secret_key }}"}"#,
                ),
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
}
