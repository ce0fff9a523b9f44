//! The create-task action: renders a title and description and creates an issue or task
//! in Linear, Jira Cloud, Asana or GitHub Issues. Credentials and base URLs come from the
//! worker's settings only, never from the event, and are never logged.

mod asana;
mod github;
mod jira;
mod linear;

use aftercall_core::config::{TaskAction, TaskProvider};
use aftercall_core::template;
use aftercall_core::{ActionJob, Outcome};
use chrono::{DateTime, Days, FixedOffset, Utc};
use reqwest::header::HeaderMap;

use aftercall_core::settings::Settings;

use crate::settings::{base_url, invalid};
use crate::{ActionsError, HttpConfig, http};

pub const DEFAULT_TITLE: &str = "Follow up: call {{call_id}}{% if caller_name %} with {{caller_name}}{% elif caller_number %} with {{caller_number}}{% endif %}";
pub const DEFAULT_DESCRIPTION: &str = "{% if summary %}{{summary}}\n\n{% endif %}{% if details %}Details: {{details}}\n\n{% endif %}\
Call {{call_id}} with {{agent_name}} on {{date}}{% if duration %} ({{duration}} min){% endif %}.\
{% if caller_name %}\nCaller: {{caller_name}}{% endif %}{% if caller_number %}\nNumber: {{caller_number}}{% endif %}\
{% if caller_email %}\nE-mail: {{caller_email}}{% endif %}{% if recording_url %}\nRecording: {{recording_url}}{% endif %}\n";

/// The longest title sent (Jira's summary limit; GitHub and Linear allow about as much).
const TITLE_MAX_CHARS: usize = 255;

pub const LINEAR_URL: &str = "https://api.linear.app/graphql";
pub const ASANA_URL: &str = "https://app.asana.com";
pub const GITHUB_URL: &str = "https://api.github.com";

/// Task provider settings. A provider without credentials fails its jobs permanently,
/// naming the missing setting.
#[derive(Clone)]
pub struct TaskConfig {
    pub linear_api_key: Option<String>,
    /// The GraphQL endpoint.
    pub linear_url: String,
    /// The site, e.g. `https://acme.atlassian.net`.
    pub jira_url: Option<String>,
    pub jira_email: Option<String>,
    pub jira_api_token: Option<String>,
    pub jira_issue_type: String,
    pub asana_token: Option<String>,
    pub asana_url: String,
    /// Used when the action names no project.
    pub asana_workspace: Option<String>,
    pub github_token: Option<String>,
    pub github_url: String,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            linear_api_key: None,
            linear_url: LINEAR_URL.into(),
            jira_url: None,
            jira_email: None,
            jira_api_token: None,
            jira_issue_type: "Task".into(),
            asana_token: None,
            asana_url: ASANA_URL.into(),
            asana_workspace: None,
            github_token: None,
            github_url: GITHUB_URL.into(),
        }
    }
}

/// Shows which credentials are set, never their values.
impl std::fmt::Debug for TaskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("TaskConfig")
            .field("linear_api_key", &set(&self.linear_api_key))
            .field("linear_url", &self.linear_url)
            .field("jira_url", &self.jira_url)
            .field("jira_email", &self.jira_email)
            .field("jira_api_token", &set(&self.jira_api_token))
            .field("jira_issue_type", &self.jira_issue_type)
            .field("asana_token", &set(&self.asana_token))
            .field("asana_url", &self.asana_url)
            .field("asana_workspace", &self.asana_workspace)
            .field("github_token", &set(&self.github_token))
            .field("github_url", &self.github_url)
            .finish()
    }
}

