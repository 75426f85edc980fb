//! The retry rule, in one place: after an attempt, is the job done, tried
//! again (when), or given up (why)? The daemon (whose retries outlive a
//! restart) and `pushwerk send` / the `send` endpoint (which wait in
//! process) both ask [`decide`], with the time passed in, so that the rule
//! is the same for both and testable without waiting.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff::Backoff;
use crate::targets::{Outcome, RetryDelay};

/// How a push retries: its `retry:` settings and the daemon's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts at most (the first included).
    pub max_attempts: u32,
    /// No attempt later than this after the first one.
    pub max_age: Duration,
    /// The wait when the target does not say.
    pub backoff: Backoff,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

/// Where a job stands: the attempt just made and when the first one was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tries {
    /// The number of the attempt just made, from 1.
    pub attempt: u32,
    /// When the first attempt was made.
    pub first_at: DateTime<Utc>,
}

/// What becomes of a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: the job is done.
    Done,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// Give up: dead-letter the job.
    Dead(GiveUp),
}

/// Why a job is given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// The target refused it for good (or the attempt could not be made).
    Permanent,
    /// The account's tokens need a new sign-in: retrying cannot help.
    NeedsReauth,
    /// `max_attempts` were made.
    Attempts(u32),
    /// The next attempt would come later than `max_age` after the first.
    MaxAge(Duration),
}

impl GiveUp {
    /// The dead letter's reason, from the last attempt's error.
    pub fn reason(&self, error: Option<&str>) -> String {
        let error = error.unwrap_or_default();
        match self {
            GiveUp::Permanent | GiveUp::NeedsReauth if error.is_empty() => "failed".to_owned(),
            GiveUp::Permanent | GiveUp::NeedsReauth => error.to_owned(),
            GiveUp::Attempts(n) => format!("gave up after {n} attempts: {error}"),
            GiveUp::MaxAge(max_age) => format!(
                "gave up: the next attempt would be past max_age {}: {error}",
                humantime::format_duration(*max_age)
            ),
        }
    }
}

