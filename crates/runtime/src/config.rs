//! The worker's configuration: one typed struct, with its defaults, read from
//! `AFTERCALL_*` settings.

use std::time::Duration;

use aftercall_actions::ActionsConfig;
use aftercall_core::settings::{SettingError, Settings};
use aftercall_queue::QueueConfig;

use crate::{breakers, limits};

/// Everything a worker process needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue: QueueConfig,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a fetched job stays leased without renewal.
    pub lease: Duration,
    /// How long in-flight jobs get to finish after a shutdown signal.
    pub grace: Duration,
    /// How long finished jobs and call ids are kept for status queries and idempotency.
    pub retention: Duration,
    /// How long a settled job keeps its personal content (AFTERCALL_PAYLOAD_RETENTION);
    /// then only ids, states and outcomes stay, for `retention`.
    pub payload_retention: Duration,
    /// How long a dead letter keeps its payload (AFTERCALL_DEAD_RETENTION), unless
    /// replayed or purged before: then it is dropped, logged, counted and audited.
    pub dead_retention: Duration,
    pub actions: ActionsConfig,
    /// Unique per process start, so a restart never collides with an old instance's leases.
    pub worker_id: String,
    /// Per-destination limits shared by all replicas.
    pub limits: limits::Limits,
    /// Frequency caps per contact and channel, across agents (docs/rules.md).
    pub caps: ContactCaps,
    /// Per-destination circuit breakers, their state shared by all replicas.
    pub breakers: breakers::Breakers,
    /// How long a job may be held by its destination's health or a pause before it is
    /// dead-lettered ("destination unavailable since T"), counted from its creation.
    pub max_hold: Duration,
    /// Operational alerts (AFTERCALL_ALERTS_*): where, and the dead-letter threshold.
    pub alerts: AlertsConfig,
}

/// Where the operational alerts go beside each agent's own `alerts` target.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// AFTERCALL_ALERTS_URL (and AFTERCALL_ALERTS_SECRET): every alert goes there.
    pub target: Option<aftercall_core::target::Target>,
    /// AFTERCALL_ALERTS_DEAD_THRESHOLD: one alert when the dead letters waiting go above
    /// it (again once they have come back to it); 0: none.
    pub dead_threshold: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            target: None,
            dead_threshold: 100,
        }
    }
}

impl AlertsConfig {
    fn from_settings(s: &Settings) -> Result<AlertsConfig, SettingError> {
        let d = AlertsConfig::default();
        let target = match s
            .string("AFTERCALL_ALERTS_URL")
            .filter(|u| !u.trim().is_empty())
        {
            None => None,
            Some(url) => {
                let t = aftercall_core::target::Target {
                    url,
                    secret: s
                        .string("AFTERCALL_ALERTS_SECRET")
                        .filter(|v| !v.trim().is_empty())
                        .map(aftercall_core::config::Secrets::One),
                    headers: Default::default(),
                    format: s.parse("AFTERCALL_ALERTS_FORMAT")?,
                };
                t.validate("alerts").map_err(|e| SettingError {
                    name: match e.path.as_str() {
                        "alerts.secret" => "AFTERCALL_ALERTS_SECRET".into(),
                        _ => "AFTERCALL_ALERTS_URL".into(),
                    },
                    message: e.message,
                })?;
                Some(t)
            }
        };
        Ok(AlertsConfig {
            target,
            dead_threshold: s.parse_or("AFTERCALL_ALERTS_DEAD_THRESHOLD", d.dead_threshold)?,
        })
    }
}

/// AFTERCALL_FREQUENCY_CAP_SMS and AFTERCALL_FREQUENCY_CAP_EMAIL, e.g. `1/24h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContactCaps {
    pub sms: Option<aftercall_queue::Cap>,
    pub email: Option<aftercall_queue::Cap>,
}

