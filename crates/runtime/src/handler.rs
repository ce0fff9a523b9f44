//! One job, start to finish: decode, fan out or execute, classify, and record the
//! outcome in Redis under the job's lease.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use aftercall_actions::Executors;
use aftercall_core::job::{FanOut, fan_out};
use aftercall_core::{
    Attempt, AttemptOutcome, Job, JobBody, JobState, Outcome, Settled, Transition,
};
use aftercall_queue::{
    BreakerEvent, FannedOut, Finish, FinishMode, GateArgs, Health, JobId, LeaseToken, Leased,
    PauseScope, Queue, StateInfo, Verdict, now_ms,
};
use chrono::Utc;
use futures::FutureExt;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::WorkerConfig;
use crate::leases::{Leases, Stage};

/// Shared by every job of a worker process.
pub(crate) struct Ctx {
    pub queue: Queue,
    pub executors: Executors,
    pub cfg: WorkerConfig,
    /// Every job this process holds, for renewal and shutdown.
    pub leases: Arc<Leases>,
    /// Outcomes, fan-outs and agent reads: many jobs per Redis call.
    pub acker: crate::acker::Acker,
    pub fan_outs: crate::acker::FanOuts,
    pub agents: crate::acker::Agents,
    /// OpenTelemetry's exporter, when the environment asks for one.
    pub otel: Option<Arc<crate::otel::Otel>>,
    /// This process's recent view of destination health (the state is in Redis).
    pub health: crate::breakers::View,
    /// Operational alerts, sent off the jobs' path.
    pub alerts: crate::alerts::Alerts,
}

/// Runs one leased job to a recorded outcome, then the action job its fan-out claimed,
/// if any. Never fails: infrastructure errors while recording leave the lease to expire,
/// which re-runs the job and counts the attempt.
pub(crate) async fn process(ctx: &Ctx, mut leased: Leased) {
    let decoded = if let Some(why) = leased.unreadable.take() {
        Err(why)
    } else if leased.data.is_empty() {
        // Leased from the ready list without data (a corrupt queue): dead-lettered here,
        // in view, rather than dropped by the fetch.
        Err("no data is stored under its id".to_string())
    } else {
        let call_ended = leased.call_ended.as_deref().map(str::as_bytes);
        Job::decode(leased.data.as_bytes(), call_ended).map(Box::new)
    };
    // The stored JSON is not needed past here: not kept for the length of a slow request.
    leased.data = String::new();
    leased.call_ended = None;
    let mut next = Some((leased, decoded));
    // Then the job a fan-out claimed, in this job's slot, as if fetched: no fetch, no
    // decode.
    while let Some((leased, decoded)) = next {
        ctx.leases.advance(&leased.id, Stage::Started);
        next = run(ctx, leased, decoded)
            .await
            .map(|(leased, job)| (leased, Ok(job)));
    }
}

