//! Opt-outs: contacts (channel and address) that receive no follow-up from any agent,
//! one hash under the queue's tag, so every worker replica reads the same list.

use aftercall_core::contact::Channel;
use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, now_ms};

/// One opted-out contact.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptOut {
    pub channel: Channel,
    pub address: String,
    /// When it was recorded, Unix milliseconds.
    pub at: i64,
    /// Who recorded it: `api`, `cli`, `dashboard`, `twilio_inbound` (a STOP reply),
    /// `twilio_21610` (Twilio refused a send).
    pub source: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    at: i64,
    source: String,
}

fn field(channel: Channel, address: &str) -> String {
    format!("{}:{address}", channel.as_str())
}

impl Queue {
    /// Records an opt-out (the address as `aftercall_core::contact::normalize` writes
    /// it). Returns false when it was already recorded (the first record is kept).
    pub async fn opt_out(
        &self,
        channel: Channel,
        address: &str,
        source: &str,
    ) -> Result<bool, QueueError> {
        let v = serde_json::to_string(&Stored {
            at: now_ms(),
            source: source.to_string(),
        })
        .expect("a record always serializes");
        let added: bool = redis::cmd("HSETNX")
            .arg(&self.inner.keys.optouts)
            .arg(field(channel, address))
            .arg(v)
            .query_async(&mut self.conn())
            .await?;
        Ok(added)
    }

    /// Removes an opt-out (the contact opted in again). Returns whether there was one.
    pub async fn opt_in(&self, channel: Channel, address: &str) -> Result<bool, QueueError> {
        let n: u64 = redis::cmd("HDEL")
            .arg(&self.inner.keys.optouts)
            .arg(field(channel, address))
            .query_async(&mut self.conn())
            .await?;
        Ok(n > 0)
    }

    /// The contact's opt-out, if it has one: one `HGET`, made for every SMS and e-mail
    /// before it is sent.
    pub async fn opted_out(
        &self,
        channel: Channel,
        address: &str,
    ) -> Result<Option<OptOut>, QueueError> {
        let v: Option<String> = redis::cmd("HGET")
            .arg(&self.inner.keys.optouts)
            .arg(field(channel, address))
            .query_async(&mut self.conn())
            .await?;
        Ok(v.and_then(|v| parse(&field(channel, address), &v)))
    }

    /// Every opt-out, by channel then address.
    pub async fn opt_outs(&self) -> Result<Vec<OptOut>, QueueError> {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&self.inner.keys.optouts)
            .query_async(&mut self.conn())
            .await?;
        let mut out: Vec<OptOut> = all.iter().filter_map(|(k, v)| parse(k, v)).collect();
        out.sort_by(|a, b| (a.channel.as_str(), &a.address).cmp(&(b.channel.as_str(), &b.address)));
        Ok(out)
    }
}

fn parse(field: &str, v: &str) -> Option<OptOut> {
    let (channel, address) = field.split_once(':')?;
    let s: Stored = serde_json::from_str(v).ok()?;
    Some(OptOut {
        channel: Channel::parse(channel).ok()?,
        address: address.to_string(),
        at: s.at,
        source: s.source,
    })
}
