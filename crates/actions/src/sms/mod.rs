//! The SMS action: renders the recipient (default `{{caller_number}}`) and message,
//! checks E.164, counts segments and hands the message to a provider: Twilio when
//! configured, otherwise the outbox (`<outbox>/sms/<job_id>.json`).

pub mod segments;
pub mod twilio;

use std::path::{Path, PathBuf};

use aftercall_core::config::SmsAction;
use aftercall_core::event::{is_e164, mask_number};
use aftercall_core::template;
use aftercall_core::{ActionJob, Outcome};
use futures::future::BoxFuture;

pub use segments::Segments;
pub use twilio::TwilioConfig;

use aftercall_core::settings::Settings;

use crate::settings::{base_url, invalid};
use crate::{ActionsError, HttpConfig, outbox};

/// SMS settings of the worker. Without a provider, messages go to the outbox.
#[derive(Debug, Clone, Default)]
pub struct SmsConfig {
    pub twilio: Option<TwilioConfig>,
}

impl SmsConfig {
    /// Reads `AFTERCALL_TWILIO_ACCOUNT_SID`, `AFTERCALL_TWILIO_AUTH_TOKEN`,
    /// `AFTERCALL_TWILIO_FROM`, `AFTERCALL_TWILIO_MESSAGING_SERVICE_SID` and
    /// `AFTERCALL_TWILIO_BASE_URL`. Twilio is used when any of the first four is set, and
    /// then the set must be complete; an error names the variable.
    pub fn from_settings(s: &Settings) -> Result<Self, ActionsError> {
        let sid = s.string("AFTERCALL_TWILIO_ACCOUNT_SID");
        let token = s.string("AFTERCALL_TWILIO_AUTH_TOKEN");
        let from = s.string("AFTERCALL_TWILIO_FROM");
        let ms = s.string("AFTERCALL_TWILIO_MESSAGING_SERVICE_SID");
        let base = s
            .string("AFTERCALL_TWILIO_BASE_URL")
            .unwrap_or_else(|| twilio::DEFAULT_BASE_URL.to_string());
        if sid.is_none() && token.is_none() && from.is_none() && ms.is_none() {
            base_url("AFTERCALL_TWILIO_BASE_URL", &base)?;
            return Ok(SmsConfig { twilio: None });
        }
        let Some(account_sid) = sid else {
            return Err(invalid(
                "AFTERCALL_TWILIO_ACCOUNT_SID",
                "is required when any AFTERCALL_TWILIO_* setting is set",
            ));
        };
        let cfg = TwilioConfig {
            account_sid,
            auth_token: token.unwrap_or_default(),
            from,
            messaging_service_sid: ms,
            base_url: base,
        };
        cfg.validate()?;
        Ok(SmsConfig { twilio: Some(cfg) })
    }
}

/// One message as a provider sees it. `job_id` is stable across retries.
#[derive(Debug, Clone, Copy)]
pub struct SmsMessage<'a> {
    pub job_id: &'a str,
    /// An E.164 number.
    pub to: &'a str,
    pub body: &'a str,
    pub segments: Segments,
}

/// A way to send SMS. Each provider classifies its own errors into an [`Outcome`];
/// `Delivered.detail` says what the provider accepted (the executor adds segments).
pub trait SmsProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, msg: &'a SmsMessage<'a>) -> BoxFuture<'a, Outcome>;
}

/// Writes each message as JSON to `<outbox>/sms/<job_id>.json`.
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    async fn write(&self, msg: &SmsMessage<'_>) -> Outcome {
        let doc = serde_json::json!({
            "job_id": msg.job_id,
            "to": msg.to,
            "body": msg.body,
            "segments": msg.segments.count,
            "encoding": msg.segments.encoding.as_str(),
        });
        let bytes = serde_json::to_vec_pretty(&doc).expect("a JSON value always serializes");
        outbox::deliver(&self.dir, msg.job_id, "json", &bytes, None).await
    }
}

impl SmsProvider for Outbox {
    fn name(&self) -> &'static str {
        "outbox"
    }

    fn send<'a>(&'a self, msg: &'a SmsMessage<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.write(msg))
    }
}

pub struct SmsExecutor {
    provider: Box<dyn SmsProvider>,
}

/// The recipient when the action sets none.
pub const DEFAULT_TO: &str = "{{caller_number}}";

impl SmsExecutor {
    pub fn new(
        client: reqwest::Client,
        http: HttpConfig,
        cfg: &SmsConfig,
        outbox: &Path,
    ) -> Result<Self, ActionsError> {
        let provider: Box<dyn SmsProvider> = match &cfg.twilio {
            Some(t) => {
                t.validate()?;
                Box::new(twilio::Twilio::new(client, http, t.clone()))
            }
            None => Box::new(Outbox {
                dir: outbox.join("sms"),
            }),
        };
        Ok(SmsExecutor { provider })
    }

    /// An executor with another provider (tests, future providers).
    pub fn with_provider(provider: Box<dyn SmsProvider>) -> Self {
        SmsExecutor { provider }
    }

