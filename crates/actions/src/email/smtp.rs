//! The SMTP transport: built from `AFTERCALL_SMTP_URL` (pooled, with timeouts and optional
//! test-only TLS trust settings) and the classification of its typed errors.

use std::time::Duration;

use aftercall_core::Outcome;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use super::EmailConfig;
use super::message::mask_emails_in;
use crate::ActionsError;
use crate::settings::invalid;

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// How the connection is secured, as chosen by the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://` without `?tls=`: plain text (local relays and tests only).
    None,
    /// `smtp://...?tls=opportunistic`: STARTTLS when offered.
    Opportunistic,
    /// `smtp://...?tls=required`: STARTTLS or fail.
    Required,
    /// `smtps://`: TLS from the first byte.
    Wrapper,
}

/// What the URL says, checked without echoing it (it may carry a password).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub tls: TlsMode,
}

pub fn parse_url(url: &str) -> Result<Endpoint, ActionsError> {
    const S: &str = "AFTERCALL_SMTP_URL";
    let parsed = url::Url::parse(url).map_err(|e| invalid(S, format!("is not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(S, "has no host"))?;
    let tls_param = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = match (parsed.scheme(), tls_param.as_deref()) {
        ("smtp", None) => TlsMode::None,
        ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
        ("smtp", Some("required")) => TlsMode::Required,
        ("smtps", None) => TlsMode::Wrapper,
        ("smtp" | "smtps", Some(other)) => {
            return Err(invalid(
                S,
                format!(
                    "unknown tls=`{other}`; use tls=required or tls=opportunistic with smtp://"
                ),
            ));
        }
        (scheme, _) => {
            return Err(invalid(
                S,
                format!("scheme must be smtp or smtps, not {scheme}"),
            ));
        }
    };
    if parsed.password().is_some() && parsed.username().is_empty() {
        return Err(invalid(S, "has a password but no user name"));
    }
    Ok(Endpoint {
        host: host.trim_matches(['[', ']']).to_string(),
        tls,
    })
}

/// The transport builder: lettre reads the URL (host, port, TLS mode, credentials); the
/// TLS parameters are replaced when a CA file or accept-invalid-certs is configured.
pub fn builder(
    cfg: &EmailConfig,
    url: &str,
) -> Result<lettre::transport::smtp::AsyncSmtpTransportBuilder, ActionsError> {
    let endpoint = parse_url(url)?;
    // Installs ring for lettre's rustls once per process, as the HTTP client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| invalid("AFTERCALL_SMTP_URL", e.to_string()))?
        .timeout(Some(cfg.timeout))
        .pool_config(
            PoolConfig::new()
                .max_size(cfg.pool_size)
                .idle_timeout(Duration::from_secs(60)),
        );
    let custom_tls = cfg.ca_file.is_some() || cfg.accept_invalid_certs;
    if custom_tls && endpoint.tls != TlsMode::None {
        let mut params = TlsParameters::builder(endpoint.host.clone());
        if let Some(path) = &cfg.ca_file {
            const S: &str = "AFTERCALL_SMTP_CA_FILE";
            let pem = std::fs::read(path)
                .map_err(|e| invalid(S, format!("cannot read {}: {e}", path.display())))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                invalid(
                    S,
                    format!("{} is not a PEM certificate: {e}", path.display()),
                )
            })?;
            params = params.add_root_certificate(cert);
        }
        if cfg.accept_invalid_certs {
            params = params.dangerous_accept_invalid_certs(true);
        }
        let params = params
            .build()
            .map_err(|e| invalid("AFTERCALL_SMTP_CA_FILE", e.to_string()))?;
        b = b.tls(match endpoint.tls {
            TlsMode::Opportunistic => Tls::Opportunistic(params),
            TlsMode::Required => Tls::Required(params),
            TlsMode::Wrapper => Tls::Wrapper(params),
            TlsMode::None => unreachable!("checked above"),
        });
    }
    Ok(b)
}

/// Classifies a failed send from lettre's typed error: 4xx replies, connection, TLS and
/// network failures and timeouts retry; 5xx replies and client-side refusals (e.g. a
/// non-ASCII address the server cannot take) are permanent. Addresses in the server's
/// reply are masked.
pub fn classify(err: &lettre::transport::smtp::Error) -> Outcome {
    let text = mask_emails_in(&crate::http::error_chain(err));
    let status = err.status().map(u16::from);
    if err.is_permanent() {
        Outcome::Permanent {
            error: format!("SMTP {text}"),
            status,
            snippet: None,
        }
    } else if err.is_transient() {
        Outcome::Retry {
            error: format!("SMTP {text}"),
            status,
            retry_after: None,
            snippet: None,
        }
    } else if err.is_client() {
        Outcome::permanent(format!("SMTP client: {text}"))
    } else if err.is_timeout() {
        Outcome::retry(format!("SMTP timeout: {text}"))
    } else {
        Outcome::retry(format!("SMTP connection: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = [
            ("smtp://localhost:2525", TlsMode::None),
            (
                "smtp://u:p@mail.example.com?tls=required",
                TlsMode::Required,
            ),
            (
                "smtp://mail.example.com:587?tls=opportunistic",
                TlsMode::Opportunistic,
            ),
            ("smtps://u:p%40ss@mail.example.com", TlsMode::Wrapper),
        ];
        for (url, mode) in ok {
            assert_eq!(parse_url(url).unwrap().tls, mode, "{url}");
        }
        for bad in [
            "http://mail.example.com",
            "smtp://:secret@mail.example.com",
            "smtp://h?tls=maybe",
            "smtp://",
            "nope",
        ] {
            let err = parse_url(bad).unwrap_err().to_string();
            assert!(err.contains("AFTERCALL_SMTP_URL"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
