//! `/destinations`: health listed, pauses and resumes by destination, agent or action
//! type, admin scope for changes, one scope at a time.

mod common;

use aftercall_queue::{Health, PauseScope};
use axum::http::{Method, StatusCode};
use common::{ADMIN, READ, start};
use serde_json::json;

#[tokio::test]
async fn destinations_are_listed_paused_and_resumed() {
    let h = start().await;
    // A destination seen failing, as a worker reports it.
    h.queue
        .report(
            "crm.example",
            Health::Fail,
            "HTTP 503",
            1,
            std::time::Duration::from_secs(30),
            0,
        )
        .await
        .unwrap();
    let r = h.get("/destinations", READ).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let d = &r.json["destinations"][0];
    assert_eq!(
        (
            d["destination"].as_str(),
            d["state"].as_str(),
            d["failure_streak"].as_u64(),
            d["last_error"].as_str()
        ),
        (Some("crm.example"), Some("open"), Some(1), Some("HTTP 503"))
    );
    assert_eq!(r.json["pauses"], json!([]));

    for (body, scope) in [
        (
            json!({"destination": "crm.example"}),
            "destination:crm.example",
        ),
        (json!({"agent": "a1"}), "agent:a1"),
        (json!({"action": "sms"}), "action:sms"),
    ] {
        let r = h
            .json(Method::POST, "/destinations/pause", READ, body.to_string())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "read may not pause");
        let r = h.post_json("/destinations/pause", body.to_string()).await;
        assert_eq!(
            (r.status, r.json["scope"].as_str()),
            (StatusCode::OK, Some(scope))
        );
    }
    let r = h.get("/destinations", READ).await;
    assert_eq!(r.json["destinations"][0]["state"], "paused");
    let mut scopes = r.column("pauses", "scope");
    scopes.sort();
    assert_eq!(
        scopes,
        ["action:sms", "agent:a1", "destination:crm.example"]
    );

    let r = h
        .post_json("/destinations/resume", r#"{"agent":"a1"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .post_json("/destinations/resume", r#"{"agent":"a1"}"#)
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");
    let left = h.queue.pauses().await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(
        !left
            .iter()
            .any(|p| p.scope == PauseScope::Agent("a1".into()).key())
    );

    for bad in [
        r#"{}"#,
        r#"{"agent":"a","action":"sms"}"#,
        r#"{"agent":""}"#,
        r#"{"host":"x"}"#,
    ] {
        let r = h.post_json("/destinations/pause", bad).await;
        r.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    let r = h
        .json(Method::POST, "/destinations/pause", ADMIN, "[1]")
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
}
