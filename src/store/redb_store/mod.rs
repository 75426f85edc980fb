//! The redb implementation of [`Store`].
//!
//! redb is maintained, crash-safe and keeps everything in one file, where
//! sled 0.34 is unmaintained and amplifies space. Each tree is a redb table
//! of bytes to bytes; a reserved `meta` table holds the schema version and
//! the id reservation.
//!
//! Durability follows the trait: writes commit with [`Durability::None`]
//! (visible at once, no fsync) and become durable at [`Store::flush`], an
//! empty commit with the default [`Durability::Immediate`], which persists
//! every non-durable commit before it. A background thread does the same
//! every [`FLUSH_EVERY`] when something was written, as sled's
//! `flush_every_ms` does, and dropping the store flushes a last time.

use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, StorageError, TableDefinition,
    TableHandle, WriteTransaction,
};

mod compact;
mod shared;

pub(crate) use compact::{compact_offline, finish_interrupted_compaction};
use shared::{backend, flush_loop, lock, open_database, table, IdBlock, Shared};

use super::{secure_dir, CasConflict, Entries, Store, StoreError, SCHEMA_VERSION};

/// The database file inside the data directory.
pub(crate) const FILE_NAME: &str = "pushwerk.redb";
/// redb's page-cache budget: far below the 1 GiB default, so that the daemon
/// stays in tens of megabytes (the OS caches the file anyway): peak RSS
/// 53 MB in a 200,000-event soak at 5,000 events/s (BENCHMARKS.md).
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// How often the background thread makes pending writes durable.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// The table of the store's own records; no caller's tree may use the name.
const META: &str = "pushwerk.meta";
const SCHEMA_KEY: &[u8] = b"schema_version";
/// The end (exclusive) of the last block of ids reserved on disk.
const IDS_KEY: &[u8] = b"ids_reserved";
/// Ids reserved per durable commit; a crash loses at most the unused rest.
const ID_BLOCK: u64 = 1000;

/// A tree's table: keys and values are bytes, as the trait has them.
type Bytes<'a> = TableDefinition<'a, &'static [u8], &'static [u8]>;

/// redb behind the [`Store`] trait: one file, `pushwerk.redb`, in a data
/// directory created `0700`, the file `0600`: token state is for the
/// pushwerk user alone. One process at a time may open it (a second gets
/// [`StoreError::Locked`]).
///
/// Writes are visible at once and durable at [`Store::flush`], or at the
/// latest about half a second later through a background thread, which the
/// store stops (and flushes after) when it is dropped.
pub struct RedbStore {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").field("dir", &self.dir).finish()
    }
}

