//! The webhook action: POSTs the seed's payload (or PUTs/PATCHes a body of the user's
//! template), signed per the Standard Webhooks spec.
//! `webhook-id` is the job id, stable across retries, so receivers can de-duplicate.

use aftercall_core::config::WebhookAction;
use aftercall_core::payload::WebhookPayload;
use aftercall_core::{ActionJob, Outcome};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{self, HttpConfig};

pub mod client;
mod wire;

pub struct WebhookExecutor {
    client: client::Client,
    cfg: HttpConfig,
}

/// The largest response body read back (the rest is drained, not stored).
const BODY_LIMIT: usize = 4096;

impl WebhookExecutor {
    pub fn new(client: client::Client, cfg: HttpConfig) -> Self {
        WebhookExecutor { client, cfg }
    }

    pub async fn execute(
        &self,
        job_id: &str,
        attempt: u32,
        job: &ActionJob,
        action: &WebhookAction,
    ) -> Outcome {
        let body = match &action.body {
            None => WebhookPayload::new(&job.event, action).to_bytes(),
            Some(src) => match render_body(src, job) {
                Ok(b) => b,
                Err(e) => return Outcome::permanent(e),
            },
        };
        let traceparent = job.event.traceparent.as_deref();
        self.send_body(job_id, attempt, traceparent, action, body)
            .await
    }

    /// Sends `body` to `action`'s URL, signed (message id `job_id`), with its method and
    /// headers, continuing the producer's trace `traceparent`: what
    /// [`execute`](Self::execute) does once the body is made; also how the completion
    /// callback and the operational alerts are sent.
    pub async fn send_body(
        &self,
        job_id: &str,
        attempt: u32,
        traceparent: Option<&str>,
        action: &WebhookAction,
        body: Vec<u8>,
    ) -> Outcome {
        let url = match http::parse_url(&action.url) {
            Ok(u) => u,
            Err(e) => return Outcome::permanent(format!("invalid url: {e}")),
        };
        if let Err(o) = http::check_url(&url, &self.cfg) {
            return o;
        }
        let method = action.method.unwrap_or_default().as_str();
        let timestamp = chrono::Utc::now().timestamp();
        let (ts, try_n) = (timestamp.to_string(), attempt.to_string());
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(6 + action.headers.len());
        headers.extend([
            ("content-type", "application/json"),
            ("webhook-id", job_id),
            ("webhook-timestamp", ts.as_str()),
            ("x-aftercall-attempt", try_n.as_str()),
        ]);
        let signature = match &action.secret {
            Some(secrets) => match sign(&secrets.all(), job_id, timestamp, &body) {
                Ok(sig) => Some(sig),
                Err(e) => return Outcome::permanent(e),
            },
            None => None,
        };
        if let Some(sig) = &signature {
            headers.push(("webhook-signature", sig));
        }
        let traceparent = traceparent.and_then(continue_trace(job_id, attempt));
        if let Some(tp) = &traceparent {
            headers.push(("traceparent", tp));
        }
        for (k, v) in &action.headers {
            headers.push((k, v));
        }
        match self
            .client
            .request(method, &url, &headers, body, BODY_LIMIT)
            .await
        {
            Ok(resp) => no_retry(
                resp.no_retry,
                http::classify_status(
                    resp.status,
                    resp.retry_after
                        .as_deref()
                        .and_then(http::parse_retry_after),
                    &resp.body,
                ),
            ),
            Err(client::Error::Blocked(b)) => Outcome::permanent(b.to_string()),
            Err(client::Error::Invalid(e)) => Outcome::permanent(e),
            Err(e) => Outcome::retry(e.to_string()),
        }
    }
}

/// A webhook's `body` template rendered for the job's call; it must be JSON (checked for
/// the sample call when the config was stored, but a real call's values may differ).
pub fn render_body(src: &str, job: &ActionJob) -> Result<Vec<u8>, String> {
    let text = aftercall_core::template::render(src, &job.vars(chrono::Utc::now()), false)
        .map_err(|e| format!("body: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| format!("body: the template did not render to JSON for this call: {e}"))?;
    Ok(text.into_bytes())
}

/// A failure the receiver asked not to retry (`Aftercall-No-Retry`) is permanent: the
/// message is dead-lettered now, with the reason.
pub fn no_retry(asked: bool, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Retry {
            error,
            status,
            snippet,
            ..
        } if asked => Outcome::Permanent {
            error: format!("{error}; the receiver asked not to retry (Aftercall-No-Retry)"),
            status,
            snippet,
        },
        other => other,
    }
}

/// The producer's trace continued by this delivery attempt: same trace id and flags, a
/// span id of its own (derived from the job and attempt, so it is stable per attempt).
fn continue_trace(job_id: &str, attempt: u32) -> impl Fn(&str) -> Option<String> + '_ {
    move |tp| {
        use sha2::Digest;
        let (trace, flags) = aftercall_core::event::parse_traceparent(tp)?;
        let digest = Sha256::digest(format!("{job_id}:{attempt}").as_bytes());
        let span: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("00-{trace}-{span}-{flags}"))
    }
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each secret, space-separated.
pub fn sign(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let mut sigs = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let key_b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = STANDARD
            .decode(key_b64)
            .map_err(|_| "signing secret is not valid base64".to_string())?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| "signing secret is empty".to_string())?;
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        sigs.push(format!(
            "v1,{}",
            STANDARD.encode(mac.finalize().into_bytes())
        ));
    }
    Ok(sigs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_is_continued_with_a_span_of_its_own() {
        let tp =
            continue_trace("job_1.0", 2)("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"));
        assert_ne!(&tp[36..52], "00f067aa0ba902b7");
        assert!(continue_trace("j", 1)("garbage").is_none());
    }

    /// The example from the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_spec_example() {
        let sig = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
