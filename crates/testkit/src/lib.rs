//! What the tests (and the worker's `demo`, a default feature) run against: a supervised
//! `redis-server` (installed from Debian's packages when missing), a queue on its own
//! Redis ([`TestQueue`]), an HTTP receiver that records what it gets and answers as
//! scripted, an HTTP client for an API on a socket ([`Http`]), and action jobs for the
//! executors' tests ([`action_job`]), and a Redis Cluster of such servers ([`Cluster`]). Not linked into a worker built without `demo`.

mod actions;
mod cluster;
mod http;
mod receiver;
mod redis_server;
mod test_queue;

pub use actions::{action_job, outcome_kind};
pub use cluster::{Cluster, ClusterOptions};
pub use http::{Http, http_client};
pub use receiver::{Received, Receiver, Reply};
pub use redis_server::{RedisOptions, RedisServer, ensure_redis_server, free_port, plain_url};
pub use test_queue::TestQueue;

/// The API tokens the tests configure, one per scope.
pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const INGEST: &str = "ingest-token-0123456789abcdef";
pub const READ: &str = "read-token-0123456789abcdef";
