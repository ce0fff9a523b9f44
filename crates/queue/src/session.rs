//! The dashboard's server-side sessions: one key per session under the queue's hash
//! tag, expiring with the session (and checked against its expiry on every read), so a
//! logout or a lapsed session is over for every replica at once.

use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, now_ms};

/// What a session stores: which API token opened it (by digest, never the token) and
/// until when it is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the API token the user logged in with.
    pub token_sha256: String,
    /// The token's name when the session opened (`admin-1`), for logs.
    pub token_name: String,
    /// The token's scope when the session opened (`read`, `ingest`, `admin`).
    pub scope: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl Queue {
    /// Stores a new session under `session_id`, expiring at `record.expires_ms`. False
    /// when that id is taken (never, for 256 random bits) or the expiry has passed.
    pub async fn create_session(
        &self,
        session_id: &str,
        record: &SessionRecord,
    ) -> Result<bool, QueueError> {
        let ttl_ms = record.expires_ms - now_ms();
        if ttl_ms <= 0 {
            return Ok(false);
        }
        self.put_record(
            self.home().session(session_id),
            record,
            ttl_ms as u64,
            "session",
        )
        .await
    }

    /// Stores `record` under `key` for `ttl_ms` unless the key is taken (a session, a
    /// login code: `what`, for errors). False when taken.
    pub(crate) async fn put_record(
        &self,
        key: String,
        record: &SessionRecord,
        ttl_ms: u64,
        what: &str,
    ) -> Result<bool, QueueError> {
        let json = serde_json::to_string(record)
            .map_err(|e| QueueError::Invalid(format!("{what} record: {e}")))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(json)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    /// The session stored under `session_id`, if it exists and has not expired. Redis
    /// expires the key; the record's own expiry is checked as well, so a key whose TTL
    /// was lost (a restore, a `PERSIST`) still ends on time.
    pub async fn session(&self, session_id: &str) -> Result<Option<SessionRecord>, QueueError> {
        let key = self.home().session(session_id);
        let raw: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn())
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let record: SessionRecord = serde_json::from_str(&raw)
            .map_err(|e| QueueError::Corrupt(format!("session record: {e}")))?;
        if record.expires_ms <= now_ms() {
            self.delete_session(session_id).await?;
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Ends a session. True if there was one.
    pub async fn delete_session(&self, session_id: &str) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("DEL")
            .arg(self.home().session(session_id))
            .query_async(&mut self.conn())
            .await?;
        Ok(n > 0)
    }
}
