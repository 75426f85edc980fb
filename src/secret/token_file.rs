//! Bearer tokens kept in the data directory (`ingest-token`, `admin-token`,
//! `metrics-token`): one way to read, generate and check them, so that each
//! token file is created 0600 from its first byte and each one a user may
//! have loosened is warned about.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The shortest token worth having: 16 characters. The admin and metrics
/// tokens are refused below it; a shorter ingest token is warned about
/// (running setups keep working). Generated tokens are far longer.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Why a token file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("token file {}", path.display())]
pub struct TokenFileError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// The largest token file read: a token is a line of at most a few hundred
/// characters; a larger file is not a token file (and is not read whole).
pub const MAX_TOKEN_FILE: u64 = 4096;

/// A token: `configured` (trimmed) when it is given and not blank, else
/// the one in `path`, else a new one from `generate`, written to `path`
/// (created 0600, synced). Returns the token and the file it is in (`None`
/// for a configured one). A file readable by other users is warned about
/// (see [`warn_if_readable_by_others`]) and still used. A path that is not
/// a regular file (a FIFO, a device, a directory), a file larger than
/// [`MAX_TOKEN_FILE`], one that is not UTF-8, or a token with a control
/// character inside (a second line: it could never be sent in an
/// `Authorization` header) is an error.
pub fn token_in_file(
    path: PathBuf,
    configured: Option<String>,
    generate: impl FnOnce() -> String,
) -> Result<(String, Option<PathBuf>), TokenFileError> {
    if let Some(t) = configured.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_owned(), None));
    }
    let fail = |source: std::io::Error| TokenFileError {
        path: path.clone(),
        source,
    };
    match token_from_file(&path)? {
        Some(t) => {
            warn_if_readable_by_others(&path);
            return Ok((t, Some(path)));
        }
        // A blank file (a crash between create and write): made anew.
        None if path.exists() => std::fs::remove_file(&path).map_err(fail)?,
        None => {}
    }
    let token = generate();
    // Created 0600 from the start: there is no moment where another user
    // could read it.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    Ok((token, Some(path)))
}

/// The token in the file at `path` (trimmed), read and checked as
/// [`token_in_file`] does: `None` when there is no such file or it is
/// blank. For a client that uses the token a daemon generated.
pub fn token_from_file(path: &Path) -> Result<Option<String>, TokenFileError> {
    let fail = |source: std::io::Error| TokenFileError {
        path: path.to_path_buf(),
        source,
    };
    let text = match read_token(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(fail(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the token has a line break or another control character inside; \
             a token file holds one token on one line",
        )));
    }
    Ok(Some(token.to_owned()))
}

/// The text of the token file at `path`, read without blocking on a FIFO
/// and without reading more than [`MAX_TOKEN_FILE`] bytes.
fn read_token(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer, and the daemon would hang at start without a word.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, a FIFO or a device): a token file holds one token",
        ));
    }
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_TOKEN_FILE} bytes: a token file holds one token on one line"),
        )
    };
    if meta.len() > MAX_TOKEN_FILE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::InvalidData,
            "not UTF-8 text: a token file holds one token",
        )
    })
}

/// Says so when a token file may be read by other users (group or other
/// permission bits set: restored from a backup with `cp`, written by hand
/// under umask 022 into a data directory that is 0755): whoever reads the
/// admin token manages the accounts, whoever reads the ingest token can
/// post events. A warning, as for the key file, so that a running setup
/// keeps working while it is fixed. Returns whether it warned.
pub fn warn_if_readable_by_others(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        tracing::warn!(
            "the token file {} has mode {mode:03o}: other users may read it and use the token; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_generated_token_is_kept_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest-token");
        let (t, at) = token_in_file(path.clone(), None, || "fresh".into()).unwrap();
        assert_eq!((t.as_str(), at.as_deref()), ("fresh", Some(path.as_path())));
        assert_eq!(mode(&path), 0o600);
        let (again, _) = token_in_file(path.clone(), None, || "other".into()).unwrap();
        assert_eq!(again, "fresh", "the file's token is used, not a new one");
        assert!(!warn_if_readable_by_others(&path));
    }

    #[test]
    fn a_configured_token_wins_and_a_blank_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-token");
        let (t, at) = token_in_file(path.clone(), Some(" given \n".into()), || "x".into()).unwrap();
        assert_eq!((t.as_str(), at), ("given", None));
        assert!(!path.exists(), "nothing written for a configured token");
        let (t, _) = token_in_file(path.clone(), Some("  ".into()), || "gen".into()).unwrap();
        assert_eq!(t, "gen");
    }

    #[test]
    fn a_blank_file_is_replaced_and_a_loose_one_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics-token");
        std::fs::write(&path, "\n").unwrap();
        let (t, _) = token_in_file(path.clone(), None, || "new".into()).unwrap();
        assert_eq!(t, "new");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(warn_if_readable_by_others(&path));
    }

    #[test]
    fn fifos_directories_huge_files_and_two_line_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("admin-token");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = token_in_file(fifo.clone(), None, || "x".into()).unwrap_err();
        assert!(e.source.to_string().contains("not a regular file"), "{e:?}");
        let sub = dir.path().join("ingest-token");
        std::fs::create_dir(&sub).unwrap();
        let e = token_in_file(sub, None, || "x".into()).unwrap_err();
        assert!(e.source.to_string().contains("not a regular file"), "{e:?}");
        let huge = dir.path().join("metrics-token");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let e = token_in_file(huge.clone(), None, || "x".into()).unwrap_err();
        assert!(e.source.to_string().contains("larger than 4096"), "{e:?}");
        std::fs::write(&huge, "first-token\nsecond-token\n").unwrap();
        let e = token_in_file(huge.clone(), None, || "x".into()).unwrap_err();
        let text = e.source.to_string();
        assert!(text.contains("line break"), "{text}");
        assert!(
            !text.contains("first-token"),
            "no token in the error: {text}"
        );
        std::fs::write(&huge, b"\xff\xfe token\n").unwrap();
        let e = token_in_file(huge.clone(), None, || "x".into()).unwrap_err();
        assert!(e.source.to_string().contains("not UTF-8"), "{e:?}");
        // CRLF and spaces around one line are fine.
        std::fs::write(&huge, " a-token-from-windows\r\n").unwrap();
        let (t, _) = token_in_file(huge, None, || "x".into()).unwrap();
        assert_eq!(t, "a-token-from-windows");
    }

    #[test]
    fn an_unreadable_path_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("ingest-token");
        let e = token_in_file(path.clone(), None, || "x".into()).unwrap_err();
        assert_eq!(e.path, path);
        assert!(e.to_string().contains("ingest-token"), "{e}");
    }
}
