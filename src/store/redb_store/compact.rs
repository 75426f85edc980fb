//! Offline compaction of a closed redb store: every table copied into a
//! fresh file that replaces the old one, and the clean-up of a copy an
//! interrupted compaction left. Apart from the live store because it runs
//! only while no store is open (encryption turned on, `store compact`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::shared::backend;
use super::{Bytes, CACHE_BYTES, FILE_NAME};
use crate::store::StoreError;

/// Rewrites the (closed) redb store of `dir` into a fresh file: every
/// table is copied into `pushwerk.redb.compact`, which then replaces
/// `pushwerk.redb`. redb's own `compact` moves pages but leaves freed ones
/// as they were, so bytes that must not survive (a plaintext token, sealed
/// since) could stay in the file; a file that never held them cannot.
pub(crate) fn compact_offline(dir: &Path) -> Result<(), StoreError> {
    let live = dir.join(FILE_NAME);
    let fresh = dir.join(crate::store::REDB_COMPACT);
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
    crate::store::open_guarded(dir, || {
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
    let fresh = dir.join(crate::store::REDB_COMPACT);
    if fresh.is_file() {
        std::fs::remove_file(&fresh).map_err(|e| StoreError::Directory {
            path: dir.to_path_buf(),
            reason: format!("cannot remove an unfinished compaction: {e}"),
        })?;
    }
    Ok(())
}
