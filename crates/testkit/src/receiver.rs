//! An HTTP receiver on 127.0.0.1: records every request and answers from a script of
//! replies (then a default), so tests can play 500s, 429s, slow bodies and resets.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::AbortOnDropHandle;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// Abort the connection with a TCP reset instead of answering.
    pub reset: bool,
    /// Send the body one byte at a time, this long apart (a slow body).
    pub trickle: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
            reset: false,
            trickle: Duration::ZERO,
        }
    }
    /// `200 ok`: what a receiver answers when nothing else is set.
    pub fn ok() -> Reply {
        Reply::status(200).body("ok")
    }
    /// Records the request, then resets the connection (RST) without any response.
    pub fn reset() -> Reply {
        Reply {
            reset: true,
            ..Reply::status(500)
        }
    }
    /// Sends the status and headers at once, then the body a byte per `gap`.
    pub fn trickle(mut self, gap: Duration) -> Reply {
        self.trickle = gap;
        self
    }
    pub fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

/// The running receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
    _server: AbortOnDropHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        Receiver::start_on("127.0.0.1:0").await
    }

    /// Starts one on 127.0.0.1 answering `reply` unless scripted otherwise.
    pub async fn answering(reply: Reply) -> Receiver {
        let rx = Receiver::start().await.expect("receiver starts");
        rx.set_default(reply);
        rx
    }

    /// Listens on `addr` (e.g. `[::1]:0`); `url` is `http://<bound address>`.
    pub async fn start_on(addr: &str) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state: Arc<Mutex<State>> = Default::default();
        let st = state.clone();
        let app = axum::Router::new().fallback(
            move |ConnectInfo(conn): ConnectInfo<Conn>,
                  method: Method,
                  uri: Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let st = st.clone();
                async move { handle(st, conn, method, uri, headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                ResettableListener(listener),
                app.into_make_service_with_connect_info::<Conn>(),
            )
            .await;
        });
        Ok(Receiver {
            url: format!("http://{addr}"),
            state,
            _server: AbortOnDropHandle::new(task),
        })
    }

    /// Queues replies to give, in order, before falling back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("lock").script.extend(replies);
    }

    /// The reply once the script is used up (200 unless set).
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().expect("lock").default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().expect("lock").received.len()
    }

    /// The one request received so far; fails the test unless there is exactly one.
    pub fn single(&self) -> Received {
        let mut got = self.received();
        assert_eq!(got.len(), 1, "{got:?}");
        got.remove(0)
    }

    /// Polls until `n` requests arrived or the deadline passed; returns what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn handle(
    st: Arc<Mutex<State>>,
    conn: Conn,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut s = st.lock().expect("lock");
        s.received.push(Received {
            method: method.to_string(),
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body,
            at: Instant::now(),
        });
        s.script
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or_else(Reply::ok)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.reset {
        // The connection's next read or write fails and it closes with SO_LINGER 0.
        conn.reset.store(true, Ordering::SeqCst);
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if reply.trickle.is_zero() {
        (status, reply.body).into_response()
    } else {
        let gap = reply.trickle;
        let bytes: VecDeque<u8> = reply.body.into_bytes().into();
        let stream = futures::stream::unfold(bytes, move |mut rest| async move {
            let b = rest.pop_front()?;
            tokio::time::sleep(gap).await;
            Some((Ok::<_, std::io::Error>(Bytes::from(vec![b])), rest))
        });
        (status, Body::from_stream(stream)).into_response()
    };
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// The connection a request arrived on, so a reply can reset it.
#[derive(Clone, Debug)]
struct Conn {
    reset: Arc<AtomicBool>,
}

impl Connected<IncomingStream<'_, ResettableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections can be reset from a handler.
struct ResettableListener(TcpListener);

impl axum::serve::Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let reset = Arc::new(AtomicBool::new(false));
                    let conn = Conn {
                        reset: reset.clone(),
                    };
                    return (ResettableStream { stream, reset }, conn);
                }
                // Out of file descriptors or similar: back off briefly, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Conn {
            reset: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Once flagged, fails every read and write; dropping it then sends a TCP RST.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableStream {
    fn check(&self) -> std::io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
