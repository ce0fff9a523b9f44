//! Contact safety in Redis, so it holds across worker replicas: opt-outs (contacts that
//! receive no follow-up from any agent, one hash under the queue's tag) and frequency
//! caps (recent sends per contact, `contact.lua`).

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

/// A frequency cap: at most `max` sends per `window` to one contact on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub max: u32,
    pub window: std::time::Duration,
}

impl Cap {
    /// `1/24h`: at most one per 24 hours.
    pub fn parse(s: &str) -> Result<Cap, String> {
        let (n, w) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a cap like 1/24h"))?;
        let max: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{s}` is not a cap like 1/24h (a count of at least 1)"))?;
        let window = aftercall_core::config::parse_duration(w)?;
        if window.is_zero() {
            return Err(format!("`{s}` has an empty window"));
        }
        Ok(Cap { max, window })
    }
}

/// What the contact rules say about one send.
#[derive(Debug, Clone, PartialEq)]
pub enum ContactCheck {
    /// Send (and, under a cap, it is counted).
    Send,
    OptedOut(OptOut),
    /// The cap is reached; the earliest send it counts was at this time (Unix ms).
    Capped {
        earliest_ms: i64,
    },
}

impl Queue {
    /// The contact rules of job `job_id`'s send to `address`, in one script call: the
    /// opt-out, then the cap (when there is one), counting the send if it passes.
    pub async fn check_contact(
        &self,
        channel: Channel,
        address: &str,
        job_id: &str,
        cap: Option<Cap>,
    ) -> Result<ContactCheck, QueueError> {
        let k = self.home();
        let sent = k.sent(channel.as_str(), address);
        let mut inv = self
            .inner
            .scripts
            .contact
            .invocation_with(&[&k.optouts, &sent]);
        let f = field(channel, address);
        inv.arg(now_ms())
            .arg(&f)
            .arg(job_id)
            .arg(cap.map_or(0, |c| c.max))
            .arg(cap.map_or(0, |c| c.window.as_millis() as u64));
        let (what, value): (String, Option<String>) = {
            let v: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
            let mut it = v.into_iter();
            (it.next().unwrap_or_default(), it.next())
        };
        Ok(match what.as_str() {
            "opted_out" => match value.as_deref().and_then(|v| parse(&f, v)) {
                Some(o) => ContactCheck::OptedOut(o),
                None => return Err(QueueError::Corrupt(format!("opt-out of {f}"))),
            },
            "capped" => ContactCheck::Capped {
                earliest_ms: value.and_then(|v| v.parse().ok()).unwrap_or_default(),
            },
            _ => ContactCheck::Send,
        })
    }

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
            .arg(&self.home().optouts)
            .arg(field(channel, address))
            .arg(v)
            .query_async(&mut self.conn())
            .await?;
        Ok(added)
    }

    /// Removes an opt-out (the contact opted in again). Returns whether there was one.
    pub async fn opt_in(&self, channel: Channel, address: &str) -> Result<bool, QueueError> {
        let n: u64 = redis::cmd("HDEL")
            .arg(&self.home().optouts)
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
            .arg(&self.home().optouts)
            .arg(field(channel, address))
            .query_async(&mut self.conn())
            .await?;
        Ok(v.and_then(|v| parse(&field(channel, address), &v)))
    }

    /// Every opt-out, by channel then address.
    pub async fn opt_outs(&self) -> Result<Vec<OptOut>, QueueError> {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&self.home().optouts)
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
