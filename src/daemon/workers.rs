//! Workers: due jobs taken from the schedule and started, the schedule
//! refilled from the store, and the per-target slots that bound how many
//! deliveries go to one host, mailbox or account at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Daemon, DaemonError};
use crate::config::Push;
use crate::delivery::{Job, TargetSlot};

/// Where a push's jobs queue for their target: the key shared by pushes
/// that reach the same mailbox, account, SMTP host or HTTP host, and the
/// default number in flight there (`per_target`, at most 4 for a Graph
/// mailbox). Each target knows its own slot (`TargetSpec::slot`).
pub(super) fn slot_key(push: &Push, per_target: usize) -> (String, usize) {
    push.spec.target.slot(per_target)
}

impl Daemon {
    /// The slot of `push`'s jobs (its `in_flight:` overrides the default limit).
    pub(super) fn target_slot(&self, push: &Push) -> TargetSlot {
        let (key, limit) = slot_key(push, self.config.per_target);
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
        let clock = self.config.clock.clone();
        let second = chrono::Duration::seconds(1);
        let mut gauges_at = clock.now();
        // After a failed read of the store, the next try waits a second.
        let mut refill_after = clock.now();
        // On a store shared by several nodes, look for jobs that no live
        // node holds (a node died) once a second.
        let mut orphans_at = clock.now();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let wants_refill = self.schedule.lock().expect("schedule lock").wants_refill();
            if wants_refill && clock.now() >= refill_after && !self.refill().await {
                refill_after = clock.now() + second;
            }
            if self.queue.is_shared() && clock.now() >= orphans_at + second {
                orphans_at = clock.now();
                self.adopt_orphans().await;
            }
            let now = clock.now();
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
                let riders = crate::engine::bing_batch::take_riders(
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
            if clock.now() - gauges_at >= second {
                gauges_at = clock.now();
                self.update_gauges();
            }
            // Sleep until woken (new jobs, a finished delivery) or until
            // the next job comes due; at most a second.
            let next_due = self.schedule.lock().expect("schedule lock").next_due();
            let wait = next_due
                .map(|t| clock.until(t))
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(1), Duration::from_secs(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = clock.sleep(wait) => {}
            }
        }
    }

    /// Takes the jobs of dead nodes (a shared store) into the schedule; a
    /// full page leaves the rest to a refill.
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
            let page = match page.map_err(DaemonError::from).and_then(|p| Ok(p?)) {
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
}
