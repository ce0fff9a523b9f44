//! Quiet hours (docs/rules.md): an agent's window in which no SMS or e-mail goes out; one
//! due inside it waits for the window's end. Pure: the worker asks [`QuietHours::until`]
//! before it sends.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::template::{Zone, parse_zone};

/// `{"start": "21:00", "end": "08:00", "zone": "America/New_York"}`: a window that may
/// cross midnight, in `zone`, else in the zone of the caller's number (where its
/// country has a single one), else in the agent's `utc_offset`. Without any of them
/// the window does not apply (the caller's local time is unknown).
#[serde_with::skip_serializing_none]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// `HH:MM` (or `HH:MM:SS`), local time: the window opens.
    pub start: String,
    /// `HH:MM` (or `HH:MM:SS`), local time: the window closes (may be the next day).
    pub end: String,
    /// An IANA time zone (`Europe/Berlin`) or a UTC offset (`+02:00`).
    pub zone: Option<String>,
}

fn time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M"))
        .map_err(|_| format!("`{s}` is not a time like 21:00"))
}

impl QuietHours {
    /// The field path and message of what is wrong (`start`, `end`, `zone`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let start = time(&self.start).map_err(|m| ("start", m))?;
        let end = time(&self.end).map_err(|m| ("end", m))?;
        if start == end {
            return Err((
                "end",
                "is the same as start: the window would be empty".into(),
            ));
        }
        if let Some(z) = &self.zone {
            parse_zone(z).map_err(|m| ("zone", m))?;
        }
        Ok(())
    }

    /// When a message due at `now` to `number` is inside the window: the window's end
    /// (in UTC). `None`: send now.
    pub fn until(
        &self,
        now: DateTime<Utc>,
        number: Option<&str>,
        agent_offset: Option<&str>,
    ) -> Option<DateTime<Utc>> {
        let (start, end) = (time(&self.start).ok()?, time(&self.end).ok()?);
        let zone = match &self.zone {
            Some(z) => parse_zone(z).ok()?,
            None => match number.and_then(zone_of_number) {
                Some(tz) => Zone::Named(tz),
                None => parse_zone(agent_offset?).ok()?,
            },
        };
        match zone {
            Zone::Fixed(o) => window_end(&o, now, start, end),
            Zone::Named(tz) => window_end(&tz, now, start, end),
        }
    }
}

