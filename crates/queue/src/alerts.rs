//! What the operational alerts need of Redis: the dead-letter count, and a latch per
//! threshold alert so that, of all replicas, one announces a crossing, once.

use crate::{Queue, QueueError, now_ms};

impl Queue {
    /// Raises (`up`) or lowers the alert latch `name`. True when this call raised it:
    /// the caller is the one replica to announce it.
    pub async fn latch(&self, name: &str, up: bool) -> Result<bool, QueueError> {
        let k = self.home();
        let mut conn = self.conn();
        if up {
            let set: bool = redis::cmd("HSETNX")
                .arg(&k.alerted)
                .arg(name)
                .arg(now_ms())
                .query_async(&mut conn)
                .await?;
            Ok(set)
        } else {
            let _: i64 = redis::cmd("HDEL")
                .arg(&k.alerted)
                .arg(name)
                .query_async(&mut conn)
                .await?;
            Ok(false)
        }
    }

    /// How many dead letters wait.
    pub async fn dead_count(&self) -> Result<u64, QueueError> {
        self.summed(|q| async move {
            let mut conn = q.conn();
            Ok(redis::cmd("ZCARD")
                .arg(&q.keys().dead)
                .query_async(&mut conn)
                .await?)
        })
        .await
    }
}
