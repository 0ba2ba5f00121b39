//! Figures from job results (the results topic) rather than billed attempts:
//! jobs by status, failovers, the routed-model mix, quality against a known
//! need, latency percentiles, and cost against the baseline model, per
//! strategy too. The demo's closing report shows them.
//!
//! Definitions: *latency* is worker intake to result, of succeeded jobs;
//! *cost* is what routing cost, failed attempts included; *baseline* is the
//! tokens of each succeeded job's successful attempt, once, on the baseline
//! model; a *failover* is a succeeded job answered by a fallback after the
//! first deployment failed.

use std::collections::BTreeMap;

use serde::Serialize;
use switchyard_core::analysis::TaskCategory;
use switchyard_core::catalog::Catalog;
use switchyard_core::result::{AttemptOutcome, JobResult, JobStatus, TokenUsage};

/// The figures of a set of job results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultsSummary {
    /// Results read.
    pub results: usize,
    /// Results by status.
    pub by_status: BTreeMap<String, usize>,
    /// Succeeded jobs answered by a fallback after the first deployment failed.
    pub failovers: usize,
    /// Succeeded jobs per routed model, most used first.
    pub model_mix: Vec<ModelShare>,
    /// Share of the jobs with a known need routed to a model whose quality for
    /// the job's category meets it, percent.
    pub quality_need_met_pct: Option<f64>,
    /// Latency from worker intake to result (succeeded jobs), ms.
    pub p50_ms: u64,
    /// 95th percentile of the same, ms.
    pub p95_ms: u64,
    /// Tokens of the successful attempts.
    pub tokens: TokenUsage,
    /// What routing cost, failed attempts included, USD.
    pub cost_usd: f64,
    /// The part of it spent on failed attempts, USD.
    pub failed_attempts_cost_usd: f64,
    /// The flagship baseline model.
    pub baseline_model: String,
    /// The same tokens on the baseline model, USD.
    pub baseline_cost_usd: f64,
    /// Per strategy: jobs, cost and baseline.
    pub by_strategy: Vec<StrategyCost>,
}

/// One routed model's share of the succeeded jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShare {
    /// Catalog name.
    pub model: String,
    /// Succeeded jobs it answered.
    pub jobs: usize,
    /// List price per million input tokens, USD.
    pub input_usd_per_mtok: Option<f64>,
    /// List price per million output tokens, USD.
    pub output_usd_per_mtok: Option<f64>,
}

/// Cost of one strategy's jobs against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategyCost {
    /// Strategy name.
    pub strategy: String,
    /// Succeeded jobs routed by it.
    pub jobs: usize,
    /// Their cost, USD.
    pub cost_usd: f64,
    /// The same tokens on the baseline model, USD.
    pub baseline_cost_usd: f64,
}

