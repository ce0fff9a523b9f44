//! Contact safety over HTTP (docs/rules.md): the opt-outs (list, add, remove), and
//! `POST /ingest/twilio/inbound`, where Twilio posts the messages people send to our
//! numbers: a STOP adds the sender's opt-out, a START removes it. Twilio signs each
//! request with `X-Twilio-Signature` (HMAC-SHA1 of the URL it called and the form's
//! fields, keyed by the account's auth token), checked here in constant time.

use aftercall_core::contact::{Channel, normalize};
use aftercall_queue::OptOut;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Params, RawBody};

type Result<T> = std::result::Result<T, ApiError>;

/// Every opt-out.
#[derive(Serialize, JsonSchema)]
pub(crate) struct OptOutList {
    items: Vec<OptOut>,
}

/// Body of `POST /opt-outs`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OptOutRequest")]
pub(crate) struct OptOutBody {
    /// `sms` or `email`.
    channel: Channel,
    /// An E.164 number for `sms`, an address for `email`.
    address: String,
}

/// `DELETE /opt-outs` query.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptOutQuery {
    /// `sms` or `email`.
    channel: Channel,
    /// An E.164 number for `sms`, an address for `email`.
    address: String,
}

/// What `POST /opt-outs` did.
#[derive(Serialize, JsonSchema)]
pub(crate) struct OptOutAdded {
    /// False when the contact had opted out before (the first record is kept).
    added: bool,
    channel: Channel,
    /// As stored (normalised).
    address: String,
}

fn address(channel: Channel, a: &str) -> Result<String> {
    normalize(channel, a).map_err(|message| ApiError::InvalidEvent {
        field: "address".into(),
        message,
    })
}

pub(crate) async fn list_opt_outs(State(s): State<ApiState>) -> Result<Json<OptOutList>> {
    Ok(Json(OptOutList {
        items: s.queue.opt_outs().await?,
    }))
}

pub(crate) async fn add_opt_out(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: RawBody,
) -> Result<Json<OptOutAdded>> {
    let b: OptOutBody = serde_json::from_value(body.json()?).map_err(|e| ApiError::BadRequest {
        code: "invalid_body",
        message: e.to_string(),
    })?;
    let address = address(b.channel, &b.address)?;
    let added = s.queue.opt_out(b.channel, &address, "api").await?;
    tracing::info!(channel = %b.channel, by = %caller.name, added, "opt-out recorded");
    Ok(Json(OptOutAdded {
        added,
        channel: b.channel,
        address,
    }))
}

pub(crate) async fn remove_opt_out(
    State(s): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Params(q): Params<OptOutQuery>,
) -> Result<StatusCode> {
    let address = address(q.channel, &q.address)?;
    if !s.queue.opt_in(q.channel, &address).await? {
        return Err(ApiError::NotFound("no such opt-out".into()));
    }
    tracing::info!(channel = %q.channel, by = %caller.name, "opt-out removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Twilio's opt-out keywords (its Advanced Opt-Out defaults) and opt-in keywords.
const STOP: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const START: &[&str] = &["START", "UNSTOP", "YES"];

/// `POST /ingest/twilio/inbound`: an incoming SMS. Answers empty TwiML (no reply is
/// sent from here; Twilio's own opt-out handling sends its confirmation).
pub(crate) async fn twilio_inbound(
    State(s): State<ApiState>,
    headers: HeaderMap,
    uri: Uri,
    body: RawBody,
) -> Result<Response> {
    let cfg = &s.cfg.platforms;
    let Some(token) = cfg.twilio_auth_token.as_deref() else {
        return Err(ApiError::Unsigned(
            "no credentials are configured for twilio: set AFTERCALL_TWILIO_AUTH_TOKEN".into(),
        ));
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body.bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let url = match &cfg.twilio_inbound_url {
        Some(u) => u.clone(),
        None => {
            // Behind a proxy, set AFTERCALL_TWILIO_INBOUND_URL: the URL Twilio calls.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("http");
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            format!("{proto}://{host}{path}")
        }
    };
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unsigned("missing X-Twilio-Signature".into()))?;
    let want = twilio_signature(token, &url, &params);
    if !bool::from(want.as_bytes().ct_eq(given.trim().as_bytes())) {
        tracing::warn!("twilio inbound message refused: bad signature");
        return Err(ApiError::Unsigned(
            "X-Twilio-Signature does not match".into(),
        ));
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let from = field("From").and_then(|f| normalize(Channel::Sms, f).ok());
    let word = field("Body")
        .unwrap_or("")
        .trim()
        .trim_end_matches(['.', '!'])
        .to_ascii_uppercase();
    if let Some(from) = from {
        if STOP.contains(&word.as_str()) {
            let added = s
                .queue
                .opt_out(Channel::Sms, &from, "twilio_inbound")
                .await?;
            tracing::info!(added, "opt-out from an inbound STOP");
        } else if START.contains(&word.as_str()) {
            let removed = s.queue.opt_in(Channel::Sms, &from).await?;
            tracing::info!(removed, "opt-in from an inbound START");
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

/// Twilio's request signature: base64 of HMAC-SHA1, keyed by the auth token, of the
/// URL followed by each form field's name and value, sorted by name (then value).
pub(crate) fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's security documentation, as its Python library signs it.
    #[test]
    fn signs_as_twilio_documents() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
