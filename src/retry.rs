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
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let cap = exp.min(self.max);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(ms / 2..=ms.max(1)))
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