/// The rule: a delivery is done; a retry outcome is tried again after the
/// target's `Retry-After` (capped, never sooner than the first backoff
/// step) or a backoff step, unless `max_attempts` are made or the next
/// attempt would be more than `max_age` after the first; anything else
/// (a permanent failure, tokens that need a sign-in) is dead at once.
pub fn decide(outcome: &Outcome, tries: Tries, policy: &Policy, now: DateTime<Utc>) -> Decision {
    let delay = match outcome {
        Outcome::Delivered { .. } => return Decision::Done,
        Outcome::Retry { delay, .. } => *delay,
        Outcome::Failed { code, .. } if code.as_deref() == Some("needs_reauth") => {
            return Decision::Dead(GiveUp::NeedsReauth)
        }
        // A refresh-and-retry is the deliverer's to make (once, within the
        // attempt); one that reaches here was refused again.
        Outcome::Failed { .. } | Outcome::RefreshAndRetry { .. } => {
            return Decision::Dead(GiveUp::Permanent)
        }
    };
    if tries.attempt >= policy.max_attempts {
        return Decision::Dead(GiveUp::Attempts(tries.attempt));
    }
    let delay = match delay {
        RetryDelay::After(d) => RetryDelay::After(d.min(policy.retry_after_cap)),
        backoff => backoff,
    };
    let wait = policy.backoff.wait(delay, tries.attempt);
    let next = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    let max_age = chrono::Duration::from_std(policy.max_age).unwrap_or(chrono::Duration::MAX);
    if next - tries.first_at > max_age {
        return Decision::Dead(GiveUp::MaxAge(policy.max_age));
    }
    Decision::Retry(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const T0: &str = "2026-03-01T09:00:00Z";

    fn policy() -> Policy {
        Policy {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            retry_after_cap: Duration::from_secs(600),
        }
    }

    fn retry(delay: RetryDelay) -> Outcome {
        Outcome::Retry {
            delay,
            status: Some(429),
            reason: "throttled".into(),
            reference: None,
        }
    }

    fn failed(code: &str) -> Outcome {
        Outcome::Failed {
            status: Some(400),
            code: Some(code.into()),
            message: "no".into(),
            items: Vec::new(),
            reference: None,
        }
    }

    fn tries(attempt: u32) -> Tries {
        Tries {
            attempt,
            first_at: at(T0),
        }
    }

    #[test]
    fn a_delivery_is_done() {
        let ok = Outcome::Delivered {
            status: 202,
            reference: None,
        };
        assert_eq!(decide(&ok, tries(3), &policy(), at(T0)), Decision::Done);
    }

    #[test]
    fn retry_after_is_honoured_capped_and_never_below_the_first_step() {
        let now = at("2026-03-01T09:10:00Z");
        let after = |s| retry(RetryDelay::After(Duration::from_secs(s)));
        assert_eq!(
            decide(&after(30), tries(1), &policy(), now),
            Decision::Retry(at("2026-03-01T09:10:30Z"))
        );
        // A day's Retry-After waits the cap (10 min), not a day.
        let mut p = policy();
        p.max_age = Duration::from_secs(86_400 * 2);
        assert_eq!(
            decide(&after(86_400), tries(1), &p, now),
            Decision::Retry(at("2026-03-01T09:20:00Z"))
        );
        // `Retry-After: 0` does not burn the attempts in milliseconds.
        assert_eq!(
            decide(&after(0), tries(1), &policy(), now),
            Decision::Retry(at("2026-03-01T09:10:01Z"))
        );
    }

    #[test]
    fn without_retry_after_the_wait_is_a_jittered_backoff_step() {
        let now = at(T0);
        for attempt in 1..=4 {
            let step = policy().backoff.step(attempt);
            let Decision::Retry(next) =
                decide(&retry(RetryDelay::Backoff), tries(attempt), &policy(), now)
            else {
                panic!("attempt {attempt} is retried");
            };
            let wait = (next - now).to_std().unwrap();
            assert!(
                wait >= step / 2 && wait <= step + Duration::from_millis(1),
                "attempt {attempt}: {wait:?} for a step of {step:?}"
            );
        }
    }

    #[test]
    fn the_last_attempt_is_dead() {
        let d = decide(
            &retry(RetryDelay::After(Duration::from_secs(1))),
            tries(5),
            &policy(),
            at(T0),
        );
        assert_eq!(d, Decision::Dead(GiveUp::Attempts(5)));
        assert_eq!(
            GiveUp::Attempts(5).reason(Some("429 throttled")),
            "gave up after 5 attempts: 429 throttled"
        );
    }

    #[test]
    fn an_attempt_past_max_age_since_the_first_is_not_made() {
        let later = retry(RetryDelay::After(Duration::from_secs(120)));
        // 58 min after the first attempt: the next would be at 60 min, in time.
        assert_eq!(
            decide(&later, tries(2), &policy(), at("2026-03-01T09:58:00Z")),
            Decision::Retry(at("2026-03-01T10:00:00Z"))
        );
        // 59 min after: the next would be at 61 min, past the hour.
        let d = decide(&later, tries(2), &policy(), at("2026-03-01T09:59:00Z"));
        assert_eq!(d, Decision::Dead(GiveUp::MaxAge(Duration::from_secs(3600))));
        assert_eq!(
            GiveUp::MaxAge(Duration::from_secs(3600)).reason(Some("busy")),
            "gave up: the next attempt would be past max_age 1h: busy"
        );
    }

    #[test]
    fn permanent_failures_and_reauth_are_dead_at_once() {
        assert_eq!(
            decide(
                &failed("ErrorInvalidRecipients"),
                tries(1),
                &policy(),
                at(T0)
            ),
            Decision::Dead(GiveUp::Permanent)
        );
        assert_eq!(
            decide(&failed("needs_reauth"), tries(1), &policy(), at(T0)),
            Decision::Dead(GiveUp::NeedsReauth)
        );
        let refused = Outcome::RefreshAndRetry {
            status: 401,
            reason: "expired".into(),
            reference: None,
        };
        assert_eq!(
            decide(&refused, tries(1), &policy(), at(T0)),
            Decision::Dead(GiveUp::Permanent)
        );
        assert_eq!(GiveUp::Permanent.reason(Some("400: bad")), "400: bad");
        assert_eq!(GiveUp::NeedsReauth.reason(None), "failed");
    }
}
