//! The queue as the API reads it (the queued and retrying jobs, the
//! delivery log, dead letters), always on a blocking thread: a store read
//! may wait for the disk and must not hold up an async worker.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Daemon, DaemonError};
use crate::delivery::{Queue, QueueError};

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

impl Daemon {
    /// Runs `read` on the queue on a blocking thread (for the API's reads
    /// of the delivery log and dead letters); a queue error stays a
    /// [`DaemonError::Queue`].
    pub async fn read_queue<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Queue) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, DaemonError> {
        let queue = self.queue.clone();
        Ok(tokio::task::spawn_blocking(move || read(&queue)).await??)
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
        .await?
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
                    .await?
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
}
