//! Per-destination limits (`AFTERCALL_LIMITS`), enforced in Redis so that no number of
//! replicas exceeds them. Work held back by a limit goes back to the scheduled set
//! without counting an attempt.

use std::collections::BTreeMap;
use std::time::Duration;

use aftercall_core::settings::SettingError;
use aftercall_queue::Limit;

/// Limits by destination; `*` is the default for webhook hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    by_destination: BTreeMap<String, Limit>,
}

/// How long a slot is held at most if its holder dies without giving it back.
pub const SLOT_HOLD: Duration = Duration::from_secs(120);

/// One `destination=first[/second]` item of a per-destination setting
/// (`AFTERCALL_LIMITS`, `AFTERCALL_BREAKERS`).
pub(crate) struct Item<'a> {
    setting: &'static str,
    text: &'a str,
    pub destination: &'a str,
    pub first: &'a str,
    pub second: Option<&'a str>,
}

impl Item<'_> {
    /// An error of the setting about this item.
    pub fn error(&self, message: impl std::fmt::Display) -> SettingError {
        SettingError {
            name: self.setting.into(),
            message: format!("`{}`: {message}", self.text),
        }
    }

    /// `v`, a part of this item, as a whole number.
    pub fn number(&self, v: &str) -> Result<u32, SettingError> {
        v.trim()
            .parse()
            .map_err(|_| self.error(format_args!("`{v}` is not a whole number")))
    }
}

/// The items of `spec`, a comma-separated list of `destination=<shape>`, in order: an
/// item that is not one is an error of `setting`.
pub(crate) fn per_destination<'a>(
    setting: &'static str,
    spec: &'a str,
    shape: &'static str,
) -> impl Iterator<Item = Result<Item<'a>, SettingError>> {
    let items = spec.split(',').map(str::trim).filter(|s| !s.is_empty());
    items.map(move |text| {
        let (destination, rule) = text.split_once('=').ok_or_else(|| SettingError {
            name: setting.into(),
            message: format!("`{text}` is not destination={shape}"),
        })?;
        let (first, second) = match rule.split_once('/') {
            Some((first, second)) => (first, Some(second)),
            None => (rule, None),
        };
        Ok(Item {
            setting,
            text,
            destination: destination.trim(),
            first,
            second,
        })
    })
}

impl Limits {
    /// `host=concurrency[/per_second],...`, e.g. `crm.example.com=10/50,sms=1/1,task:github=5,*=20`.
    pub fn parse(spec: &str) -> Result<Limits, SettingError> {
        let mut by_destination = BTreeMap::new();
        let items = per_destination("AFTERCALL_LIMITS", spec, "concurrency[/per_second]");
        for item in items {
            let item = item?;
            let limit = Limit {
                concurrency: item.number(item.first)?,
                per_second: item.number(item.second.unwrap_or("0"))?,
            };
            by_destination.insert(item.destination.to_string(), limit);
        }
        Ok(Limits { by_destination })
    }

    /// The limit for `destination`, if any applies.
    pub fn for_destination(&self, destination: &str) -> Option<Limit> {
        let l = self.by_destination.get(destination).copied().or_else(|| {
            let is_host = !destination.contains(':') && !matches!(destination, "sms" | "smtp");
            if is_host {
                self.by_destination.get("*").copied()
            } else {
                None
            }
        })?;
        (l.concurrency > 0 || l.per_second > 0).then_some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let l = Limits::parse("crm.example.com=10/50, sms=1/1,task:github=5,*=20").unwrap();
        assert_eq!(
            l.for_destination("crm.example.com"),
            Some(Limit {
                concurrency: 10,
                per_second: 50
            })
        );
        assert_eq!(
            l.for_destination("other.example"),
            Some(Limit {
                concurrency: 20,
                per_second: 0
            })
        );
        assert_eq!(
            l.for_destination("sms"),
            Some(Limit {
                concurrency: 1,
                per_second: 1
            })
        );
        assert_eq!(
            l.for_destination("task:github"),
            Some(Limit {
                concurrency: 5,
                per_second: 0
            })
        );
        assert_eq!(l.for_destination("smtp"), None);
        assert_eq!(Limits::parse("").unwrap().for_destination("x"), None);
    }

    /// Both per-destination settings name themselves, the item and what is wrong with it.
    #[test]
    fn errors_name_the_setting_and_the_item() {
        use crate::breakers::Breakers;
        for (err, want) in [
            (
                Limits::parse("a=1, b").err(),
                "AFTERCALL_LIMITS: `b` is not destination=concurrency[/per_second]",
            ),
            (
                Limits::parse("x=ten").err(),
                "AFTERCALL_LIMITS: `x=ten`: `ten` is not a whole number",
            ),
            (
                Limits::parse("a=1/ x").err(),
                "AFTERCALL_LIMITS: `a=1/ x`: ` x` is not a whole number",
            ),
            (
                Breakers::parse("nonsense").err(),
                "AFTERCALL_BREAKERS: `nonsense` is not destination=failures[/cooldown]",
            ),
            (
                Breakers::parse("x=five/1s").err(),
                "AFTERCALL_BREAKERS: `x=five/1s`: `five` is not a whole number",
            ),
        ] {
            assert_eq!(err.map(|e| e.to_string()).as_deref(), Some(want));
        }
        let err = Breakers::parse("x=1/soon").unwrap_err().to_string();
        assert!(err.starts_with("AFTERCALL_BREAKERS: `x=1/soon`: "), "{err}");
    }
}
