//! Unit tests of the deliverer (`delivery/mod.rs`).

use super::*;
use crate::store::SledStore;

fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    (dir, Queue::new(Arc::new(store)))
}

fn event(id: &str) -> Event {
    Event::from_json(&format!(
        r#"{{"id":"{id}","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{{"n":1}}}}"#
    ))
    .unwrap()
}

fn entry(job: &Job, attempt: u32, status: LogStatus, at: DateTime<Utc>) -> LogEntry {
    LogEntry {
        at,
        job_id: job.id,
        push: job.push.clone(),
        event_id: job.event_id.clone(),
        attempt,
        status,
        code: Some(503),
        reference: None,
        error: Some("down".into()),
        duration_ms: 1,
        latency_ms: None,
    }
}

#[test]
fn log_statuses_are_stored_and_answered_as_the_words_they_always_were() {
    // Logs written before the status was an enum read back, and new
    // ones are written the same way (the API and the console show them).
    let stored = r#"{"at":"2026-01-01T00:00:00Z","job_id":7,"push":"p","event_id":"a","attempt":2,"status":"dead","code":503,"reference":null,"error":"down","duration_ms":1,"latency_ms":null}"#;
    let e: LogEntry = serde_json::from_str(stored).unwrap();
    assert_eq!(e.status, LogStatus::Dead);
    assert_eq!(serde_json::to_string(&e).unwrap(), stored);
    let words: Vec<String> = LogStatus::ALL
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(words, ["delivered", "retry", "failed", "dead", "skipped"]);
    for s in LogStatus::ALL {
        assert_eq!(s.as_str().parse::<LogStatus>(), Ok(s));
        assert_eq!(s.to_string(), s.as_str());
    }
    assert!("gone".parse::<LogStatus>().is_err());
}

#[test]
fn accepted_events_are_idempotent_and_jobs_come_due_in_order() {
    let (_d, q) = queue();
    let now = Utc::now();
    let later = now + chrono::Duration::hours(1);
    let (r, jobs) = q
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
    assert_eq!(jobs.len(), 2);
    assert!(
        Arc::ptr_eq(
            jobs[0].event.as_ref().unwrap(),
            jobs[1].event.as_ref().unwrap()
        ),
        "the jobs of one event share it in memory"
    );
    let (again, none) = q
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
    assert!(none.is_empty());
    let due = q.due(now, 10).unwrap();
    assert_eq!(due.len(), 1, "the delayed job is not due yet");
    assert_eq!(due[0].push, "p1");
    assert_eq!(
        due[0].event.as_deref(),
        Some(&event("a")),
        "stored with its event"
    );
    assert_eq!(
        q.next_due().unwrap().map(|t| t.timestamp_millis()),
        Some(now.timestamp_millis())
    );
    assert_eq!(q.due(later, 10).unwrap().len(), 2);
    assert_eq!(q.pending().unwrap(), 2);
    let first = q.jobs_after(None, 1).unwrap();
    let rest = q.jobs_after(first.first(), 10).unwrap();
    assert_eq!((first.len(), rest.len()), (1, 1));
    assert_eq!(rest[0].push, "p2");
}

#[test]
fn completion_reschedules_dead_letters_logs_and_replays() {
    let (_d, q) = queue();
    let now = Utc::now();
    q.accept(vec![(event("a"), vec![("p".into(), now)])], now)
        .unwrap();
    let job = q.due(now, 1).unwrap().remove(0);
    let retry_at = now + chrono::Duration::seconds(30);
    let next = Job {
        attempt: 2,
        first_attempt_at: Some(now),
        due_at: retry_at,
        ..job.clone()
    };
    q.complete(Finished {
        entry: entry(&job, 1, LogStatus::Retry, now),
        job,
        completion: Completion::Retry(next),
    })
    .unwrap();
    assert!(q.due(now, 10).unwrap().is_empty());
    let job = q.due(retry_at, 10).unwrap().remove(0);
    assert_eq!(job.attempt, 2);
    q.complete(Finished {
        entry: entry(&job, 2, LogStatus::Dead, now),
        job,
        completion: Completion::Dead("gave up".into()),
    })
    .unwrap();
    assert_eq!(q.pending().unwrap(), 0);
    let dead = q.dead_letters(Some("p")).unwrap();
    assert_eq!(dead[0].reason, "gave up");
    assert_eq!(dead[0].event.as_ref().unwrap().id, "a");
    assert_eq!(q.dead_letter_count().unwrap(), 1);
    let log = q.log(Some("p"), None, 10).unwrap();
    assert_eq!(
        log.iter().map(|e| e.status).collect::<Vec<_>>(),
        [LogStatus::Dead, LogStatus::Retry]
    );
    let replayed = q.replay(None, Some("p"), now).unwrap();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event.as_deref(), Some(&event("a")));
    assert!(q.dead_letters(None).unwrap().is_empty());
    let queued = q.due(now, 10).unwrap();
    assert_eq!(queued[0].attempt, 1);
    assert_eq!(queued[0].event.as_deref(), Some(&event("a")));
}

