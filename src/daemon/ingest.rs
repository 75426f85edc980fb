//! Ingest: events matched to pushes and made durable by group commit;
//! replays of dead letters handed to the schedule the same way.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{CommitError, Daemon, DaemonError};
use crate::config::{Catalog, Trigger};
use crate::delivery::{Accepted, Job, Queue, Scheduler};
use crate::engine::render::applies;
use crate::event::Event;

type Items = Vec<(Event, Vec<crate::delivery::PushDue>)>;

/// What a grouped accept came to: the queue's answer (its jobs are in the
/// store) and whether the flush after it succeeded.
type AcceptOutcome = (AcceptResult, Result<(), CommitError>);

/// The queue's answer to one request: what was accepted and the jobs made.
type AcceptResult = Result<(Accepted, Vec<Job>), CommitError>;

enum CommitRequest {
    /// Events with their jobs, accepted at the given time.
    Accept(Items, DateTime<Utc>, oneshot::Sender<AcceptOutcome>),
    Flush(oneshot::Sender<Result<(), CommitError>>),
}

/// Group commit: many requests, one store batch and one fsync. Every
/// request that arrives while the committer is busy joins the next group,
/// whose events are checked for duplicates and written in one batch, then
/// flushed once; each request hears its own result only after that flush.
/// The committer is a thread of its own, so that waiting for the disk costs
/// the async workers nothing.
#[derive(Clone)]
pub(super) struct GroupCommit {
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
                    let mut now = None;
                    let mut accept_replies = Vec::new();
                    let mut flush_replies = Vec::new();
                    for request in std::iter::once(first).chain(rx.try_iter()) {
                        match request {
                            CommitRequest::Accept(items, at, reply) => {
                                groups.push(items);
                                now = now.max(Some(at));
                                accept_replies.push(reply);
                            }
                            CommitRequest::Flush(reply) => flush_replies.push(reply),
                        }
                    }
                    // One durable store batch for the whole group (it also
                    // makes every earlier write durable), or a bare flush.
                    let (accepted, flushed): (Vec<AcceptResult>, _) = if groups.is_empty() {
                        (Vec::new(), queue.store().flush().map_err(CommitError::from))
                    } else {
                        let n = groups.len();
                        let now = now.expect("a group has a time");
                        match queue.accept_groups(groups, now, true) {
                            Ok(results) => (results.into_iter().map(Ok).collect(), Ok(())),
                            Err(e) => {
                                // Some of the batch may be in the store (a
                                // flush that failed after it): the next
                                // refill picks such jobs up.
                                schedule.lock().expect("schedule lock").mark_overflow();
                                (
                                    vec![Err(CommitError::from(e)); n],
                                    queue.store().flush().map_err(CommitError::from),
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
    async fn accept(&self, items: Items, now: DateTime<Utc>) -> AcceptOutcome {
        let stopped = || (Err(CommitError::Stopped), Err(CommitError::Stopped));
        let (tx, rx) = oneshot::channel();
        if self.tx.send(CommitRequest::Accept(items, now, tx)).is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }

    /// Returns once everything written before the call is on disk.
    pub async fn flush(&self) -> Result<(), CommitError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(CommitRequest::Flush(tx))
            .map_err(|_| CommitError::Stopped)?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }
}

impl Daemon {
    /// Accepts events: each matching push gets a job (due after its
    /// `delay`), all durable before this returns.
    pub async fn ingest(self: &Arc<Self>, events: Vec<Event>) -> Result<Accepted, DaemonError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(DaemonError::ShuttingDown);
        }
        let catalog = self.catalog();
        let now = self.config.clock.now();
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
            let (accepted, flushed) = daemon.commit.accept(items, now).await;
            // The jobs are in the store even if the flush failed (the
            // client hears so and may resend, which is then a duplicate):
            // deliver them.
            let accepted = accepted.map(|(accepted, jobs)| {
                daemon.schedule(jobs);
                accepted
            });
            (accepted, flushed)
        })
        .await?;
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
    pub(super) fn schedule(&self, jobs: Vec<Job>) {
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
            let now = daemon.config.clock.now();
            let jobs =
                tokio::task::spawn_blocking(move || queue.replay(job_id, push.as_deref(), now))
                    .await??;
            let n = jobs.len();
            daemon
                .metrics
                .adjust("pushwerk_dead_letters", &[], -(n as f64));
            daemon.schedule(jobs);
            daemon.commit.flush().await.map_err(DaemonError::Flush)?;
            Ok(n)
        })
        .await?
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
    pub(super) fn count_skip(&self, push: &str, event_id: &str, reason: &str) {
        self.metrics
            .add("pushwerk_events_skipped_total", &[("push", push)], 1);
        tracing::info!(push = %push, event = %event_id, "skipped: {reason}");
    }
}
