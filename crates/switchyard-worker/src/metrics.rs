//! Worker counters: what `demo` prints at the end, what logs report, and what a
//! metrics endpoint exposes. Lock-free on the hot path except the per-model map.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_core::result::{JobResult, JobStatus};

/// Latency histogram with ~4% wide buckets from 1 ms to ~20 minutes.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Vec<AtomicU64>,
}

const GROWTH: f64 = 1.04;
const BUCKETS: usize = 360;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    fn bucket(ms: u64) -> usize {
        if ms <= 1 {
            return 0;
        }
        ((ms as f64).ln() / GROWTH.ln())
            .ceil()
            .min((BUCKETS - 1) as f64) as usize
    }

    /// Records one latency.
    pub fn record(&self, ms: u64) {
        self.buckets[Self::bucket(ms)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0..1), as the upper edge of its bucket, in ms.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(GROWTH.powi(i as i32).round() as u64);
            }
        }
        None
    }
}

/// Per-model tallies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelTally {
    /// Jobs this model answered.
    pub jobs: u64,
    /// Their cost.
    pub cost_usd: f64,
}

/// Everything counted by one worker. The counters are private: the worker
/// changes them through the methods named after what happened, and readers take
/// them through the accessors or a [`MetricsSnapshot`].
#[derive(Debug, Default)]
pub struct Metrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    canceled: AtomicU64,
    held: AtomicU64,
    deferred: AtomicU64,
    dead_lettered: AtomicU64,
    failed_over: AtomicU64,
    attempts: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    latency: LatencyHistogram,
    /// Cost in micro-dollars (atomic-friendly).
    cost_micro_usd: AtomicU64,
    /// Baseline cost in micro-dollars.
    baseline_micro_usd: AtomicU64,
    by_model: Mutex<BTreeMap<String, ModelTally>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Jobs that ended succeeded.
    pub succeeded: u64,
    /// Jobs that ended failed.
    pub failed: u64,
    /// Jobs rejected by policy or budget.
    pub rejected: u64,
    /// Jobs of canceled batches.
    pub canceled: u64,
    /// Jobs parked for approval.
    pub held: u64,
    /// Jobs handed to deferred routing (a provider's batch API).
    pub deferred: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Jobs that needed more than one deployment.
    pub failed_over: u64,
    /// Provider attempts made.
    pub attempts: u64,
    /// Jobs being processed now.
    pub in_flight: u64,
    /// Most jobs processed at once since start.
    pub peak_in_flight: u64,
    /// Cost so far, USD.
    pub cost_usd: f64,
    /// What the same tokens would have cost on the baseline model, USD.
    pub baseline_usd: f64,
}

impl Metrics {
    /// Counts a finished job and what its tokens would have cost on the baseline.
    pub fn record(&self, result: &JobResult, baseline_usd: f64) {
        let counter = match result.status {
            JobStatus::Succeeded => &self.succeeded,
            JobStatus::Failed => &self.failed,
            JobStatus::Rejected => &self.rejected,
            JobStatus::Canceled => &self.canceled,
            JobStatus::Held => &self.held,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.attempts
            .fetch_add(result.attempts.len() as u64, Ordering::Relaxed);
        if result.failovers() > 0 {
            self.failed_over.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(result.latency_ms);
        self.cost_micro_usd
            .fetch_add((result.cost_usd * 1e6).round() as u64, Ordering::Relaxed);
        self.baseline_micro_usd
            .fetch_add((baseline_usd * 1e6).round() as u64, Ordering::Relaxed);
        if let (JobStatus::Succeeded, Some(model)) = (result.status, &result.model)
            && let Ok(mut m) = self.by_model.lock()
        {
            let t = m.entry(model.clone()).or_default();
            t.jobs += 1;
            t.cost_usd += result.cost_usd;
        }
    }

    /// Marks a job started; pair with [`Metrics::job_done`].
    pub fn job_started(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// Marks a job done (published or abandoned).
    pub fn job_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a job parked for approval.
    pub fn job_held(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a job handed to deferred routing.
    pub fn job_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs handed to deferred routing so far.
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Counts a message sent to the dead-letter topic.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs that reached a final result.
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.rejected.load(Ordering::Relaxed)
            + self.canceled.load(Ordering::Relaxed)
    }

    /// Jobs being processed now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Messages sent to the dead-letter topic so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Total cost so far.
    pub fn cost_usd(&self) -> f64 {
        self.cost_micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Baseline cost so far.
    pub fn baseline_usd(&self) -> f64 {
        self.baseline_micro_usd.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Jobs and cost per model.
    pub fn by_model(&self) -> BTreeMap<String, ModelTally> {
        self.by_model.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The `q` quantile of result latency (0..1), ms.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        self.latency.quantile(q)
    }

    /// Every counter at once.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            succeeded: load(&self.succeeded),
            failed: load(&self.failed),
            rejected: load(&self.rejected),
            canceled: load(&self.canceled),
            held: load(&self.held),
            deferred: load(&self.deferred),
            dead_lettered: load(&self.dead_lettered),
            failed_over: load(&self.failed_over),
            attempts: load(&self.attempts),
            in_flight: load(&self.in_flight),
            peak_in_flight: load(&self.peak_in_flight),
            cost_usd: self.cost_usd(),
            baseline_usd: self.baseline_usd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        for ms in 1..=1000 {
            h.record(ms);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p95 = h.quantile(0.95).unwrap() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.05, "{p50}");
        assert!((p95 - 950.0).abs() / 950.0 < 0.05, "{p95}");
    }
}
