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
//!   as long as its heartbeat is fresh (younger than the lease). Another
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
//!   cluster-wide lease, see `oauth::token_store`).
//!
//! The trait is synchronous and is called from inside tokio runtimes, where
//! the blocking `postgres` crate panics (it starts a runtime of its own).
//! So `tokio-postgres` runs on a small runtime owned by the store (two
//! threads), with a pool of [`POOL`] connections; a call from any thread
//! hands its future to that runtime and waits for the answer on a channel.
//! Connections that broke (the server restarted) are made again at the
//! next call; until then calls fail with [`StoreError::Unavailable`] and
//! [`Store::health`] reports the reason (`/readyz` is not ready).
//!
//! TLS: not supported (`NoTls`): use a loopback or otherwise private
//! connection (a Unix socket: `host=/var/run/postgresql`), or a TLS
//! terminating proxy on the node.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::{CasConflict, ClaimedBatch, Entries, Store, StoreError};

/// Connections per node: enough for the ingest committer, the completion
/// writer, refills and API reads to overlap on a 2-core machine.
pub const POOL: usize = 4;

/// How long a node holds its rows without a heartbeat: after this another
/// node may claim them. The heartbeat runs every [`HEARTBEAT`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How often a node tells the database that it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The advisory-lock key under which migrations run (`pushwerk` in ASCII,
/// truncated): one node migrates, the others wait and find it done.
const MIGRATION_LOCK: i64 = 0x7075_7368_7765_726b;

/// Ids are taken from the sequence in blocks of this many (its increment),
/// so that a job costs no round trip for its id.
const ID_BLOCK: i64 = 1000;

/// The schema, one entry per version, applied in order inside one
/// transaction each; `pushwerk_schema` records what was applied.
pub const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE pushwerk_kv (
         tree text NOT NULL,
         key bytea NOT NULL,
         value bytea NOT NULL,
         lease_node text,
         PRIMARY KEY (tree, key)
     );
     CREATE TABLE pushwerk_nodes (
         node text PRIMARY KEY,
         seen timestamptz NOT NULL,
         started timestamptz NOT NULL DEFAULT now()
     );
     CREATE SEQUENCE pushwerk_ids INCREMENT BY 1000 START WITH 1;",
)];

/// How a process connects: set once by the command line
/// (`--database-url`, `--node-name`) before the store is opened.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user@host:port/db` or a key=value connection string.
    pub url: String,
    /// This node's name, unique among the nodes sharing the database.
    pub node: String,
    /// See [`DEFAULT_LEASE`].
    pub lease: Duration,
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

/// A connection string with its password masked, for messages.
fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "the database".into(),
    }
}

struct Inner {
    url: String,
    node: String,
    lease_ms: i64,
    pool: Vec<Arc<tokio::sync::Mutex<Option<Client>>>>,
    next: AtomicUsize,
    /// The id block in use: (next, end).
    ids: Mutex<(u64, u64)>,
    /// The last heartbeat: when it succeeded, and the error since, if any.
    beat: Mutex<(Instant, Option<String>)>,
    /// Statements sent (for BENCHMARKS.md's queries per delivery).
    queries: AtomicU64,
}

/// The [`Store`] on PostgreSQL; see the module documentation.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &describe(&self.inner.url))
            .field("node", &self.inner.node)
            .finish()
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    // A broken connection or a server that is starting or stopping is a
    // passing condition; anything else is an error of the store.
    let passing = e.is_closed()
        || e.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "40001"
        })
        || e.as_db_error().is_none();
    let text = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        // "error connecting to server" says nothing of why: the cause
        // (connection refused, no route, a name that does not resolve) does.
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("PostgreSQL: {e}: {cause}"),
            None => format!("PostgreSQL: {e}"),
        },
    };
    if passing {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// At start, a server that answers but refuses this URL — no such role,
/// wrong password, no such database — or a URL that is not one: an error
/// naming what to fix, where the connection pool (which retries, as a
/// server that is down comes back) would say "start PostgreSQL".
async fn refused_at_start(url: &str) -> Result<(), StoreError> {
    let connect = tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls));
    let Ok(Err(e)) = connect.await else {
        // Connected (dropped at once), or no answer: the pool says so.
        return Ok(());
    };
    let shown = describe(url);
    let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string());
    let hint = if code == "3D000" {
        "create it (`createdb -O USER DB`), or check --database-url (PUSHWERK_DATABASE_URL)"
    } else if code.starts_with("28") {
        "check the user and password in --database-url (PUSHWERK_DATABASE_URL), or create the role (`createuser --pwprompt USER`)"
    } else if message.starts_with("invalid connection string") {
        "give a URL like postgres://USER:PASSWORD@HOST:PORT/DB in --database-url (PUSHWERK_DATABASE_URL)"
    } else {
        return Ok(());
    };
    Err(StoreError::Refused(format!(
        "PostgreSQL refused the connection: {message} ({shown}); {hint}"
    )))
}

