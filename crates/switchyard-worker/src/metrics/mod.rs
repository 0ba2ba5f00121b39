//! Worker counters and state: what `demo` and `bench` print, what logs report,
//! and what the worker's `/metrics` exposes (written by `prometheus.rs`) and
//! its `/readyz` reads. The hot path is lock-free: a finished job is a few
//! atomic adds into arrays indexed by status and strategy, a provider attempt
//! one add into its deployment's row (deployments are known when the engine is
//! built). Only the per-model tally of succeeded jobs, the dead letters by kind
//! (rare) and the consumer lag (replaced every few seconds) sit behind locks.

mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use switchyard_core::result::{AttemptOutcome, JobResult, JobStatus};
use switchyard_core::routing::Strategy;
use switchyard_telemetry::DurationHistogram;

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

/// Final statuses, in the order of the first rows of the job counters.
const STATUSES: [JobStatus; 4] = [
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Rejected,
    JobStatus::Canceled,
];

/// The row of the job counters after the final statuses: jobs parked on the
/// held topic (awaiting approval), labelled `status="held"`: their `held`
/// result is counted here, their final one later in its own row.
const HELD_ROW: usize = STATUSES.len();

/// The `status` label of each row of the job counters.
const STATUS_LABELS: [&str; STATUSES.len() + 1] =
    ["succeeded", "failed", "rejected", "canceled", "held"];

/// Columns of the job counters: every strategy, then results without a
/// routing summary.
const STRATEGY_COLUMNS: usize = Strategy::ALL.len() + 1;

/// The strategy label of results without a routing summary.
const NO_STRATEGY: &str = "none";

/// Attempt outcomes, in the order of each deployment's counters.
const OUTCOMES: [AttemptOutcome; 7] = [
    AttemptOutcome::Succeeded,
    AttemptOutcome::RateLimited,
    AttemptOutcome::ProviderError,
    AttemptOutcome::Timeout,
    AttemptOutcome::Rejected,
    AttemptOutcome::InvalidOutput,
    AttemptOutcome::Skipped,
];

/// The dead-letter kinds the worker writes (the decoder's, then the
/// publisher's), counted from zero so that a rate over them exists before
/// the first one.
pub const DEAD_LETTER_KINDS: &[&str] = &[
    "too_large",
    "empty",
    "invalid_utf8",
    "invalid_json",
    "invalid_avro",
    "invalid_job",
    "job_id_conflict",
    "internal_error",
    "unpublishable_hold",
    "unpublishable_deferral",
    "unencodable_outcome",
    "unpublishable_result",
];

/// The kind counted by [`Metrics::dead_lettered`], which does not say one.
const UNKNOWN_KIND: &str = "other";

/// Upper bounds of the job duration histogram, seconds: from a refusal
/// (milliseconds) to a long reasoning answer with retries (minutes).
pub const JOB_SECONDS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds of the rate-limit wait histogram, seconds: most calls pass
/// at once; a throttled deployment holds calls for up to a minute.
pub const WAIT_SECONDS_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0];

/// The row of a result's status (`held`, not final, has the last row).
fn status_row(status: JobStatus) -> usize {
    match status {
        JobStatus::Succeeded => 0,
        JobStatus::Failed => 1,
        JobStatus::Rejected => 2,
        JobStatus::Canceled => 3,
        JobStatus::Held => HELD_ROW,
    }
}

fn strategy_column(strategy: Option<Strategy>) -> usize {
    match strategy {
        Some(Strategy::Auto) => 0,
        Some(Strategy::Balanced) => 1,
        Some(Strategy::CostFirst) => 2,
        Some(Strategy::LatencyFirst) => 3,
        Some(Strategy::AvailabilityFirst) => 4,
        None => 5,
    }
}

fn outcome_column(outcome: AttemptOutcome) -> usize {
    match outcome {
        AttemptOutcome::Succeeded => 0,
        AttemptOutcome::RateLimited => 1,
        AttemptOutcome::ProviderError => 2,
        AttemptOutcome::Timeout => 3,
        AttemptOutcome::Rejected => 4,
        AttemptOutcome::InvalidOutput => 5,
        AttemptOutcome::Skipped => 6,
    }
}

/// One deployment's counters.
#[derive(Debug)]
struct DeploymentCounters {
    name: String,
    /// Attempts by outcome, in [`OUTCOMES`] order.
    calls: [AtomicU64; OUTCOMES.len()],
    /// Time calls waited in the deployment's rate limiter.
    waits: DurationHistogram,
}

/// The consumer lag last measured: the jobs topic and, per assigned
/// partition, the messages between its commit point and its end.
#[derive(Debug, Default)]
struct ConsumerLag {
    topic: String,
    partitions: Vec<(i32, i64)>,
}

