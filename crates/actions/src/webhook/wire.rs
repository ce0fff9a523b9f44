//! The HTTP/1.1 wire format of webhook deliveries: the request written as one buffer
//! (configured headers checked as `http` checks them, never the framing ones), the
//! answer's head parsed by `httparse`, and its body read by content length, chunked
//! coding or connection close, keeping the first bytes.

use std::io;

use reqwest::header::{HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::client::{Error, Key};

/// The largest response head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Body bytes read past the kept snippet so the connection can be reused; a longer body
/// closes the connection instead.
const MAX_DRAIN: usize = 64 * 1024;
/// First read size: a typical answer's head and short body fit.
const FIRST_READ: usize = 1024;

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
pub(super) fn encode(
    method: &str,
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
    let _ = write!(out, "{method} {path} HTTP/1.1\r\n");
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

/// Reads what is available into `buf`'s spare room (growing it when full).
pub(super) async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(buf.capacity().max(FIRST_READ));
    }
    stream.read_buf(buf).await
}

/// The header a receiver answers with to stop a message's retries (docs/actions.md).
pub const NO_RETRY: &str = "aftercall-no-retry";

pub(super) struct Head {
    pub len: usize,
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub close: bool,
    pub retry_after: Option<String>,
    /// `Aftercall-No-Retry` present with any value but `0` or `false`.
    pub no_retry: bool,
}

/// The answer's head, once all of it is in `buf`.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
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
        no_retry: false,
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
        } else if h.name.eq_ignore_ascii_case(NO_RETRY) {
            let v = value();
            head.no_retry = !(v == "0" || v.eq_ignore_ascii_case("false"));
        }
    }
    if head.chunked {
        head.content_length = None;
    }
    Ok(Some(head))
}

/// Reads an answer's body: keeps the first `limit` bytes, reads up to [`MAX_DRAIN`].
pub(super) struct Body<'a, S> {
    pub stream: &'a mut S,
    /// Received, not yet consumed.
    pub buf: Vec<u8>,
    pub kept: Vec<u8>,
    pub limit: usize,
    /// Body bytes consumed so far.
    pub seen: usize,
}

impl<S: AsyncRead + Unpin> Body<'_, S> {
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
    pub async fn sized(&mut self, n: usize) -> io::Result<bool> {
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
    pub async fn until_close(&mut self) -> io::Result<()> {
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
    pub async fn chunked(&mut self) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::client::key;

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
        assert!(!h.no_retry);
        for (value, stop) in [("1", true), ("true", true), ("0", false), ("False", false)] {
            let raw = format!("HTTP/1.1 503 Busy\r\nAftercall-No-Retry: {value}\r\n\r\n");
            let h = parse_head(raw.as_bytes()).unwrap().unwrap();
            assert_eq!(h.no_retry, stop, "{value}");
        }
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

    #[test]
    fn configured_headers_cannot_break_the_framing() {
        let url = reqwest::Url::parse("http://example.com:8080/hook?x=1").unwrap();
        let k = key(&url).unwrap();
        let req = encode("POST", &url, &k, &[("x-a", "1")], b"{}", "ua").unwrap();
        let patch = encode("PATCH", &url, &k, &[], b"{}", "ua").unwrap();
        assert!(patch.starts_with(b"PATCH /hook?x=1 HTTP/1.1\r\n"));
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
                matches!(
                    encode("POST", &url, &k, &[bad], b"", "ua"),
                    Err(Error::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        let own_host = encode("POST", &url, &k, &[("Host", "other")], b"", "ua").unwrap();
        assert_eq!(
            String::from_utf8(own_host).unwrap().matches("ost:").count(),
            1
        );
    }
}
