//! Retrying a compare-and-swap that lost to another writer: one limit and one backoff for every
//! such loop (the database's metadata and records, entity states, deadlines), so contention is
//! handled the same way everywhere.

use std::time::Duration;

/// Attempts before a compare-and-swap gives up. With the backoff below (at most 128 ms, 64 ms
/// on average) that is about a minute of losing every race.
pub const ATTEMPTS: u32 = 1000;

/// Counts the attempts of one compare-and-swap and waits between them.
#[derive(Debug, Default)]
pub struct Attempts {
    made: u32,
}

impl Attempts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether another attempt may be made; waits a randomized, growing delay before every
    /// attempt but the first, so racing writers spread out instead of colliding again.
    pub async fn next(&mut self) -> bool {
        if self.made >= ATTEMPTS {
            return false;
        }
        if self.made > 0 {
            tokio::time::sleep(delay(self.made)).await;
        }
        self.made += 1;
        true
    }
}

/// A random delay up to 2^retry ms, at most 128 ms.
fn delay(retry: u32) -> Duration {
    let cap_ms = 1u64 << retry.min(7);
    Duration::from_millis(rand::random_range(0..=cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_a_cap() {
        for retry in 0..20 {
            assert!(delay(retry) <= Duration::from_millis(1 << retry.min(7)));
        }
    }

    #[tokio::test]
    async fn attempts_stop_at_the_limit() {
        let mut attempts = Attempts::new();
        assert!(attempts.next().await, "the first attempt is always made");
        attempts.made = ATTEMPTS - 2;
        let mut n = 0;
        while attempts.next().await {
            n += 1;
        }
        assert_eq!(n, 2);
    }
}
