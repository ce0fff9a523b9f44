//! Erasing one call's personal data (`erase.lua`): its jobs' events reduced to their
//! ids, its analysis dropped, its attempt histories without error texts, its work in
//! flight cancelled, and an audit entry without content.

use aftercall_core::Job;

use crate::retention::stripped;
use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, now_ms};

/// What an erasure did.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    pub call_id: String,
    /// The call's jobs whose data was erased (the call-ended job and its actions).
    pub jobs: u64,
    /// Of those, the ones still queued, scheduled, running or dead: now `skipped`.
    pub cancelled: u64,
    /// The e-mail and SMS files of the call's jobs removed from the outbox folder of
    /// the process that erased (the caller's business: the queue knows no files).
    #[serde(default)]
    pub outbox_files: u64,
    /// The call's job ids, for the caller to erase what it keeps under them.
    #[serde(skip)]
    pub ids: Vec<String>,
}

impl Queue {
    /// Erases what aftercall stored of `call_id`'s content; `by` names who asked (for
    /// the job states and the audit entry). `None` for an unknown call. The call's ids,
    /// states and attempt outcomes stay, so "what happened to call X" still answers.
    pub async fn erase_call(&self, call_id: &str, by: &str) -> Result<Option<Erased>, QueueError> {
        self.for_call(call_id).erase_here(call_id, by).await
    }

    async fn erase_here(&self, call_id: &str, by: &str) -> Result<Option<Erased>, QueueError> {
        let k = self.keys();
        for _ in 0..5 {
            let Some((ids, fanout, _)) = self.call_jobs(call_id).await? else {
                return Ok(None);
            };
            let data: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&k.data)
                .arg(&ids)
                .query_async(&mut self.conn())
                .await?;
            let mut writes = Vec::new();
            for (id, d) in ids.iter().zip(data) {
                let Some(d) = d else { continue };
                let plain = self.open_data(id, &d).ok();
                // An action job's data holds no event (its call-ended job's is the one
                // copy): its ids and action config stay as they are.
                if plain.as_deref().is_some_and(refers_to_event) {
                    continue;
                }
                let job = plain.and_then(|plain| serde_json::from_slice::<Job>(&plain).ok());
                let cmd = match job {
                    Some(job) => {
                        let mut c = redis::cmd("HSET");
                        let json = stripped(job, "erased").to_json().into_bytes();
                        c.arg(&k.data).arg(id).arg(self.seal_data(id, json));
                        c
                    }
                    // What cannot be read cannot be kept either.
                    None => {
                        let mut c = redis::cmd("HDEL");
                        c.arg(&k.data).arg(id);
                        c
                    }
                };
                writes.push(cmd);
            }
            let mut inv = self.inner.scripts.erase.invocation(k);
            inv.arg(call_id)
                .arg(now_ms())
                .arg(by)
                .arg(fanout.as_deref().unwrap_or(""));
            for id in &ids {
                inv.arg(id);
            }
            let tx = Self::transaction(writes, &inv);
            let r: Vec<i64> = self.transact(&tx, &inv).await?;
            if let [jobs, cancelled] = r[..] {
                return Ok(Some(Erased {
                    call_id: call_id.to_string(),
                    jobs: jobs as u64,
                    cancelled: cancelled as u64,
                    outbox_files: 0,
                    ids,
                }));
            }
        }
        Err(QueueError::Invalid(format!(
            "call {call_id} kept changing while it was erased; try again"
        )))
    }
}

/// Whether stored job data is an action job's that reads its call's event from its
/// call-ended job, rather than carrying one.
fn refers_to_event(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Head {
        kind: String,
        #[serde(default)]
        event: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Head>(data).is_ok_and(|h| h.kind == "action" && h.event.is_none())
}
