//! The daemon: the folder loaded and watched, events ingested durably,
//! cron ticks fired, and due jobs delivered by workers with bounded
//! concurrency, retried as targets ask, dead-lettered when given up, every
//! attempt in the delivery log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, Notify};

use super::deliver::{Deliverer, Delivery};
use super::render::applies;
use super::send::Sender;
use crate::backoff::Backoff;
use crate::config::{Catalog, Diagnostic, LoadOptions, Push, Severity, TargetKind, Trigger};
use crate::delivery::{
    Accepted, Completion, Finished, Job, LogEntry, Queue, QueueError, Scheduler, TargetSlot,
};
use crate::dispatch::{Endpoints, Outcome};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::oauth::seal::Sealer;
use crate::oauth::{Resolver, ResolverSettings, TokenStore};
use crate::store::{Store, StoreChoice};

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
        }
    }
}

/// Why the daemon could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The folder cannot be read.
    #[error(transparent)]
    Load(#[from] crate::config::LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The encryption key is unusable.
    #[error(transparent)]
    Seal(#[from] crate::oauth::seal::SealError),
    /// Events could not be stored.
    #[error("cannot store accepted events: {0}")]
    Accept(String),
    /// Writes could not be made durable.
    #[error("cannot make accepted events durable: {0}")]
    Flush(String),
    /// The daemon is shutting down.
    #[error("shutting down: not accepting events")]
    ShuttingDown,
    /// An I/O problem (the token file, the listener).
    #[error("{0}")]
    Io(String),
}

type Items = Vec<(Event, Vec<crate::delivery::PushDue>)>;

/// The folder's files as read: each with its text, or why it could not be read.
type Sources = Vec<(PathBuf, Result<String, String>)>;

/// What a grouped accept came to: the queue's answer (its jobs are in the
/// store) and whether the flush after it succeeded.
type AcceptOutcome = (AcceptResult, Result<(), String>);

/// The queue's answer to one request: what was accepted and the jobs made.
type AcceptResult = Result<(Accepted, Vec<Job>), String>;

enum CommitRequest {
    Accept(Items, oneshot::Sender<AcceptOutcome>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Group commit: many requests, one store batch and one fsync. Every
/// request that arrives while the committer is busy joins the next group,
/// whose events are checked for duplicates and written in one batch, then
/// flushed once; each request hears its own result only after that flush.
/// The committer is a thread of its own, so that waiting for the disk costs
/// the async workers nothing.
#[derive(Clone)]
pub struct GroupCommit {
    tx: std::sync::mpsc::Sender<CommitRequest>,
}

impl GroupCommit {
    /// Starts the committer thread for `queue`; after a failed write it
    /// tells `schedule` to read the store again (a batch may have landed).
    pub fn start(queue: Queue, schedule: Arc<Mutex<Scheduler>>) -> GroupCommit {
        let (tx, rx) = std::sync::mpsc::channel::<CommitRequest>();
        std::thread::Builder::new()
            .name("pushwerk-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut groups = Vec::new();
                    let mut accept_replies = Vec::new();
                    let mut flush_replies = Vec::new();
                    for request in std::iter::once(first).chain(rx.try_iter()) {
                        match request {
                            CommitRequest::Accept(items, reply) => {
                                groups.push(items);
                                accept_replies.push(reply);
                            }
                            CommitRequest::Flush(reply) => flush_replies.push(reply),
                        }
                    }
                    // One durable store batch for the whole group (it also
                    // makes every earlier write durable), or a bare flush.
                    let (accepted, flushed): (Vec<AcceptResult>, _) = if groups.is_empty() {
                        (Vec::new(), queue.store().flush().map_err(|e| e.to_string()))
                    } else {
                        let n = groups.len();
                        match queue.accept_groups(groups, Utc::now(), true) {
                            Ok(results) => (results.into_iter().map(Ok).collect(), Ok(())),
                            Err(e) => {
                                // Some of the batch may be in the store (a
                                // flush that failed after it): the next
                                // refill picks such jobs up.
                                schedule.lock().expect("schedule lock").mark_overflow();
                                (
                                    vec![Err(e.to_string()); n],
                                    queue.store().flush().map_err(|e| e.to_string()),
                                )
                            }
                        }
                    };
                    for (reply, result) in accept_replies.into_iter().zip(accepted) {
                        let _ = reply.send((result, flushed.clone()));
                    }
                    for reply in flush_replies {
                        let _ = reply.send(flushed.clone());
                    }
                }
            })
            .expect("the committer thread starts");
        GroupCommit { tx }
    }

    /// Accepts events (duplicates checked, jobs made) and returns once they
    /// are on disk, sharing the batch and the fsync with every request
    /// that arrived meanwhile.
    async fn accept(&self, items: Items) -> AcceptOutcome {
        let stopped = || "committer stopped".to_owned();
        let (tx, rx) = oneshot::channel();
        if self.tx.send(CommitRequest::Accept(items, tx)).is_err() {
            return (Err(stopped()), Err(stopped()));
        }
        rx.await
            .unwrap_or_else(|_| (Err(stopped()), Err(stopped())))
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(CommitRequest::Flush(tx))
            .map_err(|_| "committer stopped".to_owned())?;
        rx.await.map_err(|_| "committer stopped".to_owned())?
    }
}

enum WriterMessage {
    Finished(Box<Finished>),
    Barrier(oneshot::Sender<()>),
}

/// Records finished attempts in the store in batches, on a thread of its
/// own: one store batch for every completion that arrived meanwhile, not
/// one per delivery.
///
/// A completion is written without fsync, and the schedule forgets its job
/// only once the completion is known to be durable: at most
/// [`CONFIRM_EVERY`] later the writer flushes the store and reads every
/// unconfirmed completion back. One the store dropped (redb reopened after
/// a failed write, a full disk: the commits since its last durable one are
/// gone) is written again, so the job is recorded as delivered and never
/// sits "queued" in the store while the schedule has forgotten it. While a
/// write, flush or read fails the writer keeps the completions in memory,
/// tries again every [`RETRY_EVERY`], and reports the reason through
/// [`OutcomeHealth`] (`/readyz` is not ready meanwhile).
struct CompletionWriter {
    tx: std::sync::mpsc::Sender<WriterMessage>,
}

/// How long a written completion may wait for the flush that confirms it.
const CONFIRM_EVERY: Duration = Duration::from_millis(500);
/// How soon a failed write, flush or read of completions is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Why delivery outcomes cannot be made durable, if they cannot: shared by
/// the completion writer (which sets and clears it) and `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct OutcomeHealth(Mutex<Option<String>>);

impl OutcomeHealth {
    /// Why outcomes cannot be made durable now, if they cannot.
    pub(crate) fn failing(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn fail(&self, reason: String) {
        let mut failing = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failing.is_none() {
            tracing::error!(
                reason = %reason,
                "cannot make delivery outcomes durable: kept in memory and written again; not ready until they are"
            );
        }
        *failing = Some(reason);
    }

    fn ok(&self) {
        let mut failing = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if failing.take().is_some() {
            tracing::info!("delivery outcomes are durable again");
        }
    }
}

/// The completion writer's completions not yet known to be durable.
struct Unconfirmed {
    queue: Queue,
    schedule: Arc<Mutex<Scheduler>>,
    metrics: Arc<Metrics>,
    health: Arc<OutcomeHealth>,
    /// Written (without fsync), in the order written.
    written: Vec<Finished>,
    /// Not in the store: their write failed, or the store dropped it.
    unwritten: Vec<Finished>,
    /// When to flush and confirm (or retry) next, if anything waits.
    due: Option<std::time::Instant>,
}

impl Unconfirmed {
    fn is_empty(&self) -> bool {
        self.written.is_empty() && self.unwritten.is_empty()
    }

    /// Writes a new batch (after any older ones still unwritten, so that
    /// the store sees them in order).
    fn add(&mut self, batch: Vec<Finished>) {
        if batch.is_empty() {
            return;
        }
        self.unwritten.extend(batch);
        if self.write() {
            self.due
                .get_or_insert_with(|| std::time::Instant::now() + CONFIRM_EVERY);
        }
    }

    /// Writes what is unwritten, in one batch; false (and a retry due)
    /// if the store refused.
    fn write(&mut self) -> bool {
        if self.unwritten.is_empty() {
            return true;
        }
        match self.queue.complete_all(&self.unwritten) {
            Ok(()) => {
                self.written.append(&mut self.unwritten);
                true
            }
            Err(e) => {
                self.failed(format!(
                    "cannot record {} delivery outcome(s): {e}",
                    self.unwritten.len()
                ));
                false
            }
        }
    }

    fn failed(&mut self, reason: String) {
        tracing::warn!(reason = %reason, "delivery outcomes wait in memory; trying again");
        self.health.fail(reason);
        self.due = Some(std::time::Instant::now() + RETRY_EVERY);
    }

    /// Flushes the store and reads the written completions back: the
    /// durable ones are confirmed (the schedule forgets their jobs), the
    /// dropped ones are written again.
    fn confirm(&mut self) {
        self.due = None;
        // Twice at most: a second round confirms what the first rewrote.
        for _ in 0..2 {
            if !self.write() {
                return;
            }
            if self.written.is_empty() {
                break;
            }
            if let Err(e) = self.queue.store().flush() {
                self.failed(format!("cannot flush delivery outcomes: {e}"));
                return;
            }
            let found: Result<Vec<bool>, _> = self
                .written
                .iter()
                .map(|f| self.queue.is_recorded(f))
                .collect();
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    // Not known to be durable: all stay unconfirmed.
                    self.failed(format!("cannot read delivery outcomes back: {e}"));
                    return;
                }
            };
            let mut durable = Vec::new();
            let mut dropped = Vec::new();
            for (f, found) in std::mem::take(&mut self.written).into_iter().zip(found) {
                if found {
                    durable.push(f);
                } else {
                    dropped.push(f);
                }
            }
            self.settled(durable);
            if dropped.is_empty() {
                break;
            }
            tracing::warn!(
                outcomes = dropped.len(),
                "the store dropped delivery outcomes it had accepted (reopened after an I/O error); writing them again"
            );
            self.unwritten = dropped;
        }
        if self.is_empty() {
            self.health.ok();
        } else {
            self.failed(format!(
                "the store dropped {} delivery outcome(s) again",
                self.unwritten.len()
            ));
        }
    }

    /// Durable completions: their jobs are forgotten, their dead letters counted.
    fn settled(&self, durable: Vec<Finished>) {
        if durable.is_empty() {
            return;
        }
        let dead = durable
            .iter()
            .filter(|f| matches!(f.completion, Completion::Dead(_)))
            .count();
        self.schedule
            .lock()
            .expect("schedule lock")
            .forget(durable.iter().map(|f| (f.job.id, f.job.attempt)));
        if dead > 0 {
            self.metrics
                .adjust("pushwerk_dead_letters", &[], dead as f64);
        }
    }
}

