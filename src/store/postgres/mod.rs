//! [`PgStore`]: the [`Store`] trait on PostgreSQL, so that several pushwerk
//! processes ("nodes") share one queue, one delivery log and one token
//! state (issue #15).
//!
//! Layout (see [`MIGRATIONS`]): one table `pushwerk_kv (tree, key, value,
//! lease_node)` keyed by `(tree, key)` with `bytea` keys and values —
//! PostgreSQL orders `bytea` byte-wise, as redb and sled do, so ranges and
//! prefixes mean the same — a table of live nodes (`pushwerk_nodes`, a
//! heartbeat per node) and a sequence for ids.
//!
//! What several nodes need beyond a key-value store:
//! - **Leases** ([`Store::claim`]): every row records the node that wrote
//!   it last (`lease_node`); a node holds the jobs it wrote or claimed for
//!   as long as its heartbeat is fresh (younger than its lease, kept in
//!   its `pushwerk_nodes` row: each node is judged by its own). Another
//!   node claims a row only when its holder's heartbeat is stale (the node
//!   died), with `FOR UPDATE SKIP LOCKED`, so two nodes never claim the same
//!   row at once. Time is the server's (`now()`), never a node's clock.
//! - **Unique claims** ([`Store::apply_claimed`]): accepted event ids are
//!   inserted under the primary key with `ON CONFLICT DO NOTHING` in the
//!   same transaction as their jobs, so the same id posted to two nodes at
//!   once makes one set of jobs (and a cron tick, whose id names the push
//!   and the tick, fires once cluster-wide).
//! - **Node name** ([`Store::node`]): tells the queue and the token store
//!   that other processes share the data (token refreshes then take a
//!   cluster-wide lease, see `oauth::token_store`). A name is held by one
//!   live process at a time: a second one started under a name whose
//!   heartbeat is fresh is refused.
//!
//! The trait is synchronous and is called from inside tokio runtimes, where
//! the blocking `postgres` crate panics (it starts a runtime of its own).
//! So `tokio-postgres` runs on a small runtime owned by the store (two
//! threads), with a pool of [`POOL`] connections; a call from any thread
//! hands its future to that runtime and waits for the answer on a channel.
//! Connections that broke (the server restarted) are made again at the
//! next call; until then calls fail with [`StoreError::Unreachable`] and
//! [`Store::health`] reports the reason (`/readyz` is not ready).
//!
//! TLS: not supported (`NoTls`): use a loopback or otherwise private
//! connection (a Unix socket: `host=/var/run/postgresql`), or a TLS
//! terminating proxy on the node.
//!
//! The parts: this file holds the settings, the type and the trait's
//! table of contents; `connect` the runtime, the pool and opening;
//! `schema` the migrations; `kv` the plain key-value operations;
//! `claims` what makes several nodes safe (node names, heartbeats,
//! leased rows, unique claims); `export` reading a whole database out
//! (`store migrate --from postgres`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{CasConflict, ClaimedBatch, Entries, Store, StoreError};

mod claims;
mod connect;
mod export;
mod kv;
mod schema;

pub use export::{LiveNode, Page};
pub use schema::MIGRATIONS;

/// Connections per node: enough for the ingest committer, the completion
/// writer, refills and API reads to overlap on a 2-core machine.
pub const POOL: usize = 4;

/// How long a node holds its rows without a heartbeat, unless it is started
/// with another (`serve --lease`): after this another node may claim them.
/// The heartbeat runs every [`HEARTBEAT`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How often a node tells the database that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How a process connects: set once by the command line
/// (`--database-url`, `--node-name`) before the store is opened.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/db` or a key=value connection string.
    pub url: String,
    /// This node's name, unique among the nodes sharing the database.
    pub node: String,
    /// See [`DEFAULT_LEASE`].
    pub lease: Duration,
}

/// Shown with the URL's password masked: settings may end up in a log.
impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &connect::describe(&self.url))
            .field("node", &self.node)
            .field("lease", &self.lease)
            .finish()
    }
}

static SETTINGS: OnceLock<PgSettings> = OnceLock::new();

/// Sets how [`super::open`] reaches PostgreSQL for `--store postgres`
/// (the first call wins: one database per process).
pub fn configure(settings: PgSettings) {
    let _ = SETTINGS.set(settings);
}

/// The settings given to [`configure`], if any.
pub fn settings() -> Option<&'static PgSettings> {
    SETTINGS.get()
}

/// A default node name: host name and process id, unique on one machine.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", std::process::id())
}

/// The [`Store`] on PostgreSQL; see the module documentation.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    inner: Arc<connect::Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &connect::describe(&self.inner.url))
            .field("node", &self.inner.node)
            .finish()
    }
}

/// The trait's operations, each done in `kv` or `claims`.
impl Store for PgStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(tree, key)
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.write(tree, vec![(key.to_vec(), Some(value.to_vec()))])
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        self.write(tree, vec![(key.to_vec(), None)])
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        self.swap(tree, key, old, new)
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StoreError> {
        let end = kv::prefix_end(prefix);
        self.rows(tree, prefix, end.as_deref(), None, false)
    }

    fn apply_batch(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        self.write(tree, ops)
    }

    fn apply_claimed(
        &self,
        tree: &str,
        items: Vec<ClaimedBatch>,
        _durable: bool,
    ) -> Result<Vec<bool>, StoreError> {
        // Every statement commits durably (synchronous_commit is the
        // server's setting): `durable` asks nothing more here.
        self.write_claimed(tree, items)
    }

    fn range(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Entries, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.rows(tree, start, Some(end), Some(limit), reverse)
    }

    fn keys(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.key_range(tree, start, end, limit)
    }

    fn count(&self, tree: &str, start: &[u8], end: &[u8]) -> Result<usize, StoreError> {
        self.count_range(tree, start, end)
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.take_id()
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every statement commits durably (synchronous_commit is the
        // server's setting); there is nothing buffered here.
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.table_size()
    }

    fn node(&self) -> Option<&str> {
        Some(&self.inner.node)
    }

    fn claim(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.claim_rows(tree, start, end, limit, true)
    }

    fn claim_orphans(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.claim_rows(tree, start, end, limit, false)
    }

    fn health(&self) -> Result<(), StoreError> {
        self.beat_health()
    }

    fn release(&self) -> Result<(), StoreError> {
        self.leave()
    }
}

/// The integration tests' throwaway server, for the library's own tests
/// (this store's, the queue's and the token store's).
#[cfg(test)]
#[path = "../../../tests/integration/pg_server.rs"]
pub(crate) mod pg_server;

/// A store on `server` as node `name` (tests).
#[cfg(test)]
pub(crate) fn test_node(server: &pg_server::PgServer, name: &str, lease: Duration) -> PgStore {
    PgStore::connect(&PgSettings {
        url: server.url(),
        node: name.into(),
        lease,
    })
    .unwrap()
}

#[cfg(test)]
mod tests;
