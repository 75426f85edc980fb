//! The durable queue: accepted events, the jobs they cause, dead letters and
//! the delivery log — all in one store tree, so that completing a job
//! (remove it; log the attempt; reschedule it or dead-letter it) is one
//! atomic batch. A job leaves the queue only when its outcome is recorded:
//! after a crash every job still in the tree is delivered again
//! (at-least-once).
//!
//! A job record carries its event, so that delivering needs no second read
//! and a delivered event leaves nothing behind but its id (kept for the
//! idempotency window) and its log entries (kept by count and age): disk use
//! is bounded by those two windows, not by the number of events ever seen.
//!
//! Keys (big-endian numbers sort by time):
//! - `e:<event id>` → when it was accepted (idempotency: a resent id is a duplicate)
//! - `t:<accepted ms><event id>` → time index of accepted ids, for retention
//! - `j:<due ms><job id>` → a job, with its event
//! - `d:<job id>` → a dead letter (the job, its event, the reason)
//! - `l:<ms><job id><attempt>` → one delivery-log entry
//! - `c:<push>` → the last cron tick fired for a push
//! - `m:<name>` → a migration done
//!
//! [`Scheduler`] is the in-memory side: what is due, in flight, and waiting
//! for its target.

mod history;
mod scheduler;

pub use history::{EventRecord, LogEntry, LogStatus};
pub use scheduler::{Scheduler, TargetSlot};

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::store::{trees, Store, StoreError};

const TREE: &str = trees::DELIVERY;

/// One push to deliver for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id.
    pub id: u64,
    /// The push's name.
    pub push: String,
    /// The event's id.
    pub event_id: String,
    /// The number of the next attempt, from 1.
    pub attempt: u32,
    /// When the event was accepted.
    pub accepted_at: DateTime<Utc>,
    /// When the first attempt was made.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When the job is due.
    pub due_at: DateTime<Utc>,
    /// The event (shared by the jobs of one event in memory). `None` only in
    /// records written before jobs carried their events, and in a dead
    /// letter's copy of the job (the dead letter keeps the event itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Arc<Event>>,
}

impl Job {
    /// The job's key in the store.
    fn key(&self) -> Vec<u8> {
        job_key(self.due_at, self.id)
    }
}

/// An accepted event as stored before jobs carried their events (read only
/// to migrate such records).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEvent {
    event: Event,
    accepted_at: DateTime<Utc>,
}

/// A job that will not be tried again unless replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job as it was last tried.
    pub job: Job,
    /// Its event; `None` only if it was already gone when the job was given up.
    pub event: Option<Event>,
    /// Why it was given up.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What to do with a finished attempt.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Done (delivered, or skipped): the job leaves the queue.
    Done,
    /// Try again with this job (the next attempt, due later).
    Retry(Job),
    /// Give up: dead-letter the job with the reason.
    Dead(String),
}

/// A finished attempt to record: the job as it was tried, its log entry,
/// and what becomes of it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The job as it was tried (its key is derived from it).
    pub job: Job,
    /// The attempt's log entry.
    pub entry: LogEntry,
    /// What becomes of the job.
    pub completion: Completion,
}

/// A page of queued jobs read from the store (see [`Queue::jobs_page`]).
#[derive(Debug)]
pub struct JobPage {
    /// The jobs that could be read.
    pub jobs: Vec<Job>,
    /// The key of the last record read, damaged or not: where the next page starts.
    pub last_key: Option<Vec<u8>>,
    /// Whether the store may hold more after it.
    pub more: bool,
}

/// Dead letters as read, with the number of records that could not be.
#[derive(Debug, Default)]
pub struct DeadLetters {
    /// The dead letters that could be read (of the push asked for).
    pub dead_letters: Vec<DeadLetter>,
    /// Dead-letter records (of any push) that could not be read; they are
    /// left in the store and in the log.
    pub damaged: usize,
}

/// A push and when its job is due.
pub type PushDue = (String, DateTime<Utc>);

/// What `accept` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// New events stored.
    pub accepted: usize,
    /// Events whose id was seen before (not stored again).
    pub duplicates: usize,
    /// Jobs created.
    pub jobs: usize,
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record cannot be read.
    #[error("damaged queue record: {0}")]
    Damaged(String),
}

