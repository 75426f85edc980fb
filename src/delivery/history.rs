//! What the queue remembers of what happened: the delivery log (one
//! entry per attempt, with its [`LogStatus`]), dead letters and their
//! replay, the last cron tick of each push, one event's history, and the
//! retention that bounds them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    damaged, json, log_key, parse, prefix_end, time_index_key, DeadLetter, DeadLetters, Job, Queue,
    QueueError, TREE,
};

/// One delivery attempt, as the delivery log keeps it. Never a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    /// The job.
    pub job_id: u64,
    /// The push.
    pub push: String,
    /// The event.
    pub event_id: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// What came of the attempt.
    pub status: LogStatus,
    /// HTTP status or SMTP code.
    pub code: Option<u16>,
    /// The target's id for the request (Graph request-id, Bing TrackingId, SMTP queue id).
    pub reference: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
    /// From acceptance to delivery, for delivered attempts.
    pub latency_ms: Option<u64>,
}

/// What came of one attempt, as the delivery log, the API and the console
/// show it: stored and answered as the lower-case word (`"delivered"`, …),
/// as it always was, so that stored logs and API clients read it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStatus {
    /// The target accepted it.
    Delivered,
    /// Not now: the job is tried again.
    Retry,
    /// Refused (a permanent failure; the job is dead-lettered with it).
    Failed,
    /// Given up: the job is a dead letter.
    Dead,
    /// The push does not apply to the event (its `when:` or a skip rule).
    Skipped,
}

impl LogStatus {
    /// Every status, in the order the console offers them.
    pub const ALL: [LogStatus; 5] = [
        LogStatus::Delivered,
        LogStatus::Retry,
        LogStatus::Failed,
        LogStatus::Dead,
        LogStatus::Skipped,
    ];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Delivered => "delivered",
            LogStatus::Retry => "retry",
            LogStatus::Failed => "failed",
            LogStatus::Dead => "dead",
            LogStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for LogStatus {
    /// The stored word, honouring width and alignment (`{:<8}` in the
    /// CLI's delivery lines).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for LogStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<LogStatus, String> {
        LogStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status `{s}`"))
    }
}

