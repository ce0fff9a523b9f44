//! Action jobs as the worker hands them to an executor, and outcomes by name, for the
//! executors' tests.

use aftercall_core::config::Action;
use aftercall_core::{ActionJob, CallEvent, Outcome};

/// The job of `action` (its first) for `event`, from agent "Acme Support" with no other
/// agent settings.
pub fn action_job(event: CallEvent, action: Action) -> ActionJob {
    ActionJob {
        index: 0,
        action,
        event: event.into(),
        agent_name: Some("Acme Support".into()),
        date_format: None,
        utc_offset: None,
        email_from: None,
        skip: None,
        quiet_hours: None,
        completion: false,
    }
}

/// `delivered`, `retry`, `permanent`, `skipped` or `opted_out`.
pub fn outcome_kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::Permanent { .. } => "permanent",
        Outcome::Skipped { .. } => "skipped",
        Outcome::OptedOut { .. } => "opted_out",
    }
}
