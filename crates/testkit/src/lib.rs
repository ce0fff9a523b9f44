//! What the tests (and the worker's `demo`, a default feature) run against: a supervised
//! `redis-server` (installed from Debian's packages when missing), a queue on its own
//! Redis ([`TestQueue`]), and an HTTP receiver that records what it gets and answers as
//! scripted. Not linked into a worker built without `demo`.

mod receiver;
mod redis_server;
mod test_queue;

pub use receiver::{Received, Receiver, Reply};
pub use redis_server::{RedisOptions, RedisServer, ensure_redis_server, free_port};
pub use test_queue::TestQueue;
