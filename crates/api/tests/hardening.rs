//! The hardening issue's API items, over a real socket against a real Redis: cache and
//! sniffing headers (7), the OpenAPI document agreeing with the server on what
//! schemathesis found (8; the whole run is `tests/schemathesis.rs`), and one rule for a
//! key repeated in a JSON body (9).

mod common;

use common::{ADMIN, Harness, Http, READ, SEED_AGENT, SEED_CALL, Served, call, start};
use reqwest::Method;
use serde_json::{Value, json};

struct Answer {
    status: u16,
    cache_control: Option<String>,
    nosniff: Option<String>,
    content_type: Option<String>,
    json: Value,
}

impl Answer {
    /// Fails unless the answer may be neither cached (`Cache-Control: no-store`) nor
    /// sniffed (`X-Content-Type-Options: nosniff`).
    fn assert_private(&self, what: &str) {
        assert_eq!(self.cache_control.as_deref(), Some("no-store"), "{what}");
        assert_eq!(self.nosniff.as_deref(), Some("nosniff"), "{what}");
    }
}

/// The API on a socket (stopped when dropped) with the seed agent stored, and its client.
struct Live {
    http: Http,
    _served: Served,
}

async fn live(h: &Harness) -> Live {
    let (served, http) = h.serve_seeded().await;
    Live {
        http,
        _served: served,
    }
}

impl Live {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Answer {
        let mut req = self.http.request(method, path, token);
        if let Some((content_type, body)) = body {
            req = req.header("content-type", content_type).body(body);
        }
        let r = req.send().await.unwrap();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (cache_control, nosniff, content_type) = (
            header("cache-control"),
            header("x-content-type-options"),
            header("content-type"),
        );
        let status = r.status().as_u16();
        let json = r.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            cache_control,
            nosniff,
            content_type,
            json,
        }
    }

    /// A JSON body, with the admin token.
    async fn json(&self, method: Method, path: &str, body: &str) -> Answer {
        let body = Some(("application/json", body.to_string()));
        self.send(method, path, Some(ADMIN), body).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, None).await
    }
}

// ---- item 7 ----