impl TaskConfig {
    /// Reads the `AFTERCALL_LINEAR_*`, `AFTERCALL_JIRA_*`, `AFTERCALL_ASANA_*` and
    /// `AFTERCALL_GITHUB_*` settings; an error names the variable.
    pub fn from_settings(s: &Settings) -> Result<Self, ActionsError> {
        let d = TaskConfig::default();
        let url = |name: &'static str, default: String| -> Result<String, ActionsError> {
            match s.string(name) {
                Some(v) => base_url(name, &v),
                None => Ok(default),
            }
        };
        let cfg = TaskConfig {
            linear_api_key: s.string("AFTERCALL_LINEAR_API_KEY"),
            linear_url: url("AFTERCALL_LINEAR_URL", d.linear_url)?,
            jira_url: s
                .string("AFTERCALL_JIRA_URL")
                .map(|v| base_url("AFTERCALL_JIRA_URL", &v))
                .transpose()?,
            jira_email: s.string("AFTERCALL_JIRA_EMAIL"),
            jira_api_token: s.string("AFTERCALL_JIRA_API_TOKEN"),
            jira_issue_type: s
                .string("AFTERCALL_JIRA_ISSUE_TYPE")
                .unwrap_or(d.jira_issue_type),
            asana_token: s.string("AFTERCALL_ASANA_TOKEN"),
            asana_url: url("AFTERCALL_ASANA_URL", d.asana_url)?,
            asana_workspace: s.string("AFTERCALL_ASANA_WORKSPACE"),
            github_token: s.string("AFTERCALL_GITHUB_TOKEN"),
            github_url: url("AFTERCALL_GITHUB_URL", d.github_url)?,
        };
        // Jira needs all three; half a configuration is a mistake worth stopping for.
        let jira = [
            ("AFTERCALL_JIRA_URL", cfg.jira_url.is_some()),
            ("AFTERCALL_JIRA_EMAIL", cfg.jira_email.is_some()),
            ("AFTERCALL_JIRA_API_TOKEN", cfg.jira_api_token.is_some()),
        ];
        if jira.iter().any(|(_, set)| *set)
            && let Some((missing, _)) = jira.iter().find(|(_, set)| !*set)
        {
            return Err(invalid(
                missing,
                "is required when any AFTERCALL_JIRA_* setting is set",
            ));
        }
        if let Some(e) = &cfg.jira_email {
            aftercall_core::config::check_address(e)
                .map_err(|m| invalid("AFTERCALL_JIRA_EMAIL", m))?;
        }
        Ok(cfg)
    }
}

/// What every provider gets: rendered, cleaned and ready to send.
#[derive(Debug, Clone)]
pub struct Draft {
    pub job_id: String,
    pub title: String,
    pub description: String,
    pub project: Option<String>,
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    /// `YYYY-MM-DD`.
    pub due: Option<String>,
}

pub struct TaskExecutor {
    client: reqwest::Client,
    http: HttpConfig,
    cfg: TaskConfig,
}

impl TaskExecutor {
    pub fn new(
        client: reqwest::Client,
        http: HttpConfig,
        cfg: &TaskConfig,
    ) -> Result<Self, ActionsError> {
        Ok(TaskExecutor {
            client,
            http,
            cfg: cfg.clone(),
        })
    }

    pub async fn execute(&self, job_id: &str, job: &ActionJob, action: &TaskAction) -> Outcome {
        let draft = match draft(job_id, job, action, Utc::now()) {
            Ok(d) => d,
            Err(o) => return o,
        };
        let ctx = Ctx {
            client: &self.client,
            http: &self.http,
        };
        let outcome = match action.provider {
            TaskProvider::Linear => linear::create(&ctx, &self.cfg, &draft).await,
            TaskProvider::Jira => jira::create(&ctx, &self.cfg, &draft).await,
            TaskProvider::Asana => asana::create(&ctx, &self.cfg, &draft).await,
            TaskProvider::Github => github::create(&ctx, &self.cfg, &draft).await,
        };
        tracing::debug!(provider = ?action.provider, delivered = matches!(outcome, Outcome::Delivered { .. }), "task provider answered");
        outcome
    }
}

