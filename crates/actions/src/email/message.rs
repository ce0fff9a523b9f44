//! Builds the e-mail of one job: recipients, sender, subject and a text + HTML body from
//! the templates, with a `Message-ID` derived from the job id. No IO.

use aftercall_core::config::EmailAction;
use aftercall_core::event::mask_email;
use aftercall_core::template::{self, Vars};
use aftercall_core::{ActionJob, Outcome};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};

/// The sender used when neither the action, the agent nor the worker sets one.
pub const FALLBACK_FROM: &str = "aftercall@localhost";
/// Subject of an inline `body` without a `subject`.
pub const DEFAULT_SUBJECT: &str = "Your call with {{agent_name}}";
/// Body used when the action sets neither `body_template` nor `body`.
pub const DEFAULT_TEMPLATE: &str = "call_summary";

/// A message ready to send, with what may be logged about it.
#[derive(Debug)]
pub struct Prepared {
    pub message: Message,
    pub message_id: String,
    /// Masked recipients, for logs and outcome details.
    pub to_masked: String,
    pub recipients: usize,
}

/// `<{job_id}@aftercall>`: the same on every attempt, so a retried send is recognisable.
pub fn message_id(job_id: &str) -> String {
    let local = crate::outbox::plain_job_id(job_id, '-');
    let local = local.trim_matches('.');
    format!(
        "<{}@aftercall>",
        if local.is_empty() { "job" } else { local }
    )
}

/// The message's parts as they would be sent. `Err` is the job's outcome: `Skipped`
/// when the recipient is empty for this call, `Permanent` for anything a retry cannot
/// fix. Shared by [`prepare`] and the preview, so a preview is what is sent.
pub fn render_parts(
    job: &ActionJob,
    action: &EmailAction,
    default_from: Option<&str>,
    vars: &Vars,
) -> Result<Parts, Outcome> {
    let to_text = render(&action.to, vars, "to")?;
    let to_text = to_text.trim();
    if to_text.is_empty() {
        return Err(Outcome::skipped(empty_reason(&action.to)));
    }
    let mut to = parse_mailbox("to", to_text)?;
    // A bare caller address gets the caller's name, cleaned of control characters.
    if to.name.is_none()
        && job
            .event
            .caller_email()
            .is_some_and(|e| e.trim() == to.email.to_string())
    {
        to.name = job
            .event
            .caller_name()
            .map(single_line)
            .filter(|n| !n.is_empty());
    }

    let mut cc = Vec::new();
    let mut bcc = Vec::new();
    for (field, list, out) in [("cc", &action.cc, &mut cc), ("bcc", &action.bcc, &mut bcc)] {
        for src in list {
            let rendered = render(src, vars, field)?;
            // An optional copy that is empty for this call is simply left out.
            if !rendered.trim().is_empty() {
                out.push(parse_mailbox(field, rendered.trim())?);
            }
        }
    }
    let reply_to = action
        .reply_to
        .as_deref()
        .map(|a| parse_mailbox("reply_to", a.trim()))
        .transpose()?;
    let from_src = action
        .from
        .as_deref()
        .or(job.email_from.as_deref())
        .or(default_from)
        .unwrap_or(FALLBACK_FROM);
    let from = parse_mailbox("from", from_src.trim())?;

    let builtin_name = match (&action.body_template, &action.body) {
        (Some(name), _) => Some(name.as_str()),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TEMPLATE),
    };
    let (subject_src, text, html) = match builtin_name {
        Some(name) => {
            let b = template::builtin(name).ok_or_else(|| {
                Outcome::permanent(format!("body_template: unknown template `{name}`"))
            })?;
            let text = render(b.text, vars, "body_template")?;
            let html = template::render(b.html, vars, true)
                .map_err(|e| Outcome::permanent(format!("body_template: {e}")))?;
            (action.subject.as_deref().unwrap_or(b.subject), text, html)
        }
        None => {
            let src = action.body.as_deref().unwrap_or_default();
            let text = render(src, vars, "body")?;
            let html = text_to_html(&text);
            (
                action.subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
                text,
                html,
            )
        }
    };
    let subject = single_line(&render(subject_src, vars, "subject")?);
    Ok(Parts {
        to,
        cc,
        bcc,
        reply_to,
        from,
        subject,
        text,
        html,
    })
}

