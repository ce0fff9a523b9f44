//! The API's settings: bearer tokens and their scopes, body and rate limits, read from
//! `AFTERCALL_API_*` variables and validated at start-up (secure by default).

use std::fmt;
use std::net::SocketAddr;

use aftercall_core::settings::{SettingError, Settings};

use crate::server::ServerLimits;

/// What a token may do. Each scope includes the ones before it: `read` < `ingest` < `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read agents, calls, dead letters and stats.
    Read,
    /// Everything `read` may, plus `POST /calls`.
    Ingest,
    /// Everything: agent configs, dead-letter replay and purge.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "ingest" => Some(Scope::Ingest),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One bearer token. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token {
    /// Shown in logs instead of the token: `admin-1`, `read-2`, ...
    pub name: String,
    pub secret: String,
    pub scope: Scope,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("secret", &"***")
            .finish()
    }
}

/// The shortest token accepted: long enough that guessing is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tokens: Vec<Token>,
    /// Serve without authentication when no token is configured (local development only).
    pub insecure_no_auth: bool,
    /// Largest request body; a single event is further bounded by the queue's
    /// `max_event_bytes`.
    pub max_body_bytes: usize,
    /// Requests per minute per token (burst of the same size); 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// What one connection may hold, and how many there may be.
    pub server: ServerLimits,
    /// The voice platforms' credentials for `POST /ingest/*`.
    pub platforms: crate::PlatformConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            tokens: Vec::new(),
            insecure_no_auth: false,
            max_body_bytes: 10 * 1024 * 1024,
            rate_limit_per_minute: 600,
            server: ServerLimits::default(),
            platforms: crate::PlatformConfig::default(),
        }
    }
}

