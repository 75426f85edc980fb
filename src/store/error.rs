//! The store's error types: why an operation failed, and the outcome of a
//! lost compare-and-swap.

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
    #[error("the data directory {0} is in use by another pushwerk process (the store allows one process at a time): stop it, or ask it through its HTTP API")]
    Locked(std::path::PathBuf),
    /// The store's files are damaged (or are not a store): reported with
    /// what to do, instead of the backend's panic or bare message.
    #[error("the store in {} is damaged or unreadable ({detail}): restore the data directory from a backup, or move it aside (e.g. `mv {} {}.damaged`) and start with a new one (then import the OAuth tokens again; the queue and the delivery log stay in the old one)", .path.display(), .path.display(), .path.display())]
    Corrupt {
        /// The data directory.
        path: std::path::PathBuf,
        /// What the backend said.
        detail: String,
    },
    /// The database reported an error.
    #[error("store error: {0}")]
    Backend(String),
    /// The store cannot write now (the disk is full, an I/O error): the
    /// request may be repeated later; nothing is damaged.
    #[error("the store cannot write now (disk full?): {0}")]
    Unavailable(String),
    /// The database server (PostgreSQL) cannot be reached now, or failed
    /// the query for a passing reason (restarting, too many connections):
    /// the request may be repeated later, as for [`StoreError::Unavailable`],
    /// but the cause is the server, not a disk.
    #[error("the database is unreachable or the query failed ({url}): {reason}")]
    Unreachable {
        /// The database URL with its password masked (never the password).
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// The store was not opened, for a reason its caller gives (a token
    /// key that cannot be used on this store, a migration that cannot
    /// start): the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// The data was written by a newer pushwerk.
    #[error("the store has schema version {found}; this pushwerk understands up to {supported}")]
    SchemaVersion {
        /// Version found on disk.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
}

impl StoreError {
    /// Whether the operation may succeed if repeated later (a full disk, a
    /// database that is down): callers answer 503 or retry, not fail.
    pub fn is_passing(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Unreachable { .. }
        )
    }
}

/// The outcome of a failed compare-and-swap: someone else wrote first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasConflict {
    /// The value now stored.
    pub current: Option<Vec<u8>>,
}
