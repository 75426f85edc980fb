//! One attempt of one job: delivered, its outcome decided by the retry
//! rule ([`crate::retry::decide`]), and handed to the completion writer.

use std::sync::Arc;
use std::time::Duration;

use super::Daemon;
use crate::delivery::{Completion, Finished, Job, LogEntry, LogStatus};
use crate::engine::deliver::Delivery;
use crate::retry::{Decision, Policy, Tries};
use crate::targets::Outcome;

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

/// The log status of an attempt whose job is decided.
fn logged_status(decision: &Decision) -> LogStatus {
    match decision {
        Decision::Done => LogStatus::Delivered,
        Decision::Retry(_) => LogStatus::Retry,
        Decision::Dead(_) => LogStatus::Dead,
    }
}

impl Daemon {
    /// [`Daemon::deliver_job`], with a panic anywhere in it caught: the
    /// attempt is recorded as failed with the panic's message and the job
    /// dead-lettered (a panic is a bug that the same job would hit again on
    /// every retry; `replay` re-queues it once fixed), and its slots are
    /// freed, so the target goes on delivering.
    pub(super) async fn deliver_guarded(self: Arc<Self>, job: Job) {
        let copy = job.clone();
        let Err(panic) = CatchUnwind(Box::pin(self.clone().deliver_job(job))).await else {
            return;
        };
        let message = panic_message(panic.as_ref());
        tracing::error!(push = %copy.push, event = %copy.event_id, attempt = copy.attempt, "the delivery panicked: {message}; dead-lettered");
        let reason = format!("internal error: the delivery panicked: {message}");
        let entry = LogEntry {
            at: self.config.clock.now(),
            job_id: copy.id,
            push: copy.push.clone(),
            event_id: copy.event_id.clone(),
            attempt: copy.attempt,
            status: LogStatus::Dead,
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
        let clock = self.config.clock.clone();
        let started = clock.now();
        let entry = |status: LogStatus,
                     code: Option<u16>,
                     reference: Option<String>,
                     error: Option<String>,
                     duration: Duration| LogEntry {
            at: clock.now(),
            job_id: job.id,
            push: job.push.clone(),
            event_id: job.event_id.clone(),
            attempt: job.attempt,
            status,
            code,
            reference,
            error,
            duration_ms: duration.as_millis() as u64,
            latency_ms: None,
        };
        let Some(event) = job.event.clone() else {
            let e = entry(
                LogStatus::Dead,
                None,
                None,
                Some("the event is no longer stored".into()),
                Duration::ZERO,
            );
            return self.finish(job, e, Completion::Dead("event expired".into()));
        };
        let Some(push) = catalog.push(&job.push) else {
            let reason = format!("push `{}` is no longer defined", job.push);
            let e = entry(
                LogStatus::Dead,
                None,
                None,
                Some(reason.clone()),
                Duration::ZERO,
            );
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
                let e = entry(LogStatus::Skipped, None, None, Some(reason), Duration::ZERO);
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
        let policy = Policy {
            max_attempts: push.spec.retry.max_attempts,
            max_age: push.spec.retry.max_age.0,
            backoff: self.config.backoff,
            retry_after_cap: self.config.retry_after_cap,
        };
        let tries = Tries {
            attempt: job.attempt,
            first_at: job.first_attempt_at.unwrap_or(started),
        };
        let decision = crate::retry::decide(&attempt.outcome, tries, &policy, clock.now());
        let mut e = entry(
            logged_status(&decision),
            code,
            reference,
            error.clone(),
            attempt.duration,
        );
        let completion = match decision {
            Decision::Done => {
                let now = clock.now();
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
            Decision::Retry(next) => Completion::Retry(Job {
                attempt: job.attempt + 1,
                first_attempt_at: Some(tries.first_at),
                due_at: next,
                ..job.clone()
            }),
            Decision::Dead(why) => Completion::Dead(why.reason(error.as_deref())),
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
            &[("push", &job.push), ("outcome", entry.status.as_str())],
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
}
