//! Settling an attempt: what its outcome does to the job (the transition) and what the
//! job's history records of it (the attempt). A pure function of the outcome, the
//! attempt number, the job's budget, the retry policy, a random draw and the time.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{Attempt, AttemptOutcome, Outcome};
use crate::retry::RetryPolicy;

/// A job's state as stored (the queue's Lua scripts write the same names).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    #[default]
    Queued,
    Running,
    Scheduled,
    /// A call's completion callback (`on_complete`), until the call's actions settle.
    Waiting,
    Delivered,
    Skipped,
    FannedOut,
    Dead,
    Purged,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Scheduled => "scheduled",
            JobState::Waiting => "waiting",
            JobState::Delivered => "delivered",
            JobState::Skipped => "skipped",
            JobState::FannedOut => "fanned_out",
            JobState::Dead => "dead",
            JobState::Purged => "purged",
        }
    }
}

/// Compared with the names the scripts and the JSON use.
impl PartialEq<str> for JobState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for JobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an attempt does to its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Done: delivered, with what the destination said.
    Delivered { detail: Option<String> },
    /// Done: nothing to send, and why.
    Skipped { reason: String },
    /// Done: a call-ended job became this many action jobs.
    FannedOut { actions: usize },
    /// Scheduled to run again at `run_at`, `delay` from now.
    Retry {
        delay: Duration,
        run_at: DateTime<Utc>,
        error: String,
    },
    /// Dead-lettered; `exhausted` when the budget ran out (rather than a permanent
    /// failure), and `error` as the job's state shows it.
    Dead { error: String, exhausted: bool },
}

impl Transition {
    /// The state the job is in after the transition.
    pub fn state(&self) -> JobState {
        match self {
            Transition::Delivered { .. } => JobState::Delivered,
            Transition::Skipped { .. } => JobState::Skipped,
            Transition::FannedOut { .. } => JobState::FannedOut,
            Transition::Retry { .. } => JobState::Scheduled,
            Transition::Dead { .. } => JobState::Dead,
        }
    }
}

/// A settled attempt. The attempt's `duration_ms` and `worker` are left for the caller,
/// which knows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub transition: Transition,
    pub attempt: Attempt,
}

/// Settles attempt number `attempt` (1-based) of a job allowed `budget` attempts: a
/// transient failure is retried after `policy`'s delay (`rand01` uniform in [0, 1),
/// the jitter) until the budget is spent, then dead-lettered.
pub fn settle(
    outcome: Outcome,
    attempt: u32,
    budget: u32,
    policy: &RetryPolicy,
    rand01: f64,
    now: DateTime<Utc>,
) -> Settled {
    let record = |outcome, status, error, response| Attempt {
        status,
        error,
        response,
        ..Attempt::new(attempt, outcome, now)
    };
    match outcome {
        Outcome::Delivered { status, detail } => Settled {
            attempt: record(AttemptOutcome::Delivered, status, None, detail.clone()),
            transition: Transition::Delivered { detail },
        },
        Outcome::Skipped { reason } | Outcome::OptedOut { reason } => Settled {
            attempt: record(AttemptOutcome::Skipped, None, Some(reason.clone()), None),
            transition: Transition::Skipped { reason },
        },
        Outcome::Permanent {
            error,
            status,
            snippet,
        } => Settled {
            attempt: record(AttemptOutcome::Failed, status, Some(error.clone()), snippet),
            transition: Transition::Dead {
                error,
                exhausted: false,
            },
        },
        Outcome::Retry {
            error,
            status,
            snippet,
            ..
        } if attempt >= budget => Settled {
            transition: Transition::Dead {
                error: format!("gave up after {attempt} attempts; last error: {error}"),
                exhausted: true,
            },
            attempt: record(AttemptOutcome::Failed, status, Some(error), snippet),
        },
        Outcome::Retry {
            error,
            status,
            retry_after,
            snippet,
        } => {
            let delay = policy.delay(attempt, retry_after, rand01);
            let run_at = now + TimeDelta::milliseconds(delay.as_millis() as i64);
            let mut attempt = record(AttemptOutcome::Retry, status, Some(error.clone()), snippet);
            attempt.next_run_at = Some(run_at);
            Settled {
                attempt,
                transition: Transition::Retry {
                    delay,
                    run_at,
                    error,
                },
            }
        }
    }
}

impl Settled {
    /// A call-ended job's attempt that fanned it out into `actions` action jobs.
    pub fn fanned_out(attempt: u32, actions: usize, now: DateTime<Utc>) -> Settled {
        Settled {
            transition: Transition::FannedOut { actions },
            attempt: Attempt::new(attempt, AttemptOutcome::Delivered, now),
        }
    }

    /// A job that could not be decoded: dead at once, whatever its budget.
    pub fn undecodable(attempt: u32, error: &str, now: DateTime<Utc>) -> Settled {
        let error = format!("undecodable job: {error}");
        Settled {
            attempt: Attempt {
                error: Some(error.clone()),
                ..Attempt::new(attempt, AttemptOutcome::Undecodable, now)
            },
            transition: Transition::Dead {
                error,
                exhausted: false,
            },
        }
    }

