//! The retry policy: exponential backoff with full jitter, shared by shell hooks, webhooks and
//! job retries, so every retry in s3db-run backs off the same way.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The delay cap of the first retry; each further retry doubles it.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl RetryPolicy {
    pub const fn new(retries: u32) -> Self {
        Self {
            retries,
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }

    pub const fn none() -> Self {
        Self::new(0)
    }

    /// The delay before retry number `retry` (1 for the first retry): a random duration up to
    /// `base · 2^(retry-1)`, capped at `max`, so that many failing callers do not retry in step.
    pub fn delay(&self, retry: u32) -> Duration {
        let cap = self.cap(retry);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(ms / 2..=ms.max(1)))
    }

    /// The longest all attempts can take when each takes at most `attempt`: the attempts and
    /// the longest delay before each retry.
    pub fn longest(&self, attempt: Duration) -> Duration {
        (1..self.attempts()).fold(attempt.saturating_mul(self.attempts()), |total, retry| {
            total.saturating_add(self.cap(retry))
        })
    }

    /// The longest delay before retry number `retry`.
    fn cap(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max)
    }

    /// The attempts to make in all.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_covers_every_attempt_and_the_longest_delays() {
        let p = RetryPolicy::new(3);
        // 4 attempts of 10 s, then retries' caps 200 ms, 400 ms, 800 ms.
        assert_eq!(
            p.longest(Duration::from_secs(10)),
            Duration::from_millis(41_400)
        );
        assert_eq!(
            RetryPolicy::none().longest(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        for retry in 1..=3 {
            assert!(p.delay(retry) <= Duration::from_millis(200 << (retry - 1)));
        }
    }

    #[test]
    fn delays_grow_exponentially_and_are_capped() {
        let p = RetryPolicy::new(10);
        for retry in 1..=10 {
            let cap = (p.base * 2u32.pow(retry - 1)).min(p.max);
            let d = p.delay(retry);
            assert!(
                d <= cap && d >= cap / 2,
                "retry {retry}: {d:?} vs cap {cap:?}"
            );
        }
        assert_eq!(p.attempts(), 11);
    }
}
