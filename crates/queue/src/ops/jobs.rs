//! Reading stored jobs back: their records, decoded, with an action job's event put back in.

use aftercall_core::job::call_ended_id;
use aftercall_core::{Attempt, Job};

use super::JobRecord;
use crate::{Queue, QueueError, StateInfo};

impl Queue {
    /// Loads the stored records of `ids` in one round trip; unknown ids are omitted.
    pub async fn jobs(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        let found = self
            .routed(ids, String::as_str, |q, s| Box::pin(q.jobs_here(s)))
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Per id, its record (`None` for an id with nothing stored).
    async fn jobs_here(&self, ids: &[String]) -> Result<Vec<Option<JobRecord>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        // An action job's event is its call-ended job's (one copy per call): read with it.
        let mut parents: Vec<&str> = Vec::new();
        for id in ids {
            if let Some(p) = call_ended_id(id)
                && !parents.contains(&p)
            {
                parents.push(p);
            }
        }
        let mut p = redis::pipe();
        for key in [&k.data, &k.state, &k.attempts, &k.max, &k.log] {
            p.cmd("HMGET").arg(key).arg(ids);
        }
        p.cmd("HMGET").arg(&k.data).arg(&parents).arg("");
        type Col = Vec<Option<String>>;
        type Bytes = Vec<Option<Vec<u8>>>;
        // Payloads as bytes: one that is not UTF-8 is shown as undecodable, rather than
        // failing every listing that includes it.
        let (data, state, attempts, max, log, parent_data): (Bytes, Col, Col, Col, Col, Bytes) =
            p.query_async(&mut self.conn()).await?;
        let open = |d: Option<Vec<u8>>, id: &str| {
            d.map(|b| match self.open_data(id, &b) {
                Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
                // Shown as the undecodable payload it is, with why.
                Err(e) => format!("stored data {e}"),
            })
        };
        let data: Col = data
            .into_iter()
            .zip(ids)
            .map(|(d, id)| open(d, id))
            .collect();
        let events: Vec<(&str, Option<String>)> = parents
            .iter()
            .zip(parent_data)
            .map(|(p, d)| (*p, open(d, p)))
            .collect();
        let event_of = |id: &str| {
            let p = call_ended_id(id)?;
            events.iter().find(|(q, _)| *q == p)?.1.as_deref()
        };
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let Some(state_raw) = &state[i] else {
                out.push(None);
                continue;
            };
            let state: StateInfo = serde_json::from_str(state_raw)
                .map_err(|e| QueueError::Corrupt(format!("state of {id}: {e}")))?;
            let history: Vec<Attempt> = match &log[i] {
                Some(l) => serde_json::from_str(l)
                    .map_err(|e| QueueError::Corrupt(format!("history of {id}: {e}")))?,
                None => Vec::new(),
            };
            let parent = event_of(id);
            let (kind, call_id, agent_id, action_index, job) = match &data[i] {
                Some(d) => match Job::decode(d.as_bytes(), parent.map(str::as_bytes)) {
                    Ok(j) => {
                        let index = match &j.body {
                            aftercall_core::JobBody::Action(a) => Some(a.index),
                            _ => None,
                        };
                        let value = serde_json::from_str(d)
                            .ok()
                            .map(|v| with_call_event(v, parent));
                        (
                            j.kind().to_string(),
                            Some(j.call_id),
                            Some(j.agent_id),
                            index,
                            value,
                        )
                    }
                    Err(_) => (
                        "unknown".to_string(),
                        None,
                        None,
                        None,
                        Some(serde_json::Value::String(d.clone())),
                    ),
                },
                None => ("unknown".to_string(), None, None, None, None),
            };
            out.push(Some(JobRecord {
                id: id.clone(),
                kind,
                call_id,
                agent_id,
                action_index,
                state,
                attempts: attempts[i]
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                max_attempts: max[i]
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(aftercall_core::DEFAULT_MAX_ATTEMPTS),
                history,
                job,
            }));
        }
        Ok(out)
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        Ok(self.jobs(&[id.to_string()]).await?.pop())
    }
}

/// A stored job as shown: an action job's data with its call's event put back in, from
/// its call-ended job's stored JSON `call_ended` (where the queue keeps the one copy).
fn with_call_event(mut job: serde_json::Value, call_ended: Option<&str>) -> serde_json::Value {
    if let Some(obj) = job.as_object_mut()
        && !obj.contains_key("event")
        && let Some(parent) = call_ended
        && let Ok(serde_json::Value::Object(mut p)) = serde_json::from_str(parent)
        && let Some(event) = p.remove("event")
    {
        obj.insert("event".into(), event);
    }
    job
}
