//! How long the oldest ready job has waited: the one `fetch.lua` takes next (the ready
//! list's tail), by the time its state last became `queued` (enqueue, promotion of a due
//! retry, replay). Sampled for `/metrics`, where a rising age means nothing is fetching.

use crate::{Queue, QueueError, StateInfo, now_ms};

impl Queue {
    /// Milliseconds the next job to be fetched has been queued; `None` when none is.
    /// Two reads (the tail's id, then its state), never a scan.
    pub async fn oldest_queued_age_ms(&self) -> Result<Option<i64>, QueueError> {
        let mut oldest = None;
        for q in self.parts() {
            oldest = oldest.max(q.oldest_here().await?);
        }
        Ok(oldest)
    }

    async fn oldest_here(&self) -> Result<Option<i64>, QueueError> {
        let k = self.keys();
        let id: Option<String> = redis::cmd("LINDEX")
            .arg(&k.ready)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        let Some(id) = id else { return Ok(None) };
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&k.state)
            .arg(&id)
            .query_async(&mut self.conn())
            .await?;
        // Fetched (or purged) between the two reads: the next one is younger still.
        let Some(raw) = raw else { return Ok(Some(0)) };
        let state: StateInfo = serde_json::from_str(&raw)
            .map_err(|e| QueueError::Corrupt(format!("state of {id}: {e}")))?;
        let since = state.at.max(state.run_at.unwrap_or(0));
        Ok(Some((now_ms() - since).max(0)))
    }
}
