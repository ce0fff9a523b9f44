//! How to reach Redis and name the queue: [`QueueConfig`], read from `AFTERCALL_*`
//! settings.

use std::time::Duration;

use aftercall_core::RetryPolicy;

use crate::ALLOW_EVICTION;

/// How to reach Redis and name the queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `redis://[user:pass@]host:port/db`, or `rediss://` for TLS.
    pub url: String,
    /// The hash tag every key of the queue shares: `{prefix}:ready`, ...
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// The retry budget given to new jobs.
    pub retry: RetryPolicy,
    pub max_event_bytes: usize,
    /// Talk to a Redis Cluster (also implied by several comma-separated URLs).
    pub cluster: bool,
    /// After an enqueue, wait until this many replicas have the write (`WAIT`), so an
    /// acknowledged event survives the loss of its primary. 0 = don't wait.
    pub wait_replicas: u32,
    /// Run on a Redis whose `maxmemory-policy` is not `noeviction` (with a warning)
    /// instead of refusing to ([`server`]'s reasons).
    pub allow_eviction: bool,
    /// AFTERCALL_ENCRYPTION_KEYS: seal job data and agent configs at rest (crypt.rs).
    pub encryption: Option<crate::Keyring>,
    /// AFTERCALL_PARTITIONS: the hash tags the queue's calls spread over (partition.rs);
    /// every producer, worker and ops tool of a queue must use the same number.
    pub partitions: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "aftercall".into(),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_event_bytes: aftercall_core::DEFAULT_MAX_EVENT_BYTES,
            cluster: false,
            wait_replicas: 0,
            allow_eviction: false,
            encryption: None,
            partitions: 1,
        }
    }
}

impl QueueConfig {
    /// AFTERCALL_REDIS_URL, AFTERCALL_QUEUE_PREFIX, AFTERCALL_MAX_EVENT_BYTES,
    /// AFTERCALL_REDIS_TIMEOUT and the retry policy settings.
    pub fn from_settings(
        s: &aftercall_core::settings::Settings,
    ) -> Result<QueueConfig, aftercall_core::settings::SettingError> {
        let d = QueueConfig::default();
        let prefix = s.string("AFTERCALL_QUEUE_PREFIX").unwrap_or(d.prefix);
        if prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
            return Err(aftercall_core::settings::SettingError {
                name: "AFTERCALL_QUEUE_PREFIX".into(),
                message: "must not contain braces or spaces".into(),
            });
        }
        let partitions = s.parse_or("AFTERCALL_PARTITIONS", d.partitions)?;
        if !(1..=crate::MAX_PARTITIONS).contains(&partitions) {
            return Err(aftercall_core::settings::SettingError {
                name: "AFTERCALL_PARTITIONS".into(),
                message: format!("must be from 1 to {}", crate::MAX_PARTITIONS),
            });
        }
        Ok(QueueConfig {
            partitions,
            url: s.string("AFTERCALL_REDIS_URL").unwrap_or(d.url),
            prefix,
            connect_timeout: d.connect_timeout,
            response_timeout: s.duration_or("AFTERCALL_REDIS_TIMEOUT", d.response_timeout)?,
            retry: s.retry_policy()?,
            max_event_bytes: s.parse_or("AFTERCALL_MAX_EVENT_BYTES", d.max_event_bytes)?,
            cluster: s.bool_or("AFTERCALL_REDIS_CLUSTER", d.cluster)?,
            wait_replicas: s.parse_or("AFTERCALL_REDIS_WAIT_REPLICAS", d.wait_replicas)?,
            allow_eviction: s.bool_or(ALLOW_EVICTION, d.allow_eviction)?,
            encryption: match s.string("AFTERCALL_ENCRYPTION_KEYS") {
                Some(v) if !v.trim().is_empty() => {
                    Some(crate::Keyring::parse(&v).map_err(|message| {
                        aftercall_core::settings::SettingError {
                            name: "AFTERCALL_ENCRYPTION_KEYS".into(),
                            message,
                        }
                    })?)
                }
                _ => None,
            },
        })
    }
}
