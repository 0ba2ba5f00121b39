//! Exponential backoff, the one definition every retry in Switchyard uses: the
//! provider retry loop and rate-limit pauses, the worker's publishing, the
//! analytics sink's ClickHouse retries. Pure: it computes pauses, the caller
//! sleeps, and randomness (for jitter) comes in as a number in `0..=1`, so every
//! pause can be checked exactly in tests.

use std::time::Duration;

/// `base · 2ⁿ` capped at `max` for the n-th consecutive failure, with a count
/// of failures so far for callers that keep one backoff across attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

/// The exponent stops growing here (2²⁰ · base is past any sensible cap).
const MAX_DOUBLINGS: u32 = 20;

impl Backoff {
    /// Starts at `base`, never above `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        let base = if base.as_nanos() > max.as_nanos() {
            max
        } else {
            base
        };
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// The first pause.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest pause.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The cap for retry `n` (0 = the first retry): `base · 2ⁿ`, at most `max`.
    pub fn cap(&self, n: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << n.min(MAX_DOUBLINGS))
            .min(self.max)
    }

    /// The pause for retry `n` with jitter: `unit` (clamped to `0..=1`) of the
    /// way from `floor · cap` to the cap. `floor = 0` is full jitter, `0.5` keeps
    /// at least half the cap.
    pub fn jittered(&self, n: u32, floor: f64, unit: f64) -> Duration {
        let floor = floor.clamp(0.0, 1.0);
        let share = floor + (1.0 - floor) * unit.clamp(0.0, 1.0);
        self.cap(n).mul_f64(share)
    }

    /// The pause to take after one more failure; the one after it is twice as
    /// long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.cap(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Failures counted since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_success() {
        let mut b = Backoff::new(ms(100), ms(700));
        let delays: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 700, 700]);
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }

    #[test]
    fn a_base_above_the_cap_is_the_cap() {
        let b = Backoff::new(ms(900), ms(300));
        assert_eq!(b.cap(0), ms(300));
        assert_eq!(b.base(), ms(300));
    }

    #[test]
    fn jitter_spans_from_the_floor_to_the_cap() {
        let b = Backoff::new(ms(100), ms(2_000));
        assert_eq!(b.jittered(2, 0.0, 0.0), Duration::ZERO);
        assert_eq!(b.jittered(2, 0.0, 1.0), ms(400));
        assert_eq!(b.jittered(2, 0.5, 0.0), ms(200));
        assert_eq!(b.jittered(2, 0.5, 1.0), ms(400));
        assert_eq!(b.jittered(2, 0.0, 7.0), ms(400), "unit is clamped");
    }

    proptest! {
        #[test]
        fn caps_never_shrink_and_never_pass_the_max(base in 1u64..5_000, max in 1u64..600_000, n in 0u32..200) {
            let b = Backoff::new(ms(base), ms(max));
            prop_assert!(b.cap(n) <= ms(max));
            prop_assert!(b.cap(n + 1) >= b.cap(n));
            prop_assert!(b.jittered(n, 0.0, 0.5) <= b.cap(n));
        }
    }
}
