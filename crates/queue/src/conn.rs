//! One connection type for a single Redis or a Redis Cluster. Every queue operation
//! goes through it; cluster routing follows the first key, and all keys of a queue share
//! one hash tag, so each script and pipeline lands on the node that owns the queue.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to the queue's Redis: shared, cheap to clone, reconnecting.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    /// A dedicated connection (blocking waits).
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
        }
    }
}

/// How to open connections. Built once per process, so the size difference between the
/// variants costs nothing worth a box.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Client {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl Client {
    /// `urls` holds one URL, or several cluster nodes; `cluster` forces cluster mode.
    pub fn open(
        urls: &[&str],
        cluster: bool,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Client> {
        if cluster || urls.len() > 1 {
            let c = ClusterClientBuilder::new(urls.to_vec())
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                .retries(3)
                .build()?;
            Ok(Client::Cluster(c))
        } else {
            Ok(Client::Single(redis::Client::open(urls[0])?))
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Client::Cluster(_))
    }

    /// The shared connection.
    pub async fn shared(
        &self,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Conn> {
        match self {
            Client::Single(c) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config(c.clone(), cfg).await?,
                ))
            }
            Client::Cluster(c) => Ok(Conn::Cluster(c.get_async_connection().await?)),
        }
    }

    /// A connection of its own, without a response timeout, for blocking commands.
    pub async fn dedicated(&self, connect_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Client::Single(c) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(None);
                Ok(Conn::Plain(
                    c.get_multiplexed_async_connection_with_config(&cfg).await?,
                ))
            }
            Client::Cluster(c) => Ok(Conn::Cluster(c.get_async_connection().await?)),
        }
    }
}

/// Sends a key-less command (WAIT) to the primary that owns `slot`.
pub async fn on_slot_primary(conn: &mut Conn, slot: Option<u16>, cmd: Cmd) -> RedisResult<Value> {
    match (conn, slot) {
        (Conn::Cluster(c), Some(slot)) => {
            c.route_command(
                cmd,
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                    slot,
                    SlotAddr::Master,
                ))),
            )
            .await
        }
        (c, _) => cmd.query_async(c).await,
    }
}
