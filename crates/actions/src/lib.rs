//! Action executors: the only place aftercall talks to SMTP servers and HTTP APIs.
//! Each executor turns one action job into an [`Outcome`], classifying failures where
//! the error is typed (never by matching message strings).

pub mod email;
pub mod http;
pub mod outbox;
pub mod preview;
mod settings;
pub mod slack;
pub mod sms;
pub mod task;
pub mod webhook;

use std::path::PathBuf;
use std::time::Duration;

use aftercall_core::config::Action;
use aftercall_core::{ActionJob, Outcome};

pub use http::{Cidr, HttpConfig};

/// Everything the executors need from the worker's configuration.
#[derive(Debug, Clone)]
pub struct ActionsConfig {
    pub http: HttpConfig,
    pub email: email::EmailConfig,
    pub sms: sms::SmsConfig,
    pub task: task::TaskConfig,
    /// Where e-mail and SMS go when no SMTP server or SMS provider is configured.
    pub outbox_dir: PathBuf,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            http: HttpConfig::default(),
            email: email::EmailConfig::default(),
            sms: sms::SmsConfig::default(),
            task: task::TaskConfig::default(),
            outbox_dir: PathBuf::from(".aftercall/outbox"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("invalid setting {setting}: {message}")]
    Config {
        setting: &'static str,
        message: String,
    },
    /// A setting `aftercall_core::settings` could not read.
    #[error("invalid setting {0}")]
    Setting(#[from] aftercall_core::settings::SettingError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("building the webhook client: {0}")]
    Webhook(String),
}

/// All executors, built once per worker process and shared by every job.
pub struct Executors {
    pub webhook: webhook::WebhookExecutor,
    pub email: email::EmailExecutor,
    pub sms: sms::SmsExecutor,
    pub task: task::TaskExecutor,
    pub slack: slack::SlackExecutor,
}

impl Executors {
    pub fn new(cfg: &ActionsConfig) -> Result<Executors, ActionsError> {
        let client = http::client(&cfg.http)?;
        Ok(Executors {
            webhook: webhook::WebhookExecutor::new(
                webhook::client::Client::new(cfg.http.clone()).map_err(ActionsError::Webhook)?,
                cfg.http.clone(),
            ),
            email: email::EmailExecutor::new(&cfg.email, &cfg.outbox_dir)?,
            sms: sms::SmsExecutor::new(
                client.clone(),
                cfg.http.clone(),
                &cfg.sms,
                &cfg.outbox_dir,
            )?,
            slack: slack::SlackExecutor::new(client.clone(), cfg.http.clone()),
            task: task::TaskExecutor::new(client, cfg.http.clone(), &cfg.task)?,
        })
    }

    /// Runs one attempt of an action job. `job_id` is stable across retries and is what
    /// receivers de-duplicate on.
    pub async fn execute(&self, job_id: &str, attempt: u32, job: &ActionJob) -> Outcome {
        // Each kind's future boxed on its own: unboxed, every job's future would be as
        // large as the largest kind's (an SMTP exchange's), and moved whole.
        match &job.action {
            Action::Webhook(a) => Box::pin(self.webhook.execute(job_id, attempt, job, a)).await,
            Action::Email(a) => Box::pin(self.email.execute(job_id, job, a)).await,
            Action::Sms(a) => Box::pin(self.sms.execute(job_id, job, a)).await,
            Action::Task(a) => Box::pin(self.task.execute(job_id, job, a)).await,
            Action::Slack(a) => Box::pin(self.slack.execute(job, a)).await,
        }
    }
}

/// The destination an action job talks to, the unit of per-destination limits shared by
/// every replica: a webhook's host, `sms` (the configured sender), `smtp`, or
/// `task:<provider>`.
pub fn destination(job: &ActionJob) -> String {
    match &job.action {
        Action::Webhook(w) => http::parse_url(&w.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "webhook".into()),
        Action::Slack(s) => http::parse_url(&s.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "slack".into()),
        Action::Email(_) => "smtp".into(),
        Action::Sms(_) => "sms".into(),
        Action::Task(t) => format!(
            "task:{}",
            serde_json::to_value(t.provider)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    }
}

/// The person an SMS or e-mail action of this call reaches (its `to`, rendered and
/// written as opt-outs store it), for the contact rules (docs/rules.md); `None` for
/// other actions and for a recipient that renders empty or invalid (the executor then
/// skips or fails it as it always has).
pub fn contact(job: &ActionJob) -> Option<(aftercall_core::contact::Channel, String)> {
    use aftercall_core::contact::{Channel, normalize};
    let (channel, src) = match &job.action {
        Action::Sms(s) => (Channel::Sms, s.to.as_deref().unwrap_or(sms::DEFAULT_TO)),
        Action::Email(e) => (Channel::Email, e.to.as_str()),
        _ => return None,
    };
    let vars = job.vars(chrono::Utc::now());
    let to = aftercall_core::template::render(src, &vars, false).ok()?;
    normalize(channel, to.trim()).ok().map(|a| (channel, a))
}

/// Default timeout for one outbound request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ActionsError {
    /// The setting an error is about, if it is about one.
    pub fn setting(&self) -> Option<&str> {
        match self {
            ActionsError::Config { setting, .. } => Some(setting),
            ActionsError::Setting(e) => Some(&e.name),
            _ => None,
        }
    }
}

/// Runs `read` over settings from a fixed list, for the executors' `from_settings` tests.
#[cfg(test)]
pub(crate) fn with_settings<T>(
    pairs: &[(&str, &str)],
    read: impl FnOnce(&aftercall_core::settings::Settings) -> T,
) -> T {
    let m: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = move |k: &str| m.get(k).cloned();
    read(&aftercall_core::settings::Settings::new(&get))
}
