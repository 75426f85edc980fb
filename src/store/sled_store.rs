//! The sled implementation of [`Store`].

use std::path::{Path, PathBuf};

use super::{secure_dir, secure_tree, CasConflict, Entries, Store, StoreError, SCHEMA_VERSION};

const SCHEMA_KEY: &[u8] = b"schema_version";
/// Added to sled's id counter: a compaction copies the records into a new
/// store whose counter starts at 0 again, and records here where ids went.
const ID_OFFSET_KEY: &[u8] = b"id_offset";

/// The [`ID_OFFSET_KEY`] of `db` (0 if never compacted).
fn id_offset(db: &sled::Db) -> Result<u64, StoreError> {
    match db.get(ID_OFFSET_KEY).map_err(backend)? {
        None => Ok(0),
        Some(v) => v
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| backend_text("the id offset record is damaged")),
    }
}

fn backend_text(text: &str) -> StoreError {
    StoreError::Backend(text.into())
}
/// sled's page-cache budget.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// sled behind the [`Store`] trait. The data directory is created `0700` and
/// its files `0600`: token state is for the pushwerk user alone.
pub struct SledStore {
    db: sled::Db,
    /// Added to every id (see [`ID_OFFSET_KEY`]).
    id_offset: u64,
    dir: PathBuf,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

/// How long an open waits for a lock that a just-closed store of this
/// process may still hold (see [`open_waiting`]).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Opens the sled database at `path` (in the data directory `dir`), waiting
/// up to [`LOCK_WAIT`] for a lock a just-closed store of this process may
/// still hold.
///
/// sled releases its file lock when its last handle goes, and its flusher
/// thread holds one a moment after the store is dropped: a reopen right
/// after a close (a compaction, a rekey, a test) can find the lock still
/// held by a store that is already closed. Such a lock is gone within
/// milliseconds (longer on a loaded machine); one held by a running daemon
/// is not, and is reported as [`StoreError::Locked`] after the wait.
fn open_waiting(dir: &Path, path: &Path) -> Result<sled::Db, StoreError> {
    let open_once = || {
        super::open_guarded(dir, || {
            sled::Config::new()
                .path(path)
                .cache_capacity(CACHE_BYTES)
                .open()
                .map_err(|e| match e {
                    sled::Error::Io(io) if io.to_string().contains("lock") => {
                        StoreError::Locked(dir.to_path_buf())
                    }
                    sled::Error::Corruption { .. } => StoreError::Corrupt {
                        path: dir.to_path_buf(),
                        detail: "sled found corrupted data".into(),
                    },
                    other => backend(other),
                })
        })
    };
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match open_once() {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        secure_dir(dir)?;
        // Files sled creates from now on are private to this user.
        // SAFETY: umask only changes the process's file-creation mask.
        unsafe { libc::umask(0o077) };
        // sled's page cache defaults to 1 GiB; a daemon that should stay in
        // tens of megabytes takes far less (the OS caches the file anyway).
        // A store that wrote records before: its schema record (flushed
        // when the store was made) must be there after sled's recovery.
        let had_records = std::fs::metadata(dir.join("sled").join("db"))
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        let db = open_waiting(dir, &dir.join("sled"))?;
        secure_tree(&dir.join("sled"))?;
        let id_offset = id_offset(&db)?;
        let store = SledStore {
            db,
            id_offset,
            dir: dir.to_path_buf(),
        };
        let schema = super::open_guarded(dir, || store.db.get(SCHEMA_KEY).map_err(backend))?;
        match schema {
            // sled reads a damaged log as one that ends early and opens
            // what is before the damage, which can be nothing at all:
            // silently empty, every token and job gone.
            None if had_records => {
                return Err(StoreError::Corrupt {
                    path: dir.to_path_buf(),
                    detail: "sled recovered none of its records".into(),
                });
            }
            None => {
                store
                    .db
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(backend)?;
                store.db.flush().map_err(backend)?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 4]));
                if found > SCHEMA_VERSION {
                    return Err(StoreError::SchemaVersion {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(backend)
    }

    /// The names of the trees callers wrote (not sled's default tree, which
    /// holds the store's own records): what a migration copies.
    pub(crate) fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != b"__sled__default")
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect()
    }

    /// Makes every id handed out from the next open on at least `floor`
    /// (a store a migration filled: its ids must stay above the old
    /// store's), durably. Ids of this open stay as they were.
    pub(crate) fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        let next = self.db.generate_id().map_err(backend)? + self.id_offset;
        if next < floor {
            let offset = self.id_offset + (floor - next);
            self.db
                .insert(ID_OFFSET_KEY, &offset.to_be_bytes())
                .map_err(backend)?;
        }
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}

/// Rewrites the (closed) sled store of `dir` into fresh files: every tree
/// is exported into a new store in `DATA/sled.compact`, which then replaces
/// `DATA/sled`, and the old files are deleted. sled 0.34 has no compaction
/// of its own, and its log keeps overwritten values until a segment is
/// reused; this is how bytes that must not survive (a plaintext token,
/// sealed since) leave the data directory. Ids handed out later stay above
/// every id handed out before.
pub(crate) fn compact_offline(dir: &Path) -> Result<(), StoreError> {
    use super::{SLED_COMPACT, SLED_OLD};
    let live = dir.join("sled");
    let fresh = dir.join(SLED_COMPACT);
    let old_place = dir.join(SLED_OLD);
    let io = |what: &str, e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("compaction: cannot {what}: {e}"),
    };
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(|e| io("remove an unfinished copy", e))?;
    }
    // The store was closed just before: its lock may linger a moment.
    let old = open_waiting(dir, &live)?;
    super::open_guarded(dir, || {
        let last_id = id_offset(&old)? + old.generate_id().map_err(backend)?;
        let new = sled::Config::new()
            .path(&fresh)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(backend)?;
        new.import(old.export());
        // A fresh store counts ids from 0: later ids start above this one.
        new.insert(ID_OFFSET_KEY, &last_id.saturating_add(1).to_be_bytes())
            .map_err(backend)?;
        new.flush().map_err(backend)?;
        Ok(())
    })?;
    drop(old);
    // Swap: DATA/sled → DATA/sled.old, DATA/sled.compact → DATA/sled. An
    // interruption between the renames is finished by the next open.
    std::fs::rename(&live, &old_place).map_err(|e| io("move the old store aside", e))?;
    std::fs::rename(&fresh, &live).map_err(|e| io("put the new store in place", e))?;
    std::fs::remove_dir_all(&old_place).map_err(|e| io("delete the old store", e))?;
    Ok(())
}

