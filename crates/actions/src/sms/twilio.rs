//! Twilio's Messages API: `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded, HTTP basic auth, with the job id as idempotency token; error codes in the
//! JSON body decide between retry and permanent failure.

use aftercall_core::Outcome;
use aftercall_core::event::is_e164;
use aftercall_core::job::snippet;
use futures::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::{SmsMessage, SmsProvider, mask_numbers_in};
use crate::settings::{base_url, invalid, join};
use crate::{ActionsError, HttpConfig, http};

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio credentials and sender. At least one of `from` and `messaging_service_sid`.
#[derive(Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// An E.164 number or an alphanumeric sender id.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// `https://api.twilio.com` unless pointed elsewhere (tests, proxies).
    pub base_url: String,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"***")
            .field("from", &self.from)
            .field("messaging_service_sid", &self.messaging_service_sid)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl TwilioConfig {
    /// Checks the values; every error names its variable.
    pub fn validate(&self) -> Result<(), ActionsError> {
        let sid_ok = |s: &str, prefix: &str| {
            s.starts_with(prefix) && s.len() > 2 && s.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !sid_ok(&self.account_sid, "AC") {
            return Err(invalid(
                "AFTERCALL_TWILIO_ACCOUNT_SID",
                "must be `AC` followed by letters and digits",
            ));
        }
        if self.auth_token.is_empty() {
            return Err(invalid(
                "AFTERCALL_TWILIO_AUTH_TOKEN",
                "is required with AFTERCALL_TWILIO_ACCOUNT_SID",
            ));
        }
        if let Some(from) = &self.from {
            let alnum_sender = (1..=11).contains(&from.len())
                && from.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
                && from.bytes().any(|b| b.is_ascii_alphabetic());
            if !is_e164(from) && !alnum_sender {
                return Err(invalid(
                    "AFTERCALL_TWILIO_FROM",
                    "must be an E.164 number or an alphanumeric sender id of up to 11 characters",
                ));
            }
        }
        if let Some(ms) = &self.messaging_service_sid
            && !sid_ok(ms, "MG")
        {
            return Err(invalid(
                "AFTERCALL_TWILIO_MESSAGING_SERVICE_SID",
                "must be `MG` followed by letters and digits",
            ));
        }
        if self.from.is_none() && self.messaging_service_sid.is_none() {
            return Err(invalid(
                "AFTERCALL_TWILIO_FROM",
                "set AFTERCALL_TWILIO_FROM or AFTERCALL_TWILIO_MESSAGING_SERVICE_SID",
            ));
        }
        base_url("AFTERCALL_TWILIO_BASE_URL", &self.base_url)?;
        Ok(())
    }
}

pub struct Twilio {
    client: reqwest::Client,
    http: HttpConfig,
    cfg: TwilioConfig,
}

/// The largest response body read back.
const BODY_LIMIT: usize = 8192;

impl Twilio {
    pub fn new(client: reqwest::Client, http: HttpConfig, cfg: TwilioConfig) -> Self {
        Twilio { client, http, cfg }
    }

    async fn send_one(&self, msg: &SmsMessage<'_>) -> Outcome {
        let base = self.cfg.base_url.trim_end_matches('/');
        let url = match join(
            base,
            &format!(
                "/2010-04-01/Accounts/{}/Messages.json",
                self.cfg.account_sid
            ),
        ) {
            Ok(u) => u,
            Err(o) => return o,
        };
        if let Err(o) = http::check_url(&url, &self.http) {
            return o;
        }
        let mut form: Vec<(&str, &str)> = vec![("To", msg.to), ("Body", msg.body)];
        if let Some(ms) = &self.cfg.messaging_service_sid {
            form.push(("MessagingServiceSid", ms));
        }
        if let Some(from) = &self.cfg.from {
            form.push(("From", from));
        }
        let req = self
            .client
            .post(url)
            .basic_auth(&self.cfg.account_sid, Some(&self.cfg.auth_token))
            .header("accept", "application/json")
            .header("I-Twilio-Idempotency-Token", msg.job_id)
            .form(&form);
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = http::read_body(resp, BODY_LIMIT).await;
                classify(status, &headers, &body)
            }
            Err(e) => http::classify_error(&e),
        }
    }
}

impl SmsProvider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(&'a self, msg: &'a SmsMessage<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.send_one(msg))
    }
}

/// The parts of a Twilio response we read: a message on success, an error otherwise.
#[derive(Debug, Default, Deserialize)]
struct Body {
    sid: Option<String>,
    /// The message's state on success (`queued`), the HTTP status on errors.
    status: Option<serde_json::Value>,
    code: Option<u64>,
    message: Option<String>,
}

/// Twilio's error codes that no retry can fix.
fn permanent_code(code: u64) -> Option<&'static str> {
    match code {
        21211 => Some("invalid 'To' phone number"),
        21614 => Some("'To' number cannot receive SMS"),
        _ => None,
    }
}