/// Renders the title and description and computes the due date.
pub fn draft(
    job_id: &str,
    job: &ActionJob,
    action: &TaskAction,
    now: DateTime<Utc>,
) -> Result<Draft, Outcome> {
    let vars = job.vars(now);
    let render = |src: &str, field: &str| {
        template::render(src, &vars, false).map_err(|e| Outcome::permanent(format!("{field}: {e}")))
    };
    let mut title = one_line(&render(
        action.title.as_deref().unwrap_or(DEFAULT_TITLE),
        "title",
    )?);
    if title.is_empty() {
        title = one_line(&render(DEFAULT_TITLE, "title")?);
    }
    if title.chars().count() > TITLE_MAX_CHARS {
        title = title.chars().take(TITLE_MAX_CHARS - 1).collect::<String>() + "…";
    }
    let description = render(
        action.description.as_deref().unwrap_or(DEFAULT_DESCRIPTION),
        "description",
    )?
    .trim()
    .to_string();
    let due = action.due_in_days.map(|days| due_date(job, days, now));
    Ok(Draft {
        job_id: job_id.to_string(),
        title,
        description,
        project: action
            .project
            .clone()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty()),
        assignee: action
            .assignee
            .clone()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty()),
        labels: action
            .labels
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect(),
        due,
    })
}

/// The call's date (end, else start, else now) plus `days`, in the agent's UTC offset, so
/// every retry computes the same date.
fn due_date(job: &ActionJob, days: u32, now: DateTime<Utc>) -> String {
    let zone = job
        .utc_offset
        .as_deref()
        .and_then(|o| template::parse_zone(o).ok())
        .unwrap_or_else(|| {
            template::Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset is valid"))
        });
    let when = job
        .event
        .ended_at
        .or(job.event.started_at)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(now);
    let local = chrono::NaiveDate::parse_from_str(&zone.format(when, "%Y-%m-%d"), "%Y-%m-%d")
        .expect("a formatted date parses");
    local
        .checked_add_days(Days::new(u64::from(days)))
        .unwrap_or(local)
        .format("%Y-%m-%d")
        .to_string()
}

fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c == ' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the providers share: the guarded client and its settings.
struct Ctx<'a> {
    client: &'a reqwest::Client,
    http: &'a HttpConfig,
}

/// A provider's answer, read back (bounded).
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

/// The largest response body read back from a task provider.
const BODY_LIMIT: usize = 16 * 1024;

