//! Agent configs: stored as JSON by agent id, updated compare-and-set
//! (`agent_cas.lua`).

use aftercall_core::AgentConfig;

use crate::{Queue, QueueError};

impl Queue {
    /// Stores an agent's config (already validated).
    pub async fn set_agent(&self, agent_id: &str, cfg: &AgentConfig) -> Result<(), QueueError> {
        let json = serde_json::to_string(cfg).expect("config serializes");
        let _: () = redis::cmd("HSET")
            .arg(&self.home().agents)
            .arg(agent_id)
            .arg(self.seal_text(agent_id, json))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn get_agent(&self, agent_id: &str) -> Result<Option<AgentConfig>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.home().agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        raw.map(|r| {
            serde_json::from_str(&self.open_text(agent_id, r)?)
                .map_err(|e| QueueError::Corrupt(format!("agent {agent_id}: {e}")))
        })
        .transpose()
    }

    /// Stored agent configs (JSON) for `ids`, in one round trip; `None` where absent.
    pub async fn agents_raw(&self, ids: &[String]) -> Result<Vec<Option<String>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.home().agents)
            .arg(ids)
            .query_async(&mut self.conn())
            .await?;
        raw.into_iter()
            .zip(ids)
            .map(|(r, id)| r.map(|r| self.open_text(id, r)).transpose())
            .collect()
    }

    /// An agent's config and its stored form, for [`Queue::set_agent_if`].
    pub async fn get_agent_versioned(
        &self,
        agent_id: &str,
    ) -> Result<(Option<AgentConfig>, Option<String>), QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.home().agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        let cfg = raw
            .clone()
            .map(|r| {
                serde_json::from_str(&self.open_text(agent_id, r)?)
                    .map_err(|e| QueueError::Corrupt(format!("agent {agent_id}: {e}")))
            })
            .transpose()?;
        Ok((cfg, raw))
    }

    /// Stores `cfg` only if the stored form is still `expected` (`None`: no config yet).
    /// False: someone changed it meanwhile; read again and retry.
    pub async fn set_agent_if(
        &self,
        agent_id: &str,
        expected: Option<&str>,
        cfg: &AgentConfig,
    ) -> Result<bool, QueueError> {
        let json = serde_json::to_string(cfg).expect("config serializes");
        let mut inv = self.inner.scripts.agent_cas.invocation(self.home());
        inv.arg(agent_id)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(self.seal_text(agent_id, json));
        let ok: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(ok == 1)
    }

    pub async fn list_agents(&self) -> Result<Vec<String>, QueueError> {
        let mut ids: Vec<String> = redis::cmd("HKEYS")
            .arg(&self.home().agents)
            .query_async(&mut self.conn())
            .await?;
        ids.sort();
        Ok(ids)
    }

    pub async fn delete_agent(&self, agent_id: &str) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(&self.home().agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }
}

impl Queue {
    /// The agent's most recent calls still kept (newest first), up to `limit`: for a
    /// preview of a candidate config. Reads the enqueue log backwards, at most `scan`
    /// calls of any agent, so its cost is bounded whatever the backlog.
    pub async fn recent_calls(
        &self,
        agent_id: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<aftercall_core::CallEvent>, QueueError> {
        if self.partitions() == 1 {
            return self.recent_calls_here(agent_id, limit, scan).await;
        }
        // Each partition's newest, merged newest first (ids are time-ordered within a
        // partition; the calls' end times order them across).
        let share = scan.div_ceil(self.partitions());
        let mut found = Vec::new();
        for q in self.parts() {
            found.extend(q.recent_calls_here(agent_id, limit, share).await?);
        }
        found.sort_by_key(|e| std::cmp::Reverse(e.ended_at));
        found.truncate(limit);
        Ok(found)
    }

    async fn recent_calls_here(
        &self,
        agent_id: &str,
        limit: usize,
        scan: usize,
    ) -> Result<Vec<aftercall_core::CallEvent>, QueueError> {
        let k = self.keys();
        let mut found = Vec::new();
        let mut scanned = 0;
        let mut end = "+".to_string();
        while found.len() < limit && scanned < scan {
            type Entry = (String, Vec<(String, String)>);
            let entries: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(&k.calls_log)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(16)
                .query_async(&mut self.conn())
                .await?;
            let Some((last, _)) = entries.last() else {
                break;
            };
            end = format!("({last}");
            // Within an entry, the last call id was enqueued last.
            let calls: Vec<String> = entries
                .into_iter()
                .flat_map(|(_, fields)| fields.into_iter().rev().map(|(call, _)| call))
                .collect();
            scanned += calls.len();
            let parents: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&k.calls)
                .arg(&calls)
                .query_async(&mut self.conn())
                .await?;
            let ids: Vec<String> = parents.into_iter().flatten().collect();
            if ids.is_empty() {
                continue;
            }
            let data: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&k.data)
                .arg(&ids)
                .query_async(&mut self.conn())
                .await?;
            for (id, d) in ids.iter().zip(data) {
                let Some(d) = d else { continue };
                let Ok(plain) = self.open_data(id, &d) else {
                    continue;
                };
                if let Ok(job) = serde_json::from_slice::<aftercall_core::Job>(&plain)
                    && job.agent_id == agent_id
                    && let aftercall_core::JobBody::CallEnded { event } = job.body
                {
                    found.push((*event).clone());
                    if found.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }
}
