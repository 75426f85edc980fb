//! `pushwerk store migrate`: copies a data directory's store into the other
//! backend (sled → redb, the default since redb stays bounded, or back),
//! into an empty PostgreSQL database ([`copy_to_postgres`]), or such a
//! database back into a data directory ([`copy_from_postgres`]).
//!
//! Everything the store holds is copied record by record — token records
//! as sealed as they are, the queue, retrying jobs, dead letters, the
//! delivery log, accepted event ids, cron marks — and the id counter is
//! carried over, so that new jobs never reuse an id. The copy is built in
//! `DATA/migrate.partial/`, compared with the source, and only then put in
//! place; the old store is kept beside it under a `.migrated-<time>` name,
//! so that a failed or unwanted migration loses nothing.

use std::path::{Path, PathBuf};

use super::{redb_store, secure_dir, RedbStore, SledStore, Store, StoreChoice, StoreError};

/// Where a migration builds the new store (a data directory of its own).
pub(crate) const STAGING: &str = "migrate.partial";
/// Written into [`STAGING`] once the copy is complete and verified.
const COMPLETE: &str = "complete";
/// The prefix of a sled store a migration moved aside.
pub(crate) const SLED_ASIDE: &str = "sled.migrated-";
/// The prefix of a redb file a migration moved aside.
pub(crate) const REDB_ASIDE: &str = "pushwerk.redb.migrated-";
/// Records copied per batch.
const BATCH: usize = 10_000;

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Records copied, per tree.
    pub trees: Vec<(String, usize)>,
    /// Where the old store now is.
    pub old_store: PathBuf,
}

/// Either backend, opened on its own (not as `dyn Store`), for what only
/// a migration needs.
enum Backend {
    Sled(SledStore),
    Redb(RedbStore),
}

impl Backend {
    fn open(dir: &Path, kind: StoreChoice) -> Result<Backend, StoreError> {
        Ok(match kind {
            StoreChoice::Sled => Backend::Sled(SledStore::open(dir)?),
            _ => Backend::Redb(RedbStore::open(dir)?),
        })
    }

    fn store(&self) -> &dyn Store {
        match self {
            Backend::Sled(s) => s,
            Backend::Redb(s) => s,
        }
    }

    fn tree_names(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Backend::Sled(s) => Ok(s.tree_names()),
            Backend::Redb(s) => s.tree_names(),
        }
    }

    fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        match self {
            Backend::Sled(s) => s.raise_ids(floor),
            Backend::Redb(s) => s.raise_ids(floor),
        }
    }
}

