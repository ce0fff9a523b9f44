//! The queue handle: connecting (and what is checked then), the shared connection, and
//! the plumbing every script call goes through.

use std::sync::Arc;
use std::time::Duration;

use redis::RedisError;

use crate::conn::{self, Conn};
use crate::enqueue::Singles;
use crate::keys::Keys;
use crate::{QueueConfig, QueueError, RedisFacts, redact_url, scripts};

/// The queue handle: cheap to clone, shared by producers, workers and ops.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: conn::Client,
    pub(crate) conn: Conn,
    /// The cluster slot of the queue's hash tag (cluster mode only).
    pub(crate) slot: Option<u16>,
    pub(crate) keys: Keys,
    pub(crate) scripts: scripts::Scripts,
    pub(crate) cfg: QueueConfig,
    /// Single-event enqueues from concurrent producers, sent together (`enqueue_one`).
    pub(crate) singles: std::sync::Mutex<Singles>,
    /// What is wrong with the Redis, as found at connect (`/readyz` repeats it).
    pub(crate) warnings: Vec<String>,
}

impl Queue {
    /// Connects and checks that Redis answers, failing fast with a clear message, and
    /// that it does not evict keys (unless `allow_eviction`). What else is wrong with it
    /// (no persistence, eviction allowed) is logged once and kept in
    /// [`Queue::warnings`].
    pub async fn connect(cfg: QueueConfig) -> Result<Queue, QueueError> {
        Self::open(cfg, true).await
    }

    /// [`Queue::connect`] for reading only (the CLI's `calls show`, `dlq list`, `stats`):
    /// an evicting Redis is not refused, so ops can still see what is there.
    pub async fn connect_to_read(cfg: QueueConfig) -> Result<Queue, QueueError> {
        Self::open(cfg, false).await
    }

    async fn open(cfg: QueueConfig, writes: bool) -> Result<Queue, QueueError> {
        let url = redact_url(&cfg.url);
        let unreachable = |source| QueueError::Unreachable {
            url: url.clone(),
            source,
        };
        let urls: Vec<&str> = cfg
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(QueueError::Invalid("AFTERCALL_REDIS_URL is empty".into()));
        }
        let client = conn::Client::open(
            &urls,
            cfg.cluster,
            cfg.connect_timeout,
            cfg.response_timeout,
        )
        .map_err(unreachable)?;
        let connect = client.shared(cfg.connect_timeout, cfg.response_timeout);
        let mut conn = tokio::time::timeout(cfg.connect_timeout + Duration::from_secs(1), connect)
            .await
            .map_err(|_| {
                unreachable(RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            })?
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let keys = Keys::new(&cfg.prefix);
        let slot = if client.is_cluster() {
            let s: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&keys.ready)
                .query_async(&mut conn)
                .await
                .map_err(unreachable)?;
            Some(s)
        } else {
            None
        };
        let facts = RedisFacts::read_at_connect(&mut conn, slot)
            .await
            .map_err(unreachable)?;
        if writes && facts.evicts() && !cfg.allow_eviction {
            return Err(QueueError::Evicting(facts.eviction_problem()));
        }
        let warnings = if writes {
            facts.warnings(cfg.allow_eviction)
        } else {
            Vec::new()
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let queue = Queue {
            inner: Arc::new(Inner {
                client,
                conn,
                slot,
                keys,
                scripts: scripts::Scripts::new(),
                cfg,
                singles: Default::default(),
                warnings,
            }),
        };
        queue.check_keys(writes).await?;
        Ok(queue)
    }

    /// What is wrong with the Redis, found at connect: eviction allowed on an evicting
    /// Redis, no persistence.
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Reads the Redis's policy and eviction count now (stats, metrics).
    pub async fn redis_facts(&self) -> Result<RedisFacts, QueueError> {
        Ok(RedisFacts::read(&mut self.conn(), self.inner.slot).await?)
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// A connection of its own for blocking waits (they would stall a shared one).
    pub async fn blocking_connection(&self) -> Result<Conn, QueueError> {
        Ok(self
            .inner
            .client
            .dedicated(self.inner.cfg.connect_timeout)
            .await?)
    }

    /// Waits until a producer or a finished job signals new work, or `timeout` passes.
    pub async fn wait_for_work(
        &self,
        conn: &mut Conn,
        timeout: Duration,
    ) -> Result<bool, QueueError> {
        let secs = timeout.as_secs_f64().max(0.01);
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&self.inner.keys.notify)
            .arg(secs)
            .query_async(conn)
            .await?;
        Ok(got.is_some())
    }

    /// Checks that Redis answers (readiness).
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// `writes` (their replies ignored), then the script, as one MULTI, for
    /// [`Queue::transact`].
    pub(crate) fn transaction(
        writes: Vec<redis::Cmd>,
        inv: &redis::ScriptInvocation<'_>,
    ) -> redis::Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        for w in writes {
            tx.add_command(w).ignore();
        }
        tx.invoke_script(inv);
        tx
    }

    /// Runs a [`Queue::transaction`] and returns the script's reply. A Redis that
    /// restarted or failed over has no scripts: the script is loaded and the whole
    /// transaction sent again, so its writes must be safe to repeat.
    pub(crate) async fn transact<T: redis::FromRedisValue>(
        &self,
        tx: &redis::Pipeline,
        inv: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        let r: redis::RedisResult<(T,)> = tx.query_async(&mut self.conn()).await;
        let (res,) = match r {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                inv.load_async(&mut self.conn()).await?;
                tx.query_async(&mut self.conn()).await?
            }
            r => r?,
        };
        Ok(res)
    }
}
