//! A histogram of durations for hot paths: fixed buckets chosen when it is
//! made, one atomic add per observation for its bucket and one for its sum (in
//! nanoseconds), no lock; rendered in seconds, as Prometheus names durations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::exposition::Family;

/// Durations counted into fixed buckets (upper bounds in seconds).
#[derive(Debug)]
pub struct DurationHistogram {
    /// Upper bounds, seconds, increasing.
    bounds: Vec<f64>,
    /// The same bounds in nanoseconds, for the comparison on the hot path.
    bounds_nanos: Vec<u64>,
    /// One per bound, then one for what is above every bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// A histogram with these upper bounds, in seconds (sorted and
    /// deduplicated here; bounds that are not finite and positive are dropped).
    pub fn new(bounds_seconds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds_seconds
            .iter()
            .copied()
            .filter(|b| b.is_finite() && *b > 0.0)
            .collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let bounds_nanos = bounds.iter().map(|b| (b * 1e9).round() as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            bounds_nanos,
            counts,
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one duration.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self
            .bounds_nanos
            .iter()
            .position(|b| nanos <= *b)
            .unwrap_or(self.bounds_nanos.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Writes this histogram as one series of `family`, with `labels`.
    pub fn render(&self, family: &mut Family<'_>, labels: &[(&str, &str)]) {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        family.histogram_sample(labels, &self.bounds, &counts, self.sum_seconds());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::new(&[1.0, 0.1, 0.1, f64::NAN, -1.0]);
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_millis(101));
        h.observe(Duration::from_secs(1));
        h.observe(Duration::from_secs(5));
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - 6.201).abs() < 1e-9);
        let mut out = String::new();
        let mut f = Family::histogram(&mut out, "d_seconds", "D.");
        h.render(&mut f, &[]);
        assert!(out.contains("d_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("d_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("d_seconds_count 4\n"), "{out}");
    }
}
