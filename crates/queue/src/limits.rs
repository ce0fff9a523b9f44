//! Per-destination limits across replicas (`limit.lua`): a semaphore and a per-second
//! counter per destination.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, now_ms};

/// A per-destination limit; 0 means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub concurrency: u32,
    pub per_second: u32,
}

impl Queue {
    /// Takes a slot of `destination` for `token` (at most `limit.concurrency` at once and
    /// `limit.per_second` starts a second, across every replica). False: wait and retry
    /// later; that wait is not an attempt.
    pub async fn acquire_slot(
        &self,
        destination: &str,
        token: &str,
        hold: Duration,
        limit: Limit,
    ) -> Result<bool, QueueError> {
        let now = now_ms();
        let k = self.home();
        let (sem, rate) = (k.limit(destination), k.rate(destination, now / 1000));
        let mut inv = self.inner.scripts.limit.invocation_with(&[&sem, &rate]);
        inv.arg(now)
            .arg(token)
            .arg(hold.as_millis() as u64)
            .arg(limit.concurrency)
            .arg(limit.per_second);
        let ok: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(ok == 1)
    }

    /// Gives a slot back.
    pub async fn release_slot(&self, destination: &str, token: &str) -> Result<(), QueueError> {
        let _: i64 = redis::cmd("ZREM")
            .arg(self.home().limit(destination))
            .arg(token)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