impl Ctx<'_> {
    /// Checks the URL against the SSRF guard, sends, and reads the reply. `Err` is the
    /// outcome of a request that never got an answer.
    async fn send(
        &self,
        url: &reqwest::Url,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply, Outcome> {
        http::check_url(url, self.http)?;
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = http::read_body(resp, BODY_LIMIT).await;
                Ok(Reply {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => Err(http::classify_error(&e)),
        }
    }

    /// [`Ctx::send`] to a provider whose failures take the default classification:
    /// a 2xx reply's status and JSON body (`Null` when it is not JSON), or the outcome.
    async fn send_json(
        &self,
        provider: &str,
        url: &reqwest::Url,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, serde_json::Value), Outcome> {
        let reply = self.send(url, req).await?;
        if !(200..300).contains(&reply.status) {
            return Err(failed(provider, &reply));
        }
        let v = serde_json::from_str(&reply.body).unwrap_or_default();
        Ok((reply.status, v))
    }
}

/// A permanent failure for a provider whose settings are missing.
fn not_configured(provider: &str, missing: &[&str]) -> Outcome {
    Outcome::permanent(format!(
        "task provider {provider} is not configured: set {}",
        missing.join(", ")
    ))
}

/// `Delivered` with a detail, keeping the HTTP status.
fn delivered(status: u16, detail: String) -> Outcome {
    Outcome::Delivered {
        status: Some(status),
        detail: Some(detail),
    }
}

/// The default classification for a non-2xx reply, with the provider named.
fn failed(provider: &str, reply: &Reply) -> Outcome {
    http::classify(reply.status, &reply.headers, &reply.body)
        .map_error(|error| format!("{provider}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercall_core::CallEvent;
    use aftercall_core::config::Action;

    fn job(event: &str, offset: Option<&str>) -> ActionJob {
        let action = TaskAction {
            provider: TaskProvider::Github,
            title: None,
            description: None,
            project: Some("o/r".into()),
            assignee: None,
            labels: vec![],
            due_in_days: None,
            delay: None,
            when: None,
            expires_after: None,
        };
        let event = CallEvent::parse(event.as_bytes(), 1 << 20).unwrap();
        ActionJob {
            agent_name: Some("Acme".into()),
            utc_offset: offset.map(str::to_string),
            ..aftercall_testkit::action_job(event, Action::Task(action))
        }
    }

    fn action(j: &ActionJob) -> TaskAction {
        match &j.action {
            Action::Task(t) => t.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn default_title_and_description() {
        let now = Utc::now();
        let cases = [
            (
                r#"{"call_id":"c1","agent_id":"a","caller_number":"+14155551234","metadata":{"caller_name":"Jo\nSmith"}}"#,
                "Follow up: call c1 with Jo Smith",
            ),
            (
                r#"{"call_id":"c1","agent_id":"a","caller_number":"+14155551234"}"#,
                "Follow up: call c1 with +14155551234",
            ),
            (r#"{"call_id":"c1","agent_id":"a"}"#, "Follow up: call c1"),
        ];
        for (event, want) in cases {
            let j = job(event, None);
            assert_eq!(draft("j", &j, &action(&j), now).unwrap().title, want);
        }
        let j = job(
            r#"{"call_id":"c1","agent_id":"a","summary":"Wants a refund","duration_seconds":61,"details":"order 7"}"#,
            None,
        );
        let d = draft("j", &j, &action(&j), now).unwrap();
        assert!(
            d.description
                .starts_with("Wants a refund\n\nDetails: order 7\n\nCall c1 with Acme on "),
            "{}",
            d.description
        );
        assert!(d.description.contains("(2 min)"), "{}", d.description);
    }

    #[test]
    fn due_dates_follow_the_call_and_offset() {
        let j = job(
            r#"{"call_id":"c","agent_id":"a","ended_at":"2026-03-15T23:30:00Z"}"#,
            Some("+02:00"),
        );
        assert_eq!(due_date(&j, 3, Utc::now()), "2026-03-19");
        let j = job(
            r#"{"call_id":"c","agent_id":"a","ended_at":"2026-03-15T23:30:00Z"}"#,
            None,
        );
        assert_eq!(due_date(&j, 0, Utc::now()), "2026-03-15");
    }

    #[test]
    fn long_titles_are_cut() {
        let j = job(r#"{"call_id":"c","agent_id":"a"}"#, None);
        let mut a = action(&j);
        a.title = Some("x".repeat(400));
        assert_eq!(
            draft("j", &j, &a, Utc::now())
                .unwrap()
                .title
                .chars()
                .count(),
            TITLE_MAX_CHARS
        );
    }

    use crate::with_settings as env;

    #[test]
    fn from_env_names_settings_and_hides_secrets() {
        let c = env(
            &[
                ("AFTERCALL_GITHUB_TOKEN", "ghp_secret"),
                ("AFTERCALL_LINEAR_URL", "http://127.0.0.1:9/graphql"),
            ],
            TaskConfig::from_settings,
        )
        .unwrap();
        assert_eq!(c.github_url, GITHUB_URL);
        assert!(!format!("{c:?}").contains("ghp_secret"));
        for (pairs, setting) in [
            (
                vec![("AFTERCALL_JIRA_EMAIL", "me@example.com")],
                "AFTERCALL_JIRA_URL",
            ),
            (
                vec![
                    ("AFTERCALL_JIRA_URL", "https://x.atlassian.net"),
                    ("AFTERCALL_JIRA_EMAIL", "me@example.com"),
                ],
                "AFTERCALL_JIRA_API_TOKEN",
            ),
            (
                vec![("AFTERCALL_GITHUB_URL", "ftp://x")],
                "AFTERCALL_GITHUB_URL",
            ),
            (vec![("AFTERCALL_ASANA_URL", "nope")], "AFTERCALL_ASANA_URL"),
        ] {
            let err = env(&pairs, TaskConfig::from_settings).unwrap_err();
            assert!(
                matches!(&err, ActionsError::Config { setting: s, .. } if *s == setting),
                "{setting}: {err}"
            );
        }
    }
}
