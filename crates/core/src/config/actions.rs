//! The per-action config structs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Declares an action's config struct: its own fields, with the fields every action
/// shares (`delay`, `when`, `expires_after`) standing where `..timing` does. A macro, not
/// `#[serde(flatten)]`, which does not work with `deny_unknown_fields`.
macro_rules! action {
    (
        $(#[$attr:meta])*
        pub struct $name:ident {
            $($(#[$fattr:meta])* pub $field:ident: $ty:ty,)*
            ..timing
            $($(#[$lattr:meta])* pub $lfield:ident: $lty:ty,)*
        }
    ) => {
        $(#[$attr])*
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fattr])* pub $field: $ty,)*
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
            $($(#[$lattr])* pub $lfield: $lty,)*
        }
    };
}

action! {
    /// A message to a Slack channel through an incoming webhook.
    #[serde_with::skip_serializing_none]
    pub struct SlackAction {
        /// The incoming webhook's URL (`https://hooks.slack.com/services/…`).
        pub url: String,
        /// The message's text template (also the notification's fallback with `blocks`).
        pub text: String,
        /// A template producing Slack Block Kit blocks (a JSON array), checked at config time
        /// against the sample call.
        pub blocks: Option<String>,
        ..timing
    }
}

action! {
    #[serde_with::skip_serializing_none]
    pub struct EmailAction {
        /// A fixed address or a template such as `{{caller_email}}`.
        pub to: String,
        pub subject: Option<String>,
        /// Name of a built-in template (`call_summary`, `confirmation`, `follow_up`).
        pub body_template: Option<String>,
        /// An inline body template (plain text; the HTML part is derived from it).
        pub body: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub cc: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub bcc: Vec<String>,
        pub reply_to: Option<String>,
        pub from: Option<String>,
        ..timing
    }
}

action! {
    #[serde_with::skip_serializing_none]
    pub struct SmsAction {
        /// Recipient template; defaults to the caller's number.
        pub to: Option<String>,
        /// The message template.
        pub template: String,
        ..timing
    }
}

action! {
    #[serde_with::skip_serializing_none]
    pub struct WebhookAction {
        pub url: String,
        #[serde(default)]
        pub include_transcript: bool,
        #[serde(default)]
        pub include_recording_url: bool,
        /// Standard Webhooks signing secret(s), `whsec_<base64>`; several during rotation.
        pub secret: Option<Secrets>,
        /// Extra request headers (e.g. an API key the receiver expects).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub headers: BTreeMap<String, String>,
        ..timing
        /// POST (the default), PUT or PATCH.
        pub method: Option<WebhookMethod>,
        /// A template producing the request's JSON body, sent instead of the standard payload
        /// (`{{summary|tojson}}` writes a value as JSON). Checked at config time: it must
        /// render to JSON for the sample call.
        pub body: Option<String>,
    }
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

    /// The same shape with every secret replaced by [`REDACTED`](super::REDACTED).
    pub fn redacted(&self) -> Secrets {
        match self {
            Secrets::One(_) => Secrets::One(super::REDACTED.into()),
            Secrets::Many(v) => Secrets::Many(v.iter().map(|_| super::REDACTED.into()).collect()),
        }
    }
}

action! {
    #[serde_with::skip_serializing_none]
    pub struct TaskAction {
        pub provider: TaskProvider,
        /// Title template.
        pub title: Option<String>,
        /// Description template.
        pub description: Option<String>,
        /// Linear team id, Jira project key, Asana project gid or GitHub `owner/repo`.
        pub project: Option<String>,
        pub assignee: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub labels: Vec<String>,
        pub due_in_days: Option<u32>,
        ..timing
    }
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