impl ApiConfig {
    /// AFTERCALL_API_TOKENS, AFTERCALL_API_INSECURE_NO_AUTH, AFTERCALL_API_MAX_BODY and
    /// AFTERCALL_API_RATE_LIMIT. Fails when no token is set unless the insecure flag is.
    pub fn from_settings(s: &Settings) -> Result<ApiConfig, SettingError> {
        let d = ApiConfig::default();
        let tokens = match s.string("AFTERCALL_API_TOKENS") {
            Some(v) => parse_tokens(&v).map_err(|message| SettingError {
                name: "AFTERCALL_API_TOKENS".into(),
                message,
            })?,
            None => Vec::new(),
        };
        let max_body_bytes: usize = s.parse_or("AFTERCALL_API_MAX_BODY", d.max_body_bytes)?;
        if max_body_bytes == 0 {
            return Err(SettingError {
                name: "AFTERCALL_API_MAX_BODY".into(),
                message: "must be at least 1 byte".into(),
            });
        }
        let ds = ServerLimits::default();
        let server = ServerLimits {
            header_timeout: s.duration_or("AFTERCALL_API_HEADER_TIMEOUT", ds.header_timeout)?,
            body_timeout: s.duration_or("AFTERCALL_API_BODY_TIMEOUT", ds.body_timeout)?,
            max_header_bytes: s.parse_or("AFTERCALL_API_MAX_HEADER_BYTES", ds.max_header_bytes)?,
            max_connections: s.parse_or("AFTERCALL_API_MAX_CONNECTIONS", ds.max_connections)?,
        };
        for (name, bad, message) in [
            (
                "AFTERCALL_API_HEADER_TIMEOUT",
                server.header_timeout.is_zero(),
                "must be more than 0",
            ),
            (
                "AFTERCALL_API_BODY_TIMEOUT",
                server.body_timeout.is_zero(),
                "must be more than 0",
            ),
            (
                "AFTERCALL_API_MAX_HEADER_BYTES",
                server.max_header_bytes < 1024,
                "must be at least 1024",
            ),
            (
                "AFTERCALL_API_MAX_CONNECTIONS",
                server.max_connections == 0,
                "must be at least 1",
            ),
        ] {
            if bad {
                return Err(SettingError {
                    name: name.into(),
                    message: message.into(),
                });
            }
        }
        let cfg = ApiConfig {
            platforms: crate::PlatformConfig::from_settings(s)?,
            server,
            tokens,
            insecure_no_auth: s.bool_or("AFTERCALL_API_INSECURE_NO_AUTH", false)?,
            max_body_bytes,
            rate_limit_per_minute: s
                .parse_or("AFTERCALL_API_RATE_LIMIT", d.rate_limit_per_minute)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses a configuration that would serve without authentication by accident.
    pub fn validate(&self) -> Result<(), SettingError> {
        if self.tokens.is_empty() && !self.insecure_no_auth {
            return Err(SettingError {
                name: "AFTERCALL_API_TOKENS".into(),
                message: "no API token is set; set `admin:<token>,read:<token>` (or AFTERCALL_API_INSECURE_NO_AUTH=true for local development)".into(),
            });
        }
        Ok(())
    }

    /// True when requests are served without a token.
    pub fn auth_disabled(&self) -> bool {
        self.tokens.is_empty() && self.insecure_no_auth
    }
}

/// AFTERCALL_API_ADDR: where the API listens (`127.0.0.1:8080`); unset means no API.
pub fn listen_addr(s: &Settings) -> Result<Option<SocketAddr>, SettingError> {
    s.parse("AFTERCALL_API_ADDR")
}

/// `admin:<token>,read:<token>,ingest:<token>`; messages never echo a token.
fn parse_tokens(v: &str) -> Result<Vec<Token>, String> {
    let mut tokens: Vec<Token> = Vec::new();
    for (i, item) in v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let n = i + 1;
        let Some((scope, secret)) = item.split_once(':') else {
            return Err(format!("entry {n} is not `scope:token`"));
        };
        let scope = Scope::parse(scope.trim()).ok_or_else(|| {
            format!(
                "entry {n}: scope `{}` is not read, ingest or admin",
                scope.trim()
            )
        })?;
        let secret = secret.trim();
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "entry {n}: the token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "entry {n}: the token contains spaces or control characters"
            ));
        }
        if tokens.iter().any(|t| t.secret == secret) {
            return Err(format!("entry {n}: the same token is listed twice"));
        }
        let name = format!(
            "{scope}-{}",
            tokens.iter().filter(|t| t.scope == scope).count() + 1
        );
        tokens.push(Token {
            name,
            secret: secret.to_string(),
            scope,
        });
    }
    if tokens.is_empty() {
        return Err("is set but lists no token".into());
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<ApiConfig, SettingError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        ApiConfig::from_settings(&Settings::new(&get))
    }

    #[test]
    fn tokens_parse_with_names_and_scopes() {
        let c = from(&[("AFTERCALL_API_TOKENS", "admin:aaaaaaaaaaaaaaaa1, read:rrrrrrrrrrrrrrrr1,read:rrrrrrrrrrrrrrrr2,ingest:iiiiiiiiiiiiiiii")]).unwrap();
        let got: Vec<(&str, Scope)> = c
            .tokens
            .iter()
            .map(|t| (t.name.as_str(), t.scope))
            .collect();
        assert_eq!(
            got,
            [
                ("admin-1", Scope::Admin),
                ("read-1", Scope::Read),
                ("read-2", Scope::Read),
                ("ingest-1", Scope::Ingest)
            ]
        );
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert!(
            !format!("{c:?}").contains("aaaaaaaaaaaaaaaa1"),
            "Debug must not show tokens"
        );
    }

    #[test]
    fn secure_by_default() {
        let err = from(&[]).unwrap_err();
        assert_eq!(err.name, "AFTERCALL_API_TOKENS");
        let c = from(&[("AFTERCALL_API_INSECURE_NO_AUTH", "true")]).unwrap();
        assert!(c.auth_disabled());
        // Tokens win over the flag.
        let c = from(&[
            ("AFTERCALL_API_INSECURE_NO_AUTH", "true"),
            ("AFTERCALL_API_TOKENS", "read:rrrrrrrrrrrrrrrr1"),
        ])
        .unwrap();
        assert!(!c.auth_disabled());
    }

    #[test]
    fn bad_settings_name_the_variable_and_hide_the_token() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "AFTERCALL_API_TOKENS",
                "root:supersecretsecret1",
                "scope `root`",
            ),
            ("AFTERCALL_API_TOKENS", "admin:short", "shorter than 16"),
            (
                "AFTERCALL_API_TOKENS",
                "supersecretsecret1",
                "not `scope:token`",
            ),
            (
                "AFTERCALL_API_TOKENS",
                "admin:supersecretsecret1,read:supersecretsecret1",
                "listed twice",
            ),
            ("AFTERCALL_API_TOKENS", " , ", "lists no token"),
            ("AFTERCALL_API_MAX_BODY", "lots", "`lots`"),
            ("AFTERCALL_API_MAX_BODY", "0", "at least 1"),
            ("AFTERCALL_API_RATE_LIMIT", "-1", "`-1`"),
            (
                "AFTERCALL_API_INSECURE_NO_AUTH",
                "maybe",
                "not true or false",
            ),
        ];
        for (name, value, want) in cases {
            let mut vars = vec![(*name, *value)];
            if *name != "AFTERCALL_API_TOKENS" {
                vars.push(("AFTERCALL_API_TOKENS", "admin:aaaaaaaaaaaaaaaa1"));
            }
            let err = from(&vars).unwrap_err();
            assert_eq!(&err.name, name, "{value}");
            assert!(err.message.contains(want), "{value}: {}", err.message);
            assert!(!err.message.contains("supersecret"), "{}", err.message);
        }
    }

    #[test]
    fn listen_addr_is_optional() {
        let get = |k: &str| (k == "AFTERCALL_API_ADDR").then(|| "127.0.0.1:8080".to_string());
        assert_eq!(
            listen_addr(&Settings::new(&get)).unwrap(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let none = |_: &str| None;
        assert_eq!(listen_addr(&Settings::new(&none)).unwrap(), None);
        let bad = |_: &str| Some("nowhere".to_string());
        assert_eq!(
            listen_addr(&Settings::new(&bad)).unwrap_err().name,
            "AFTERCALL_API_ADDR"
        );
    }
}
