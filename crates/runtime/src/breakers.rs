//! Destination health as the worker sees it: per-destination breaker settings
//! (`AFTERCALL_BREAKERS`), and a short-lived local view of each destination's state so
//! that a healthy destination's jobs cost no Redis call at the gate. The state itself
//! lives in Redis (`destination.lua`), shared by every replica.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aftercall_core::Outcome;
use aftercall_core::settings::SettingError;
use aftercall_queue::{Health, Pause};

use crate::limits::per_destination;

/// A destination's breaker: `failures` consecutive failed attempts open it for
/// `cooldown`, after which one probe is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Breaker {
    pub const DEFAULT: Breaker = Breaker {
        failures: 5,
        cooldown: Duration::from_secs(30),
    };
}

/// Breakers by destination; `*` applies to every destination not named.
#[derive(Debug, Clone, PartialEq)]
pub struct Breakers {
    by_destination: BTreeMap<String, Breaker>,
}

impl Default for Breakers {
    /// `*=5/30s`.
    fn default() -> Self {
        Breakers {
            by_destination: BTreeMap::from([("*".to_string(), Breaker::DEFAULT)]),
        }
    }
}

impl Breakers {
    /// `destination=failures[/cooldown],...`, e.g. `*=5/30s,crm.example.com=3/10s,sms=0`;
    /// 0 failures (or `off` for the whole setting) turns the breaker off.
    pub fn parse(spec: &str) -> Result<Breakers, SettingError> {
        let mut by_destination = BTreeMap::new();
        if spec.trim().eq_ignore_ascii_case("off") {
            return Ok(Breakers { by_destination });
        }
        for item in per_destination("AFTERCALL_BREAKERS", spec, "failures[/cooldown]") {
            let item = item?;
            let failures = item.number(item.first)?;
            let cooldown = match item.second {
                Some(c) => {
                    aftercall_core::config::parse_duration(c.trim()).map_err(|e| item.error(e))?
                }
                None => Breaker::DEFAULT.cooldown,
            };
            by_destination.insert(item.destination.to_string(), Breaker { failures, cooldown });
        }
        Ok(Breakers { by_destination })
    }

    /// The breaker of `destination`, if one is on.
    pub fn for_destination(&self, destination: &str) -> Option<Breaker> {
        let b = self
            .by_destination
            .get(destination)
            .or_else(|| self.by_destination.get("*"))
            .copied()?;
        (b.failures > 0).then_some(b)
    }
}

/// What an attempt's outcome says of its destination, and until when (Unix ms) the
/// destination asked not to be sent to. `None`: nothing (skipped, or refused before
/// reaching it).
pub fn health_of(outcome: &Outcome, now_ms: i64, max_pause: Duration) -> Option<(Health, i64)> {
    let pause = |d: Duration| now_ms + d.min(max_pause).as_millis() as i64;
    match outcome {
        Outcome::Delivered { .. } => Some((Health::Ok, 0)),
        // The provider answered (it refused the recipient as opted out): reachable.
        Outcome::OptedOut { .. } => Some((Health::Ok, 0)),
        // It answered: reachable, whatever it thought of the request.
        Outcome::Permanent {
            status: Some(_), ..
        } => Some((Health::Ok, 0)),
        Outcome::Permanent { .. } | Outcome::Skipped { .. } => None,
        Outcome::Retry {
            status: Some(429),
            retry_after,
            ..
        } => Some((
            Health::Throttle,
            pause(retry_after.unwrap_or(Duration::from_secs(1))),
        )),
        Outcome::Retry { retry_after, .. } => {
            Some((Health::Fail, retry_after.map(pause).unwrap_or(0)))
        }
    }
}

/// How long a local view of a destination (or of the pauses) is trusted.
const FRESH: Duration = Duration::from_millis(500);

/// This process's recent view of destination health: a destination seen closed with no
/// failure streak within [`FRESH`], and no pause that could apply, skips the gate's
/// Redis call. Another replica's change is seen within that time.
#[derive(Debug, Default)]
pub struct View {
    healthy: Mutex<HashMap<String, Instant>>,
    pauses: Mutex<Option<(Instant, Vec<Pause>)>>,
}

impl View {
    /// Whether `destination` was seen healthy lately.
    pub fn healthy(&self, destination: &str) -> bool {
        let map = self.healthy.lock().expect("not poisoned");
        map.get(destination).is_some_and(|t| t.elapsed() < FRESH)
    }

    /// Records what Redis said: healthy (closed, no streak) or not.
    pub fn saw(&self, destination: &str, healthy: bool) {
        let mut map = self.healthy.lock().expect("not poisoned");
        if healthy {
            map.insert(destination.to_string(), Instant::now());
        } else {
            map.remove(destination);
        }
    }

    /// The pauses, if read lately.
    pub fn pauses(&self) -> Option<Vec<Pause>> {
        let p = self.pauses.lock().expect("not poisoned");
        p.as_ref()
            .filter(|(t, _)| t.elapsed() < FRESH)
            .map(|(_, v)| v.clone())
    }

    pub fn saw_pauses(&self, pauses: Vec<Pause>) {
        *self.pauses.lock().expect("not poisoned") = Some((Instant::now(), pauses));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let b = Breakers::parse("*=5/30s, crm.example.com=3/10s,sms=0").unwrap();
        assert_eq!(
            b.for_destination("crm.example.com"),
            Some(Breaker {
                failures: 3,
                cooldown: Duration::from_secs(10)
            })
        );
        assert_eq!(b.for_destination("task:github"), Some(Breaker::DEFAULT));
        assert_eq!(b.for_destination("sms"), None);
        assert_eq!(Breakers::parse("off").unwrap().for_destination("x"), None);
        assert_eq!(Breakers::parse("").unwrap().for_destination("x"), None);
        assert_eq!(
            Breakers::default().for_destination("smtp"),
            Some(Breaker::DEFAULT)
        );
    }

    #[test]
    fn outcomes_say_what_they_say_of_the_destination() {
        let max = Duration::from_secs(3600);
        let retry = |status, retry_after| Outcome::Retry {
            error: "e".into(),
            status,
            retry_after,
            snippet: None,
        };
        let table = [
            (
                Outcome::Delivered {
                    status: Some(200),
                    detail: None,
                },
                Some((Health::Ok, 0)),
            ),
            (
                Outcome::Permanent {
                    error: "HTTP 404".into(),
                    status: Some(404),
                    snippet: None,
                },
                Some((Health::Ok, 0)),
            ),
            (Outcome::permanent("blocked address"), None),
            (Outcome::skipped("nothing to send"), None),
            (retry(Some(503), None), Some((Health::Fail, 0))),
            (
                retry(Some(503), Some(Duration::from_secs(7))),
                Some((Health::Fail, 1_007_000)),
            ),
            (
                retry(Some(429), Some(Duration::from_secs(9))),
                Some((Health::Throttle, 1_009_000)),
            ),
            (retry(Some(429), None), Some((Health::Throttle, 1_001_000))),
            (
                retry(Some(429), Some(Duration::from_secs(86_400))),
                Some((Health::Throttle, 4_600_000)),
            ),
            (retry(None, None), Some((Health::Fail, 0))),
        ];
        for (outcome, want) in table {
            assert_eq!(health_of(&outcome, 1_000_000, max), want, "{outcome:?}");
        }
    }
}