impl CompletionWriter {
    /// Starts the writer thread; `metrics` hears of every dead letter once
    /// it is durable (not at the next housekeeping round); `health` hears
    /// whether outcomes can be made durable.
    fn start(
        queue: Queue,
        schedule: Arc<Mutex<Scheduler>>,
        metrics: Arc<Metrics>,
        health: Arc<OutcomeHealth>,
    ) -> CompletionWriter {
        let (tx, rx) = std::sync::mpsc::channel::<WriterMessage>();
        std::thread::Builder::new()
            .name("pushwerk-complete".into())
            .spawn(move || {
                const MAX_BATCH: usize = 2_000;
                // Gather for a moment: fewer, larger store batches leave
                // the store to ingest (one writer at a time) and cost less.
                const GATHER: Duration = Duration::from_millis(2);
                let mut pending = Unconfirmed {
                    queue,
                    schedule,
                    metrics,
                    health,
                    written: Vec::new(),
                    unwritten: Vec::new(),
                    due: None,
                };
                loop {
                    let first = match pending.due {
                        None => match rx.recv() {
                            Ok(m) => Some(m),
                            Err(_) => return,
                        },
                        Some(due) => {
                            let left = due.saturating_duration_since(std::time::Instant::now());
                            match rx.recv_timeout(left) {
                                Ok(m) => Some(m),
                                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                                    pending.confirm();
                                    return;
                                }
                            }
                        }
                    };
                    let mut batch = Vec::new();
                    let mut barriers = Vec::new();
                    let deadline = std::time::Instant::now() + GATHER;
                    let mut next = first;
                    while let Some(message) = next.take() {
                        match message {
                            WriterMessage::Finished(f) => batch.push(*f),
                            // A barrier waits for what came before it, now.
                            WriterMessage::Barrier(b) => {
                                barriers.push(b);
                                break;
                            }
                        }
                        if batch.len() < MAX_BATCH {
                            let left =
                                deadline.saturating_duration_since(std::time::Instant::now());
                            next = rx.recv_timeout(left).ok();
                        }
                    }
                    pending.add(batch);
                    // A barrier (shutdown) confirms at once; otherwise when due.
                    if !barriers.is_empty()
                        || pending
                            .due
                            .is_some_and(|due| std::time::Instant::now() >= due)
                    {
                        pending.confirm();
                    }
                    for b in barriers {
                        let _ = b.send(());
                    }
                }
            })
            .expect("the completion writer starts");
        CompletionWriter { tx }
    }

    fn record(&self, finished: Finished) {
        if self
            .tx
            .send(WriterMessage::Finished(Box::new(finished)))
            .is_err()
        {
            tracing::error!("the completion writer stopped; the job stays queued");
        }
    }

    /// Returns once every completion recorded before the call is in the store.
    async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMessage::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A queued or retrying job as `GET /v1/jobs` and `pushwerk jobs` show it:
