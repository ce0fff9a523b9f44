//! Local stand-ins for the embedded default and the tests: a supervised `redis-server`
//! (installed from Debian's packages when missing) and an HTTP receiver that records
//! what it gets and answers as scripted.

mod receiver;
mod redis_server;

pub use receiver::{Received, Receiver, Reply};
pub use redis_server::{RedisOptions, RedisServer, ensure_redis_server, free_port};
