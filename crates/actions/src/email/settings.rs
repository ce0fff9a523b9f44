//! Reading `AFTERCALL_*` settings for the e-mail, SMS and task executors: trimmed, empty
//! means unset, and every error names the variable. (Shared by `sms` and `task` until it
//! moves to the crate root.)

use std::time::Duration;

use crate::ActionsError;

/// A setting's value, trimmed; an empty value counts as unset.
pub(crate) fn var(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub(crate) fn invalid(setting: &'static str, message: impl Into<String>) -> ActionsError {
    ActionsError::Config {
        setting,
        message: message.into(),
    }
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub(crate) fn flag(setting: &'static str, value: Option<String>) -> Result<bool, ActionsError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(invalid(setting, format!("`{other}` is not true or false"))),
    }
}

/// `90s`, `2m` or a bare number of seconds; zero is refused.
pub(crate) fn duration(
    setting: &'static str,
    value: Option<String>,
) -> Result<Option<Duration>, ActionsError> {
    let Some(v) = value else { return Ok(None) };
    let d = aftercall_core::config::parse_duration(&v).map_err(|m| invalid(setting, m))?;
    if d.is_zero() {
        return Err(invalid(setting, "must be longer than zero"));
    }
    Ok(Some(d))
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
    fn flags_and_durations() {
        assert!(flag("X", Some("TRUE".into())).unwrap());
        assert!(!flag("X", None).unwrap());
        assert!(
            flag("X", Some("maybe".into()))
                .unwrap_err()
                .to_string()
                .contains("X")
        );
        assert_eq!(
            duration("X", Some("2m".into())).unwrap(),
            Some(Duration::from_secs(120))
        );
        assert!(duration("X", Some("0".into())).is_err());
    }

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
