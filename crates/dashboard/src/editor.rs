//! The agent editor: every action type's fields (one table, used to render the form and,
//! by the page's script, to read it back), and the live template preview rendered by
//! `aftercall_core::template` against a sample call.

use aftercall_api::Scope;
use aftercall_core::CallEvent;
use aftercall_core::template::{self, DateStyle, Vars};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Dash;
use crate::session::{authenticate, check_csrf};

/// The config path of the actions list, as the API's 422 answers name it.
pub(crate) const ACTIONS_PATH: &str = "voice_tools.post_call_follow_up.actions";

/// The call every preview renders against: the seed's example call.
pub(crate) const SAMPLE_CALL: &str = include_str!("../assets/sample-call.json");

/// How a field is edited and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Text,
    /// A multi-line text.
    Area,
    Bool,
    Select,
    Number,
    /// A list of strings, one per line.
    Lines,
    /// Signing secrets: one (a string) or several (a list, during rotation), one per line.
    Secret,
    /// Request headers, `Name: value` per line.
    Headers,
    /// A whole action as JSON: a type this editor does not know.
    Json,
}

pub(crate) struct FieldDef {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Rendered per call: shows the variables and a live preview.
    pub template: bool,
    /// Names a built-in template: previews it.
    pub builtin: bool,
    /// Choices of a select; `""` is "none".
    pub options: &'static [&'static str],
    pub help: &'static str,
    pub placeholder: &'static str,
}

const fn f(name: &'static str, label: &'static str, kind: Kind) -> FieldDef {
    FieldDef {
        name,
        label,
        kind,
        required: false,
        template: false,
        builtin: false,
        options: &[],
        help: "",
        placeholder: "",
    }
}

impl FieldDef {
    const fn req(self) -> Self {
        FieldDef {
            required: true,
            ..self
        }
    }
    const fn tpl(self) -> Self {
        FieldDef {
            template: true,
            ..self
        }
    }
    const fn builtin(self) -> Self {
        FieldDef {
            builtin: true,
            ..self
        }
    }
    const fn opts(self, options: &'static [&'static str]) -> Self {
        FieldDef { options, ..self }
    }
    const fn help(self, help: &'static str) -> Self {
        FieldDef { help, ..self }
    }
    const fn ph(self, placeholder: &'static str) -> Self {
        FieldDef {
            placeholder,
            ..self
        }
    }
}

pub(crate) struct TypeDef {
    pub kind: &'static str,
    pub title: &'static str,
    pub fields: &'static [FieldDef],
}

const DELAY: FieldDef = f("delay", "Delay", Kind::Text)
    .ph("15m")
    .help("Wait this long after the call before the first attempt: 90s, 15m, 2h, 1d.");

const WHEN: FieldDef = f("when", "Only when", Kind::Text)
    .ph("ended_reason != \"voicemail\" and duration_seconds > 30")
    .help("A condition over the call's variables; when false the action is skipped (docs/rules.md). Empty: always.");

const EXPIRES_AFTER: FieldDef = f("expires_after", "Expires after", Kind::Text)
    .ph("1d")
    .help("Skip the action as expired if it has not started this long after the call ended.");