/// The queue over a store.
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    /// Serialises the duplicate check with the insert of accepted events.
    accept_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish()
    }
}

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

fn job_key(due: DateTime<Utc>, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(b"j:");
    k.extend_from_slice(&ms(due).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn log_key(at: DateTime<Utc>, job: u64, attempt: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(22);
    k.extend_from_slice(b"l:");
    k.extend_from_slice(&ms(at).to_be_bytes());
    k.extend_from_slice(&job.to_be_bytes());
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

fn event_key(event_id: &str) -> Vec<u8> {
    [b"e:".as_slice(), event_id.as_bytes()].concat()
}

fn time_index_key(at: DateTime<Utc>, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + event_id.len());
    k.extend_from_slice(b"t:");
    k.extend_from_slice(&ms(at).to_be_bytes());
    k.extend_from_slice(event_id.as_bytes());
    k
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("queue records serialise")
}

/// Logs a record that cannot be read and is skipped (never its content).
fn damaged(what: &str, key: &[u8], error: &QueueError) {
    tracing::error!(key = %String::from_utf8_lossy(&key[..key.len().min(64)]).escape_debug(), error = %error, "skipping a damaged {what} record");
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Damaged(e.to_string()))
}

impl Queue {
    /// The queue in `store`.
    pub fn new(store: Arc<dyn Store>) -> Queue {
        Queue {
            store,
            accept_lock: Arc::new(Mutex::new(())),
        }
    }

    /// The underlying store (for flushing and disk use).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Brings records written by an older pushwerk up to date: jobs that do
    /// not carry their event get it from the event record, which shrinks to
    /// an id. Returns the jobs rewritten. Idempotent.
    pub fn migrate(&self) -> Result<usize, QueueError> {
        // Done once per store: later starts skip the scan of every record.
        const MIGRATED: &[u8] = b"m:jobs-carry-events";
        if self.store.get(TREE, MIGRATED)?.is_some() {
            return Ok(0);
        }
        let mut ops = vec![(MIGRATED.to_vec(), Some(Vec::new()))];
        let mut rewritten = 0;
        for (key, value) in self.store.scan_prefix(TREE, b"j:")? {
            let Ok(mut job) = parse::<Job>(&value) else {
                continue;
            };
            if job.event.is_some() {
                continue;
            }
            if let Some(v) = self.store.get(TREE, &event_key(&job.event_id))? {
                if let Ok(stored) = parse::<StoredEvent>(&v) {
                    job.event = Some(Arc::new(stored.event));
                    ops.push((key, Some(json(&job))));
                    rewritten += 1;
                }
            }
        }
        for (key, value) in self.store.scan_prefix(TREE, b"e:")? {
            if let Ok(stored) = parse::<StoredEvent>(&value) {
                ops.push((key, Some(ms(stored.accepted_at).to_be_bytes().to_vec())));
            }
        }
        self.store.apply_batch(TREE, ops)?;
        Ok(rewritten)
    }

    /// Stores new events with their jobs (`(event, [(push, due)])`); events
    /// seen before are counted as duplicates and change nothing. Returns the
    /// jobs made, each carrying its event. Durable at the next flush.
    pub fn accept(
        &self,
        items: Vec<(Event, Vec<PushDue>)>,
        now: DateTime<Utc>,
    ) -> Result<(Accepted, Vec<Job>), QueueError> {
        Ok(self
            .accept_groups(vec![items], now, false)?
            .pop()
            .expect("one result per group"))
    }

    /// [`Queue::accept`] for several requests at once, in one store batch:
    /// one result per group, in order. An id repeated within or across the
    /// groups is a duplicate after its first appearance. With `durable`,
    /// the batch and every write before it are on disk when this returns.
    pub fn accept_groups(
        &self,
        groups: Vec<Vec<(Event, Vec<PushDue>)>>,
        now: DateTime<Utc>,
        durable: bool,
    ) -> Result<Vec<(Accepted, Vec<Job>)>, QueueError> {
        let _guard = self.accept_lock.lock().expect("accept lock");
        // Each new event id is a claim: a store shared by several nodes
        // (#15) applies it under a unique constraint, so one id posted to
        // two nodes at once makes one set of jobs.
        let mut items = Vec::new();
        let mut made = Vec::new();
        let mut results = Vec::with_capacity(groups.len());
        let mut seen_in_batch = std::collections::HashSet::new();
        let shared = self.is_shared();
        for (group, events) in groups.into_iter().enumerate() {
            results.push((Accepted::default(), Vec::new()));
            for (event, pushes) in events {
                let key = event_key(&event.id);
                // One process per embedded store: checked here, as always.
                if !seen_in_batch.insert(event.id.clone())
                    || (!shared && self.store.get(TREE, &key)?.is_some())
                {
                    results[group].0.duplicates += 1;
                    continue;
                }
                let mut ops = vec![(time_index_key(now, &event.id), Some(Vec::new()))];
                let event = Arc::new(event);
                let mut jobs = Vec::new();
                for (push, due) in pushes {
                    let job = Job {
                        id: self.store.next_id()?,
                        push,
                        event_id: event.id.clone(),
                        attempt: 1,
                        accepted_at: now,
                        first_attempt_at: None,
                        due_at: due,
                        event: Some(event.clone()),
                    };
                    ops.push((job.key(), Some(json(&job))));
                    jobs.push(job);
                }
                items.push(crate::store::ClaimedBatch {
                    claim: (key, ms(now).to_be_bytes().to_vec()),
                    ops,
                });
                made.push((group, jobs));
            }
        }
        let applied = if shared {
            self.store.apply_claimed(TREE, items, durable)?
        } else {
            let n = items.len();
            let mut ops = Vec::new();
            for item in items {
                ops.push((item.claim.0, Some(item.claim.1)));
                ops.extend(item.ops);
            }
            match (durable, ops.is_empty()) {
                (true, false) => self.store.apply_batch_durable(TREE, ops)?,
                (true, true) => self.store.flush()?,
                (false, false) => self.store.apply_batch(TREE, ops)?,
                (false, true) => {}
            }
            vec![true; n]
        };
        for ((group, jobs), new) in made.into_iter().zip(applied) {
            let (result, out) = &mut results[group];
            if new {
                result.accepted += 1;
                result.jobs += jobs.len();
                out.extend(jobs);
            } else {
                result.duplicates += 1;
            }
        }
        Ok(results)
    }

    /// Whether an event with this id was accepted (within the idempotency window).
    pub fn is_known(&self, event_id: &str) -> Result<bool, QueueError> {
        Ok(self.store.get(TREE, &event_key(event_id))?.is_some())
    }

    /// Queued jobs in key order (due time, then id), starting after the key
    /// of `after` (from the first if `None`), at most `limit`. Damaged
    /// records are skipped with an error in the log.
    pub fn jobs_after(&self, after: Option<&Job>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let start = after.map(Job::key);
        Ok(self.jobs_page(start.as_deref(), limit)?.jobs)
    }

    /// A page of queued jobs in key order, after the raw key `after` (from
    /// the first if `None`), reading at most `limit` records. The page says
    /// where it ended and whether the store had more, counting damaged
    /// records too (which are skipped with an error in the log), so that a
    /// damaged record never looks like the end of the queue.
    pub fn jobs_page(&self, after: Option<&[u8]>, limit: usize) -> Result<JobPage, QueueError> {
        self.page(after, limit, false)
    }

    /// [`Queue::jobs_page`] for the jobs this process will deliver (a
    /// refill of the schedule): on a store shared by several nodes, only
    /// the jobs this node holds or may take over (see [`Store::claim`]),
    /// now leased to it; on an embedded store, every queued job.
    pub fn claim_page(&self, after: Option<&[u8]>, limit: usize) -> Result<JobPage, QueueError> {
        self.page(after, limit, true)
    }

    /// Jobs whose node died (its lease expired), at most `limit`, now
    /// leased to this process; none on an embedded store.
    pub fn claim_orphans(&self, limit: usize) -> Result<Vec<Job>, QueueError> {
        let records = self
            .store
            .claim_orphans(TREE, b"j:", &prefix_end(b"j:"), limit)?;
        Ok(records
            .into_iter()
            .filter_map(|(key, v)| match parse::<Job>(&v) {
                Ok(job) => Some(job),
                Err(e) => {
                    damaged("job", &key, &e);
                    None
                }
            })
            .collect())
    }

    /// Whether other processes share the queue (a PostgreSQL store): the
    /// daemon then looks for jobs of dead nodes now and then.
    pub fn is_shared(&self) -> bool {
        self.store.node().is_some()
    }

    fn page(&self, after: Option<&[u8]>, limit: usize, claim: bool) -> Result<JobPage, QueueError> {
        let start = match after {
            Some(key) => [key, &[0]].concat(),
            None => b"j:".to_vec(),
        };
        let records = if claim {
            self.store.claim(TREE, &start, &prefix_end(b"j:"), limit)?
        } else {
            self.store
                .range(TREE, &start, &prefix_end(b"j:"), limit, false)?
        };
        let more = records.len() == limit;
        let last_key = records.last().map(|(k, _)| k.clone());
        let mut jobs = Vec::with_capacity(records.len());
        for (key, v) in records {
            match parse::<Job>(&v) {
                Ok(job) => jobs.push(job),
                // One damaged record must not stop every other job.
                Err(e) => tracing::error!(key = ?key, error = %e, "skipping a damaged job record"),
            }
        }
        Ok(JobPage {
            jobs,
            last_key,
            more,
        })
    }

    /// Jobs due at `now`, oldest first, at most `limit`.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>, QueueError> {
        Ok(self
            .claim_page(None, limit)?
            .jobs
            .into_iter()
            .take_while(|j| j.due_at <= now)
            .collect())
    }

    /// When the earliest job is due.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        let first = self.store.keys(TREE, b"j:", &prefix_end(b"j:"), 1)?;
        Ok(first.first().and_then(|k| {
            let due = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
            Utc.timestamp_millis_opt(due as i64).single()
        }))
    }

    /// Jobs waiting in the queue.
    pub fn pending(&self) -> Result<usize, QueueError> {
        Ok(self.store.count(TREE, b"j:", &prefix_end(b"j:"))?)
    }

    /// Records one attempt's entry and what becomes of its job, atomically.
    pub fn complete(&self, finished: Finished) -> Result<(), QueueError> {
        self.complete_all(std::slice::from_ref(&finished))
    }

    /// Records many finished attempts in one atomic batch (the daemon's
    /// completion writer gathers them).
    pub fn complete_all(&self, finished: &[Finished]) -> Result<(), QueueError> {
        let mut ops = Vec::with_capacity(finished.len() * 2);
        for Finished {
            job,
            entry,
            completion,
        } in finished
        {
            ops.push((job.key(), None));
            ops.push((log_key(entry.at, job.id, entry.attempt), Some(json(entry))));
            match completion {
                Completion::Done => {}
                Completion::Retry(next) => {
                    ops.push((next.key(), Some(json(next))));
                }
                Completion::Dead(reason) => {
                    // The dead letter keeps the event once, beside the job.
                    let dead = DeadLetter {
                        job: Job {
                            event: None,
                            ..job.clone()
                        },
                        event: job.event.as_deref().cloned(),
                        reason: reason.clone(),
                        at: entry.at,
                    };
                    ops.push((
                        [b"d:".as_slice(), &dead.job.id.to_be_bytes()].concat(),
                        Some(json(&dead)),
                    ));
                }
            }
        }
        if !ops.is_empty() {
            self.store.apply_batch(TREE, ops)?;
        }
        Ok(())
    }

    /// Whether `finished` is in the store as read now: its log entry (unique
    /// to the job and attempt, and written in the same atomic batch as the
    /// rest of the completion) is there. After a successful flush this
    /// tells a durable completion from one the store dropped (redb reopened
    /// after an I/O error loses the commits since its last durable one).
    ///
    /// On a shared store (PostgreSQL) a batch whose commit was answered is
    /// durable, and nothing drops it later: no read is needed (it would
    /// cost a statement per delivery).
    pub fn is_recorded(&self, finished: &Finished) -> Result<bool, QueueError> {
        if self.is_shared() {
            return Ok(true);
        }
        let key = log_key(finished.entry.at, finished.job.id, finished.entry.attempt);
        Ok(self.store.get(TREE, &key)?.is_some())
    }
}

#[cfg(test)]
mod tests;
