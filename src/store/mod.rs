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

mod choice;
mod dir;
mod error;

pub use choice::{holds_store, open, open_prepared, StoreChoice, COMPACT_PENDING};
pub(crate) use dir::{
    open_guarded, secure_dir, secure_tree, REDB_COMPACT, SCHEMA_VERSION, SLED_COMPACT, SLED_OLD,
};
pub use error::{CasConflict, StoreError};

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

    /// The process is leaving after its last write: a shared store gives
    /// up what it holds for this node (its heartbeat, so its leased rows
    /// are taken over at once instead of after the lease). Called by the
    /// daemon at a clean stop; the store stays usable for reads. Nothing to
    /// do for a store of one process.
    fn release(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The [`Store`] contract as tests, run against every implementation so
/// that the stores stay interchangeable.
#[cfg(test)]
pub(crate) mod conformance;
#[cfg(test)]
mod tests;
