//! One-time dashboard login codes: a random code stored with the session it will open,
//! under the queue's hash tag, expiring after a short TTL and taken with `GETDEL`, so a
//! code opens at most one session, on whichever replica it is opened.

use crate::{Queue, QueueError, SessionRecord};

impl Queue {
    /// Stores `code`, which opens a session like `record`, for `ttl`. False when the code
    /// is taken (never, for 256 random bits).
    pub async fn create_login_code(
        &self,
        code: &str,
        record: &SessionRecord,
        ttl: std::time::Duration,
    ) -> Result<bool, QueueError> {
        let ttl_ms = ttl.as_millis() as u64;
        self.put_record(self.home().login_code(code), record, ttl_ms, "login code")
            .await
    }

    /// Takes `code` for good: the session record it stands for the first time, `None`
    /// ever after (and once it expired). One `GETDEL`, so two concurrent opens of the
    /// same link cannot both get it.
    pub async fn take_login_code(&self, code: &str) -> Result<Option<SessionRecord>, QueueError> {
        let raw: Option<String> = redis::cmd("GETDEL")
            .arg(self.home().login_code(code))
            .query_async(&mut self.conn())
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let record: SessionRecord = serde_json::from_str(&raw)
            .map_err(|e| QueueError::Corrupt(format!("login code record: {e}")))?;
        Ok(Some(record))
    }
}
