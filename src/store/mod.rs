//! Durable state: a small key-value [`Store`] trait with two embedded
//! implementations, redb (the default for a new data directory: bounded
//! disk, fdatasync, clear errors when damaged or full) and sled (still
//! opened where a data directory holds it), and [`migrate`] between them.
//! Everything pushwerk keeps (token state, accepted event ids, the queue,
//! dead letters, the delivery log, cron marks) goes through this trait, so
//! that a server-grade store can be added in one place.

pub mod migrate;
pub mod postgres;
mod redb_store;
mod sled_store;

pub use postgres::PgStore;
pub use redb_store::RedbStore;
pub use sled_store::SledStore;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Which store keeps a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreChoice {
    /// Whichever the data directory already holds; redb for a new one.
    #[default]
    Auto,
    /// sled 0.34 (`DATA/sled/`).
    Sled,
    /// redb (`DATA/pushwerk.redb`).
    Redb,
    /// PostgreSQL, shared by several nodes (`--database-url`; see
    /// [`postgres`]). The data directory keeps only the node's own files
    /// (ingest token, admin token, announcement).
    Postgres,
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<StoreChoice, String> {
        match s {
            "auto" => Ok(StoreChoice::Auto),
            "sled" => Ok(StoreChoice::Sled),
            "redb" => Ok(StoreChoice::Redb),
            "postgres" | "postgresql" => Ok(StoreChoice::Postgres),
            other => Err(format!(
                "unknown store `{other}`: expected auto, sled, redb or postgres"
            )),
        }
    }
}

/// Whether `dir` holds a store (sled or redb): commands that only read
/// (`deliveries`, `jobs`) must not make an empty one where there is none.
pub fn holds_store(dir: &Path) -> bool {
    dir.join("sled").is_dir() || dir.join(redb_store::FILE_NAME).is_file()
}

/// Opens the store of the data directory `dir`. With [`StoreChoice::Auto`]
/// it is the one `dir` already holds (redb for a new directory: it stays
/// bounded in size, syncs with fdatasync and reports damage as errors,
/// where sled grows without bound — BENCHMARKS.md). A choice that differs
/// from what `dir` holds is refused: starting an empty one would hide the
/// queue and the token state of the other (`pushwerk store migrate` copies
/// one into the other).
pub fn open(dir: &Path, choice: StoreChoice) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    secure_dir(dir)?;
    if choice == StoreChoice::Postgres {
        return Ok(std::sync::Arc::new(PgStore::open_configured()?));
    }
    sled_store::finish_interrupted_compaction(dir)?;
    redb_store::finish_interrupted_compaction(dir)?;
    migrate::finish_interrupted(dir)?;
    let has_sled = dir.join("sled").exists();
    let has_redb = dir.join(redb_store::FILE_NAME).exists();
    let kind = match (choice, has_sled, has_redb) {
        (_, true, true) => {
            return Err(StoreError::Directory {
                path: dir.to_path_buf(),
                reason: "holds both a sled store (sled/) and a redb store (pushwerk.redb): move the one not in use away".into(),
            })
        }
        (StoreChoice::Redb, true, false) | (StoreChoice::Sled, false, true) => {
            return Err(StoreError::Directory {
                path: dir.to_path_buf(),
                reason: format!(
                    "holds a {} store, not the {} store asked for: choose --store {}, or copy it over with `pushwerk store migrate --from {} --to {}`",
                    if has_sled { "sled" } else { "redb" },
                    if has_sled { "redb" } else { "sled" },
                    if has_sled { "sled" } else { "redb" },
                    if has_sled { "sled" } else { "redb" },
                    if has_sled { "redb" } else { "sled" },
                ),
            })
        }
        (StoreChoice::Sled, _, _) | (StoreChoice::Auto, true, false) => StoreChoice::Sled,
        _ => StoreChoice::Redb,
    };
    Ok(match kind {
        StoreChoice::Redb => std::sync::Arc::new(RedbStore::open(dir)?),
        _ => std::sync::Arc::new(SledStore::open(dir)?),
    })
}

