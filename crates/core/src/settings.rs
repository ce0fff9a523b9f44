//! Typed settings from `AFTERCALL_*` variables. The lookup is passed in, so this stays
//! pure and testable; each error names the variable.

use std::str::FromStr;
use std::time::Duration;

use crate::RetryPolicy;
use crate::config::parse_duration;

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct SettingError {
    pub name: String,
    pub message: String,
}

/// Reads settings through `get` (usually `std::env::var`).
pub struct Settings<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Settings<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Settings { get }
    }

    pub fn string(&self, name: &str) -> Option<String> {
        (self.get)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, SettingError>
    where
        T::Err: std::fmt::Display,
    {
        match self.string(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|e| SettingError {
                name: name.into(),
                message: format!("`{v}`: {e}"),
            }),
        }
    }

    pub fn duration(&self, name: &str) -> Result<Option<Duration>, SettingError> {
        match self.string(name) {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .map_err(|message| SettingError {
                    name: name.into(),
                    message,
                }),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, SettingError> {
        match self.string(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(Some(true)),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(Some(false)),
            Some(v) => Err(SettingError {
                name: name.into(),
                message: format!("`{v}` is not true or false"),
            }),
        }
    }

    /// [`Settings::parse`], or `default` when the variable is unset.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, SettingError>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.parse(name)?.unwrap_or(default))
    }

    /// [`Settings::duration`], or `default` when the variable is unset.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, SettingError> {
        Ok(self.duration(name)?.unwrap_or(default))
    }

    /// [`Settings::bool`], or `default` when the variable is unset.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, SettingError> {
        Ok(self.bool(name)?.unwrap_or(default))
    }

    /// The retry policy: AFTERCALL_MAX_ATTEMPTS, AFTERCALL_RETRY_BASE, AFTERCALL_RETRY_FACTOR,
    /// AFTERCALL_RETRY_CAP, AFTERCALL_MAX_RETRY_AFTER, AFTERCALL_RETRY_JITTER.
    pub fn retry_policy(&self) -> Result<RetryPolicy, SettingError> {
        let d = RetryPolicy::default();
        let p = RetryPolicy {
            max_attempts: self.parse_or("AFTERCALL_MAX_ATTEMPTS", d.max_attempts)?,
            base: self.duration_or("AFTERCALL_RETRY_BASE", d.base)?,
            factor: self.parse_or("AFTERCALL_RETRY_FACTOR", d.factor)?,
            cap: self.duration_or("AFTERCALL_RETRY_CAP", d.cap)?,
            max_retry_after: self.duration_or("AFTERCALL_MAX_RETRY_AFTER", d.max_retry_after)?,
            jitter: self.parse_or("AFTERCALL_RETRY_JITTER", d.jitter)?,
        };
        let bad = |name: &str, message: &str| {
            Err(SettingError {
                name: name.into(),
                message: message.into(),
            })
        };
        if p.max_attempts == 0 {
            return bad("AFTERCALL_MAX_ATTEMPTS", "must be at least 1");
        }
        if !(1.0..=100.0).contains(&p.factor) {
            return bad("AFTERCALL_RETRY_FACTOR", "must be between 1 and 100");
        }
        if !(0.0..=1.0).contains(&p.jitter) {
            return bad("AFTERCALL_RETRY_JITTER", "must be between 0 and 1");
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let get = |k: &str| match k {
            "AFTERCALL_MAX_ATTEMPTS" => Some("many".to_string()),
            _ => None,
        };
        let err = Settings::new(&get).retry_policy().unwrap_err();
        assert_eq!(err.name, "AFTERCALL_MAX_ATTEMPTS");
        let get = |k: &str| (k == "AFTERCALL_RETRY_BASE").then(|| "250ms".to_string());
        assert_eq!(
            Settings::new(&get).retry_policy().unwrap().base,
            Duration::from_millis(250)
        );
        let get = |k: &str| (k == "AFTERCALL_RETRY_CAP").then(|| "soon".to_string());
        assert!(
            Settings::new(&get)
                .retry_policy()
                .unwrap_err()
                .to_string()
                .starts_with("AFTERCALL_RETRY_CAP:")
        );
    }
}
