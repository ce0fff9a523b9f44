//! The platform intake's writes: a call held until its analysis arrives, and the
//! analysis joining it (`intake.lua`). A call without either goes through
//! [`Queue::enqueue`] as any other.

use std::time::Duration;

use aftercall_core::{CallEvent, Job};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::worker::stored_budget;
use crate::{Queue, QueueError};

/// What the intake did with one message.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntakeOutcome {
    /// A new call, queued now.
    Enqueued,
    /// A new call, held until its analysis arrives or the wait ends.
    Waiting,
    /// Seen before (the same call, or the same call's analysis): nothing changed.
    Duplicate,
    /// The analysis of a waiting call: the call now fans out with it.
    Joined,
    /// The analysis of a call that fanned out already: kept with the call; its actions
    /// are not run again.
    Late,
}

/// One message's answer: the call, the job that stands for it, and what happened.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingested {
    pub call_id: String,
    pub job_id: String,
    pub outcome: IntakeOutcome,
}

/// The analysis as kept with its call (`GET /calls/{id}`'s `analysis`): what arrived
/// and when, without the transcript.
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRecord {
    /// Unix ms it arrived.
    pub at: i64,
    pub summary: Option<String>,
    pub analysis: Option<aftercall_core::event::Analysis>,
    pub ended_reason: Option<aftercall_core::event::EndedReason>,
}

impl Queue {
    /// Enqueues a call held until `wait` from now: its fan-out waits for the analysis
    /// ([`Queue::join_analysis`]) or for the wait to end, then fans out with what
    /// arrived. A call seen before is a duplicate, as with [`Queue::enqueue`].
    pub async fn enqueue_waiting(
        &self,
        event: CallEvent,
        wait: Duration,
    ) -> Result<Ingested, QueueError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1));
        let reason = format!(
            "waiting for analysis until {}",
            until.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let q = self.for_call(&event.call_id);
        let (job, json) = job_of(event, now, self.partitions());
        let mut inv = q.intake_invocation("wait", now, &job);
        inv.arg(until.timestamp_millis()).arg(reason);
        let (code, id) = q.run_intake(&job.id, json, &inv).await?;
        Ok(Ingested {
            call_id: job.call_id,
            job_id: id,
            outcome: if code == 0 {
                IntakeOutcome::Waiting
            } else {
                IntakeOutcome::Duplicate
            },
        })
    }

    /// A call's analysis, the whole call again (Retell's `call_analyzed`): releases the
    /// call if it is waiting for it (the analysed event takes the waiting one's place),
    /// enqueues it if the call is new, or keeps the analysis with a call that fanned out
    /// already. Only the first analysis of a call counts.
    pub async fn join_analysis(&self, event: CallEvent) -> Result<Ingested, QueueError> {
        let now = Utc::now();
        let record = AnalysisRecord {
            at: now.timestamp_millis(),
            summary: event.summary.clone(),
            analysis: event.analysis.clone(),
            ended_reason: event.ended_reason,
        };
        let record = serde_json::to_string(&record).expect("a record always serializes");
        // Sealed like the event it comes from (its summary is the call's content).
        let record = self.seal_text(&format!("analysis:{}", event.call_id), record);
        let q = self.for_call(&event.call_id);
        let (job, json) = job_of(event, now, self.partitions());
        let mut inv = q.intake_invocation("join", now, &job);
        inv.arg(record);
        let (code, id) = q.run_intake(&job.id, json, &inv).await?;
        let outcome = match code {
            0 => IntakeOutcome::Enqueued,
            2 => IntakeOutcome::Joined,
            3 => IntakeOutcome::Late,
            _ => IntakeOutcome::Duplicate,
        };
        Ok(Ingested {
            call_id: job.call_id,
            job_id: id,
            outcome,
        })
    }

    /// The analysis kept with a call, if one arrived.
    pub async fn analysis(&self, call_id: &str) -> Result<Option<AnalysisRecord>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(&self.for_call(call_id).keys().analysis)
            .arg(call_id)
            .query_async(&mut self.conn())
            .await?;
        raw.map(|r| self.analysis_record(call_id, r)).transpose()
    }

    /// A stored analysis record, opened and read.
    pub(crate) fn analysis_record(
        &self,
        call_id: &str,
        stored: String,
    ) -> Result<AnalysisRecord, QueueError> {
        let json = self.open_text(&format!("analysis:{call_id}"), stored)?;
        serde_json::from_str(&json)
            .map_err(|e| QueueError::Corrupt(format!("analysis of {call_id}: {e}")))
    }

    fn intake_invocation<'a>(
        &'a self,
        mode: &str,
        now: DateTime<Utc>,
        job: &Job,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = self.inner.scripts.intake.invocation(self.keys());
        inv.arg(mode)
            .arg(now.timestamp_millis())
            .arg(stored_budget(self.inner.cfg.retry.max_attempts))
            .arg(&job.call_id)
            .arg(&job.id);
        inv
    }

    /// One `MULTI`: the job's data, then the script (see intake.lua). Retried once on a
    /// dropped connection, as an enqueue is: a retry names the same job.
    async fn run_intake(
        &self,
        id: &str,
        json: Vec<u8>,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<(i64, String), QueueError> {
        let mut data = redis::cmd("HSET");
        data.arg(&self.keys().data)
            .arg(id)
            .arg(self.seal_data(id, json));
        let tx = Self::transaction(vec![data], inv);
        let res = match self.transact(&tx, inv).await {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.transact(&tx, inv).await?
            }
            r => r?,
        };
        self.wait_for_replicas().await?;
        Ok(res)
    }
}

/// A new call-ended job (its id in its call's partition of `n`) and its JSON.
fn job_of(event: CallEvent, now: DateTime<Utc>, n: usize) -> (Job, Vec<u8>) {
    let id = crate::partition::call_job_id(&event.call_id, n);
    let job = Job::call_ended_as(event, now, id);
    let json = job.to_json().into_bytes();
    (job, json)
}