type Slot = tokio::sync::OwnedMutexGuard<Option<Client>>;

impl Inner {
    /// A pooled connection, connected (again) if it is not.
    async fn conn(&self) -> Result<Slot, StoreError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.pool.len();
        let mut slot = None;
        for i in 0..n {
            if let Ok(g) = self.pool[(start + i) % n].clone().try_lock_owned() {
                slot = Some(g);
                break;
            }
        }
        let mut slot = match slot {
            Some(s) => s,
            None => self.pool[start % n].clone().lock_owned().await,
        };
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            let connect = tokio_postgres::connect(&self.url, NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "PostgreSQL at {} did not answer within 5 s",
                        describe(&self.url)
                    ))
                })?
                .map_err(|e| match backend(e) {
                    StoreError::Unavailable(m) | StoreError::Backend(m) => {
                        StoreError::Unavailable(format!("{m} ({})", describe(&self.url)))
                    }
                    other => other,
                })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *slot = Some(client);
        }
        Ok(slot)
    }

    fn count(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        let slot = self.conn().await?;
        let c = slot.as_ref().expect("connected");
        self.count(1);
        c.execute(
            "INSERT INTO pushwerk_nodes (node, seen) VALUES ($1, now())
             ON CONFLICT (node) DO UPDATE SET seen = now()",
            &[&self.node],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut slot = self.conn().await?;
        let c = slot.as_mut().expect("connected");
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(backend)?;
        let result = async {
            c.batch_execute(
                "CREATE TABLE IF NOT EXISTS pushwerk_schema (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(backend)?;
            let row = c
                .query_one("SELECT coalesce(max(version), 0) FROM pushwerk_schema", &[])
                .await
                .map_err(backend)?;
            let found: i32 = row.get(0);
            let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
            if found > supported {
                return Err(StoreError::SchemaVersion {
                    found: found as u32,
                    supported: supported as u32,
                });
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
                let tx = c.transaction().await.map_err(backend)?;
                tx.batch_execute(sql).await.map_err(backend)?;
                tx.execute(
                    "INSERT INTO pushwerk_schema (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                tracing::info!(version, "PostgreSQL schema migrated");
            }
            Ok(())
        }
        .await;
        let unlock = c
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result?;
        unlock.map_err(backend)?;
        Ok(())
    }
}

/// The exclusive end of the keys that start with `prefix` (`None`: no end,
/// the prefix is all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys and values to upsert, and keys to delete.
type Collapsed = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The last operation on each key of a batch, in key order (a key written
/// then removed in one batch ends removed; one statement may touch a row
/// only once).
fn collapse(ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Collapsed {
    let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = ops.into_iter().collect();
    let (mut put_k, mut put_v, mut del) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                put_k.push(k);
                put_v.push(v);
            }
            None => del.push(k),
        }
    }
    (put_k, put_v, del)
}

async fn write_batch(
    inner: &Inner,
    tx: &tokio_postgres::Transaction<'_>,
    tree: &str,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<(), StoreError> {
    let (put_k, put_v, del) = collapse(ops);
    if !del.is_empty() {
        inner.count(1);
        tx.execute(
            "DELETE FROM pushwerk_kv WHERE tree = $1 AND key = ANY($2)",
            &[&tree, &del],
        )
        .await
        .map_err(backend)?;
    }
    if !put_k.is_empty() {
        inner.count(1);
        tx.execute(
            "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
             SELECT $1, k, v, $4 FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v)
             ON CONFLICT (tree, key) DO UPDATE
             SET value = excluded.value, lease_node = excluded.lease_node",
            &[&tree, &put_k, &put_v, &inner.node],
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

impl PgStore {
    /// Connects with the settings given to [`configure`].
    pub fn open_configured() -> Result<PgStore, StoreError> {
        let settings = settings().ok_or_else(|| {
            StoreError::Refused(
                "--store postgres needs --database-url (or PUSHWERK_DATABASE_URL)".into(),
            )
        })?;
        PgStore::connect(settings)
    }

    /// Connects, runs the migrations (under an advisory lock, so several
    /// nodes may start at once) and starts the heartbeat.
    pub fn connect(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pushwerk-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the PostgreSQL runtime: {e}"))
            })?;
        let inner = Arc::new(Inner {
            url: settings.url.clone(),
            node: settings.node.clone(),
            lease_ms: settings.lease.as_millis().min(i64::MAX as u128) as i64,
            pool: (0..POOL)
                .map(|_| Arc::new(tokio::sync::Mutex::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
            ids: Mutex::new((0, 0)),
            beat: Mutex::new((Instant::now(), None)),
            queries: AtomicU64::new(0),
        });
        let store = PgStore {
            rt: Some(rt),
            inner,
        };
        store
            .block(|i| async move {
                refused_at_start(&i.url).await?;
                i.migrate().await?;
                i.heartbeat().await
            })
            .map_err(|e| match e {
                // At start, a server that cannot be reached is the
                // operator's to fix, not a write to try again.
                StoreError::Unavailable(m) => StoreError::Refused(format!(
                    "cannot reach the database: {m}; start PostgreSQL, or check --database-url (PUSHWERK_DATABASE_URL)"
                )),
                other => other,
            })?;
        let weak = Arc::downgrade(&store.inner);
        store.runtime().spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(inner) = weak.upgrade() else { return };
                let result = tokio::time::timeout(HEARTBEAT * 5, inner.heartbeat()).await;
                let mut beat = inner.beat.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(Ok(())) => *beat = (Instant::now(), None),
                    Ok(Err(e)) => beat.1 = Some(e.to_string()),
                    Err(_) => beat.1 = Some("PostgreSQL did not answer the heartbeat".into()),
                }
            }
        });
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime until drop")
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread,
    /// inside another runtime too).
    fn block<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        self.runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the PostgreSQL runtime stopped".into()))?
    }

    /// Whether the database holds no record yet (a migration's target).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one("SELECT NOT EXISTS (SELECT 1 FROM pushwerk_kv)", &[])
                    .await
                    .map_err(backend)?;
                Ok(row.get(0))
            })
        })
    }

    /// Makes every id handed out from now on larger than `floor` (a
    /// migration carries the id counter over).
    pub fn raise_ids(&self, floor: u64) -> Result<(), StoreError> {
        let floor = floor.min(i64::MAX as u64 / 2) as i64;
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                c.execute(
                    "SELECT setval('pushwerk_ids', greatest($1, (SELECT last_value FROM pushwerk_ids)))",
                    &[&floor],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })?;
        *self
            .inner
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (0, 0);
        Ok(())
    }

    /// Gives up every row this process holds, so that the first live node
    /// takes them (a migration's copy).
    pub fn release_rows(&self) -> Result<(), StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                c.execute(
                    "UPDATE pushwerk_kv SET lease_node = NULL WHERE lease_node = $1",
                    &[&i.node],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
    }

    /// Statements sent to the server since this store was opened.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Runs one statement's worth of work on a pooled connection, and
    /// forgets the connection if it broke.
    fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut Client,
                &'c Inner,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>,
            > + Send
            + 'static,
    {
        self.block(|inner| async move {
            let mut slot = inner.conn().await?;
            let result = f(slot.as_mut().expect("connected"), &inner).await;
            if matches!(result, Err(StoreError::Unavailable(_))) {
                *slot = None;
            }
            result
        })
    }
}

