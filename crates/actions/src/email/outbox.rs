//! The outbox: where e-mail and SMS go when no SMTP server or SMS provider is configured,
//! one file per job named after the job id, so a retried job never writes a second one.
//! (Shared by `sms` until it moves to the crate root.)

use std::path::{Path, PathBuf};

/// What [`write_once`] did.
#[derive(Debug)]
pub(crate) struct Written {
    pub path: PathBuf,
    /// The file was already there from an earlier attempt; nothing was written.
    pub existed: bool,
}

/// A job id as a safe file stem: anything but ASCII letters, digits, `-`, `_` and `.`
/// becomes `_`, and a leading dot is escaped so the file is neither hidden nor `..`.
pub(crate) fn file_stem(job_id: &str) -> String {
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
pub(crate) async fn write_once(
    dir: &Path,
    job_id: &str,
    ext: &str,
    bytes: &[u8],
) -> std::io::Result<Written> {
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
