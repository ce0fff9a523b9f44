//! Where aftercall tells someone about the work itself, rather than doing it: a call's
//! completion callback (`on_complete`) and the operational alerts (`alerts`). A URL that
//! receives a signed JSON POST (Standard Webhooks, as the webhook action's), or, for
//! alerts to a Slack incoming webhook (`hooks.slack.com`), a Slack message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::validate::{check_header, check_secret, check_url};
use crate::config::{ConfigError, REDACTED_HEADER, Secrets, WebhookAction};

#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub url: String,
    /// Standard Webhooks signing secret(s), `whsec_<base64>`; several during rotation.
    pub secret: Option<Secrets>,
    /// Extra request headers (e.g. an API key the receiver expects).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `standard` (signed JSON) or `slack` (`{"text": …}`); unset: `slack` for a
    /// `hooks.slack.com` URL, else `standard`. Alerts only: a completion callback is
    /// always signed JSON.
    pub format: Option<TargetFormat>,
}

/// How a target's messages are written.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetFormat {
    Standard,
    Slack,
}

impl std::str::FromStr for TargetFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "standard" => Ok(TargetFormat::Standard),
            "slack" => Ok(TargetFormat::Slack),
            _ => Err(format!("`{s}` is not `standard` or `slack`")),
        }
    }
}

impl Target {
    /// Checks the URL, the secrets and the headers; errors name `path.<field>`.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let p = |field: &str| format!("{path}.{field}");
        check_url(&self.url).map_err(|m| ConfigError::new(p("url"), m))?;
        for secret in self.secret.iter().flat_map(Secrets::all) {
            check_secret(secret).map_err(|m| ConfigError::new(p("secret"), m))?;
        }
        for (k, v) in &self.headers {
            check_header(k, v).map_err(|m| ConfigError::new(p(&format!("headers.{k}")), m))?;
        }
        Ok(())
    }

    /// Whether messages to this target are Slack messages: its `format`, or by default
    /// whether the URL is a Slack incoming webhook's.
    pub fn is_slack(&self) -> bool {
        match self.format {
            Some(f) => f == TargetFormat::Slack,
            None => url::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.host_str().map(|h| h == "hooks.slack.com"))
                .unwrap_or(false),
        }
    }

    /// The same target with its secrets and header values blanked, for display.
    pub fn redact(&mut self) {
        if let Some(s) = &mut self.secret {
            *s = s.redacted();
        }
        for v in self.headers.values_mut() {
            *v = REDACTED_HEADER.into();
        }
    }

    /// The webhook a job sends to reach this target: its URL, secrets and headers, the
    /// body chosen by the sender.
    pub fn webhook(&self) -> WebhookAction {
        WebhookAction {
            url: self.url.clone(),
            include_transcript: false,
            include_recording_url: false,
            secret: self.secret.clone(),
            headers: self.headers.clone(),
            delay: None,
            when: None,
            expires_after: None,
            method: None,
            body: None,
        }
    }
}