/// Every action type and its fields, in the order the form shows them (README "Agent
/// configuration" and docs/actions.md).
pub(crate) const TYPES: &[TypeDef] = &[
    TypeDef {
        kind: "email",
        title: "E-mail",
        fields: &[
            f("to", "To", Kind::Text).req().tpl().ph("{{caller_email}}").help(
                "A fixed address or a template. When it renders empty the action is skipped.",
            ),
            f("subject", "Subject", Kind::Text)
                .tpl()
                .help("Default: the built-in template's subject."),
            f("body_template", "Built-in body", Kind::Select)
                .builtin()
                .opts(&["", "call_summary", "confirmation", "follow_up"])
                .help("Set a built-in body or an inline body, not both. With neither: call_summary."),
            f("body", "Inline body", Kind::Area)
                .tpl()
                .help("Plain text; the HTML part is derived from it."),
            f("cc", "Cc", Kind::Lines).help("One address or template per line."),
            f("bcc", "Bcc", Kind::Lines)
                .help("One address or template per line; only in the SMTP envelope."),
            f("reply_to", "Reply-To", Kind::Text).ph("support@acme.example"),
            f("from", "From", Kind::Text)
                .ph("Acme Support <noreply@acme.example>")
                .help("Default: the agent's e-mail sender, then AFTERCALL_EMAIL_FROM."),
            DELAY,
            WHEN,
            EXPIRES_AFTER,
        ],
    },
    TypeDef {
        kind: "sms",
        title: "SMS",
        fields: &[
            f("to", "To", Kind::Text)
                .tpl()
                .ph("{{caller_number}}")
                .help("An E.164 number or a template. Default: the caller's number."),
            f("template", "Message", Kind::Area)
                .req()
                .tpl()
                .help("Long messages are sent as several segments."),
            DELAY,
            WHEN,
            EXPIRES_AFTER,
        ],
    },
    TypeDef {
        kind: "webhook",
        title: "Webhook",
        fields: &[
            f("url", "URL", Kind::Text)
                .req()
                .ph("https://your-crm.com/api/call-completed"),
            f("include_transcript", "Include the transcript", Kind::Bool),
            f("include_recording_url", "Include the recording URL", Kind::Bool),
            f("secret", "Signing secret", Kind::Secret).ph("whsec_…").help(
                "Standard Webhooks secret, whsec_ and base64. Several, one per line, during rotation. whsec_******** keeps the stored secret.",
            ),
            f("headers", "Extra headers", Kind::Headers)
                .ph("X-Api-Key: …")
                .help("One `Name: value` per line. ******** keeps the stored value."),
            f("method", "Method", Kind::Select)
                .opts(&["", "POST", "PUT", "PATCH"])
                .help("Default: POST."),
            f("body", "Body (JSON template)", Kind::Area).tpl().help(
                "Instead of the standard payload: a template producing JSON, e.g. {\"phone\": {{ caller_number|tojson }}}.",
            ),
            DELAY,
            WHEN,
            EXPIRES_AFTER,
        ],
    },
    TypeDef {
        kind: "slack",
        title: "Slack",
        fields: &[
            f("url", "Incoming webhook URL", Kind::Text)
                .req()
                .ph("https://hooks.slack.com/services/…"),
            f("text", "Message", Kind::Area).req().tpl(),
            f("blocks", "Blocks (JSON template)", Kind::Area)
                .tpl()
                .help("Optional Block Kit blocks: a template producing a JSON array."),
            DELAY,
            WHEN,
            EXPIRES_AFTER,
        ],
    },
    TypeDef {
        kind: "task",
        title: "Create task",
        fields: &[
            f("provider", "Provider", Kind::Select)
                .req()
                .opts(&["linear", "jira", "asana", "github"]),
            f("project", "Project", Kind::Text).help(
                "Linear team id, Jira project key, Asana project gid or GitHub owner/repo. Required except for Asana.",
            ),
            f("title", "Title", Kind::Text)
                .tpl()
                .help("Default: Follow up: call {{call_id}} with {{caller_name}}."),
            f("description", "Description", Kind::Area)
                .tpl()
                .help("Default: the summary, the details and the call's facts."),
            f("assignee", "Assignee", Kind::Text).help("The provider's user id or login."),
            f("labels", "Labels", Kind::Lines).help("One per line (Linear: label ids; Asana: tag gids)."),
            f("due_in_days", "Due in (days)", Kind::Number)
                .help("Due date: the call's date plus this many days."),
            DELAY,
            WHEN,
            EXPIRES_AFTER,
        ],
    },
];

pub(crate) fn type_def(kind: &str) -> Option<&'static TypeDef> {
    TYPES.iter().find(|t| t.kind == kind)
}

const UNKNOWN_FIELDS: &[FieldDef] = &[f("json", "Action (JSON)", Kind::Json)
    .req()
    .help("This editor does not know this action type; edit it as JSON.")];