/// What [`render_parts`] renders.
pub struct Parts {
    pub to: Mailbox,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub from: Mailbox,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders and assembles the message. `Err` is the job's outcome: `Skipped` when the
/// recipient is empty for this call, `Permanent` for anything a retry cannot fix.
pub fn prepare(
    job_id: &str,
    job: &ActionJob,
    action: &EmailAction,
    default_from: Option<&str>,
    vars: &Vars,
) -> Result<Prepared, Outcome> {
    let p = render_parts(job, action, default_from, vars)?;
    let id = message_id(job_id);
    let recipients = 1 + p.cc.len() + p.bcc.len();
    let to_masked = mask_email(p.to.email.as_ref());
    let mut builder = Message::builder()
        .from(p.from)
        .to(p.to)
        .subject(p.subject)
        .message_id(Some(id.clone()));
    for m in p.cc {
        builder = builder.cc(m);
    }
    for m in p.bcc {
        builder = builder.bcc(m);
    }
    if let Some(r) = p.reply_to {
        builder = builder.reply_to(r);
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(
            p.text,
            wrap_html(&p.html),
        ))
        .map_err(|e| Outcome::permanent(format!("building the message: {e}")))?;
    Ok(Prepared {
        message,
        message_id: id,
        to_masked,
        recipients,
    })
}

fn render(src: &str, vars: &Vars, field: &str) -> Result<String, Outcome> {
    template::render(src, vars, false).map_err(|e| Outcome::permanent(format!("{field}: {e}")))
}

/// Parses one address (`a@b.example` or `Name <a@b.example>`); the error never shows the
/// full address.
fn parse_mailbox(field: &str, s: &str) -> Result<Mailbox, Outcome> {
    s.parse::<Mailbox>().map_err(|e| {
        Outcome::permanent(format!(
            "{field}: `{}` is not a valid e-mail address ({e})",
            mask_email(s)
        ))
    })
}

/// Why an empty recipient skips the action: the variable that was empty for this call.
pub fn empty_reason(to_src: &str) -> String {
    let src = template::normalize(to_src);
    for var in ["caller_email", "caller_name"] {
        if src.contains(var) {
            return format!("no {var}");
        }
    }
    "recipient is empty for this call".to_string()
}

/// Header text on one line: control characters (CR, LF, tabs) become spaces, so no value
/// from a call can start a header of its own.
pub fn single_line(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML part of an inline text body: the whole rendered text escaped, blank lines
/// starting paragraphs and single newlines kept as `<br>`.
pub fn text_to_html(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        out.push_str("<p>");
        out.push_str(&escape_html(para).replace('\n', "<br>\n"));
        out.push_str("</p>\n");
    }
    out
}

fn wrap_html(fragment: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n{fragment}</body></html>\n"
    )
}

