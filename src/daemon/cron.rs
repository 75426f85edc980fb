//! Cron: `schedule:` pushes fired on time, each tick queued durably (off
//! the async workers: the store is read and written on a blocking thread).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Daemon;
use crate::config::Trigger;
use crate::event::Event;

impl Daemon {
    /// Fires `schedule:` pushes on time; a tick missed while the daemon was
    /// down is fired once at start only for pushes with `catch_up`.
    pub async fn run_cron(self: Arc<Self>) {
        let clock = self.config.clock.clone();
        let mut checked: HashMap<String, DateTime<Utc>> = HashMap::new();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let catalog = self.catalog();
            let now = clock.now();
            let mut next_wake = now + chrono::Duration::seconds(1);
            for push in &catalog.pushes {
                let Trigger::Schedule(schedule) = &push.trigger else {
                    continue;
                };
                let name = push.name().to_owned();
                let from = match checked.get(&name) {
                    Some(from) => *from,
                    None => {
                        let last = match push.spec.catch_up {
                            true => self.last_tick(&name).await,
                            false => None,
                        };
                        // First seen now (at start, or added later): ticks
                        // before it existed are not missed ticks.
                        *checked.entry(name.clone()).or_insert(last.unwrap_or(now))
                    }
                };
                let Some(tick) = schedule.next_after(&from) else {
                    continue;
                };
                if tick <= now {
                    // Only the newest missed tick fires (catch-up fires once).
                    let mut latest = tick;
                    while let Some(t) = schedule.next_after(&latest).filter(|t| *t <= now) {
                        latest = t;
                    }
                    self.fire(&name, latest, now).await;
                    checked.insert(name, latest);
                    if let Some(n) = schedule.next_after(&latest) {
                        next_wake = next_wake.min(n);
                    }
                } else {
                    next_wake = next_wake.min(tick);
                }
            }
            let next_wake = next_wake.max(clock.now() + chrono::Duration::milliseconds(5));
            clock.sleep_until(next_wake).await;
        }
    }

    /// The last tick fired for `push` (read on a blocking thread).
    async fn last_tick(&self, push: &str) -> Option<DateTime<Utc>> {
        let queue = self.queue.clone();
        let push = push.to_owned();
        tokio::task::spawn_blocking(move || queue.last_tick(&push))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// Queues the tick `latest` of `push` as an event, durably, and
    /// remembers it as the last fired; the store is written on a blocking
    /// thread.
    async fn fire(&self, push: &str, latest: DateTime<Utc>, now: DateTime<Utc>) {
        let event = Event::schedule_tick(push, latest);
        let items = vec![(event, vec![(push.to_owned(), now)])];
        let producing = self.producers.read().await;
        let queue = self.queue.clone();
        let name = push.to_owned();
        let accepted = tokio::task::spawn_blocking(move || {
            let accepted = queue.accept(items, now)?;
            let _ = queue.set_last_tick(&name, latest);
            Ok::<_, crate::delivery::QueueError>(accepted)
        })
        .await;
        match accepted {
            Ok(Ok((_, jobs))) => self.schedule(jobs),
            Ok(Err(e)) => tracing::error!(push = %push, error = %e, "cannot queue a cron tick"),
            Err(e) => tracing::error!(push = %push, error = %e, "cannot queue a cron tick"),
        }
        drop(producing);
    }
}
