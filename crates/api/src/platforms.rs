//! `POST /ingest/{retell,vapi,bland}`: voice platforms' own post-call webhooks. Not
//! behind the API's bearer tokens (platforms cannot send them): each platform's message
//! is authenticated the way that platform signs it, over the raw body, in constant time.
//! A platform without credentials configured is refused (401), never open by default.
//! Reading the message is core's (`aftercall_core::intake`); this file is HTTP and keys.

use std::fmt;
use std::time::{Duration, Instant};

use aftercall_core::intake::{AgentMap, Message, Platform};
use aftercall_core::settings::{SettingError, Settings};
use aftercall_queue::{Ingested, IntakeOutcome};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::auth::RateLimiter;
use crate::error::ApiError;
use crate::extract::RawBody;

type HmacSha256 = Hmac<Sha256>;

/// The platforms' credentials and the intake's limits. `Debug` shows no secret.
#[derive(Clone)]
pub struct PlatformConfig {
    /// AFTERCALL_RETELL_API_KEY: the Retell API key that signs its webhooks
    /// (`x-retell-signature`).
    pub retell_api_key: Option<String>,
    /// AFTERCALL_VAPI_SECRET: the token of a Vapi Bearer Token credential (sent as
    /// `Authorization: Bearer`), or the legacy server secret (`x-vapi-secret`).
    pub vapi_secret: Option<String>,
    /// AFTERCALL_VAPI_HMAC_SECRET: the secret of a Vapi HMAC credential with its
    /// defaults (SHA-256, hex, `x-signature` over `{timestamp}.{body}`, `x-timestamp`).
    pub vapi_hmac_secret: Option<String>,
    /// AFTERCALL_BLAND_WEBHOOK_SECRET: Bland's webhook signing secret
    /// (`X-Webhook-Signature`).
    pub bland_secret: Option<String>,
    /// AFTERCALL_TWILIO_AUTH_TOKEN (the SMS action's too): signs Twilio's inbound
    /// messages (`X-Twilio-Signature`, `POST /ingest/twilio/inbound`).
    pub twilio_auth_token: Option<String>,
    /// AFTERCALL_TWILIO_INBOUND_URL: the URL Twilio calls, as configured there (the
    /// signature covers it); unset: built from the request's Host and X-Forwarded-Proto.
    pub twilio_inbound_url: Option<String>,
    /// AFTERCALL_INGEST_MAX_AGE: how far a signed timestamp may be from now (5 min, as
    /// Retell's own SDK checks).
    pub max_age: Duration,
    /// AFTERCALL_INGEST_AGENTS: explicit agent ids per platform agent.
    pub agents: AgentMap,
    /// AFTERCALL_INGEST_RATE_LIMIT: requests per minute per platform, checked before the
    /// signature; 0 turns it off.
    pub rate_limit_per_minute: u32,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            retell_api_key: None,
            vapi_secret: None,
            vapi_hmac_secret: None,
            bland_secret: None,
            twilio_auth_token: None,
            twilio_inbound_url: None,
            max_age: Duration::from_secs(300),
            agents: AgentMap::default(),
            rate_limit_per_minute: 60_000,
        }
    }
}

impl fmt::Debug for PlatformConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<String>| if s.is_some() { "***" } else { "unset" };
        f.debug_struct("PlatformConfig")
            .field("retell_api_key", &set(&self.retell_api_key))
            .field("vapi_secret", &set(&self.vapi_secret))
            .field("vapi_hmac_secret", &set(&self.vapi_hmac_secret))
            .field("bland_secret", &set(&self.bland_secret))
            .field("twilio_auth_token", &set(&self.twilio_auth_token))
            .field("twilio_inbound_url", &self.twilio_inbound_url)
            .field("max_age", &self.max_age)
            .field("agents", &self.agents)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .finish()
    }
}

