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

impl Limits {
    /// `host=concurrency[/per_second],...`, e.g. `crm.example.com=10/50,sms=1/1,task:github=5,*=20`.
    pub fn parse(spec: &str) -> Result<Limits, SettingError> {
        let bad = |message: String| SettingError {
            name: "AFTERCALL_LIMITS".into(),
            message,
        };
        let mut by_destination = BTreeMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (dest, rule) = item.split_once('=').ok_or_else(|| {
                bad(format!(
                    "`{item}` is not destination=concurrency[/per_second]"
                ))
            })?;
            let (c, r) = rule.split_once('/').unwrap_or((rule, "0"));
            let num = |v: &str| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| bad(format!("`{item}`: `{v}` is not a whole number")))
            };
            by_destination.insert(
                dest.trim().to_string(),
                Limit {
                    concurrency: num(c)?,
                    per_second: num(r)?,
                },
            );
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
        assert!(
            Limits::parse("x=ten")
                .unwrap_err()
                .to_string()
                .starts_with("AFTERCALL_LIMITS:")
        );
        assert!(Limits::parse("nonsense").is_err());
    }
}