/// One job's attempt, in its span; returns the action job a fan-out claimed.
async fn run(
    ctx: &Ctx,
    leased: Leased,
    decoded: Result<Box<Job>, String>,
) -> Option<(Leased, Box<Job>)> {
    let (call_id, kind) = match &decoded {
        Ok(j) => (j.call_id.clone(), j.kind()),
        Err(_) => (String::new(), "unknown"),
    };
    let trace_id = match &decoded {
        Ok(j) => match &j.body {
            JobBody::CallEnded { event } => event.traceparent.clone(),
            JobBody::Action(a) => a.event.traceparent.clone(),
        },
        Err(_) => None,
    };
    let trace_id = trace_id
        .as_deref()
        .and_then(aftercall_core::event::parse_traceparent)
        .map(|(t, _)| t.to_string());
    // The producer's trace id (W3C traceparent), so the job's logs join its trace.
    let span = info_span!("job", job_id = %leased.id, call_id = %call_id, action = kind, attempt = leased.attempt, trace_id = trace_id.as_deref());
    async {
        let started = Instant::now();
        let mut claimed = None;
        let mut ruled = match &decoded {
            Ok(job) => crate::rules::before_start(ctx, &leased.id, job).await,
            Err(_) => None,
        };
        let finish = match decoded {
            Err(e) => {
                error!(error = %e, "undecodable job: dead-lettering it");
                let settled = Settled::undecodable(leased.attempt, &e, Utc::now());
                let (id, token) = (leased.id.clone(), leased.token.clone());
                Some(finish(id, token, settled, &ctx.cfg.worker_id, Some(started)))
            }
            // Skipped (or retried) by a rule before it ran: no executor, no destination.
            Ok(job) if ruled.is_some() => {
                let outcome = ruled.take().expect("checked by the guard");
                let settled = settle(ctx, &leased, outcome);
                observe(kind, &settled, "", job.created_at, started);
                trace(ctx, &job, &leased, kind, &settled, started);
                Some(record(ctx, &leased, kind, settled, started))
            }
            Ok(job) => match &job.body {
                JobBody::CallEnded { event } => {
                    let (finish, next) = run_fan_out(ctx, &leased, &job, event, started).await;
                    claimed = next;
                    finish
                }
                JobBody::Action(action_job) => {
                    if let Some(f) = quiet_hours(&leased, kind, action_job) {
                        apply(ctx, f).await;
                        ctx.leases.release(&leased.id);
                        return None;
                    }
                    let dest = aftercall_actions::destination(action_job);
                    // The destination's health and the operators' pauses first: a job
                    // they hold is not an attempt (boxed, as the limit's below).
                    let breaker = ctx.cfg.breakers.for_destination(&dest);
                    let probe =
                        match Box::pin(gate(ctx, &leased, &job, kind, &dest, started)).await {
                            Gated::Run { probe } => probe,
                            Gated::Stop(f) => {
                                apply(ctx, *f).await;
                                ctx.leases.release(&leased.id);
                                return None;
                            }
                        };
                    let limit = ctx.cfg.limits.for_destination(&dest);
                    // The limit's round trips boxed: only limited destinations pay for
                    // their futures, not every job's (see `process`).
                    if let Some(limit) = limit
                        && let Some(f) = Box::pin(hold_back(ctx, &leased, kind, &dest, limit)).await {
                            apply(ctx, f).await;
                            ctx.leases.release(&leased.id);
                            return None;
                        }
                    let run = async {
                        if action_job.completion {
                            Box::pin(crate::completion::run(
                                ctx,
                                &leased.id,
                                leased.attempt,
                                &job,
                                action_job,
                            ))
                            .await
                        } else {
                            ctx.executors
                                .execute(&leased.id, leased.attempt, action_job)
                                .await
                        }
                    };
                    let outcome = match AssertUnwindSafe(run).catch_unwind().await {
                        Ok(o) => o,
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown panic".into());
                            error!(panic = %msg, "action panicked");
                            Outcome::retry(format!("executor panicked: {msg}"))
                        }
                    };
                    if let Outcome::OptedOut { .. } = &outcome {
                        Box::pin(crate::rules::provider_opted_out(ctx, action_job)).await;
                    }
                    if limit.is_some()
                        && let Err(e) = Box::pin(ctx.queue.release_slot(&dest, &slot_token(&leased))).await {
                            warn!(error = %e, "giving back a destination slot failed; it expires on its own");
                        }
                    Box::pin(report(ctx, &dest, breaker, &outcome)).await;
                    if probe && let Outcome::Retry { error, .. } = &outcome {
                        // A failed probe is the breaker's, not the job's: held again,
                        // its attempt not counted.
                        warn!(destination = %dest, error = %error, "probe failed: the circuit stays open");
                        let run_at = now_ms() + 100 + (rand::random::<u64>() % 400) as i64;
                        let reason = format!("held: the probe of {dest} failed: {error}");
                        apply(ctx, held(&leased, run_at, reason)).await;
                        ctx.leases.release(&leased.id);
                        return None;
                    }
                    let settled = settle(ctx, &leased, outcome);
                    observe(kind, &settled, &dest, job.created_at, started);
                    trace(ctx, &job, &leased, kind, &settled, started);
                    Some(record(ctx, &leased, kind, settled, started))
                }
            },
        };
        if let Some(f) = finish {
            apply(ctx, f).await;
        }
        ctx.leases.release(&leased.id);
        claimed
    }
    .instrument(span)
    .await
}

