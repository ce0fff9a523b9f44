//! Destination health across replicas (`destination.lua`): each destination's circuit
//! breaker, its pause after a 429 or `Retry-After`, the operators' pauses, and what
//! `aftercall destinations list` shows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Queue, QueueError, now_ms};

/// What the gate says of one job about to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Go,
    /// Run it: it is the half-open breaker's probe.
    Probe,
    /// Hold it: the breaker is open (or another job is probing).
    Open,
    /// Hold it: the destination asked for a pause (429, `Retry-After`).
    Throttled,
    /// Hold it: an operator paused it.
    Paused,
    /// Held past its horizon: dead-letter it.
    Expired,
}

/// The gate's answer: hold until `until_ms`; `since_ms` is when the destination became
/// unavailable (or was paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub verdict: Verdict,
    pub until_ms: i64,
    pub since_ms: i64,
    pub streak: u32,
}

/// One job at the gate.
#[derive(Debug, Clone, Copy)]
pub struct GateArgs<'a> {
    pub destination: &'a str,
    pub job_id: &'a str,
    pub agent_id: &'a str,
    /// The action type (`webhook`, `email`, ...).
    pub action: &'a str,
    /// How long a probe may take before another job probes instead.
    pub probe: Duration,
    /// How often paused work (and work waiting on another job's probe) looks again.
    pub recheck: Duration,
    /// Unix ms past which a held job is dead-lettered instead (0: never).
    pub deadline_ms: i64,
}

/// What an attempt said of its destination's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The destination answered (delivered, or refused for good).
    Ok,
    /// It failed in a way worth retrying (5xx, timeout, connection refused).
    Fail,
    /// It asked to be left alone for a while (429) without being down.
    Throttle,
}

/// A breaker's change, for alerts and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEvent {
    Opened,
    Closed,
}

/// What a report left: the breaker's state and failure streak, and its change if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub event: Option<BreakerEvent>,
    pub state: String,
    pub streak: u32,
}

/// One destination as `aftercall destinations list`, the API and `/metrics` show it.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DestinationHealth {
    pub destination: String,
    /// `closed` (healthy), `open` (held), `half_open` (one probe let through), or
    /// `paused` (by an operator).
    pub state: String,
    /// Consecutive failed attempts.
    pub failure_streak: u32,
    pub last_error: Option<String>,
    /// Unix ms of the last error.
    pub last_error_at: Option<i64>,
    /// Unix ms the circuit opened.
    pub open_since: Option<i64>,
    /// Unix ms until which the destination asked not to be sent to (429, `Retry-After`).
    pub throttled_until: Option<i64>,
    /// Jobs held for it now.
    pub held: u64,
    /// Unix ms a job for it was last seen.
    pub last_seen: i64,
}

/// What an operator pauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseScope {
    Destination(String),
    Agent(String),
    Action(String),
}

impl PauseScope {
    /// `destination:<d>`, `agent:<id>` or `action:<type>`: the field in Redis and the
    /// name the CLI and the API use.
    pub fn key(&self) -> String {
        match self {
            PauseScope::Destination(d) => format!("destination:{d}"),
            PauseScope::Agent(a) => format!("agent:{a}"),
            PauseScope::Action(t) => format!("action:{t}"),
        }
    }

    /// Reads `kind:value`.
    pub fn parse(s: &str) -> Option<PauseScope> {
        let (kind, value) = s.split_once(':')?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        Some(match kind.trim() {
            "destination" => PauseScope::Destination(value.into()),
            "agent" => PauseScope::Agent(value.into()),
            "action" => PauseScope::Action(value.into()),
            _ => return None,
        })
    }
}

/// One pause in force.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// `destination:<d>`, `agent:<id>` or `action:<type>`.
    pub scope: String,
    /// Unix ms it was paused.
    pub at: i64,
}

/// A held job whose hold ended this long ago is no longer counted as held (it was run,
/// dead-lettered or purged since).
const HELD_STALE_MS: i64 = 60_000;

