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

/// What [`write_once`] did.
#[derive(Debug)]
struct Written {
    pub path: PathBuf,
    /// The file was already there from an earlier attempt; nothing was written.
    pub existed: bool,
}

/// A job id as a safe file stem: anything but ASCII letters, digits, `-`, `_` and `.`
/// becomes `_`, and a leading dot is escaped so the file is neither hidden nor `..`.
fn file_stem(job_id: &str) -> String {
    let mut s: String = job_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
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
