//! Reading events for `aftercall enqueue`: one object, an array, or JSON Lines, each
//! validated before anything is enqueued.

use std::io::Read;

use aftercall_core::ValidEvent;
use aftercall_queue::{Enqueued, Queue, QueueError};
use anyhow::Context;

pub struct Parsed<'a> {
    /// The valid events, kept as their bytes in the input: they are stored as they are.
    pub events: Vec<ValidEvent<'a>>,
    /// `line N: field: problem`, one per bad event.
    pub invalid: Vec<String>,
}

/// The whole input: a file, or standard input for `-`.
pub fn read_input(file: &str) -> anyhow::Result<Vec<u8>> {
    if file == "-" {
        let mut raw = Vec::new();
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("reading standard input")?;
        Ok(raw)
    } else {
        read_file(file).with_context(|| format!("reading {file}"))
    }
}

/// A big file is read by two threads, each into its half of one buffer: copying it out
/// of the page cache into fresh pages was a tenth of a bulk enqueue's time, all of it
/// before the first event could be read.
#[cfg(unix)]
fn read_file(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    if len < 8 << 20 {
        let mut raw = Vec::with_capacity(len);
        file.read_to_end(&mut raw)?;
        return Ok(raw);
    }
    let mut raw = vec![0; len];
    let (head, tail) = raw.split_at_mut(len / 2);
    let at = head.len() as u64;
    std::thread::scope(|s| {
        let tail = s.spawn(|| file.read_exact_at(tail, at));
        file.read_exact_at(head, 0)?;
        tail.join().expect("a reading thread panicked")
    })?;
    // Whatever was appended meanwhile, as a plain read would have it.
    file.seek(SeekFrom::Start(len as u64))?;
    file.read_to_end(&mut raw)?;
    Ok(raw)
}

#[cfg(not(unix))]
fn read_file(path: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// One object, an array, or JSON Lines, through the batch reader the HTTP API uses.
pub fn parse_events(raw: &[u8], max_bytes: usize) -> Parsed<'_> {
    use aftercall_core::batch::{self, BatchError, Format};
    let one = |msg: String| Parsed {
        events: Vec::new(),
        invalid: vec![msg],
    };
    match batch::parse_valid(raw, Format::detect(raw), max_bytes) {
        Ok(batch::Parsed::One(e)) => Parsed {
            events: vec![*e],
            invalid: Vec::new(),
        },
        Ok(batch::Parsed::Many(events)) => Parsed {
            events,
            invalid: Vec::new(),
        },
        Err(BatchError::Items { errors, valid, .. }) => Parsed {
            events: valid,
            invalid: errors.iter().map(ToString::to_string).collect(),
        },
        Err(BatchError::Malformed {
            message,
            line,
            column,
        }) => one(format!(
            "line {line}: malformed JSON at column {column}: {message}"
        )),
        Err(BatchError::TooLarge { message }) => one(format!("line 1: {message}")),
        Err(BatchError::Invalid { field, message }) if field.is_empty() => {
            one(format!("line 1: {message}"))
        }
        Err(BatchError::Invalid { field, message }) => one(format!("line 1: {field}: {message}")),
        Err(BatchError::Empty) => one("input: no events".into()),
    }
}

/// Enqueues in pipelined chunks, with a progress bar on a terminal for big inputs.
pub async fn enqueue_all(
    queue: &Queue,
    events: &[ValidEvent<'_>],
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
    for chunk in events.chunks(CHUNK) {
        match queue.enqueue_valid(chunk).await {
            Ok(done) => out.extend(done),
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(stopped_part_way(events, out.len(), e));
            }
        }
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

/// The error of an enqueue that stopped after `before` events of earlier chunks: how
/// many were enqueued, which one was the first that was not, and that running the same
/// input again finishes the job (enqueue is idempotent on `call_id`).
fn stopped_part_way(events: &[ValidEvent<'_>], before: usize, e: QueueError) -> anyhow::Error {
    let (in_chunk, cause) = match e {
        QueueError::Incomplete {
            enqueued, source, ..
        } => (enqueued, *source),
        e => (0, e),
    };
    let done = before + in_chunk;
    let why = if cause.is_out_of_memory() {
        format!("Redis is out of memory (maxmemory reached): {cause}")
    } else {
        cause.to_string()
    };
    let first = events
        .get(done)
        .map(|ev| {
            format!(
                "; the first not enqueued is event {} (call_id {})",
                done + 1,
                ev.call_id
            )
        })
        .unwrap_or_default();
    anyhow::anyhow!(
        "{why}. {done} of {} events were enqueued{first}. Run the same input again to \
         finish: the events already enqueued come back as duplicates",
        events.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file big enough to be read in two halves comes back whole and in order (an odd
    /// length, so the halves differ).
    #[test]
    fn a_big_file_is_read_whole_and_in_order() {
        let path = std::env::temp_dir().join(format!("aftercall-read-{}", std::process::id()));
        let content: Vec<u8> = (0..9_000_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let got = read_file(path.to_str().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(got.unwrap() == content);
    }

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
        assert_eq!(p.invalid[0], "item 1: agent_id: missing field `agent_id`");
    }
}
