//! The completion writer: finished attempts recorded in batches, confirmed
//! durable, and only then forgotten by the schedule. Its cadence (gather,
//! confirm, retry) is a thread's, measured on the monotonic clock: it
//! decides no due date, so it does not read the daemon's [`Clock`].
//!
//! [`Clock`]: crate::clock::Clock

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::delivery::{Completion, Finished, Queue, Scheduler};
use crate::metrics::Metrics;

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
pub(super) struct CompletionWriter {
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
    pub(super) fn start(
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

    pub(super) fn record(&self, finished: Finished) {
        if self
            .tx
            .send(WriterMessage::Finished(Box::new(finished)))
            .is_err()
        {
            tracing::error!("the completion writer stopped; the job stays queued");
        }
    }

    /// Returns once every completion recorded before the call is in the store.
    pub(super) async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMessage::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