impl RedbStore {
    /// Opens (or creates) the store in `dir`, and starts its flush thread.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        RedbStore::open_with(dir, Some(FLUSH_EVERY))
    }

    /// [`RedbStore::open`] with the background flush every `every`, or
    /// none: tests use it to control what is durable.
    fn open_with(dir: &Path, every: Option<Duration>) -> Result<RedbStore, StoreError> {
        secure_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let file_err = |reason: String| StoreError::Directory {
            path: path.clone(),
            reason,
        };
        // Created private before redb opens it, so that it never exists
        // with wider rights, and narrowed if an older one has them. (redb's
        // locks belong to its own open file, so this handle's close leaves
        // them alone.)
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| file_err(format!("cannot create: {e}")))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| file_err(format!("cannot set mode 0600: {e}")))?;
        let corrupt = |detail: String| StoreError::Corrupt {
            path: dir.to_path_buf(),
            detail,
        };
        let (db, reserved) = super::open_guarded(dir, || {
            let db = open_database(&path).map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(dir.to_path_buf()),
                DatabaseError::Storage(StorageError::Corrupted(m)) => corrupt(m),
                DatabaseError::Storage(StorageError::Io(io))
                    if io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    corrupt(io.to_string())
                }
                DatabaseError::RepairAborted => corrupt("its repair failed".into()),
                other => backend(other),
            })?;
            // A meta table that cannot be read is a damaged file too.
            let reserved = init_meta(&db).map_err(|e| match e {
                StoreError::Backend(m) => corrupt(m),
                other => other,
            })?;
            Ok((db, reserved))
        })?;
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            path: path.clone(),
            dirty: AtomicBool::new(false),
            ids: Mutex::new(IdBlock {
                next: reserved,
                end: reserved,
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let flusher = match every {
            Some(every) => {
                let shared = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name("pushwerk-store-flush".into())
                    .spawn(move || flush_loop(shared, every))
                    .map_err(|e| backend(format!("cannot start the flush thread: {e}")))?;
                Some(handle)
            }
            None => None,
        };
        Ok(RedbStore {
            shared,
            flusher,
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the trees callers wrote (not the store's own table):
    /// what a migration copies.
    pub(crate) fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        self.shared.with_db(|db| {
            let read = db.begin_read().map_err(backend)?;
            let names: Vec<String> = read
                .list_tables()
                .map_err(backend)?
                .map(|h| h.name().to_owned())
                .filter(|n| n != META)
                .collect();
            Ok(names)
        })
    }

    /// Makes every id handed out from now on at least `floor` (a store a
    /// migration filled: its ids must stay above the old store's), durably.
    pub(crate) fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        let mut ids = lock(&self.shared.ids);
        if ids.next >= floor {
            return Ok(());
        }
        let meta: Bytes<'_> = TableDefinition::new(META);
        let txn = self.shared.begin_write()?;
        txn.open_table(meta)
            .map_err(backend)?
            .insert(IDS_KEY, floor.to_be_bytes().as_slice())
            .map_err(backend)?;
        txn.commit().map_err(backend)?;
        self.shared.sync()?;
        ids.next = floor;
        ids.end = floor;
        Ok(())
    }
}

/// Checks (or, in a new store, writes) the schema version and returns the
/// end of the ids reserved so far, durably.
fn init_meta(db: &Database) -> Result<u64, StoreError> {
    let meta: Bytes<'_> = TableDefinition::new(META);
    let txn = db.begin_write().map_err(backend)?;
    let reserved = {
        let mut t = txn.open_table(meta).map_err(backend)?;
        let found = t
            .get(SCHEMA_KEY)
            .map_err(backend)?
            .map(|v| u32::from_be_bytes(v.value().try_into().unwrap_or([0xff; 4])));
        match found {
            None => {
                t.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())
                    .map_err(backend)?;
            }
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaVersion {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
        }
        let reserved = t
            .get(IDS_KEY)
            .map_err(backend)?
            .map(|v| v.value().try_into().map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| backend("the id reservation record is damaged"))?
            .unwrap_or(0);
        reserved
    };
    txn.commit().map_err(backend)?;
    Ok(reserved)
}

impl Drop for RedbStore {
    /// Stops the flush thread and makes the last writes durable.
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
        if self.shared.dirty.load(Ordering::Acquire) {
            if let Err(e) = self.shared.sync() {
                tracing::warn!(error = %e, dir = %self.dir.display(), "final flush of the store failed");
            }
        }
    }
}

/// Collects up to `limit` entries of a redb range, forward or reversed.
fn collect<T>(
    range: redb::Range<'_, &'static [u8], &'static [u8]>,
    limit: usize,
    reverse: bool,
    map: impl Fn(&[u8], &[u8]) -> T,
) -> Result<Vec<T>, StoreError> {
    let iter: Box<dyn Iterator<Item = _>> = if reverse {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    iter.take(limit)
        .map(|r| {
            let (k, v) = r.map_err(backend)?;
            Ok(map(k.value(), v.value()))
        })
        .collect()
}

impl Store for RedbStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.read(tree, |t| {
            Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
        })
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let def = table(tree)?;
        let txn = self.shared.begin()?;
        txn.open_table(def)
            .map_err(backend)?
            .insert(key, value)
            .map_err(backend)?;
        self.shared.commit(txn)
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        let def = table(tree)?;
        let txn = self.shared.begin()?;
        txn.open_table(def)
            .map_err(backend)?
            .remove(key)
            .map_err(backend)?;
        self.shared.commit(txn)
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        let def = table(tree)?;
        let txn = self.shared.begin()?;
        let conflict = {
            let mut t = txn.open_table(def).map_err(backend)?;
            let current = t.get(key).map_err(backend)?.map(|v| v.value().to_vec());
            if current.as_deref() != old {
                Some(CasConflict { current })
            } else {
                match new {
                    Some(v) => drop(t.insert(key, v).map_err(backend)?),
                    None => drop(t.remove(key).map_err(backend)?),
                }
                None
            }
        };
        match conflict {
            Some(conflict) => {
                txn.abort().map_err(backend)?;
                Ok(Err(conflict))
            }
            None => self.shared.commit(txn).map(Ok),
        }
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.shared.read(tree, |t| {
            let mut out = Vec::new();
            for r in t.range::<&[u8]>(prefix..).map_err(backend)? {
                let (k, v) = r.map_err(backend)?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn apply_batch(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        // One transaction: an error drops it uncommitted, so none applies.
        let txn = self.shared.begin()?;
        write_ops(&txn, tree, &ops)?;
        self.shared.commit(txn)
    }

    fn apply_batch_durable(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        // One durable commit (the default durability) instead of a
        // non-durable one and an empty durable one: it persists this batch
        // and every non-durable commit before it.
        let was_dirty = self.shared.dirty.swap(false, Ordering::AcqRel);
        let result = self.shared.begin_write().and_then(|txn| {
            write_ops(&txn, tree, &ops)?;
            txn.commit().map_err(backend)
        });
        if result.is_err() && was_dirty {
            self.shared.dirty.store(true, Ordering::Release);
        }
        result
    }

    fn range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Entries, StoreError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        self.shared.read(tree, |t| {
            let range = t.range::<&[u8]>(start..end).map_err(backend)?;
            collect(range, limit, reverse, |k, v| (k.to_vec(), v.to_vec()))
        })
    }

    fn keys(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        self.shared.read(tree, |t| {
            let range = t.range::<&[u8]>(start..end).map_err(backend)?;
            collect(range, limit, false, |k, _| k.to_vec())
        })
    }

    fn count(&self, tree: &str, start: &[u8], end: &[u8]) -> Result<usize, StoreError> {
        if start >= end {
            return Ok(0);
        }
        self.shared.read(tree, |t| {
            let mut n = 0;
            for r in t.range::<&[u8]>(start..end).map_err(backend)? {
                r.map_err(backend)?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        let mut ids = lock(&self.shared.ids);
        if ids.next >= ids.end {
            // Reserve the next block durably before handing any of it out,
            // so that no id is given twice, even after a crash.
            let end = ids
                .end
                .checked_add(ID_BLOCK)
                .ok_or_else(|| backend("the id space is exhausted"))?;
            let meta: Bytes<'_> = TableDefinition::new(META);
            let txn = self.shared.begin_write()?;
            txn.open_table(meta)
                .map_err(backend)?
                .insert(IDS_KEY, end.to_be_bytes().as_slice())
                .map_err(backend)?;
            txn.commit().map_err(backend)?;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        Ok(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.shared.sync()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        dir_size(&self.dir)
    }
}

/// Applies `ops` to `tree`'s table inside `txn`.
fn write_ops(
    txn: &WriteTransaction,
    tree: &str,
    ops: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<(), StoreError> {
    let mut t = txn.open_table(table(tree)?).map_err(backend)?;
    for (k, v) in ops {
        match v {
            Some(v) => drop(t.insert(k.as_slice(), v.as_slice()).map_err(backend)?),
            None => drop(t.remove(k.as_slice()).map_err(backend)?),
        }
    }
    Ok(())
}

/// Bytes of the files below `dir`.
fn dir_size(dir: &Path) -> Result<u64, StoreError> {
    let err = |e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let meta = entry.metadata().map_err(err)?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
