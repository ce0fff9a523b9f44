//! A call's completion callback (`on_complete`): queued by the queue once every other
//! action job of the call has settled (lib.lua `settled`), it reads the call's outcomes
//! and sends them, signed, as one webhook. Retried, held and dead-lettered like any
//! webhook; each settling is its own message (`webhook-id` `<job id>.<settling>`).

use aftercall_core::config::Action;
use aftercall_core::payload::{ActionOutcome, COMPLETED_EVENT_NAME, Completion};
use aftercall_core::{ActionJob, AttemptOutcome, Job, JobState, Outcome};
use aftercall_queue::{CallStatus, JobId};

use crate::handler::Ctx;

/// Runs the completion callback `a` of `job`, leased as `id` for its `attempt`.
pub(crate) async fn run(ctx: &Ctx, id: &JobId, attempt: u32, job: &Job, a: &ActionJob) -> Outcome {
    let Action::Webhook(target) = &a.action else {
        return Outcome::permanent("a completion callback is always a webhook");
    };
    let status = match ctx.queue.call_status(&job.call_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Outcome::permanent("the call is no longer stored"),
        Err(e) => return Outcome::retry(format!("reading the call's outcomes: {e}")),
    };
    let (payload, settling) = completion(&status, id.as_str(), &job.agent_id);
    let msg_id = format!("{id}.{settling}");
    ctx.executors
        .webhook
        .send_body(
            &msg_id,
            attempt,
            a.event.traceparent.as_deref(),
            target,
            payload.to_bytes(),
        )
        .await
}

/// The callback's body for the call `status`, and which settling of the call this is
/// (1 for the first; counted in the callback job's own history).
fn completion<'a>(
    status: &'a CallStatus,
    callback: &str,
    agent_id: &'a str,
) -> (Completion<'a>, usize) {
    let mut out = Completion {
        event: COMPLETED_EVENT_NAME,
        call_id: &status.call_id,
        agent_id,
        completed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        delivered: 0,
        skipped: 0,
        dead: 0,
        actions: Vec::with_capacity(status.actions.len()),
    };
    let mut settling = 1;
    for r in &status.actions {
        if r.id == callback {
            settling = r
                .history
                .iter()
                .filter(|h| h.outcome == AttemptOutcome::Settled)
                .count()
                .max(1);
            continue;
        }
        match r.state.state {
            JobState::Delivered => out.delivered += 1,
            JobState::Skipped => out.skipped += 1,
            JobState::Dead => out.dead += 1,
            _ => {}
        }
        out.actions.push(ActionOutcome {
            index: r.action_index.unwrap_or_default(),
            kind: r.kind.clone(),
            job_id: r.id.clone(),
            state: r.state.state.as_str().to_string(),
            attempts: r.attempts,
            reason: r.state.reason.clone(),
            error: (r.state.state == JobState::Dead)
                .then(|| r.last_error().map(str::to_string))
                .flatten(),
        });
    }
    (out, settling)
}
