//! The lease book: every job this process holds (buffered, claimed by a fan-out, or
//! running), by id, with its lease token and how far it got. Renewal reads it; shutdown
//! empties it, returning what was never started and counting what was cut off.

use std::collections::HashMap;
use std::sync::Mutex;

use aftercall_queue::{JobId, LeaseToken, Leased};

/// How far a held job got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Leased, not started: at shutdown it goes back without counting an attempt.
    Held,
    /// Its attempt started: cutting it off at shutdown is recorded as an attempt.
    Started,
    /// Its outcome (or fan-out) is on its way to Redis. Recording it ends the lease, so
    /// a renewal that races it finds the lease gone: that is not a lost lease, and the
    /// recording's own reply says whether the lease was still held.
    Recording,
}

#[derive(Debug, Default)]
pub(crate) struct Leases {
    held: Mutex<HashMap<JobId, (LeaseToken, Stage)>>,
}

impl Leases {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, (LeaseToken, Stage)>> {
        self.held.lock().expect("lease book lock")
    }

    /// Holds freshly leased jobs, for renewal and shutdown.
    pub fn hold<'a>(&self, jobs: impl IntoIterator<Item = &'a Leased>) {
        let mut book = self.book();
        for j in jobs {
            book.insert(j.id.clone(), (j.token.clone(), Stage::Held));
        }
    }

    /// Moves a held job on to `stage`; a job no longer held (its lease was lost) stays
    /// unheld.
    pub fn advance(&self, id: &str, stage: Stage) {
        if let Some(entry) = self.book().get_mut(id) {
            entry.1 = stage;
        }
    }

    /// Forgets a job: its outcome is recorded, or it is no longer this worker's.
    pub fn release(&self, id: &str) {
        self.book().remove(id);
    }

    /// Every held lease, for one renewal call.
    pub fn tokens(&self) -> Vec<(JobId, LeaseToken)> {
        self.book()
            .iter()
            .map(|(id, (token, _))| (id.clone(), token.clone()))
            .collect()
    }

    /// A renewal found the lease of `id` gone: true (and the job forgotten) when it was
    /// really lost, false when this worker no longer holds it or is recording its
    /// outcome (which ends the lease too).
    pub fn lose(&self, id: &str) -> bool {
        let mut book = self.book();
        match book.get(id) {
            Some((_, Stage::Held | Stage::Started)) => {
                book.remove(id);
                true
            }
            Some((_, Stage::Recording)) | None => false,
        }
    }

    /// Empties the book: each job with its token and whether its attempt had started.
    pub fn drain(&self) -> Vec<(JobId, LeaseToken, bool)> {
        self.book()
            .drain()
            .map(|(id, (token, stage))| (id, token, stage != Stage::Held))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(id: &str, worker: &str) -> Leased {
        Leased {
            id: id.into(),
            data: String::new(),
            call_ended: None,
            unreadable: None,
            attempt: 1,
            max_attempts: 8,
            token: LeaseToken::new(worker, 1),
        }
    }

    #[test]
    fn a_job_s_stages() {
        let book = Leases::default();
        book.hold(&[leased("a", "w"), leased("b", "w"), leased("c", "w")]);
        book.advance("b", Stage::Started);
        book.advance("c", Stage::Recording);
        // A recording job's lease ending is not a loss; a held or started one's is.
        assert!(!book.lose("c"));
        assert!(book.lose("b"));
        assert!(!book.lose("b"), "forgotten once lost");
        // A job no longer held is not held again by a later stage.
        book.advance("b", Stage::Recording);
        let mut tokens = book.tokens();
        tokens.sort();
        assert_eq!(
            tokens,
            [
                ("a".into(), LeaseToken::new("w", 1)),
                ("c".into(), LeaseToken::new("w", 1))
            ]
        );
        book.release("c");
        assert_eq!(book.drain(), [("a".into(), LeaseToken::new("w", 1), false)]);
        assert!(book.tokens().is_empty());
    }
}
