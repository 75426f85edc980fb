//! The daemon's tasks on its own clock: time is Tokio's, paused, so that
//! a minute of cron passes in no time and exactly when the test says.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Daemon, DaemonConfig};
use crate::clock::Clock;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A daemon over a temporary folder holding `pushes`, on `clock`.
fn daemon(pushes: &[(&str, &str)], clock: Clock) -> (tempfile::TempDir, Arc<Daemon>) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pushes");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for (name, text) in pushes {
        std::fs::write(folder.join(name), text).unwrap();
    }
    let mut config = DaemonConfig::new(folder, data);
    config.key_file = Some(dir.path().join("key"));
    config.clock = clock;
    let (daemon, _) = Daemon::open(config).unwrap();
    (dir, daemon)
}

/// The ids of the events of the queued jobs.
async fn queued(daemon: &Daemon) -> Vec<String> {
    let (jobs, _) = daemon.jobs(None, 100).await.unwrap();
    jobs.into_iter().map(|j| j.event_id).collect()
}

#[tokio::test(start_paused = true)]
async fn cron_fires_each_tick_when_the_daemons_clock_reaches_it() {
    let push = "name: tick\nschedule: \"0 * * * * *\"\nhttp:\n  url: http://127.0.0.1:9/tick\n  json:\n    id: \"<< push.event_id >>\"\n";
    let clock = Clock::following_tokio(at("2026-03-01T09:00:30Z"));
    let (_dir, daemon) = daemon(&[("tick.yaml", push)], clock.clone());
    let cron = tokio::spawn(daemon.clone().run_cron());

    // Just before the minute: nothing fired (the first check is at start,
    // and a push seen first now has no missed tick).
    clock.sleep_until(at("2026-03-01T09:00:59Z")).await;
    assert_eq!(queued(&daemon).await, Vec::<String>::new());

    // The tick at 09:01 is queued once, as the event of that minute, and
    // remembered as fired; the next comes a minute later.
    clock.sleep_until(at("2026-03-01T09:01:00.5Z")).await;
    let first = "schedule:tick:2026-03-01T09:01:00+00:00".to_owned();
    assert_eq!(queued(&daemon).await, std::slice::from_ref(&first));
    assert_eq!(
        daemon.queue.last_tick("tick").unwrap(),
        Some(at("2026-03-01T09:01:00Z"))
    );
    clock.sleep_until(at("2026-03-01T09:02:00.5Z")).await;
    assert_eq!(
        queued(&daemon).await,
        [first, "schedule:tick:2026-03-01T09:02:00+00:00".to_owned()]
    );
    cron.abort();
}

#[tokio::test(start_paused = true)]
async fn a_missed_tick_fires_once_at_start_only_with_catch_up() {
    let push = |name: &str, catch_up: bool| {
        format!("name: {name}\nschedule: \"0 0 * * * *\"\ncatch_up: {catch_up}\nhttp:\n  url: http://127.0.0.1:9/{name}\n")
    };
    let (late, never) = (push("late", true), push("never", false));
    let clock = Clock::following_tokio(at("2026-03-01T12:30:00Z"));
    let (_dir, daemon) = daemon(
        &[("late.yaml", &late), ("never.yaml", &never)],
        clock.clone(),
    );
    // Both last fired at 09:00; the daemon was down for the ticks of 10, 11 and 12.
    for name in ["late", "never"] {
        daemon
            .queue
            .set_last_tick(name, at("2026-03-01T09:00:00Z"))
            .unwrap();
    }
    let cron = tokio::spawn(daemon.clone().run_cron());
    clock.sleep(Duration::from_secs(2)).await;
    // Only the newest missed tick, only for the push that catches up.
    assert_eq!(
        queued(&daemon).await,
        ["schedule:late:2026-03-01T12:00:00+00:00"]
    );
    cron.abort();
}

#[tokio::test]
async fn run_starts_the_workers_beside_the_server_and_returns_once_it_stops() {
    // Nothing listens on port 9: the attempt fails at once, to be retried.
    let push = "name: hook\non: call.ended\nhttp:\n  url: http://127.0.0.1:9/hook\n";
    let (_dir, daemon) = daemon(&[("hook.yaml", push)], Clock::system());
    let event = crate::event::Event::from_json(
        r#"{"id":"e1","type":"call.ended","time":"2026-01-01T00:00:00Z","data":{}}"#,
    )
    .unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let d = daemon.clone();
    // The "server": ingests an event, waits for its attempt, shuts down.
    let server = async move {
        d.ingest(vec![event]).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let log = loop {
            let log = d.read_queue(|q| q.log(None, None, 10)).await.unwrap();
            if !log.is_empty() || tokio::time::Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let jobs = d.jobs(None, 10).await.unwrap().0;
        d.shutdown().await;
        let _ = seen_tx.send((log, jobs));
    };
    tokio::time::timeout(Duration::from_secs(30), daemon.clone().run(server))
        .await
        .expect("run returns once the server is done")
        .unwrap();
    let (log, jobs) = seen_rx.await.unwrap();
    // The workers ran: one attempt, logged as a retry …
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, crate::delivery::LogStatus::Retry);
    // … and the job waits for its second attempt, later, with the error.
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].attempt, jobs[0].state), (2, "retrying"));
    assert!(
        jobs[0].due > log[0].at,
        "{:?} after {:?}",
        jobs[0].due,
        log[0].at
    );
    assert!(jobs[0].last_error.is_some());
    assert!(!daemon.is_ready(), "shut down");
}