impl Queue {
    fn destination_invocation(&self, destination: &str) -> redis::ScriptInvocation<'_> {
        let k = self.home();
        let (health, held) = (k.health(destination), k.held(destination));
        let (paused, seen) = (k.paused(), k.destinations());
        self.inner.scripts.destination.invocation_with(&[
            &health,
            &held,
            &paused,
            &seen,
            &k.scheduled,
            &k.notify,
        ])
    }

    /// Whether a job may run now: its destination's breaker, its 429 pause, and the
    /// operators' pauses, read (and a probe taken) atomically.
    pub async fn gate(&self, a: GateArgs<'_>) -> Result<Gate, QueueError> {
        let mut inv = self.destination_invocation(a.destination);
        inv.arg("gate")
            .arg(now_ms())
            .arg(a.destination)
            .arg(a.job_id)
            .arg(a.agent_id)
            .arg(a.action)
            .arg(a.probe.as_millis() as u64)
            .arg(a.recheck.as_millis() as u64)
            .arg(a.deadline_ms);
        let (verdict, until_ms, since_ms, streak): (String, i64, i64, u32) =
            inv.invoke_async(&mut self.conn()).await?;
        let verdict = match verdict.as_str() {
            "go" => Verdict::Go,
            "probe" => Verdict::Probe,
            "open" => Verdict::Open,
            "throttled" => Verdict::Throttled,
            "paused" => Verdict::Paused,
            "expired" => Verdict::Expired,
            other => return Err(QueueError::Corrupt(format!("gate said {other}"))),
        };
        Ok(Gate {
            verdict,
            until_ms,
            since_ms,
            streak,
        })
    }

    /// Records what an attempt said of `destination`: `threshold` consecutive failures
    /// open its breaker for `cooldown` (0: never), a success closes it (and lets what it
    /// held go), and `pause_until_ms` (a 429's or a `Retry-After`'s) holds every replica's
    /// jobs for it until then.
    pub async fn report(
        &self,
        destination: &str,
        health: Health,
        error: &str,
        threshold: u32,
        cooldown: Duration,
        pause_until_ms: i64,
    ) -> Result<Reported, QueueError> {
        let mut inv = self.destination_invocation(destination);
        let result = match health {
            Health::Ok => "ok",
            Health::Fail => "fail",
            Health::Throttle => "throttle",
        };
        inv.arg("report")
            .arg(now_ms())
            .arg(destination)
            .arg(result)
            .arg(error)
            .arg(threshold)
            .arg(cooldown.as_millis() as u64)
            .arg(pause_until_ms);
        let (event, state, streak, released): (String, String, u32, Vec<String>) =
            inv.invoke_async(&mut self.conn()).await?;
        if self.partitions() > 1 && !released.is_empty() {
            self.release(&released).await?;
        }
        let event = match event.as_str() {
            "opened" => Some(BreakerEvent::Opened),
            "closed" => Some(BreakerEvent::Closed),
            _ => None,
        };
        Ok(Reported {
            event,
            state,
            streak,
        })
    }

    /// Lets held jobs of a partitioned queue go now: each partition's schedule (where
    /// they wait, until their hold ends) moves them up, and its workers are woken.
    async fn release(&self, ids: &[String]) -> Result<(), QueueError> {
        let now = now_ms();
        for (q, share, _) in self.shares(ids, String::as_str) {
            let k = q.keys();
            let mut p = redis::pipe();
            for id in &share {
                p.cmd("ZADD")
                    .arg(&k.scheduled)
                    .arg("XX")
                    .arg(now)
                    .arg(id)
                    .ignore();
            }
            p.cmd("LPUSH").arg(&k.notify).arg(1).ignore();
            p.cmd("LTRIM").arg(&k.notify).arg(0).arg(63).ignore();
            let _: () = p.query_async(&mut self.conn()).await?;
        }
        Ok(())
    }

    /// Every destination seen, with its health and the jobs it holds.
    pub async fn destinations(&self) -> Result<Vec<DestinationHealth>, QueueError> {
        let k = self.home();
        let now = now_ms();
        let seen: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(k.destinations())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await?;
        let paused = self.pauses().await?;
        // One round trip for all of them (their keys share the queue's hash tag).
        let mut pipe = redis::pipe();
        for (destination, _) in &seen {
            pipe.cmd("HGETALL")
                .arg(k.health(destination))
                .cmd("ZREMRANGEBYSCORE")
                .arg(k.held(destination))
                .arg("-inf")
                .arg(now - HELD_STALE_MS)
                .ignore()
                .cmd("ZCARD")
                .arg(k.held(destination));
        }
        type Health = (std::collections::HashMap<String, String>, u64);
        let read: Vec<Health> = if seen.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut self.conn()).await?
        };
        let mut out = Vec::with_capacity(seen.len());
        for ((destination, last_seen), (h, held)) in seen.into_iter().zip(read) {
            let num = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok());
            let mut state = h.get("state").cloned().unwrap_or_else(|| "closed".into());
            let scope = PauseScope::Destination(destination.clone()).key();
            if paused.iter().any(|p| p.scope == scope) {
                state = "paused".into();
            }
            out.push(DestinationHealth {
                state,
                failure_streak: num("streak").unwrap_or(0) as u32,
                last_error: h.get("last_error").cloned(),
                last_error_at: num("last_at"),
                open_since: num("since"),
                throttled_until: num("pause_until").filter(|&t| t > now),
                held,
                last_seen,
                destination,
            });
        }
        Ok(out)
    }

    /// Pauses `scope`: its jobs wait (no attempt counted) until it is resumed.
    pub async fn pause(&self, scope: &PauseScope) -> Result<(), QueueError> {
        let value = serde_json::json!({ "at": now_ms() }).to_string();
        let _: i64 = redis::cmd("HSET")
            .arg(self.home().paused())
            .arg(scope.key())
            .arg(value)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Resumes `scope`; false if it was not paused.
    pub async fn resume(&self, scope: &PauseScope) -> Result<bool, QueueError> {
        let n: i64 = redis::cmd("HDEL")
            .arg(self.home().paused())
            .arg(scope.key())
            .query_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// The pauses in force.
    pub async fn pauses(&self) -> Result<Vec<Pause>, QueueError> {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.home().paused())
            .query_async(&mut self.conn())
            .await?;
        Ok(all
            .into_iter()
            .map(|(scope, v)| Pause {
                at: serde_json::from_str::<serde_json::Value>(&v)
                    .ok()
                    .and_then(|v| v["at"].as_i64())
                    .unwrap_or(0),
                scope,
            })
            .collect())
    }
}