impl ContactCaps {
    fn from_settings(s: &Settings) -> Result<ContactCaps, SettingError> {
        let cap = |name: &str| {
            s.string(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    aftercall_queue::Cap::parse(&v).map_err(|message| SettingError {
                        name: name.into(),
                        message,
                    })
                })
                .transpose()
        };
        Ok(ContactCaps {
            sms: cap("AFTERCALL_FREQUENCY_CAP_SMS")?,
            email: cap("AFTERCALL_FREQUENCY_CAP_EMAIL")?,
        })
    }

    pub fn for_channel(&self, c: aftercall_core::contact::Channel) -> Option<aftercall_queue::Cap> {
        match c {
            aftercall_core::contact::Channel::Sms => self.sms,
            aftercall_core::contact::Channel::Email => self.email,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queue: QueueConfig::default(),
            concurrency: 128,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(20),
            retention: Duration::from_secs(7 * 86_400),
            payload_retention: Duration::from_secs(86_400),
            dead_retention: Duration::from_secs(30 * 86_400),
            actions: ActionsConfig::default(),
            worker_id: new_worker_id(),
            limits: limits::Limits::default(),
            caps: ContactCaps::default(),
            breakers: breakers::Breakers::default(),
            max_hold: Duration::from_secs(3 * 86_400),
            alerts: AlertsConfig::default(),
        }
    }
}

impl WorkerConfig {
    /// Reads every worker setting from `AFTERCALL_*` variables (see README, Configuration).
    pub fn from_env() -> Result<WorkerConfig, SettingError> {
        let get = |k: &str| std::env::var(k).ok();
        Self::from_settings(&Settings::new(&get))
    }

    pub fn from_settings(s: &Settings) -> Result<WorkerConfig, SettingError> {
        let d = WorkerConfig::default();
        let bad = |name: &str, message: String| SettingError {
            name: name.into(),
            message,
        };
        let mut http = d.actions.http.clone();
        if let Some(list) = s.string("AFTERCALL_ALLOW_CIDRS") {
            http.allow = list
                .split(',')
                .filter(|c| !c.trim().is_empty())
                .map(|c| c.parse().map_err(|e| bad("AFTERCALL_ALLOW_CIDRS", e)))
                .collect::<Result<_, _>>()?;
        }
        http.https_only = s.bool_or("AFTERCALL_HTTPS_ONLY", http.https_only)?;
        http.timeout = s.duration_or("AFTERCALL_HTTP_TIMEOUT", http.timeout)?;
        let concurrency: usize = s.parse_or("AFTERCALL_CONCURRENCY", d.concurrency)?;
        if concurrency == 0 {
            return Err(bad("AFTERCALL_CONCURRENCY", "must be at least 1".into()));
        }
        let lease = s.duration_or("AFTERCALL_LEASE", d.lease)?;
        if lease < Duration::from_millis(300) {
            return Err(bad("AFTERCALL_LEASE", "must be at least 300ms".into()));
        }
        let setting = |e: aftercall_actions::ActionsError| match e {
            aftercall_actions::ActionsError::Config { setting, message } => bad(setting, message),
            aftercall_actions::ActionsError::Setting(e) => e,
            other => bad("actions", other.to_string()),
        };
        let actions = ActionsConfig {
            http,
            email: aftercall_actions::email::EmailConfig::from_settings(s).map_err(setting)?,
            sms: aftercall_actions::sms::SmsConfig::from_settings(s).map_err(setting)?,
            task: aftercall_actions::task::TaskConfig::from_settings(s).map_err(setting)?,
            outbox_dir: aftercall_actions::outbox::dir(s),
        };
        Ok(WorkerConfig {
            queue: QueueConfig::from_settings(s)?,
            concurrency,
            lease,
            grace: s.duration_or("AFTERCALL_GRACE", d.grace)?,
            retention: s.duration_or("AFTERCALL_RETENTION", d.retention)?,
            payload_retention: s.duration_or("AFTERCALL_PAYLOAD_RETENTION", d.payload_retention)?,
            dead_retention: s.duration_or("AFTERCALL_DEAD_RETENTION", d.dead_retention)?,
            actions,
            worker_id: s.string("AFTERCALL_WORKER_ID").unwrap_or(d.worker_id),
            limits: limits::Limits::parse(&s.string("AFTERCALL_LIMITS").unwrap_or_default())?,
            caps: ContactCaps::from_settings(s)?,
            breakers: match s.string("AFTERCALL_BREAKERS") {
                Some(spec) => breakers::Breakers::parse(&spec)?,
                None => d.breakers,
            },
            max_hold: s.duration_or("AFTERCALL_MAX_HOLD", d.max_hold)?,
            alerts: AlertsConfig::from_settings(s)?,
        })
    }
}

/// `<host>-<pid>-<random>`: unique per process start.
pub fn new_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}