#[test]
fn many_completions_apply_as_one_batch() {
    let (_d, q) = queue();
    let now = Utc::now();
    let items = (0..50)
        .map(|i| (event(&format!("e{i}")), vec![("p".to_owned(), now)]))
        .collect();
    let (_, jobs) = q.accept(items, now).unwrap();
    let finished: Vec<Finished> = jobs
        .into_iter()
        .map(|job| Finished {
            entry: entry(&job, 1, LogStatus::Delivered, now),
            job,
            completion: Completion::Done,
        })
        .collect();
    q.complete_all(&finished).unwrap();
    assert_eq!(q.pending().unwrap(), 0);
    assert_eq!(q.log(None, Some("delivered"), 100).unwrap().len(), 50);
}

#[test]
fn old_records_are_migrated_so_jobs_carry_their_events() {
    let (_d, q) = queue();
    let now = Utc::now();
    // A job and its event as an older pushwerk wrote them.
    let job = Job {
        id: 7,
        push: "p".into(),
        event_id: "old".into(),
        attempt: 1,
        accepted_at: now,
        first_attempt_at: None,
        due_at: now,
        event: None,
    };
    let stored = StoredEvent {
        event: event("old"),
        accepted_at: now,
    };
    q.store()
        .apply_batch(
            TREE,
            vec![
                (job.key(), Some(json(&job))),
                (event_key("old"), Some(json(&stored))),
            ],
        )
        .unwrap();
    assert_eq!(q.migrate().unwrap(), 1);
    assert_eq!(q.migrate().unwrap(), 0, "idempotent");
    let jobs = q.due(now, 10).unwrap();
    assert_eq!(jobs[0].event.as_deref(), Some(&event("old")));
    assert!(q.is_known("old").unwrap());
    assert_eq!(
        q.store()
            .get(TREE, &event_key("old"))
            .unwrap()
            .unwrap()
            .len(),
        8,
        "the event record shrank to its acceptance time"
    );
}

#[test]
fn retention_keeps_queued_jobs_with_their_events() {
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
    assert!(!q.is_known("done").unwrap());
    let waiting = q.jobs_after(None, 10).unwrap();
    assert_eq!(waiting.len(), 1, "a queued job outlives the id window");
    assert_eq!(waiting[0].event.as_deref(), Some(&event("waiting")));
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
    let finished: Vec<Finished> = (0..20u32)
        .map(|i| {
            let at = now - chrono::Duration::minutes(i64::from(i));
            let job = Job {
                id: u64::from(i),
                push: "p".into(),
                event_id: "x".into(),
                attempt: 1,
                accepted_at: at,
                first_attempt_at: None,
                due_at: at,
                event: None,
            };
            Finished {
                entry: entry(&job, 1, LogStatus::Delivered, at),
                job,
                completion: Completion::Done,
            }
        })
        .collect();
    q.complete_all(&finished).unwrap();
    q.retain(now, chrono::Duration::days(1), 5, chrono::Duration::days(7))
        .unwrap();
    let log = q.log(None, None, 100).unwrap();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].job_id, 0, "the newest are kept");
    assert!(!q.is_known("old").unwrap());
    assert!(q.is_known("new").unwrap());
}

#[test]
fn retention_with_a_window_beyond_the_calendar_keeps_everything() {
    // `--event-window 100000000y` passed chrono's range check but made
    // `now - window` overflow: retention panicked every 30 s.
    let (_d, q) = queue();
    let now = Utc::now();
    q.accept(
        vec![(event("kept"), vec![])],
        now - chrono::Duration::days(10),
    )
    .unwrap();
    let huge = chrono::Duration::days(365 * 100_000_000);
    q.retain(now, huge, 100, huge).unwrap();
    assert!(q.is_known("kept").unwrap(), "inside the window");
}

/// Two nodes on one PostgreSQL: one event id accepted once; jobs
/// stay with the node that accepted them while it lives.
#[test]
fn nodes_on_a_shared_store_accept_once_and_keep_their_jobs() {
    use crate::store::postgres::{pg_server::PgServer, test_node, DEFAULT_LEASE};
    let server = PgServer::start();
    let a = Queue::new(Arc::new(test_node(&server, "a", DEFAULT_LEASE)));
    let b = Queue::new(Arc::new(test_node(&server, "b", DEFAULT_LEASE)));
    assert!(a.is_shared() && b.is_shared());
    let now = Utc::now();
    let (first, jobs) = a
        .accept(vec![(event("x"), vec![("p".into(), now)])], now)
        .unwrap();
    assert_eq!((first.accepted, jobs.len()), (1, 1));
    let (again, none) = b
        .accept(vec![(event("x"), vec![("p".into(), now)])], now)
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert!(none.is_empty());
    assert!(b.due(now, 10).unwrap().is_empty(), "a holds its job");
    assert_eq!(a.due(now, 10).unwrap().len(), 1);
    assert_eq!(
        b.jobs_page(None, 10).unwrap().jobs.len(),
        1,
        "listings see it"
    );
}
