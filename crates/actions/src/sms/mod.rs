//! The SMS action (placeholder until the SMS issue lands).

use std::path::Path;

use aftercall_core::config::SmsAction;
use aftercall_core::{ActionJob, Outcome};

use crate::{ActionsError, HttpConfig};

#[derive(Debug, Clone, Default)]
pub struct SmsConfig {}

pub struct SmsExecutor;

impl SmsExecutor {
    pub fn new(_client: reqwest::Client, _http: HttpConfig, _cfg: &SmsConfig, _outbox: &Path) -> Result<Self, ActionsError> {
        Ok(SmsExecutor)
    }

    pub async fn execute(&self, _job_id: &str, _job: &ActionJob, _action: &SmsAction) -> Outcome {
        Outcome::permanent("SMS actions are not implemented yet")
    }
}
