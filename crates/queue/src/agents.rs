//! Agent configs: stored as JSON by agent id, updated compare-and-set
//! (`agent_cas.lua`).

use aftercall_core::AgentConfig;

use crate::{Queue, QueueError};

impl Queue {
    /// Stores an agent's config (already validated).
    pub async fn set_agent(&self, agent_id: &str, cfg: &AgentConfig) -> Result<(), QueueError> {
        let json = serde_json::to_string(cfg).expect("config serializes");
        let _: () = redis::cmd("HSET")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .arg(self.seal_text(agent_id, json))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn get_agent(&self, agent_id: &str) -> Result<Option<AgentConfig>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.inner.keys.agents)
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
            .arg(&self.inner.keys.agents)
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
            .arg(&self.inner.keys.agents)
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
        let mut inv = self.inner.scripts.agent_cas.invocation(&self.inner.keys);
        inv.arg(agent_id)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(self.seal_text(agent_id, json));
        let ok: i64 = inv.invoke_async(&mut self.conn()).await?;
        Ok(ok == 1)
    }

    pub async fn list_agents(&self) -> Result<Vec<String>, QueueError> {
        let mut ids: Vec<String> = redis::cmd("HKEYS")
            .arg(&self.inner.keys.agents)
            .query_async(&mut self.conn())
            .await?;
        ids.sort();
        Ok(ids)
    }

    pub async fn delete_agent(&self, agent_id: &str) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(&self.inner.keys.agents)
            .arg(agent_id)
            .query_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }
}
