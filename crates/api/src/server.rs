//! The API's HTTP server: hyper's HTTP/1.1 connection driver under our own accept loop,
//! so that hostile or broken clients cost bounded resources (axum's `serve` sets none of
//! these):
//! - a client must send its request head within `header_timeout`, which is also how long
//!   an idle keep-alive connection stays open (hyper starts that timer whenever it waits
//!   for a head);
//! - a head is at most `max_header_bytes` (431 beyond), and that also caps the buffer a
//!   connection holds, so a stalled client holds kilobytes, not hyper's default 400 KB;
//! - a body must arrive within `body_timeout` of its head;
//! - at most `max_connections` connections are open: further clients wait in the
//!   kernel's backlog, and file descriptors stay free for Redis and outbound delivery;
//! - an `accept` that fails for want of file descriptors (or memory) is retried after a
//!   pause, so running out degrades service instead of ending it.
//!
//! The router is read from a `watch` channel for each request, so a process can answer
//! `/healthz` (and a not-ready `/readyz`) before Redis is reachable and switch to the
//! whole API once it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Bounds on what one client may hold (`AFTERCALL_API_*`; see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    /// To send a request head, and to keep an idle connection.
    pub header_timeout: Duration,
    /// To send a body, from the end of its head.
    pub body_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
        }
    }
}

/// hyper refuses a smaller read buffer.
const MIN_BUFFER: usize = 8 * 1024;

/// Serves `routes`' current router on `listener` until `shutdown` resolves, then stops
/// accepting and lets open requests finish (the caller bounds how long).
pub async fn serve_routes(
    listener: tokio::net::TcpListener,
    limits: ServerLimits,
    routes: watch::Receiver<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUFFER));
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut out_of_fds = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE, ENFILE, ENOMEM: wait for connections to close, then go on.
                if out_of_fds.ready() {
                    tracing::error!(error = %e, "the API cannot accept connections (out of file descriptors or memory); retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let router = routes.borrow().clone();
            let req = req.map(|b| Body::new(DeadlineBody::new(b, body_timeout)));
            router.oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Errors here are the client's (reset, timed out, bad request line): not ours
            // to log at a level anyone reads.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Lets a repeated error be logged once every 10 s.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The request body has not arrived in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

/// A request body that fails once `timeout` has passed since its head arrived. The
/// timer is only set when a body is actually waited for.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            sleep: None,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(this.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
