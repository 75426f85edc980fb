//! The sled implementation of [`Store`].

use std::path::{Path, PathBuf};

use super::{secure_dir, secure_tree, CasConflict, Entries, Store, StoreError, SCHEMA_VERSION};

const SCHEMA_KEY: &[u8] = b"schema_version";
/// sled's page-cache budget.
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// sled behind the [`Store`] trait. The data directory is created `0700` and
/// its files `0600`: token state is for the pushwerk user alone.
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
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
        let db = super::open_guarded(dir, || {
            sled::Config::new()
                .path(dir.join("sled"))
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
        })?;
        secure_tree(&dir.join("sled"))?;
        let store = SledStore {
            db,
            dir: dir.to_path_buf(),
        };
        let schema = super::open_guarded(dir, || store.db.get(SCHEMA_KEY).map_err(backend))?;
        match schema {
            None => {
                store
                    .db
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(backend)?;
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
        self.db.generate_id().map_err(backend)
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
