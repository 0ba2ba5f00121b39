//! Exponential backoff for retrying ClickHouse: doubles from `base` up to `max`,
//! and starts over after a success. Pure; the caller sleeps.

use std::time::Duration;

/// The next pause before a retry.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.min(max);
        Self {
            base,
            max,
            next: base,
        }
    }

    /// The pause to take now; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_the_cap_and_reset_after_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 700, 700]);
        let start = tokio::time::Instant::now();
        tokio::time::sleep(b.next_delay()).await;
        assert_eq!(start.elapsed(), Duration::from_millis(700));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
