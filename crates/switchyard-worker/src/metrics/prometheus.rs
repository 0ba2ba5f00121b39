//! The worker's counters in the Prometheus text format: jobs by status and
//! strategy, their duration, jobs in flight, consumer lag, provider calls by
//! deployment and outcome, rate-limit waits, dead letters by kind and cost.
//! Every label value known up front is written from zero, so that rates and
//! alerts work before the first event. `docs/metrics.md` documents each family.

use std::sync::atomic::Ordering;

use switchyard_telemetry::Family;

use super::{Metrics, NO_STRATEGY, OUTCOMES, STATUS_LABELS, STATUSES};
use switchyard_core::routing::Strategy;

impl Metrics {
    /// Writes the worker's counter families into `out` (the engine's live
    /// state, circuits and budgets, is written by the worker's telemetry
    /// renderer beside it).
    pub fn render_prometheus(&self, out: &mut String) {
        self.render_jobs(out);
        self.render_calls(out);
        self.render_dead_letters(out);
        Family::counter(
            out,
            "switchyard_cost_usd_total",
            "What the provider attempts of finished jobs cost, USD (failed attempts that billed included).",
        )
        .sample(&[], self.cost_usd());
        Family::counter(
            out,
            "switchyard_baseline_cost_usd_total",
            "What the same tokens would have cost on routing.baseline_model, USD.",
        )
        .sample(&[], self.baseline_usd());
    }

    fn render_jobs(&self, out: &mut String) {
        let strategies = Strategy::ALL
            .iter()
            .map(|s| s.as_str())
            .chain([NO_STRATEGY]);
        let mut f = Family::counter(
            out,
            "switchyard_jobs_total",
            "Jobs that reached a final result, or were parked on the held topic (status held), by status and the strategy in force.",
        );
        for (row, status) in STATUS_LABELS.iter().enumerate() {
            for (column, strategy) in strategies.clone().enumerate() {
                let n = self.jobs[row][column].load(Ordering::Relaxed);
                f.sample(&[("status", status), ("strategy", strategy)], n as f64);
            }
        }
        let mut f = Family::histogram(
            out,
            "switchyard_job_duration_seconds",
            "Time from a job's intake by the worker to its result, seconds, by status.",
        );
        for (row, status) in STATUSES.iter().enumerate() {
            self.durations[row].render(&mut f, &[("status", status.as_str())]);
        }
        Family::counter(
            out,
            "switchyard_jobs_deferred_total",
            "Jobs handed to deferred routing (recorded on the deferred topic for a provider's batch API).",
        )
        .sample(&[], self.deferred.load(Ordering::Relaxed) as f64);
        Family::counter(
            out,
            "switchyard_jobs_failed_over_total",
            "Jobs that needed more than one deployment.",
        )
        .sample(&[], self.failed_over.load(Ordering::Relaxed) as f64);
        Family::gauge(
            out,
            "switchyard_jobs_in_flight",
            "Jobs being processed by this worker now.",
        )
        .sample(&[], self.in_flight() as f64);
        let (topic, partitions) = self.consumer_lag();
        let mut f = Family::gauge(
            out,
            "switchyard_consumer_lag",
            "Messages of an assigned jobs partition not yet committed (its end offset minus the worker's commit point), measured every 5 s.",
        );
        for (partition, lag) in partitions {
            f.sample(
                &[
                    ("topic", topic.as_str()),
                    ("partition", partition.to_string().as_str()),
                ],
                lag as f64,
            );
        }
    }

