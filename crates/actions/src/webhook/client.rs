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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::http::{Blocked, HttpConfig, allowed_addrs};

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes read past the kept snippet so the connection can be reused; a longer body
/// closes the connection instead.
const MAX_DRAIN: usize = 64 * 1024;
/// First read size: a typical answer's head and short body fit.
const FIRST_READ: usize = 1024;
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
    /// At most the snippet limit given to [`Client::post`], as text.
    pub body: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    host: String,
    port: u16,
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
        let key = key(url)?;
        let request = encode(url, &key, headers, &body, &self.user_agent)?;
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

fn key(url: &reqwest::Url) -> Result<Key, Error> {
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

/// Framing is this client's: a configured header may not change it.
const RESERVED: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// The request head and body in one buffer. Header names and values are checked as
/// `http` checks them (no CR, LF or NUL can reach the wire).
fn encode(
    url: &reqwest::Url,
    key: &Key,
    headers: &[(&str, &str)],
    body: &[u8],
    user_agent: &str,
) -> Result<Vec<u8>, Error> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256 + body.len() + headers.len() * 48);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let _ = write!(out, "POST {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        let default = if key.https { 443 } else { 80 };
        if key.port == default {
            let _ = write!(out, "host: {}\r\n", key.host);
        } else {
            let _ = write!(out, "host: {}:{}\r\n", key.host, key.port);
        }
    }
    if !has("user-agent") {
        let _ = write!(out, "user-agent: {user_agent}\r\n");
    }
    // Credentials in the URL (`https://user:pass@host/`) become Basic auth, as reqwest
    // sends them, unless a configured header says otherwise.
    if (!url.username().is_empty() || url.password().is_some()) && !has("authorization") {
        use base64::Engine;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let pair = format!(
            "{}:{}",
            decode(url.username()),
            decode(url.password().unwrap_or(""))
        );
        let _ = write!(
            out,
            "authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(pair)
        );
    }
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Error::Invalid(format!("request error: invalid header name `{k}`")))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(Error::Invalid(format!(
                "request error: header `{k}` is set by aftercall, not by configuration"
            )));
        }
        HeaderValue::from_str(v).map_err(|_| {
            Error::Invalid(format!("request error: invalid value for header `{k}`"))
        })?;
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
    Ok(out)
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
                body: String::from_utf8_lossy(&body.kept).into_owned(),
            },
            reusable,
        ));
    }
}

/// Reads what is available into `buf`'s spare room (growing it when full).
async fn read_more(stream: &mut Stream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(buf.capacity().max(FIRST_READ));
    }
    stream.read_buf(buf).await
}

struct Head {
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    retry_after: Option<String>,
}

/// The answer's head, once all of it is in `buf`.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    // As many as hyper accepts by default.
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut head = Head {
        len,
        status: r.code.unwrap_or(0),
        content_length: None,
        chunked: false,
        // HTTP/1.0 closes unless told otherwise; it is rare enough not to pool.
        close: r.version != Some(1),
        retry_after: None,
    };
    for h in r.headers.iter() {
        let value = || String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value()
                .parse()
                .map_err(|_| "bad content-length".to_string())?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err("conflicting content-length".into());
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !head.chunked {
                // Not chunked-last: the body runs to the end of the connection.
                head.close = true;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                head.close = true;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(value());
        }
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(Some(head))
}

/// Reads an answer's body: keeps the first `limit` bytes, reads up to [`MAX_DRAIN`].
struct Body<'a> {
    stream: &'a mut Stream,
    /// Received, not yet consumed.
    buf: Vec<u8>,
    kept: Vec<u8>,
    limit: usize,
    /// Body bytes consumed so far.
    seen: usize,
}

