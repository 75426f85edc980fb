//! Why the daemon could not start or act, each reason carrying its source
//! (the queue's, the store's, the system's error) so that a caller can
//! tell a full disk from a damaged record and a log shows the whole chain.

use std::path::PathBuf;
use std::sync::Arc;

use crate::delivery::QueueError;
use crate::store::StoreError;

/// Why the daemon could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The folder cannot be read.
    #[error(transparent)]
    Load(#[from] crate::config::LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The encryption key is unusable.
    #[error(transparent)]
    Seal(#[from] crate::oauth::seal::SealError),
    /// The token store could not be opened.
    #[error(transparent)]
    Tokens(crate::oauth::OAuthError),
    /// Events could not be stored.
    #[error("cannot store accepted events: {0}")]
    Accept(#[source] CommitError),
    /// Writes could not be made durable.
    #[error("cannot make accepted events durable: {0}")]
    Flush(#[source] CommitError),
    /// The daemon is shutting down.
    #[error("shutting down: not accepting events")]
    ShuttingDown,
    /// A file or a thread of the daemon's own (the token file, the
    /// folder watcher's thread, the SIGHUP handler).
    #[error("{what}: {source}")]
    Io {
        /// What could not be done.
        what: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The folder cannot be watched.
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        /// The folder.
        dir: PathBuf,
        /// The watcher's reason.
        #[source]
        source: notify::Error,
    },
    /// A task of the daemon's ended without an answer (it panicked).
    #[error("a daemon task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl DaemonError {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Why the group commit could not store or flush a request's events. One
/// failed batch answers every request in it, so the source is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The queue refused the batch (the store failed, or a record is damaged).
    #[error(transparent)]
    Queue(Arc<QueueError>),
    /// The store could not flush.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The committer thread is gone (the daemon is stopping).
    #[error("committer stopped")]
    Stopped,
}

impl From<QueueError> for CommitError {
    fn from(e: QueueError) -> CommitError {
        CommitError::Queue(Arc::new(e))
    }
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> CommitError {
        CommitError::Store(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_failed_flush_keeps_the_store_error_as_its_source() {
        let store = StoreError::Unavailable("No space left on device (os error 28)".into());
        let e = DaemonError::Flush(CommitError::from(store));
        // The API answers with the message: the reason stays in it …
        assert!(e.to_string().contains("No space left"), "{e}");
        // … and a caller can walk to the store's error.
        let source = e.source().expect("a source");
        assert!(source.to_string().contains("No space left"));
        assert!(matches!(
            e,
            DaemonError::Flush(CommitError::Store(ref s)) if matches!(**s, StoreError::Unavailable(_))
        ));
    }
}
