//! One queue on its own `redis-server`, for a test: the setup every test crate needs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aftercall_queue::{Queue, QueueConfig};

use crate::{RedisOptions, RedisServer, plain_url};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A queue named `<name>-<n>` on a `redis-server` of its own (on a free port, in a
/// scratch folder removed on drop unless the test failed), so a test can kill, restart
/// or reconfigure it.
pub struct TestQueue {
    pub redis: RedisServer,
    pub queue: Queue,
    pub dir: PathBuf,
}

impl TestQueue {
    /// Redis without persistence (fast; tests that restart Redis want
    /// [`TestQueue::start_with`] and `aof: true`), a 2 s response timeout.
    pub async fn start(name: &str) -> TestQueue {
        TestQueue::start_with(name, RedisOptions::fast(), |_| {}).await
    }

    /// With Redis started from `opts` and the queue's config adjusted by `cfg`.
    pub async fn start_with(
        name: &str,
        opts: RedisOptions,
        cfg: impl FnOnce(&mut QueueConfig),
    ) -> TestQueue {
        TestQueue::start_at(name, opts, plain_url, cfg).await
    }

    /// Like [`TestQueue::start_with`], the queue reaching Redis at `url(port)` rather
    /// than `redis://127.0.0.1:<port>`: with an ACL user's credentials, say, or another
    /// scheme. (The readiness probe still PINGs the plain port.)
    pub async fn start_at(
        name: &str,
        opts: RedisOptions,
        url: impl FnOnce(u16) -> String,
        cfg: impl FnOnce(&mut QueueConfig),
    ) -> TestQueue {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "aftercall-{name}-{}-{n}-{}",
            std::process::id(),
            crate::free_port()
        ));
        let redis = RedisServer::start(&dir, opts)
            .await
            .expect("redis-server starts");
        let mut config = QueueConfig {
            url: url(redis.port()),
            prefix: format!("{name}-{n}"),
            response_timeout: Duration::from_secs(2),
            ..QueueConfig::default()
        };
        cfg(&mut config);
        let queue = Queue::connect(config).await.expect("queue connects");
        TestQueue { redis, queue, dir }
    }

    /// The URL the queue reaches its Redis at.
    pub fn url(&self) -> &str {
        &self.queue.config().url
    }
}

impl Drop for TestQueue {
    /// Removes the scratch folder, but keeps it (Redis's log, the test's files) when the
    /// test is failing.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
