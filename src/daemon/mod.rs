//! The daemon: the folder loaded and watched, events ingested durably,
//! cron ticks fired, and due jobs delivered by workers with bounded
//! concurrency, retried as [`crate::retry::decide`] says, dead-lettered
//! when given up, every attempt in the delivery log.
//!
//! [`Daemon::open`] opens the store and loads the folder; [`Daemon::run`]
//! starts every task (the folder watch, workers, cron, housekeeping) beside
//! the caller's API server and is the only place that does. The parts:
//! - `ingest`: events matched to pushes, made durable by group commit;
//! - `workers`: due jobs started, the schedule refilled, per-target slots;
//! - `attempt`: one attempt delivered, decided and recorded;
//! - `completions`: finished attempts written in batches, confirmed durable;
//! - `reload`: the folder read, last good versions, watch and SIGHUP;
//! - `cron` and `housekeeping`: time-driven tasks;
//! - `config` and `error`: options and typed errors.
//!
//! Every time the daemon reads comes from its [`Clock`] (`config.clock`).

mod attempt;
mod completions;
mod config;
mod cron;
mod error;
mod housekeeping;
mod ingest;
mod jobs;
mod reload;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

pub use config::DaemonConfig;
pub use error::{CommitError, DaemonError};
pub use jobs::JobView;
pub use reload::FileState;

use crate::clock::Clock;
use crate::config::{Catalog, LoadOptions};
use crate::delivery::{Queue, Scheduler, TargetSlot};
use crate::engine::deliver::Deliverer;
use crate::engine::send::Sender;
use crate::metrics::Metrics;
use crate::oauth::{Resolver, ResolverSettings, TokenStore};
use crate::store::Store;
use completions::{CompletionWriter, OutcomeHealth};
use config::api_token;
use ingest::GroupCommit;
use reload::Sources;

/// The running daemon's state, shared by its tasks and the HTTP API.
pub struct Daemon {
    /// Its configuration.
    pub config: DaemonConfig,
    catalog: RwLock<Arc<Catalog>>,
    files: RwLock<Vec<FileState>>,
    last_good: Mutex<HashMap<PathBuf, String>>,
    /// What each file held at the last load (its text, or why it could not
    /// be read): a change notice reloads only if this differs.
    last_read: Mutex<Option<Sources>>,
    /// One reload at a time (the watcher and SIGHUP may ask together).
    reload_lock: Mutex<()>,
    /// The last error of each job waiting for a retry (shown by `GET /v1/jobs`).
    last_errors: Mutex<HashMap<u64, String>>,
    /// The durable queue.
    pub queue: Queue,
    commit: GroupCommit,
    completions: CompletionWriter,
    /// Whether delivery outcomes can be made durable (see [`CompletionWriter`]).
    outcomes: Arc<OutcomeHealth>,
    deliverer: Deliverer,
    /// Metrics for `/metrics`.
    pub metrics: Arc<Metrics>,
    wake: Notify,
    /// What is due, in flight and waiting for its target.
    schedule: Arc<Mutex<Scheduler>>,
    /// Where each push's jobs go (rebuilt with the catalog).
    targets: RwLock<Arc<HashMap<String, TargetSlot>>>,
    /// Held shared by whoever writes jobs to the store and then hands them
    /// to the schedule (ingest, cron, replay); held exclusively by a refill
    /// from the store, so that it never sees a job between the two steps.
    producers: tokio::sync::RwLock<()>,
    accepting: AtomicBool,
    stopping: AtomicBool,
    ready: AtomicBool,
    /// The API's bearer token.
    pub token: String,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("dir", &self.config.dir)
            .finish()
    }
}

