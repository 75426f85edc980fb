//! The one clock the daemon reads: wall-clock time (`now`) and waiting for
//! a moment of it (`sleep_until`). Injected so that every decision that
//! depends on time (due dates, retries, cron ticks, retention) can be
//! tested without waiting: a test clock follows Tokio's clock, which a
//! test pauses and advances (`#[tokio::test(start_paused = true)]`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the time comes from; cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    /// The system's wall clock; sleeps are Tokio's.
    System,
    /// Wall-clock time that moves with Tokio's clock from `origin` (its
    /// wall-clock time at `started`): pausing and advancing Tokio's clock
    /// moves this one, and a sleep ends when Tokio's clock reaches it.
    Tokio {
        origin: DateTime<Utc>,
        started: tokio::time::Instant,
    },
}

impl Default for Clock {
    /// The system clock.
    fn default() -> Clock {
        Clock::system()
    }
}

impl Clock {
    /// The system's wall clock (production).
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock that reads `origin` now and moves with Tokio's clock from
    /// here on: with Tokio's time paused (tests), it stands still until a
    /// sleep or `tokio::time::advance` moves it. Call inside a runtime.
    pub fn following_tokio(origin: DateTime<Utc>) -> Clock {
        Clock(Arc::new(Source::Tokio {
            origin,
            started: tokio::time::Instant::now(),
        }))
    }

    /// The time now.
    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Source::System => Utc::now(),
            Source::Tokio { origin, started } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*started);
                *origin + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// How long from now until `at` (zero if it is past).
    pub fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }

    /// Returns once this clock reads `at` or later.
    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        match &*self.0 {
            Source::System => tokio::time::sleep(self.until(at)).await,
            Source::Tokio { origin, started } => {
                let offset = (at - *origin).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep_until(*started + offset).await
            }
        }
    }

    /// Returns after `wait` of this clock's time.
    pub async fn sleep(&self, wait: Duration) {
        tokio::time::sleep(wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_paused_tokio_time_moves_only_with_it() {
        let clock = Clock::following_tokio(at("2026-03-01T09:00:00Z"));
        assert_eq!(clock.now(), at("2026-03-01T09:00:00Z"));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), at("2026-03-01T09:01:30Z"));
        // A sleep to a wall-clock moment ends exactly there (paused time
        // jumps to it instead of waiting).
        clock.sleep_until(at("2026-03-01T10:00:00Z")).await;
        assert_eq!(clock.now(), at("2026-03-01T10:00:00Z"));
        // A moment in the past does not wait.
        clock.sleep_until(at("2026-03-01T09:00:00Z")).await;
        assert_eq!(clock.now(), at("2026-03-01T10:00:00Z"));
        assert_eq!(
            clock.until(at("2026-03-01T10:00:05Z")),
            Duration::from_secs(5)
        );
    }
}
