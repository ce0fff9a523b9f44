//! The worker's log output: stderr, written a block at a time rather than a `write(2)`
//! per line.
//!
//! A busy worker logs a line or two per job, and a system call per line cost about as
//! much CPU as formatting the line (BENCHMARKS.md). Lines gather in one buffer that is
//! written out, in order:
//! - whenever a runtime thread is about to go idle, so a quiet worker's lines show at once;
//! - when [`MAX_BYTES`] are waiting, or when a line arrives and the oldest waiting one is
//!   older than [`MAX_AGE`];
//! - every [`TICK`], for a thread that stays busy without logging;
//! - at exit, and before a panic message.
//!
//! So a line waits at most about [`TICK`], and a `kill -9` loses at most that much.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Written out once this much is waiting.
const MAX_BYTES: usize = 32 * 1024;
/// Written out when a line arrives and the oldest waiting line is older than this.
const MAX_AGE: Duration = Duration::from_millis(20);
/// How often [`flush_every_tick`] writes out what is waiting.
pub const TICK: Duration = Duration::from_millis(100);

struct Pending {
    bytes: Vec<u8>,
    since: Option<Instant>,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    bytes: Vec::new(),
    since: None,
});

fn pending() -> MutexGuard<'static, Pending> {
    // A panic while holding the lock leaves whole lines behind: keep using them.
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pending {
    /// Adds a line; writes everything out if the buffer is full or has waited too long.
    fn push(&mut self, line: &[u8], out: impl Write) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.bytes.extend_from_slice(line);
        if self.bytes.len() >= MAX_BYTES || self.since.is_some_and(|t| t.elapsed() >= MAX_AGE) {
            self.write_out(out);
        }
    }

    fn write_out(&mut self, mut out: impl Write) {
        if !self.bytes.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = out.write_all(&self.bytes);
            self.bytes.clear();
            if self.bytes.capacity() > 4 * MAX_BYTES {
                self.bytes.shrink_to(MAX_BYTES);
            }
        }
        self.since = None;
    }
}

/// Writes out every waiting line.
pub fn flush() {
    pending().write_out(std::io::stderr().lock());
}

/// Flushes every [`TICK`] until the runtime stops.
pub async fn flush_every_tick() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush();
    }
}

/// Flushes when dropped: at the end of `main`, before an error is printed.
pub struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush();
    }
}

/// The writer `tracing_subscriber` formats each line into (one `write` per line).
#[derive(Clone, Copy)]
pub struct Buffered;

impl Write for Buffered {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        pending().push(line, std::io::stderr().lock());
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffered {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the subscriber (`RUST_LOG`, default `info`; `format` text or json) and a
/// panic hook that writes out waiting lines before the panic message.
pub fn init(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector gets plain text (and the
    // ANSI styling was ~6 % of the worker's instructions per job in the pipeline profile).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Buffered);
    if format == "json" {
        b.json().flatten_event(true).with_current_span(true).init();
    } else {
        b.init();
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_a_full_buffer_an_old_line_or_a_flush_and_keep_their_order() {
        let mut p = Pending {
            bytes: Vec::new(),
            since: None,
        };
        let mut out = Vec::new();
        p.push(b"one\n", &mut out);
        p.push(b"two\n", &mut out);
        assert!(out.is_empty(), "waiting");
        p.write_out(&mut out);
        assert_eq!(out, b"one\ntwo\n");
        assert!(p.bytes.is_empty() && p.since.is_none());
        // A full buffer is written out as the line that fills it arrives.
        out.clear();
        p.push(b"three\n", &mut out);
        p.push(&vec![b'x'; MAX_BYTES], &mut out);
        assert_eq!(out.len(), MAX_BYTES + 6);
        assert!(out.starts_with(b"three\nxx"));
        // So is everything, when a line finds an old one waiting.
        out.clear();
        p.push(b"old\n", &mut out);
        std::thread::sleep(MAX_AGE + Duration::from_millis(5));
        assert!(out.is_empty());
        p.push(b"new\n", &mut out);
        assert_eq!(out, b"old\nnew\n");
    }
}
