//! The durable queue: accepted events, the jobs they cause, dead letters and
//! the delivery log — all in one store tree, so that completing a job
//! (remove it; log the attempt; reschedule it or dead-letter it) is one
//! atomic batch. A job leaves the queue only when its outcome is recorded:
//! after a crash every job still in the tree is delivered again
//! (at-least-once).
//!
//! Keys (big-endian numbers sort by time):
//! - `e:<event id>` → the accepted event (idempotency: a resent id is a duplicate)
//! - `t:<accepted ms><event id>` → time index of accepted events, for retention
//! - `j:<due ms><job id>` → a job
//! - `d:<job id>` → a dead letter (the job, its event, the reason)
//! - `l:<ms><job id><attempt>` → one delivery-log entry
//! - `c:<push>` → the last cron tick fired for a push

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
}

/// An accepted event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The event.
    pub event: Event,
    /// When it was accepted.
    pub accepted_at: DateTime<Utc>,
}

/// A job that will not be tried again unless replayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job as it was last tried.
    pub job: Job,
    /// Its event (kept here: events expire, dead letters wait for replay);
    /// `None` only if it was already gone when the job was given up.
    pub event: Option<Event>,
    /// Why it was given up.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

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
    /// `delivered`, `retry`, `failed`, `dead` or `skipped`.
    pub status: String,
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

