//! The benchmark's webhook receiver, run as its own process (`xtask receiver`) so its CPU
//! is measured apart from the worker's: answers 200 at once or after a fixed delay,
//! counts arrivals, and keeps each event's enqueue-to-arrival latency (the event carries
//! its send time as `metadata.sent_us`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::probe::now_us;

struct State {
    delay: Duration,
    /// Answer hooks with 503 (a destination down): `POST /_down?on` / `?off`.
    down: AtomicBool,
    count: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    /// (sent_us, latency_us) per arrival whose event carried `sent_us`.
    latencies: Mutex<Vec<(u64, u64)>>,
}

/// Serves until killed. Prints `listening <port>` once ready.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let mut delay_ms = 0u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--delay-ms" => delay_ms = it.next().map(|v| v.parse()).transpose()?.unwrap_or(0),
            other => anyhow::bail!("receiver: unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(Duration::from_millis(delay_ms)))
}

async fn serve(delay: Duration) -> anyhow::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    // A deep accept queue: the slow-receiver scenario opens 10,000 connections at once.
    let listener = socket.listen(16_384)?;
    println!("listening {}", listener.local_addr()?.port());
    let st: &'static State = Box::leak(Box::new(State {
        delay,
        down: AtomicBool::new(false),
        count: AtomicU64::new(0),
        first_us: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        in_flight: AtomicI64::new(0),
        max_in_flight: AtomicI64::new(0),
        latencies: Mutex::new(Vec::with_capacity(1 << 20)),
    }));
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(connection(st, sock));
    }
}

/// One connection: HTTP/1.1 requests with a `content-length` body (what the worker
/// sends), answered in turn, kept alive unless the client is HTTP/1.0 or says `close`.
/// A plain loop over `httparse` rather than a framework: this process shares the
/// benchmark's two cores with the worker and Redis, so its cost per request is kept low.
async fn connection(st: &'static State, mut sock: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let (method, target, head_len, body_len, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let mut len = 0usize;
                    let mut close = req.version == Some(0);
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    let method = req.method.unwrap_or("").to_string();
                    let target = req.path.unwrap_or("/").to_string();
                    break (method, target, n, len, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => {
                    let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        while buf.len() < head_len + body_len {
            buf.reserve(head_len + body_len - buf.len());
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = &buf[head_len..head_len + body_len];
        let (status, answer) = handle(st, &method, &target, body).await;
        buf.drain(..head_len + body_len);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n{}\r\n",
            answer.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(answer.as_bytes());
        if sock.write_all(&out).await.is_err() || close {
            return;
        }
    }
}

async fn handle(
    st: &'static State,
    method: &str,
    target: &str,
    body: &[u8],
) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match (method, path) {
        ("GET", "/_stats") => {
            let v = serde_json::json!({
                "count": st.count.load(Ordering::SeqCst),
                "first_us": st.first_us.load(Ordering::SeqCst),
                "last_us": st.last_us.load(Ordering::SeqCst),
                "in_flight": st.in_flight.load(Ordering::SeqCst),
                "max_in_flight": st.max_in_flight.load(Ordering::SeqCst),
            });
            ("200 OK", v.to_string())
        }
        ("POST", "/_reset") => {
            st.count.store(0, Ordering::SeqCst);
            st.first_us.store(0, Ordering::SeqCst);
            st.last_us.store(0, Ordering::SeqCst);
            st.max_in_flight.store(0, Ordering::SeqCst);
            st.latencies.lock().expect("lock").clear();
            ("200 OK", String::new())
        }
        ("GET", "/_latency") => {
            let since: u64 = query
                .strip_prefix("since_us=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut lat: Vec<u64> = st
                .latencies
                .lock()
                .expect("lock")
                .iter()
                .filter(|(sent, _)| *sent >= since)
                .map(|(_, l)| *l)
                .collect();
            lat.sort_unstable();
            let pct = |p: f64| -> f64 {
                if lat.is_empty() {
                    return 0.0;
                }
                let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
                lat[i] as f64 / 1000.0
            };
            let v = serde_json::json!({
                "n": lat.len(),
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
                "p999_ms": pct(0.999),
                "max_ms": pct(1.0),
            });
            ("200 OK", v.to_string())
        }
        ("POST", "/_down") => {
            st.down.store(query == "on", Ordering::SeqCst);
            ("200 OK", String::new())
        }
        _ if st.down.load(Ordering::SeqCst) => {
            st.count.fetch_add(1, Ordering::SeqCst);
            ("503 Service Unavailable", String::new())
        }
        _ => {
            hook(st, body).await;
            ("200 OK", String::new())
        }
    }
}

async fn hook(st: &'static State, body: &[u8]) {
    let now = now_us();
    let _ = st
        .first_us
        .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    st.last_us.fetch_max(now, Ordering::SeqCst);
    if let Some(sent) = sent_us(body) {
        st.latencies
            .lock()
            .expect("lock")
            .push((sent, now.saturating_sub(sent)));
    }
    st.count.fetch_add(1, Ordering::SeqCst);
    if !st.delay.is_zero() {
        let n = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(n, Ordering::SeqCst);
        // Decremented on drop too: a client that gives up cancels this future.
        let _guard = InFlight(st);
        tokio::time::sleep(st.delay).await;
    }
}

struct InFlight(&'static State);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `"sent_us":<digits>` from the body, without parsing the whole payload.
fn sent_us(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
