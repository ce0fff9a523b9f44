//! The Slack action: posts `{"text": …}` (and Block Kit `blocks`, when the action has a
//! template for them) to an incoming webhook. Slack answers 200 `ok`; 400
//! (`invalid_payload`), 403, 404 (`no_service`) and 410 (`channel_is_archived`) are
//! permanent; 429 and 5xx retried, honouring `Retry-After`.

use aftercall_core::config::SlackAction;
use aftercall_core::{ActionJob, Outcome};
use serde_json::{Value, json};

use crate::http::{self, HttpConfig};

/// The largest response body read back.
const BODY_LIMIT: usize = 4096;

pub struct SlackExecutor {
    client: reqwest::Client,
    cfg: HttpConfig,
}

impl SlackExecutor {
    pub fn new(client: reqwest::Client, cfg: HttpConfig) -> Self {
        SlackExecutor { client, cfg }
    }

    pub async fn execute(&self, job: &ActionJob, action: &SlackAction) -> Outcome {
        let url = match http::parse_url(&action.url) {
            Ok(u) => u,
            Err(e) => return Outcome::permanent(format!("invalid url: {e}")),
        };
        if let Err(o) = http::check_url(&url, &self.cfg) {
            return o;
        }
        let body = match message(job, action) {
            Ok(b) => b,
            Err(e) => return Outcome::permanent(e),
        };
        match self.client.post(url).json(&body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let text = http::read_body(resp, BODY_LIMIT).await;
                http::classify(status, &headers, &text)
            }
            Err(e) => http::classify_error(&e),
        }
    }
}

/// The message Slack receives, rendered for the job's call.
pub fn message(job: &ActionJob, action: &SlackAction) -> Result<Value, String> {
    let vars = job.vars(chrono::Utc::now());
    let text = aftercall_core::template::render(&action.text, &vars, false)
        .map_err(|e| format!("text: {e}"))?;
    let mut body = json!({ "text": text });
    if let Some(src) = &action.blocks {
        let rendered = aftercall_core::template::render(src, &vars, false)
            .map_err(|e| format!("blocks: {e}"))?;
        let blocks: Value = serde_json::from_str(&rendered).map_err(|e| {
            format!("blocks: the template did not render to JSON for this call: {e}")
        })?;
        if !blocks.is_array() {
            return Err("blocks: the template did not render to a JSON array".into());
        }
        body["blocks"] = blocks;
    }
    Ok(body)
}