/// What to do with a finished attempt.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Done (delivered, or skipped): the job leaves the queue.
    Done,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Give up: dead-letter the job with the reason.
    Dead(String),
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
    let mut k = b"j:".to_vec();
    k.extend_from_slice(&ms(due).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn log_key(at: DateTime<Utc>, job: u64, attempt: u32) -> Vec<u8> {
    let mut k = b"l:".to_vec();
    k.extend_from_slice(&ms(at).to_be_bytes());
    k.extend_from_slice(&job.to_be_bytes());
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

fn time_index_key(at: DateTime<Utc>, event_id: &str) -> Vec<u8> {
    let mut k = b"t:".to_vec();
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

    /// Stores new events with their jobs (`(event, [(push, due)])`); events
    /// seen before are counted as duplicates and change nothing. Durable at
    /// the next flush.
    pub fn accept(
        &self,
        items: Vec<(Event, Vec<PushDue>)>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, QueueError> {
        let _guard = self.accept_lock.lock().expect("accept lock");
        let mut ops = Vec::new();
        let mut result = Accepted::default();
        let mut seen_in_batch = std::collections::HashSet::new();
        for (event, pushes) in items {
            let key = [b"e:".as_slice(), event.id.as_bytes()].concat();
            if !seen_in_batch.insert(event.id.clone()) || self.store.get(TREE, &key)?.is_some() {
                result.duplicates += 1;
                continue;
            }
            for (push, due) in pushes {
                let job = Job {
                    id: self.store.next_id()?,
                    push,
                    event_id: event.id.clone(),
                    attempt: 1,
                    accepted_at: now,
                    first_attempt_at: None,
                    due_at: due,
                };
                ops.push((job_key(due, job.id), Some(json(&job))));
                result.jobs += 1;
            }
            ops.push((time_index_key(now, &event.id), Some(Vec::new())));
            ops.push((
                key,
                Some(json(&StoredEvent {
                    event,
                    accepted_at: now,
                })),
            ));
            result.accepted += 1;
        }
        if !ops.is_empty() {
            self.store.apply_batch(TREE, ops)?;
        }
        Ok(result)
    }

    /// The stored event `id`.
    pub fn event(&self, id: &str) -> Result<Option<Event>, QueueError> {
        let key = [b"e:".as_slice(), id.as_bytes()].concat();
        match self.store.get(TREE, &key)? {
            Some(v) => Ok(Some(parse::<StoredEvent>(&v)?.event)),
            None => Ok(None),
        }
    }

    /// Jobs due at `now`, oldest first, at most `limit`, with their keys.
    pub fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(Vec<u8>, Job)>, QueueError> {
        let end = job_key(now, u64::MAX);
        let mut out = Vec::new();
        for (k, v) in self.store.range(TREE, b"j:", &end, limit, false)? {
            match parse::<Job>(&v) {
                Ok(job) => out.push((k, job)),
                // One damaged record must not stop every other job.
                Err(e) => tracing::error!(error = %e, "skipping a damaged job record"),
            }
        }
        Ok(out)
    }

    /// Whether the job under `key` is still queued.
    pub fn contains(&self, key: &[u8]) -> Result<bool, QueueError> {
        Ok(self.store.get(TREE, key)?.is_some())
    }

    /// When the earliest job is due.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, QueueError> {
        let first = self
            .store
            .range(TREE, b"j:", &prefix_end(b"j:"), 1, false)?;
        Ok(first.first().and_then(|(k, _)| {
            let due = u64::from_be_bytes(k.get(2..10)?.try_into().ok()?);
            Utc.timestamp_millis_opt(due as i64).single()
        }))
    }

    /// Jobs waiting in the queue.
    pub fn pending(&self) -> Result<usize, QueueError> {
        Ok(self.store.scan_prefix(TREE, b"j:")?.len())
    }

    /// Records an attempt's `entry` and what becomes of the job, atomically.
    pub fn complete(
        &self,
        key: &[u8],
        job: &Job,
        entry: &LogEntry,
        completion: Completion,
        event: Option<&Event>,
    ) -> Result<(), QueueError> {
        let mut ops = vec![
            (key.to_vec(), None),
            (log_key(entry.at, job.id, entry.attempt), Some(json(entry))),
        ];
        match completion {
            Completion::Done => {}
            Completion::Retry(due) => {
                let next = Job {
                    attempt: job.attempt + 1,
                    first_attempt_at: job.first_attempt_at.or(Some(entry.at)),
                    due_at: due,
                    ..job.clone()
                };
                ops.push((job_key(due, job.id), Some(json(&next))));
            }
            Completion::Dead(reason) => {
                let event = match event {
                    Some(e) => Some(e.clone()),
                    None => self.event(&job.event_id)?,
                };
                let dead = DeadLetter {
                    job: job.clone(),
                    event,
                    reason,
                    at: entry.at,
                };
                ops.push((
                    [b"d:".as_slice(), &job.id.to_be_bytes()].concat(),
                    Some(json(&dead)),
                ));
            }
        }
        self.store.apply_batch(TREE, ops)?;
        Ok(())
    }

    /// Dead letters, optionally of one push.
    pub fn dead_letters(&self, push: Option<&str>) -> Result<Vec<DeadLetter>, QueueError> {
        let mut out = Vec::new();
        for (_, v) in self.store.scan_prefix(TREE, b"d:")? {
            let d: DeadLetter = parse(&v)?;
            if push.is_none_or(|p| p == d.job.push) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Re-queues dead letters (by job id, or all of a push, or all), due
    /// now, from attempt 1. Their events are stored again if they expired.
    pub fn replay(
        &self,
        job_id: Option<u64>,
        push: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<usize, QueueError> {
        let mut ops = Vec::new();
        let mut count = 0;
        for (k, v) in self.store.scan_prefix(TREE, b"d:")? {
            let d: DeadLetter = parse(&v)?;
            if job_id.is_some_and(|id| id != d.job.id) || push.is_some_and(|p| p != d.job.push) {
                continue;
            }
            let job = Job {
                attempt: 1,
                first_attempt_at: None,
                due_at: now,
                accepted_at: now,
                ..d.job.clone()
            };
            let event_key = [b"e:".as_slice(), d.job.event_id.as_bytes()].concat();
            if let (Some(event), None) = (&d.event, self.store.get(TREE, &event_key)?) {
                ops.push((time_index_key(now, &event.id), Some(Vec::new())));
                ops.push((
                    event_key,
                    Some(json(&StoredEvent {
                        event: event.clone(),
                        accepted_at: now,
                    })),
                ));
            }
            ops.push((k, None));
            ops.push((job_key(now, job.id), Some(json(&job))));
            count += 1;
        }
        if !ops.is_empty() {
            self.store.apply_batch(TREE, ops)?;
        }
        Ok(count)
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
            for (_, v) in &page {
                let e: LogEntry = parse(v)?;
                if push.is_some_and(|p| p != e.push) || status.is_some_and(|s| s != e.status) {
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
    /// `max_count`, and accepted events older than `event_window` (their
    /// ids may then be delivered again if resent). Returns entries removed.
    pub fn retain(
        &self,
        now: DateTime<Utc>,
        max_age: chrono::Duration,
        max_count: usize,
        event_window: chrono::Duration,
    ) -> Result<usize, QueueError> {
        let mut removed = 0;
        // Log entries: everything older than the cutoff …
        let cutoff = log_key(now - max_age, 0, 0);
        let old = self.store.range(TREE, b"l:", &cutoff, usize::MAX, false)?;
        // … and beyond the newest max_count.
        let all_count = self
            .store
            .range(TREE, &cutoff, &prefix_end(b"l:"), usize::MAX, false)?
            .len();
        let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            old.into_iter().map(|(k, _)| (k, None)).collect();
        if all_count > max_count {
            let extra = self.store.range(
                TREE,
                &cutoff,
                &prefix_end(b"l:"),
                all_count - max_count,
                false,
            )?;
            ops.extend(extra.into_iter().map(|(k, _)| (k, None)));
        }
        // Accepted events past the idempotency window — except those a
        // queued job still needs (a long `delay:` or `max_age`).
        let event_cutoff = time_index_key(now - event_window, "");
        let expired = self
            .store
            .range(TREE, b"t:", &event_cutoff, usize::MAX, false)?;
        if !expired.is_empty() {
            let needed: std::collections::HashSet<String> = self
                .store
                .scan_prefix(TREE, b"j:")?
                .into_iter()
                .filter_map(|(_, v)| parse::<Job>(&v).ok().map(|j| j.event_id))
                .collect();
            for (k, _) in expired {
                let id = &k[10..];
                if needed.contains(String::from_utf8_lossy(id).as_ref()) {
                    continue;
                }
                ops.push(([b"e:".as_slice(), id].concat(), None));
                ops.push((k, None));
            }
        }
        for chunk in ops.chunks(10_000) {
            removed += chunk.len();
            self.store.apply_batch(TREE, chunk.to_vec())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        (dir, Queue::new(Arc::new(store)))
    }

    fn event(id: &str) -> Event {
        Event::from_json(&format!(
            r#"{{"id":"{id}","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn accepted_events_are_idempotent_and_jobs_come_due_in_order() {
        let (_d, q) = queue();
        let now = Utc::now();
        let later = now + chrono::Duration::hours(1);
        let r = q
            .accept(
                vec![
                    (event("a"), vec![("p1".into(), now), ("p2".into(), later)]),
                    (event("a"), vec![("p1".into(), now)]),
                ],
                now,
            )
            .unwrap();
        assert_eq!(
            r,
            Accepted {
                accepted: 1,
                duplicates: 1,
                jobs: 2
            }
        );
        let again = q
            .accept(vec![(event("a"), vec![("p1".into(), now)])], now)
            .unwrap();
        assert_eq!(
            again,
            Accepted {
                accepted: 0,
                duplicates: 1,
                jobs: 0
            }
        );
        let due = q.due(now, 10).unwrap();
        assert_eq!(due.len(), 1, "the delayed job is not due yet");
        assert_eq!(due[0].1.push, "p1");
        assert_eq!(
            q.next_due().unwrap().map(|t| t.timestamp_millis()),
            Some(now.timestamp_millis())
        );
        assert_eq!(q.due(later, 10).unwrap().len(), 2);
    }

    #[test]
    fn completion_reschedules_dead_letters_logs_and_replays() {
        let (_d, q) = queue();
        let now = Utc::now();
        q.accept(vec![(event("a"), vec![("p".into(), now)])], now)
            .unwrap();
        let (key, job) = q.due(now, 1).unwrap().remove(0);
        let entry = |attempt, status: &str| LogEntry {
            at: now,
            job_id: job.id,
            push: "p".into(),
            event_id: "a".into(),
            attempt,
            status: status.into(),
            code: Some(503),
            reference: None,
            error: Some("down".into()),
            duration_ms: 1,
            latency_ms: None,
        };
        let retry_at = now + chrono::Duration::seconds(30);
        q.complete(
            &key,
            &job,
            &entry(1, "retry"),
            Completion::Retry(retry_at),
            None,
        )
        .unwrap();
        assert!(q.due(now, 10).unwrap().is_empty());
        let (key, job) = q.due(retry_at, 10).unwrap().remove(0);
        assert_eq!(job.attempt, 2);
        q.complete(
            &key,
            &job,
            &entry(2, "dead"),
            Completion::Dead("gave up".into()),
            None,
        )
        .unwrap();
        assert_eq!(q.pending().unwrap(), 0);
        let dead = q.dead_letters(Some("p")).unwrap();
        assert_eq!(dead[0].reason, "gave up");
        assert_eq!(dead[0].event.as_ref().unwrap().id, "a");
        let log = q.log(Some("p"), None, 10).unwrap();
        assert_eq!(
            log.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
            ["dead", "retry"]
        );
        assert_eq!(q.replay(None, Some("p"), now).unwrap(), 1);
        assert!(q.dead_letters(None).unwrap().is_empty());
        assert_eq!(q.due(now, 10).unwrap()[0].1.attempt, 1);
    }

    #[test]
    fn retention_keeps_the_events_of_queued_jobs() {
        let (_d, q) = queue();
        let now = Utc::now();
        let long_ago = now - chrono::Duration::days(10);
        q.accept(
            vec![(
                event("waiting"),
                vec![("p".into(), now + chrono::Duration::days(1))],
            )],
            long_ago,
        )
        .unwrap();
        q.accept(vec![(event("done"), vec![])], long_ago).unwrap();
        q.retain(
            now,
            chrono::Duration::days(1),
            100,
            chrono::Duration::days(7),
        )
        .unwrap();
        assert!(
            q.event("waiting").unwrap().is_some(),
            "a queued job still needs it"
        );
        assert!(q.event("done").unwrap().is_none());
    }

    #[test]
    fn retention_bounds_the_log_and_forgets_old_event_ids() {
        let (_d, q) = queue();
        let now = Utc::now();
        q.accept(
            vec![(event("old"), vec![])],
            now - chrono::Duration::days(10),
        )
        .unwrap();
        q.accept(vec![(event("new"), vec![])], now).unwrap();
        for i in 0..20u32 {
            let at = now - chrono::Duration::minutes(i64::from(i));
            let e = LogEntry {
                at,
                job_id: u64::from(i),
                push: "p".into(),
                event_id: "x".into(),
                attempt: 1,
                status: "delivered".into(),
                code: None,
                reference: None,
                error: None,
                duration_ms: 0,
                latency_ms: None,
            };
            q.complete(
                b"j:none",
                &Job {
                    id: u64::from(i),
                    push: "p".into(),
                    event_id: "x".into(),
                    attempt: 1,
                    accepted_at: at,
                    first_attempt_at: None,
                    due_at: at,
                },
                &e,
                Completion::Done,
                None,
            )
            .unwrap();
        }
        q.retain(now, chrono::Duration::days(1), 5, chrono::Duration::days(7))
            .unwrap();
        let log = q.log(None, None, 100).unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!(log[0].job_id, 0, "the newest are kept");
        assert!(q.event("old").unwrap().is_none());
        assert!(q.event("new").unwrap().is_some());
    }
}