impl PlatformConfig {
    pub fn from_settings(s: &Settings) -> Result<PlatformConfig, SettingError> {
        let d = PlatformConfig::default();
        let secret = |name: &str| s.string(name).filter(|v| !v.trim().is_empty());
        let agents = match s.string("AFTERCALL_INGEST_AGENTS") {
            Some(v) => AgentMap::parse(&v).map_err(|message| SettingError {
                name: "AFTERCALL_INGEST_AGENTS".into(),
                message,
            })?,
            None => AgentMap::default(),
        };
        Ok(PlatformConfig {
            retell_api_key: secret("AFTERCALL_RETELL_API_KEY"),
            vapi_secret: secret("AFTERCALL_VAPI_SECRET"),
            vapi_hmac_secret: secret("AFTERCALL_VAPI_HMAC_SECRET"),
            bland_secret: secret("AFTERCALL_BLAND_WEBHOOK_SECRET"),
            twilio_auth_token: secret("AFTERCALL_TWILIO_AUTH_TOKEN"),
            twilio_inbound_url: secret("AFTERCALL_TWILIO_INBOUND_URL"),
            max_age: s.duration_or("AFTERCALL_INGEST_MAX_AGE", d.max_age)?,
            agents,
            rate_limit_per_minute: s
                .parse_or("AFTERCALL_INGEST_RATE_LIMIT", d.rate_limit_per_minute)?,
        })
    }

    /// The platforms with credentials, for the start-up line.
    pub fn configured(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.retell_api_key.is_some() {
            out.push("retell");
        }
        if self.vapi_secret.is_some() || self.vapi_hmac_secret.is_some() {
            out.push("vapi");
        }
        if self.bland_secret.is_some() {
            out.push("bland");
        }
        if self.twilio_auth_token.is_some() {
            out.push("twilio (inbound STOP)");
        }
        out
    }
}

/// The intake's per-platform rate limit.
pub(crate) struct Intake {
    limiter: Option<RateLimiter>,
    /// Each agent's `wait_for_analysis`, as read within the last second: a Retell
    /// `call_ended` does not pay a Redis round trip for it (a config change shows
    /// within a second).
    waits: std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<Duration>)>>,
}

/// How long an agent's `wait_for_analysis` is reused.
const WAIT_TTL: Duration = Duration::from_secs(1);

impl Intake {
    async fn wait_for_analysis(
        &self,
        queue: &aftercall_queue::Queue,
        agent_id: &str,
    ) -> Result<Option<Duration>, ApiError> {
        let now = Instant::now();
        if let Some((at, wait)) = self
            .waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent_id)
            && now.duration_since(*at) < WAIT_TTL
        {
            return Ok(*wait);
        }
        let wait = queue
            .get_agent(agent_id)
            .await?
            .and_then(|a| a.follow_up().and_then(|f| f.wait_for_analysis()));
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: agents come and go; a full map starts over.
        if waits.len() >= 10_000 {
            waits.clear();
        }
        waits.insert(agent_id.to_string(), (now, wait));
        Ok(wait)
    }
}

impl Intake {
    pub(crate) fn new(cfg: &PlatformConfig) -> Intake {
        // Counted from zero, so /metrics shows every series before the first message.
        for p in Platform::ALL {
            for outcome in OUTCOMES {
                metrics::counter!("aftercall_ingest_messages_total", "platform" => p.as_str(), "outcome" => *outcome)
                    .increment(0);
            }
        }
        Intake {
            limiter: (cfg.rate_limit_per_minute > 0)
                .then(|| RateLimiter::new(cfg.rate_limit_per_minute)),
            waits: Default::default(),
        }
    }
}

/// Every outcome the intake counts (`aftercall_ingest_messages_total{outcome}`).
const OUTCOMES: &[&str] = &[
    "enqueued",
    "waiting",
    "duplicate",
    "joined",
    "late",
    "ignored",
    "unauthorized",
    "invalid",
];

fn count(p: Platform, outcome: &'static str) {
    metrics::counter!("aftercall_ingest_messages_total", "platform" => p.as_str(), "outcome" => outcome)
        .increment(1);
}

