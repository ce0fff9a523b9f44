//! Asana: `POST {base}/api/1.0/tasks` with a bearer token; the task goes into the action's
//! `project`, or into `AFTERCALL_ASANA_WORKSPACE` when the action names none.

use aftercall_core::Outcome;
use serde_json::{Value, json};

use super::{Ctx, Draft, TaskConfig, delivered, not_configured};
use crate::settings::join;

pub async fn create(ctx: &Ctx<'_>, cfg: &TaskConfig, d: &Draft) -> Outcome {
    let Some(token) = &cfg.asana_token else {
        return not_configured("asana", &["AFTERCALL_ASANA_TOKEN"]);
    };
    let data = match body(cfg, d) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let url = match join(&cfg.asana_url, "/api/1.0/tasks") {
        Ok(u) => u,
        Err(o) => return o,
    };
    let req = ctx
        .client
        .post(url.clone())
        .bearer_auth(token)
        .header("accept", "application/json")
        .json(&data);
    let (status, v) = match ctx.send_json("asana", &url, req).await {
        Ok(r) => r,
        Err(o) => return o,
    };
    let gid = v.pointer("/data/gid").and_then(Value::as_str);
    let link = v.pointer("/data/permalink_url").and_then(Value::as_str);
    match (gid, link) {
        (Some(g), Some(l)) => delivered(status, format!("created Asana task {g} {l}")),
        (Some(g), None) => delivered(status, format!("created Asana task {g}")),
        _ => delivered(status, "created Asana task".into()),
    }
}

/// `{"data": {name, notes, projects | workspace, assignee, due_on, tags}}`.
pub fn body(cfg: &TaskConfig, d: &Draft) -> Result<Value, Outcome> {
    let mut data = json!({ "name": d.title, "notes": d.description });
    match (&d.project, &cfg.asana_workspace) {
        (Some(p), _) => data["projects"] = json!([p]),
        (None, Some(w)) => data["workspace"] = json!(w),
        (None, None) => {
            return Err(Outcome::permanent(
                "asana: set `project` on the action or AFTERCALL_ASANA_WORKSPACE",
            ));
        }
    }
    if let Some(a) = &d.assignee {
        data["assignee"] = json!(a);
    }
    if let Some(due) = &d.due {
        data["due_on"] = json!(due);
    }
    if !d.labels.is_empty() {
        data["tags"] = json!(d.labels);
    }
    Ok(json!({ "data": data }))
}
