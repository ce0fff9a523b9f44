//! The e-mail action (placeholder until the e-mail issue lands).

use std::path::Path;

use aftercall_core::config::EmailAction;
use aftercall_core::{ActionJob, Outcome};

use crate::ActionsError;

#[derive(Debug, Clone, Default)]
pub struct EmailConfig {
    /// `smtp://`, `smtps://` or `smtp://...?tls=required`; `None` writes to the outbox.
    pub smtp_url: Option<String>,
    /// Default sender when neither the action nor the agent sets one.
    pub from: Option<String>,
}

pub struct EmailExecutor;

impl EmailExecutor {
    pub fn new(_cfg: &EmailConfig, _outbox: &Path) -> Result<Self, ActionsError> {
        Ok(EmailExecutor)
    }

    pub async fn execute(&self, _job_id: &str, _job: &ActionJob, _action: &EmailAction) -> Outcome {
        Outcome::permanent("e-mail actions are not implemented yet")
    }
}