/// An SMS or e-mail due inside its agent's quiet hours: the finish that puts it off to
/// the window's end, visibly and without counting the attempt.
fn quiet_hours(
    leased: &Leased,
    kind: &'static str,
    job: &aftercall_core::ActionJob,
) -> Option<Finish> {
    if !matches!(
        job.action,
        aftercall_core::Action::Sms(_) | aftercall_core::Action::Email(_)
    ) {
        return None;
    }
    let until = job.quiet_hours.as_ref()?.until(
        Utc::now(),
        job.event.caller_number.as_deref(),
        job.utc_offset.as_deref(),
    )?;
    crate::metrics::quiet_deferred(kind);
    let reason = format!(
        "deferred by quiet hours until {}",
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    Some(held(leased, until.timestamp_millis(), reason))
}

/// Takes a slot of a limited destination; when none is free, returns the finish that
/// puts the job back a little later without counting the attempt.
async fn hold_back(
    ctx: &Ctx,
    leased: &Leased,
    kind: &'static str,
    dest: &str,
    limit: aftercall_queue::Limit,
) -> Option<Finish> {
    match ctx
        .queue
        .acquire_slot(dest, &slot_token(leased), crate::limits::SLOT_HOLD, limit)
        .await
    {
        Ok(true) => None,
        res => {
            if let Err(e) = res {
                warn!(error = %e, "checking the destination limit failed; trying again shortly");
            }
            crate::metrics::held_back(kind);
            let run_at = now_ms() + 100 + (rand::random::<u64>() % 400) as i64;
            Some(held(
                leased,
                run_at,
                format!("held back by the limit for {dest}"),
            ))
        }
    }
}

/// What the gate decided of one job.
enum Gated {
    /// Run it (`probe`: as the half-open breaker's probe).
    Run { probe: bool },
    /// Record this instead: held, or dead-lettered past its horizon.
    Stop(Box<Finish>),
}

/// Asks whether the job's destination may be sent to now (its breaker, its 429 pause,
/// the operators' pauses); when not, returns the finish that holds the job without
/// counting the attempt, or, past its horizon (`AFTERCALL_MAX_HOLD`), dead-letters it.
/// A destination this process saw healthy within the last moment, with no pause that
/// could apply, costs no Redis call. A failing Redis lets the job run.
async fn gate(
    ctx: &Ctx,
    leased: &Leased,
    job: &Job,
    kind: &'static str,
    dest: &str,
    started: Instant,
) -> Gated {
    const GO: Gated = Gated::Run { probe: false };
    let pauses = match ctx.health.pauses() {
        Some(p) => p,
        None => match ctx.queue.pauses().await {
            Ok(p) => {
                ctx.health.saw_pauses(p.clone());
                p
            }
            Err(e) => {
                warn!(error = %e, "reading pauses failed; running the job");
                return GO;
            }
        },
    };
    // Usually none: then no scope is built.
    let paused = !pauses.is_empty() && {
        let scopes = [
            PauseScope::Destination(dest.to_string()),
            PauseScope::Agent(job.agent_id.clone()),
            PauseScope::Action(kind.to_string()),
        ]
        .map(|s| s.key());
        pauses.iter().any(|p| scopes.contains(&p.scope))
    };
    if !paused && ctx.health.healthy(dest) {
        return GO;
    }
    let hold = chrono::TimeDelta::from_std(ctx.cfg.max_hold).unwrap_or(chrono::TimeDelta::MAX);
    let deadline = job
        .created_at
        .checked_add_signed(hold)
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
    let args = GateArgs {
        destination: dest,
        job_id: &leased.id,
        agent_id: &job.agent_id,
        action: kind,
        probe: ctx.cfg.actions.http.timeout + PROBE_MARGIN,
        recheck: PAUSED_RECHECK,
        deadline_ms: deadline.timestamp_millis(),
    };
    let g = match ctx.queue.gate(args).await {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "checking the destination's health failed; running the job");
            return GO;
        }
    };
    let since = || {
        chrono::DateTime::from_timestamp_millis(g.since_ms)
            .unwrap_or_else(Utc::now)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let reason = match g.verdict {
        Verdict::Go => {
            ctx.health.saw(dest, g.streak == 0);
            return GO;
        }
        Verdict::Probe => {
            ctx.health.saw(dest, false);
            info!(
                destination = dest,
                "circuit half-open: this job probes the destination"
            );
            return Gated::Run { probe: true };
        }
        Verdict::Expired => {
            let error = format!("destination unavailable since {}", since());
            let settled = settle(ctx, leased, Outcome::permanent(error));
            observe(kind, &settled, dest, job.created_at, started);
            trace(ctx, job, leased, kind, &settled, started);
            return Gated::Stop(Box::new(record(ctx, leased, kind, settled, started)));
        }
        Verdict::Open => format!(
            "held: {dest} is unavailable (circuit open since {})",
            since()
        ),
        Verdict::Throttled => format!("held: {dest} asked to wait (429 or Retry-After)"),
        Verdict::Paused => format!("held: paused since {}", since()),
    };
    ctx.health.saw(dest, false);
    crate::metrics::held_by_destination(kind, g.verdict);
    debug!(destination = dest, reason = %reason, "held");
    // Spread over a moment, so a destination's held jobs do not all come back at once.
    let run_at = g.until_ms.max(now_ms()) + (rand::random::<u64>() % 500) as i64;
    Gated::Stop(Box::new(held(leased, run_at, reason)))
}