/// work that waits (a `delay:`, a retry) is visible before it happens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    /// The job's id (as in the delivery log).
    pub id: u64,
    /// The push.
    pub push: String,
    /// The event.
    pub event_id: String,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The number of its next attempt, from 1.
    pub attempt: u32,
    /// When its event was accepted.
    pub accepted_at: DateTime<Utc>,
    /// `queued` (no attempt yet) or `retrying`.
    pub state: &'static str,
    /// The error of its last attempt, if it had one.
    pub last_error: Option<String>,
}

/// Polls a future inside `catch_unwind`: a panic while it runs becomes an
/// `Err` with the panic's payload instead of ending the task silently.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message (its `&str` or `String` payload), shortened.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// A file's state in `GET /v1/pushes`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileState {
    /// The file.
    pub file: PathBuf,
    /// Its problems at the last load (errors mean an older version may be in force).
    pub diagnostics: Vec<String>,
    /// Whether the last good version is in force because the current one is broken.
    pub stale: bool,
}

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

fn token_file(data: &Path) -> PathBuf {
    data.join("ingest-token")
}

/// The API token: configured, or read from / generated into the data directory.
pub fn api_token(
    data: &Path,
    configured: Option<String>,
) -> Result<(String, Option<PathBuf>), DaemonError> {
    if let Some(t) = configured.filter(|t| !t.trim().is_empty()) {
        return Ok((t.trim().to_owned(), None));
    }
    let path = token_file(data);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok((t.trim().to_owned(), Some(path)));
        }
    }
    let token = Sealer::generate_key();
    std::fs::write(&path, format!("{token}\n"))
        .map_err(|e| DaemonError::Io(format!("cannot write {}: {e}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    Ok((token, Some(path)))
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Delivered { .. } => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::RefreshAndRetry { .. } | Outcome::Failed { .. } => "failed",
    }
}

impl Daemon {
    /// Opens the store, loads the folder and starts the group-commit task.
    /// (Tasks and the API are started by [`Daemon::run`].)
    pub fn open(config: DaemonConfig) -> Result<(Arc<Daemon>, Option<PathBuf>), DaemonError> {
        // SIGHUP's default action ends the process: one sent while the
        // store opens and the folder loads (`systemctl reload` right after
        // a start, a logrotate hook) killed the daemon. Listening makes it
        // harmless from here on ([`watch`] turns it into a reload; the
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
            other => DaemonError::Io(other.to_string()),
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

    /// Re-reads the folder and loads it, changed or not (at start, and on
    /// SIGHUP: `${file:…}` secrets outside the folder are read again too).
    /// A file that no longer loads, or is empty (truncated, about to be
    /// rewritten), keeps its last good version in force; its problems are
    /// reported. Only deleting a file removes its definitions. Only an
    /// unreadable folder is an error.
    pub fn reload(&self) -> Result<(), DaemonError> {
        self.load_folder(true).map(|_| ())
    }

    /// Re-reads the folder and loads it only if a file was added, removed
    /// or changed since the last load (a change notice may be for a read,
    /// an attribute, or a write of the same bytes). True if it loaded.
    pub fn reload_if_changed(&self) -> Result<bool, DaemonError> {
        self.load_folder(false)
    }

    fn load_folder(&self, force: bool) -> Result<bool, DaemonError> {
        let _one_at_a_time = self.reload_lock.lock().expect("reload lock");
        let mut files = Vec::new();
        crate::config::collect_files(&self.config.dir, &mut files)?;
        files.sort();
        let texts: Sources = files
            .iter()
            .map(|f| (f.clone(), crate::config::read_source(f)))
            .collect();
        {
            let mut last_read = self.last_read.lock().expect("last_read lock");
            if !force && last_read.as_ref() == Some(&texts) {
                tracing::debug!("folder notice without a content change: not reloaded");
                return Ok(false);
            }
            *last_read = Some(texts.clone());
        }
        let options = LoadOptions::default();
        let first = Catalog::from_sources(&self.config.dir, texts.clone(), &options);
        let broken: HashSet<PathBuf> = first
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.file.clone())
            .collect();
        let mut last_good = self.last_good.lock().expect("last_good lock");
        let mut stale = HashSet::new();
        // An emptied file (`: > f.yaml` before its new content is written)
        // is not a removal: its last good version stays in force.
        let emptied: HashSet<PathBuf> = texts
            .iter()
            .filter(|(f, t)| {
                matches!(t, Ok(text) if crate::config::is_blank(text))
                    && last_good
                        .get(f)
                        .is_some_and(|good| !crate::config::is_blank(good))
            })
            .map(|(f, _)| f.clone())
            .collect();
        let sources: Vec<(PathBuf, Result<String, String>)> = texts
            .into_iter()
            .map(|(f, t)| {
                if broken.contains(&f) || emptied.contains(&f) {
                    if let Some(good) = last_good.get(&f) {
                        stale.insert(f.clone());
                        return (f, Ok(good.clone()));
                    }
                } else if let Ok(text) = &t {
                    last_good.insert(f.clone(), text.clone());
                }
                (f, t)
            })
            .collect();
        last_good.retain(|f, _| files.contains(f));
        drop(last_good);
        let emptied_notes: Vec<Diagnostic> = emptied
            .iter()
            .map(|f| {
                Diagnostic::warning(
                    f,
                    crate::config::Position { line: 1, column: 1 },
                    "the file is empty: its last good version stays in force until it has content again or is deleted",
                )
            })
            .collect();
        let mut by_file: BTreeMap<PathBuf, Vec<&Diagnostic>> = BTreeMap::new();
        for d in first.diagnostics.iter().chain(&emptied_notes) {
            by_file.entry(d.file.clone()).or_default().push(d);
            match d.severity {
                Severity::Error => {
                    tracing::error!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.message)
                }
                Severity::Warning => {
                    tracing::warn!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.message)
                }
            }
        }
        let states = files
            .iter()
            .map(|f| FileState {
                file: f.clone(),
                diagnostics: by_file
                    .get(f)
                    .map(|ds| ds.iter().map(|d| d.to_string()).collect())
                    .unwrap_or_default(),
                stale: stale.contains(f),
            })
            .collect();
        // The first load is in force unless a broken file needed its last
        // good version.
        let catalog = if stale.is_empty() {
            first
        } else {
            Catalog::from_sources(&self.config.dir, sources, &options)
        };
        tracing::info!(
            pushes = catalog.pushes.len(),
            accounts = catalog.accounts.len(),
            "definitions loaded"
        );
        self.resolver().set_accounts(catalog.accounts.clone());
        let targets = catalog
            .pushes
            .iter()
            .map(|p| (p.name().to_owned(), self.target_slot(p)))
            .collect();
        *self.targets.write().expect("targets lock") = Arc::new(targets);
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
        *self.files.write().expect("files lock") = states;
        // Counted once the new definitions are in force, so that whoever
        // sees the count sees them too.
        if self.ready.load(Ordering::SeqCst) {
            self.metrics.add("pushwerk_reloads_total", &[], 1);
        }
        self.wake.notify_one();
        Ok(true)
    }

    /// Accepts events: each matching push gets a job (due after its
    /// `delay`), all durable before this returns.
    pub async fn ingest(self: &Arc<Self>, events: Vec<Event>) -> Result<Accepted, DaemonError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(DaemonError::ShuttingDown);
        }
        let catalog = self.catalog();
        let now = Utc::now();
        let items = events
            .into_iter()
            .map(|event| {
                let jobs = self.jobs_for(&catalog, &event, now);
                (event, jobs)
            })
            .collect();
        // The hand-off from the store to the schedule runs in a task of its
        // own: if the client goes away (and the server drops this future),
        // the jobs written for it are still scheduled.
        let daemon = self.clone();
        let (accepted, flushed) = tokio::spawn(async move {
            let _producing = daemon.producers.read().await;
            let (accepted, flushed) = daemon.commit.accept(items).await;
            // The jobs are in the store even if the flush failed (the
            // client hears so and may resend, which is then a duplicate):
            // deliver them.
            let accepted = accepted.map(|(accepted, jobs)| {
                daemon.schedule(jobs);
                accepted
            });
            (accepted, flushed)
        })
        .await
        .map_err(|e| DaemonError::Accept(e.to_string()))?;
        let accepted = accepted.map_err(DaemonError::Accept)?;
        flushed.map_err(DaemonError::Flush)?;
        self.metrics.add(
            "pushwerk_events_accepted_total",
            &[],
            accepted.accepted as u64,
        );
        self.metrics.add(
            "pushwerk_events_duplicate_total",
            &[],
            accepted.duplicates as u64,
        );
        Ok(accepted)
    }

    /// Hands jobs just written to the store to the schedule.
    fn schedule(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        self.schedule.lock().expect("schedule lock").add(jobs);
        self.wake.notify_one();
    }

    /// Re-queues dead letters (one by job id, or all of a push, or all).
    pub async fn replay(
        self: &Arc<Self>,
        job_id: Option<u64>,
        push: Option<String>,
    ) -> Result<usize, DaemonError> {
        // As in ingest: the hand-off survives a client that goes away.
        let daemon = self.clone();
        tokio::spawn(async move {
            let _producing = daemon.producers.read().await;
            let queue = daemon.queue.clone();
            let jobs = tokio::task::spawn_blocking(move || {
                queue.replay(job_id, push.as_deref(), Utc::now())
            })
            .await
            .map_err(|e| DaemonError::Io(e.to_string()))??;
            let n = jobs.len();
            daemon
                .metrics
                .adjust("pushwerk_dead_letters", &[], -(n as f64));
            daemon.schedule(jobs);
            daemon.commit.flush().await.map_err(DaemonError::Flush)?;
            Ok(n)
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))?
    }

    fn jobs_for(
        &self,
        catalog: &Catalog,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Vec<(String, DateTime<Utc>)> {
        catalog
            .pushes
            .iter()
            .filter(|p| matches!(&p.trigger, Trigger::Event(on) if *on == event.event_type))
            // A condition that cannot be evaluated still makes a job, so
            // that its delivery reports the error instead of dropping it.
            .filter(|p| match applies(catalog, p, event, now) {
                Ok(false) => {
                    self.count_skip(p.name(), &event.id, "its condition is false");
                    false
                }
                _ => true,
            })
            .map(|p| {
                let delay = p.spec.delay.map(|d| d.0).unwrap_or_default();
                let due = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(now);
                (p.name().to_owned(), due)
            })
            .collect()
    }

    /// An event a push does not deliver because of its `when:`: counted
    /// per push and logged, so that skipped work leaves a trace.
    fn count_skip(&self, push: &str, event_id: &str, reason: &str) {
        self.metrics
            .add("pushwerk_events_skipped_total", &[("push", push)], 1);
        tracing::info!(push = %push, event = %event_id, "skipped: {reason}");
    }

    /// Queued and retrying jobs (those of `push`, if given), the next due
    /// first, at most `limit`, and whether more are queued. Each carries
    /// the error of its last attempt, if it had one.
    pub async fn jobs(
        &self,
        push: Option<String>,
        limit: usize,
    ) -> Result<(Vec<JobView>, bool), DaemonError> {
        /// Queued records read at most for one answer (a filtered listing
        /// of a huge backlog stops there and says there is more).
        const MAX_SCAN: usize = 100_000;
        let queue = self.queue.clone();
        let (jobs, more) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            let mut scanned = 0;
            loop {
                let page = queue.jobs_page(after.as_deref(), 1000)?;
                scanned += 1000;
                after = page.last_key;
                for job in page.jobs {
                    if push.as_deref().is_some_and(|p| p != job.push) {
                        continue;
                    }
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(job);
                }
                if !page.more {
                    return Ok((out, false));
                }
                if scanned >= MAX_SCAN {
                    return Ok((out, true));
                }
            }
        })
        .await
        .map_err(|e| DaemonError::Io(e.to_string()))?
        .map_err(DaemonError::Queue)?;
        let mut errors: HashMap<u64, String> = {
            let last = self.last_errors.lock().expect("last_errors lock");
            jobs.iter()
                .filter_map(|j| last.get(&j.id).map(|e| (j.id, e.clone())))
                .collect()
        };
        // Retries made before a restart: their errors are in the log.
        let unknown: HashSet<u64> = jobs
            .iter()
            .filter(|j| j.attempt > 1 && !errors.contains_key(&j.id))
            .map(|j| j.id)
            .collect();
        if !unknown.is_empty() {
            let queue = self.queue.clone();
            let logged =
                tokio::task::spawn_blocking(move || queue.log(None, Some("retry"), 10_000))
                    .await
                    .map_err(|e| DaemonError::Io(e.to_string()))?
                    .map_err(DaemonError::Queue)?;
            for entry in logged {
                if unknown.contains(&entry.job_id) && !errors.contains_key(&entry.job_id) {
                    if let Some(e) = entry.error {
                        errors.insert(entry.job_id, e);
                    }
                }
            }
        }
        let views = jobs
            .into_iter()
            .map(|j| JobView {
                state: if j.attempt > 1 { "retrying" } else { "queued" },
                last_error: errors.remove(&j.id),
                id: j.id,
                push: j.push,
                event_id: j.event_id,
                due: j.due_at,
                attempt: j.attempt,
                accepted_at: j.accepted_at,
            })
            .collect();
        Ok((views, more))
    }

    fn target_slot(&self, push: &Push) -> TargetSlot {
        let (key, limit) = match push.target {
            TargetKind::GraphMail => (
                format!(
                    "graph:{}",
                    push.spec
                        .graph_mail
                        .as_ref()
                        .map(|g| g.account.as_str())
                        .unwrap_or("")
                ),
                4.min(self.config.per_target),
            ),
            TargetKind::BingAds => (
                format!(
                    "bing:{}",
                    push.spec
                        .bing_ads
                        .as_ref()
                        .map(|b| b.account.as_str())
                        .unwrap_or("")
                ),
                self.config.per_target,
            ),
            TargetKind::Smtp => (
                format!(
                    "smtp:{}",
                    push.spec
                        .smtp
                        .as_ref()
                        .map(|s| s.host.as_str())
                        .unwrap_or("")
                ),
                self.config.per_target,
            ),
            TargetKind::Http => {
                let url = push
                    .spec
                    .http
                    .as_ref()
                    .map(|h| h.url.as_str())
                    .unwrap_or("");
                let host = url
                    .split("://")
                    .nth(1)
                    .unwrap_or(url)
                    .split(['/', '?', '<'])
                    .next()
                    .unwrap_or("");
                (format!("http:{host}"), self.config.per_target)
            }
        };
        TargetSlot {
            key: Arc::from(key),
            limit: push
                .spec
                .in_flight
                .map(|n| n as usize)
                .unwrap_or(limit)
                .max(1),
        }
    }

    /// Takes due jobs and delivers them until shutdown.
    pub async fn run_workers(self: Arc<Self>) {
        let mut gauges_at = std::time::Instant::now();
        // After a failed read of the store, the next try waits a second.
        let mut refill_after = std::time::Instant::now();
        // #15: on a store shared by several nodes, look for jobs that no
        // live node holds (a node died) once a second.
        let mut orphans_at = std::time::Instant::now();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.queue.is_shared() && orphans_at.elapsed() >= Duration::from_secs(1) {
                orphans_at = std::time::Instant::now();
                self.adopt_orphans().await;
            }
            let wants_refill = self.schedule.lock().expect("schedule lock").wants_refill();
            if wants_refill && std::time::Instant::now() >= refill_after && !self.refill().await {
                refill_after = std::time::Instant::now() + Duration::from_secs(1);
            }
            let now = Utc::now();
            let targets = self.targets.read().expect("targets lock").clone();
            let target_of = |job: &Job| {
                targets
                    .get(&job.push)
                    .cloned()
                    .unwrap_or_else(|| TargetSlot {
                        // Its push is gone: the delivery dead-letters it at once.
                        key: Arc::from("undefined"),
                        limit: self.config.concurrency.max(1),
                    })
            };
            loop {
                let job = self
                    .schedule
                    .lock()
                    .expect("schedule lock")
                    .next(now, target_of);
                let Some(job) = job else { break };
                if self.stopping.load(Ordering::SeqCst) {
                    // Shutting down: start nothing new; the job stays queued.
                    self.schedule.lock().expect("schedule lock").put_back(job);
                    return;
                }
                // Bing jobs that share the job's request go with it (one batch).
                let riders = super::bing_batch::take_riders(
                    &self.catalog(),
                    &self.schedule,
                    &job,
                    now,
                    self.deliverer.bing_batch(),
                );
                tokio::spawn(self.clone().deliver_guarded(job));
                for rider in riders {
                    tokio::spawn(self.clone().deliver_guarded(rider));
                }
            }
            if gauges_at.elapsed() >= Duration::from_secs(1) {
                gauges_at = std::time::Instant::now();
                self.update_gauges();
            }
            // Sleep until woken (new jobs, a finished delivery) or until
            // the next job comes due; at most a second.
            let next_due = self.schedule.lock().expect("schedule lock").next_due();
            let wait = next_due
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// #15: takes the jobs of dead nodes (a shared store) into the schedule;
    /// a full page leaves the rest to a refill.
    async fn adopt_orphans(&self) {
        const PAGE: usize = 1000;
        let _producing = self.producers.read().await;
        let queue = self.queue.clone();
        match tokio::task::spawn_blocking(move || queue.claim_orphans(PAGE)).await {
            Ok(Ok(jobs)) => {
                if !jobs.is_empty() {
                    tracing::info!(
                        jobs = jobs.len(),
                        "took over the jobs of a node that stopped"
                    );
                }
                let full = jobs.len() == PAGE;
                self.schedule(jobs);
                if full {
                    self.schedule.lock().expect("schedule lock").mark_overflow();
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot look for the jobs of stopped nodes"),
            Err(e) => tracing::warn!(error = %e, "cannot look for the jobs of stopped nodes"),
        }
    }

    /// Reads jobs that wait in the store only back into the schedule, in
    /// due order, as far as there is room. False if the store could not be
    /// read.
    async fn refill(&self) -> bool {
        let _exclusive = self.producers.write().await;
        self.schedule.lock().expect("schedule lock").begin_refill();
        let mut after: Option<Vec<u8>> = None;
        let mut complete = false;
        let mut read = true;
        loop {
            let room = self.schedule.lock().expect("schedule lock").room();
            if room == 0 {
                break;
            }
            let queue = self.queue.clone();
            let start = after.clone();
            let page = tokio::task::spawn_blocking(move || {
                queue.claim_page(start.as_deref(), room.min(1000))
            })
            .await;
            let page = match page
                .map_err(|e| e.to_string())
                .and_then(|p| p.map_err(|e| e.to_string()))
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read queued jobs; will try again");
                    read = false;
                    break;
                }
            };
            after = page.last_key;
            self.schedule.lock().expect("schedule lock").add(page.jobs);
            if !page.more {
                complete = true;
                break;
            }
        }
        let mut schedule = self.schedule.lock().expect("schedule lock");
        schedule.end_refill(complete);
        tracing::debug!(
            resident = schedule.resident(),
            complete,
            "refilled the schedule from the store"
        );
        read
    }

    fn update_gauges(&self) {
        let in_flight = self.schedule.lock().expect("schedule lock").in_flight();
        self.metrics
            .set("pushwerk_jobs_in_flight", &[], in_flight as f64);
    }

    /// [`Daemon::deliver_job`], with a panic anywhere in it caught: the
    /// attempt is recorded as failed with the panic's message and the job
    /// dead-lettered (a panic is a bug that the same job would hit again on
    /// every retry; `replay` re-queues it once fixed), and its slots are
    /// freed, so the target goes on delivering.
    async fn deliver_guarded(self: Arc<Self>, job: Job) {
        let copy = job.clone();
        let Err(panic) = CatchUnwind(Box::pin(self.clone().deliver_job(job))).await else {
            return;
        };
        let message = panic_message(panic.as_ref());
        tracing::error!(push = %copy.push, event = %copy.event_id, attempt = copy.attempt, "the delivery panicked: {message}; dead-lettered");
        let reason = format!("internal error: the delivery panicked: {message}");
        let entry = LogEntry {
            at: Utc::now(),
            job_id: copy.id,
            push: copy.push.clone(),
            event_id: copy.event_id.clone(),
            attempt: copy.attempt,
            status: "dead".to_owned(),
            code: None,
            reference: None,
            error: Some(reason.clone()),
            duration_ms: 0,
            latency_ms: None,
        };
        self.finish(copy, entry, Completion::Dead(reason));
    }

    async fn deliver_job(self: Arc<Self>, job: Job) {
        let catalog = self.catalog();
        let started = Utc::now();
        let entry = |status: &str,
                     code: Option<u16>,
                     reference: Option<String>,
                     error: Option<String>,
                     duration: Duration| LogEntry {
            at: Utc::now(),
            job_id: job.id,
            push: job.push.clone(),
            event_id: job.event_id.clone(),
            attempt: job.attempt,
            status: status.to_owned(),
            code,
            reference,
            error,
            duration_ms: duration.as_millis() as u64,
            latency_ms: None,
        };
        let Some(event) = job.event.clone() else {
            let e = entry(
                "dead",
                None,
                None,
                Some("the event is no longer stored".into()),
                Duration::ZERO,
            );
            return self.finish(job, e, Completion::Dead("event expired".into()));
        };
        let Some(push) = catalog.push(&job.push) else {
            let reason = format!("push `{}` is no longer defined", job.push);
            let e = entry("dead", None, None, Some(reason.clone()), Duration::ZERO);
            return self.finish(job, e, Completion::Dead(reason));
        };
        // A fault point for the tests of the panic guard (debug builds only).
        #[cfg(debug_assertions)]
        if std::env::var("PUSHWERK_TEST_PANIC_PUSH").is_ok_and(|p| p == job.push) {
            panic!("test fault point: push `{}` panics", job.push);
        }
        let delivery = self
            .deliverer
            .deliver(&catalog, push, &event, job.attempt)
            .await;
        let attempt = match delivery {
            Delivery::Skipped(reason) => {
                self.count_skip(&job.push, &job.event_id, &reason);
                let e = entry("skipped", None, None, Some(reason), Duration::ZERO);
                return self.finish(job, e, Completion::Done);
            }
            Delivery::Attempted(a) => a,
        };
        let (code, reference, error) = match &attempt.outcome {
            Outcome::Delivered { status, reference } => (Some(*status), reference.clone(), None),
            Outcome::Retry {
                status,
                reason,
                reference,
                ..
            } => (*status, reference.clone(), Some(reason.clone())),
            Outcome::RefreshAndRetry {
                status,
                reason,
                reference,
            } => (Some(*status), reference.clone(), Some(reason.clone())),
            Outcome::Failed {
                status,
                code,
                message,
                reference,
                items,
            } => {
                let mut text = match code {
                    Some(c) => format!("{c}: {message}"),
                    None => message.clone(),
                };
                for i in items {
                    text.push_str(&format!(
                        "; item {} {}: {}",
                        i.index,
                        i.error_code.as_deref().unwrap_or_default(),
                        i.message
                    ));
                }
                (*status, reference.clone(), Some(text))
            }
        };
        let mut e = entry(
            outcome_name(&attempt.outcome),
            code,
            reference,
            error.clone(),
            attempt.duration,
        );
        let completion = match &attempt.outcome {
            Outcome::Delivered { .. } => {
                let now = Utc::now();
                let latency = (now - job.accepted_at).to_std().unwrap_or_default();
                e.latency_ms = Some(latency.as_millis() as u64);
                self.metrics.observe_latency(latency.as_secs_f64());
                // From when it was first due: the configured delay is not lag.
                let delay = push.spec.delay.map(|d| d.0).unwrap_or_default();
                let lag = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| job.accepted_at.checked_add_signed(d))
                    .map_or(latency, |due| (now - due).to_std().unwrap_or_default());
                self.metrics.observe_due_latency(lag.as_secs_f64());
                Completion::Done
            }
            Outcome::Retry { delay, .. } => {
                let wait = self.config.backoff.wait(*delay, job.attempt);
                let first = job.first_attempt_at.unwrap_or(started);
                let max_age =
                    chrono::Duration::from_std(push.spec.retry.max_age.0).unwrap_or_default();
                let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                if job.attempt >= push.spec.retry.max_attempts {
                    e.status = "dead".into();
                    Completion::Dead(format!(
                        "gave up after {} attempts: {}",
                        job.attempt,
                        error.unwrap_or_default()
                    ))
                } else if next - first > max_age {
                    e.status = "dead".into();
                    Completion::Dead(format!(
                        "gave up: the next attempt would be past max_age {}: {}",
                        humantime::format_duration(push.spec.retry.max_age.0),
                        error.unwrap_or_default()
                    ))
                } else {
                    Completion::Retry(Job {
                        attempt: job.attempt + 1,
                        first_attempt_at: Some(first),
                        due_at: next,
                        ..job.clone()
                    })
                }
            }
            _ => {
                e.status = "dead".into();
                Completion::Dead(error.unwrap_or_else(|| "failed".into()))
            }
        };
        match &completion {
            Completion::Dead(reason) => {
                tracing::warn!(push = %job.push, event = %job.event_id, attempt = job.attempt, reason = %reason, "dead-lettered")
            }
            Completion::Retry(next) => {
                tracing::info!(push = %job.push, event = %job.event_id, attempt = job.attempt, next = %next.due_at, "will retry")
            }
            Completion::Done => {
                tracing::debug!(push = %job.push, event = %job.event_id, "delivered")
            }
        }
        self.finish(job, e, completion);
    }

    /// Ends a delivery: frees its slots (a retry goes back on the
    /// schedule) and hands the outcome to the completion writer.
    fn finish(&self, job: Job, entry: LogEntry, completion: Completion) {
        self.metrics.add(
            "pushwerk_deliveries_total",
            &[("push", &job.push), ("outcome", &entry.status)],
            1,
        );
        let retry = match &completion {
            Completion::Retry(next) => Some(next.clone()),
            _ => None,
        };
        {
            let mut last_errors = self.last_errors.lock().expect("last_errors lock");
            match (&retry, &entry.error) {
                (Some(_), Some(error)) => {
                    last_errors.insert(job.id, error.clone());
                }
                _ => {
                    last_errors.remove(&job.id);
                }
            }
        }
        // Recorded under the schedule's lock: once shutdown sees nothing in
        // flight, every completion is already on its way to the store.
        let mut schedule = self.schedule.lock().expect("schedule lock");
        schedule.finished(job.id, retry);
        self.completions.record(Finished {
            job,
            entry,
            completion,
        });
        drop(schedule);
        self.wake.notify_one();
    }

    /// Wakes the workers (new or replayed jobs).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Fires `schedule:` pushes on time; a tick missed while the daemon was
    /// down is fired once at start only for pushes with `catch_up`.
    pub async fn run_cron(self: Arc<Self>) {
        let mut checked: HashMap<String, DateTime<Utc>> = HashMap::new();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let catalog = self.catalog();
            let now = Utc::now();
            let mut next_wake = now + chrono::Duration::seconds(1);
            for push in &catalog.pushes {
                let Trigger::Schedule(schedule) = &push.trigger else {
                    continue;
                };
                let from = *checked.entry(push.name().to_owned()).or_insert_with(|| {
                    let last = self.queue.last_tick(push.name()).ok().flatten();
                    match (push.spec.catch_up, last) {
                        (true, Some(last)) => last,
                        // First seen now (at start, or added later): ticks
                        // before it existed are not missed ticks.
                        _ => now,
                    }
                });
                let Some(tick) = schedule.next_after(&from) else {
                    continue;
                };
                if tick <= now {
                    // Only the newest missed tick fires (catch-up fires once).
                    let mut latest = tick;
                    while let Some(t) = schedule.next_after(&latest).filter(|t| *t <= now) {
                        latest = t;
                    }
                    let event = Event::schedule_tick(push.name(), latest);
                    let items = vec![(event, vec![(push.name().to_owned(), now)])];
                    let producing = self.producers.read().await;
                    match self.queue.accept(items, now) {
                        Ok((_, jobs)) => {
                            let _ = self.queue.set_last_tick(push.name(), latest);
                            self.schedule(jobs);
                        }
                        Err(e) => {
                            tracing::error!(push = %push.name(), error = %e, "cannot queue a cron tick")
                        }
                    }
                    drop(producing);
                    checked.insert(push.name().to_owned(), latest);
                    if let Some(n) = schedule.next_after(&latest) {
                        next_wake = next_wake.min(n);
                    }
                } else {
                    next_wake = next_wake.min(tick);
                }
            }
            let wait = (next_wake - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(5));
            tokio::time::sleep(wait).await;
        }
    }

    /// Retention, gauges and keep-alive refreshes, periodically.
    pub async fn run_housekeeping(self: Arc<Self>) {
        let mut last_keep_alive = std::time::Instant::now();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // Retention and the counts walk the store: off the async
            // workers, so that ingest and delivery go on meanwhile.
            let queue = self.queue.clone();
            let c = self.config.clone();
            let walked = tokio::task::spawn_blocking(move || {
                if let Err(e) =
                    queue.retain(Utc::now(), c.log_max_age, c.log_max_count, c.event_window)
                {
                    tracing::error!(error = %e, "retention failed");
                }
                queue.pending()
            })
            .await;
            // (`pushwerk_dead_letters` is kept current as jobs are
            // dead-lettered and replayed.)
            if let Ok(Ok(n)) = walked {
                self.metrics.set("pushwerk_jobs_queued", &[], n as f64);
            }
            if let Ok(status) = self.resolver().status(Utc::now().date_naive()) {
                let reauth = status.iter().filter(|s| s.state == "needs_reauth").count();
                self.metrics
                    .set("pushwerk_accounts_needing_reauth", &[], reauth as f64);
                let expiring = status
                    .iter()
                    .filter(|s| s.warnings.iter().any(|w| w.contains("client secret")))
                    .count();
                self.metrics
                    .set("pushwerk_client_secret_expiring", &[], expiring as f64);
                for s in &status {
                    for w in &s.warnings {
                        tracing::warn!(account = %s.account, "{w}");
                    }
                }
            }
            for ((account, outcome), n) in self.resolver().token_request_outcomes() {
                self.metrics.set_counter(
                    "pushwerk_token_refreshes_total",
                    &[("account", &account), ("outcome", outcome)],
                    n,
                );
            }
            if last_keep_alive.elapsed() >= Duration::from_secs(600) {
                last_keep_alive = std::time::Instant::now();
                for (account, result) in self.resolver().keep_alive().await {
                    if let Err(e) = result {
                        tracing::warn!(account = %account, error = %e, "keep-alive refresh failed");
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
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
    }
}

/// How long the folder must be quiet after a change notice before it is
/// read again (an editor's save is several notices)…
const SETTLE: Duration = Duration::from_millis(150);
/// … but a folder that never stays quiet is read at least this often.
const SETTLE_AT_MOST: Duration = Duration::from_secs(1);

/// Whether a change notice can mean new content. Reads (opening, closing
/// a file not written, access times) cannot: reacting to them would make
/// every reload's own reads the cause of the next one.
fn may_change_content(event: &notify::Event) -> bool {
    use notify::event::{EventKind, MetadataKind, ModifyKind};
    !matches!(
        event.kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))
    )
}