#[tokio::test]
async fn call_data_and_configs_are_never_cached_and_no_json_is_sniffed() {
    let h = start().await;
    let live = live(&h).await;
    use reqwest::Method as M;
    let dead = h.dead_letters_for(&call("c-dead", "agent_abc123")).await;
    let r = live.json(M::POST, "/calls", SEED_CALL).await;
    assert_eq!(r.status, 202);

    // Routes that carry calls, configs or dead letters: answers and errors alike.
    let private = [
        (M::GET, "/calls/call_xyz789".to_string(), 200),
        (M::GET, "/calls/unknown".into(), 404),
        (M::GET, "/agents".into(), 200),
        (M::GET, "/agents/agent_abc123".into(), 200),
        (M::GET, "/agents/unknown".into(), 404),
        (M::GET, "/dead-letters".into(), 200),
        (M::GET, "/dead-letters?limit=0".into(), 400),
        (M::GET, format!("/dead-letters/{}", dead[0]), 200),
        (M::GET, "/stats".into(), 200),
    ];
    for (method, path, status) in private {
        let r = live.send(method.clone(), &path, Some(READ), None).await;
        assert_eq!(r.status, status, "{method} {path}");
        r.assert_private(&format!("{method} {path}"));
    }
    for (method, path, body) in [
        (M::PATCH, "/agents/agent_abc123".to_string(), SEED_AGENT),
        (M::POST, "/calls".into(), SEED_CALL),
        (M::POST, "/dead-letters/replay".into(), r#"{"agent":"x"}"#),
        (M::POST, "/dead-letters/purge".into(), r#"{"agent":"x"}"#),
        (M::POST, format!("/dead-letters/{}/replay", dead[1]), ""),
    ] {
        let r = live.json(method.clone(), &path, body).await;
        assert!(r.status < 300, "{method} {path}: {}", r.status);
        r.assert_private(&format!("{method} {path}"));
    }
    let r = live.get("/calls/call_xyz789", None).await;
    assert_eq!(r.status, 401);
    r.assert_private("an unauthenticated GET");

    // Public routes and fallbacks: JSON, never sniffed.
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/openapi.json", 200),
        ("/nope", 404),
    ] {
        let r = live.get(path, None).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(r.nosniff.as_deref(), Some("nosniff"), "{path}");
    }
    let r = live.send(M::PUT, "/stats", Some(READ), None).await;
    assert_eq!((r.status, r.nosniff.as_deref()), (405, Some("nosniff")));
}

// ---- item 8 ----

/// Each kind of difference schemathesis found, checked on both sides: what the document
/// says, and what the server does with the same request.
#[tokio::test]
async fn the_document_and_the_server_agree_where_schemathesis_found_them_apart() {
    let h = start().await;
    let live = live(&h).await;
    use reqwest::Method as M;
    let doc = live.get("/openapi.json", None).await.json;
    let schemas = &doc["components"]["schemas"];
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str() {
            Some(r) => schemas[r.rsplit('/').next().unwrap()].clone(),
            None => v.clone(),
        }
    };

    // `limit` is an integer from 1 to 1000, and the server reads it so.
    let params = doc["paths"]["/dead-letters"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(
        (
            &limit["schema"]["type"],
            &limit["schema"]["minimum"],
            &limit["schema"]["maximum"]
        ),
        (&json!("integer"), &json!(1), &json!(1000))
    );
    for (q, status) in [
        ("limit=5", 200),
        ("limit=1000", 200),
        ("limit=0", 400),
        ("limit=1001", 400),
        ("limit=abc", 400),
    ] {
        let r = live.get(&format!("/dead-letters?{q}"), Some(READ)).await;
        assert_eq!(r.status, status, "{q}");
    }

    // Each action type has its required fields; the server refuses an action without them.
    let patch = &doc["paths"]["/agents/{agent_id}"]["patch"]["requestBody"]["content"];
    let body = resolve(&patch["application/merge-patch+json"]["schema"]);
    let actions = resolve(
        &resolve(&body["properties"]["voice_tools"]["anyOf"][0])["properties"]["post_call_follow_up"]
            ["anyOf"][0],
    );
    let actions = resolve(&actions["properties"]["actions"]["anyOf"][0]["items"]);
    let required = |kind: &str| -> Value {
        let variant = actions["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["properties"]["type"]["const"] == json!(kind))
            .unwrap_or_else(|| panic!("no {kind} in {actions}"));
        assert_eq!(variant["additionalProperties"], json!(false), "{kind}");
        variant["required"].clone()
    };
    assert_eq!(required("email"), json!(["type", "to"]));
    assert_eq!(required("sms"), json!(["type", "template"]));
    assert_eq!(required("webhook"), json!(["type", "url"]));
    assert_eq!(required("task"), json!(["type", "provider"]));
    let r = live
        .json(
            M::PATCH,
            "/agents/a2",
            r#"{"voice_tools": {"post_call_follow_up": {"actions": [{"type": "email"}]}}}"#,
        )
        .await;
    assert_eq!(
        (r.status, &r.json["field"]),
        (422, &json!("voice_tools.post_call_follow_up.actions[0].to"))
    );

    // No property the server refuses: the stored config has none, a patch may only remove one.
    assert_eq!(schemas["AgentConfig"]["additionalProperties"], json!(false));
    assert_eq!(body["additionalProperties"], json!({"type": "null"}));
    let r = live
        .json(M::PATCH, "/agents/agent_abc123", r#"{"colour": "red"}"#)
        .await;
    assert_eq!((r.status, &r.json["field"]), (422, &json!("colour")));
    let r = live
        .json(M::PATCH, "/agents/agent_abc123", r#"{"colour": null}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.json);

    // Null is a merge-patch removal, and the PATCH schema says so.
    assert_eq!(
        body["properties"]["name"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        body["properties"]["voice_tools"]["anyOf"][1],
        json!({"type": "null"})
    );
    let r = live
        .json(M::PATCH, "/agents/agent_abc123", r#"{"name": "Acme"}"#)
        .await;
    assert_eq!(r.json["name"], json!("Acme"));
    let r = live
        .json(M::PATCH, "/agents/agent_abc123", r#"{"name": null}"#)
        .await;
    assert_eq!((r.status, r.json.get("name")), (200, None));

    // Path ids have the server's pattern and length.
    for (path, method) in [
        ("/agents/{agent_id}", "patch"),
        ("/calls/{call_id}", "get"),
        ("/dead-letters/{job_id}", "get"),
    ] {
        let id = &doc["paths"][path][method]["parameters"][0]["schema"];
        assert_eq!(
            (&id["minLength"], &id["maxLength"]),
            (&json!(1), &json!(256)),
            "{path}"
        );
        assert!(
            id["pattern"]
                .as_str()
                .unwrap()
                .starts_with("^[^\\u0000-\\u0020"),
            "{path}: {id}"
        );
    }
    let r = live.json(M::PATCH, "/agents/a%20b", "{}").await;
    assert_eq!((r.status, &r.json["error"]), (400, &json!("invalid_path")));
    let long = "x".repeat(257);
    let r = live.json(M::PATCH, &format!("/agents/{long}"), "{}").await;
    assert_eq!((r.status, &r.json["error"]), (400, &json!("invalid_path")));

    // The filter's `action` is an enum; an empty filter (nulls included) is refused by both.
    let filter = resolve(
        &doc["paths"]["/dead-letters/replay"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    // A blank or null field is no filter (the queue's `present`): the document says so.
    let blank = json!({"type": "string", "pattern": "^[ \\t\\n\\x0C\\r]*$"});
    assert_eq!(
        filter["properties"]["action"]["anyOf"],
        json!([
            {"type": "string", "enum": ["email", "sms", "webhook", "task", "slack", "call_ended"]},
            blank,
            {"type": "null"},
        ])
    );
    let alternatives = filter["anyOf"].as_array().unwrap();
    assert!(
        alternatives
            .contains(&json!({"required": ["all"], "properties": {"all": {"const": true}}}))
    );
    assert!(alternatives.contains(&json!({"required": ["action"], "properties": {"action": {"not": {"anyOf": [{"type": "null"}, blank]}}}})));
    for (body, status) in [
        (r#"{"action": "fax"}"#, 400),
        (r#"{"action": null, "agent": null, "all": false}"#, 400),
        (r#"{}"#, 400),
        (r#"{"error": "", "action": " \t"}"#, 400),
        (r#"{"action": "sms"}"#, 200),
        (r#"{"since": 1400.0}"#, 200),
        (r#"{"since": 1.5}"#, 400),
        (r#"{"until": -9223372036854775809}"#, 400),
    ] {
        let r = live.json(M::POST, "/dead-letters/purge", body).await;
        assert_eq!(r.status, status, "{body}: {}", r.json);
    }
}

// ---- item 9 ----

fn refused(r: &Answer, field: &str) {
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(r.json["error"], json!("duplicate_key"), "{}", r.json);
    assert_eq!(r.json["field"], json!(field), "{}", r.json);
    let message = r.json["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{field}`")), "{message}");
}

#[tokio::test]
async fn a_key_repeated_in_any_json_body_is_refused_with_400_naming_it() {
    let h = start().await;
    let live = live(&h).await;
    use reqwest::Method as M;
    let dead = h.dead_letters_for(&call("c-dead", "agent_abc123")).await;
    let dead_count = || async {
        live.get("/dead-letters", Some(READ)).await.json["items"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(dead_count().await, dead.len());

    // Each body repeats a key; each is refused naming it. `{"all": false, "all": true}`
    // used to replay everything; PATCH /agents used to keep the last one, at any depth;
    // POST /calls refused them already (422, `duplicate field`), now with the same 400.
    let cases: Vec<(M, &str, &str, &str)> = vec![
        (
            M::POST,
            "/dead-letters/replay",
            r#"{"all": false, "all": true}"#,
            "all",
        ),
        (
            M::POST,
            "/dead-letters/purge",
            r#"{"all": false, "all": true}"#,
            "all",
        ),
        (
            M::POST,
            "/dead-letters/replay",
            r#"{"agent": "nobody", "all": true, "agent": "agent_abc123"}"#,
            "agent",
        ),
        (
            M::POST,
            "/dead-letters/purge",
            r#"{"agent": "nobody", "all": true, "agent": "agent_abc123"}"#,
            "agent",
        ),
        (
            M::PATCH,
            "/agents/agent_abc123",
            r#"{"voice_tools": {"post_call_follow_up": {"enabled": true, "enabled": false}}}"#,
            "voice_tools.post_call_follow_up.enabled",
        ),
        (
            M::PATCH,
            "/agents/new-agent",
            r#"{"voice_tools": {"post_call_follow_up": {"actions": [{"type": "sms", "template": "a", "template": "b"}]}}}"#,
            "voice_tools.post_call_follow_up.actions[0].template",
        ),
        (
            M::POST,
            "/calls",
            r#"{"call_id": "c1", "agent_id": "a", "call_id": "c2"}"#,
            "call_id",
        ),
        (
            M::POST,
            "/calls",
            r#"[{"call_id": "c3", "agent_id": "a"}, {"call_id": "c4", "agent_id": "a", "agent_id": "b"}]"#,
            "[1].agent_id",
        ),
    ];
    for (method, path, body, field) in cases {
        refused(&live.json(method, path, body).await, field);
    }
    let ndjson = "{\"call_id\": \"c5\", \"agent_id\": \"a\"}\n{\"call_id\": \"c6\", \"summary\": \"x\", \"agent_id\": \"a\", \"summary\": \"y\"}\n";
    let body = Some(("application/x-ndjson", ndjson.to_string()));
    let r = live.send(M::POST, "/calls", Some(ADMIN), body).await;
    refused(&r, "summary");
    assert_eq!(r.json["line"], json!(2));

    assert_eq!(
        dead_count().await,
        dead.len(),
        "nothing was replayed or purged"
    );
    let r = live.get("/agents/new-agent", Some(READ)).await;
    assert_eq!(r.status, 404, "nothing was stored");
    let r = live.get("/agents/agent_abc123", Some(READ)).await;
    assert_eq!(
        r.json["voice_tools"]["post_call_follow_up"]["enabled"],
        json!(true)
    );
    for id in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        let r = live.get(&format!("/calls/{id}"), Some(READ)).await;
        assert_eq!(r.status, 404, "{id} was not enqueued");
    }

    // Equal keys in different objects are not repeated keys.
    let r = live
        .json(
            M::POST,
            "/dead-letters/replay",
            r#"{"agent": "agent_abc123", "action": "sms"}"#,
        )
        .await;
    assert_eq!((r.status, &r.json), (200, &json!({"replayed": 1})));
}
