//! The webhook client against scripted HTTP/1.1 servers on 127.0.0.1 (each answer given
//! byte for byte): connection reuse, a server that closes idle connections, chunked and
//! long bodies, informational answers, malformed answers, a receiver that never answers,
//! the SSRF guard after DNS, and TLS with a test certificate authority.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aftercall_actions::HttpConfig;
use aftercall_actions::webhook::client::{Client, Error};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::common::{assert_within, http_cfg, silent_server};

/// A server that answers the n-th request it reads (over all connections) with
/// `answers[n]`, and closes each connection after `per_conn` answers.
struct Scripted {
    port: u16,
    conns: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(
        answers: Vec<Vec<u8>>,
        per_conn: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Scripted {
        Self::start_on("127.0.0.1:0", answers, per_conn, tls).await
    }

    async fn start_on(
        addr: &str,
        answers: Vec<Vec<u8>>,
        per_conn: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Scripted {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<String>>> = Default::default();
        let answers = Arc::new(answers);
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (r, answers, tls) = (r.clone(), answers.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(socket).await {
                                serve(s, r, answers, per_conn).await;
                            }
                        }
                        None => serve(socket, r, answers, per_conn).await,
                    }
                });
            }
        });
        Scripted {
            port,
            conns,
            requests,
        }
    }

    fn url(&self, scheme: &str, host: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("{scheme}://{host}:{}/hook?k=1", self.port)).unwrap()
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// Reads requests (head, then a `content-length` body) and plays the answers.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    requests: Arc<Mutex<Vec<String>>>,
    answers: Arc<Vec<Vec<u8>>>,
    per_conn: usize,
) {
    let mut buf = Vec::new();
    for _ in 0..per_conn {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request = String::from_utf8_lossy(&buf[..head_end + len]).to_string();
        buf.drain(..head_end + len);
        let n = {
            let mut r = requests.lock().unwrap();
            r.push(request);
            r.len() - 1
        };
        let Some(answer) = answers.get(n) else { return };
        if s.write_all(answer).await.is_err() {
            return;
        }
        let _ = s.flush().await;
    }
    let _ = s.shutdown().await;
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn client() -> Client {
    Client::with_tls(http_cfg(), tls_client(false))
}

/// A TLS client configuration trusting only the test authority (or nothing).
fn tls_client(trust_test_ca: bool) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    if trust_test_ca {
        let ca = CertificateDer::from_pem_slice(include_bytes!("tls/ca.pem")).unwrap();
        roots.add(ca).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

async fn post(
    c: &Client,
    url: &reqwest::Url,
) -> Result<aftercall_actions::webhook::client::Response, Error> {
    c.post(
        url,
        &[
            ("content-type", "application/json"),
            ("webhook-id", "job_1.0"),
        ],
        br#"{"call_id":"c1"}"#.to_vec(),
        4096,
    )
    .await
}

#[tokio::test]
async fn a_connection_is_kept_and_reused() {
    let s = Scripted::start(vec![OK.to_vec(), OK.to_vec()], 10, None).await;
    let c = client();
    let url = s.url("http", "127.0.0.1");
    for _ in 0..2 {
        let r = post(&c, &url).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert_eq!(
        s.conns(),
        1,
        "the second request went over the first connection"
    );
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[0].starts_with("POST /hook?k=1 HTTP/1.1\r\n"),
        "{}",
        reqs[0]
    );
    assert!(reqs[0].contains(&format!("host: 127.0.0.1:{}\r\n", s.port)));
    assert!(reqs[0].contains("webhook-id: job_1.0\r\n"));
    assert!(
        reqs[0].ends_with("content-length: 16\r\n\r\n{\"call_id\":\"c1\"}"),
        "{}",
        reqs[0]
    );
}

#[tokio::test]
async fn an_ipv6_literal_is_reached_with_a_bracketed_host_header() {
    let s = Scripted::start_on("[::1]:0", vec![OK.to_vec()], 1, None).await;
    let c = Client::with_tls(http_cfg_with_v6(), tls_client(false));
    let r = post(&c, &s.url("http", "[::1]")).await.unwrap();
    assert_eq!(r.status, 200);
    let req = s.requests.lock().unwrap()[0].clone();
    assert!(
        req.contains(&format!("host: [::1]:{}\r\n", s.port)),
        "{req}"
    );
    // And the guard applies to IPv6 literals too.
    let e = post(&client(), &s.url("http", "[::1]")).await.unwrap_err();
    assert!(
        matches!(&e, Error::Blocked(b) if b.reason == "loopback address"),
        "{e}"
    );
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced() {
    // One answer per connection: the server closes the first one after answering.
    let s = Scripted::start(vec![OK.to_vec(), OK.to_vec()], 1, None).await;
    let c = client();
    let url = s.url("http", "127.0.0.1");
    post(&c, &url).await.unwrap();
    // Let the close arrive, as it would after a receiver's keep-alive timeout.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = post(&c, &url).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(s.conns(), 2);
    assert_eq!(
        s.requests.lock().unwrap().len(),
        2,
        "each request answered once"
    );
}

#[tokio::test]
async fn a_chunked_body_is_decoded_for_the_snippet_and_the_connection_reused() {
    let chunked = b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let s = Scripted::start(vec![chunked.to_vec(), OK.to_vec()], 10, None).await;
    let c = client();
    let url = s.url("http", "127.0.0.1");
    let r = post(&c, &url).await.unwrap();
    assert_eq!(
        (r.status, r.body.as_str(), r.retry_after.as_deref()),
        (500, "hello world", Some("3"))
    );
    assert_eq!(post(&c, &url).await.unwrap().status, 200);
    assert_eq!(s.conns(), 1);
}

#[tokio::test]
async fn a_long_body_keeps_its_start_and_the_connection_is_not_reused() {
    let mut long = b"HTTP/1.1 400 Bad\r\nContent-Length: 200000\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 200_000));
    let s = Scripted::start(vec![long, OK.to_vec()], 10, None).await;
    let c = client();
    let url = s.url("http", "127.0.0.1");
    let r = c.post(&url, &[], Vec::new(), 10).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (400, "xxxxxxxxxx"));
    assert_eq!(post(&c, &url).await.unwrap().status, 200);
    assert_eq!(s.conns(), 2, "not reused with most of a body unread");
}

#[tokio::test]
async fn informational_answers_come_before_the_real_one() {
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let s = Scripted::start(vec![answer.to_vec()], 10, None).await;
    let r = post(&client(), &s.url("http", "127.0.0.1")).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (201, ""));
}

#[tokio::test]
async fn malformed_or_cut_answers_are_transport_errors() {
    for answer in [
        &b"HTTP/1.1 abc\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        // A chunk size near usize::MAX (no overflow), then the connection ends.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab",
    ] {
        let s = Scripted::start(vec![answer.to_vec()], 1, None).await;
        let e = post(&client(), &s.url("http", "127.0.0.1"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Transport(_)),
            "{:?}: {e}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let addr = silent_server().await;
    let c = Client::with_tls(
        HttpConfig {
            timeout: Duration::from_millis(300),
            ..http_cfg()
        },
        tls_client(false),
    );
    let url = reqwest::Url::parse(&format!("http://{addr}/hook")).unwrap();
    let started = std::time::Instant::now();
    let e = post(&c, &url).await.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert_within(started, Duration::from_secs(5));
}

#[tokio::test]
async fn the_guard_refuses_a_name_that_resolves_to_loopback() {
    let s = Scripted::start(vec![OK.to_vec()], 1, None).await;
    let c = Client::with_tls(HttpConfig::default(), tls_client(false));
    let e = post(&c, &s.url("http", "localhost")).await.unwrap_err();
    assert!(
        matches!(&e, Error::Blocked(b) if b.reason == "loopback address"),
        "{e}"
    );
    assert_eq!(s.conns(), 0, "no connection was made");
}

#[tokio::test]
async fn https_with_a_trusted_authority_and_refused_without_it() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = CertificateDer::from_pem_slice(include_bytes!("tls/server.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("tls/server.key")).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let s = Scripted::start(vec![OK.to_vec(), OK.to_vec()], 10, Some(acceptor)).await;
    let url = s.url("https", "localhost");
    let trusted = Client::with_tls(http_cfg_with_v6(), tls_client(true));
    for _ in 0..2 {
        let r = post(&trusted, &url).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert_eq!(s.conns(), 1, "the TLS connection was reused");
    let untrusting = Client::with_tls(http_cfg_with_v6(), tls_client(false));
    let e = post(&untrusting, &url).await.unwrap_err();
    assert!(matches!(&e, Error::Connect(m) if m.contains("TLS")), "{e}");
}

/// `localhost` may resolve to ::1 first.
fn http_cfg_with_v6() -> HttpConfig {
    let mut cfg = http_cfg();
    cfg.allow.push("::1/128".parse().unwrap());
    cfg
}
