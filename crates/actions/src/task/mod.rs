//! The create-task action (placeholder until the task issue lands).

use aftercall_core::config::TaskAction;
use aftercall_core::{ActionJob, Outcome};

use crate::{ActionsError, HttpConfig};

#[derive(Debug, Clone, Default)]
pub struct TaskConfig {}

pub struct TaskExecutor;

impl TaskExecutor {
    pub fn new(_client: reqwest::Client, _http: HttpConfig, _cfg: &TaskConfig) -> Result<Self, ActionsError> {
        Ok(TaskExecutor)
    }

    pub async fn execute(&self, _job_id: &str, _job: &ActionJob, _action: &TaskAction) -> Outcome {
        Outcome::permanent("task actions are not implemented yet")
    }
}