impl ResultsSummary {
    /// Sums `results`, pricing the baseline on `baseline` from `catalog`.
    /// `need` gives what a job needed when that is known (a labelled corpus):
    /// its category and the quality that category needs.
    pub fn of<'a>(
        results: impl IntoIterator<Item = &'a JobResult>,
        catalog: &Catalog,
        baseline: &str,
        need: impl Fn(&JobResult) -> Option<(TaskCategory, f64)>,
    ) -> Self {
        let mut sums = Sums::default();
        let baseline_model = catalog.get(baseline);
        for r in results {
            sums.results += 1;
            *sums
                .by_status
                .entry(r.status.as_str().to_owned())
                .or_default() += 1;
            if r.status != JobStatus::Succeeded {
                continue;
            }
            if let Some(m) = &r.model {
                *sums.by_model.entry(m.clone()).or_default() += 1;
                if let (Some((category, needed)), Some(spec)) = (need(r), catalog.get(m)) {
                    sums.with_need += 1;
                    if spec.quality_for(category) + 1e-9 >= needed {
                        sums.need_met += 1;
                    }
                }
            }
            if r.failovers() > 0 {
                sums.failovers += 1;
            }
            sums.latencies.push(r.latency_ms);
            sums.cost += r.cost_usd;
            sums.failed_attempt_cost += r
                .attempts
                .iter()
                .filter(|a| a.outcome != AttemptOutcome::Succeeded)
                .map(|a| a.cost_usd)
                .sum::<f64>();
            // The flagship would have needed the successful attempt's tokens once.
            let needed = r
                .attempts
                .iter()
                .find(|a| a.outcome == AttemptOutcome::Succeeded)
                .map(|a| a.usage)
                .unwrap_or(r.usage);
            sums.tokens.add(&needed);
            let base = baseline_model.map_or(0.0, |b| b.cost_usd(&needed));
            sums.baseline_cost += base;
            if let Some(routing) = &r.routing {
                let e = sums
                    .by_strategy
                    .entry(routing.strategy.to_string())
                    .or_default();
                e.0 += 1;
                e.1 += r.cost_usd;
                e.2 += base;
            }
        }
        sums.into_summary(catalog, baseline)
    }

    /// Routed cost as a percentage of the baseline.
    pub fn pct_of_baseline(cost: f64, baseline: f64) -> f64 {
        100.0 * cost / baseline.max(1e-12)
    }

    /// A model's share of the succeeded jobs, percent.
    pub fn share_pct(&self, m: &ModelShare) -> f64 {
        let succeeded = self.by_status.get("succeeded").copied().unwrap_or(0);
        100.0 * m.jobs as f64 / succeeded.max(1) as f64
    }

    /// What `tokens` tokens would cost with this mix, routed and on the
    /// baseline, USD (none without tokens).
    pub fn cost_at_tokens(&self, tokens: f64) -> Option<(f64, f64)> {
        let t = &self.tokens;
        let total = (t.input_tokens + t.output_tokens + t.cached_input_tokens) as f64;
        (total > 0.0).then(|| {
            let scale = tokens / total;
            (self.cost_usd * scale, self.baseline_cost_usd * scale)
        })
    }
}

/// The running sums behind a [`ResultsSummary`].
#[derive(Default)]
struct Sums {
    results: usize,
    by_status: BTreeMap<String, usize>,
    by_model: BTreeMap<String, usize>,
    /// Per strategy: jobs, cost, baseline.
    by_strategy: BTreeMap<String, (usize, f64, f64)>,
    latencies: Vec<u64>,
    failovers: usize,
    cost: f64,
    baseline_cost: f64,
    failed_attempt_cost: f64,
    tokens: TokenUsage,
    with_need: usize,
    need_met: usize,
}

impl Sums {
    fn into_summary(mut self, catalog: &Catalog, baseline: &str) -> ResultsSummary {
        self.latencies.sort_unstable();
        let mut model_mix: Vec<ModelShare> = self
            .by_model
            .into_iter()
            .map(|(model, jobs)| {
                let spec = catalog.get(&model);
                ModelShare {
                    input_usd_per_mtok: spec.map(|m| m.input_usd_per_mtok),
                    output_usd_per_mtok: spec.map(|m| m.output_usd_per_mtok),
                    model,
                    jobs,
                }
            })
            .collect();
        model_mix.sort_by_key(|m| std::cmp::Reverse(m.jobs));
        ResultsSummary {
            results: self.results,
            by_status: self.by_status,
            failovers: self.failovers,
            model_mix,
            quality_need_met_pct: (self.with_need > 0)
                .then(|| 100.0 * self.need_met as f64 / self.with_need as f64),
            p50_ms: percentile(&self.latencies, 0.50),
            p95_ms: percentile(&self.latencies, 0.95),
            tokens: self.tokens,
            cost_usd: self.cost,
            failed_attempts_cost_usd: self.failed_attempt_cost,
            baseline_model: baseline.to_owned(),
            baseline_cost_usd: self.baseline_cost,
            by_strategy: self
                .by_strategy
                .into_iter()
                .map(
                    |(strategy, (jobs, cost_usd, baseline_cost_usd))| StrategyCost {
                        strategy,
                        jobs,
                        cost_usd,
                        baseline_cost_usd,
                    },
                )
                .collect(),
        }
    }
}

/// The `q` quantile of sorted values, nearest rank (0 when empty).
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.95), 95);
        assert_eq!(percentile(&[7], 0.95), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
