//! The e-mail action: renders the templates into a text + HTML message with a stable
//! `Message-ID`, then sends it over SMTP (lettre, pooled) or, without an SMTP server,
//! writes it to `<outbox>/email/<job_id>.eml`.

pub(crate) mod message;
mod smtp;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use aftercall_core::config::EmailAction;
use aftercall_core::settings::Settings;
use aftercall_core::{ActionJob, Outcome};
use lettre::AsyncTransport;
use lettre::message::Mailbox;

pub use message::{FALLBACK_FROM, message_id};

use crate::settings::invalid;
use crate::{ActionsError, outbox};

/// E-mail settings of the worker.
#[derive(Clone)]
pub struct EmailConfig {
    /// `smtp://`, `smtps://` or `smtp://...?tls=required`; `None` writes to the outbox.
    pub smtp_url: Option<String>,
    /// Default sender when neither the action nor the agent sets one.
    pub from: Option<String>,
    /// An extra CA certificate (PEM) to trust, e.g. a test server's self-signed one.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For test servers only.
    pub accept_invalid_certs: bool,
    /// Timeout of each SMTP command; one send is bounded by a few of these.
    pub timeout: Duration,
    /// Most SMTP connections kept open.
    pub pool_size: u32,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: None,
            from: None,
            ca_file: None,
            accept_invalid_certs: false,
            timeout: Duration::from_secs(30),
            pool_size: 4,
        }
    }
}

/// Shows the SMTP URL without its password.
impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("smtp_url", &self.smtp_url.as_deref().map(redact_url))
            .field("from", &self.from)
            .field("ca_file", &self.ca_file)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// A URL with its password replaced by `***`.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) if p.password().is_some() => {
            let _ = p.set_password(Some("***"));
            p.to_string()
        }
        Ok(p) => p.to_string(),
        Err(_) => "<invalid url>".to_string(),
    }
}

impl EmailConfig {
    /// Reads `AFTERCALL_SMTP_URL`, `AFTERCALL_EMAIL_FROM`, `AFTERCALL_SMTP_CA_FILE`,
    /// `AFTERCALL_SMTP_ACCEPT_INVALID_CERTS`, `AFTERCALL_SMTP_TIMEOUT` and
    /// `AFTERCALL_SMTP_POOL_SIZE`; an error names the variable.
    pub fn from_settings(s: &Settings) -> Result<Self, ActionsError> {
        let mut cfg = EmailConfig::default();
        if let Some(u) = s.string("AFTERCALL_SMTP_URL") {
            smtp::parse_url(&u)?;
            cfg.smtp_url = Some(u);
        }
        if let Some(f) = s.string("AFTERCALL_EMAIL_FROM") {
            f.parse::<Mailbox>().map_err(|e| {
                invalid(
                    "AFTERCALL_EMAIL_FROM",
                    format!("`{f}` is not an e-mail address ({e})"),
                )
            })?;
            cfg.from = Some(f);
        }
        cfg.ca_file = s.string("AFTERCALL_SMTP_CA_FILE").map(PathBuf::from);
        cfg.accept_invalid_certs = s.bool_or("AFTERCALL_SMTP_ACCEPT_INVALID_CERTS", false)?;
        if let Some(t) = s.duration("AFTERCALL_SMTP_TIMEOUT")? {
            if t.is_zero() {
                return Err(invalid(
                    "AFTERCALL_SMTP_TIMEOUT",
                    "must be longer than zero",
                ));
            }
            cfg.timeout = t;
        }
        if let Some(n) = s.string("AFTERCALL_SMTP_POOL_SIZE") {
            cfg.pool_size = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(
                    "AFTERCALL_SMTP_POOL_SIZE",
                    format!("`{n}` is not a positive number"),
                )
            })?;
        }
        Ok(cfg)
    }
}

enum Delivery {
    Smtp(Box<Smtp>),
    Outbox { dir: PathBuf },
}

struct Smtp {
    builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    /// The pool spawns a task when built, so it is built on first use, inside the runtime.
    transport: OnceLock<smtp::Transport>,
    /// Bounds a whole send, not just one command.
    timeout: Duration,
}

pub struct EmailExecutor {
    delivery: Delivery,
    from: Option<String>,
}

