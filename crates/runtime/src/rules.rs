//! The follow-up rules a job meets before its executor (docs/rules.md): a condition
//! decided false at fan-out, expiry, and the contact's opt-out. The first two are read
//! from the job itself (only a job past its expiry costs a Redis read: was its replay
//! forced?); an SMS or e-mail costs one script call (`contact.lua`: its opt-out, then its
//! frequency cap).

use aftercall_core::{Job, JobBody, Outcome};
use aftercall_queue::ContactCheck;
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
    if let Some(expired) = expiry(ctx, id, a, job).await {
        return Some(expired);
    }
    let (channel, address) = aftercall_actions::contact(a)?;
    let cap = ctx.cfg.caps.for_channel(channel);
    let check = Box::pin(ctx.queue.check_contact(channel, &address, id, cap)).await;
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    match check {
        Ok(ContactCheck::Send) => None,
        Ok(ContactCheck::OptedOut(o)) => {
            crate::metrics::rule_skip(kind, "opted_out");
            Some(Outcome::skipped(format!(
                "opted out ({channel} since {}, via {})",
                time(o.at),
                o.source
            )))
        }
        Ok(ContactCheck::Capped { earliest_ms }) => {
            crate::metrics::rule_skip(kind, "frequency_cap");
            let cap = cap.expect("capped only under a cap");
            Some(Outcome::skipped(format!(
                "frequency cap: at most {} {channel} per {} to this contact; the earlier message at {}",
                cap.max,
                humantime_short(cap.window),
                time(earliest_ms)
            )))
        }
        Err(e) => {
            warn!(error = %e, "checking the contact's opt-out and cap failed");
            Some(Outcome::retry(format!("checking the contact rules: {e}")))
        }
    }
}

/// The provider refused the recipient as opted out (Twilio's 21610): recorded, so no
/// agent sends to it again.
pub(crate) async fn provider_opted_out(ctx: &Ctx, a: &aftercall_core::ActionJob) {
    let Some((channel, address)) = aftercall_actions::contact(a) else {
        return;
    };
    match ctx.queue.opt_out(channel, &address, "twilio_21610").await {
        Ok(_) => {
            tracing::info!(channel = %channel, "recipient opted out at the provider: recorded")
        }
        Err(e) => warn!(error = %e, "recording the provider's opt-out failed"),
    }
}

/// Skipped as expired, when past `expires_after` and the replay was not forced.
async fn expiry(ctx: &Ctx, id: &str, a: &aftercall_core::ActionJob, job: &Job) -> Option<Outcome> {
    let kind = a.action.kind();
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
        if s >= per && s.is_multiple_of(per) {
            return format!("{}{unit}", s / per);
        }
    }
    format!("{s}s")
}