/// Watches the folder: a change notice (writes, creations, removals,
/// renames; never reads) is followed, once the folder has been quiet for
/// a moment, by [`Daemon::reload_if_changed`], which loads only if some
/// file's content differs. Also reloads on SIGHUP (logged), unconditionally.
/// The watcher lives as long as the returned value.
pub fn watch(daemon: Arc<Daemon>) -> Result<notify::RecommendedWatcher, DaemonError> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (e.g. a lost notice) may hide a change: look.
        if event.as_ref().map_or(true, may_change_content) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| DaemonError::Io(format!("cannot watch {}: {e}", daemon.config.dir.display())))?;
    notify::Watcher::watch(
        &mut watcher,
        &daemon.config.dir,
        notify::RecursiveMode::Recursive,
    )
    .map_err(|e| DaemonError::Io(format!("cannot watch {}: {e}", daemon.config.dir.display())))?;
    reload_on_hangup(daemon.clone())?;
    std::thread::Builder::new()
        .name("pushwerk-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                let deadline = std::time::Instant::now() + SETTLE_AT_MOST;
                while std::time::Instant::now() < deadline && rx.recv_timeout(SETTLE).is_ok() {}
                match daemon.reload_if_changed() {
                    Ok(true) => tracing::info!("folder changed: reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; the previous definitions stay in force")
                    }
                }
            }
        })
        .map_err(|e| DaemonError::Io(format!("cannot start the folder watcher: {e}")))?;
    Ok(watcher)
}

/// SIGHUP reloads the folder (the convention of daemons such as Vector and
/// nginx) instead of ending the process. Needs a Tokio runtime.
fn reload_on_hangup(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|e| DaemonError::Io(format!("cannot handle SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the folder");
            let d = daemon.clone();
            match tokio::task::spawn_blocking(move || d.reload()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload failed; the previous definitions stay in force")
                }
                Err(e) => tracing::error!(error = %e, "reload failed"),
            }
        }
    });
    Ok(())
}
