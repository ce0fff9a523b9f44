//! Page templates (minijinja, every value HTML-escaped), embedded in the binary, and
//! the layout every page shares.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment, Value};
use serde::Serialize;

use crate::assets;
use crate::session::Session;

pub(crate) struct Views {
    env: Environment<'static>,
}

/// `(name, text)` for each name, the text compiled in from `templates/<name>`.
macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "layout.html",
    "table.html",
    "login.html",
    "error.html",
    "overview.html",
    "overview_live.html",
    "agents.html",
    "agent.html",
    "action.html",
    "calls.html",
    "call_live.html",
    "dead_letters.html",
    "dead_letter.html",
    "opt_outs.html",
    "destinations.html",
];

impl Views {
    pub fn new() -> Views {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("template {name}: {e:#}"));
        }
        env.add_filter("time", |v: Value| {
            fmt_ms(v.as_i64(), "%Y-%m-%d %H:%M:%S UTC")
        });
        env.add_filter("iso", |v: Value| {
            fmt_ms(v.as_i64(), "%Y-%m-%dT%H:%M:%S%.3fZ")
        });
        env.add_filter("seg", |v: String| path_segment(&v));
        env.add_filter("q", |v: String| {
            url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
        });
        env.add_filter("pretty", |v: Value| {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        });
        Views { env }
    }

    pub fn render(&self, name: &str, ctx: impl Serialize) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// A whole page: the layout around `body`. A template error is logged and answered
    /// with a plain 500.
    pub fn page(
        &self,
        status: StatusCode,
        session: Option<&Session>,
        title: &str,
        active: &str,
        body: Result<String, minijinja::Error>,
    ) -> Response {
        let page = body.and_then(|body| {
            let data = serde_json::json!({
                "title": title,
                "active": active,
                "user": session.map(|s| serde_json::json!({
                    "name": s.caller.name,
                    "scope": s.caller.scope.as_str(),
                    "logout": s.token.is_some(),
                })),
                "csrf": session.map(|s| s.csrf.as_str()),
                "css": assets::url("app.css"),
                "js": assets::url("app.js"),
            });
            self.render(
                "layout.html",
                ctx(data, [("body", Value::from_safe_string(body))]),
            )
        });
        match page {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => internal(&e),
        }
    }

    /// A fragment (a live-refreshed part of a page), without the layout.
    pub fn fragment(&self, name: &str, ctx: impl Serialize) -> Response {
        match self.render(name, ctx) {
            Ok(html) => Html(html).into_response(),
            Err(e) => internal(&e),
        }
    }
}

/// A template context: `data` (escaped wherever it is shown) plus pieces of HTML that
/// other templates rendered. (`serde_json::json!` would turn those into plain text.)
pub(crate) fn ctx<const N: usize>(data: serde_json::Value, html: [(&str, Value); N]) -> Value {
    let mut m: BTreeMap<String, Value> = match data {
        serde_json::Value::Object(o) => o
            .into_iter()
            .map(|(k, v)| (k, Value::from_serialize(&v)))
            .collect(),
        _ => BTreeMap::new(),
    };
    for (k, v) in html {
        m.insert(k.to_string(), v);
    }
    Value::from_iter(m)
}

fn internal(e: &minijinja::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "dashboard template failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

fn fmt_ms(ms: Option<i64>, format: &str) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// Percent-encodes one path segment: ids may hold `/`, `?` or `#`.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes() {
        let v = Views::new();
        let out = v
            .render(
                "error.html",
                serde_json::json!({"status": 404, "message": "<script>x</script>"}),
            )
            .unwrap();
        assert!(out.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"), "{out}");
        assert!(!out.contains("<script>x"));
    }

    #[test]
    fn path_segments() {
        assert_eq!(path_segment("agent_abc-1.~"), "agent_abc-1.~");
        assert_eq!(path_segment("a/b?c#d é"), "a%2Fb%3Fc%23d%20%C3%A9");
    }

    #[test]
    fn times() {
        assert_eq!(
            fmt_ms(Some(1_773_505_200_000), "%Y-%m-%d %H:%M:%S UTC"),
            "2026-03-14 16:20:00 UTC"
        );
        assert_eq!(fmt_ms(None, "%Y"), "");
    }
}