/// The context of one action's card (`action.html`).
pub(crate) fn card(index: usize, action: &Map<String, Value>) -> Value {
    let kind = action.get("type").and_then(Value::as_str).unwrap_or("");
    let (title, fields) = match type_def(kind) {
        Some(t) => (t.title, t.fields),
        None => ("Unknown type", UNKNOWN_FIELDS),
    };
    let path = format!("{ACTIONS_PATH}[{index}]");
    let fields: Vec<Value> = fields
        .iter()
        .map(|fd| {
            let v = if fd.kind == Kind::Json {
                Some(Value::Object(action.clone()))
            } else {
                action.get(fd.name).cloned()
            };
            json!({
                "name": fd.name,
                "label": fd.label,
                "kind": fd.kind,
                "required": fd.required,
                "template": fd.template,
                "preview": if fd.template { Some("template") } else if fd.builtin { Some("builtin") } else { None },
                "options": fd.options,
                "help": fd.help,
                "placeholder": fd.placeholder,
                "id": format!("a{index}-{}", fd.name),
                "path": format!("{path}.{}", fd.name),
                "value": field_text(fd.kind, v.as_ref()),
                "checked": v.as_ref().and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect();
    json!({
        "index": index,
        "number": index + 1,
        "type": kind,
        "title": title,
        "path": path,
        "fields": fields,
    })
}

/// A blank action of `kind`, for the "add action" templates.
pub(crate) fn blank(kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), Value::String(kind.into()));
    m
}

/// How a stored value is shown in its input.
fn field_text(kind: Kind, v: Option<&Value>) -> String {
    let Some(v) = v else {
        return String::new();
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match (kind, v) {
        (Kind::Json, v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        (Kind::Headers, Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        (_, Value::Array(items)) => items.iter().map(scalar).collect::<Vec<_>>().join("\n"),
        (_, v) => scalar(v),
    }
}

/// Every template variable with its value in the sample call.
pub(crate) fn variables() -> Vec<Value> {
    let event = sample_event();
    let vars = Vars::new(&event, None, &DateStyle::default(), chrono::Utc::now());
    let mut out: Vec<Value> = template::VARIABLES
        .iter()
        .filter(|v| **v != "metadata")
        .map(|name| {
            let sample = vars.get(name).map(|v| v.to_string()).unwrap_or_default();
            json!({"name": name, "sample": sample})
        })
        .collect();
    for (k, v) in &event.metadata {
        let sample = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.push(json!({"name": format!("metadata.{k}"), "sample": sample}));
    }
    out
}

pub(crate) fn sample_event() -> CallEvent {
    CallEvent::parse(
        SAMPLE_CALL.as_bytes(),
        aftercall_core::DEFAULT_MAX_EVENT_BYTES,
    )
    .expect("the embedded sample call is valid")
}

/// `POST /ui/preview`: one template rendered against the sample call.
/// Every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PreviewRequest {
    /// A template's source.
    pub source: Option<String>,
    /// Or a built-in e-mail body's name.
    pub builtin: Option<String>,
    /// The agent's settings as they are in the form (name, date style).
    pub agent: AgentStyle,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AgentStyle {
    pub name: Option<String>,
    pub date_format: Option<String>,
    pub utc_offset: Option<String>,
}

/// The longest template the preview renders.
const MAX_PREVIEW_BYTES: usize = 64 * 1024;

/// `{"text": …}` or `{"error": …}`.
pub(crate) fn render_preview(req: &PreviewRequest) -> Value {
    fn some(o: &Option<String>) -> Option<&str> {
        o.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
    let (date_format, utc_offset) = (some(&req.agent.date_format), some(&req.agent.utc_offset));
    if let Some(f) = date_format
        && let Err(e) = template::check_date_format(f)
    {
        return json!({"error": format!("date_format: {e}")});
    }
    if let Some(o) = utc_offset
        && let Err(e) = template::parse_zone(o)
    {
        return json!({"error": format!("utc_offset: {e}")});
    }
    let source = match (&req.source, req.builtin.as_deref()) {
        (Some(s), _) => s.clone(),
        (None, Some(name)) => match template::builtin(name) {
            Some(b) => b.text.to_string(),
            None => return json!({"error": format!("unknown built-in template `{name}`")}),
        },
        (None, None) => return json!({"error": "nothing to preview"}),
    };
    if source.len() > MAX_PREVIEW_BYTES {
        return json!({"error": "the template is too long to preview"});
    }
    if let Err(e) = template::check(&source) {
        return json!({"error": e});
    }
    let style = DateStyle {
        format: date_format.map(str::to_string),
        utc_offset: utc_offset.map(str::to_string),
    };
    let vars = Vars::new(
        &sample_event(),
        some(&req.agent.name),
        &style,
        chrono::Utc::now(),
    );
    match template::render(&source, &vars, false) {
        Ok(text) => json!({"text": text}),
        Err(e) => json!({"error": e}),
    }
}

/// Rendering runs any template the user types, so only those who may save templates
/// (admin) may preview them.
pub(crate) async fn preview(
    State(dash): State<Dash>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let session = match authenticate(&dash, &headers, Scope::Admin).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Err(refused) = check_csrf(&headers, &session.csrf, None) {
        return refused.into_response();
    }
    match serde_json::from_slice::<PreviewRequest>(&body) {
        Ok(req) => axum::Json(render_preview(&req)).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "malformed_json", "message": e.to_string()})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aftercall_core::config::{
        Action, EmailAction, Secrets, SmsAction, TaskAction, TaskProvider, WebhookAction,
    };

    use super::*;

    /// Every field of every action type, set, so a field the form lacks shows up here
    /// before a Save could drop it.
    fn full_actions() -> Vec<Action> {
        let s = |v: &str| Some(v.to_string());
        vec![
            Action::Email(EmailAction {
                to: "{{caller_email}}".into(),
                subject: s("x"),
                body_template: s("call_summary"),
                body: s("x"),
                cc: vec!["a@b.example".into()],
                bcc: vec!["a@b.example".into()],
                reply_to: s("a@b.example"),
                from: s("a@b.example"),
                delay: s("1m"),
                when: s("duration_seconds > 30"),
                expires_after: s("1d"),
            }),
            Action::Sms(SmsAction {
                to: s("+14155551234"),
                template: "x".into(),
                delay: s("1m"),
                when: s("duration_seconds > 30"),
                expires_after: s("1d"),
            }),
            Action::Webhook(WebhookAction {
                url: "https://x.example".into(),
                include_transcript: true,
                include_recording_url: true,
                secret: Some(Secrets::One("whsec_x".into())),
                headers: [("X-A".to_string(), "b".to_string())].into(),
                delay: s("1m"),
                when: s("duration_seconds > 30"),
                expires_after: s("1d"),
                method: Some(aftercall_core::config::WebhookMethod::Put),
                body: s("{}"),
            }),
            Action::Slack(aftercall_core::config::SlackAction {
                url: "https://hooks.slack.com/services/x".into(),
                text: "x".into(),
                blocks: s("[]"),
                delay: s("1m"),
                when: s("duration_seconds > 30"),
                expires_after: s("1d"),
            }),
            Action::Task(TaskAction {
                provider: TaskProvider::Github,
                title: s("x"),
                description: s("x"),
                project: s("o/r"),
                assignee: s("x"),
                labels: vec!["x".into()],
                due_in_days: Some(1),
                delay: s("1m"),
                when: s("duration_seconds > 30"),
                expires_after: s("1d"),
            }),
        ]
    }

    #[test]
    fn the_form_has_every_field_of_every_action_type() {
        let actions = full_actions();
        assert_eq!(actions.len(), TYPES.len());
        for a in actions {
            let v = serde_json::to_value(&a).unwrap();
            let stored: BTreeSet<&str> = v
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "type")
                .collect();
            let t = type_def(a.kind()).expect("a type for every action kind");
            let form: BTreeSet<&str> = t.fields.iter().map(|f| f.name).collect();
            assert_eq!(stored, form, "fields of {}", a.kind());
        }
    }

    #[test]
    fn cards_show_stored_values() {
        let a: Map<String, Value> = serde_json::from_str(
            r#"{"type":"webhook","url":"https://x.example/h","include_transcript":true,
                "secret":["whsec_********","whsec_********"],"headers":{"X-A":"********","X-B":"1"}}"#,
        )
        .unwrap();
        let c = card(2, &a);
        assert_eq!(c["number"], 3);
        let field = |name: &str| {
            c["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(field("url")["value"], "https://x.example/h");
        assert_eq!(
            field("url")["path"],
            "voice_tools.post_call_follow_up.actions[2].url"
        );
        assert_eq!(field("url")["id"], "a2-url");
        assert_eq!(field("include_transcript")["checked"], true);
        assert_eq!(field("include_recording_url")["checked"], false);
        assert_eq!(field("secret")["value"], "whsec_********\nwhsec_********");
        assert_eq!(field("headers")["value"], "X-A: ********\nX-B: 1");
        let unknown = card(0, &blank("fax"));
        assert_eq!(unknown["fields"][0]["kind"], "json");
        assert_eq!(unknown["fields"][0]["value"], "{\n  \"type\": \"fax\"\n}");
    }

    fn preview(source: Option<&str>, builtin: Option<&str>, name: Option<&str>) -> Value {
        render_preview(&PreviewRequest {
            source: source.map(str::to_string),
            builtin: builtin.map(str::to_string),
            agent: AgentStyle {
                name: name.map(str::to_string),
                date_format: Some("%d %B %Y".into()),
                utc_offset: None,
            },
        })
    }

    #[test]
    fn previews_render_the_sample_call() {
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (
                Some("Thanks for calling {agent_name}! Ref {call_id}."),
                None,
                r#"{"text":"Thanks for calling Acme Support! Ref call_xyz789."}"#,
            ),
            (
                Some("{{caller_name}} on {{date}}, {{duration}} min, order {{metadata.order_id}}"),
                None,
                r#"{"text":"John Smith on 14 March 2026, 4 min, order 12345"}"#,
            ),
            (
                Some("{{nope}}"),
                None,
                r#"{"error":"unknown variable `nope`; available: agent_name, agent_id, call_id, caller_number, caller_name, caller_email, duration, duration_seconds, summary, date, details, recording_url, platform, ended_reason, platform_ended_reason, direction, analysis.<field>, raw.<field>, metadata.<field>"}"#,
            ),
            (
                Some("{% if %}"),
                None,
                r#"{"error":"template syntax error: unexpected end of block"}"#,
            ),
            (
                None,
                Some("nope"),
                r#"{"error":"unknown built-in template `nope`"}"#,
            ),
        ];
        for (source, builtin, want) in cases {
            let got = preview(*source, *builtin, Some("Acme Support")).to_string();
            assert_eq!(&got, want, "{source:?}");
        }
        let berlin = render_preview(&PreviewRequest {
            source: Some("{{date}}".into()),
            builtin: None,
            agent: AgentStyle {
                name: None,
                date_format: Some("%Y-%m-%d %H:%M %Z".into()),
                utc_offset: Some("Europe/Berlin".into()),
            },
        });
        assert_eq!(berlin, json!({"text": "2026-03-14 17:20 CET"}));
        let built = preview(None, Some("confirmation"), None);
        let text = built["text"].as_str().unwrap();
        assert!(
            text.starts_with(
                "Hi John Smith,\n\nThis confirms your call with agent_abc123 on 14 March 2026."
            ),
            "{text}"
        );
    }

    #[test]
    fn variables_list_samples() {
        let v = variables();
        let get = |n: &str| v.iter().find(|x| x["name"] == n).unwrap()["sample"].clone();
        assert_eq!(get("call_id"), "call_xyz789");
        assert_eq!(get("duration"), "4");
        assert_eq!(get("metadata.caller_email"), "john@example.com");
        assert!(v.iter().all(|x| x["name"] != "metadata"));
    }
}