/// What `POST /ingest/*` answers.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct IngestAnswer {
    /// What happened: `enqueued`, `waiting` (held for the analysis), `duplicate`,
    /// `joined` (the analysis of a waiting call), `late` (an analysis after the fan-out,
    /// kept with the call), or `ignored` (a message aftercall does not use).
    outcome: &'static str,
    /// The platform's message type, for `ignored`.
    kind: Option<String>,
    call_id: Option<String>,
    job_id: Option<String>,
}

/// A platform's message on its intake route (`/ingest/<platform>`).
pub(crate) async fn ingest(
    State(s): State<ApiState>,
    platform: Platform,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    if let Some(l) = &s.intake.limiter {
        l.take(platform.as_str(), Instant::now())
            .map_err(|wait| ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            })?;
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Err(reason) = verify(platform, &s.cfg.platforms, &headers, &body.bytes, now_ms) {
        count(platform, "unauthorized");
        tracing::warn!(platform = platform.as_str(), %reason, "platform message refused");
        return Err(ApiError::Unsigned(reason));
    }
    let max = s.queue.config().max_event_bytes;
    let message = platform.read(&body.bytes, max).map_err(|e| {
        count(platform, "invalid");
        ApiError::InvalidEvent {
            field: e.field.clone(),
            message: e.to_string(),
        }
    })?;
    let answer = match message {
        Message::Ignored { kind } => {
            count(platform, "ignored");
            tracing::debug!(platform = platform.as_str(), %kind, "platform message ignored");
            IngestAnswer {
                outcome: "ignored",
                kind: Some(kind),
                call_id: None,
                job_id: None,
            }
        }
        Message::Ended {
            mut event,
            analysis_follows,
        } => {
            s.cfg.platforms.agents.apply(platform, &mut event);
            let wait = if analysis_follows {
                s.intake
                    .wait_for_analysis(&s.queue, &event.agent_id)
                    .await?
            } else {
                None
            };
            let call_id = event.call_id.clone();
            let r = match wait {
                Some(wait) => s.queue.enqueue_waiting(*event, wait).await,
                None => s.queue.enqueue(vec![*event]).await.map(|mut v| {
                    let e = v.remove(0);
                    Ingested {
                        outcome: if e.duplicate {
                            IntakeOutcome::Duplicate
                        } else {
                            IntakeOutcome::Enqueued
                        },
                        call_id: e.call_id,
                        job_id: e.job_id,
                    }
                }),
            }
            .map_err(|e| ApiError::enqueue_failed(e, 1, |_| call_id.clone()))?;
            answered(platform, r)
        }
        Message::Analyzed { mut event } => {
            s.cfg.platforms.agents.apply(platform, &mut event);
            let call_id = event.call_id.clone();
            let r = s
                .queue
                .join_analysis(*event)
                .await
                .map_err(|e| ApiError::enqueue_failed(e, 1, |_| call_id.clone()))?;
            answered(platform, r)
        }
    };
    // Every platform counts any 2xx as delivered; a new call answers 202 as
    // `POST /calls` does.
    let status = match answer.outcome {
        "enqueued" | "waiting" | "joined" => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

fn answered(platform: Platform, r: Ingested) -> IngestAnswer {
    let outcome = match r.outcome {
        IntakeOutcome::Enqueued => "enqueued",
        IntakeOutcome::Waiting => "waiting",
        IntakeOutcome::Duplicate => "duplicate",
        IntakeOutcome::Joined => "joined",
        IntakeOutcome::Late => "late",
    };
    count(platform, outcome);
    tracing::info!(platform = platform.as_str(), call_id = %r.call_id, job_id = %r.job_id, outcome, "platform message ingested");
    IngestAnswer {
        outcome,
        kind: None,
        call_id: Some(r.call_id),
        job_id: Some(r.job_id),
    }
}

/// Checks a message's credentials; the error says why, never quoting the body or a
/// secret.
pub(crate) fn verify<'a>(
    platform: Platform,
    cfg: &'a PlatformConfig,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let required = |name: &str| header(name).ok_or_else(|| format!("missing {name}"));
    let unconfigured = |setting: &str| {
        format!(
            "no credentials are configured for {}: set {setting}",
            platform.as_str()
        )
    };
    let configured = |secret: &'a Option<String>, setting: &str| {
        secret.as_deref().ok_or_else(|| unconfigured(setting))
    };
    match platform {
        Platform::Retell => {
            let key = configured(&cfg.retell_api_key, "AFTERCALL_RETELL_API_KEY")?;
            let sig = required("x-retell-signature")?;
            // v=<unix ms>,d=<hex HMAC-SHA256 of the body followed by the timestamp>
            let (v, d) = sig
                .strip_prefix("v=")
                .and_then(|r| r.split_once(",d="))
                .filter(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("x-retell-signature is not v=<ms>,d=<hex>")?;
            fresh(
                v.parse::<i64>().map_err(|_| "bad timestamp")?,
                now_ms,
                cfg.max_age,
            )?;
            let mut mac = keyed(key);
            mac.update(body);
            mac.update(v.as_bytes());
            check_hex(mac, d)
        }
        Platform::Vapi => {
            if cfg.vapi_secret.is_none() && cfg.vapi_hmac_secret.is_none() {
                return Err(unconfigured(
                    "AFTERCALL_VAPI_SECRET or AFTERCALL_VAPI_HMAC_SECRET",
                ));
            }
            if let Some(secret) = &cfg.vapi_hmac_secret
                && let Some(sig) = header("x-signature")
            {
                let ts = required("x-timestamp")?;
                let n: i64 = ts.parse().map_err(|_| "x-timestamp is not a number")?;
                // Seconds or milliseconds: a 13-digit stamp is in ms.
                fresh(
                    if n > 100_000_000_000 { n } else { n * 1000 },
                    now_ms,
                    cfg.max_age,
                )?;
                let mut mac = keyed(secret);
                mac.update(ts.as_bytes());
                mac.update(b".");
                mac.update(body);
                let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
                return check_hex(mac, sig);
            }
            if let Some(secret) = &cfg.vapi_secret {
                let bearer = header("authorization").and_then(|v| {
                    v.split_once(' ')
                        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                        .map(|(_, t)| t.trim())
                });
                let presented = bearer
                    .or_else(|| header("x-vapi-secret"))
                    .or_else(|| header("x-vapi-signature"));
                if let Some(p) = presented {
                    return same_secret(p, secret);
                }
            }
            Err(match (&cfg.vapi_hmac_secret, &cfg.vapi_secret) {
                (Some(_), None) => "missing x-signature".into(),
                _ => "missing Authorization: Bearer, x-vapi-secret or x-signature".into(),
            })
        }
        Platform::Bland => {
            let secret = configured(&cfg.bland_secret, "AFTERCALL_BLAND_WEBHOOK_SECRET")?;
            let sig = required("x-webhook-signature")?;
            let mut mac = keyed(secret);
            mac.update(body);
            check_hex(mac, sig)
        }
    }
}

fn keyed(key: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length")
}

fn fresh(signed_ms: i64, now_ms: i64, max_age: Duration) -> Result<(), String> {
    let age = now_ms.saturating_sub(signed_ms);
    if age.unsigned_abs() > max_age.as_millis() as u64 {
        return Err(format!(
            "the signature's timestamp is {} s {} now; at most {} s is accepted",
            age.unsigned_abs() / 1000,
            if age >= 0 { "before" } else { "after" },
            max_age.as_secs()
        ));
    }
    Ok(())
}

/// Compares the MAC with a hex signature in constant time (`verify_slice`).
fn check_hex(mac: HmacSha256, hex: &str) -> Result<(), String> {
    let sig = decode_hex(hex).ok_or("the signature is not hex")?;
    mac.verify_slice(&sig)
        .map_err(|_| "the signature does not match".to_string())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// A shared secret compared by digest, so timing says nothing of its length or prefix.
fn same_secret(presented: &str, secret: &str) -> Result<(), String> {
    use sha2::Digest;
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(secret.as_bytes());
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err("the secret does not match".into())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn cfg() -> PlatformConfig {
        PlatformConfig {
            retell_api_key: Some("key_retell".into()),
            vapi_secret: Some("vapi-token".into()),
            vapi_hmac_secret: Some("vapi-hmac".into()),
            bland_secret: Some("bland-secret".into()),
            ..PlatformConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn hex_mac(key: &str, parts: &[&[u8]]) -> String {
        let mut m = keyed(key);
        for p in parts {
            m.update(p);
        }
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    // The signatures accepted here are produced by the platforms' own SDKs in the
    // end-to-end tests (tests/tests/intake.rs); these cases cover the refusals.
    #[test]
    fn retell_refuses_stale_forged_and_unconfigured() {
        let body = br#"{"event":"call_ended"}"#;
        let now = 1_764_763_200_000i64;
        let sign = |ts: i64, key: &str| {
            let d = hex_mac(key, &[body, ts.to_string().as_bytes()]);
            headers(&[("x-retell-signature", format!("v={ts},d={d}"))])
        };
        assert_eq!(
            verify(
                Platform::Retell,
                &cfg(),
                &sign(now, "key_retell"),
                body,
                now
            ),
            Ok(())
        );
        let stale = verify(
            Platform::Retell,
            &cfg(),
            &sign(now - 301_000, "key_retell"),
            body,
            now,
        );
        assert!(stale.unwrap_err().contains("301 s before now"));
        let forged = verify(Platform::Retell, &cfg(), &sign(now, "other"), body, now);
        assert_eq!(forged.unwrap_err(), "the signature does not match");
        let tampered = verify(
            Platform::Retell,
            &cfg(),
            &sign(now, "key_retell"),
            b"{}",
            now,
        );
        assert!(tampered.is_err());
        assert!(verify(Platform::Retell, &cfg(), &HeaderMap::new(), body, now).is_err());
        let open = verify(
            Platform::Retell,
            &PlatformConfig::default(),
            &sign(now, "key_retell"),
            body,
            now,
        );
        assert!(open.unwrap_err().contains("AFTERCALL_RETELL_API_KEY"));
    }

    #[test]
    fn vapi_takes_a_bearer_token_the_legacy_secret_or_hmac() {
        let body = br#"{"message":{}}"#;
        let now = 1_764_763_200_000i64;
        for h in [
            headers(&[("authorization", "Bearer vapi-token".into())]),
            headers(&[("x-vapi-secret", "vapi-token".into())]),
        ] {
            assert_eq!(verify(Platform::Vapi, &cfg(), &h, body, now), Ok(()));
        }
        let h = headers(&[("authorization", "Bearer nope".into())]);
        assert!(verify(Platform::Vapi, &cfg(), &h, body, now).is_err());
        let ts = (now / 1000).to_string();
        let sig = hex_mac("vapi-hmac", &[ts.as_bytes(), b".", body]);
        let h = headers(&[("x-signature", sig.clone()), ("x-timestamp", ts.clone())]);
        assert_eq!(verify(Platform::Vapi, &cfg(), &h, body, now), Ok(()));
        let h = headers(&[
            ("x-signature", sig),
            ("x-timestamp", ((now / 1000) - 600).to_string()),
        ]);
        assert!(verify(Platform::Vapi, &cfg(), &h, body, now).is_err());
        let unset = PlatformConfig::default();
        assert!(verify(Platform::Vapi, &unset, &HeaderMap::new(), body, now).is_err());
    }

    #[test]
    fn bland_signs_the_body() {
        let body = br#"{"call_id":"x"}"#;
        let sig = hex_mac("bland-secret", &[body]);
        let h = headers(&[("x-webhook-signature", sig)]);
        assert_eq!(verify(Platform::Bland, &cfg(), &h, body, 0), Ok(()));
        assert!(verify(Platform::Bland, &cfg(), &h, b"{}", 0).is_err());
        let h = headers(&[("x-webhook-signature", "zz".into())]);
        assert!(verify(Platform::Bland, &cfg(), &h, body, 0).is_err());
    }
}
