//! Reading events for `aftercall enqueue`: one object, an array, or JSON Lines, each
//! validated before anything is enqueued.

use std::io::Read;

use aftercall_core::CallEvent;
use aftercall_queue::{Enqueued, Queue};
use anyhow::Context;

pub struct Parsed {
    pub events: Vec<CallEvent>,
    /// `line N: field: problem`, one per bad event.
    pub invalid: Vec<String>,
}

pub fn read_events(file: &str, max_bytes: usize) -> anyhow::Result<Parsed> {
    let mut raw = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_context(|| format!("reading {file}"))?;
    }
    Ok(parse_events(&raw, max_bytes))
}

pub fn parse_events(raw: &[u8], max_bytes: usize) -> Parsed {
    let mut events = Vec::new();
    let mut invalid = Vec::new();
    let trimmed = raw.trim_ascii();
    // A single document (object or array) that spans lines is read whole.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(trimmed) {
        match v {
            serde_json::Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    match CallEvent::from_value(item, max_bytes) {
                        Ok(e) => events.push(e),
                        Err(e) => invalid.push(format!("item {}: {e}", i + 1)),
                    }
                }
            }
            other => match CallEvent::from_value(other, max_bytes) {
                Ok(e) => events.push(e),
                Err(e) => invalid.push(format!("line 1: {e}")),
            },
        }
        return Parsed { events, invalid };
    }
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        match CallEvent::parse(line, max_bytes) {
            Ok(e) => events.push(e),
            Err(e) => invalid.push(format!("line {}: {e}", i + 1)),
        }
    }
    if events.is_empty() && invalid.is_empty() {
        invalid.push("input: no events".into());
    }
    Parsed { events, invalid }
}

/// Enqueues in pipelined chunks, with a progress bar on a terminal for big inputs.
pub async fn enqueue_all(
    queue: &Queue,
    events: Vec<CallEvent>,
    tty: bool,
) -> anyhow::Result<Vec<Enqueued>> {
    const CHUNK: usize = 5_000;
    let total = events.len();
    let bar = (tty && total > CHUNK).then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} events {per_sec} eta {eta}",
            )
            .expect("template"),
        );
        b
    });
    let mut out = Vec::with_capacity(total);
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<CallEvent> = it.by_ref().take(CHUNK).collect();
        let n = chunk.len() as u64;
        out.extend(queue.enqueue(chunk).await?);
        if let Some(b) = &bar {
            b.inc(n);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reports_each_bad_line() {
        let raw = b"{\"call_id\":\"a\",\"agent_id\":\"x\"}\n\n{\"call_id\":\"b\"}\n{\"call_id\":\"c\",\"agent_id\":\"x\",\"zip\":1}\n";
        let p = parse_events(raw, 1 << 20);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.invalid.len(), 2);
        assert!(
            p.invalid[0].starts_with("line 3: ") && p.invalid[0].contains("agent_id"),
            "{:?}",
            p.invalid
        );
        assert!(
            p.invalid[1].starts_with("line 4: zip: unknown field"),
            "{:?}",
            p.invalid
        );
    }

    #[test]
    fn single_pretty_object_and_array() {
        let p = parse_events(
            b"{\n \"call_id\": \"a\",\n \"agent_id\": \"x\"\n}\n",
            1 << 20,
        );
        assert_eq!((p.events.len(), p.invalid.len()), (1, 0));
        let p = parse_events(
            br#"[{"call_id":"a","agent_id":"x"},{"call_id":"b"}]"#,
            1 << 20,
        );
        assert_eq!((p.events.len(), p.invalid.len()), (1, 1));
    }
}