impl EmailExecutor {
    /// Checks the settings (URL, CA file) now, so a bad one stops the worker at start-up.
    pub fn new(cfg: &EmailConfig, outbox: &Path) -> Result<Self, ActionsError> {
        let delivery = match &cfg.smtp_url {
            Some(url) => Delivery::Smtp(Box::new(Smtp {
                builder: smtp::builder(cfg, url)?,
                transport: OnceLock::new(),
                // Connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA: each has the
                // command timeout; a server that answers slowly to all of them is cut off.
                timeout: cfg.timeout.saturating_mul(4),
            })),
            None => Delivery::Outbox {
                dir: outbox.join("email"),
            },
        };
        Ok(EmailExecutor {
            delivery,
            from: cfg.from.clone(),
        })
    }

    /// Where this executor delivers: `smtp` or `outbox`.
    pub fn mode(&self) -> &'static str {
        match self.delivery {
            Delivery::Smtp(_) => "smtp",
            Delivery::Outbox { .. } => "outbox",
        }
    }

    pub async fn execute(&self, job_id: &str, job: &ActionJob, action: &EmailAction) -> Outcome {
        let vars = job.vars(chrono::Utc::now());
        let prepared = match message::prepare(job_id, job, action, self.from.as_deref(), &vars) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        match &self.delivery {
            Delivery::Smtp(conn) => {
                let timeout = conn.timeout;
                let transport = conn.transport.get_or_init(|| conn.builder.clone().build());
                let sent = tokio::time::timeout(timeout, transport.send(prepared.message)).await;
                match sent {
                    Ok(Ok(resp)) => {
                        tracing::debug!(to = %prepared.to_masked, message_id = %prepared.message_id, "e-mail accepted by SMTP server");
                        Outcome::Delivered {
                            status: Some(u16::from(resp.code())),
                            detail: Some(format!(
                                "accepted by SMTP server for {} ({} recipient{}), Message-ID {}",
                                prepared.to_masked,
                                prepared.recipients,
                                if prepared.recipients == 1 { "" } else { "s" },
                                prepared.message_id
                            )),
                        }
                    }
                    Ok(Err(e)) => smtp::classify(&e),
                    Err(_) => Outcome::retry(format!("SMTP send timed out after {timeout:?}")),
                }
            }
            Delivery::Outbox { dir } => {
                let bytes = prepared.message.formatted();
                let to = Some(prepared.to_masked.as_str());
                outbox::deliver(dir, job_id, "eml", &bytes, to).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::with_settings as env;

    #[test]
    fn from_env_reads_and_names_settings() {
        let c = env(
            &[
                (
                    "AFTERCALL_SMTP_URL",
                    "smtp://user:hunter2@mail.example.com:587?tls=required",
                ),
                ("AFTERCALL_EMAIL_FROM", "Acme <noreply@acme.example>"),
                ("AFTERCALL_SMTP_TIMEOUT", "10s"),
                ("AFTERCALL_SMTP_ACCEPT_INVALID_CERTS", "false"),
            ],
            EmailConfig::from_settings,
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(
            env(&[], EmailConfig::from_settings)
                .unwrap()
                .smtp_url
                .is_none()
        );
        for (k, v) in [
            ("AFTERCALL_SMTP_URL", "http://x"),
            ("AFTERCALL_EMAIL_FROM", "nope"),
            ("AFTERCALL_SMTP_TIMEOUT", "soon"),
            ("AFTERCALL_SMTP_TIMEOUT", "0"),
            ("AFTERCALL_SMTP_POOL_SIZE", "0"),
            ("AFTERCALL_SMTP_ACCEPT_INVALID_CERTS", "perhaps"),
        ] {
            let err = env(&[(k, v)], EmailConfig::from_settings).unwrap_err();
            assert_eq!(err.setting(), Some(k), "{k}: {err}");
        }
    }

    #[test]
    fn missing_ca_file_fails_at_start() {
        let cfg = EmailConfig {
            smtp_url: Some("smtp://127.0.0.1:2525?tls=required".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..EmailConfig::default()
        };
        let err = EmailExecutor::new(&cfg, Path::new("/tmp")).err().unwrap();
        assert!(
            matches!(
                err,
                ActionsError::Config {
                    setting: "AFTERCALL_SMTP_CA_FILE",
                    ..
                }
            ),
            "{err}"
        );
    }
}
