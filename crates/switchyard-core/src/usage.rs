//! Usage events: one per provider attempt that billed tokens, with the full org path,
//! so that the cost of failed attempts is counted too. The analytics sink turns
//! them into Parquet rows and ClickHouse rows; `event_id` makes re-delivery harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{Job, ProjectPath};
use crate::result::{Attempt, RoutingSummary};
use crate::vocab::{AttemptOutcome, RunMode, Strategy, TaskCategory, TokenUsage};

/// One billed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// Unique per billed attempt; the same event re-delivered keeps it.
    pub event_id: String,
    /// The job the attempt served.
    pub job_id: String,
    /// The job's batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Position of the attempt in the job (0-based).
    pub attempt: u32,
    /// When the attempt finished.
    pub ts: DateTime<Utc>,
    /// Org path, level 1.
    pub org: String,
    /// Org path, level 2.
    pub business_unit: String,
    /// Org path, level 3.
    pub team: String,
    /// Org path, level 4 (the project's own name).
    pub project: String,
    /// Workload name, empty when the job gave none.
    #[serde(default)]
    pub workload: String,
    /// Strategy that routed the job.
    pub strategy: Strategy,
    /// Estimated task category.
    pub category: TaskCategory,
    /// Estimated complexity, 0..1.
    #[serde(default)]
    pub complexity: f64,
    /// Model the routing ranked first (the attempt's model may be a fallback).
    #[serde(default)]
    pub chosen_model: String,
    /// The routing decision's one-line reason.
    #[serde(default)]
    pub routing_reason: String,
    /// Provider name.
    pub provider: String,
    /// Catalog model name.
    pub model: String,
    /// Deployment name.
    pub deployment: String,
    /// How the attempt ended (`succeeded` or the failure kind).
    pub outcome: AttemptOutcome,
    /// Tokens billed.
    pub usage: TokenUsage,
    /// What the attempt cost: the model's list price live, its batch price
    /// deferred.
    pub cost_usd: f64,
    /// What the same tokens would have cost on the baseline (flagship) model,
    /// at its live price.
    pub baseline_cost_usd: f64,
    /// Wall time of the attempt.
    pub latency_ms: u64,
    /// How the attempt was served: `live`, or `deferred` through a provider's
    /// batch API. Absent (live) on live attempts.
    #[serde(default, skip_serializing_if = "RunMode::is_live")]
    pub mode: RunMode,
    /// What the same tokens would have cost on the same model live, when the
    /// attempt ran at another price (deferred); absent means `cost_usd`. The
    /// difference is what deferral saved, apart from what routing saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_cost_usd: Option<f64>,
}

impl UsageEvent {
    /// The event of one billed attempt of a job (`index` is its position among
    /// the job's attempts), with the job's routing summary and what the same
    /// tokens would have cost on the baseline model.
    #[allow(clippy::too_many_arguments)]
    pub fn for_attempt(
        event_id: String,
        job: &Job,
        path: ProjectPath<'_>,
        index: usize,
        attempt: &Attempt,
        routing: &RoutingSummary,
        baseline_cost_usd: f64,
        ts: DateTime<Utc>,
    ) -> Self {
        Self {
            event_id,
            job_id: job.job_id.clone(),
            batch_id: job.batch_id.clone(),
            attempt: u32::try_from(index).unwrap_or(u32::MAX),
            ts,
            org: path.org.to_owned(),
            business_unit: path.business_unit.to_owned(),
            team: path.team.to_owned(),
            project: path.project.to_owned(),
            workload: job.workload.clone().unwrap_or_default(),
            strategy: routing.strategy,
            category: routing.category,
            complexity: routing.complexity,
            chosen_model: routing.chosen_model.clone(),
            routing_reason: routing.reason.clone(),
            provider: attempt.provider.clone(),
            model: attempt.model.clone(),
            deployment: attempt.deployment.clone(),
            outcome: attempt.outcome,
            usage: attempt.usage,
            cost_usd: attempt.cost_usd,
            baseline_cost_usd,
            latency_ms: attempt.latency_ms,
            mode: RunMode::Live,
            live_cost_usd: None,
        }
    }

    /// The same event, served through a provider's batch API: `live_cost_usd`
    /// is what its tokens cost on the same model live.
    pub fn deferred(mut self, live_cost_usd: f64) -> Self {
        self.mode = RunMode::Deferred;
        self.live_cost_usd = Some(live_cost_usd);
        self
    }

    /// What the attempt's tokens cost on its model live.
    pub fn live_cost(&self) -> f64 {
        self.live_cost_usd.unwrap_or(self.cost_usd)
    }

    /// Cuts what the event copies from its job (workload, batch id) and the
    /// routing reason to `max` bytes each.
    pub fn cap_echoes(&mut self, max: usize) {
        crate::result::cap_text(&mut self.workload, max);
        crate::result::cap_text(&mut self.routing_reason, max);
        if let Some(b) = &mut self.batch_id {
            crate::result::cap_text(b, max);
        }
    }

    /// Full org path `org/bu/team/project`.
    pub fn project_path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.org, self.business_unit, self.team, self.project
        )
    }
}
