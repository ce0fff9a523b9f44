//! Who is calling and may they: bearer tokens compared in constant time, scopes, and a
//! per-token rate limit (an in-memory token bucket).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::{ApiConfig, Scope};
use crate::error::ApiError;

/// The authenticated caller, put in the request's extensions for handlers and logs.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`admin-1`), or `anonymous` when authentication is off.
    pub name: String,
    pub scope: Scope,
}

struct Known {
    digest: [u8; 32],
    name: String,
    scope: Scope,
}

/// Checks tokens and rate limits; built once from the config.
pub(crate) struct Gate {
    known: Vec<Known>,
    auth_disabled: bool,
    limiter: Option<RateLimiter>,
}

impl Gate {
    pub(crate) fn new(cfg: &ApiConfig) -> Gate {
        let known = cfg
            .tokens
            .iter()
            .map(|t| Known {
                digest: digest(&t.secret),
                name: t.name.clone(),
                scope: t.scope,
            })
            .collect();
        let limiter =
            (cfg.rate_limit_per_minute > 0).then(|| RateLimiter::new(cfg.rate_limit_per_minute));
        Gate {
            known,
            auth_disabled: cfg.auth_disabled(),
            limiter,
        }
    }

    /// 401, 429 or 403 (in that order), or the caller.
    pub(crate) fn check(&self, headers: &HeaderMap, needed: Scope) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers)?;
        self.admit(caller, needed)
    }

    /// [`Gate::check`] for a token that arrived some other way than the `Authorization`
    /// header (the dashboard keeps it in a cookie).
    pub(crate) fn check_token(&self, token: &str, needed: Scope) -> Result<Caller, ApiError> {
        let caller = if self.auth_disabled {
            anonymous()
        } else {
            self.lookup(token)?
        };
        self.admit(caller, needed)
    }

    /// Rate limit, then scope.
    fn admit(&self, caller: Caller, needed: Scope) -> Result<Caller, ApiError> {
        if let Some(l) = &self.limiter {
            l.take(&caller.name, Instant::now())
                .map_err(|wait| ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                })?;
        }
        if caller.scope < needed {
            return Err(ApiError::Forbidden {
                needed,
                has: caller.scope,
                name: caller.name,
            });
        }
        Ok(caller)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.auth_disabled {
            return Ok(anonymous());
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingToken)?;
        let value = value.to_str().map_err(|_| ApiError::InvalidToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::InvalidToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingToken);
        }
        self.lookup(token)
    }

    fn lookup(&self, token: &str) -> Result<Caller, ApiError> {
        // Compare digests, so timing reveals neither the token's length nor a prefix
        // of it; look at every known token so timing does not say which one matched.
        let presented = digest(token.trim());
        let mut found = None;
        for k in &self.known {
            if constant_time_eq(&k.digest, &presented) {
                found = Some(k);
            }
        }
        let k = found.ok_or(ApiError::InvalidToken)?;
        Ok(Caller {
            name: k.name.clone(),
            scope: k.scope,
        })
    }
}

fn anonymous() -> Caller {
    Caller {
        name: "anonymous".into(),
        scope: Scope::Admin,
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]).into()
}

/// One bucket per caller: `per_minute` requests of burst, refilled evenly.
pub(crate) struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is free.
    /// Keys are token names, so the map stays as small as the token list.
    pub(crate) fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = f64::from(self.per_minute);
        let b = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        b.take(now, capacity, capacity / 60.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, capacity: f64, per_sec: f64) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::config::Token;

    #[test]
    fn bucket_allows_a_burst_then_refills_evenly() {
        let l = RateLimiter::new(60);
        let t0 = Instant::now();
        for _ in 0..60 {
            l.take("a", t0).unwrap();
        }
        let wait = l.take("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // Other callers have their own bucket.
        l.take("b", t0).unwrap();
        // One second later exactly one more request fits.
        let t1 = t0 + Duration::from_secs(1);
        l.take("a", t1).unwrap();
        assert!(l.take("a", t1).is_err());
        // A long pause refills to the burst size, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..60 {
            l.take("a", t2).unwrap();
        }
        assert!(l.take("a", t2).is_err());
    }

    fn gate() -> Gate {
        let tokens = vec![
            Token {
                name: "admin-1".into(),
                secret: "admin-token-0123456789".into(),
                scope: Scope::Admin,
            },
            Token {
                name: "read-1".into(),
                secret: "read-token-0123456789".into(),
                scope: Scope::Read,
            },
        ];
        Gate::new(&ApiConfig {
            tokens,
            rate_limit_per_minute: 0,
            ..ApiConfig::default()
        })
    }

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn tokens_and_scopes() {
        let g = gate();
        let cases: &[(Option<&str>, Scope, &str)] = &[
            (None, Scope::Read, "unauthorized"),
            (Some("Basic YWRtaW46YWRtaW4="), Scope::Read, "unauthorized"),
            (Some("Bearer nope"), Scope::Read, "unauthorized"),
            (
                Some("Bearer admin-token-012345678"),
                Scope::Read,
                "unauthorized",
            ),
            (
                Some("Bearer admin-token-01234567890"),
                Scope::Read,
                "unauthorized",
            ),
            (
                Some("Bearer read-token-0123456789"),
                Scope::Ingest,
                "forbidden",
            ),
            (
                Some("Bearer read-token-0123456789"),
                Scope::Admin,
                "forbidden",
            ),
            (Some("Bearer read-token-0123456789"), Scope::Read, "read-1"),
            (
                Some("bearer  admin-token-0123456789 "),
                Scope::Admin,
                "admin-1",
            ),
        ];
        for (auth, needed, want) in cases {
            let got = match g.check(&headers(*auth), *needed) {
                Ok(c) => c.name,
                Err(e) => e.code().to_string(),
            };
            assert_eq!(&got, want, "{auth:?} for {needed}");
        }
    }

    #[test]
    fn bare_tokens_are_checked_like_headers() {
        let g = gate();
        let check = |t: &str, needed| {
            g.check_token(t, needed)
                .map_err(|e| e.code())
                .map(|c| c.name)
        };
        assert_eq!(
            check("read-token-0123456789", Scope::Read),
            Ok("read-1".into())
        );
        assert_eq!(
            check("read-token-0123456789", Scope::Admin),
            Err("forbidden")
        );
        assert_eq!(
            check("read-token-012345678", Scope::Read),
            Err("unauthorized")
        );
        assert_eq!(check("", Scope::Read), Err("unauthorized"));
    }

    #[test]
    fn insecure_mode_admits_everyone_as_admin() {
        let g = Gate::new(&ApiConfig {
            insecure_no_auth: true,
            ..ApiConfig::default()
        });
        assert_eq!(
            g.check(&headers(None), Scope::Admin).unwrap().name,
            "anonymous"
        );
        // A configured token always wins over the flag.
        let g = Gate::new(&ApiConfig {
            insecure_no_auth: true,
            tokens: gate_tokens(),
            ..ApiConfig::default()
        });
        assert!(g.check(&headers(None), Scope::Read).is_err());
    }

    fn gate_tokens() -> Vec<Token> {
        vec![Token {
            name: "read-1".into(),
            secret: "read-token-0123456789".into(),
            scope: Scope::Read,
        }]
    }
}