impl PgStore {
    /// Stops as a crash would: no goodbye, the heartbeat just ends (tests).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if self.rt.is_none() {
            return;
        }
        // A node that stops cleanly gives its rows up at once (the others
        // need not wait for its lease); best effort, bounded.
        let node = self.inner.node.clone();
        let _ = self.block(move |i| async move {
            let bye = async {
                let slot = i.conn().await?;
                let c = slot.as_ref().expect("connected");
                c.execute("DELETE FROM pushwerk_nodes WHERE node = $1", &[&node])
                    .await
                    .map_err(backend)
            };
            tokio::time::timeout(Duration::from_secs(2), bye)
                .await
                .map_err(|_| StoreError::Unavailable("timed out".into()))?
        });
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (tree, key) = (tree.to_owned(), key.to_vec());
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_opt(
                        "SELECT value FROM pushwerk_kv WHERE tree = $1 AND key = $2",
                        &[&tree, &key],
                    )
                    .await
                    .map_err(backend)?;
                Ok(row.map(|r| r.get(0)))
            })
        })
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.apply_batch(tree, vec![(key.to_vec(), Some(value.to_vec()))])
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StoreError> {
        self.apply_batch(tree, vec![(key.to_vec(), None)])
    }

    fn compare_and_swap(
        &self,
        tree: &str,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<Result<(), CasConflict>, StoreError> {
        let (tree, key) = (tree.to_owned(), key.to_vec());
        let (old, new) = (old.map(<[u8]>::to_vec), new.map(<[u8]>::to_vec));
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let done = match (&old, &new) {
                    (None, Some(new)) => c
                        .query_opt(
                            "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                            &[&tree, &key, new, &i.node],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (Some(old), Some(new)) => c
                        .query_opt(
                            "UPDATE pushwerk_kv SET value = $4, lease_node = $5
                             WHERE tree = $1 AND key = $2 AND value = $3 RETURNING 1",
                            &[&tree, &key, old, new, &i.node],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (Some(old), None) => c
                        .query_opt(
                            "DELETE FROM pushwerk_kv
                             WHERE tree = $1 AND key = $2 AND value = $3 RETURNING 1",
                            &[&tree, &key, old],
                        )
                        .await
                        .map_err(backend)?
                        .is_some(),
                    (None, None) => false,
                };
                if done {
                    return Ok(Ok(()));
                }
                i.count(1);
                let current: Option<Vec<u8>> = c
                    .query_opt(
                        "SELECT value FROM pushwerk_kv WHERE tree = $1 AND key = $2",
                        &[&tree, &key],
                    )
                    .await
                    .map_err(backend)?
                    .map(|r| r.get(0));
                if old.is_none() && new.is_none() && current.is_none() {
                    return Ok(Ok(()));
                }
                Ok(Err(CasConflict { current }))
            })
        })
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StoreError> {
        let end = prefix_end(prefix);
        self.range_inner(tree, prefix, end.as_deref(), None, false)
    }

    fn apply_batch(
        &self,
        tree: &str,
        ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tree = tree.to_owned();
        self.with_conn(move |c, i| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(backend)?;
                write_batch(i, &tx, &tree, ops).await?;
                i.count(2);
                tx.commit().await.map_err(backend)
            })
        })
    }

    fn apply_claimed(
        &self,
        tree: &str,
        items: Vec<ClaimedBatch>,
        _durable: bool,
    ) -> Result<Vec<bool>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let tree = tree.to_owned();
        self.with_conn(move |c, i| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(backend)?;
                // Claims in key order, so that two nodes inserting the same
                // ids wait for each other instead of deadlocking.
                let mut order: Vec<usize> = (0..items.len()).collect();
                order.sort_by(|a, b| items[*a].claim.0.cmp(&items[*b].claim.0));
                let keys: Vec<&Vec<u8>> = order.iter().map(|&n| &items[n].claim.0).collect();
                let values: Vec<&Vec<u8>> = order.iter().map(|&n| &items[n].claim.1).collect();
                i.count(1);
                let rows = tx
                    .query(
                        "INSERT INTO pushwerk_kv (tree, key, value, lease_node)
                         SELECT $1, k, v, $4 FROM unnest($2::bytea[], $3::bytea[])
                             WITH ORDINALITY AS t(k, v, n) ORDER BY n
                         ON CONFLICT DO NOTHING RETURNING key",
                        &[&tree, &keys, &values, &i.node],
                    )
                    .await
                    .map_err(backend)?;
                let won: std::collections::HashSet<Vec<u8>> =
                    rows.into_iter().map(|r| r.get(0)).collect();
                let mut applied = Vec::with_capacity(items.len());
                let mut ops = Vec::new();
                for item in items {
                    let ok = won.contains(&item.claim.0);
                    if ok {
                        ops.extend(item.ops);
                    }
                    applied.push(ok);
                }
                write_batch(i, &tx, &tree, ops).await?;
                i.count(2);
                tx.commit().await.map_err(backend)?;
                Ok(applied)
            })
        })
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
        self.range_inner(tree, start, Some(end), Some(limit), reverse)
    }

    fn keys(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.to_vec());
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let rows = c
                    .query(
                        "SELECT key FROM pushwerk_kv WHERE tree = $1 AND key >= $2 AND key < $3
                         ORDER BY key LIMIT $4",
                        &[&tree, &start, &end, &limit],
                    )
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| r.get(0)).collect())
            })
        })
    }

    fn count(&self, tree: &str, start: &[u8], end: &[u8]) -> Result<usize, StoreError> {
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.to_vec());
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one(
                        "SELECT count(*) FROM pushwerk_kv WHERE tree = $1 AND key >= $2 AND key < $3",
                        &[&tree, &start, &end],
                    )
                    .await
                    .map_err(backend)?;
                Ok(row.get::<_, i64>(0).max(0) as usize)
            })
        })
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        let mut ids = self
            .inner
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ids.0 >= ids.1 {
            let first = self.with_conn(|c, i| {
                Box::pin(async move {
                    i.count(1);
                    let row = c
                        .query_one("SELECT nextval('pushwerk_ids')", &[])
                        .await
                        .map_err(backend)?;
                    Ok(row.get::<_, i64>(0))
                })
            })?;
            *ids = (first as u64, (first + ID_BLOCK) as u64);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every statement commits durably (synchronous_commit is the
        // server's setting); there is nothing buffered here.
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.with_conn(|c, i| {
            Box::pin(async move {
                i.count(1);
                let row = c
                    .query_one("SELECT pg_total_relation_size('pushwerk_kv')", &[])
                    .await
                    .map_err(backend)?;
                Ok(row.get::<_, i64>(0).max(0) as u64)
            })
        })
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
        let beat = self
            .inner
            .beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = &beat.1 {
            return Err(StoreError::Unavailable(e.clone()));
        }
        // Late by more than a few beats (a server that hangs): not ready
        // well before the lease runs out and other nodes take over.
        let late = (HEARTBEAT * 5)
            .min(Duration::from_millis(self.inner.lease_ms as u64 / 2).max(HEARTBEAT * 2));
        if beat.0.elapsed() > late {
            return Err(StoreError::Unavailable(
                "PostgreSQL has not answered the heartbeat".into(),
            ));
        }
        Ok(())
    }
}