impl Daemon {
    /// Opens the store, loads the folder and starts the group-commit task.
    /// (Tasks and the API are started by [`Daemon::run`].)
    pub fn open(config: DaemonConfig) -> Result<(Arc<Daemon>, Option<PathBuf>), DaemonError> {
        // SIGHUP's default action ends the process: one sent while the
        // store opens and the folder loads (`systemctl reload` right after
        // a start, a logrotate hook) killed the daemon. Listening makes it
        // harmless from here on ([`Daemon::run`] turns it into a reload; the
        // folder is loaded below anyway).
        if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tracing::warn!(error = %e, "cannot catch SIGHUP while starting");
        }
        let key = crate::oauth::seal::KeySpec::resolve(
            config.key_file.as_deref(),
            &crate::config::secret::process_env,
        )?;
        let tokens = TokenStore::open_keyed(
            &config.data,
            config.store,
            &key,
            crate::oauth::KeyUse::Generate,
        )
        .map_err(|e| match e {
            crate::oauth::OAuthError::Store(e) => DaemonError::Store(e),
            crate::oauth::OAuthError::Seal(e) => DaemonError::Seal(e),
            other => DaemonError::Tokens(other),
        })?;
        let store: Arc<dyn Store> = tokens.store().clone();
        let resolver = Arc::new(Resolver::new(
            tokens,
            BTreeMap::new(),
            ResolverSettings::default(),
        ));
        let deliverer = Deliverer::new(
            resolver,
            Sender::new(Duration::from_secs(30)),
            config.endpoints.clone(),
            config.retry_after_cap,
        );
        let (token, token_path) = api_token(&config.data, config.ingest_token.clone())?;
        if token.chars().count() < crate::secret::token_file::MIN_TOKEN_CHARS {
            // Not refused (running setups keep working), but said: whoever
            // can reach the port can guess a short token and post events.
            tracing::warn!(
                "the ingest token is {} characters long: anyone who can reach the API can guess a token that short; use at least {} random characters (`pushwerk oauth keygen` makes one), or leave it unset to have one generated into DATA/ingest-token",
                token.chars().count(),
                crate::secret::token_file::MIN_TOKEN_CHARS
            );
        }
        let empty = Catalog::from_sources(&config.dir, Vec::new(), &LoadOptions::default());
        let queue = Queue::new(store.clone());
        let migrated = queue.migrate()?;
        if migrated > 0 {
            tracing::info!(jobs = migrated, "queued jobs now carry their events");
        }
        let schedule = Arc::new(Mutex::new(Scheduler::new(
            config.resident_jobs,
            config.concurrency,
        )));
        let metrics = Arc::new(Metrics::default());
        let outcomes = Arc::new(OutcomeHealth::default());
        metrics.set(
            "pushwerk_dead_letters",
            &[],
            queue.dead_letter_count()? as f64,
        );
        let daemon = Arc::new(Daemon {
            catalog: RwLock::new(Arc::new(empty)),
            files: RwLock::new(Vec::new()),
            last_good: Mutex::new(HashMap::new()),
            last_read: Mutex::new(None),
            reload_lock: Mutex::new(()),
            last_errors: Mutex::new(HashMap::new()),
            completions: CompletionWriter::start(
                queue.clone(),
                schedule.clone(),
                metrics.clone(),
                outcomes.clone(),
            ),
            outcomes,
            commit: GroupCommit::start(queue.clone(), schedule.clone()),
            queue,
            deliverer,
            metrics,
            wake: Notify::new(),
            schedule,
            targets: RwLock::new(Arc::new(HashMap::new())),
            producers: tokio::sync::RwLock::new(()),
            accepting: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            token,
            config,
        });
        daemon.reload()?;
        daemon.ready.store(true, Ordering::SeqCst);
        Ok((daemon, token_path))
    }

    /// The catalog in force.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Per-file state of the folder.
    pub fn files(&self) -> Vec<FileState> {
        self.files.read().expect("files lock").clone()
    }

    /// Whether the store is open and definitions are loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }

    /// Why delivery outcomes cannot be made durable now (a full disk), if
    /// they cannot: the daemon is not ready meanwhile.
    pub fn outcomes_failing(&self) -> Option<String> {
        self.outcomes.failing()
    }

    /// The resolver (OAuth state).
    pub fn resolver(&self) -> &Arc<Resolver> {
        self.deliverer.resolver()
    }

    /// The clock the daemon reads.
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// Runs the daemon beside `server` (the caller's API, which calls
    /// [`Daemon::shutdown`] when it stops): watches the folder (and
    /// SIGHUP), starts the workers, cron and housekeeping, and returns once
    /// `server` has finished, with every task stopped. The one place the
    /// daemon's tasks are started.
    pub async fn run(
        self: Arc<Self>,
        server: impl std::future::Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let _watcher = reload::watch(self.clone())?;
        let tasks = [
            tokio::spawn(self.clone().run_workers()),
            tokio::spawn(self.clone().run_cron()),
            tokio::spawn(self.clone().run_housekeeping()),
        ];
        server.await;
        // The server shut the daemon down: the tasks see `stopping` at
        // their next turn; a task that sleeps is not waited for.
        for task in tasks {
            task.abort();
        }
        Ok(())
    }

    /// Stops accepting, lets in-flight deliveries finish within the grace
    /// period, and flushes the store.
    pub async fn shutdown(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        let deadline = tokio::time::Instant::now() + self.config.grace;
        let in_flight = || self.schedule.lock().expect("schedule lock").in_flight();
        while in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = in_flight();
        if left > 0 {
            tracing::warn!(
                left,
                "grace period over; unfinished deliveries stay queued and run after the next start"
            );
        }
        self.completions.settle().await;
        if let Err(e) = self.commit.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        // The last write is done: a shared store lets the other nodes take
        // this one's rows at once. The commit and completion threads still
        // hold the store when the process exits, so its drop never runs.
        let store = self.queue.store().clone();
        match tokio::task::spawn_blocking(move || store.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not give up this node's rows; the other nodes take them when its lease runs out")
            }
            Err(e) => tracing::warn!(error = %e, "could not give up this node's rows"),
        }
    }
}

#[cfg(test)]
mod tests;
