//! Templates: the call's variables in double curly braces (minijinja), the seed's
//! single-brace form accepted too, checked when config is set and rendered per call.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::event::CallEvent;

/// The variables a template may use (plus `metadata.<field>`).
pub const VARIABLES: &[&str] = &[
    "agent_name",
    "agent_id",
    "call_id",
    "caller_number",
    "caller_name",
    "caller_email",
    "duration",
    "duration_seconds",
    "summary",
    "date",
    "details",
    "recording_url",
    "platform",
    "ended_reason",
    "platform_ended_reason",
    "direction",
    "analysis",
    "raw",
    "metadata",
];

pub const BUILTIN_NAMES: &[&str] = &["call_summary", "confirmation", "follow_up"];

/// A built-in body: subject default, plain text and HTML sources.
pub struct Builtin {
    pub subject: &'static str,
    pub text: &'static str,
    pub html: &'static str,
}

pub fn builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "call_summary" => Builtin {
            subject: "Your call with {{agent_name}} — Summary",
            text: "Hi{% if caller_name %} {{caller_name}}{% endif %},\n\nThank you for calling {{agent_name}} on {{date}}.\n\nSummary:\n{{summary}}\n{% if details %}\nDetails:\n{{details}}\n{% endif %}\nCall reference: {{call_id}} ({{duration}} min)\n",
            html: "<p>Hi{% if caller_name %} {{caller_name}}{% endif %},</p>\n<p>Thank you for calling {{agent_name}} on {{date}}.</p>\n<h3>Summary</h3>\n<p>{{summary}}</p>\n{% if details %}<h3>Details</h3>\n<p>{{details}}</p>\n{% endif %}<p>Call reference: {{call_id}} ({{duration}} min)</p>\n",
        },
        "confirmation" => Builtin {
            subject: "Confirmation from {{agent_name}}",
            text: "Hi{% if caller_name %} {{caller_name}}{% endif %},\n\nThis confirms your call with {{agent_name}} on {{date}}.\n{% if details %}\n{{details}}\n{% endif %}\nReference: {{call_id}}\n",
            html: "<p>Hi{% if caller_name %} {{caller_name}}{% endif %},</p>\n<p>This confirms your call with {{agent_name}} on {{date}}.</p>\n{% if details %}<p>{{details}}</p>\n{% endif %}<p>Reference: {{call_id}}</p>\n",
        },
        "follow_up" => Builtin {
            subject: "Following up on your call with {{agent_name}}",
            text: "Hi{% if caller_name %} {{caller_name}}{% endif %},\n\nWe are following up on your call on {{date}}:\n{{summary}}\n\nReply to this e-mail if anything is still open.\nReference: {{call_id}}\n",
            html: "<p>Hi{% if caller_name %} {{caller_name}}{% endif %},</p>\n<p>We are following up on your call on {{date}}:</p>\n<p>{{summary}}</p>\n<p>Reply to this e-mail if anything is still open.</p>\n<p>Reference: {{call_id}}</p>\n",
        },
        _ => return None,
    })
}

/// Rewrites the seed's single-brace variables (`{agent_name}`) as `{{agent_name}}`;
/// anything already in minijinja syntax is left alone.
pub fn normalize(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            let prev_brace = i > 0 && b[i - 1] == b'{';
            let next = b.get(i + 1).copied();
            if !prev_brace && !matches!(next, Some(b'{' | b'%' | b'#')) {
                let rest = &src[i + 1..];
                let ident_len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .unwrap_or(rest.len());
                let closes = rest.as_bytes().get(ident_len) == Some(&b'}')
                    && rest.as_bytes().get(ident_len + 1) != Some(&b'}');
                if ident_len > 0 && closes {
                    out.push_str("{{");
                    out.push_str(&rest[..ident_len]);
                    out.push_str("}}");
                    i += ident_len + 2;
                    continue;
                }
            }
        }
        let ch = src[i..].chars().next().expect("i is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn env(html: bool) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_auto_escape_callback(move |_| {
        if html {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_recursion_limit(50);
    // A value as JSON (a webhook's `body` template): quoted and escaped, never HTML-escaped.
    env.add_filter("tojson", |v: Value| {
        serde_json::to_string(&v)
            .map(Value::from_safe_string)
            .map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
            })
    });
    env
}