/// The key in [`trees::MAINTENANCE`] that asks for a compaction: set
/// (and flushed) before records whose old bytes must not survive are
/// rewritten, removed once the store is rewritten into fresh files, so that
/// an interruption anywhere in between compacts at the next open.
pub const COMPACT_PENDING: &[u8] = b"compact_pending";

/// [`open`], then `prepare` on the open store; if that (or an earlier,
/// interrupted run) left [`COMPACT_PENDING`] set, the store is closed,
/// rewritten into fresh files (see `compact_offline` of either store) and
/// opened again. Turning encryption on uses it, so that the plaintext
/// token records it seals leave no copy behind.
pub fn open_prepared(
    dir: &Path,
    choice: StoreChoice,
    prepare: impl FnOnce(&dyn Store) -> Result<(), StoreError>,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let store = open(dir, choice)?;
    prepare(&*store)?;
    if store.get(trees::MAINTENANCE, COMPACT_PENDING)?.is_none() {
        return Ok(store);
    }
    if store.node().is_some() {
        // A shared store has no files of its own to rewrite: PostgreSQL's
        // (auto)vacuum reclaims the old row versions.
        store.remove(trees::MAINTENANCE, COMPACT_PENDING)?;
        return Ok(store);
    }
    store.flush()?;
    let redb = dir.join(redb_store::FILE_NAME).exists();
    if std::sync::Arc::strong_count(&store) != 1 {
        return Err(StoreError::Backend(
            "the store is still in use and cannot be compacted".into(),
        ));
    }
    drop(store);
    if redb {
        redb_store::compact_offline(dir)?;
    } else {
        sled_store::compact_offline(dir)?;
    }
    let store = open(dir, choice)?;
    store.remove(trees::MAINTENANCE, COMPACT_PENDING)?;
    store.flush()?;
    Ok(store)
}

