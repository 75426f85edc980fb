//! Reaching the server: the store's own tokio runtime, the connection
//! pool, opening (a URL the server refuses, migrations, the node's name,
//! the heartbeat) and closing, and how a driver error becomes a
//! [`StoreError`] — the one place that knows how the synchronous trait
//! waits for `tokio-postgres`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::{settings, PgSettings, PgStore, HEARTBEAT, POOL};
use crate::store::StoreError;

/// A connection string with its password masked (in the user part or as
/// a `password=` parameter), for messages; a key=value string is not shown.
pub(super) fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "the database".into(),
    }
}

/// What the store's futures share: the pool and the node's counters.
pub(super) struct Inner {
    pub(super) url: String,
    pub(super) node: String,
    pub(super) lease_ms: i64,
    pool: Vec<Arc<tokio::sync::Mutex<Option<Client>>>>,
    next: AtomicUsize,
    /// The id block in use: (next, end).
    pub(super) ids: Mutex<(u64, u64)>,
    /// The last heartbeat: when it succeeded, and the error since, if any.
    pub(super) beat: Mutex<(Instant, Option<String>)>,
    /// Statements sent (for BENCHMARKS.md's queries per delivery).
    queries: AtomicU64,
    /// Held by the heartbeat while it beats; `true` once the node said
    /// goodbye, after which it beats no more (a beat in flight during the
    /// goodbye would put the row back).
    pub(super) left: tokio::sync::Mutex<bool>,
    /// This process's hold on the node name: the `started` of the name's
    /// row (µs since the epoch) when this process took it. The heartbeat
    /// and the goodbye touch the row only while it still holds this value.
    pub(super) incarnation: AtomicI64,
    /// Another process took the name while this one was away longer than
    /// its lease: this one no longer reads or writes (see [`Inner::lost`]).
    pub(super) name_lost: AtomicBool,
}

/// A driver error as the store's: a passing condition (the server is
/// unreachable, starting or stopping) is [`StoreError::Unavailable`]
/// inside this module, told as [`StoreError::Unreachable`] with the URL
/// when it leaves ([`PgStore::block`]).
pub(super) fn backend(e: tokio_postgres::Error) -> StoreError {
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

/// A pooled connection, held until dropped (`None`: not connected).
pub(super) type Slot = tokio::sync::OwnedMutexGuard<Option<Client>>;

impl Inner {
    /// A pooled connection, connected (again) if it is not.
    pub(super) async fn conn(&self) -> Result<Slot, StoreError> {
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
                    StoreError::Unavailable("PostgreSQL did not answer within 5 s".into())
                })?
                .map_err(|e| match backend(e) {
                    StoreError::Backend(m) => StoreError::Unavailable(m),
                    other => other,
                })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            *slot = Some(client);
        }
        Ok(slot)
    }

    /// Counts `n` statements sent (see [`PgStore::queries`]).
    pub(super) fn count(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    /// A passing error as callers see it: the database (its URL, password
    /// masked) is unreachable, not a disk that is full.
    pub(super) fn unreachable(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Unavailable(reason) => StoreError::Unreachable {
                url: describe(&self.url),
                reason,
            },
            other => other,
        }
    }
}

impl PgStore {
    /// Connects with the settings given to [`super::configure`].
    pub fn open_configured() -> Result<PgStore, StoreError> {
        let settings = settings().ok_or_else(|| {
            StoreError::Refused(
                "--store postgres needs --database-url (or PUSHWERK_DATABASE_URL)".into(),
            )
        })?;
        PgStore::connect(settings)
    }

    /// Connects, runs the migrations (under an advisory lock, so several
    /// nodes may start at once), takes the node's name (refused while
    /// another live process holds it) and starts the heartbeat.
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
            left: tokio::sync::Mutex::new(false),
            incarnation: AtomicI64::new(0),
            name_lost: AtomicBool::new(false),
        });
        let mut store = PgStore {
            rt: Some(rt),
            inner,
        };
        let opened = store.block(|i| async move {
            refused_at_start(&i.url).await?;
            i.migrate().await?;
            i.take_name().await
        });
        if opened.is_err() {
            // No goodbye: the name may be another live node's.
            if let Some(rt) = store.rt.take() {
                rt.shutdown_background();
            }
        }
        opened.map_err(|e| match e {
                // At start, a server that cannot be reached is the
                // operator's to fix, not a write to try again.
                StoreError::Unreachable { url, reason } => StoreError::Refused(format!(
                    "cannot reach the database at {url}: {reason}; start PostgreSQL, or check --database-url (PUSHWERK_DATABASE_URL)"
                )),
                other => other,
            })?;
        let weak = Arc::downgrade(&store.inner);
        store.runtime().spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let Some(inner) = weak.upgrade() else { return };
                let left = inner.left.lock().await;
                if *left {
                    return;
                }
                let result = tokio::time::timeout(HEARTBEAT * 5, inner.heartbeat()).await;
                drop(left);
                let mut beat = inner.beat.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(Ok(())) => *beat = (Instant::now(), None),
                    Ok(Err(StoreError::Unavailable(reason))) => beat.1 = Some(reason),
                    Ok(Err(e)) => beat.1 = Some(e.to_string()),
                    Err(_) => beat.1 = Some("PostgreSQL did not answer the heartbeat".into()),
                }
            }
        });
        Ok(store)
    }

    pub(super) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime until drop")
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread,
    /// inside another runtime too); a passing error leaves as
    /// [`StoreError::Unreachable`].
    fn block<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        // A process whose name another took is fenced off: the rows under
        // the name are the new holder's.
        if let Some(lost) = self.inner.lost() {
            return Err(lost);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        self.runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the PostgreSQL runtime stopped".into(),
                ))
            })
            .map_err(|e| self.inner.unreachable(e))
    }

    /// Statements sent to the server since this store was opened.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Runs one statement's worth of work on a pooled connection, and
    /// forgets the connection if it broke.
    pub(super) fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
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

    /// Stops as a crash would: no goodbye, the heartbeat just ends (tests).
    #[cfg(test)]
    pub(crate) fn crash(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Says goodbye once: the heartbeat stops and the node's row goes, so
    /// its leased rows are orphans at once (the others need not wait for
    /// its lease). Bounded: 2 s.
    pub(super) fn leave(&self) -> Result<(), StoreError> {
        self.block(|i| async move {
            tokio::time::timeout(Duration::from_secs(2), async {
                let mut left = i.left.lock().await;
                if *left {
                    return Ok(());
                }
                i.goodbye().await?;
                *left = true;
                Ok(())
            })
            .await
            .map_err(|_| StoreError::Unavailable("timed out".into()))?
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if self.rt.is_none() {
            return;
        }
        // Best effort: a daemon has left already (`Store::release`).
        let _ = self.leave();
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