/// Finishes or undoes a compaction an interruption left behind: a copy
/// that never replaced the store is deleted, a swap half done is finished.
pub(crate) fn finish_interrupted_compaction(dir: &Path) -> Result<(), StoreError> {
    use super::{SLED_COMPACT, SLED_OLD};
    let (live, fresh, old) = (dir.join("sled"), dir.join(SLED_COMPACT), dir.join(SLED_OLD));
    let io = |e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("cannot finish an interrupted compaction: {e}"),
    };
    if !live.exists() && fresh.is_dir() && old.is_dir() {
        std::fs::rename(&fresh, &live).map_err(io)?;
    }
    if live.is_dir() {
        for leftover in [fresh, old] {
            if leftover.is_dir() {
                std::fs::remove_dir_all(&leftover).map_err(io)?;
            }
        }
    }
    Ok(())
}

impl Store for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        self.tree(tree)?.remove(key).map_err(backend)?;
        Ok(())
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        let result = self
            .tree(tree)?
            .compare_and_swap(key, old, new.map(sled::IVec::from))
            .map_err(backend)?;
        Ok(result.map_err(|e| CasConflict {
            current: e.current.map(|v| v.to_vec()),
        }))
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn apply_batch(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree(tree)?.apply_batch(batch).map_err(backend)
    }

    fn range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Entries, StoreError> {
        let tree = self.tree(tree)?;
        let iter = tree.range(start.to_vec()..end.to_vec());
        let map = |r: sled::Result<(sled::IVec, sled::IVec)>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)
        };
        if reverse {
            iter.rev().take(limit).map(map).collect()
        } else {
            iter.take(limit).map(map).collect()
        }
    }

    fn keys(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree(tree)?
            .range(start.to_vec()..end.to_vec())
            .keys()
            .take(limit)
            .map(|k| k.map(|k| k.to_vec()).map_err(backend))
            .collect()
    }

    fn count(&self, tree: &str, start: &[u8], end: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for k in self.tree(tree)?.range(start.to_vec()..end.to_vec()).keys() {
            k.map_err(backend)?;
            n += 1;
        }
        Ok(n)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id().map_err(backend)? + self.id_offset)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn meets_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        conformance::exercise(&SledStore::open(dir.path()).unwrap());
    }

    #[test]
    fn keeps_values_and_ids_across_a_reopen() {
        conformance::survives_reopen(SledStore::open);
    }

    #[test]
    fn a_second_open_is_locked() {
        conformance::second_open_is_locked(SledStore::open);
    }
}