impl PgStore {
    /// Rows of `[start, end)` whose holder's heartbeat is stale (or that
    /// have none), locked with `SKIP LOCKED` and leased to this node, and
    /// with `mine`, the rows this node holds already (read, not locked: no
    /// write for them); in key order, at most `limit`.
    fn claim_rows(
        &self,
        tree: &str,
        start: &[u8],
        end: &[u8],
        limit: usize,
        mine: bool,
    ) -> Result<Entries, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.to_vec());
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let rows = c
                    .query(
                        "WITH c AS (
                             SELECT key, value FROM pushwerk_kv k
                             WHERE tree = $1 AND key >= $2 AND key < $3
                               AND lease_node IS DISTINCT FROM $4
                               AND NOT EXISTS (
                                   SELECT 1 FROM pushwerk_nodes n WHERE n.node = k.lease_node
                                   AND n.seen > now() - $6::bigint * interval '1 millisecond')
                             ORDER BY key LIMIT $5 FOR UPDATE SKIP LOCKED),
                         u AS (
                             UPDATE pushwerk_kv k SET lease_node = $4 FROM c
                             WHERE k.tree = $1 AND k.key = c.key),
                         m AS (
                             SELECT key, value FROM pushwerk_kv
                             WHERE $7 AND tree = $1 AND key >= $2 AND key < $3 AND lease_node = $4
                             ORDER BY key LIMIT $5)
                         SELECT key, value FROM c UNION ALL SELECT key, value FROM m
                         ORDER BY key LIMIT $5",
                        &[&tree, &start, &end, &i.node, &limit, &i.lease_ms, &mine],
                    )
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
    }

    fn range_inner(
        &self,
        tree: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: Option<usize>,
        reverse: bool,
    ) -> Result<Entries, StoreError> {
        let (tree, start, end) = (tree.to_owned(), start.to_vec(), end.map(<[u8]>::to_vec));
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64);
        self.with_conn(move |c, i| {
            Box::pin(async move {
                i.count(1);
                let sql = format!(
                    "SELECT key, value FROM pushwerk_kv
                     WHERE tree = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)
                     ORDER BY key {} LIMIT $4",
                    if reverse { "DESC" } else { "ASC" }
                );
                let rows = c
                    .query(&sql, &[&tree, &start, &end, &limit])
                    .await
                    .map_err(backend)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            })
        })
    }
}