/// `pushwerk store migrate --from sled|redb --to postgres` (#15): copies
/// every record of the data directory's `from` store into the (empty)
/// PostgreSQL database of `to`, checks the counts, and raises the
/// database's id sequence above every id the store handed out. The rows
/// are held by no live node, so the first node that runs takes the queued
/// jobs. The embedded store is left as it is (delete it once the nodes
/// serve). Refused while a daemon holds the directory, or if the database
/// holds records already.
pub fn copy_to_postgres(
    dir: &Path,
    from: StoreChoice,
    to: &super::PgStore,
) -> Result<Vec<(String, usize)>, StoreError> {
    if !dir.join(entry(from)).exists() {
        return Err(StoreError::Refused(format!(
            "the data directory {} holds no {} store: nothing to migrate",
            dir.display(),
            name(from)
        )));
    }
    if !to.is_empty()? {
        return Err(StoreError::Refused(
            "the database holds pushwerk records already: migrate into an empty one (nothing was changed)".into(),
        ));
    }
    let source = Backend::open(dir, from)?;
    let mut trees = Vec::new();
    for tree in source.tree_names()? {
        let records = source.store().scan_prefix(&tree, b"")?;
        if records.is_empty() {
            continue;
        }
        let n = records.len();
        let mut batch = Vec::with_capacity(BATCH.min(n));
        for (k, v) in records {
            batch.push((k, Some(v)));
            if batch.len() == BATCH {
                to.apply_batch(&tree, std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(&tree, batch)?;
        let copied = to.count(&tree, &[], &[0xff; 64])?;
        if copied != n {
            return Err(StoreError::Backend(format!(
                "the copy of tree `{tree}` holds {copied} records, not {n}"
            )));
        }
        trees.push((tree, n));
    }
    to.raise_ids(source.store().next_id()?)?;
    to.release_rows()?;
    Ok(trees)
}

/// Trees that mean something only to several nodes on one database, left
/// out of a copy into an embedded store: the token refresh leases
/// (`token_leases` of `oauth::token_store`), which an embedded store
/// never takes.
const SHARED_ONLY: &[&str] = &["token_leases"];

/// `pushwerk store migrate --from postgres --to redb|sled` (#15, the way
/// back): copies every record of the PostgreSQL database `from` — token
/// records as sealed, the queue (jobs leased by a node come back as
/// ordinary queued jobs: a lease is a column of the database, not part of
/// the record), dead letters, the delivery log, accepted event ids, cron
/// marks — into a new `to` store in the data directory `dir`, read from
/// one snapshot and written in batches (bounded memory). Ids handed out
/// afterwards are above every id the database handed out. The copy is
/// built in `DATA/migrate.partial/` and put in place only when complete and counted,
/// as [`migrate`] does. The database is left as it was. Refused while any
/// node runs on the database (before the copy, or one that started
/// during it), when `dir` holds a store already, or when the database
/// holds no record. Returns the records copied per tree.
pub fn copy_from_postgres(
    from: &super::PgStore,
    dir: &Path,
    to: StoreChoice,
) -> Result<Vec<(String, usize)>, StoreError> {
    let refuse = |m: String| Err(StoreError::Refused(m));
    if !matches!(to, StoreChoice::Sled | StoreChoice::Redb) {
        return refuse("--from postgres copies into --to redb or --to sled".into());
    }
    secure_dir(dir)?;
    finish_interrupted(dir)?;
    for kind in [StoreChoice::Sled, StoreChoice::Redb] {
        if dir.join(entry(kind)).exists() {
            return refuse(format!(
                "the data directory {} holds a {} store already ({}): move it away first (nothing was changed)",
                dir.display(),
                name(kind),
                entry(kind)
            ));
        }
    }
    if from.is_empty()? {
        return refuse(
            "the database holds no pushwerk records: nothing to migrate (nothing was changed)"
                .into(),
        );
    }
    let staging = dir.join(STAGING);
    let io = |what: &str, e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("migration: cannot {what}: {e}"),
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io("remove an unfinished copy", e))?;
    }
    wait_for_stopped_nodes(from)?;
    let copied = copy_into_staging(from, &staging, to);
    let trees = match copied {
        Ok(trees) => trees,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    std::fs::write(staging.join(COMPLETE), b"").map_err(|e| io("mark the copy complete", e))?;
    sync_dir(&staging);
    std::fs::rename(staging.join(entry(to)), dir.join(entry(to)))
        .map_err(|e| io("put the new store in place", e))?;
    sync_dir(dir);
    std::fs::remove_dir_all(&staging).map_err(|e| io("remove the staging directory", e))?;
    Ok(trees)
}

/// Before a copy out of the database: nodes whose heartbeat is younger
/// than the lease are watched until it runs out, as a node starting under
/// a taken name does. A heartbeat that changes meanwhile is a live node:
/// refused at once, naming it. None changing: they stopped (or died) a
/// moment ago, and the copy may go on.
fn wait_for_stopped_nodes(from: &super::PgStore) -> Result<(), StoreError> {
    use super::postgres::HEARTBEAT;
    let first = from.live_nodes()?;
    if first.is_empty() {
        return Ok(());
    }
    // Each node's own lease: the longest is how long to watch.
    let lease = first.iter().map(|n| n.lease).max().unwrap_or_default();
    tracing::warn!(
        "the heartbeat of {} is fresh: watching it for up to {:.0} s — a running node refuses the copy, one that stopped lets it go on",
        first.iter().map(|n| format!("`{}`", n.name)).collect::<Vec<_>>().join(", "),
        lease.as_secs_f32()
    );
    let deadline = std::time::Instant::now() + lease + HEARTBEAT * 2;
    let beating = |now: &[super::postgres::LiveNode]| -> Vec<String> {
        now.iter()
            .filter(|n| first.iter().any(|f| f.name == n.name && f.seen != n.seen))
            .map(|n| n.name.clone())
            .collect()
    };
    loop {
        std::thread::sleep(HEARTBEAT / 5);
        let mut now = from.live_nodes()?;
        let mut beating_now = beating(&now);
        if !beating_now.is_empty() {
            // One heartbeat more, to name every node that runs.
            std::thread::sleep(HEARTBEAT + HEARTBEAT / 5);
            now = from.live_nodes()?;
            beating_now = beating(&now);
        }
        if !beating_now.is_empty() || std::time::Instant::now() > deadline {
            let beating = beating_now;
            let names = if beating.is_empty() {
                now.into_iter().map(|n| n.name).collect()
            } else {
                beating
            };
            return Err(running(&names));
        }
        if now.is_empty() {
            return Ok(());
        }
    }
}

/// The refusal while `live` nodes run on the database.
fn running(live: &[String]) -> StoreError {
    StoreError::Refused(format!(
        "{} running on this database ({}): stop every node first (nothing was changed)",
        if live.len() == 1 {
            "a pushwerk node is"
        } else {
            "pushwerk nodes are"
        },
        live.iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// The copy of [`copy_from_postgres`] into a new store in `staging`,
/// counted per tree, closed (flushed) when it returns.
fn copy_into_staging(
    from: &super::PgStore,
    staging: &Path,
    to: StoreChoice,
) -> Result<Vec<(String, usize)>, StoreError> {
    let none_running = |live: &[String]| match live {
        [] => Ok(()),
        _ => Err(running(live)),
    };
    let target = Backend::open(staging, to)?;
    let mut trees: Vec<(String, usize)> = Vec::new();
    let floor = from.export(BATCH, SHARED_ONLY, none_running, |page| {
        match trees.last_mut() {
            Some((tree, n)) if *tree == page.tree => *n += page.rows.len(),
            _ => trees.push((page.tree.clone(), page.rows.len())),
        }
        let ops = page.rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
        target.store().apply_batch(&page.tree, ops)
    })?;
    target.store().flush()?;
    for (tree, n) in &trees {
        let copied = target.store().count(tree, &[], &[0xff; 64])?;
        if copied != *n {
            return Err(StoreError::Backend(format!(
                "migration: the copy of tree `{tree}` holds {copied} records, not {n} (nothing was changed)"
            )));
        }
    }
    // A node that started during the copy may have taken jobs the copy
    // holds too: both would deliver them.
    let live: Vec<String> = from.live_nodes()?.into_iter().map(|n| n.name).collect();
    none_running(&live)?;
    target.raise_ids(floor)?;
    target.store().flush()?;
    Ok(trees)
}

/// The entry of `kind`'s store in a data directory.
fn entry(kind: StoreChoice) -> &'static str {
    match kind {
        StoreChoice::Sled => "sled",
        _ => redb_store::FILE_NAME,
    }
}

fn name(kind: StoreChoice) -> &'static str {
    match kind {
        StoreChoice::Sled => "sled",
        _ => "redb",
    }
}

/// Copies the `from` store of the data directory `dir` into a new `to`
/// store, verifies the copy, puts it in place and moves the old store
/// aside (`sled.migrated-<time>` or `pushwerk.redb.migrated-<time>`).
/// Refused while another process holds the store, when `dir` holds no
/// `from` store, or already holds a `to` store.
pub fn migrate(dir: &Path, from: StoreChoice, to: StoreChoice) -> Result<Migrated, StoreError> {
    let refuse = |m: String| Err(StoreError::Refused(m));
    if from == StoreChoice::Auto || to == StoreChoice::Auto || from == to {
        return refuse(
            "migrate needs two different stores: --from sled --to redb, or --from redb --to sled"
                .into(),
        );
    }
    if !dir.is_dir() {
        return refuse(format!(
            "there is no data directory {}: nothing to migrate",
            dir.display()
        ));
    }
    secure_dir(dir)?;
    finish_interrupted(dir)?;
    let source_path = dir.join(entry(from));
    if !source_path.exists() {
        return refuse(format!(
            "the data directory {} holds no {} store: nothing to migrate",
            dir.display(),
            name(from)
        ));
    }
    if dir.join(entry(to)).exists() {
        return refuse(format!(
            "the data directory {} holds a {} store already: move it away first (nothing was changed)",
            dir.display(),
            name(to)
        ));
    }
    let staging = dir.join(STAGING);
    let io = |what: &str, e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("migration: cannot {what}: {e}"),
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io("remove an unfinished copy", e))?;
    }
    let source = Backend::open(dir, from)?;
    let trees = {
        let target = Backend::open(&staging, to)?;
        let mut trees = Vec::new();
        for tree in source.tree_names()? {
            let records = source.store().scan_prefix(&tree, b"")?;
            if records.is_empty() {
                continue;
            }
            for chunk in records.chunks(BATCH) {
                let ops = chunk
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                target.store().apply_batch(&tree, ops)?;
            }
            target.store().flush()?;
            // Verified record by record before anything is moved.
            if target.store().scan_prefix(&tree, b"")? != records {
                return Err(StoreError::Backend(format!(
                    "migration: the copy of tree `{tree}` differs from the source (nothing was changed)"
                )));
            }
            trees.push((tree, records.len()));
        }
        let floor = source.store().next_id()?.saturating_add(1);
        target.raise_ids(floor)?;
        target.store().flush()?;
        trees
    };
    drop(source);
    std::fs::write(staging.join(COMPLETE), b"").map_err(|e| io("mark the copy complete", e))?;
    sync_dir(&staging);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let prefix = match from {
        StoreChoice::Sled => SLED_ASIDE,
        _ => REDB_ASIDE,
    };
    let mut aside = dir.join(format!("{prefix}{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = dir.join(format!("{prefix}{stamp}-{n}"));
    }
    std::fs::rename(&source_path, &aside).map_err(|e| io("move the old store aside", e))?;
    std::fs::rename(staging.join(entry(to)), dir.join(entry(to)))
        .map_err(|e| io("put the new store in place", e))?;
    sync_dir(dir);
    std::fs::remove_dir_all(&staging).map_err(|e| io("remove the staging directory", e))?;
    Ok(Migrated {
        trees,
        old_store: aside,
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Finishes or undoes a migration an interruption left behind: a complete
/// copy whose source was already moved aside is put in place; anything
/// else in the staging directory is deleted (the source is still there).
pub(crate) fn finish_interrupted(dir: &Path) -> Result<(), StoreError> {
    let staging = dir.join(STAGING);
    if !staging.is_dir() {
        return Ok(());
    }
    let io = |e: std::io::Error| StoreError::Directory {
        path: dir.to_path_buf(),
        reason: format!("cannot finish an interrupted migration: {e}"),
    };
    let live = |kind| dir.join(entry(kind)).exists();
    if staging.join(COMPLETE).is_file() && !live(StoreChoice::Sled) && !live(StoreChoice::Redb) {
        for kind in [StoreChoice::Sled, StoreChoice::Redb] {
            if staging.join(entry(kind)).exists() {
                std::fs::rename(staging.join(entry(kind)), dir.join(entry(kind))).map_err(io)?;
            }
        }
    }
    std::fs::remove_dir_all(&staging).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod from_postgres;
