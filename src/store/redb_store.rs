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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable,
    StorageError, TableDefinition, TableError, TableHandle, WriteTransaction,
};

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

fn backend(e: impl std::fmt::Display) -> StoreError {
    let message = e.to_string();
    // redb reports a failed write (ENOSPC, EIO) as an I/O error, and every
    // transaction after it as "Previous I/O error" until the database is
    // reopened (see `Shared::begin_write`). Both mean: cannot write now,
    // try again later — not a damaged store.
    if message.contains("No space left on device")
        || message.contains("os error 28")
        || message.contains("Previous I/O error")
        || message.contains("Disk quota exceeded")
    {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

/// Opens (creating) the database file at `path` with the store's settings.
fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The table for a caller's tree; the store's own table is not one.
fn table(tree: &str) -> Result<Bytes<'_>, StoreError> {
    if tree == META {
        return Err(StoreError::Backend(format!(
            "the tree name {META:?} is reserved by the store"
        )));
    }
    Ok(TableDefinition::new(tree))
}

/// The next ids to hand out: `next..end` is reserved on disk already.
#[derive(Debug)]
struct IdBlock {
    next: u64,
    end: u64,
}

/// What the store and its flush thread share.
struct Shared {
    /// `None` only between a failed reopen and the next attempt.
    db: RwLock<Option<Database>>,
    /// The database file, for reopening after an I/O error.
    path: PathBuf,
    /// Set after a non-durable commit; cleared by the durable one after it.
    dirty: AtomicBool,
    ids: Mutex<IdBlock>,
    /// Set by `Drop` to stop the flush thread; `wake` interrupts its wait.
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    /// Runs `begin` on the database; if redb refuses because an earlier
    /// write failed (a full disk: it then refuses everything until it is
    /// reopened), reopens it — which succeeds once space is back — and
    /// runs `begin` again. Without this one full disk would fail every
    /// request until the daemon is restarted.
    fn with_db<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = db.as_ref() {
                match begin(db) {
                    Err(StoreError::Unavailable(m)) if m.contains("Previous I/O error") => {}
                    other => return other,
                }
            }
        }
        self.reopen()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        begin(
            db.as_ref()
                .ok_or_else(|| StoreError::Unavailable("the database is not open".into()))?,
        )
    }

    /// Closes and reopens the database file (redb's answer to an I/O error).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have reopened it meanwhile.
        if let Some(open) = db.as_ref() {
            if open.begin_read().is_ok() && open.begin_write().is_ok() {
                return Ok(());
            }
        }
        // The file lock belongs to the open database: close it first.
        drop(db.take());
        let reopened = open_database(&self.path).map_err(backend)?;
        // The reopened file holds the last durable commit only: say so
        // loudly when non-durable ones were pending (the daemon confirms
        // its delivery outcomes by reading them back and writes dropped
        // ones again).
        if self.dirty.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                file = %self.path.display(),
                "reopened the store after an I/O error: writes not yet flushed were dropped"
            );
        } else {
            tracing::warn!(file = %self.path.display(), "reopened the store after an I/O error");
        }
        *db = Some(reopened);
        Ok(())
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.with_db(|db| db.begin_write().map_err(backend))
    }

    /// A write transaction that commits without fsync.
    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.begin_write()?;
        txn.set_durability(Durability::None).map_err(backend)?;
        Ok(txn)
    }

    /// Commits a transaction from [`Shared::begin`] and notes that a
    /// durable commit is due.
    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(backend)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// An empty durable commit: it fsyncs the state of every commit before
    /// it, the non-durable ones included.
    fn sync(&self) -> Result<(), StoreError> {
        // Cleared first: a write committed after this point sets it again.
        let was_dirty = self.dirty.swap(false, Ordering::AcqRel);
        let result = self
            .begin_write()
            .and_then(|txn| txn.commit().map_err(backend));
        if result.is_err() && was_dirty {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }

    /// Runs `f` on the tree's table in a read snapshot; a tree never
    /// written reads as empty (`T::default()`).
    fn read<T: Default>(
        &self,
        tree: &str,
        f: impl FnOnce(&ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let def = table(tree)?;
        let txn = self.with_db(|db| db.begin_read().map_err(backend))?;
        match txn.open_table(def) {
            Ok(t) => f(&t),
            Err(TableError::TableDoesNotExist(_)) => Ok(T::default()),
            Err(e) => Err(backend(e)),
        }
    }
}

/// Every [`FLUSH_EVERY`], a durable commit if something was written since
/// the last one; returns when the store is dropped.
fn flush_loop(shared: Arc<Shared>, every: Duration) {
    loop {
        {
            let stop = lock(&shared.stop);
            if *stop {
                return;
            }
            let (stop, _) = shared
                .wake
                .wait_timeout(stop, every)
                .unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        if shared.dirty.load(Ordering::Acquire) {
            if let Err(e) = shared.sync() {
                tracing::warn!(error = %e, "background flush of the store failed; retrying");
            }
        }
    }
}

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

/// Rewrites the (closed) redb store of `dir` into a fresh file: every
/// table is copied into `pushwerk.redb.compact`, which then replaces
/// `pushwerk.redb`. redb's own `compact` moves pages but leaves freed ones
/// as they were, so bytes that must not survive (a plaintext token, sealed
/// since) could stay in the file; a file that never held them cannot.
pub(crate) fn compact_offline(dir: &Path) -> Result<(), StoreError> {
    let live = dir.join(FILE_NAME);
    let fresh = dir.join(super::REDB_COMPACT);
    let io = |what: &str, e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("compaction: cannot {what}: {e}"),
    };
    if fresh.exists() {
        std::fs::remove_file(&fresh).map_err(|e| io("remove an unfinished copy", e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&fresh)
        .map_err(|e| io("create the new file", e))?;
    super::open_guarded(dir, || {
        let old = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&live)
            .map_err(backend)?;
        let new = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&fresh)
            .map_err(backend)?;
        let read = old.begin_read().map_err(backend)?;
        let write = new.begin_write().map_err(backend)?;
        for handle in read.list_tables().map_err(backend)? {
            let name = handle.name().to_owned();
            let def: Bytes<'_> = TableDefinition::new(&name);
            let from = read.open_table(def).map_err(backend)?;
            let mut to = write.open_table(def).map_err(backend)?;
            for entry in from.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                to.insert(k.value(), v.value()).map_err(backend)?;
            }
        }
        write.commit().map_err(backend)?;
        Ok(())
    })?;
    std::fs::File::open(&fresh)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("sync the new file", e))?;
    std::fs::rename(&fresh, &live).map_err(|e| io("put the new file in place", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Deletes a copy an interrupted compaction left behind (the rename that
/// would have put it in place never happened).
pub(crate) fn finish_interrupted_compaction(dir: &Path) -> Result<(), StoreError> {
    let fresh = dir.join(super::REDB_COMPACT);
    if fresh.is_file() {
        std::fs::remove_file(&fresh).map_err(|e| StoreError::Directory {
            path: dir.to_path_buf(),
            reason: format!("cannot remove an unfinished compaction: {e}"),
        })?;
    }
    Ok(())
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
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn meets_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        conformance::exercise(&RedbStore::open(dir.path()).unwrap());
    }

    #[test]
    fn values_survive_a_reopen_and_files_are_private() {
        conformance::survives_reopen(RedbStore::open);
    }

    #[test]
    fn a_second_open_is_locked() {
        conformance::second_open_is_locked(RedbStore::open);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(RedbStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(Bytes::new(META))
                .unwrap()
                .insert(SCHEMA_KEY, (SCHEMA_VERSION + 1).to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        match RedbStore::open(dir.path()) {
            Err(StoreError::SchemaVersion { found, supported }) => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaVersion, got {other:?}"),
        }
    }

    #[test]
    fn the_meta_table_is_not_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        assert!(matches!(
            s.put(META, b"k", b"v"),
            Err(StoreError::Backend(_))
        ));
        assert!(matches!(
            s.get(META, SCHEMA_KEY),
            Err(StoreError::Backend(_))
        ));
    }

    #[test]
    fn ids_stay_increasing_across_reopens_within_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = None;
        for _ in 0..3 {
            let s = RedbStore::open(dir.path()).unwrap();
            for _ in 0..5 {
                let id = s.next_id().unwrap();
                assert!(last.is_none_or(|l| id > l), "{id} after {last:?}");
                last = Some(id);
            }
        }
    }

    /// A batch is one transaction: a reader's snapshot sees all of it or
    /// none of it, never a part.
    #[test]
    fn readers_never_see_part_of_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(RedbStore::open(dir.path()).unwrap());
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for round in 0u32..200 {
                    let v = round.to_be_bytes().to_vec();
                    let ops = (0u8..20).map(|k| (vec![k], Some(v.clone()))).collect();
                    s.apply_batch("t", ops).unwrap();
                }
            })
        };
        while !writer.is_finished() {
            let seen = s.range("t", &[], &[0xff], 100, false).unwrap();
            assert!(seen.is_empty() || seen.len() == 20, "{} keys", seen.len());
            assert!(seen.windows(2).all(|w| w[0].1 == w[1].1), "mixed rounds");
        }
        writer.join().unwrap();
        assert_eq!(s.count("t", &[], &[0xff]).unwrap(), 20);
    }

    // Crash tests: a child process (this test binary, running one ignored
    // test) writes and then ends with `_exit`, which runs no destructor:
    // what it had not made durable is lost, as in a crash.

    const CHILD_DIR: &str = "PUSHWERK_REDB_CRASH_DIR";
    const CHILD_MODE: &str = "PUSHWERK_REDB_CRASH_MODE";

    /// Runs `crash_child` in a new process on `dir` in `mode`.
    fn crash(dir: &Path, mode: &str) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::redb_store::tests::crash_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_DIR, dir)
            .env(CHILD_MODE, mode)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7), "the child did not reach its crash");
    }

    #[test]
    #[ignore = "the child half of the crash tests; run by them"]
    fn crash_child() {
        let (Some(dir), Some(mode)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_MODE).ok())
        else {
            return;
        };
        let dir = PathBuf::from(dir);
        // Ends the process at once, as a crash would, with the store open.
        fn crash_now<T>(_open: &T) -> ! {
            // SAFETY: `_exit` ends the process; nothing runs after it.
            unsafe { libc::_exit(7) }
        }
        match mode.as_str() {
            "flush" => {
                let s = RedbStore::open_with(&dir, None).unwrap();
                s.put("t", b"flushed", b"v").unwrap();
                s.apply_batch("t", vec![(b"batch".to_vec(), Some(b"v".to_vec()))])
                    .unwrap();
                s.flush().unwrap();
                s.put("t", b"unflushed", b"v").unwrap();
                crash_now(&s)
            }
            "durable-batch" => {
                let s = RedbStore::open_with(&dir, None).unwrap();
                s.put("t", b"before", b"v").unwrap();
                s.apply_batch_durable("t", vec![(b"batch".to_vec(), Some(b"v".to_vec()))])
                    .unwrap();
                s.put("t", b"after", b"v").unwrap();
                crash_now(&s)
            }
            "background" => {
                let s = RedbStore::open(&dir).unwrap();
                s.put("t", b"background", b"v").unwrap();
                std::thread::sleep(FLUSH_EVERY * 4);
                crash_now(&s)
            }
            "ids" => {
                let s = RedbStore::open_with(&dir, None).unwrap();
                let ids: Vec<u64> = (0..3).map(|_| s.next_id().unwrap()).collect();
                // Beside the data directory, which holds pushwerk's files only.
                std::fs::write(dir.with_file_name("ids"), format!("{}", ids[2])).unwrap();
                crash_now(&s)
            }
            other => panic!("unknown mode {other}"),
        }
    }

    #[test]
    fn flush_makes_writes_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        crash(dir.path(), "flush");
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"flushed").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.get("t", b"batch").unwrap(), Some(b"v".to_vec()));
        // Not flushed: lost, which shows the crash was real.
        assert_eq!(s.get("t", b"unflushed").unwrap(), None);
    }

    #[test]
    fn a_durable_batch_survives_a_crash_with_every_write_before_it() {
        let dir = tempfile::tempdir().unwrap();
        crash(dir.path(), "durable-batch");
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"batch").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.get("t", b"before").unwrap(), Some(b"v".to_vec()));
        assert_eq!(s.get("t", b"after").unwrap(), None, "the crash was real");
    }

    #[test]
    fn the_background_flush_makes_writes_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        crash(dir.path(), "background");
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"background").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn ids_stay_unique_after_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        crash(&dir, "ids");
        let given: u64 = std::fs::read_to_string(tmp.path().join("ids"))
            .unwrap()
            .parse()
            .unwrap();
        let s = RedbStore::open(&dir).unwrap();
        let id = s.next_id().unwrap();
        assert!(id > given, "{id} after {given} before the crash");
    }
}