/// Compiles `src` and checks that it only uses known variables.
pub fn check(src: &str) -> Result<(), String> {
    let src = normalize(src);
    let env = env(false);
    let tmpl = env.template_from_str(&src).map_err(|e| {
        format!(
            "template syntax error: {}",
            e.detail().unwrap_or(&e.to_string())
        )
    })?;
    if let Some(word) = refused_statement(&src) {
        return Err(format!("template syntax error: unknown statement {word}"));
    }
    unknown_variable(tmpl.undeclared_variables(true))
}

/// The statements that reach other templates or declare macros: minijinja knows them
/// because the dashboard's own pages use them (its `multi_template` and `macros`
/// features), but a user's template has no other template to reach, so here they stay
/// unknown statements, as they were before those features were on.
const REFUSED: [&str; 7] = [
    "block", "extends", "include", "import", "from", "macro", "call",
];

/// The first [`REFUSED`] statement of a template that compiles, if any.
fn refused_statement(src: &str) -> Option<&'static str> {
    let mut rest = src;
    loop {
        rest = &rest[rest.find('{')? + 1..];
        let end = match rest.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'#') => "#}",
            Some(b'%') => {
                let tag = rest[1..].trim_start_matches(['-', '+']).trim_start();
                let word = &tag[..tag
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tag.len())];
                if let Some(refused) = REFUSED.iter().find(|r| **r == word) {
                    return Some(refused);
                }
                if word == "raw" { "endraw" } else { "%}" }
            }
            _ => continue,
        };
        rest = &rest[rest.find(end)?..];
    }
}

/// The first variable of `used` that is not one of [`VARIABLES`], as an error.
fn unknown_variable(used: std::collections::HashSet<String>) -> Result<(), String> {
    let mut unknown: Vec<String> = used
        .into_iter()
        .filter(|v| {
            let root = v.split('.').next().unwrap_or(v);
            !VARIABLES.contains(&root)
        })
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(v) => Err(format!(
            "unknown variable `{v}`; available: {}",
            VARIABLES
                .iter()
                .map(|name| match *name {
                    "analysis" | "raw" | "metadata" => format!("{name}.<field>"),
                    name => name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Compiles an action's `when` (a minijinja expression, e.g.
/// `ended_reason != "voicemail" and duration_seconds > 30`) and checks that it only
/// uses known variables.
pub fn check_condition(src: &str) -> Result<(), String> {
    if src.trim().is_empty() {
        return Err("is empty; leave `when` out to always run the action".into());
    }
    let env = env(false);
    let expr = env.compile_expression(src).map_err(|e| {
        format!(
            "condition syntax error: {}",
            e.detail().unwrap_or(&e.to_string())
        )
    })?;
    unknown_variable(expr.undeclared_variables(true))
}

/// Evaluates a `when` condition against a call's variables: its truthiness, as
/// minijinja's `if` sees it.
pub fn eval_condition(src: &str, vars: &Vars) -> Result<bool, String> {
    let env = env(false);
    let expr = env
        .compile_expression(src)
        .map_err(|e| format!("condition error: {e}"))?;
    expr.eval(&vars.0)
        .map(|v| v.is_true())
        .map_err(|e| format!("condition error: {e}"))
}

/// How the call's date is shown.
#[derive(Debug, Clone, Default)]
pub struct DateStyle {
    pub format: Option<String>,
    pub utc_offset: Option<String>,
}

pub fn check_date_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        Err(format!("`{f}` is not a valid strftime format"))
    } else {
        Ok(())
    }
}

pub fn parse_offset(o: &str) -> Result<FixedOffset, String> {
    if o.eq_ignore_ascii_case("utc") || o == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero offset is valid"));
    }
    let probe = format!("2000-01-01T00:00:00{o}");
    DateTime::parse_from_rfc3339(&probe)
        .map(|d| *d.offset())
        .map_err(|_| format!("`{o}` is not a UTC offset like +02:00"))
}

/// Where the call's date is shown: a fixed offset or a named (IANA) time zone, whose
/// offset depends on the date (daylight saving).
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

/// `+02:00`, `UTC`, or an IANA name such as `Europe/Berlin`.
pub fn parse_zone(z: &str) -> Result<Zone, String> {
    if let Ok(o) = parse_offset(z) {
        return Ok(Zone::Fixed(o));
    }
    z.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
        format!("`{z}` is neither a UTC offset like +02:00 nor a time zone like Europe/Berlin")
    })
}