fn window_end<Tz: TimeZone>(
    tz: &Tz,
    now: DateTime<Utc>,
    start: NaiveTime,
    end: NaiveTime,
) -> Option<DateTime<Utc>> {
    let local = now.with_timezone(tz).naive_local();
    let t = local.time();
    let inside = if start < end {
        start <= t && t < end
    } else {
        t >= start || t < end
    };
    if !inside {
        return None;
    }
    let mut day = local.date();
    if t >= end {
        day += Duration::days(1);
    }
    // A local time that a clock change skips or repeats: its earliest instant, else an
    // hour later (the gap is never longer).
    let at = day.and_time(end);
    tz.from_local_datetime(&at)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(at + Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
}

/// The time zone of a number's country, where the country has exactly one. E.164
/// calling codes, longest first; countries spanning several zones (+1, +7, +55, +61,
/// +52, +62, ...) have none.
pub fn zone_of_number(number: &str) -> Option<chrono_tz::Tz> {
    use chrono_tz::Tz::*;
    const ZONES: &[(&str, chrono_tz::Tz)] = &[
        ("+353", Europe__Dublin),
        ("+358", Europe__Helsinki),
        ("+852", Asia__Hong_Kong),
        ("+886", Asia__Taipei),
        ("+971", Asia__Dubai),
        ("+972", Asia__Jerusalem),
        ("+966", Asia__Riyadh),
        ("+234", Africa__Lagos),
        ("+254", Africa__Nairobi),
        ("+20", Africa__Cairo),
        ("+27", Africa__Johannesburg),
        ("+30", Europe__Athens),
        ("+31", Europe__Amsterdam),
        ("+32", Europe__Brussels),
        ("+33", Europe__Paris),
        ("+36", Europe__Budapest),
        ("+39", Europe__Rome),
        ("+40", Europe__Bucharest),
        ("+41", Europe__Zurich),
        ("+43", Europe__Vienna),
        ("+44", Europe__London),
        ("+45", Europe__Copenhagen),
        ("+46", Europe__Stockholm),
        ("+47", Europe__Oslo),
        ("+48", Europe__Warsaw),
        ("+49", Europe__Berlin),
        ("+60", Asia__Kuala_Lumpur),
        ("+63", Asia__Manila),
        ("+65", Asia__Singapore),
        ("+66", Asia__Bangkok),
        ("+81", Asia__Tokyo),
        ("+82", Asia__Seoul),
        ("+84", Asia__Ho_Chi_Minh),
        ("+86", Asia__Shanghai),
        ("+90", Europe__Istanbul),
        ("+91", Asia__Kolkata),
        ("+92", Asia__Karachi),
    ];
    ZONES
        .iter()
        .find(|(code, _)| number.starts_with(code))
        .map(|(_, tz)| *tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(start: &str, end: &str, zone: Option<&str>) -> QuietHours {
        QuietHours {
            start: start.into(),
            end: end.into(),
            zone: zone.map(Into::into),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_over_midnight_defers_to_its_end_in_the_callers_zone() {
        let w = q("21:00", "08:00", Some("America/New_York"));
        // 03:00 in New York (EST, UTC-5): until 08:00 there, 13:00 UTC.
        assert_eq!(
            w.until(utc("2026-01-15T08:00:00Z"), None, None),
            Some(utc("2026-01-15T13:00:00Z"))
        );
        // 22:00 in New York: until 08:00 the next day.
        assert_eq!(
            w.until(utc("2026-01-16T03:00:00Z"), None, None),
            Some(utc("2026-01-16T13:00:00Z"))
        );
        // Noon: send now.
        assert_eq!(w.until(utc("2026-01-15T17:00:00Z"), None, None), None);
        // Summer (EDT, UTC-4).
        assert_eq!(
            w.until(utc("2026-07-15T07:00:00Z"), None, None),
            Some(utc("2026-07-15T12:00:00Z"))
        );
    }

    #[test]
    fn the_zone_comes_from_the_number_then_the_agent() {
        let w = q("12:00", "13:00", None);
        // 12:30 in London (GMT in January).
        let now = utc("2026-01-15T12:30:00Z");
        assert_eq!(
            w.until(now, Some("+447700900123"), None),
            Some(utc("2026-01-15T13:00:00Z"))
        );
        // Berlin is an hour ahead: 13:30 there, outside.
        assert_eq!(w.until(now, Some("+4915112345678"), None), None);
        // +1 spans many zones: the agent's offset decides, and without it, nothing.
        assert_eq!(w.until(now, Some("+14155551234"), None), None);
        assert_eq!(
            w.until(
                utc("2026-01-15T17:30:00Z"),
                Some("+14155551234"),
                Some("-05:00")
            ),
            Some(utc("2026-01-15T18:00:00Z"))
        );
        assert_eq!(
            zone_of_number("+353861234567"),
            Some(chrono_tz::Europe::Dublin)
        );
    }

    #[test]
    fn bad_windows_name_the_field() {
        assert_eq!(
            q("21:00", "08:00", Some("Mars/Olympus"))
                .validate()
                .unwrap_err()
                .0,
            "zone"
        );
        assert_eq!(q("9pm", "08:00", None).validate().unwrap_err().0, "start");
        assert_eq!(q("08:00", "08:00", None).validate().unwrap_err().0, "end");
        assert!(q("21:00:30", "08:00", Some("+02:00")).validate().is_ok());
    }
}
