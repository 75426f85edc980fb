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
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::deliver::{Deliverer, Delivery};
use super::render::applies;
use super::send::Sender;
use crate::backoff::Backoff;
use crate::config::{Catalog, Diagnostic, LoadOptions, Push, Severity, TargetKind, Trigger};
use crate::delivery::{Accepted, Completion, Job, LogEntry, Queue, QueueError};
use crate::dispatch::{Endpoints, Outcome};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::oauth::seal::Sealer;
use crate::oauth::{Resolver, ResolverSettings, TokenStore};
use crate::store::{SledStore, Store};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The folder of pushes and accounts.
    pub dir: PathBuf,
    /// The data directory.
    pub data: PathBuf,
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
}

impl DaemonConfig {
    /// Defaults for `dir` and `data`.
    pub fn new(dir: PathBuf, data: PathBuf) -> DaemonConfig {
        DaemonConfig {
            dir,
            data,
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            ingest_token: None,
            max_body: 1024 * 1024,
            concurrency: 64,
            per_target: 8,
            grace: Duration::from_secs(10),
            log_max_age: chrono::Duration::days(7),
            log_max_count: 100_000,
            event_window: chrono::Duration::days(7),
            retry_after_cap: Duration::from_secs(600),
            backoff: Backoff::default(),
            endpoints: Endpoints::default(),
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

/// Many writers, one fsync: each `flush` call waits for a flush that began
/// after its writes, and every waiter that queued meanwhile shares it.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<oneshot::Sender<Result<(), String>>>,
}

impl GroupCommit {
    /// Starts the flusher task for `store`.
    pub fn start(store: Arc<dyn Store>) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), String>>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let store = store.clone();
                let result = tokio::task::spawn_blocking(move || store.flush())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        GroupCommit { tx }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| "flusher stopped".to_owned())?;
        rx.await.map_err(|_| "flusher stopped".to_owned())?
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
    /// The durable queue.
    pub queue: Queue,
    commit: GroupCommit,
    deliverer: Deliverer,
    /// Metrics for `/metrics`.
    pub metrics: Metrics,
    wake: Notify,
    in_flight: Mutex<HashSet<u64>>,
    slots: Arc<Semaphore>,
    per_target: Mutex<HashMap<String, Arc<Semaphore>>>,
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
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data)?);
        let sealer = Sealer::from_env(&crate::config::secret::process_env)?;
        let resolver = Arc::new(Resolver::new(
            TokenStore::new(store.clone(), sealer),
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
        let daemon = Arc::new(Daemon {
            catalog: RwLock::new(Arc::new(empty)),
            files: RwLock::new(Vec::new()),
            last_good: Mutex::new(HashMap::new()),
            queue: Queue::new(store.clone()),
            commit: GroupCommit::start(store),
            deliverer,
            metrics: Metrics::default(),
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            per_target: Mutex::new(HashMap::new()),
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

    /// The resolver (OAuth state).
    pub fn resolver(&self) -> &Arc<Resolver> {
        self.deliverer.resolver()
    }

    /// Re-reads the folder. A file that no longer loads keeps its last good
    /// version in force; its errors are reported. Only an unreadable folder
    /// is an error.
    pub fn reload(&self) -> Result<(), DaemonError> {
        let mut files = Vec::new();
        crate::config::collect_files(&self.config.dir, &mut files)?;
        files.sort();
        let texts: Vec<(PathBuf, Result<String, String>)> = files
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    std::fs::read_to_string(f).map_err(|e| format!("cannot read file: {e}")),
                )
            })
            .collect();
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
        let sources: Vec<(PathBuf, Result<String, String>)> = texts
            .into_iter()
            .map(|(f, t)| {
                if broken.contains(&f) {
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
        let mut by_file: BTreeMap<PathBuf, Vec<&Diagnostic>> = BTreeMap::new();
        for d in &first.diagnostics {
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
        *self.catalog.write().expect("catalog lock") = Arc::new(catalog);
        *self.files.write().expect("files lock") = states;
        self.wake.notify_one();
        Ok(())
    }

    /// Accepts events: each matching push gets a job (due after its
    /// `delay`), all durable before this returns.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<Accepted, DaemonError> {
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
        let accepted = self.queue.accept(items, now)?;
        self.commit.flush().await.map_err(DaemonError::Flush)?;
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
        if accepted.jobs > 0 {
            self.wake.notify_one();
        }
        Ok(accepted)
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
            .filter(|p| applies(catalog, p, event, now).unwrap_or(true))
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

    fn target_slot(&self, push: &Push) -> Arc<Semaphore> {
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
        self.per_target
            .lock()
            .expect("per-target lock")
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(limit.max(1))))
            .clone()
    }

    /// Takes due jobs and delivers them until shutdown.
    pub async fn run_workers(self: Arc<Self>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let now = Utc::now();
            let due = match self.queue.due(now, 512) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the queue");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut started = 0;
            for (key, job) in due {
                if !self
                    .in_flight
                    .lock()
                    .expect("in-flight lock")
                    .insert(job.id)
                {
                    continue;
                }
                // The list is a snapshot: a job that was in flight when it was
                // taken may have completed since (its key removed, then its
                // in-flight mark). Claim only jobs still queued.
                if !self.queue.contains(&key).unwrap_or(false) {
                    self.in_flight
                        .lock()
                        .expect("in-flight lock")
                        .remove(&job.id);
                    continue;
                }
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                if self.stopping.load(Ordering::SeqCst) {
                    // Shutting down: start nothing new; the job stays queued.
                    self.in_flight
                        .lock()
                        .expect("in-flight lock")
                        .remove(&job.id);
                    return;
                }
                started += 1;
                let daemon = self.clone();
                tokio::spawn(async move {
                    daemon.deliver_job(key, job).await;
                    drop(permit);
                });
            }
            self.update_gauges();
            if started == 0 {
                // Nothing new to start: sleep until the next job comes due,
                // or — when every due job is already in flight — until one
                // finishes (its completion wakes us); at most a second.
                let wait = match self.queue.next_due() {
                    Ok(Some(t)) if t > Utc::now() => {
                        (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                    }
                    _ => Duration::from_secs(1),
                };
                let wait = wait.clamp(Duration::from_millis(1), Duration::from_secs(1));
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    fn update_gauges(&self) {
        let in_flight = self.in_flight.lock().expect("in-flight lock").len();
        self.metrics
            .set("pushwerk_jobs_in_flight", &[], in_flight as f64);
    }

    async fn deliver_job(self: Arc<Self>, key: Vec<u8>, job: Job) {
        let catalog = self.catalog();
        let started = Utc::now();
        let finish = |entry: LogEntry, completion: Completion, event: Option<&Event>| {
            if let Err(e) = self.queue.complete(&key, &job, &entry, completion, event) {
                tracing::error!(job = job.id, error = %e, "cannot record a delivery outcome; the job stays queued");
            }
            self.metrics.add(
                "pushwerk_deliveries_total",
                &[("push", &job.push), ("outcome", &entry.status)],
                1,
            );
        };
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
        let event = match self.queue.event(&job.event_id) {
            Ok(Some(e)) => e,
            Ok(None) => {
                finish(
                    entry(
                        "dead",
                        None,
                        None,
                        Some("the event is no longer stored".into()),
                        Duration::ZERO,
                    ),
                    Completion::Dead("event expired".into()),
                    None,
                );
                return self.done(job.id);
            }
            Err(e) => {
                tracing::error!(job = job.id, error = %e, "cannot read the event; will retry");
                return self.done(job.id);
            }
        };
        let Some(push) = catalog.push(&job.push) else {
            let reason = format!("push `{}` is no longer defined", job.push);
            finish(
                entry("dead", None, None, Some(reason.clone()), Duration::ZERO),
                Completion::Dead(reason),
                Some(&event),
            );
            return self.done(job.id);
        };
        let slot = self.target_slot(push);
        let Ok(_permit) = slot.acquire_owned().await else {
            return self.done(job.id);
        };
        let delivery = self
            .deliverer
            .deliver(&catalog, push, &event, job.attempt)
            .await;
        let attempt = match delivery {
            Delivery::Skipped(reason) => {
                finish(
                    entry("skipped", None, None, Some(reason), Duration::ZERO),
                    Completion::Done,
                    Some(&event),
                );
                return self.done(job.id);
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
                let latency = (Utc::now() - job.accepted_at).to_std().unwrap_or_default();
                e.latency_ms = Some(latency.as_millis() as u64);
                self.metrics.observe_latency(latency.as_secs_f64());
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
                    Completion::Retry(next)
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
            Completion::Retry(at) => {
                tracing::info!(push = %job.push, event = %job.event_id, attempt = job.attempt, next = %at, "will retry")
            }
            Completion::Done => {
                tracing::debug!(push = %job.push, event = %job.event_id, "delivered")
            }
        }
        finish(e, completion, Some(&event));
        self.done(job.id);
    }

    /// Wakes the workers (new or replayed jobs).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn done(&self, id: u64) {
        self.in_flight.lock().expect("in-flight lock").remove(&id);
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
                    let jobs = vec![(event, vec![(push.name().to_owned(), now)])];
                    match self.queue.accept(jobs, now) {
                        Ok(_) => {
                            let _ = self.queue.set_last_tick(push.name(), latest);
                            self.wake.notify_one();
                        }
                        Err(e) => {
                            tracing::error!(push = %push.name(), error = %e, "cannot queue a cron tick")
                        }
                    }
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
            let c = &self.config;
            if let Err(e) =
                self.queue
                    .retain(Utc::now(), c.log_max_age, c.log_max_count, c.event_window)
            {
                tracing::error!(error = %e, "retention failed");
            }
            if let Ok(n) = self.queue.pending() {
                self.metrics.set("pushwerk_jobs_queued", &[], n as f64);
            }
            if let Ok(d) = self.queue.dead_letters(None) {
                self.metrics
                    .set("pushwerk_dead_letters", &[], d.len() as f64);
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
        while !self.in_flight.lock().expect("in-flight lock").is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.in_flight.lock().expect("in-flight lock").len();
        if left > 0 {
            tracing::warn!(
                left,
                "grace period over; unfinished deliveries stay queued and run after the next start"
            );
        }
        if let Err(e) = self.commit.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// Watches the folder; every debounced change reloads it.
pub fn watch(
    daemon: Arc<Daemon>,
) -> Result<notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>, DaemonError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut debouncer = notify_debouncer_mini::new_debouncer(Duration::from_millis(150), tx)
        .map_err(|e| {
            DaemonError::Io(format!("cannot watch {}: {e}", daemon.config.dir.display()))
        })?;
    debouncer
        .watcher()
        .watch(&daemon.config.dir, notify::RecursiveMode::Recursive)
        .map_err(|e| {
            DaemonError::Io(format!("cannot watch {}: {e}", daemon.config.dir.display()))
        })?;
    std::thread::spawn(move || {
        for result in rx {
            if result.is_ok() {
                if let Err(e) = daemon.reload() {
                    tracing::error!(error = %e, "reload failed; the previous definitions stay in force");
                }
            }
        }
    });
    Ok(debouncer)
}
