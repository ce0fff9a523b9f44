//! An HTTP client for tests that call an API over a real socket: bearer tokens, JSON
//! bodies, and reqwest's crypto provider installed (reqwest is built without one).

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

/// A reqwest client with ring's crypto provider installed and a 10 s timeout.
pub fn http_client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client builds")
}

/// An API at `base` (`http://127.0.0.1:<port>`), called the way the tests call it.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: impl Into<String>) -> Http {
        Http {
            base: base.into(),
            client: http_client(),
        }
    }

    /// With a client that gives up after `timeout` rather than 10 s.
    pub fn with_timeout(self, timeout: Duration) -> Http {
        Http {
            client: client_with_timeout(timeout),
            ..self
        }
    }

    /// `method` on `base + path`, with the bearer `token` when there is one.
    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `body` as `application/json`.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.request(method, path, Some(token))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request(Method::GET, path, token)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path` with `token`, the answer's body as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        self.get(path, Some(token))
            .await
            .json()
            .await
            .expect("a JSON body")
    }
}
