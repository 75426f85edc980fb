//! How the daemon runs: its options and their defaults, and the API
//! token it is reached with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::DaemonError;
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::oauth::seal::Sealer;
use crate::store::StoreChoice;
use crate::targets::Endpoints;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The folder of pushes and accounts.
    pub dir: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// Which store keeps it.
    pub store: StoreChoice,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The bearer token of the API; generated into the data directory if none.
    pub ingest_token: Option<String>,
    /// Largest accepted request body (default 1 MiB).
    pub max_body: usize,
    /// Deliveries in flight at most (default 64).
    pub concurrency: usize,
    /// Deliveries in flight per target host or mailbox (default 8; Graph mailboxes 4).
    pub per_target: usize,
    /// Queued jobs held in memory at most (default 10,000); beyond that
    /// they wait in the store only and are read back as the backlog drains.
    pub resident_jobs: usize,
    /// How long in-flight deliveries may finish after SIGTERM (default 10 s).
    pub grace: Duration,
    /// Delivery-log entries are kept this long (default 7 days) …
    pub log_max_age: chrono::Duration,
    /// … and at most this many (default 100,000).
    pub log_max_count: usize,
    /// Event ids are remembered this long for idempotency (default 7 days).
    pub event_window: chrono::Duration,
    /// Longest `Retry-After` honoured (default 10 min).
    pub retry_after_cap: Duration,
    /// Backoff when a target does not say when to retry.
    pub backoff: Backoff,
    /// Target and token-endpoint base URLs.
    pub endpoints: Endpoints,
    /// `--key-file`: the key of token state (else `PUSHWERK_KEY`,
    /// `PUSHWERK_KEY_FILE` or the default key file, generated if missing).
    pub key_file: Option<PathBuf>,
    /// The clock every due date, retry, cron tick and retention reads
    /// (the system's; tests give one that follows paused Tokio time).
    pub clock: Clock,
}

impl DaemonConfig {
    /// Defaults for `dir` and `data`.
    pub fn new(dir: PathBuf, data: PathBuf) -> DaemonConfig {
        DaemonConfig {
            dir,
            data,
            store: StoreChoice::Auto,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            ingest_token: None,
            max_body: 1024 * 1024,
            concurrency: 64,
            per_target: 8,
            resident_jobs: 10_000,
            grace: Duration::from_secs(10),
            log_max_age: chrono::Duration::days(7),
            log_max_count: 100_000,
            event_window: chrono::Duration::days(7),
            retry_after_cap: Duration::from_secs(600),
            backoff: Backoff::default(),
            endpoints: Endpoints::default(),
            key_file: None,
            clock: Clock::system(),
        }
    }
}

/// The API (ingest) token: configured, or read from / generated into
/// `DATA/ingest-token` (created 0600; warned about when others may read it).
pub(super) fn api_token(
    data: &Path,
    configured: Option<String>,
) -> Result<(String, Option<PathBuf>), DaemonError> {
    crate::secret::token_file::token_in_file(
        data.join("ingest-token"),
        configured,
        Sealer::generate_key,
    )
    .map_err(|e| DaemonError::io(format!("cannot set up {}", e.path.display()), e.source))
}