impl Queue {
    /// Dead letters, optionally of one push. Records that cannot be read
    /// are skipped (see [`Queue::dead_letters_report`]).
    pub fn dead_letters(&self, push: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.dead_letters_report(push)?.dead_letters)
    }

    /// Dead letters, optionally of one push, and how many dead-letter
    /// records could not be read: one damaged record (written by an older
    /// build, or by hand) must not hide all the others. Each one skipped is
    /// logged with its key.
    pub fn dead_letters_report(&self, push: Option<&str>) -> Result<DeadLetters, QueueError> {
        let mut report = DeadLetters::default();
        for (k, v) in self.store.scan_prefix(TREE, b"d:")? {
            match parse::<DeadLetter>(&v) {
                Ok(d) => {
                    if push.is_none_or(|p| p == d.job.push) {
                        report.dead_letters.push(d);
                    }
                }
                Err(e) => {
                    report.damaged += 1;
                    damaged("dead letter", &k, &e);
                }
            }
        }
        Ok(report)
    }

    /// How many dead letters wait.
    pub fn dead_letter_count(&self) -> Result<usize, QueueError> {
        Ok(self.store.count(TREE, b"d:", &prefix_end(b"d:"))?)
    }

    /// Re-queues dead letters (by job id, or all of a push, or all), due
    /// now, from attempt 1, each with its event. Returns the jobs queued.
    pub fn replay(
        &self,
        job_id: Option<u64>,
        push: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Job>, QueueError> {
        let mut ops = Vec::new();
        let mut jobs = Vec::new();
        for (k, v) in self.store.scan_prefix(TREE, b"d:")? {
            // A damaged dead letter stays where it is (and is counted by
            // `dead_letters_report`); the others are replayed.
            let d: DeadLetter = match parse(&v) {
                Ok(d) => d,
                Err(e) => {
                    damaged("dead letter", &k, &e);
                    continue;
                }
            };
            if job_id.is_some_and(|id| id != d.job.id) || push.is_some_and(|p| p != d.job.push) {
                continue;
            }
            // A new id: the old one may still be known to the schedule
            // (its dead letter's completion on its way).
            let job = Job {
                id: self.store.next_id()?,
                attempt: 1,
                first_attempt_at: None,
                due_at: now,
                accepted_at: now,
                event: d.event.map(Arc::new).or(d.job.event),
                ..d.job
            };
            ops.push((k, None));
            ops.push((job.key(), Some(json(&job))));
            jobs.push(job);
        }
        if !ops.is_empty() {
            self.store.apply_batch(TREE, ops)?;
        }
        Ok(jobs)
    }

    /// The newest delivery-log entries first, filtered, at most `limit`.
    pub fn log(
        &self,
        push: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, QueueError> {
        let mut out = Vec::new();
        let mut end = prefix_end(b"l:");
        loop {
            let page = self.store.range(TREE, b"l:", &end, 1000, true)?;
            let Some((last, _)) = page.last() else { break };
            end = last.clone();
            for (k, v) in &page {
                let e: LogEntry = match parse(v) {
                    Ok(e) => e,
                    Err(e) => {
                        damaged("delivery-log entry", k, &e);
                        continue;
                    }
                };
                if push.is_some_and(|p| p != e.push)
                    || status.is_some_and(|s| s != e.status.as_str())
                {
                    continue;
                }
                out.push(e);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        Ok(out)
    }

    /// Drops log entries older than `max_age` or beyond the newest
    /// `max_count`, and the ids of events accepted longer than
    /// `event_window` ago (a resent id is then new again). Reads keys only,
    /// and removes them in small batches with a pause between, so that a
    /// large removal never holds the store's writer for long (ingest waits
    /// for it). Returns the records removed.
    pub fn retain(
        &self,
        now: DateTime<Utc>,
        max_age: chrono::Duration,
        max_count: usize,
        event_window: chrono::Duration,
    ) -> Result<usize, QueueError> {
        const CHUNK: usize = 1_000;
        let mut removed = 0;
        let mut remove = |keys: Vec<Vec<u8>>| -> Result<(), QueueError> {
            if keys.is_empty() {
                return Ok(());
            }
            removed += keys.len();
            self.store
                .apply_batch(TREE, keys.into_iter().map(|k| (k, None)).collect())?;
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(())
        };
        // Log entries older than the cutoff …
        // A window longer than the calendar reaches (`--event-window
        // 100000000y`) keeps everything: no overflow, no panic.
        let before = |window: chrono::Duration| {
            now.checked_sub_signed(window)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let cutoff = log_key(before(max_age), 0, 0);
        loop {
            let old = self.store.keys(TREE, b"l:", &cutoff, CHUNK)?;
            let done = old.len() < CHUNK;
            remove(old)?;
            if done {
                break;
            }
        }
        // … and beyond the newest max_count.
        let mut extra = self
            .store
            .count(TREE, b"l:", &prefix_end(b"l:"))?
            .saturating_sub(max_count);
        while extra > 0 {
            let oldest = self
                .store
                .keys(TREE, b"l:", &prefix_end(b"l:"), extra.min(CHUNK))?;
            extra -= oldest.len();
            let done = oldest.is_empty();
            remove(oldest)?;
            if done {
                break;
            }
        }
        // Event ids past the idempotency window (queued jobs carry their
        // own events, so none is needed here any more).
        let event_cutoff = time_index_key(before(event_window), "");
        loop {
            let expired = self.store.keys(TREE, b"t:", &event_cutoff, CHUNK)?;
            let done = expired.len() < CHUNK;
            let mut keys = Vec::with_capacity(expired.len() * 2);
            for k in expired {
                keys.push([b"e:".as_slice(), &k[10..]].concat());
                keys.push(k);
            }
            remove(keys)?;
            if done {
                break;
            }
        }
        Ok(removed)
    }
    /// The last cron tick fired for `push`.
    pub fn last_tick(&self, push: &str) -> Result<Option<DateTime<Utc>>, QueueError> {
        let key = [b"c:".as_slice(), push.as_bytes()].concat();
        match self.store.get(TREE, &key)? {
            Some(v) => Ok(Some(parse(&v)?)),
            None => Ok(None),
        }
    }

    /// Records the last cron tick fired for `push`.
    pub fn set_last_tick(&self, push: &str, at: DateTime<Utc>) -> Result<(), QueueError> {
        let key = [b"c:".as_slice(), push.as_bytes()].concat();
        self.store.put(TREE, &key, &json(&at))?;
        Ok(())
    }
}

/// What the store knows of one event: its queued jobs, dead letters and
/// attempts. The API's `EventHistory` is built from it (`api` depends on
/// `delivery`, never the reverse).
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The event id.
    pub id: String,
    /// Whether the id is remembered as accepted (within the event window).
    pub known: bool,
    /// Its jobs still queued or retrying.
    pub jobs: Vec<Job>,
    /// Its dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Every attempt in the delivery log, oldest first.
    pub attempts: Vec<LogEntry>,
}

/// What became of one event (`GET /v1/events/{id}`).
impl Queue {
    /// The event's jobs still queued or retrying, its dead letters and its
    /// attempts in the delivery log (oldest first). Reads the whole queue
    /// and log (bounded by their retention), page by page; damaged records
    /// are skipped as elsewhere.
    pub fn event_history(&self, event_id: &str) -> Result<EventRecord, QueueError> {
        let mut jobs = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.jobs_page(after.as_deref(), 1000)?;
            jobs.extend(page.jobs.into_iter().filter(|j| j.event_id == event_id));
            if !page.more {
                break;
            }
            after = page.last_key;
        }
        let dead_letters = self
            .dead_letters(None)?
            .into_iter()
            .filter(|d| d.job.event_id == event_id)
            .collect();
        let mut attempts = Vec::new();
        let mut start = b"l:".to_vec();
        let end = prefix_end(b"l:");
        loop {
            let page = self.store.range(TREE, &start, &end, 1000, false)?;
            let Some((last, _)) = page.last() else { break };
            start = [last.as_slice(), &[0]].concat();
            for (k, v) in &page {
                match parse::<LogEntry>(v) {
                    Ok(e) if e.event_id == event_id => attempts.push(e),
                    Ok(_) => {}
                    Err(e) => damaged("delivery-log entry", k, &e),
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
        Ok(EventRecord {
            id: event_id.to_owned(),
            known: self.is_known(event_id)?,
            jobs,
            dead_letters,
            attempts,
        })
    }
}
