//! The benchmark's webhook receiver, run as its own process (`xtask receiver`) so its CPU
//! is measured apart from the worker's: answers 200 at once or after a fixed delay,
//! counts arrivals, and keeps each event's enqueue-to-arrival latency (the event carries
//! its send time as `metadata.sent_us`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::probe::now_us;

struct State {
    delay: Duration,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
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
        count: AtomicU64::new(0),
        first_us: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        in_flight: AtomicI64::new(0),
        max_in_flight: AtomicI64::new(0),
        latencies: Mutex::new(Vec::with_capacity(1 << 20)),
    }));
    let app =
        axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| async move {
            handle(st, method, uri, body).await
        });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn handle(st: &'static State, method: Method, uri: Uri, body: Bytes) -> Response {
    match (method.as_str(), uri.path()) {
        ("GET", "/_stats") => {
            let v = serde_json::json!({
                "count": st.count.load(Ordering::SeqCst),
                "first_us": st.first_us.load(Ordering::SeqCst),
                "last_us": st.last_us.load(Ordering::SeqCst),
                "in_flight": st.in_flight.load(Ordering::SeqCst),
                "max_in_flight": st.max_in_flight.load(Ordering::SeqCst),
            });
            v.to_string().into_response()
        }
        ("POST", "/_reset") => {
            st.count.store(0, Ordering::SeqCst);
            st.first_us.store(0, Ordering::SeqCst);
            st.last_us.store(0, Ordering::SeqCst);
            st.max_in_flight.store(0, Ordering::SeqCst);
            st.latencies.lock().expect("lock").clear();
            StatusCode::OK.into_response()
        }
        ("GET", "/_latency") => {
            let since: u64 = uri
                .query()
                .and_then(|q| q.strip_prefix("since_us="))
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
            v.to_string().into_response()
        }
        _ => hook(st, body).await,
    }
}

async fn hook(st: &'static State, body: Bytes) -> Response {
    let now = now_us();
    let _ = st
        .first_us
        .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    st.last_us.fetch_max(now, Ordering::SeqCst);
    if let Some(sent) = sent_us(&body) {
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
    StatusCode::OK.into_response()
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