/// The schema version both stores write: it names the layout of the keys
/// and values their callers store, which is the same whatever the backend.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// What pushwerk itself keeps in a data directory: the stores, the
/// ingest token and the leftovers of an interrupted compaction. Anything
/// else is foreign, and a directory holding it is refused: pushwerk only
/// ever changes the modes of what it created.
pub(crate) const OWN_ENTRIES: [(&str, bool); 10] = [
    ("sled", true),
    (redb_store::FILE_NAME, false),
    ("ingest-token", false),
    ("admin-token", false),
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

/// Why the store failed. The messages carry no stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or secured.
    #[error("data directory {path}: {reason}")]
    Directory {
        /// The directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Another process (a running `pushwerk serve`?) holds the store.
    #[error("the data directory {0} is in use by another pushwerk process (the store allows one process at a time): stop it, or ask it through its HTTP API")]
    Locked(std::path::PathBuf),
    /// The store's files are damaged (or are not a store): reported with
    /// what to do, instead of the backend's panic or bare message.
    #[error("the store in {} is damaged or unreadable ({detail}): restore the data directory from a backup, or move it aside (e.g. `mv {} {}.damaged`) and start with a new one (then import the OAuth tokens again; the queue and the delivery log stay in the old one)", .path.display(), .path.display(), .path.display())]
    Corrupt {
        /// The data directory.
        path: std::path::PathBuf,
        /// What the backend said.
        detail: String,
    },
    /// The database reported an error.
    #[error("store error: {0}")]
    Backend(String),
    /// The store cannot write now (the disk is full, an I/O error): the
    /// request may be repeated later; nothing is damaged.
    #[error("the store cannot write now (disk full?): {0}")]
    Unavailable(String),
    /// The store was not opened, for a reason its caller gives (a token
    /// key that cannot be used on this store, a migration that cannot
    /// start): the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// The data was written by a newer pushwerk.
    #[error("the store has schema version {found}; this pushwerk understands up to {supported}")]
    SchemaVersion {
        /// Version found on disk.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
}

/// The outcome of a failed compare-and-swap: someone else wrote first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasConflict {
    /// The value now stored.
    pub current: Option<Vec<u8>>,
}

/// Tree (table) names, in one place.
pub mod trees {
    /// OAuth token state, one record per account name.
    pub const TOKENS: &str = "tokens";
    /// The delivery queue, dead letters, accepted events and the delivery
    /// log, in one tree so that a job's completion is one atomic batch.
    pub const DELIVERY: &str = "delivery";
    /// The store's own housekeeping flags (a compaction pending).
    pub const MAINTENANCE: &str = "maintenance";
}

/// Key-value pairs as returned by a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes that happen only if their claim key is new ([`Store::apply_claimed`]):
/// an accepted event id and the jobs it makes.
#[derive(Debug, Clone)]
pub struct ClaimedBatch {
    /// The key (and its value) that must not exist yet.
    pub claim: (Vec<u8>, Vec<u8>),
    /// The other writes, applied only with the claim.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The key-value operations pushwerk needs. Keys and values are bytes;
/// callers own their encoding. Writes become durable at [`Store::flush`].
pub trait Store: Send + Sync + 'static {
    /// The value under `key` in `tree`.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`.
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`.
    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StoreError>;
    /// Sets `key` to `new` only if it currently holds `old` (`None`: absent).
    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// Applies every `(key, Some(value))` insert and `(key, None)` removal
    /// at once: all or none.
    fn apply_batch(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError>;
    /// [`Store::apply_batch`] and then [`Store::flush`], as one durable step:
    /// a store that can commit a batch durably in one go (redb) saves a
    /// commit; the group commit of ingest uses it once per group.
    fn apply_batch_durable(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        self.apply_batch(tree, ops)?;
        self.flush()
    }
    /// Entries from `start` (inclusive) up to `end` (exclusive), in key
    /// order, at most `limit`; `reverse` walks from the end.
    fn range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Entries, StoreError>;
    /// Keys only, from `start` (inclusive) up to `end` (exclusive), in key
    /// order, at most `limit`: for retention, which needs no values.
    fn keys(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError>;
    /// How many keys lie from `start` (inclusive) up to `end` (exclusive).
    fn count(&self, tree: &str, start: &[u8], end: &[u8]) -> Result<usize, StoreError>;
    /// A unique, increasing id (survives restarts).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;

    /// This process's node name if other processes share the store
    /// (PostgreSQL); `None` for the embedded stores, which one process
    /// holds alone. Callers that must coordinate across nodes (the token
    /// refresh, the queue's claims) check it.
    fn node(&self) -> Option<&str> {
        None
    }

    /// Like [`Store::range`] (forward) for records that a process delivers:
    /// a shared store returns only records this node holds or may take
    /// (written by it, or by a node whose lease expired) and leases them to
    /// this node; an embedded store returns the range as it is.
    fn claim(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.range(tree, start, end, limit, false)
    }

    /// Shared stores: the records of `[start, end)` whose holder died
    /// (its lease expired), at most `limit`, now leased to this node. The
    /// embedded stores have no other holders: none.
    fn claim_orphans(
        &self,
        _tree: &str,
        _start: &[u8],
        _end: &[u8],
        _limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(Vec::new())
    }

    /// Applies each item whose claim key is absent (the claim and its ops,
    /// all in one batch) and skips the others; says which were applied. A
    /// shared store decides under a unique constraint, so concurrent
    /// processes claiming one key apply it once. Callers serialise their
    /// own calls (the embedded default checks, then writes).
    fn apply_claimed(
        &self,
        tree: &str,
        items: Vec<ClaimedBatch>,
        durable: bool,
    ) -> Result<Vec<bool>, StoreError> {
        let mut ops = Vec::new();
        let mut applied = Vec::with_capacity(items.len());
        let mut claimed = std::collections::HashSet::new();
        for item in items {
            let new = !claimed.contains(&item.claim.0) && self.get(tree, &item.claim.0)?.is_none();
            if new {
                claimed.insert(item.claim.0.clone());
                ops.push((item.claim.0, Some(item.claim.1)));
                ops.extend(item.ops);
            }
            applied.push(new);
        }
        match (durable, ops.is_empty()) {
            (true, false) => self.apply_batch_durable(tree, ops)?,
            (true, true) => self.flush()?,
            (false, false) => self.apply_batch(tree, ops)?,
            (false, true) => {}
        }
        Ok(applied)
    }

    /// Whether the store is reachable now: a shared store whose server
    /// stopped answering says why (`/readyz` is then not ready).
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The [`Store`] contract as tests, run against every implementation so
/// that the stores stay interchangeable.
#[cfg(test)]
pub(crate) mod conformance {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::{CasConflict, Store, StoreError};

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn keys_of(entries: &super::Entries) -> Vec<Vec<u8>> {
        entries.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Every trait operation on a fresh, empty store.
    pub(crate) fn exercise(s: &dyn Store) {
        // Reads of a tree never written are empty, not errors.
        assert_eq!(s.get("none", b"k").unwrap(), None);
        assert!(s.scan_prefix("none", b"").unwrap().is_empty());
        assert!(s.range("none", b"", b"\xff", 10, false).unwrap().is_empty());
        assert!(s.keys("none", b"", b"\xff", 10).unwrap().is_empty());
        assert_eq!(s.count("none", b"", b"\xff").unwrap(), 0);

        // put, overwrite, remove; trees are separate.
        s.put("a", b"k", b"v1").unwrap();
        s.put("a", b"k", b"v2").unwrap();
        assert_eq!(s.get("a", b"k").unwrap(), Some(b("v2")));
        assert_eq!(s.get("b", b"k").unwrap(), None);
        s.remove("a", b"k").unwrap();
        s.remove("a", b"k").unwrap();
        assert_eq!(s.get("a", b"k").unwrap(), None);

        // compare_and_swap.
        s.compare_and_swap("c", b"k", None, Some(b"v1"))
            .unwrap()
            .unwrap();
        let conflict = |current: &str| {
            Err(CasConflict {
                current: Some(b(current)),
            })
        };
        assert_eq!(
            s.compare_and_swap("c", b"k", None, Some(b"x")).unwrap(),
            conflict("v1")
        );
        assert_eq!(
            s.compare_and_swap("c", b"k", Some(b"nope"), Some(b"x"))
                .unwrap(),
            conflict("v1")
        );
        s.compare_and_swap("c", b"k", Some(b"v1"), Some(b"v2"))
            .unwrap()
            .unwrap();
        assert_eq!(s.get("c", b"k").unwrap(), Some(b("v2")));
        s.compare_and_swap("c", b"k", Some(b"v2"), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.get("c", b"k").unwrap(), None);
        assert_eq!(
            s.compare_and_swap("c", b"k", Some(b"v2"), Some(b"x"))
                .unwrap(),
            Err(CasConflict { current: None })
        );

        // apply_batch: inserts, overwrites and removals land together; a
        // key inserted then removed in one batch ends removed.
        s.put("d", b"k1", b"old").unwrap();
        s.put("d", b"k2", b"old").unwrap();
        s.apply_batch(
            "d",
            vec![
                (b("k1"), None),
                (b("k2"), Some(b("new"))),
                (b("k3"), Some(b("new"))),
                (b("k4"), Some(b("gone"))),
                (b("k4"), None),
            ],
        )
        .unwrap();
        assert_eq!(
            s.scan_prefix("d", b"").unwrap(),
            vec![(b("k2"), b("new")), (b("k3"), b("new"))]
        );
        s.apply_batch("d", vec![]).unwrap();

        // scan_prefix, including a prefix of 0xff bytes.
        for k in ["p", "p/1", "p/3", "p/2", "q/1", "o"] {
            s.put("e", k.as_bytes(), b"v").unwrap();
        }
        s.put("e", b"\xff\xff", b"v").unwrap();
        s.put("e", b"\xff", b"v").unwrap();
        let found = s.scan_prefix("e", b"p/").unwrap();
        assert_eq!(keys_of(&found), vec![b("p/1"), b("p/2"), b("p/3")]);
        let found = s.scan_prefix("e", b"\xff").unwrap();
        assert_eq!(
            keys_of(&found),
            vec![b"\xff".to_vec(), b"\xff\xff".to_vec()]
        );
        assert_eq!(s.scan_prefix("e", b"").unwrap().len(), 8);

        // range, keys and count: start inclusive, end exclusive, limit,
        // reverse from the end.
        for i in 0u8..10 {
            s.put("f", &[i], &[i, i]).unwrap();
        }
        let k = |v: &[u8]| v.iter().map(|i| vec![*i]).collect::<Vec<_>>();
        let got = s.range("f", &[2], &[7], 100, false).unwrap();
        assert_eq!(keys_of(&got), k(&[2, 3, 4, 5, 6]));
        assert_eq!(got[0].1, vec![2, 2]);
        let got = s.range("f", &[2], &[7], 100, true).unwrap();
        assert_eq!(keys_of(&got), k(&[6, 5, 4, 3, 2]));
        let got = s.range("f", &[2], &[7], 2, false).unwrap();
        assert_eq!(keys_of(&got), k(&[2, 3]));
        let got = s.range("f", &[2], &[7], 2, true).unwrap();
        assert_eq!(keys_of(&got), k(&[6, 5]));
        assert!(s.range("f", &[2], &[7], 0, false).unwrap().is_empty());
        assert!(s.range("f", &[4], &[4], 10, false).unwrap().is_empty());
        assert!(s.range("f", &[4], &[4], 10, true).unwrap().is_empty());
        let got = s.range("f", &[], &[0xff], 100, false).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(s.keys("f", &[2], &[7], 3).unwrap(), k(&[2, 3, 4]));
        assert_eq!(s.keys("f", &[2], &[7], 100).unwrap(), k(&[2, 3, 4, 5, 6]));
        assert!(s.keys("f", &[2], &[7], 0).unwrap().is_empty());
        assert_eq!(s.count("f", &[2], &[7]).unwrap(), 5);
        assert_eq!(s.count("f", &[], &[0xff]).unwrap(), 10);
        assert_eq!(s.count("f", &[4], &[4]).unwrap(), 0);

        // next_id: unique and increasing.
        let ids: Vec<u64> = (0..2500).map(|_| s.next_id().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not increasing");

        s.flush().unwrap();
        assert!(s.size_on_disk().unwrap() > 0);
    }

    /// Values and ids survive a flush, a close and a reopen, and the data
    /// directory is private (0700, files 0600).
    pub(crate) fn survives_reopen<S: Store>(open: impl Fn(&Path) -> Result<S, StoreError>) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let last_id = {
            let s = open(&data).unwrap();
            s.put("t", b"k", b"v1").unwrap();
            s.apply_batch("t", vec![(b("b1"), Some(b("x"))), (b("b2"), Some(b("y")))])
                .unwrap();
            let id = s.next_id().unwrap();
            s.flush().unwrap();
            id
        };
        let s = open(&data).unwrap();
        assert_eq!(s.get("t", b"k").unwrap(), Some(b("v1")));
        assert_eq!(s.count("t", b"b", b"c").unwrap(), 2);
        let id = s.next_id().unwrap();
        assert!(id > last_id, "{id} after a reopen is not above {last_id}");
        drop(s);

        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fn check(dir: &Path) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let m = e.metadata().unwrap().permissions().mode() & 0o777;
                if e.path().is_dir() {
                    assert_eq!(m, 0o700, "{}", e.path().display());
                    check(&e.path());
                } else {
                    assert_eq!(m & 0o077, 0, "{} is {m:o}", e.path().display());
                }
            }
        }
        check(&data);
    }

    /// A second open of a directory in use is refused as `Locked`.
    pub(crate) fn second_open_is_locked<S: Store + std::fmt::Debug>(
        open: impl Fn(&Path) -> Result<S, StoreError>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).unwrap();
        match open(dir.path()) {
            Err(StoreError::Locked(path)) => assert_eq!(path, dir.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        open(dir.path()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_under(dir: &Path, out: &mut Vec<u8>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                bytes_under(&e.path(), out);
            } else {
                out.extend(std::fs::read(e.path()).unwrap());
            }
        }
    }

    fn holds(dir: &Path, needle: &[u8]) -> bool {
        let mut all = Vec::new();
        bytes_under(dir, &mut all);
        all.windows(needle.len()).any(|w| w == needle)
    }

    /// A compaction keeps every record and the id sequence, and leaves no
    /// byte of an overwritten value in the data directory.
    fn compaction_forgets_overwritten_values(choice: StoreChoice) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let canary = b"CANARY-overwritten-value-0123456789";
        let last_id = {
            let s = open(&dir, choice).unwrap();
            s.put("t", b"secret", canary).unwrap();
            for i in 0..500u32 {
                s.put("bulk", &i.to_be_bytes(), &[7u8; 100]).unwrap();
            }
            s.flush().unwrap();
            s.put("t", b"secret", b"sealed").unwrap();
            let mut id = 0;
            for _ in 0..10 {
                id = s.next_id().unwrap();
            }
            s.flush().unwrap();
            id
        };
        if choice == StoreChoice::Sled {
            // redb may have reused the page already; sled's log keeps it.
            assert!(holds(&dir, canary), "the store keeps the old value");
        }
        let s = open_prepared(&dir, choice, |s| {
            s.put(trees::MAINTENANCE, COMPACT_PENDING, b"1")
        })
        .unwrap();
        assert_eq!(s.get("t", b"secret").unwrap(), Some(b"sealed".to_vec()));
        assert_eq!(s.count("bulk", &[], &[0xff]).unwrap(), 500);
        assert_eq!(s.get(trees::MAINTENANCE, COMPACT_PENDING).unwrap(), None);
        let id = s.next_id().unwrap();
        assert!(id > last_id, "{id} after {last_id}");
        s.flush().unwrap();
        drop(s);
        assert!(
            !holds(&dir, canary),
            "an overwritten value survived compaction"
        );
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // And it opens again, ids still increasing.
        let s = open(&dir, choice).unwrap();
        assert!(s.next_id().unwrap() > id);
    }

    #[test]
    fn sled_compaction_forgets_overwritten_values() {
        compaction_forgets_overwritten_values(StoreChoice::Sled);
    }

    #[test]
    fn redb_compaction_forgets_overwritten_values() {
        compaction_forgets_overwritten_values(StoreChoice::Redb);
    }

    #[test]
    fn an_interrupted_sled_swap_is_finished_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        {
            let s = open(&dir, StoreChoice::Sled).unwrap();
            s.put("t", b"k", b"v").unwrap();
            s.flush().unwrap();
        }
        // Copy made and old store moved aside, crash before the second rename.
        std::fs::rename(dir.join("sled"), dir.join(SLED_OLD)).unwrap();
        let copy = std::process::Command::new("cp")
            .arg("-a")
            .arg(dir.join(SLED_OLD))
            .arg(dir.join(SLED_COMPACT))
            .status()
            .unwrap();
        assert!(copy.success());
        let s = open(&dir, StoreChoice::Auto).unwrap();
        assert_eq!(s.get("t", b"k").unwrap(), Some(b"v".to_vec()));
        assert!(!dir.join(SLED_OLD).exists() && !dir.join(SLED_COMPACT).exists());
    }
}