    pub fn provider(&self) -> &'static str {
        self.provider.name()
    }

    pub async fn execute(&self, job_id: &str, job: &ActionJob, action: &SmsAction) -> Outcome {
        let (to, body, segments) = match render(job, action, chrono::Utc::now()) {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let msg = SmsMessage {
            job_id,
            to: &to,
            body: &body,
            segments,
        };
        let outcome = self.provider.send(&msg).await;
        tracing::debug!(provider = self.provider.name(), to = %mask_number(&to), segments = segments.count, "SMS handed to provider");
        match outcome {
            Outcome::Delivered { status, detail } => {
                let plural = if segments.count == 1 { "" } else { "s" };
                let seg = format!(
                    "{} segment{plural} ({})",
                    segments.count,
                    segments.encoding.as_str()
                );
                let detail = match detail {
                    Some(d) => format!("{seg}; {d}"),
                    None => seg,
                };
                Outcome::Delivered {
                    status,
                    detail: Some(detail),
                }
            }
            other => other,
        }
    }
}

/// The SMS as it would be sent: recipient, text and segments. `Err` is the job's
/// outcome (skipped for an empty recipient or text, permanent for a bad template or
/// number). Shared by the executor and the preview, so a preview is what is sent.
pub fn render(
    job: &ActionJob,
    action: &SmsAction,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, String, segments::Segments), Outcome> {
    let vars = job.vars(now);
    let to_src = action.to.as_deref().unwrap_or(DEFAULT_TO);
    let to = match template::render(to_src, &vars, false) {
        Ok(t) => t.trim().to_string(),
        Err(e) => return Err(Outcome::permanent(format!("to: {e}"))),
    };
    if to.is_empty() {
        return Err(Outcome::skipped(empty_reason(to_src)));
    }
    if !is_e164(&to) {
        return Err(Outcome::permanent(format!(
            "to: `{}` is not an E.164 number (+ and 2 to 15 digits)",
            mask_number(&to)
        )));
    }
    let body = match template::render(&action.template, &vars, false) {
        Ok(b) => b.trim().to_string(),
        Err(e) => return Err(Outcome::permanent(format!("template: {e}"))),
    };
    if body.is_empty() {
        return Err(Outcome::skipped("message is empty for this call"));
    }
    let segments = segments::count(&body);
    Ok((to, body, segments))
}

/// Why an empty recipient skips the action: the variable that was empty for this call.
fn empty_reason(to_src: &str) -> String {
    if template::normalize(to_src).contains("caller_number") {
        "no caller_number".to_string()
    } else {
        "recipient is empty for this call".to_string()
    }
}

/// Masks phone numbers (runs of 6 or more digits, with an optional leading `+`, that are
/// not part of a longer word such as a message SID) in free text.
pub fn mask_numbers_in(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_run = (chars[i] == '+' || chars[i].is_ascii_digit())
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if starts_run {
            let mut j = i + usize::from(chars[i] == '+');
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let digits = j - i - usize::from(chars[i] == '+');
            let bounded = j == chars.len() || !chars[j].is_alphanumeric();
            if digits >= 6 && bounded {
                out.push_str(&mask_number(&chars[i..j].iter().collect::<String>()));
                i = j;
                continue;
            }
            out.extend(&chars[i..j.max(i + 1)]);
            i = j.max(i + 1);
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::with_settings as env;

    #[test]
    fn from_env() {
        assert!(env(&[], SmsConfig::from_settings).unwrap().twilio.is_none());
        let c = env(
            &[
                ("AFTERCALL_TWILIO_ACCOUNT_SID", "AC1"),
                ("AFTERCALL_TWILIO_AUTH_TOKEN", "tok"),
                ("AFTERCALL_TWILIO_MESSAGING_SERVICE_SID", "MG1"),
            ],
            SmsConfig::from_settings,
        )
        .unwrap();
        assert_eq!(c.twilio.unwrap().base_url, "https://api.twilio.com");
        let err = env(
            &[("AFTERCALL_TWILIO_AUTH_TOKEN", "tok")],
            SmsConfig::from_settings,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ActionsError::Config {
                setting: "AFTERCALL_TWILIO_ACCOUNT_SID",
                ..
            }
        ));
        let err = env(
            &[
                ("AFTERCALL_TWILIO_ACCOUNT_SID", "AC1"),
                ("AFTERCALL_TWILIO_FROM", "+15005550006"),
            ],
            SmsConfig::from_settings,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            ActionsError::Config {
                setting: "AFTERCALL_TWILIO_AUTH_TOKEN",
                ..
            }
        ));
    }

    #[test]
    fn masks_numbers_not_codes_or_sids() {
        let cases = [
            (
                "The 'To' number +15005550001 is not valid",
                "The 'To' number +*********01 is not valid",
            ),
            (
                "error 21211 see https://www.twilio.com/docs/errors/21211",
                "error 21211 see https://www.twilio.com/docs/errors/21211",
            ),
            ("sid SM1234567890abcdef", "sid SM1234567890abcdef"),
            ("call 4155551234.", "call ********34."),
            ("+", "+"),
        ];
        for (input, want) in cases {
            assert_eq!(mask_numbers_in(input), want);
        }
    }

    #[test]
    fn empty_reasons() {
        assert_eq!(empty_reason(DEFAULT_TO), "no caller_number");
        assert_eq!(empty_reason("{caller_number}"), "no caller_number");
        assert_eq!(
            empty_reason("{{metadata.phone}}"),
            "recipient is empty for this call"
        );
    }
}
