//! What a [`RedbStore`](super::RedbStore) and its background flush thread
//! share: the database (reopened after redb's I/O-error state), the dirty
//! flag, the id block, and the flush loop itself. Apart from the `Store`
//! implementation because this is where durability and disk-full recovery
//! are decided.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition,
    TableError, WriteTransaction,
};

use super::{Bytes, CACHE_BYTES, META};
use crate::store::StoreError;

pub(super) fn backend(e: impl std::fmt::Display) -> StoreError {
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
pub(super) fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The table for a caller's tree; the store's own table is not one.
pub(super) fn table(tree: &str) -> Result<Bytes<'_>, StoreError> {
    if tree == META {
        return Err(StoreError::Backend(format!(
            "the tree name {META:?} is reserved by the store"
        )));
    }
    Ok(TableDefinition::new(tree))
}

/// The next ids to hand out: `next..end` is reserved on disk already.
#[derive(Debug)]
pub(super) struct IdBlock {
    pub(super) next: u64,
    pub(super) end: u64,
}

/// What the store and its flush thread share.
pub(super) struct Shared {
    /// `None` only between a failed reopen and the next attempt.
    pub(super) db: RwLock<Option<Database>>,
    /// The database file, for reopening after an I/O error.
    pub(super) path: PathBuf,
    /// Set after a non-durable commit; cleared by the durable one after it.
    pub(super) dirty: AtomicBool,
    pub(super) ids: Mutex<IdBlock>,
    /// Set by `Drop` to stop the flush thread; `wake` interrupts its wait.
    pub(super) stop: Mutex<bool>,
    pub(super) wake: Condvar,
}

impl Shared {
    /// Runs `begin` on the database; if redb refuses because an earlier
    /// write failed (a full disk: it then refuses everything until it is
    /// reopened), reopens it — which succeeds once space is back — and
    /// runs `begin` again. Without this one full disk would fail every
    /// request until the daemon is restarted.
    pub(super) fn with_db<T>(
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
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
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

    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.with_db(|db| db.begin_write().map_err(backend))
    }

    /// A write transaction that commits without fsync.
    pub(super) fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.begin_write()?;
        txn.set_durability(Durability::None).map_err(backend)?;
        Ok(txn)
    }

    /// Commits a transaction from [`Shared::begin`] and notes that a
    /// durable commit is due.
    pub(super) fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(backend)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// An empty durable commit: it fsyncs the state of every commit before
    /// it, the non-durable ones included.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
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
    pub(super) fn read<T: Default>(
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
pub(super) fn flush_loop(shared: Arc<Shared>, every: Duration) {
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
