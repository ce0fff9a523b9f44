//! The queue's one error type.

use redis::RedisError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable { url: String, source: RedisError },
    #[error("Redis error: {0}")]
    Redis(#[from] RedisError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unexpected reply from Redis: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error("{0}")]
    Invalid(String),
    /// A bulk replay or purge with no filter and without `all`: it would touch every
    /// dead letter.
    #[error(
        "an empty filter would match every dead letter; give a filter, or `all` to mean every one"
    )]
    EmptyFilter,
    /// Fewer replicas than `wait_replicas` confirmed a write in time: it may not survive
    /// a failover, so it is not reported as stored.
    #[error("{0}")]
    Unreplicated(String),
    /// Redis may evict keys: refused at connect ([`RedisFacts::eviction_problem`]).
    #[error("{0}")]
    Evicting(String),
    /// A bulk enqueue stopped part-way: the first `enqueued` events of the batch were
    /// stored (new or duplicate); the one after them was not, and those after it are
    /// not known to be. Enqueue is idempotent, so sending the same batch again finishes
    /// it.
    #[error("{source}; {enqueued} of {total} events were enqueued")]
    Incomplete {
        enqueued: usize,
        total: usize,
        source: Box<QueueError>,
    },
}

impl QueueError {
    /// True for errors that a retry after a reconnect may cure.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Incomplete { source, .. } => source.is_transient(),
            e => matches!(
                e,
                QueueError::Unreachable { .. } | QueueError::Redis(_) | QueueError::Unreplicated(_)
            ),
        }
    }

    /// True when Redis refused a write because it is out of memory (`maxmemory` reached
    /// under `noeviction`): a retry helps only once memory is freed.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            QueueError::Incomplete { source, .. } => source.is_out_of_memory(),
            QueueError::Redis(e) => is_oom(e),
            _ => false,
        }
    }
}

/// Redis's `OOM` error, on its own or as the reason a `MULTI` was discarded
/// (`EXECABORT ... OOM command not allowed ...`).
fn is_oom(e: &RedisError) -> bool {
    e.clone()
        .into_server_errors()
        .is_some_and(|errs| errs.iter().any(|(_, e)| e.code() == "OOM"))
}
