//! What the executors need beyond `aftercall_core::settings` (which reads every
//! `AFTERCALL_*` setting): an error naming a setting, and providers' base URLs.

use crate::ActionsError;

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> ActionsError {
    ActionsError::Config {
        setting,
        message: message.into(),
    }
}

/// An `http(s)://` base URL without credentials, returned without a trailing slash.
pub(crate) fn base_url(setting: &'static str, value: &str) -> Result<String, ActionsError> {
    let parsed =
        url::Url::parse(value).map_err(|e| invalid(setting, format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            setting,
            format!("must be an http(s) URL, not {}", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(setting, "has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            setting,
            "must not carry credentials; use the token settings",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(setting, "must not have a query or fragment"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// Joins a base URL from [`base_url`] with a path starting with `/`.
pub(crate) fn join(base: &str, path: &str) -> Result<reqwest::Url, aftercall_core::Outcome> {
    reqwest::Url::parse(&format!("{base}{path}"))
        .map_err(|e| aftercall_core::Outcome::permanent(format!("invalid URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("X", "https://api.example.com/").unwrap(),
            "https://api.example.com"
        );
        assert_eq!(
            base_url("X", "http://127.0.0.1:8080/jira").unwrap(),
            "http://127.0.0.1:8080/jira"
        );
        for bad in [
            "ftp://x.example",
            "not a url",
            "https://u:p@x.example",
            "https://x.example/?a=1",
        ] {
            let err = base_url("AFTERCALL_X_URL", bad).unwrap_err().to_string();
            assert!(err.contains("AFTERCALL_X_URL"), "{bad}: {err}");
            assert!(!err.contains(":p@"), "{err}");
        }
    }
}
