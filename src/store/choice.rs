//! Which store keeps a data directory ([`StoreChoice`]) and opening it:
//! the one place that picks redb, sled or PostgreSQL.

use std::path::Path;

use super::{
    migrate, redb_store, secure_dir, sled_store, trees, PgStore, RedbStore, SledStore, Store,
    StoreError,
};

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
