//! The outbox: where e-mail and SMS go when no SMTP server or SMS provider is configured,
//! one file per job named after the job id, so a retried job never writes a second one.

use std::path::{Path, PathBuf};

use aftercall_core::Outcome;

/// Writes `<dir>/<job_id>.<ext>` unless an earlier attempt did, as an action's outcome:
/// delivered (`for_whom`, when given, ends the detail), or retried if the write failed.
pub(crate) async fn deliver(
    dir: &Path,
    job_id: &str,
    ext: &str,
    bytes: &[u8],
    for_whom: Option<&str>,
) -> Outcome {
    match write_once(dir, job_id, ext, bytes).await {
        Ok(w) => {
            tracing::debug!(path = %w.path.display(), existed = w.existed, "written to outbox");
            let verb = if w.existed {
                "already in"
            } else {
                "written to"
            };
            let whom = for_whom.map(|to| format!(" for {to}")).unwrap_or_default();
            Outcome::Delivered {
                status: None,
                detail: Some(format!("{verb} outbox {}{whom}", w.path.display())),
            }
        }
        Err(e) => Outcome::retry(format!("writing to outbox {}: {e}", dir.display())),
    }
}

/// Removes the outbox files of `job_ids` from `dir` and its folders (`email/`, `sms/`)
/// (an erasure: `aftercall calls erase`, `DELETE /calls/{id}`), with any temporary file
/// a write left. Returns how many went; a missing folder has none.
pub fn erase(dir: &Path, job_ids: &[String]) -> std::io::Result<u64> {
    let stems: Vec<String> = job_ids
        .iter()
        .map(|id| format!("{}.", file_stem(id)))
        .collect();
    erase_in(dir, &stems, 1)
}

fn erase_in(dir: &Path, stems: &[String], depth: u32) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if depth > 0 {
                n += erase_in(&entry.path(), stems, depth - 1)?;
            }
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let bare = name.strip_prefix('.').unwrap_or(&name);
        if stems.iter().any(|s| bare.starts_with(s.as_str())) {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// The outbox folder as the worker finds it: `AFTERCALL_OUTBOX`, else `.aftercall/outbox`.
pub fn dir(s: &aftercall_core::settings::Settings) -> PathBuf {
    s.string("AFTERCALL_OUTBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::ActionsConfig::default().outbox_dir)
}

/// What [`write_once`] did.
#[derive(Debug)]
struct Written {
    pub path: PathBuf,
    /// The file was already there from an earlier attempt; nothing was written.
    pub existed: bool,
}

/// A job id with anything but ASCII letters, digits, `-`, `_` and `.` replaced by
/// `other`: safe in a file name and in an e-mail's Message-ID.
pub(crate) fn plain_job_id(job_id: &str, other: char) -> String {
    job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                other
            }
        })
        .collect()
}

/// A job id as a safe file stem: [`plain_job_id`] with `_`, and a leading dot escaped
/// so the file is neither hidden nor `..`.
fn file_stem(job_id: &str) -> String {
    let mut s = plain_job_id(job_id, '_');
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// Writes `<dir>/<job_id>.<ext>` unless it exists. The content goes to a temporary file
/// first and is renamed into place, so a reader never sees half a message.
async fn write_once(dir: &Path, job_id: &str, ext: &str, bytes: &[u8]) -> std::io::Result<Written> {
    let stem = file_stem(job_id);
    let path = dir.join(format!("{stem}.{ext}"));
    if tokio::fs::try_exists(&path).await? {
        return Ok(Written {
            path,
            existed: true,
        });
    }
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{stem}.{ext}.{}.tmp", std::process::id()));
    tokio::fs::write(&tmp, bytes).await?;
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(Written {
        path,
        existed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erase_takes_the_jobs_files_only() {
        let dir = std::env::temp_dir().join(format!("aftercall-outbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(dir.join("sms")).unwrap();
        for f in [
            "job_a.1.eml",
            ".job_a.1.eml.7.tmp",
            "job_a.10.eml",
            "job_b.1.txt",
            "sms/job_a.2.txt",
        ] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let n = erase(&dir, &["job_a.1".into(), "job_a.2".into()]).unwrap();
        assert_eq!(n, 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["job_a.10.eml", "job_b.1.txt", "sms"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            erase(&dir, &["job_a.1".into()]).unwrap(),
            0,
            "no folder, nothing"
        );
    }

    #[test]
    fn stems_are_safe() {
        for (id, want) in [
            ("job_01ab.0", "job_01ab.0"),
            ("../etc/passwd", "_.._etc_passwd"),
            ("a/b c", "a_b_c"),
            ("", "_"),
            (".x", "_.x"),
        ] {
            assert_eq!(file_stem(id), want);
        }
    }
}