impl Zone {
    /// `when` formatted in this zone.
    pub fn format(&self, when: DateTime<Utc>, fmt: &str) -> String {
        match self {
            Zone::Fixed(o) => when.with_timezone(o).format(fmt).to_string(),
            Zone::Named(tz) => when.with_timezone(tz).format(fmt).to_string(),
        }
    }
}

/// The variables of one call, ready to render any template.
#[derive(Debug, Clone)]
pub struct Vars(BTreeMap<&'static str, Value>);

impl Vars {
    /// `now` stands in for the call's date when the event carries no time.
    pub fn new(
        event: &CallEvent,
        agent_name: Option<&str>,
        style: &DateStyle,
        now: DateTime<Utc>,
    ) -> Vars {
        let s = |v: Option<&str>| Value::from(v.unwrap_or("").to_string());
        let zone = style
            .utc_offset
            .as_deref()
            .and_then(|z| parse_zone(z).ok())
            .unwrap_or_else(|| {
                Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset is valid"))
            });
        let when = event
            .ended_at
            .or(event.started_at)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(now);
        let date = zone.format(when, style.format.as_deref().unwrap_or("%Y-%m-%d"));
        let duration = event.duration();
        let details = match &event.details {
            None => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}: {s}"),
                    other => format!("{k}: {other}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            Some(other) => other.to_string(),
        };
        let mut m = BTreeMap::new();
        m.insert(
            "agent_name",
            s(event
                .agent_name
                .as_deref()
                .or(agent_name)
                .or(Some(&event.agent_id))),
        );
        m.insert("agent_id", s(Some(&event.agent_id)));
        m.insert("call_id", s(Some(&event.call_id)));
        m.insert("caller_number", s(event.caller_number.as_deref()));
        m.insert("caller_name", s(event.caller_name()));
        m.insert("caller_email", s(event.caller_email()));
        // Minutes, rounded up so a 10 second call is "1", as the seed's variable table says.
        // Numbers, so a condition compares them as numbers (`duration_seconds > 30`);
        // undefined when unknown, which renders as nothing and compares as false.
        let number = |n: Option<u64>| n.map(Value::from).unwrap_or(Value::UNDEFINED);
        m.insert("duration", number(duration.map(|d| d.div_ceil(60))));
        m.insert("duration_seconds", number(duration));
        m.insert("summary", s(event.summary.as_deref()));
        m.insert("date", Value::from(date));
        m.insert("details", Value::from(details));
        m.insert("recording_url", s(event.recording_url.as_deref()));
        m.insert("platform", s(event.platform.as_deref()));
        m.insert("ended_reason", s(event.ended_reason.map(|r| r.as_str())));
        m.insert(
            "platform_ended_reason",
            s(event.platform_ended_reason.as_deref()),
        );
        m.insert("direction", s(event.direction.map(|d| d.as_str())));
        // Always an object, so `analysis.successful` reads as undefined (falsy) rather
        // than failing on a call without analysis.
        m.insert(
            "analysis",
            Value::from_serialize(event.analysis.clone().unwrap_or_default()),
        );
        m.insert(
            "raw",
            event
                .raw
                .as_ref()
                .map(Value::from_serialize)
                .unwrap_or_else(|| Value::from_serialize(serde_json::Map::new())),
        );
        m.insert("metadata", Value::from_serialize(&event.metadata));
        Vars(m)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }
}

/// Renders a template. `html` escapes every variable.
pub fn render(src: &str, vars: &Vars, html: bool) -> Result<String, String> {
    let env = env(html);
    env.render_str(&normalize(src), &vars.0)
        .map_err(|e| format!("template error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let e = CallEvent::parse(
            br#"{"call_id":"call_1","agent_id":"agent_1","caller_number":"+14155551234","duration_seconds":230,
                "ended_at":"2026-03-15T23:30:00Z","summary":"Order <b>#1</b>","details":{"order":"12345"},
                "metadata":{"caller_name":"<script>alert(1)</script>","order_id":"12345"}}"#,
            1 << 20,
        )
        .unwrap();
        Vars::new(&e, Some("Acme Support"), &DateStyle::default(), Utc::now())
    }

    #[test]
    fn normalizes_single_braces() {
        let cases = [
            (
                "Thanks for calling {agent_name}!",
                "Thanks for calling {{agent_name}}!",
            ),
            ("{{agent_name}} stays", "{{agent_name}} stays"),
            ("{% if x %}y{% endif %}", "{% if x %}y{% endif %}"),
            ("json {\"a\": 1}", "json {\"a\": 1}"),
            ("{metadata.order_id}", "{{metadata.order_id}}"),
            ("{}", "{}"),
            ("ünïcode {call_id}", "ünïcode {{call_id}}"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want);
        }
    }

    #[test]
    fn renders_the_seed_sms() {
        let out = render(
            "Thanks for calling {agent_name}! Your reference number is {call_id}.",
            &vars(),
            false,
        )
        .unwrap();
        assert_eq!(
            out,
            "Thanks for calling Acme Support! Your reference number is call_1."
        );
    }

    #[test]
    fn variables() {
        let v = vars();
        let r = |s| render(s, &v, false).unwrap();
        assert_eq!(r("{{duration}}"), "4");
        assert_eq!(r("{{date}}"), "2026-03-15");
        assert_eq!(r("{{details}}"), "order: 12345");
        assert_eq!(r("{{metadata.order_id}}"), "12345");
        assert_eq!(r("[{{caller_email}}]"), "[]");
        let style = DateStyle {
            format: Some("%d %B %Y %H:%M".into()),
            utc_offset: Some("+02:00".into()),
        };
        let e = CallEvent::parse(
            br#"{"call_id":"c","agent_id":"a","ended_at":"2026-03-15T23:30:00Z"}"#,
            1 << 20,
        )
        .unwrap();
        let v2 = Vars::new(&e, None, &style, Utc::now());
        assert_eq!(
            render("{{date}}", &v2, false).unwrap(),
            "16 March 2026 01:30"
        );
        assert_eq!(render("{{agent_name}}", &v2, false).unwrap(), "a");
    }

    #[test]
    fn named_time_zones_follow_daylight_saving() {
        let e = |t: &str| {
            CallEvent::parse(
                format!(r#"{{"call_id":"c","agent_id":"a","ended_at":"{t}"}}"#).as_bytes(),
                1 << 20,
            )
            .unwrap()
        };
        let style = DateStyle {
            format: Some("%Y-%m-%d %H:%M %Z".into()),
            utc_offset: Some("Europe/Berlin".into()),
        };
        let render_at = |t| {
            render(
                "{{date}}",
                &Vars::new(&e(t), None, &style, Utc::now()),
                false,
            )
            .unwrap()
        };
        assert_eq!(render_at("2026-01-15T12:00:00Z"), "2026-01-15 13:00 CET");
        assert_eq!(render_at("2026-07-15T12:00:00Z"), "2026-07-15 14:00 CEST");
        assert!(
            parse_zone("Mars/Olympus")
                .unwrap_err()
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn html_escapes_and_text_does_not() {
        let v = vars();
        assert_eq!(
            render("{{caller_name}}", &v, true).unwrap(),
            "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"
        );
        assert_eq!(
            render("{{caller_name}}", &v, false).unwrap(),
            "<script>alert(1)</script>"
        );
    }

    #[test]
    fn conditions() {
        let v = vars();
        let no_duration = CallEvent::parse(
            br#"{"call_id":"c","agent_id":"a","ended_reason":"voicemail"}"#,
            1 << 20,
        )
        .unwrap();
        let v2 = Vars::new(&no_duration, None, &DateStyle::default(), Utc::now());
        let cases = [
            ("duration_seconds > 30", &v, true),
            ("duration_seconds > 300", &v, false),
            ("duration > 3", &v, true),
            ("duration_seconds > 30", &v2, false),
            (r#"ended_reason != "voicemail""#, &v, true),
            (r#"ended_reason != "voicemail""#, &v2, false),
            (
                r#"ended_reason == "voicemail" or duration_seconds > 30"#,
                &v2,
                true,
            ),
            ("metadata.order_id", &v, true),
            ("metadata.nothing", &v, false),
            ("analysis.successful", &v, false),
            ("analysis.data.callback_requested", &v, false),
            (r#"caller_email != """#, &v, false),
        ];
        for (src, vars, want) in cases {
            check_condition(src).unwrap();
            assert_eq!(eval_condition(src, vars), Ok(want), "{src}");
        }
        assert!(
            check_condition("duration_seconds >")
                .unwrap_err()
                .contains("syntax")
        );
        assert!(
            check_condition("env.x")
                .unwrap_err()
                .contains("unknown variable `env")
        );
        assert!(check_condition(" ").is_err());
        assert_eq!(render("[{{duration_seconds}}]", &v2, false).unwrap(), "[]");
        assert_eq!(render("{{duration_seconds}}", &v, false).unwrap(), "230");
    }

    #[test]
    fn check_rejects_unknown_and_broken() {
        assert!(check("{{agent_name}} {metadata.x}").is_ok());
        assert!(
            check("{{ env }}")
                .unwrap_err()
                .contains("unknown variable `env")
        );
        assert!(check("{% for %}").unwrap_err().contains("syntax"));
        // Known to minijinja for the dashboard's pages, not for a user's template.
        for src in [
            "{% include \"x.html\" %}",
            "{%- extends 'layout.html' %}",
            "a {%+ import \"m\" as m %}",
            "{% from \"m\" import f %}",
            "{% block b %}{% endblock %}",
            "{%\n macro m() %}x{% endmacro %}",
            "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}",
        ] {
            let e = check(src).unwrap_err();
            assert!(
                e.starts_with("template syntax error: unknown statement "),
                "{src}: {e}"
            );
        }
        // Only statements count: not text, comments, strings or raw blocks that name one.
        for src in [
            "include {{ '{% include' }} {# {% include \"x\" %} #}",
            "{% raw %}{% include \"x\" %}{% endraw %}{% if call_id %}{% endif %}",
            "{%- if call_id -%}{{ call_id }}{% endif %}",
        ] {
            assert_eq!(check(src), Ok(()), "{src}");
        }
        // And were one rendered anyway, there is no other template to reach.
        let e = render("{% include \"x.html\" %}", &vars(), false).unwrap_err();
        assert!(e.contains("not found"), "{e}");
        for name in BUILTIN_NAMES {
            let b = builtin(name).unwrap();
            for src in [b.subject, b.text, b.html] {
                check(src).unwrap();
            }
        }
    }
}
