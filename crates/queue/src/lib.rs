//! aftercall's Redis queue: our own backend (Lua scripts), the producer API, and the
//! operations ops run on it (dead letters, per-call status, stats, agent configs).
//! See ARCHITECTURE.md for the key layout and the job state machine.
//!
//! Where things are:
//! - `config.rs`: [`QueueConfig`], from `AFTERCALL_*` settings; `error.rs`: [`QueueError`];
//! - `handle.rs`: [`Queue`], connecting and what is checked then (`server.rs`: the
//!   Redis's eviction policy and persistence), the shared connection, script plumbing;
//! - `enqueue.rs`: the producer side; `intake.rs`: a call held for its platform's
//!   analysis, and the analysis joining it; `worker.rs`: fetch, finish, fan-out, renew, sweep;
//! - `limits.rs`: per-destination limits; `agents.rs`: agent configs;
//! - `erase.rs`: erasing a call's personal data; `retention.rs`: payload retention;
//! - `limits.rs`: per-destination limits; `destinations.rs`: destination health
//!   (circuit breakers, 429 pauses, operators' pauses); `agents.rs`: agent configs;
//! - `ops.rs`: what ops read and repair (dead letters, per-call status, stats;
//!   `ops/jobs.rs`: reading stored jobs back as records);
//! - `partition.rs`: one queue over several hash tags (calls and jobs to partitions);
//! - `keys.rs`: every key name; `scripts.rs` and `lua/`: the scripts; `conn.rs`: one
//!   connection type over a single Redis or a Redis Cluster.

mod agents;
mod alerts;
mod config;
mod conn;
mod crypt;
mod destinations;
mod enqueue;
mod erase;
mod error;
mod handle;
mod ids;
mod intake;
mod keys;
mod limits;
mod login_codes;
mod oldest;
mod ops;
mod optouts;
mod partition;
mod retention;
mod scripts;
mod server;
mod session;
mod worker;

use chrono::Utc;

pub use config::QueueConfig;
pub use conn::Conn;
pub use crypt::{CryptError, Keyring, Rotation};
pub use destinations::{
    BreakerEvent, DestinationHealth, Gate, GateArgs, Health, Pause, PauseScope, Reported, Verdict,
};
pub use enqueue::Enqueued;
pub use erase::Erased;
pub use error::QueueError;
pub use handle::Queue;
pub use ids::{JobId, LeaseToken};
pub use intake::{AnalysisRecord, Ingested, IntakeOutcome};
pub use keys::Keys;
pub use limits::Limit;
pub use ops::{
    BulkFilter, CallStatus, DeadLetter, DlqFilter, JobRecord, Page, Replay, Stats, WORKER_ALIVE_MS,
    present, redact_job,
};
pub use optouts::{Cap, ContactCheck, OptOut};
pub use partition::MAX_PARTITIONS;
pub use server::{ALLOW_EVICTION, NO_EVICTION, RedisFacts};
pub use session::SessionRecord;
pub use worker::{FanOutRecord, FannedOut, Fetched, Finish, FinishMode, Leased, StateInfo};

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Hides the password of a Redis URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