/// The integration tests' throwaway server, for the library's own tests
/// (this store's, the queue's and the token store's).
#[cfg(test)]
#[path = "../../tests/integration/pg_server.rs"]
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
mod tests {
    use super::*;
    use crate::store::ClaimedBatch;

    use super::test_node as node;

    /// The store contract every backend keeps, on a real server, and a
    /// server that is not there is a passing error, not a panic.
    #[test]
    fn keeps_the_store_contract_on_a_real_server() {
        let server = pg_server::PgServer::start();
        let s = node(&server, "a", DEFAULT_LEASE);
        crate::store::conformance::exercise(&s);
        assert!(s.health().is_ok());
        assert!(s.queries() > 0);
        // Ids stay unique across nodes (blocks of the one sequence).
        let t = node(&server, "b", DEFAULT_LEASE);
        let mut ids: Vec<u64> = (0..1500)
            .flat_map(|_| [s.next_id().unwrap(), t.next_id().unwrap()])
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3000);
        let gone = PgStore::connect(&PgSettings {
            url: "postgres://postgres@127.0.0.1:1/postgres".into(),
            node: "x".into(),
            lease: DEFAULT_LEASE,
        });
        let message = gone.unwrap_err().to_string();
        assert!(message.contains("cannot reach the database"), "{message}");
    }

    /// Several nodes starting at once migrate once; a schema newer than
    /// this build is refused.
    #[test]
    fn migrations_run_once_when_nodes_start_together() {
        let server = pg_server::PgServer::start();
        let url = server.url();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let url = url.clone();
                std::thread::spawn(move || {
                    PgStore::connect(&PgSettings {
                        url,
                        node: format!("n{n}"),
                        lease: DEFAULT_LEASE,
                    })
                    .map(|_| ())
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(server.psql("SELECT count(*) FROM pushwerk_schema"), "1");
        server.psql("INSERT INTO pushwerk_schema (version) VALUES (99)");
        let newer = PgStore::connect(&PgSettings {
            url,
            node: "late".into(),
            lease: DEFAULT_LEASE,
        });
        assert!(
            matches!(newer, Err(StoreError::SchemaVersion { found: 99, .. })),
            "{newer:?}"
        );
    }

    /// Rows a live node wrote are its own; once its heartbeat stops
    /// (dropped store), another node claims them after the lease.
    #[test]
    fn claims_skip_live_nodes_and_take_over_dead_ones() {
        let server = pg_server::PgServer::start();
        let lease = Duration::from_millis(1500);
        let a = node(&server, "a", lease);
        let b = node(&server, "b", lease);
        let ops = (0u8..10).map(|i| (vec![b'j', i], Some(vec![i]))).collect();
        a.apply_batch("q", ops).unwrap();
        assert_eq!(a.claim("q", b"j", b"k", 100).unwrap().len(), 10, "its own");
        assert!(b.claim("q", b"j", b"k", 100).unwrap().is_empty(), "a lives");
        assert!(b.claim_orphans("q", b"j", b"k", 100).unwrap().is_empty());
        a.crash();
        let start = Instant::now();
        let taken = loop {
            let taken = b.claim("q", b"j", b"k", 100).unwrap();
            if !taken.is_empty() || start.elapsed() > Duration::from_secs(10) {
                break taken;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(taken.len(), 10);
        assert!(
            start.elapsed() >= Duration::from_millis(500),
            "not before the lease"
        );
        let c = node(&server, "c", lease);
        assert!(
            c.claim("q", b"j", b"k", 100).unwrap().is_empty(),
            "b holds them now"
        );
        // A node that stops cleanly hands its rows over at once.
        drop(b);
        assert_eq!(c.claim_orphans("q", b"j", b"k", 100).unwrap().len(), 10);
    }

    /// `store migrate --from redb --to postgres`: every record copied, ids
    /// continue above the store's, the jobs go to the first node that
    /// claims them; a second copy into the same database is refused.
    #[test]
    fn a_redb_store_is_copied_into_an_empty_database() {
        let server = pg_server::PgServer::start();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let last = {
            let s = crate::store::open(&dir, crate::store::StoreChoice::Redb).unwrap();
            s.put("tokens", b"acct", b"sealed").unwrap();
            s.apply_batch(
                "delivery",
                (0u8..50)
                    .map(|i| (vec![b'j', b':', i], Some(vec![i])))
                    .collect(),
            )
            .unwrap();
            let mut last = 0;
            for _ in 0..10 {
                last = s.next_id().unwrap();
            }
            s.flush().unwrap();
            last
        };
        let importer = node(&server, "importer", DEFAULT_LEASE);
        let trees = crate::store::migrate::copy_to_postgres(
            &dir,
            crate::store::StoreChoice::Redb,
            &importer,
        )
        .unwrap();
        assert!(trees.contains(&("delivery".to_owned(), 50)), "{trees:?}");
        assert!(trees.contains(&("tokens".to_owned(), 1)), "{trees:?}");
        let again = crate::store::migrate::copy_to_postgres(
            &dir,
            crate::store::StoreChoice::Redb,
            &importer,
        );
        assert!(matches!(again, Err(StoreError::Refused(_))), "{again:?}");
        let a = node(&server, "a", DEFAULT_LEASE);
        assert_eq!(a.get("tokens", b"acct").unwrap(), Some(b"sealed".to_vec()));
        assert!(a.next_id().unwrap() > last);
        assert_eq!(
            a.claim_orphans("delivery", b"j:", b"j;", 100)
                .unwrap()
                .len(),
            50
        );
    }

    /// The same claim key from two nodes at once is applied once.
    #[test]
    fn concurrent_claims_of_one_key_apply_once() {
        let server = pg_server::PgServer::start();
        let stores: Vec<Arc<PgStore>> = (0..3)
            .map(|n| Arc::new(node(&server, &format!("n{n}"), DEFAULT_LEASE)))
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let threads: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut won = 0;
                    for e in 0..200u32 {
                        let item = ClaimedBatch {
                            claim: (format!("e:{e}").into_bytes(), vec![]),
                            ops: vec![(format!("j:{e}:{n}").into_bytes(), Some(vec![1]))],
                        };
                        won += s.apply_claimed("t", vec![item], true).unwrap()[0] as usize;
                    }
                    won
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 200);
        assert_eq!(stores[0].count("t", b"j:", b"j;").unwrap(), 200);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"j:"), Some(b"j;".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_batch_keeps_the_last_operation_per_key() {
        let (k, v, d) = collapse(vec![
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"a".to_vec(), None),
            (b"b".to_vec(), None),
            (b"b".to_vec(), Some(b"2".to_vec())),
        ]);
        assert_eq!(
            (k, v, d),
            (
                vec![b"b".to_vec()],
                vec![b"2".to_vec()],
                vec![b"a".to_vec()]
            )
        );
    }

    #[test]
    fn passwords_are_masked_in_messages() {
        let d = describe("postgres://u:hunter2@127.0.0.1:5432/db");
        assert!(!d.contains("hunter2"), "{d}");
    }
}
