//! Linear: the GraphQL `issueCreate` mutation, `Authorization: <api key>`, team id from
//! the action's `project`. The issue id is derived from the job id, so a retry of a create
//! whose answer was lost finds the issue instead of making a second one.

use aftercall_core::Outcome;
use aftercall_core::job::snippet;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Ctx, Draft, Reply, TaskConfig, delivered, failed, not_configured};
use crate::http;

pub const CREATE: &str = "mutation IssueCreate($input: IssueCreateInput!) { \
issueCreate(input: $input) { success issue { id identifier url } } }";
pub const LOOKUP: &str = "query Issue($id: String!) { issue(id: $id) { id identifier url } }";

/// A UUID (version 4 layout) derived from the job id: the same on every attempt.
pub fn issue_id(job_id: &str) -> String {
    let h = Sha256::digest(format!("aftercall-linear:{job_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub async fn create(ctx: &Ctx<'_>, cfg: &TaskConfig, d: &Draft) -> Outcome {
    let Some(key) = &cfg.linear_api_key else {
        return not_configured("linear", &["AFTERCALL_LINEAR_API_KEY"]);
    };
    let Some(team) = &d.project else {
        return Outcome::permanent("linear: `project` (the team id) is required");
    };
    let id = issue_id(&d.job_id);
    let mut input =
        json!({ "id": id, "teamId": team, "title": d.title, "description": d.description });
    if let Some(a) = &d.assignee {
        input["assigneeId"] = json!(a);
    }
    if !d.labels.is_empty() {
        input["labelIds"] = json!(d.labels);
    }
    if let Some(due) = &d.due {
        input["dueDate"] = json!(due);
    }
    let reply = match post(
        ctx,
        cfg,
        key,
        &json!({ "query": CREATE, "variables": { "input": input } }),
    )
    .await
    {
        Ok(r) => r,
        Err(o) => return o,
    };
    match classify(&reply) {
        Class::Created(issue) => delivered(
            reply.status,
            format!("created Linear issue {}", describe(&issue)),
        ),
        Class::Failed(outcome @ Outcome::Permanent { .. }) if matches!(reply.status, 200 | 400) => {
            // The create may have failed because an earlier attempt made the issue.
            match lookup(ctx, cfg, key, &id).await {
                Some(issue) => delivered(
                    reply.status,
                    format!(
                        "Linear issue {} already created by an earlier attempt",
                        describe(&issue)
                    ),
                ),
                None => outcome,
            }
        }
        Class::Failed(outcome) => outcome,
    }
}

async fn post(ctx: &Ctx<'_>, cfg: &TaskConfig, key: &str, body: &Value) -> Result<Reply, Outcome> {
    let url = reqwest::Url::parse(&cfg.linear_url)
        .map_err(|e| Outcome::permanent(format!("AFTERCALL_LINEAR_URL: {e}")))?;
    let req = ctx
        .client
        .post(url.clone())
        .header("authorization", key)
        .header("accept", "application/json")
        .json(body);
    ctx.send(&url, req).await
}

async fn lookup(ctx: &Ctx<'_>, cfg: &TaskConfig, key: &str, id: &str) -> Option<Value> {
    let reply = post(
        ctx,
        cfg,
        key,
        &json!({ "query": LOOKUP, "variables": { "id": id } }),
    )
    .await
    .ok()?;
    let v: Value = serde_json::from_str(&reply.body).ok()?;
    let issue = v.pointer("/data/issue")?;
    (issue.is_object() && (200..300).contains(&reply.status)).then(|| issue.clone())
}

fn describe(issue: &Value) -> String {
    let s = |k: &str| issue.get(k).and_then(Value::as_str).unwrap_or_default();
    match (s("identifier"), s("url")) {
        ("", _) => s("id").to_string(),
        (ident, "") => ident.to_string(),
        (ident, url) => format!("{ident} {url}"),
    }
}

enum Class {
    Created(Value),
    Failed(Outcome),
}

/// GraphQL answers errors with HTTP 200 or 400 and an `errors` array: rate limits retry,
/// everything else is permanent. A 2xx without `issueCreate.success` is not delivered.
fn classify(reply: &Reply) -> Class {
    let parsed: Option<Value> = serde_json::from_str(&reply.body).ok();
    let snip = (!reply.body.is_empty()).then(|| snippet(&reply.body));
    let errors = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty());
    if let Some(errors) = errors {
        let code = |e: &Value| {
            e.pointer("/extensions/code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_uppercase()
        };
        let first = errors[0]
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        let error = format!("linear: GraphQL error: {first}");
        let status = Some(reply.status);
        if errors.iter().any(|e| code(e) == "RATELIMITED")
            || reply.status == 429
            || reply.status >= 500
        {
            return Class::Failed(Outcome::Retry {
                error,
                status,
                retry_after: http::retry_after(&reply.headers),
                snippet: snip,
            });
        }
        return Class::Failed(Outcome::Permanent {
            error,
            status,
            snippet: snip,
        });
    }
    if !(200..300).contains(&reply.status) {
        return Class::Failed(failed("linear", reply));
    }
    match parsed.as_ref().and_then(|v| v.pointer("/data/issueCreate")) {
        Some(r) if r.get("success").and_then(Value::as_bool) == Some(true) => {
            Class::Created(r.get("issue").cloned().unwrap_or(Value::Null))
        }
        Some(_) => Class::Failed(Outcome::Permanent {
            error: "linear: issueCreate answered success=false".into(),
            status: Some(reply.status),
            snippet: snip,
        }),
        // The issue id is stable, so asking again cannot make a duplicate.
        None => Class::Failed(Outcome::Retry {
            error: "linear: unexpected response without data.issueCreate".into(),
            status: Some(reply.status),
            retry_after: None,
            snippet: snip,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    fn kind(c: Class) -> &'static str {
        match c {
            Class::Created(_) => "created",
            Class::Failed(Outcome::Retry { .. }) => "retry",
            Class::Failed(Outcome::Permanent { .. }) => "permanent",
            Class::Failed(_) => "other",
        }
    }

    #[test]
    fn classification_table() {
        let cases = [
            (
                200,
                r#"{"data":{"issueCreate":{"success":true,"issue":{"id":"x","identifier":"ENG-1","url":"u"}}}}"#,
                "created",
            ),
            (
                200,
                r#"{"data":null,"errors":[{"message":"Argument Validation Error","extensions":{"code":"INVALID_INPUT"}}]}"#,
                "permanent",
            ),
            (
                400,
                r#"{"errors":[{"message":"Rate limit exceeded","extensions":{"code":"RATELIMITED"}}]}"#,
                "retry",
            ),
            (
                200,
                r#"{"data":{"issueCreate":{"success":false}}}"#,
                "permanent",
            ),
            (200, "<html>", "retry"),
            (401, r#"{"error":"unauthorized"}"#, "permanent"),
            (500, "", "retry"),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                kind(classify(&reply(status, body))),
                want,
                "{status} {body}"
            );
        }
    }

    #[test]
    fn issue_ids_are_stable_uuids() {
        let a = issue_id("job_1.0");
        assert_eq!(a, issue_id("job_1.0"));
        assert_ne!(a, issue_id("job_1.1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