/// Masks every e-mail address in free text (SMTP replies echo recipients).
pub fn mask_emails_in(text: &str) -> String {
    let is_addr_char =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-' | '@');
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str(&mask_email(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_addr_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aftercall_core::CallEvent;
    use aftercall_core::config::Action;
    use chrono::Utc;

    fn job(event: &str, action: EmailAction) -> ActionJob {
        let event = CallEvent::parse(event.as_bytes(), 1 << 20).unwrap();
        aftercall_testkit::action_job(event, Action::Email(action))
    }

    fn action(to: &str) -> EmailAction {
        EmailAction {
            to: to.into(),
            subject: None,
            body_template: None,
            body: None,
            cc: vec![],
            bcc: vec![],
            reply_to: None,
            from: None,
            delay: None,
            when: None,
            expires_after: None,
        }
    }

    const EVENT: &str = r#"{"call_id":"call_1","agent_id":"a","summary":"Order <b>1</b>",
        "metadata":{"caller_name":"Jo\r\nBcc: x@evil.example","caller_email":"jo@example.com"}}"#;

    fn prepared(event: &str, a: EmailAction) -> Result<Prepared, Outcome> {
        let j = job(event, a.clone());
        let vars = j.vars(Utc::now());
        prepare("job_1.2", &j, &a, None, &vars)
    }

    fn headers(p: &Prepared) -> String {
        let raw = String::from_utf8(p.message.formatted()).unwrap();
        raw.split("\r\n\r\n").next().unwrap().to_string()
    }

    #[test]
    fn empty_recipient_skips() {
        let none = r#"{"call_id":"c","agent_id":"a"}"#;
        assert_eq!(
            prepared(none, action("{caller_email}")).unwrap_err(),
            Outcome::skipped("no caller_email")
        );
        assert_eq!(
            prepared(none, action("{{ caller_email }}")).unwrap_err(),
            Outcome::skipped("no caller_email")
        );
        assert!(matches!(
            prepared(none, action("not an address")).unwrap_err(),
            Outcome::Permanent { .. }
        ));
    }

    #[test]
    fn names_and_subjects_cannot_inject_headers() {
        let mut a = action("{{caller_email}}");
        a.subject = Some("Hi {{caller_name}}".into());
        let p = prepared(EVENT, a).unwrap();
        let h = headers(&p);
        assert!(!h.contains("\r\nBcc:"), "{h}");
        assert!(h.contains("Message-ID: <job_1.2@aftercall>"), "{h}");
        assert_eq!(p.message.envelope().to().len(), 1);
        assert_eq!(p.to_masked, "j***@example.com");
    }

    #[test]
    fn sender_precedence() {
        let a = action("team@example.com");
        let mut j = job(EVENT, a.clone());
        let vars = Vars::new(&j.event, None, &j.date_style(), Utc::now());
        let from = |j: &ActionJob, a: &EmailAction, d: Option<&str>| {
            prepare("j", j, a, d, &vars)
                .unwrap()
                .message
                .envelope()
                .from()
                .unwrap()
                .to_string()
        };
        assert_eq!(from(&j, &a, None), "aftercall@localhost");
        assert_eq!(
            from(&j, &a, Some("worker@example.com")),
            "worker@example.com"
        );
        j.email_from = Some("agent@example.com".into());
        assert_eq!(
            from(&j, &a, Some("worker@example.com")),
            "agent@example.com"
        );
        let mut a2 = a.clone();
        a2.from = Some("Action <action@example.com>".into());
        assert_eq!(
            from(&j, &a2, Some("worker@example.com")),
            "action@example.com"
        );
    }

    #[test]
    fn inline_body_html_is_escaped() {
        let mut a = action("team@example.com");
        a.body = Some("<i>{{summary}}</i>\nline two\n\nnext".into());
        let p = prepared(EVENT, a).unwrap();
        let raw = String::from_utf8(p.message.formatted()).unwrap();
        assert!(
            raw.contains("Subject: Your call with Acme Support"),
            "{raw}"
        );
        assert_eq!(
            text_to_html("<i>Order <b>1</b></i>\nline two\n\nnext"),
            "<p>&lt;i&gt;Order &lt;b&gt;1&lt;/b&gt;&lt;/i&gt;<br>\nline two</p>\n<p>next</p>\n"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(message_id("job_01/x.0"), "<job_01-x.0@aftercall>");
        assert_eq!(single_line("a\r\nBcc: b\t c"), "a Bcc: b c");
        assert_eq!(
            mask_emails_in("550 5.1.1 <john@example.com>: no such user"),
            "550 5.1.1 <j***@example.com>: no such user"
        );
        assert_eq!(
            empty_reason("{{metadata.to}}"),
            "recipient is empty for this call"
        );
    }
}
