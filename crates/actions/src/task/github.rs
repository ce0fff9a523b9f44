//! GitHub Issues: `POST {base}/repos/{owner}/{repo}/issues` with a bearer token and the
//! `application/vnd.github+json` media type. Issues have no due date, so it goes into
//! the body.

use aftercall_core::Outcome;
use serde_json::{Value, json};

use super::{Ctx, Draft, Reply, TaskConfig, delivered, failed, not_configured};
use crate::http;

pub async fn create(ctx: &Ctx<'_>, cfg: &TaskConfig, d: &Draft) -> Outcome {
    let Some(token) = &cfg.github_token else {
        return not_configured("github", &["AFTERCALL_GITHUB_TOKEN"]);
    };
    let Some((owner, repo)) = d
        .project
        .as_deref()
        .and_then(|p| p.split_once('/'))
        .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
    else {
        return Outcome::permanent("github: `project` must be `owner/repo`");
    };
    let mut url = match reqwest::Url::parse(&cfg.github_url) {
        Ok(u) => u,
        Err(e) => return Outcome::permanent(format!("AFTERCALL_GITHUB_URL: {e}")),
    };
    // Pushed as segments so an owner or repo cannot add path parts of its own.
    match url.path_segments_mut() {
        Ok(mut s) => {
            s.pop_if_empty().extend(["repos", owner, repo, "issues"]);
        }
        Err(()) => return Outcome::permanent("AFTERCALL_GITHUB_URL cannot be a base URL"),
    }
    let req = ctx
        .client
        .post(url.clone())
        .bearer_auth(token)
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .json(&body(d));
    let reply = match ctx.send(&url, req).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    if !(200..300).contains(&reply.status) {
        return classify_failure(&reply);
    }
    let v: Value = serde_json::from_str(&reply.body).unwrap_or_default();
    match (
        v.get("number").and_then(Value::as_u64),
        v.get("html_url").and_then(Value::as_str),
    ) {
        (Some(n), Some(u)) => delivered(reply.status, format!("created GitHub issue #{n} {u}")),
        (Some(n), None) => delivered(reply.status, format!("created GitHub issue #{n}")),
        _ => delivered(reply.status, "created GitHub issue".into()),
    }
}

/// `{title, body, labels, assignees}`.
pub fn body(d: &Draft) -> Value {
    let mut text = d.description.clone();
    if let Some(due) = &d.due {
        text.push_str(&format!("\n\nDue: {due}"));
    }
    let mut v = json!({ "title": d.title, "body": text });
    if !d.labels.is_empty() {
        v["labels"] = json!(d.labels);
    }
    if let Some(a) = &d.assignee {
        v["assignees"] = json!([a]);
    }
    v
}

/// GitHub signals rate limits with 403 as well as 429: a 403 with `retry-after` or with
/// `x-ratelimit-remaining: 0` retries (at the reset time); other failures use the default.
fn classify_failure(reply: &Reply) -> Outcome {
    let h = &reply.headers;
    let exhausted = h
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    if reply.status == 403 && (exhausted || h.contains_key(reqwest::header::RETRY_AFTER)) {
        let reset = h
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|epoch| {
                std::time::Duration::from_secs(
                    u64::try_from(epoch - chrono::Utc::now().timestamp()).unwrap_or(0),
                )
            });
        return Outcome::Retry {
            error: "github: HTTP 403 rate limited".into(),
            status: Some(403),
            retry_after: http::retry_after(h).or(reset),
            snippet: (!reply.body.is_empty()).then(|| aftercall_core::job::snippet(&reply.body)),
        };
    }
    failed("github", reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn rate_limits_retry_and_other_403s_do_not() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        let r = Reply {
            status: 403,
            headers: h,
            body: String::new(),
        };
        assert!(matches!(
            classify_failure(&r),
            Outcome::Retry {
                status: Some(403),
                ..
            }
        ));
        let r = Reply {
            status: 403,
            headers: HeaderMap::new(),
            body: "{}".into(),
        };
        assert!(matches!(classify_failure(&r), Outcome::Permanent { .. }));
        let r = Reply {
            status: 422,
            headers: HeaderMap::new(),
            body: "{}".into(),
        };
        assert!(matches!(
            classify_failure(&r),
            Outcome::Permanent {
                status: Some(422),
                ..
            }
        ));
    }
}