/// The finish that runs a held job again at `run_at` (Unix ms), its attempt not counted.
fn held(leased: &Leased, run_at: i64, reason: String) -> Finish {
    let mut st = StateInfo::new(JobState::Scheduled);
    st.run_at = Some(run_at);
    st.reason = Some(reason);
    Finish {
        mode: FinishMode::Defer,
        id: leased.id.clone(),
        token: leased.token.clone(),
        run_at_ms: run_at,
        state: st,
        attempt: None,
    }
}

/// How long past the HTTP timeout a probe may take before another job probes instead.
const PROBE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);
/// How often paused work looks again.
const PAUSED_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Records what an attempt said of its destination's health: failures count towards
/// its breaker, a 429 or `Retry-After` pauses it for every replica, a success closes it.
/// A success at a destination seen healthy a moment ago costs nothing.
async fn report(
    ctx: &Ctx,
    dest: &str,
    breaker: Option<crate::breakers::Breaker>,
    outcome: &Outcome,
) {
    let max_pause = ctx.cfg.queue.retry.max_retry_after;
    let Some((health, pause_until)) = crate::breakers::health_of(outcome, now_ms(), max_pause)
    else {
        return;
    };
    if health == Health::Ok && ctx.health.healthy(dest) {
        return;
    }
    let error = match outcome {
        Outcome::Retry { error, .. } | Outcome::Permanent { error, .. } => error.as_str(),
        _ => "",
    };
    let (threshold, cooldown) =
        breaker.map_or((0, Default::default()), |b| (b.failures, b.cooldown));
    match ctx
        .queue
        .report(dest, health, error, threshold, cooldown, pause_until)
        .await
    {
        Ok(r) => {
            ctx.health.saw(
                dest,
                r.state == "closed" && r.streak == 0 && pause_until == 0,
            );
            match r.event {
                Some(BreakerEvent::Opened) => {
                    crate::metrics::circuit(dest, "opened");
                    ctx.alerts.send(crate::alerts::Alert::Circuit {
                        destination: dest.to_string(),
                        opened: true,
                        failures: r.streak,
                        error: error.to_string(),
                    });
                    warn!(
                        destination = dest,
                        failures = r.streak,
                        cooldown_ms = cooldown.as_millis() as u64,
                        "circuit opened: holding the destination's jobs"
                    );
                }
                Some(BreakerEvent::Closed) => {
                    crate::metrics::circuit(dest, "closed");
                    ctx.alerts.send(crate::alerts::Alert::Circuit {
                        destination: dest.to_string(),
                        opened: false,
                        failures: 0,
                        error: String::new(),
                    });
                    info!(
                        destination = dest,
                        "circuit closed: the destination answers again"
                    );
                }
                None => {}
            }
        }
        Err(e) => warn!(error = %e, "recording the destination's health failed"),
    }
}