impl Body<'_> {
    fn consume(&mut self, n: usize) {
        let room = self.limit.saturating_sub(self.kept.len()).min(n);
        self.kept.extend_from_slice(&self.buf[..room]);
        self.buf.drain(..n);
        self.seen += n;
    }

    /// Reads more, or fails on a connection closed early.
    async fn fill(&mut self) -> io::Result<()> {
        if read_more(self.stream, &mut self.buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of the body",
            ));
        }
        Ok(())
    }

    /// A `Content-Length` body; true when all of it was read.
    async fn sized(&mut self, n: usize) -> io::Result<bool> {
        if n > MAX_DRAIN {
            // Keep the snippet, and close rather than read it all.
            while self.kept.len() < self.limit.min(n) {
                if self.buf.is_empty() {
                    self.fill().await?;
                }
                let take = self.buf.len().min(n - self.seen);
                self.consume(take);
            }
            return Ok(false);
        }
        while self.seen < n {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let take = self.buf.len().min(n - self.seen);
            self.consume(take);
        }
        Ok(true)
    }

    /// A body that ends with the connection.
    async fn until_close(&mut self) -> io::Result<()> {
        loop {
            let n = self.buf.len();
            self.consume(n);
            if self.kept.len() >= self.limit || self.seen > MAX_DRAIN {
                return Ok(());
            }
            if read_more(self.stream, &mut self.buf).await? == 0 {
                return Ok(());
            }
        }
    }

    /// A chunked body; true when all of it (and its trailers) was read.
    async fn chunked(&mut self) -> io::Result<bool> {
        let bad =
            |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunked body: {m}"));
        loop {
            // The size line: hex digits, optional extensions, CRLF.
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.buf.len() > 1024 {
                    return Err(bad("size line too long"));
                }
                self.fill().await?;
            };
            let line = std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("size line"))?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16).map_err(|_| bad("size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        self.buf.drain(..i + 2);
                        if i == 0 {
                            return Ok(true);
                        }
                        continue;
                    }
                    if self.buf.len() > MAX_HEAD {
                        return Err(bad("trailers too long"));
                    }
                    self.fill().await?;
                }
            }
            if self.seen.saturating_add(size) > MAX_DRAIN {
                // Too long to read through: keep the snippet and close.
                let mut left = size;
                while self.kept.len() < self.limit && left > 0 {
                    if self.buf.is_empty() {
                        self.fill().await?;
                    }
                    let take = self.buf.len().min(left);
                    self.consume(take);
                    left -= take;
                }
                return Ok(false);
            }
            let mut left = size;
            while left > 0 {
                if self.buf.is_empty() {
                    self.fill().await?;
                }
                let take = self.buf.len().min(left);
                self.consume(take);
                left -= take;
            }
            while self.buf.len() < 2 {
                self.fill().await?;
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(bad("no CRLF after a chunk"));
            }
            self.buf.drain(..2);
        }
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

    #[test]
    fn heads_are_read_for_framing_and_retry_after() {
        let h = parse_head(b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.status, h.content_length, h.chunked, h.close),
            (503, Some(3), false, false)
        );
        assert_eq!(h.retry_after.as_deref(), Some("7"));
        assert_eq!(h.len, 56);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
                .unwrap()
                .is_none()
        );
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.content_length.is_none());
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        let many: String = (0..100).map(|i| format!("x-{i}: v\r\n")).collect();
        let head = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(
            parse_head(head.as_bytes()).unwrap().is_some(),
            "100 headers"
        );
    }

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

    #[test]
    fn configured_headers_cannot_break_the_framing() {
        let url = reqwest::Url::parse("http://example.com:8080/hook?x=1").unwrap();
        let k = key(&url).unwrap();
        let req = encode(&url, &k, &[("x-a", "1")], b"{}", "ua").unwrap();
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("POST /hook?x=1 HTTP/1.1\r\nhost: example.com:8080\r\nuser-agent: ua\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n{}"), "{text}");
        for bad in [
            ("x-a", "1\r\nx-b: 2"),
            ("x a", "1"),
            ("content-length", "5"),
            ("Transfer-Encoding", "chunked"),
            ("x-a", "\0"),
        ] {
            assert!(
                matches!(encode(&url, &k, &[bad], b"", "ua"), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
        let own_host = encode(&url, &k, &[("Host", "other")], b"", "ua").unwrap();
        assert_eq!(
            String::from_utf8(own_host).unwrap().matches("ost:").count(),
            1
        );
    }
}
