//! The queue handle: connecting (and what is checked then), the shared connection, and
//! the plumbing every script call goes through.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::RedisError;

use crate::conn::{self, Conn};
use crate::enqueue::Singles;
use crate::keys::Keys;
use crate::partition::{self, Layout};
use crate::{QueueConfig, QueueError, RedisFacts, redact_url, scripts};

/// The queue handle: cheap to clone, shared by producers, workers and ops.
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<Inner>,
    /// The partition this handle's job operations address (see [`Queue::partition`]);
    /// the public operations route each call and job to its own.
    part: usize,
}

pub(crate) struct Inner {
    pub(crate) client: conn::Client,
    pub(crate) conn: Conn,
    /// The cluster slot of the queue's home hash tag (cluster mode only).
    pub(crate) slot: Option<u16>,
    pub(crate) layout: Layout,
    /// Where the next fetch starts, so workers take from every partition in turn.
    pub(crate) cursor: std::sync::atomic::AtomicUsize,
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
        let layout = Layout::new(&cfg.prefix, cfg.partitions);
        let keys = &layout.home;
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
                layout,
                cursor: Default::default(),
                scripts: scripts::Scripts::new(),
                cfg,
                singles: Default::default(),
                warnings,
            }),
            part: 0,
        };
        queue.check_keys(writes).await?;
        queue.check_layout(writes).await?;
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

    /// The keys of this handle's partition (of the queue, with one partition).
    pub fn keys(&self) -> &Keys {
        &self.inner.layout.parts[self.part]
    }

    /// The keys of what the whole queue shares (agents, destinations, opt-outs, ...).
    pub fn home(&self) -> &Keys {
        &self.inner.layout.home
    }

    /// How many partitions the queue has (`AFTERCALL_PARTITIONS`).
    pub fn partitions(&self) -> usize {
        self.inner.layout.len()
    }

    /// A handle on partition `p` (`p` < [`Queue::partitions`]): its job operations
    /// address that partition only.
    pub fn partition(&self, p: usize) -> Queue {
        assert!(
            p < self.partitions(),
            "partition {p} of {}",
            self.partitions()
        );
        Queue {
            inner: self.inner.clone(),
            part: p,
        }
    }

    /// Every partition's handle, in order.
    pub(crate) fn parts(&self) -> impl Iterator<Item = Queue> + '_ {
        (0..self.partitions()).map(|p| self.partition(p))
    }

    /// The handle on the partition of call `call_id`.
    pub fn for_call(&self, call_id: &str) -> Queue {
        self.partition(partition::of_call(call_id, self.partitions()))
    }

    /// The handle on the partition of job `job_id`.
    pub fn for_job(&self, job_id: &str) -> Queue {
        self.partition(partition::of_job(job_id, self.partitions()))
    }

    /// `items` split by the partition of each one's job id: each share with its
    /// partition's handle and the share's places in `items` (for [`reassemble`]).
    pub(crate) fn shares<T: Clone>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> &str,
    ) -> Vec<(Queue, Vec<T>, Vec<usize>)> {
        partition::group(items, |t| self.part_of_job(id(t)))
            .into_iter()
            .map(|(p, places)| {
                let share = places.iter().map(|&i| items[i].clone()).collect();
                (self.partition(p), share, places)
            })
            .collect()
    }

    /// Runs `op` on each partition's share of `items` (by each one's job id), side by
    /// side, and answers per item in `items`' order. One partition: `op` on `items`.
    pub(crate) async fn routed<T: Clone + Sync, R: Send>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> &str,
        op: impl for<'s> Fn(&'s Queue, &'s [T]) -> BoxFuture<'s, Result<Vec<R>, QueueError>>,
    ) -> Result<Vec<R>, QueueError> {
        if self.partitions() == 1 {
            return op(self, items).await;
        }
        let shares = self.shares(items, id);
        let answers =
            futures::future::try_join_all(shares.iter().map(|(q, share, _)| op(q, share))).await?;
        reassemble(items.len(), shares, answers)
    }

    /// The sum of `op` over every partition, in turn.
    pub(crate) async fn summed<F>(&self, op: impl Fn(Queue) -> F) -> Result<u64, QueueError>
    where
        F: Future<Output = Result<u64, QueueError>>,
    {
        let mut n = 0;
        for q in self.parts() {
            n += op(q).await?;
        }
        Ok(n)
    }

    /// The partition of job `job_id`.
    pub(crate) fn part_of_job(&self, job_id: &str) -> usize {
        partition::of_job(job_id, self.partitions())
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
        let n = self.partitions();
        let mut blpop = redis::cmd("BLPOP");
        let secs = if n == 1 || !self.inner.client.is_cluster() {
            // One command waits on every partition's wake-up list.
            for k in &self.inner.layout.parts {
                blpop.arg(&k.notify);
            }
            timeout.as_secs_f64()
        } else {
            // On a cluster one command waits on one slot: the partitions' lists in turn,
            // each for its share of the wait (fetches also take partitions in turn).
            let p = self.inner.cursor.load(std::sync::atomic::Ordering::Relaxed) % n;
            blpop.arg(&self.inner.layout.parts[p].notify);
            timeout.as_secs_f64() / n as f64
        };
        let got: Option<(String, String)> = blpop.arg(secs.max(0.01)).query_async(conn).await?;
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

/// Per-item answers of [`Queue::shares`]' shares, back in the items' order.
pub(crate) fn reassemble<T, R>(
    len: usize,
    shares: Vec<(Queue, Vec<T>, Vec<usize>)>,
    answers: Vec<Vec<R>>,
) -> Result<Vec<R>, QueueError> {
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(len).collect();
    for ((_, _, places), answer) in shares.into_iter().zip(answers) {
        if answer.len() != places.len() {
            return Err(QueueError::Corrupt(format!(
                "{} answers for {} items",
                answer.len(),
                places.len()
            )));
        }
        for (i, a) in places.into_iter().zip(answer) {
            out[i] = Some(a);
        }
    }
    out.into_iter()
        .map(|a| a.ok_or_else(|| QueueError::Corrupt("an item went unanswered".into())))
        .collect()
}
