//! Exponential backoff with jitter: how long to wait before the next try
//! when a target or a token endpoint did not say. Shared by deliveries and
//! token refreshes so both back off the same way.

use std::time::Duration;

use rand::Rng;

use crate::net::RetryDelay;

/// Backoff steps: `base`, `2·base`, `4·base`, … up to `max`; each step is
/// drawn from its upper half, so many retries spread out but none comes
/// sooner than half the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The longest step.
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s doubling up to 5 min.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The full (un-jittered) step after `failures` failures (from 1).
    pub fn step(&self, failures: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        exp.min(self.max)
    }

    /// The wait after `failures` failures: within the upper half of the step.
    pub fn delay(&self, failures: u32) -> Duration {
        let step = self.step(failures);
        let half = step / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter)
    }

    /// The wait for a retry outcome: what the target said, or a backoff step.
    pub fn wait(&self, delay: RetryDelay, failures: u32) -> Duration {
        match delay {
            // Never sooner than the first step: `Retry-After: 0` (or a date
            // in the past) must not burn every attempt in milliseconds.
            RetryDelay::After(d) => d.max(self.base),
            RetryDelay::Backoff => self.delay(failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_jitter_stays_in_the_upper_half() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let steps: Vec<u64> = (1..=6).map(|f| b.step(f).as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 8, 8, 8]);
        for f in 1..=6 {
            for _ in 0..50 {
                let d = b.delay(f);
                assert!(
                    d >= b.step(f) / 2 && d <= b.step(f) + Duration::from_millis(1),
                    "{d:?}"
                );
            }
        }
        assert_eq!(
            b.wait(RetryDelay::After(Duration::from_secs(2)), 9),
            Duration::from_secs(2)
        );
    }
}