    fn render_calls(&self, out: &mut String) {
        let mut f = Family::counter(
            out,
            "switchyard_provider_calls_total",
            "Provider attempts by deployment and outcome (skipped: circuit open or the rate limiter refused).",
        );
        for d in &self.deployments {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                f.sample(
                    &[
                        ("deployment", d.name.as_str()),
                        ("outcome", outcome.as_str()),
                    ],
                    d.calls[i].load(Ordering::Relaxed) as f64,
                );
            }
        }
        let mut f = Family::histogram(
            out,
            "switchyard_rate_limit_wait_seconds",
            "Time calls waited in a deployment's rate limiter (rpm, tpm, a provider's pause) before being sent, seconds.",
        );
        for d in &self.deployments {
            d.waits.render(&mut f, &[("deployment", d.name.as_str())]);
        }
    }

    fn render_dead_letters(&self, out: &mut String) {
        let kinds = self.dead_letters.lock().clone();
        let mut f = Family::counter(
            out,
            "switchyard_dead_letters_total",
            "Messages sent to the dead-letter topic, by kind (the switchyard.dlq.kind header).",
        );
        for (kind, n) in kinds {
            f.sample(&[("kind", kind.as_str())], n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchyard_core::result::AttemptOutcome;

    use super::*;

    #[test]
    fn every_known_series_is_written_from_zero() {
        let m = Metrics::for_deployments(["dep-a", "dep \"b\""]);
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out.contains(
            "switchyard_jobs_total{status=\"canceled\",strategy=\"availability-first\"} 0\n"
        ));
        assert!(out.contains("switchyard_jobs_total{status=\"failed\",strategy=\"none\"} 0\n"));
        assert!(out.contains("switchyard_jobs_total{status=\"held\",strategy=\"none\"} 0\n"));
        assert!(!out.contains("switchyard_job_duration_seconds_count{status=\"held\"}"));
        assert!(out.contains(
            "switchyard_provider_calls_total{deployment=\"dep \\\"b\\\"\",outcome=\"skipped\"} 0\n"
        ));
        assert!(out.contains("switchyard_dead_letters_total{kind=\"invalid_json\"} 0\n"));
        assert!(out.contains(
            "switchyard_job_duration_seconds_bucket{status=\"succeeded\",le=\"300\"} 0\n"
        ));
        assert!(out.contains("# TYPE switchyard_consumer_lag gauge\n"));
        assert!(out.contains("switchyard_jobs_in_flight 0\n"));
    }

    #[test]
    fn events_show_in_their_series() {
        let m = Metrics::for_deployments(["dep-a"]);
        m.provider_call(0, AttemptOutcome::RateLimited);
        m.provider_call(0, AttemptOutcome::RateLimited);
        m.provider_call(7, AttemptOutcome::Succeeded);
        m.rate_limit_waited(0, Duration::from_millis(30));
        m.dead_lettered_as("invalid_json");
        m.dead_lettered_as("a_new_kind");
        m.dead_lettered();
        m.job_started();
        m.job_held();
        m.set_consumer_lag("switchyard.jobs", vec![(0, 12), (3, 0)]);
        let mut out = String::new();
        m.render_prometheus(&mut out);
        for line in [
            "switchyard_provider_calls_total{deployment=\"dep-a\",outcome=\"rate_limited\"} 2\n",
            "switchyard_rate_limit_wait_seconds_bucket{deployment=\"dep-a\",le=\"0.01\"} 0\n",
            "switchyard_rate_limit_wait_seconds_bucket{deployment=\"dep-a\",le=\"0.05\"} 1\n",
            "switchyard_rate_limit_wait_seconds_sum{deployment=\"dep-a\"} 0.03\n",
            "switchyard_dead_letters_total{kind=\"invalid_json\"} 1\n",
            "switchyard_dead_letters_total{kind=\"a_new_kind\"} 1\n",
            "switchyard_dead_letters_total{kind=\"other\"} 1\n",
            "switchyard_jobs_in_flight 1\n",
            "switchyard_jobs_total{status=\"held\",strategy=\"none\"} 1\n",
            "switchyard_consumer_lag{topic=\"switchyard.jobs\",partition=\"0\"} 12\n",
            "switchyard_consumer_lag{topic=\"switchyard.jobs\",partition=\"3\"} 0\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert_eq!(m.dead_letters(), 3);
        let families: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut unique = families.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            families.len(),
            unique.len(),
            "each family once: {families:?}"
        );
        assert!(
            families
                .iter()
                .all(|f| switchyard_telemetry::is_valid_metric_name(f))
        );
    }
}