/// Unique per job and attempt (a lease token alone is shared by a worker's jobs).
fn slot_token(leased: &Leased) -> String {
    format!("{}/{}", leased.id, leased.token)
}

/// Metrics of one attempt: outcome, duration, latency since enqueue, destination errors.
fn observe(
    kind: &'static str,
    settled: &Settled,
    dest: &str,
    created_at: chrono::DateTime<Utc>,
    started: Instant,
) {
    let label = match settled.transition {
        Transition::Delivered { .. } | Transition::FannedOut { .. } => "delivered",
        Transition::Skipped { .. } => "skipped",
        Transition::Retry { .. } => "retry",
        Transition::Dead { .. } => "dead",
    };
    crate::metrics::attempt(kind, label, started.elapsed());
    if label != "retry" {
        crate::metrics::delivery_latency(
            kind,
            (Utc::now() - created_at).to_std().unwrap_or_default(),
        );
    }
    if matches!(
        settled.attempt.outcome,
        AttemptOutcome::Retry | AttemptOutcome::Failed
    ) {
        crate::metrics::destination_error(kind, dest);
    }
}

/// The attempt's spans (and the job's, after its last), when traces are exported.
fn trace(
    ctx: &Ctx,
    job: &Job,
    leased: &Leased,
    kind: &'static str,
    settled: &Settled,
    started: Instant,
) {
    if let Some(otel) = &ctx.otel {
        otel.attempt(job, leased.attempt, kind, settled, started);
    }
}

/// Settles an action's outcome against the job's budget and the retry policy.
fn settle(ctx: &Ctx, leased: &Leased, outcome: Outcome) -> Settled {
    aftercall_core::settle(
        outcome,
        leased.attempt,
        leased.max_attempts,
        &ctx.cfg.queue.retry,
        rand::random::<f64>(),
        Utc::now(),
    )
}

/// Logs a settled attempt and returns the finish that records it.
fn record(
    ctx: &Ctx,
    leased: &Leased,
    kind: &'static str,
    settled: Settled,
    started: Instant,
) -> Finish {
    let a = &settled.attempt;
    let (status, error) = (a.status, a.error.as_deref().unwrap_or_default());
    match &settled.transition {
        Transition::Delivered { .. } | Transition::FannedOut { .. } => info!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "delivered"
        ),
        Transition::Skipped { reason } => info!(reason = %reason, "skipped"),
        Transition::Dead {
            exhausted: false, ..
        } => error!(status, error = %error, "permanent failure: dead-lettered"),
        Transition::Dead {
            exhausted: true, ..
        } => {
            error!(status, error = %error, attempts = leased.attempt, "gave up: dead-lettered")
        }
        Transition::Retry { delay, .. } => {
            crate::metrics::retry_delay(kind, *delay);
            warn!(status, error = %error, retry_in_ms = delay.as_millis() as u64, "will retry");
        }
    }
    finish(
        leased.id.clone(),
        leased.token.clone(),
        settled,
        &ctx.cfg.worker_id,
        Some(started),
    )
}

