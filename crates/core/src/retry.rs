//! The durable retry policy: a pure function from attempt number to delay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with jitter. Defaults spread 8 attempts over about 22 hours
/// (1m, 4m, 16m, 64m, ~4h, 8h, 8h), in the spirit of Svix's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The budget given to new jobs. Each job keeps its own (stored with it), which is
    /// what `settle::settle` spends.
    pub max_attempts: u32,
    #[serde(with = "millis")]
    pub base: Duration,
    pub factor: f64,
    #[serde(with = "millis")]
    pub cap: Duration,
    /// The largest `Retry-After` a server may ask for before it is clamped.
    #[serde(with = "millis")]
    pub max_retry_after: Duration,
    /// Fraction of the delay added or removed at random (0.2 = ±20 %).
    pub jitter: f64,
}

/// The attempt budget a job has unless configured otherwise. The queue stores a job's
/// budget only when it differs from this, and reads an absent one as this.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base: Duration::from_secs(60),
            factor: 4.0,
            cap: Duration::from_secs(8 * 3600),
            max_retry_after: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Delay before the attempt after `attempt` (1-based) failed. `rand01` is uniform in
    /// [0, 1); passing it in keeps this function pure and testable.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, rand01: f64) -> Duration {
        let exp =
            self.base.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1).min(64) as i32);
        let backoff = exp.min(self.cap.as_secs_f64());
        let jittered = backoff * (1.0 + self.jitter * (2.0 * rand01 - 1.0));
        // Clamped again as a Duration: f64 seconds round up past a cap of ~1e16 s.
        let backoff =
            Duration::from_secs_f64(jittered.clamp(0.0, self.cap.as_secs_f64())).min(self.cap);
        match retry_after {
            // The server knows best, within reason: wait at least what it asked (clamped),
            // plus a little jitter so a crowd of retries does not land at once.
            Some(ra) => {
                let ra = ra.min(self.max_retry_after);
                ra + Duration::from_secs_f64(ra.as_secs_f64() * 0.1 * rand01)
            }
            None => backoff,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_about_a_day() {
        let p = RetryPolicy::default();
        let total: Duration = (1..p.max_attempts).map(|a| p.delay(a, None, 0.5)).sum();
        let hours = total.as_secs_f64() / 3600.0;
        assert!((18.0..30.0).contains(&hours), "{hours} h");
    }

    #[test]
    fn table() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let cases = [
            (1, None, 60),
            (2, None, 240),
            (3, None, 960),
            (6, None, 8 * 3600),
            (20, None, 8 * 3600),
            (1, Some(120), 120),
            (1, Some(99_999), 3600),
        ];
        for (attempt, ra, want) in cases {
            let got = p.delay(attempt, ra.map(Duration::from_secs), 0.0).as_secs();
            assert_eq!(got, want, "attempt {attempt} retry_after {ra:?}");
        }
    }

    #[test]
    fn jitter_stays_in_band_and_retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        for i in 0..100 {
            let r = i as f64 / 100.0;
            let d = p.delay(2, None, r).as_secs_f64();
            assert!((192.0..=288.0).contains(&d), "{d}");
            assert!(p.delay(1, Some(Duration::from_secs(7)), r) >= Duration::from_secs(7));
        }
    }
}
