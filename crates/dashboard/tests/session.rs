//! Server-side sessions over a real socket and a real `redis-server` (hardening item 6):
//! the cookie holds a random id, not the token; the session lives in Redis with an
//! expiry Redis enforces and every read checks; logging out deletes it; a server whose
//! `AFTERCALL_API_TOKENS` no longer lists the token refuses its sessions.

use std::time::{Duration, Instant};

use aftercall_api::{ApiConfig, ApiState, Scope, Token};
use aftercall_queue::{Queue, SessionRecord};
use aftercall_testkit::{ADMIN, READ, RedisOptions, TestQueue};
use redis::AsyncCommands;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};

const EIGHT_HOURS_MS: i64 = 8 * 3600 * 1000;

fn token(name: &str, secret: &str, scope: Scope) -> Token {
    Token {
        name: name.into(),
        secret: secret.into(),
        scope,
    }
}

fn config(tokens: Vec<Token>) -> ApiConfig {
    ApiConfig {
        tokens,
        rate_limit_per_minute: 0,
        ..ApiConfig::default()
    }
}

/// The API and the dashboard served together on a real socket, as the worker does.
struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(queue: &Queue, api: ApiConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = ApiState::new(queue.clone(), api);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(aftercall_api::serve_with(
            listener,
            state.clone(),
            aftercall_dashboard::router(state),
            async {
                let _ = stopped.await;
            },
        ));
        Server {
            base,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().unwrap();
    }

    /// Logs in with `token`; the session id the cookie holds.
    async fn login(&self, c: &reqwest::Client, token: &str) -> String {
        let r = c
            .post(format!("{}/ui/login", self.base))
            .header(ORIGIN, &self.base)
            .form(&[("token", token), ("next", "/ui/agents")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
        let pair = set.split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        assert_eq!(name, "aftercall_session");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
            assert!(set.contains(attr), "{set}");
        }
        value.to_string()
    }

    /// A page with the session: `Ok(html)`, or `Err(where it redirects)`.
    async fn page(&self, c: &reqwest::Client, sid: &str) -> Result<String, String> {
        let r = c
            .get(format!("{}/ui/agents", self.base))
            .header(COOKIE, format!("aftercall_session={sid}"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => Ok(r.text().await.unwrap()),
            StatusCode::SEE_OTHER => Err(r.headers()[LOCATION].to_str().unwrap().to_string()),
            s => panic!("unexpected {s}"),
        }
    }

    /// The API through the dashboard's proxy, with the session.
    async fn proxied(&self, c: &reqwest::Client, sid: &str) -> StatusCode {
        c.get(format!("{}/ui/api/agents", self.base))
            .header(COOKIE, format!("aftercall_session={sid}"))
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn refused(r: Result<String, String>) -> bool {
    matches!(r, Err(to) if to.starts_with("/ui/login"))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn sessions_live_in_redis_and_end_at_logout_expiry_and_token_removal() {
    let t = TestQueue::start_with("dash-session", RedisOptions::fast(), |c| {
        c.prefix = "dash".into()
    })
    .await;
    let queue = t.queue.clone();
    let mut r = redis::Client::open(t.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let both = config(vec![
        token("admin-1", ADMIN, Scope::Admin),
        token("read-1", READ, Scope::Read),
    ]);
    let server = Server::start(&queue, both.clone()).await;

    // The cookie is a random id, neither the token nor its hex; the session is in
    // Redis under the queue's hash tag, for 8 hours, without the token in clear.
    let sid = server.login(&c, ADMIN).await;
    assert_eq!(sid.len(), 64, "{sid}");
    assert!(sid.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(sid, hex(ADMIN));
    assert!(!sid.contains(ADMIN));
    assert_ne!(
        server.login(&c, ADMIN).await,
        sid,
        "every login gets a new id"
    );
    let key = queue.keys().session(&sid);
    assert!(key.starts_with("{dash}:session:"), "{key}");
    assert!(!key.contains(&sid), "the key does not give the id away");
    let stored: String = r.get(&key).await.unwrap();
    assert!(
        !stored.contains(ADMIN) && !stored.contains(&hex(ADMIN)),
        "{stored}"
    );
    let record: SessionRecord = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        (record.token_name.as_str(), record.scope.as_str()),
        ("admin-1", "admin")
    );
    let ttl: i64 = r.pttl(&key).await.unwrap();
    assert!(
        ttl > EIGHT_HOURS_MS - 60_000 && ttl <= EIGHT_HOURS_MS,
        "{ttl}"
    );

    // The session works for pages and for the API behind the proxy.
    let html = server.page(&c, &sid).await.expect("the page");
    assert!(html.contains("admin-1"), "{html}");
    assert_eq!(server.proxied(&c, &sid).await, StatusCode::OK);
    // The token itself, or its hex (the old cookie), is no session.
    assert!(refused(server.page(&c, &hex(ADMIN)).await));
    assert!(refused(server.page(&c, &"0".repeat(64)).await));

    // Logging out deletes the session: the same cookie is refused afterwards.
    let at = html.find("name=\"csrf-token\" content=\"").unwrap() + 27;
    let csrf = &html[at..at + 32];
    let out = c
        .post(format!("{}/ui/logout", server.base))
        .header(COOKIE, format!("aftercall_session={sid}"))
        .header(ORIGIN, &server.base)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(!r.exists::<_, bool>(&key).await.unwrap());
    assert!(refused(server.page(&c, &sid).await));
    assert_eq!(server.proxied(&c, &sid).await, StatusCode::UNAUTHORIZED);

    // Redis ends a session at its expiry...
    let sid = server.login(&c, ADMIN).await;
    assert!(server.page(&c, &sid).await.is_ok());
    let key = queue.keys().session(&sid);
    let _: bool = r.pexpire(&key, 50).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.exists::<_, bool>(&key).await.unwrap() {
        assert!(Instant::now() < deadline, "the key expires");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused(server.page(&c, &sid).await));
    // ...and the server checks the expiry it stored, even on a key that lost its TTL.
    let sid = server.login(&c, ADMIN).await;
    let key = queue.keys().session(&sid);
    let mut record: SessionRecord =
        serde_json::from_str(&r.get::<_, String>(&key).await.unwrap()).unwrap();
    record.expires_ms = aftercall_queue::now_ms() - 1;
    let _: () = r
        .set(&key, serde_json::to_string(&record).unwrap())
        .await
        .unwrap();
    assert_eq!(r.pttl::<_, i64>(&key).await.unwrap(), -1, "no TTL left");
    assert!(refused(server.page(&c, &sid).await));
    assert_eq!(server.proxied(&c, &sid).await, StatusCode::UNAUTHORIZED);

    // Removing a token from the configuration (a restart with a new
    // AFTERCALL_API_TOKENS) ends its sessions; the other token's sessions carry on.
    let admin_sid = server.login(&c, ADMIN).await;
    let read_sid = server.login(&c, READ).await;
    server.stop().await;
    let server = Server::start(&queue, config(vec![token("read-1", READ, Scope::Read)])).await;
    assert!(refused(server.page(&c, &admin_sid).await));
    assert_eq!(
        server.proxied(&c, &admin_sid).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(server.page(&c, &read_sid).await.is_ok());
    // A token whose name now belongs to another secret is not the session's token.
    server.stop().await;
    let renamed = config(vec![token(
        "admin-1",
        "another-admin-token-0123456789",
        Scope::Admin,
    )]);
    let server = Server::start(&queue, renamed).await;
    assert!(refused(server.page(&c, &admin_sid).await));
    // They were ended, not just refused: putting the token back does not revive them.
    server.stop().await;
    let server = Server::start(&queue, both).await;
    assert!(refused(server.page(&c, &admin_sid).await));
    assert!(server.page(&c, &read_sid).await.is_ok());
    server.stop().await;
    drop(t);
}
