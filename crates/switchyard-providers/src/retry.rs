//! Retrying on one deployment: how many attempts, and the pause between them:
//! the shared exponential [`Backoff`] with full jitter, at least what the provider
//! asked for (Retry-After), never past the job's deadline (the caller checks).

use std::time::Duration;

use rand::Rng;
use switchyard_core::backoff::Backoff;
use switchyard_core::config::RetryConfig;

use crate::ProviderError;

/// Attempts per deployment and the backoff between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts on one deployment (1 = no retry).
    pub attempts: u32,
    /// Pauses between them.
    pub backoff: Backoff,
    /// Longest Retry-After waited out on the same deployment; a longer one
    /// fails over.
    pub max_retry_after: Duration,
}

impl From<RetryConfig> for RetryPolicy {
    fn from(c: RetryConfig) -> Self {
        Self {
            attempts: c.attempts_per_deployment,
            backoff: Backoff::new(c.base_backoff, c.max_backoff),
            max_retry_after: c.max_retry_after,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0 = the first retry) after `error`:
    /// a uniform draw in `[0, min(max, base·2^retry)]`, raised to the provider's
    /// Retry-After when it gave one.
    pub fn delay(&self, retry: u32, error: &ProviderError) -> Duration {
        let drawn = self
            .backoff
            .jittered(retry, 0.0, rand::rng().random_range(0.0..=1.0));
        match error.retry_after() {
            Some(asked) => drawn.max(asked),
            None => drawn,
        }
    }

    /// Whether another attempt on the same deployment is allowed after
    /// `attempts_made` attempts: the error must be retryable, attempts left, and
    /// the wait the provider asked for no longer than `max_retry_after`.
    pub fn may_retry(&self, attempts_made: u32, error: &ProviderError) -> bool {
        error.is_retryable()
            && attempts_made < self.attempts
            && error
                .retry_after()
                .is_none_or(|asked| asked <= self.max_retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_within_the_cap() {
        let e = ProviderError::Connection("reset".into());
        for retry in 0..8 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << retry)
                .min(Duration::from_secs(2));
            for _ in 0..50 {
                assert!(b().delay(retry, &e) <= cap);
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let e = ProviderError::RateLimited {
            status: 429,
            message: "slow".into(),
            retry_after: Some(Duration::from_secs(5)),
        };
        assert!(b().delay(0, &e) >= Duration::from_secs(5));
    }

    #[test]
    fn a_wait_longer_than_max_retry_after_fails_over_instead() {
        let asked = |secs| ProviderError::RateLimited {
            status: 429,
            message: "slow".into(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert!(b().may_retry(1, &asked(60)));
        assert!(!b().may_retry(1, &asked(61)));
        assert!(!b().may_retry(1, &asked(86_400)));
    }

    #[test]
    fn only_retryable_errors_retry_and_only_so_often() {
        let e = ProviderError::Server {
            status: 503,
            message: "x".into(),
            retry_after: None,
        };
        assert!(b().may_retry(1, &e));
        assert!(!b().may_retry(3, &e));
        assert!(!b().may_retry(
            1,
            &ProviderError::InvalidRequest {
                status: 400,
                message: "bad".into()
            }
        ));
    }
}
