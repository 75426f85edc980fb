//! The data directory itself: what pushwerk keeps in it, its modes, and
//! opening a store guarded against its code panicking on damaged files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{migrate, redb_store, StoreError};

/// The schema version both stores write: it names the layout of the keys
/// and values their callers store, which is the same whatever the backend.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// What pushwerk itself keeps in a data directory: the stores, the
/// generated tokens and the leftovers of an interrupted compaction. Anything
/// else is foreign, and a directory holding it is refused: pushwerk only
/// ever changes the modes of what it created.
pub(crate) const OWN_ENTRIES: [(&str, bool); 11] = [
    ("sled", true),
    (redb_store::FILE_NAME, false),
    ("ingest-token", false),
    ("admin-token", false),
    ("metrics-token", false),
    ("daemon.json", false),
    (".daemon.json.tmp", false),
    (SLED_COMPACT, true),
    (SLED_OLD, true),
    (REDB_COMPACT, false),
    (migrate::STAGING, true),
];
/// Prefixes of pushwerk's own entries with a variable tail: the store a
/// migration moved aside (`sled.migrated-<time>/`,
/// `pushwerk.redb.migrated-<time>`), kept so that nothing is lost.
pub(crate) const OWN_PREFIXES: [(&str, bool); 2] =
    [(migrate::SLED_ASIDE, true), (migrate::REDB_ASIDE, false)];
/// Where a compaction builds the new sled store.
pub(crate) const SLED_COMPACT: &str = "sled.compact";
/// Where a compaction parks the old sled store until the new one is in place.
pub(crate) const SLED_OLD: &str = "sled.old";
/// Where a compaction builds the new redb file.
pub(crate) const REDB_COMPACT: &str = "pushwerk.redb.compact";

/// Makes `dir` ready to hold pushwerk's data without touching anything
/// that is not pushwerk's: a new directory is created `0700`; an existing
/// one keeps its mode and is refused if every user or its group may write
/// to it (such as `/tmp`), if it belongs to another user than the one
/// running pushwerk, or if it holds anything but pushwerk's own files (a symlink
/// included, even under one of pushwerk's names), so that no later chmod
/// or write can reach a file outside the data directory.
pub(crate) fn secure_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |reason: String| StoreError::Directory {
        path: dir.to_path_buf(),
        reason,
    };
    // Whatever this process creates from now on (store files, the ingest
    // token) is private to this user from its first byte.
    // SAFETY: umask only changes the process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create: {e}")))?;
            // Created by pushwerk just now: private to this user.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("cannot set mode 0700: {e}")))?;
            return Ok(());
        }
        Err(e) => return Err(err(format!("cannot read: {e}"))),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(err(format!(
            "is writable by every user (mode {mode:o}); pushwerk keeps token state in its data directory and changes no modes of a directory it did not create: name a directory of its own (a new one is created 0700), e.g. --data /var/lib/pushwerk"
        )));
    }
    if mode & 0o020 != 0 {
        return Err(err(format!(
            "is writable by its group (mode {mode:o}); another user of the group could replace pushwerk's files or plant a symlink: name a directory of its own (a new one is created 0700) or remove the group's write permission (chmod g-w)"
        )));
    }
    // Owned by someone else (root included), the directory could be
    // emptied, swapped or re-moded under pushwerk; for root running
    // pushwerk, a directory of another user is refused for the same reason.
    {
        use std::os::unix::fs::MetadataExt as _;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(err(format!(
                "belongs to uid {}, not to the user running pushwerk (uid {me}); the owner could replace pushwerk's files under it: run pushwerk as its owner, give it to this user (chown), or name a directory of this user's own",
                meta.uid()
            )));
        }
    }
    let mut foreign = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| err(format!("cannot read: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| err(format!("cannot read: {e}")))?;
        let name = entry.file_name();
        let kind = entry
            .file_type()
            .map_err(|e| err(format!("cannot read {}: {e}", name.to_string_lossy())))?;
        let of_kind = |is_dir: bool| {
            if is_dir {
                kind.is_dir()
            } else {
                kind.is_file()
            }
        };
        let own = !kind.is_symlink()
            && name.to_str().is_some_and(|n| {
                OWN_ENTRIES
                    .iter()
                    .any(|(own, is_dir)| n == *own && of_kind(*is_dir))
                    || OWN_PREFIXES.iter().any(|(prefix, is_dir)| {
                        n.strip_prefix(prefix).is_some_and(|tail| {
                            !tail.is_empty()
                                && tail
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                        }) && of_kind(*is_dir)
                    })
            });
        if !own {
            foreign.push(name.to_string_lossy().into_owned());
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let more = foreign.len().saturating_sub(5);
        foreign.truncate(5);
        return Err(err(format!(
            "holds entries that are not pushwerk's ({}{}): pushwerk keeps its data directory to itself (sled/, pushwerk.redb, ingest-token, a store a migration moved aside, each a plain file or directory, not a symlink); name a new or empty directory, or move those entries away",
            foreign.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )));
    }
    Ok(())
}

/// Narrows the modes of what a store created below `dir` (files `0600`,
/// folders `0700`) where they are wider, for stores written by an older
/// build. Never follows a symlink, so nothing outside `dir` changes.
pub(crate) fn secure_tree(dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    for entry in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = meta.file_type();
        if kind.is_symlink() || !(kind.is_dir() || kind.is_file()) {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        let want = if kind.is_dir() { 0o700 } else { 0o600 };
        if mode & 0o077 != 0 {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(want));
        }
        if kind.is_dir() {
            secure_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// Runs `open` (a backend's open, which reads and recovers the files of
/// `dir`), turning a panic of the backend into [`StoreError::Corrupt`]:
/// sled 0.34 panics on some damaged files (`tried to serialize
/// Uninitialized`, index out of bounds in its segment code) instead of
/// returning an error. The panic message of this thread is not printed
/// while `open` runs; other threads' panics are reported as before.
pub(crate) fn open_guarded<T>(
    dir: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    use std::sync::{Arc, Mutex, PoisonError};
    // One swap of the process's panic hook at a time.
    static HOOK: Mutex<()> = Mutex::new(());
    let _one = HOOK.lock().unwrap_or_else(PoisonError::into_inner);
    let me = std::thread::current().id();
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let others = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            others(info);
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    drop(std::panic::take_hook());
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match result {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the store's code failed on its files".into());
            Err(StoreError::Corrupt {
                path: dir.to_path_buf(),
                detail: detail.chars().take(200).collect(),
            })
        }
    }
}