async fn run_fan_out(
    ctx: &Ctx,
    leased: &Leased,
    job: &Job,
    event: &std::sync::Arc<aftercall_core::CallEvent>,
    started: Instant,
) -> (Option<Finish>, Option<(Leased, Box<Job>)>) {
    let w = &ctx.cfg.worker_id;
    // The batcher's own failure or the read's, reported alike.
    let read = ctx.agents.call(job.agent_id.clone()).await;
    let config = match read.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(c) => c,
        Err(e) => {
            let outcome = Outcome::retry(format!("reading agent config: {e}"));
            let settled = settle(ctx, leased, outcome);
            trace(ctx, job, leased, "call_ended", &settled, started);
            return (
                Some(record(ctx, leased, "call_ended", settled, started)),
                None,
            );
        }
    };
    let now = Utc::now();
    let (jobs, settled) = match fan_out(job, event, config.as_deref(), now) {
        FanOut::Skip(reason) => {
            info!(reason = %reason, "call skipped");
            (Vec::new(), settle(ctx, leased, Outcome::skipped(reason)))
        }
        FanOut::Jobs(jobs) => {
            info!(actions = jobs.len(), "fanned out");
            let settled = Settled::fanned_out(leased.attempt, jobs.len(), now);
            (jobs, settled)
        }
    };
    trace(ctx, job, leased, "call_ended", &settled, started);
    let (_, _, state, attempt) = stored(settled, w, Some(started));
    // The first action due now is leased to this worker by the fan-out, and run next.
    let claim = jobs.iter().any(|(_, delay)| delay.is_none());
    let record = aftercall_queue::FanOutRecord {
        parent_id: leased.id.clone(),
        token: leased.token.clone(),
        call_id: job.call_id.clone(),
        jobs,
        state,
        attempt,
        claim: claim.then(|| (w.clone(), ctx.cfg.lease)),
    };
    ctx.leases.advance(&leased.id, Stage::Recording);
    let claimed = match ctx.fan_outs.call(record).await {
        Ok((FannedOut::Applied, _)) => None,
        Ok((FannedOut::Claimed(l), Some(job))) => Some((l, job)),
        Ok((FannedOut::Claimed(l), None)) => {
            // Cannot happen (the script claims one of the record's jobs); if it did,
            // the lease expires and the job runs again from the queue.
            error!(job_id = %l.id, "fan-out claimed a job this worker did not create");
            None
        }
        Ok((FannedOut::Stale, _)) => {
            warn!("lease lost before fan-out was recorded; another worker owns the job");
            None
        }
        Err(e) => {
            warn!(error = %e, "recording fan-out failed; the lease will expire and the job re-run");
            None
        }
    };
    (None, claimed)
}

/// The finish that records a settled attempt of job `id` under `token`.
pub(crate) fn finish(
    id: JobId,
    token: LeaseToken,
    settled: Settled,
    worker: &str,
    started: Option<Instant>,
) -> Finish {
    let (mode, run_at_ms, state, attempt) = stored(settled, worker, started);
    Finish {
        mode,
        id,
        token,
        run_at_ms,
        state,
        attempt: Some(attempt),
    }
}

/// A settled attempt as the queue stores it: the finish's mode and run-at time, the
/// job's new state, and the attempt stamped with the worker and, when known, how long
/// it took.
fn stored(
    settled: Settled,
    worker: &str,
    started: Option<Instant>,
) -> (FinishMode, i64, StateInfo, Attempt) {
    let Settled {
        transition,
        mut attempt,
    } = settled;
    attempt.worker = Some(worker.to_string());
    attempt.duration_ms = started.map(|s| s.elapsed().as_millis() as u64);
    let mut state = StateInfo::new(transition.state());
    let (mode, run_at_ms) = match transition {
        Transition::Delivered { detail } => {
            state.reason = detail;
            (FinishMode::Done, 0)
        }
        Transition::Skipped { reason } => {
            state.reason = Some(reason);
            (FinishMode::Done, 0)
        }
        Transition::FannedOut { actions } => {
            state.actions = Some(actions);
            (FinishMode::Done, 0)
        }
        Transition::Retry { run_at, error, .. } => {
            state.run_at = Some(run_at.timestamp_millis());
            state.error = Some(error);
            (FinishMode::Retry, run_at.timestamp_millis())
        }
        Transition::Dead { error, .. } => {
            state.error = Some(error);
            (FinishMode::Dead, 0)
        }
    };
    (mode, run_at_ms, state, attempt)
}

/// Records a finish through the acker, which batches it with other jobs' finishes and
/// retries briefly through Redis blips.
async fn apply(ctx: &Ctx, f: Finish) {
    ctx.leases.advance(&f.id, Stage::Recording);
    let dead = (f.mode == FinishMode::Dead).then(|| f.id.clone());
    match ctx.acker.call(f).await {
        Ok(true) => {
            debug!("outcome recorded");
            if let Some(id) = dead {
                ctx.alerts.send(crate::alerts::Alert::Dead { id });
            }
        }
        Ok(false) => {
            warn!("lease lost before the outcome was recorded; another worker owns the job")
        }
        Err(e) => {
            error!(error = %e, "could not record outcome; the lease will expire and the job re-run")
        }
    }
}