/// Everything counted by one worker. The counters are private: the worker
/// changes them through the methods named after what happened, and readers take
/// them through the accessors, a [`MetricsSnapshot`] or
/// [`Metrics::render_prometheus`].
#[derive(Debug)]
pub struct Metrics {
    /// Jobs by status: a row per final status ([`STATUSES`]) and one for held
    /// jobs ([`HELD_ROW`]), a column per strategy.
    jobs: [[AtomicU64; STRATEGY_COLUMNS]; STATUS_LABELS.len()],
    /// Result latency per final status, for the exposition.
    durations: [DurationHistogram; STATUSES.len()],
    /// Jobs handed to deferred routing (a provider's batch API).
    deferred: AtomicU64,
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
    /// Dead letters by kind.
    dead_letters: Mutex<BTreeMap<String, u64>>,
    /// Indexed like the engine's deployments.
    deployments: Vec<DeploymentCounters>,
    consumer_lag: Mutex<ConsumerLag>,
    /// Whether the consumer holds an assignment of its group now.
    group_joined: AtomicBool,
    /// Whether the budget snapshots were read before taking jobs.
    budgets_caught_up: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::for_deployments(std::iter::empty::<String>())
    }
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
    /// Counters for a worker whose deployments are `names`, in the engine's
    /// order (the index [`Metrics::provider_call`] takes).
    pub fn for_deployments<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        let deployments = names
            .into_iter()
            .map(|name| DeploymentCounters {
                name: name.into(),
                calls: Default::default(),
                waits: DurationHistogram::new(WAIT_SECONDS_BUCKETS),
            })
            .collect();
        let dead_letters = DEAD_LETTER_KINDS
            .iter()
            .map(|k| ((*k).to_owned(), 0))
            .collect();
        Self {
            jobs: Default::default(),
            durations: std::array::from_fn(|_| DurationHistogram::new(JOB_SECONDS_BUCKETS)),
            deferred: AtomicU64::new(0),
            failed_over: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            latency: LatencyHistogram::default(),
            cost_micro_usd: AtomicU64::new(0),
            baseline_micro_usd: AtomicU64::new(0),
            by_model: Mutex::new(BTreeMap::new()),
            dead_letters: Mutex::new(dead_letters),
            deployments,
            consumer_lag: Mutex::new(ConsumerLag::default()),
            group_joined: AtomicBool::new(false),
            budgets_caught_up: AtomicBool::new(false),
        }
    }

    /// Counts a finished job and what its tokens would have cost on the baseline.
    pub fn record(&self, result: &JobResult, baseline_usd: f64) {
        let column = strategy_column(result.routing.as_ref().map(|r| r.strategy));
        let row = status_row(result.status);
        self.jobs[row][column].fetch_add(1, Ordering::Relaxed);
        if let Some(durations) = self.durations.get(row) {
            // Final statuses only: a held job's time runs on after it is parked.
            durations.observe(Duration::from_millis(result.latency_ms));
        }
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
        if let (JobStatus::Succeeded, Some(model)) = (result.status, &result.model) {
            let mut m = self.by_model.lock();
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

    /// Counts a job handed to deferred routing.
    pub fn job_deferred(&self) {
        self.deferred.fetch_add(1, Ordering::Relaxed);
    }

    /// Jobs handed to deferred routing so far.
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }

    /// Counts a job parked on the held topic without a `held` result, as
    /// `status="held"` without a strategy (a `held` result is counted by
    /// [`Metrics::record`]; do not count it twice).
    pub fn job_held(&self) {
        self.jobs[HELD_ROW][strategy_column(None)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message sent to the dead-letter topic, of a kind not said
    /// (counted as `other`; the worker itself uses [`Metrics::dead_lettered_as`]).
    pub fn dead_lettered(&self) {
        self.dead_lettered_as(UNKNOWN_KIND);
    }

    /// Counts a message sent to the dead-letter topic, by its kind (the
    /// `switchyard.dlq.kind` header: `invalid_json`, `too_large`, …).
    pub fn dead_lettered_as(&self, kind: &str) {
        let mut kinds = self.dead_letters.lock();
        match kinds.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                kinds.insert(kind.to_owned(), 1);
            }
        }
    }

    /// Counts one provider attempt on the deployment at `deployment` (the
    /// engine's index), by how it ended.
    pub fn provider_call(&self, deployment: usize, outcome: AttemptOutcome) {
        if let Some(d) = self.deployments.get(deployment) {
            d.calls[outcome_column(outcome)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the time a call waited in a deployment's rate limiter.
    pub fn rate_limit_waited(&self, deployment: usize, waited: Duration) {
        if let Some(d) = self.deployments.get(deployment) {
            d.waits.observe(waited);
        }
    }

    /// Replaces the consumer lag: per assigned partition of `topic`, the
    /// messages not yet committed.
    pub fn set_consumer_lag(&self, topic: &str, partitions: Vec<(i32, i64)>) {
        let mut lag = self.consumer_lag.lock();
        if lag.topic != topic {
            lag.topic = topic.to_owned();
        }
        lag.partitions = partitions;
    }

    /// The consumer lag last measured: the topic and, per assigned partition,
    /// the messages not yet committed.
    pub fn consumer_lag(&self) -> (String, Vec<(i32, i64)>) {
        let lag = self.consumer_lag.lock();
        (lag.topic.clone(), lag.partitions.clone())
    }

    /// Says whether the consumer holds an assignment of its group (set on
    /// assignment, cleared when a rebalance takes the partitions away or the
    /// worker leaves).
    pub fn set_group_joined(&self, joined: bool) {
        self.group_joined.store(joined, Ordering::Relaxed);
    }

    /// Whether the consumer holds an assignment of its group now.
    pub fn group_joined(&self) -> bool {
        self.group_joined.load(Ordering::Relaxed)
    }

    /// Notes that the budget snapshots were read: from now on jobs are taken.
    pub fn set_budgets_caught_up(&self) {
        self.budgets_caught_up.store(true, Ordering::Relaxed);
    }

    /// Whether the budget snapshots were read.
    pub fn budgets_caught_up(&self) -> bool {
        self.budgets_caught_up.load(Ordering::Relaxed)
    }

    /// The deployments counted, in the engine's order.
    pub fn deployments(&self) -> impl Iterator<Item = &str> {
        self.deployments.iter().map(|d| d.name.as_str())
    }

    fn status_count(&self, status: JobStatus) -> u64 {
        self.jobs[status_row(status)]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Jobs that ended failed.
    pub fn failed(&self) -> u64 {
        self.status_count(JobStatus::Failed)
    }

    /// Jobs that reached a final result.
    pub fn finished(&self) -> u64 {
        STATUSES.iter().map(|s| self.status_count(*s)).sum()
    }

    /// Jobs being processed now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Messages sent to the dead-letter topic so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.lock().values().sum()
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
        self.by_model.lock().clone()
    }

    /// The `q` quantile of result latency (0..1), ms.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        self.latency.quantile(q)
    }

    /// Every counter at once.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            succeeded: self.status_count(JobStatus::Succeeded),
            failed: self.status_count(JobStatus::Failed),
            rejected: self.status_count(JobStatus::Rejected),
            canceled: self.status_count(JobStatus::Canceled),
            held: self.jobs[HELD_ROW].iter().map(load).sum(),
            deferred: load(&self.deferred),
            dead_lettered: self.dead_letters(),
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
    use switchyard_core::job::{ChatRequest, Job};
    use switchyard_core::result::{ErrorInfo, RoutingSummary};
    use switchyard_core::vocab::TaskCategory;

    use super::*;

    fn refused(status: JobStatus, strategy: Strategy, latency_ms: u64) -> JobResult {
        let job = Job::new("j", "acme/a/b/c", ChatRequest::from_user("hi"));
        let routing = RoutingSummary {
            strategy,
            category: TaskCategory::Chat,
            complexity: 0.1,
            required_quality: 0.5,
            chosen_model: String::new(),
            reason: "test".into(),
        };
        let error = ErrorInfo {
            code: "test".into(),
            message: "test".into(),
        };
        JobResult::refused(job, status, error, routing, latency_ms, chrono::Utc::now())
    }

    #[test]
    fn results_count_by_status_and_strategy_and_the_totals_agree() {
        let m = Metrics::default();
        m.record(&refused(JobStatus::Rejected, Strategy::CostFirst, 30), 0.0);
        m.record(&refused(JobStatus::Rejected, Strategy::Auto, 700), 0.0);
        let mut unrouted = refused(JobStatus::Failed, Strategy::Auto, 2000);
        unrouted.routing = None;
        m.record(&unrouted, 0.0);
        assert_eq!(m.finished(), 3);
        let snap = m.snapshot();
        assert_eq!((snap.rejected, snap.failed, snap.succeeded), (2, 1, 0));
        let mut out = String::new();
        m.render_prometheus(&mut out);
        for line in [
            "switchyard_jobs_total{status=\"rejected\",strategy=\"cost-first\"} 1\n",
            "switchyard_jobs_total{status=\"rejected\",strategy=\"auto\"} 1\n",
            "switchyard_jobs_total{status=\"failed\",strategy=\"none\"} 1\n",
            "switchyard_job_duration_seconds_bucket{status=\"rejected\",le=\"0.05\"} 1\n",
            "switchyard_job_duration_seconds_bucket{status=\"rejected\",le=\"1\"} 2\n",
            "switchyard_job_duration_seconds_count{status=\"rejected\"} 2\n",
            "switchyard_job_duration_seconds_sum{status=\"failed\"} 2\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

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