    /// An attempt cut off by shutdown: it may have reached its destination, so it counts,
    /// and the job runs again at once (the next attempt carries the same delivery id).
    pub fn interrupted(attempt: u32, now: DateTime<Utc>) -> Settled {
        let error =
            "interrupted: the worker shut down before the attempt finished (grace period over)";
        Settled {
            attempt: Attempt {
                error: Some(error.into()),
                ..Attempt::new(attempt, AttemptOutcome::Retry, now)
            },
            transition: Transition::Retry {
                delay: Duration::ZERO,
                run_at: now,
                error: error.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn retry(error: &str, status: Option<u16>, retry_after: Option<u64>) -> Outcome {
        Outcome::Retry {
            error: error.into(),
            status,
            retry_after: retry_after.map(Duration::from_secs),
            snippet: Some("busy".into()),
        }
    }

    #[test]
    fn table() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let now = at(1_000_000);
        let min = |m: i64| Some(at(1_000_000 + m * 60_000));
        let dead = |e: &str, exhausted| Transition::Dead {
            error: e.into(),
            exhausted,
        };
        let retry_in = |m: u64, e: &str| Transition::Retry {
            delay: Duration::from_secs(m * 60),
            run_at: min(m as i64).unwrap(),
            error: e.into(),
        };
        use AttemptOutcome as A;
        #[rustfmt::skip]
        let cases = [
            // outcome, attempt, budget => transition, recorded outcome, status, error, response, next run
            (Outcome::Delivered { status: Some(200), detail: Some("ok".into()) }, 1, 8,
             Transition::Delivered { detail: Some("ok".into()) }, A::Delivered, Some(200), None, Some("ok"), None),
            (Outcome::skipped("no email"), 3, 8,
             Transition::Skipped { reason: "no email".into() }, A::Skipped, None, Some("no email"), None, None),
            (Outcome::Permanent { error: "410".into(), status: Some(410), snippet: Some("gone".into()) }, 1, 8,
             dead("410", false), A::Failed, Some(410), Some("410"), Some("gone"), None),
            (retry("503", Some(503), None), 1, 8,
             retry_in(1, "503"), A::Retry, Some(503), Some("503"), Some("busy"), min(1)),
            (retry("503", Some(503), None), 2, 8,
             retry_in(4, "503"), A::Retry, Some(503), Some("503"), Some("busy"), min(4)),
            // The server's Retry-After wins (rand 0: no added jitter).
            (retry("429", Some(429), Some(600)), 1, 8,
             retry_in(10, "429"), A::Retry, Some(429), Some("429"), Some("busy"), min(10)),
            (retry("503", None, None), 7, 8,
             retry_in(8 * 60, "503"), A::Retry, None, Some("503"), Some("busy"), min(8 * 60)),
            // The last attempt of the budget, and past it (a budget lowered since).
            (retry("503", None, None), 8, 8,
             dead("gave up after 8 attempts; last error: 503", true), A::Failed, None, Some("503"), Some("busy"), None),
            (retry("timeout", None, None), 3, 2,
             dead("gave up after 3 attempts; last error: timeout", true), A::Failed, None, Some("timeout"), Some("busy"), None),
            (retry("timeout", None, None), 1, 1,
             dead("gave up after 1 attempts; last error: timeout", true), A::Failed, None, Some("timeout"), Some("busy"), None),
        ];
        for (i, (outcome, attempt, budget, transition, recorded, status, error, response, next)) in
            cases.into_iter().enumerate()
        {
            let s = settle(outcome, attempt, budget, &policy, 0.0, now);
            assert_eq!(s.transition, transition, "case {i}");
            let want = Attempt {
                attempt,
                at: now,
                outcome: recorded,
                status,
                error: error.map(Into::into),
                response: response.map(Into::into),
                duration_ms: None,
                worker: None,
                next_run_at: next,
            };
            assert_eq!(s.attempt, want, "case {i}");
        }
    }

    #[test]
    fn jitter_comes_from_the_draw() {
        let p = RetryPolicy::default();
        let now = at(0);
        let delay = |r| match settle(retry("x", None, None), 2, 8, &p, r, now).transition {
            Transition::Retry { delay, run_at, .. } => {
                assert_eq!(run_at, now + TimeDelta::from_std(delay).unwrap());
                delay
            }
            t => panic!("{t:?}"),
        };
        assert_eq!(delay(0.5), Duration::from_secs(240));
        assert!(delay(0.0) < delay(0.99));
    }

    #[test]
    fn fan_outs_undecodable_jobs_and_interruptions() {
        let now = at(5_000);
        let f = Settled::fanned_out(1, 3, now);
        assert_eq!(f.transition, Transition::FannedOut { actions: 3 });
        assert_eq!(f.transition.state(), JobState::FannedOut);
        assert_eq!(
            (f.attempt.outcome, f.attempt.error),
            (AttemptOutcome::Delivered, None)
        );

        let u = Settled::undecodable(1, "expected value", now);
        assert_eq!(
            u.transition,
            Transition::Dead {
                error: "undecodable job: expected value".into(),
                exhausted: false
            }
        );
        assert_eq!(u.attempt.outcome, AttemptOutcome::Undecodable);
        assert_eq!(
            u.attempt.error,
            Some("undecodable job: expected value".into())
        );

        let i = Settled::interrupted(4, now);
        let Transition::Retry {
            delay,
            run_at,
            error,
        } = &i.transition
        else {
            panic!("{:?}", i.transition)
        };
        assert_eq!((*delay, *run_at), (Duration::ZERO, now));
        assert!(error.starts_with("interrupted: "));
        assert_eq!(i.attempt.error.as_ref(), Some(error));
        assert_eq!(
            (i.attempt.attempt, i.attempt.outcome),
            (4, AttemptOutcome::Retry)
        );
        assert_eq!(i.attempt.next_run_at, None);
    }

    #[test]
    fn states_are_stored_by_name() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Scheduled,
            JobState::Delivered,
            JobState::Skipped,
            JobState::FannedOut,
            JobState::Dead,
            JobState::Purged,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<JobState>(&json).unwrap(), s);
        }
    }
}
