//! One-time login links over a real socket and a real `redis-server`: a link opens one
//! session and then never again; its code is in Redis by digest, for a short while,
//! without the token; a link whose token is no longer configured opens nothing.

use std::time::Duration;

use aftercall_api::{ApiConfig, ApiError, ApiState, Scope, Token};
use aftercall_queue::Queue;
use aftercall_testkit::{ADMIN, RedisOptions, TestQueue};
use redis::AsyncCommands;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

const OTHER: &str = "other-token-0123456789abcdef";

fn config(secret: &str) -> ApiConfig {
    ApiConfig {
        tokens: vec![Token {
            name: "admin-1".into(),
            secret: secret.into(),
            scope: Scope::Admin,
        }],
        rate_limit_per_minute: 0,
        ..ApiConfig::default()
    }
}

/// The API and the dashboard on a real socket; the server stops when the test ends.
async fn serve(queue: &Queue, api: ApiConfig) -> (String, ApiState) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(queue.clone(), api);
    tokio::spawn(aftercall_api::serve_with(
        listener,
        state.clone(),
        aftercall_dashboard::router(state.clone()),
        std::future::pending(),
    ));
    (base, state)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_login_link_opens_one_session_once() {
    let t = TestQueue::start_with("dash-link", RedisOptions::fast(), |c| {
        c.prefix = "link".into()
    })
    .await;
    let (base, state) = serve(&t.queue, config(ADMIN)).await;
    let c = client();

    let path = aftercall_dashboard::login_link(&state, ADMIN)
        .await
        .unwrap();
    let code = path.strip_prefix("/ui/login/").expect("a login path");
    assert_eq!(code.len(), 64, "{path}");
    assert!(!path.contains(ADMIN));

    // In Redis by the code's digest, with a TTL of at most 15 minutes, without the token.
    let mut r = redis::Client::open(t.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = t.queue.keys().login_code(code);
    assert!(
        key.starts_with("{link}:login_code:") && !key.contains(code),
        "{key}"
    );
    let stored: String = r.get(&key).await.unwrap();
    assert!(!stored.contains(ADMIN), "{stored}");
    let ttl: i64 = r.pttl(&key).await.unwrap();
    assert!(ttl > 14 * 60_000 && ttl <= 15 * 60_000, "{ttl}");

    let first = c.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/ui/");
    let set = first.headers()[SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("aftercall_session="), "{set}");
    assert!(set.contains("Max-Age=28800"), "{set}");
    let agents = c
        .get(format!("{base}/ui/agents"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(agents.status(), StatusCode::OK, "the session works");
    let exists: bool = r.exists(&key).await.unwrap();
    assert!(!exists, "the code is gone once used");

    // Never again, on this replica or any other.
    let again = c.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert!(again.headers().get(SET_COOKIE).is_none());
    let (other_base, _) = serve(&t.queue, config(ADMIN)).await;
    let elsewhere = c.get(format!("{other_base}{path}")).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::GONE);

    // Codes never issued, or not shaped like one.
    let unknown = format!("{base}/ui/login/{}", "ab".repeat(32));
    assert_eq!(
        c.get(unknown).send().await.unwrap().status(),
        StatusCode::GONE
    );
    let bad = format!("{base}/ui/login/not-a-code");
    assert_eq!(
        c.get(bad).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // Only a configured token gets a link.
    assert!(matches!(
        aftercall_dashboard::login_link(&state, OTHER).await,
        Err(ApiError::InvalidToken)
    ));
}

#[tokio::test]
async fn a_link_whose_token_was_removed_opens_nothing() {
    let t = TestQueue::start_with("dash-link-gone", RedisOptions::fast(), |_| {}).await;
    let (_, old) = serve(&t.queue, config(ADMIN)).await;
    let path = aftercall_dashboard::login_link(&old, ADMIN).await.unwrap();
    // The same Redis, served with another token only (as after a restart that removed it).
    let (base, _) = serve(&t.queue, config(OTHER)).await;
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::GONE);
    assert!(r.headers().get(SET_COOKIE).is_none());
}