/// 2xx delivered; 429, code 20429, 408 and 5xx retried (honouring `Retry-After`);
/// 21610 opted out (a skip; the runtime records the opt-out); 21211, 21614 and other
/// 4xx permanent. Numbers in Twilio's text are masked.
pub fn classify(status: u16, headers: &HeaderMap, body: &str) -> Outcome {
    let parsed: Body = serde_json::from_str(body).unwrap_or_default();
    let masked = mask_numbers_in(body);
    let snip = (!masked.is_empty()).then(|| snippet(&masked));
    if (200..300).contains(&status) {
        let state = parsed.status.as_ref().and_then(serde_json::Value::as_str);
        let detail = match (&parsed.sid, state) {
            (Some(sid), Some(st)) => format!("Twilio message {sid} ({st})"),
            (Some(sid), None) => format!("Twilio message {sid}"),
            _ => "accepted by Twilio".to_string(),
        };
        return Outcome::Delivered {
            status: Some(status),
            detail: Some(detail),
        };
    }
    let described = match (parsed.code, &parsed.message) {
        (Some(c), Some(m)) => format!("Twilio error {c}: {}", mask_numbers_in(m)),
        (Some(c), None) => format!("Twilio error {c}"),
        _ => format!("HTTP {status}"),
    };
    if status == 429 || parsed.code == Some(20429) {
        return Outcome::Retry {
            error: described,
            status: Some(status),
            retry_after: http::retry_after(headers),
            snippet: snip,
        };
    }
    if parsed.code == Some(21610) {
        return Outcome::OptedOut {
            reason: format!("opted out: recipient has unsubscribed (replied STOP); {described}"),
        };
    }
    if let Some(label) = parsed.code.and_then(permanent_code) {
        return Outcome::Permanent {
            error: format!("{label}: {described}"),
            status: Some(status),
            snippet: snip,
        };
    }
    // The HTTP table decides; Twilio's own words describe it.
    http::classify(status, headers, &masked).map_error(|_| described)
}

#[cfg(test)]
mod tests {
    use super::*;

    use aftercall_testkit::outcome_kind as kind;

    #[test]
    fn classification_table() {
        let h = HeaderMap::new();
        let err = |code: u64| {
            format!(
                r#"{{"code": {code}, "message": "The 'To' number +15005550001 is not valid", "status": 400}}"#
            )
        };
        let cases: Vec<(u16, String, &str)> = vec![
            (
                201,
                r#"{"sid":"SM1","status":"queued"}"#.into(),
                "delivered",
            ),
            (400, err(21211), "permanent"),
            (400, err(21610), "opted_out"),
            (400, err(21614), "permanent"),
            (400, err(21408), "permanent"),
            (
                401,
                r#"{"code":20003,"message":"Authenticate"}"#.into(),
                "permanent",
            ),
            (429, err(20429), "retry"),
            (400, err(20429), "retry"),
            (500, "oops".into(), "retry"),
            (503, String::new(), "retry"),
            (404, "<html>".into(), "permanent"),
        ];
        for (status, body, want) in cases {
            let o = classify(status, &h, &body);
            assert_eq!(kind(&o), want, "{status} {body}");
            let shown = format!("{o:?}");
            assert!(!shown.contains("5005550001"), "number leaked: {shown}");
        }
        let o = classify(400, &h, &err(21211));
        assert!(
            matches!(&o, Outcome::Permanent { error, status: Some(400), .. } if error.contains("21211") && error.contains("invalid 'To'")),
            "{o:?}"
        );
    }

    #[test]
    fn config_validation_names_settings() {
        let good = TwilioConfig {
            account_sid: "AC123".into(),
            auth_token: "secret".into(),
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
            base_url: DEFAULT_BASE_URL.into(),
        };
        good.validate().unwrap();
        assert!(!format!("{good:?}").contains("secret"));
        let cases: Vec<(TwilioConfig, &str)> = vec![
            (
                TwilioConfig {
                    account_sid: "AC/../x".into(),
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_ACCOUNT_SID",
            ),
            (
                TwilioConfig {
                    auth_token: String::new(),
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_AUTH_TOKEN",
            ),
            (
                TwilioConfig {
                    from: Some("12345".into()),
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_FROM",
            ),
            (
                TwilioConfig {
                    from: None,
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_FROM",
            ),
            (
                TwilioConfig {
                    messaging_service_sid: Some("XX1".into()),
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_MESSAGING_SERVICE_SID",
            ),
            (
                TwilioConfig {
                    base_url: "ftp://x".into(),
                    ..good.clone()
                },
                "AFTERCALL_TWILIO_BASE_URL",
            ),
        ];
        for (cfg, setting) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(
                matches!(&err, ActionsError::Config { setting: s, .. } if *s == setting),
                "{setting}: {err}"
            );
        }
        TwilioConfig {
            from: Some("Acme".into()),
            ..good.clone()
        }
        .validate()
        .unwrap();
    }
}
