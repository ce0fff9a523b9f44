//! The HTTP/1.1 client webhook deliveries go through.
//!
//! Webhooks are the call a worker makes thousands of at once, to receivers that may be
//! slow. Through reqwest, each request in flight held about 45 KB: hyper's per-connection
//! dispatch channel and 8 KB read and write buffers, and reqwest's request futures
//! (BENCHMARKS.md). This client writes a request as one buffer, reads the answer through
//! a small one that grows only for a large head, parses it with `httparse` (hyper's own
//! parser), and keeps idle connections per host. Same rules as the shared client
//! (`crate::http`): the SSRF guard after DNS resolution, no redirects, no proxy, the
//! connect and request timeouts. HTTP/1.1 only (over TLS too: ALPN `http/1.1`).
//! The bytes on the wire (request encoding, answer heads and bodies) are `wire.rs`'s.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::wire::{Body, MAX_HEAD, encode, parse_head, read_more};
use crate::http::{Blocked, HttpConfig, allowed_addrs};

/// Idle connections older than this are not reused (servers close theirs after a while).
const IDLE_FOR: Duration = Duration::from_secs(60);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused by the SSRF guard.
    #[error(transparent)]
    Blocked(#[from] Blocked),
    /// The request itself is wrong (a bad header, a URL without a host): permanent.
    #[error("{0}")]
    Invalid(String),
    /// No connection: DNS, TCP or TLS.
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Timeout(&'static str),
    /// The connection failed or the answer was malformed.
    #[error("{0}")]
    Transport(String),
}

/// An answer: status, `Retry-After`, and the start of the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The receiver asked not to be retried (`Aftercall-No-Retry`).
    pub no_retry: bool,
    /// At most the snippet limit given to [`Client::post`], as text.
    pub body: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

struct Idle {
    stream: Stream,
    since: Instant,
}

/// Idle connections per host, oldest first: taken from the back (the most recently used,
/// likeliest still open), expired from the front. Every [`SWEEP_EVERY`] all hosts are
/// swept too, so a host that is not called again does not keep its sockets.
struct Pool {
    hosts: HashMap<Key, VecDeque<Idle>>,
    swept: Instant,
}

/// How often the whole pool is swept of expired and closed connections.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

impl Pool {
    fn sweep_if_due(&mut self, now: Instant) {
        if now.duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.hosts.retain(|_, list| {
            list.retain(|i| {
                now.duration_since(i.since) < IDLE_FOR && !i.stream.readable_while_idle()
            });
            !list.is_empty()
        });
    }
}

/// Shared by every webhook job of a worker process.
pub struct Client {
    cfg: HttpConfig,
    tls: TlsConnector,
    idle: Mutex<Pool>,
    user_agent: String,
}

impl Client {
    /// With the platform's certificate verifier (as the shared reqwest client).
    pub fn new(cfg: HttpConfig) -> Result<Client, String> {
        use rustls_platform_verifier::ConfigVerifierExt;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| format!("TLS setup: {e}"))?;
        Ok(Self::with_tls(cfg, tls))
    }

    /// With a TLS configuration of the caller's (tests trust their own certificate).
    pub fn with_tls(cfg: HttpConfig, mut tls: rustls::ClientConfig) -> Client {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            cfg,
            tls: TlsConnector::from(Arc::new(tls)),
            idle: Mutex::new(Pool {
                hosts: HashMap::new(),
                swept: Instant::now(),
            }),
            user_agent: concat!("aftercall/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// POSTs `body` with `headers` (validated here) to `url` within the request timeout,
    /// and reads at most `limit` bytes of the answer's body.
    /// Takes the body by value: it is dropped once copied into the request, and the
    /// request once written, so a slow answer is not awaited holding either.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Response, Error> {
        self.request("POST", url, headers, body, limit).await
    }

    /// [`Client::post`] with another method (`PUT`, `PATCH`).
    pub async fn request(
        &self,
        method: &str,
        url: &reqwest::Url,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Response, Error> {
        let key = key(url)?;
        let request = encode(method, url, &key, headers, &body, &self.user_agent)?;
        drop(body);
        match tokio::time::timeout(self.cfg.timeout, self.send(&key, request, limit)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(
                "timeout: no answer within the request timeout",
            )),
        }
    }

    async fn send(&self, key: &Key, request: Vec<u8>, limit: usize) -> Result<Response, Error> {
        let mut stream = match self.take_idle(key) {
            Some(s) => s,
            None => self.connect(key).await?,
        };
        // Once the request is written, a failure is this attempt's: it is not sent again
        // here, since the receiver may have acted on it (the queue retries, counted).
        let (resp, reusable) = exchange(&mut stream, request, limit).await?;
        self.put_idle(key, stream, reusable);
        Ok(resp)
    }

    fn take_idle(&self, key: &Key) -> Option<Stream> {
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        pool.sweep_if_due(Instant::now());
        let list = pool.hosts.get_mut(key)?;
        let mut found = None;
        while let Some(i) = list.pop_back() {
            // A connection the server closed while idle shows as readable (EOF or a
            // last word such as a 408): not reused.
            if i.since.elapsed() < IDLE_FOR && !i.stream.readable_while_idle() {
                found = Some(i.stream);
                break;
            }
        }
        if list.is_empty() {
            pool.hosts.remove(key);
        }
        found
    }

    fn put_idle(&self, key: &Key, stream: Stream, reusable: bool) {
        if !reusable || self.cfg.pool_per_host == 0 {
            return;
        }
        let now = Instant::now();
        let mut pool = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        pool.sweep_if_due(now);
        let list = pool.hosts.entry(key.clone()).or_default();
        while list
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= IDLE_FOR)
        {
            list.pop_front();
        }
        if list.len() < self.cfg.pool_per_host {
            list.push_back(Idle { stream, since: now });
        }
    }

    /// Resolves, checks every address against the guard, connects to the first allowed
    /// one that answers, and adds TLS for `https`.
    async fn connect(&self, key: &Key) -> Result<Stream, Error> {
        let addrs: Vec<SocketAddr> = match key.host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, key.port)],
            Err(_) => tokio::net::lookup_host((key.host.as_str(), key.port))
                .await
                .map_err(|e| Error::Connect(format!("connection failed: dns error: {e}")))?
                .collect(),
        };
        let allowed = allowed_addrs(&key.host, addrs, &self.cfg.allow).map_err(Error::Blocked)?;
        if allowed.is_empty() {
            return Err(Error::Connect(format!(
                "connection failed: {} has no address",
                key.host
            )));
        }
        // Each allowed address in turn; the last failure is the one reported.
        let mut failed = None;
        let mut tcp = None;
        for a in allowed {
            match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => failed = Some(Error::Connect(format!("connection failed: {e}"))),
                Err(_) => {
                    failed = Some(Error::Timeout(
                        "timeout: connecting took longer than the connect timeout",
                    ))
                }
            }
        }
        let Some(tcp) = tcp else {
            return Err(failed.expect("at least one address was tried"));
        };
        let _ = tcp.set_nodelay(true);
        if !key.https {
            return Ok(Stream::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(key.host.trim_matches(['[', ']']))
            .map_err(|e| Error::Invalid(format!("request error: bad TLS server name: {e}")))?
            .to_owned();
        let tls = tokio::time::timeout(self.cfg.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                Error::Timeout("timeout: the TLS handshake took longer than the connect timeout")
            })?
            .map_err(|e| Error::Connect(format!("connection failed: TLS: {e}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

pub(super) fn key(url: &reqwest::Url) -> Result<Key, Error> {
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        s => {
            return Err(Error::Invalid(format!(
                "request error: unsupported scheme {s}"
            )));
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| Error::Invalid("request error: URL has no host".into()))?
        .to_string();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Error::Invalid("request error: URL has no port".into()))?;
    Ok(Key { https, host, port })
}

fn transport(e: io::Error) -> Error {
    Error::Transport(format!("transport error: {e}"))
}

/// Writes the request, reads the answer. Returns it and whether the connection can carry
/// another request.
async fn exchange(
    stream: &mut Stream,
    request: Vec<u8>,
    limit: usize,
) -> Result<(Response, bool), Error> {
    stream.write_all(&request).await.map_err(transport)?;
    stream.flush().await.map_err(transport)?;
    drop(request);
    // The read buffer is taken when the answer starts to arrive, not while waiting.
    stream.ready_to_read().await.map_err(transport)?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let parsed = parse_head(&buf)
            .map_err(|e| Error::Transport(format!("transport error: invalid answer: {e}")))?;
        let Some(head) = parsed else {
            if buf.len() >= MAX_HEAD {
                return Err(Error::Transport(
                    "transport error: answer head too large".into(),
                ));
            }
            if read_more(stream, &mut buf).await.map_err(transport)? == 0 {
                return Err(Error::Transport(
                    "transport error: connection closed before an answer".into(),
                ));
            }
            continue;
        };
        buf.drain(..head.len);
        // 1xx informational answers precede the real one.
        if (100..200).contains(&head.status) {
            if head.status == 101 {
                return Err(Error::Transport(
                    "transport error: unexpected protocol switch".into(),
                ));
            }
            continue;
        }
        let mut body = Body {
            stream,
            buf,
            kept: Vec::new(),
            limit,
            seen: 0,
        };
        let complete = if head.status == 204 || head.status == 304 {
            body.buf.is_empty()
        } else if head.chunked {
            body.chunked().await.map_err(transport)?
        } else if let Some(n) = head.content_length {
            body.sized(n).await.map_err(transport)?
        } else {
            body.until_close().await.map_err(transport)?;
            false
        };
        let reusable = complete && !head.close && body.buf.is_empty();
        return Ok((
            Response {
                status: head.status,
                retry_after: head.retry_after,
                no_retry: head.no_retry,
                body: String::from_utf8_lossy(&body.kept).into_owned(),
            },
            reusable,
        ));
    }
}

impl Stream {
    /// True when an idle connection has something to read: the server closed it (EOF or
    /// reset), or said something unasked. Either way it cannot carry a request.
    fn readable_while_idle(&self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        tcp.poll_peek(&mut cx, &mut buf).is_ready()
    }

    /// Waits until a plain connection has something to read (answer, EOF or error). A TLS
    /// one returns at once: its session may hold decrypted bytes already.
    async fn ready_to_read(&self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            Stream::Tls(_) => Ok(()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The periodic sweep drops connections their server closed, then expired ones, and
    /// forgets hosts left with none.
    #[tokio::test]
    async fn the_pool_sweep_drops_closed_and_expired_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = TcpStream::connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        let closed = TcpStream::connect(addr).await.unwrap();
        drop(listener.accept().await.unwrap().0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        let k = Key {
            https: false,
            host: "127.0.0.1".into(),
            port: addr.port(),
        };
        let mut pool = Pool {
            hosts: HashMap::new(),
            swept: now,
        };
        pool.hosts.insert(
            k.clone(),
            VecDeque::from([
                Idle {
                    stream: Stream::Plain(open),
                    since: now,
                },
                Idle {
                    stream: Stream::Plain(closed),
                    since: now,
                },
            ]),
        );
        pool.sweep_if_due(now + Duration::from_secs(1));
        assert_eq!(pool.hosts[&k].len(), 2, "not due yet");
        pool.sweep_if_due(now + SWEEP_EVERY);
        assert_eq!(pool.hosts[&k].len(), 1, "the closed one is gone");
        pool.sweep_if_due(now + IDLE_FOR + SWEEP_EVERY);
        assert!(pool.hosts.is_empty(), "expired, and the host forgotten");
    }
}
