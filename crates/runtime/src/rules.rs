//! The follow-up rules a job meets before its executor (docs/rules.md): a condition
//! decided false at fan-out, and expiry. Both are read from the job itself; only a job
//! past its expiry costs a Redis read (was its replay forced?).

use aftercall_core::{Job, JobBody, Outcome};
use chrono::Utc;
use tracing::warn;

use crate::handler::Ctx;

/// The outcome the rules give the job before it runs, if any: skipped as decided at
/// fan-out, or as expired.
pub(crate) async fn before_start(ctx: &Ctx, id: &str, job: &Job) -> Option<Outcome> {
    let JobBody::Action(a) = &job.body else {
        return None;
    };
    let kind = a.action.kind();
    if let Some(reason) = &a.skip {
        crate::metrics::rule_skip(kind, "condition");
        return Some(Outcome::skipped(reason.clone()));
    }
    let expires_at = a.expires_at(job.created_at)?;
    let now = Utc::now();
    if now < expires_at {
        return None;
    }
    // Boxed: only an expired job's future carries the read.
    match Box::pin(ctx.queue.replay_forced(id)).await {
        Ok(true) => return None,
        Ok(false) => {}
        Err(e) => {
            // Not sent on doubt: the job is retried and the read made again.
            warn!(error = %e, "reading whether the replay was forced failed");
            return Some(Outcome::retry(format!("checking expiry: {e}")));
        }
    }
    crate::metrics::rule_skip(kind, "expired");
    let after = a.action.expires_after().unwrap_or_default();
    Some(Outcome::skipped(format!(
        "expired (expires_after {} passed at {}); replay with force to send anyway",
        humantime_short(after),
        expires_at.format("%Y-%m-%dT%H:%M:%SZ")
    )))
}

/// `90s`, `15m`, `2h`, `1d`: the largest unit that divides the duration.
fn humantime_short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    for (unit, per) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= per && s % per == 0 {
            return format!("{}{unit}", s / per);
        }
    }
    format!("{s}s")
}
