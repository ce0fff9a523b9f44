//! Jira Cloud: `POST {site}/rest/api/3/issue` with basic auth (e-mail and API token), the
//! description as Atlassian Document Format, project key from the action's `project`.

use aftercall_core::Outcome;
use serde_json::{Value, json};

use super::{Ctx, Draft, TaskConfig, delivered, not_configured};
use crate::settings::join;

pub async fn create(ctx: &Ctx<'_>, cfg: &TaskConfig, d: &Draft) -> Outcome {
    let (Some(site), Some(email), Some(token)) =
        (&cfg.jira_url, &cfg.jira_email, &cfg.jira_api_token)
    else {
        return not_configured(
            "jira",
            &[
                "AFTERCALL_JIRA_URL",
                "AFTERCALL_JIRA_EMAIL",
                "AFTERCALL_JIRA_API_TOKEN",
            ],
        );
    };
    let Some(project) = &d.project else {
        return Outcome::permanent("jira: `project` (the project key) is required");
    };
    let url = match join(site, "/rest/api/3/issue") {
        Ok(u) => u,
        Err(o) => return o,
    };
    let req = ctx
        .client
        .post(url.clone())
        .basic_auth(email, Some(token))
        .header("accept", "application/json")
        .json(&body(cfg, project, d));
    let (status, v) = match ctx.send_json("jira", &url, req).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    match v.get("key").and_then(Value::as_str) {
        Some(key) => delivered(
            status,
            format!("created Jira issue {key} {site}/browse/{key}"),
        ),
        None => delivered(status, "created Jira issue".into()),
    }
}

/// The request body: summary, issue type, ADF description, labels, assignee, due date.
pub fn body(cfg: &TaskConfig, project: &str, d: &Draft) -> Value {
    let mut fields = json!({
        "project": { "key": project },
        "summary": d.title,
        "issuetype": { "name": cfg.jira_issue_type },
        "description": adf(&d.description),
    });
    if !d.labels.is_empty() {
        fields["labels"] = json!(d.labels.iter().map(|l| label(l)).collect::<Vec<_>>());
    }
    if let Some(a) = &d.assignee {
        fields["assignee"] = json!({ "id": a });
    }
    if let Some(due) = &d.due {
        fields["duedate"] = json!(due);
    }
    json!({ "fields": fields })
}

/// Jira labels cannot contain spaces.
fn label(l: &str) -> String {
    l.split_whitespace().collect::<Vec<_>>().join("-")
}

/// Plain text as an Atlassian Document: a paragraph per blank-line-separated block, line
/// breaks as `hardBreak`. ADF allows no empty text nodes, so empty lines are dropped.
pub fn adf(text: &str) -> Value {
    let text = text.replace("\r\n", "\n");
    let content: Vec<Value> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|para| {
            let mut inline = Vec::new();
            for line in para.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                if !inline.is_empty() {
                    inline.push(json!({ "type": "hardBreak" }));
                }
                inline.push(json!({ "type": "text", "text": line }));
            }
            json!({ "type": "paragraph", "content": inline })
        })
        .collect();
    json!({ "type": "doc", "version": 1, "content": content })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_shape() {
        let doc = adf("Wants a refund\nfor order 7\n\nCall c1.\n\n\n");
        assert_eq!(
            doc,
            json!({"type":"doc","version":1,"content":[
                {"type":"paragraph","content":[{"type":"text","text":"Wants a refund"},{"type":"hardBreak"},{"type":"text","text":"for order 7"}]},
                {"type":"paragraph","content":[{"type":"text","text":"Call c1."}]}
            ]})
        );
        assert_eq!(adf(""), json!({"type":"doc","version":1,"content":[]}));
        assert_eq!(label("needs call back"), "needs-call-back");
    }
}
