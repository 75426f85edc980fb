//! Durable state: a small key-value [`Store`] trait and its sled
//! implementation. Everything pushwerk keeps (token state today; the queue
//! and the delivery log with the daemon) goes through this trait, so that a
//! server-grade store can replace sled 0.34 — old, single-process, and known
//! for space amplification — in one place.

mod sled_store;

pub use sled_store::SledStore;

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
    #[error("the data directory {0} is in use by another pushwerk process (sled allows one process at a time): stop it, or ask it through its HTTP API")]
    Locked(std::path::PathBuf),
    /// The database reported an error.
    #[error("store error: {0}")]
    Backend(String),
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
}

/// Key-value pairs as returned by a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

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
    /// A unique, increasing id (survives restarts).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<(), StoreError>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}
