//! The outcome of a job, as published on the results topic (keyed by `job_id`).
//! Every accepted job ends in exactly one result; a re-delivered job may produce a
//! second copy with the same `job_id`, which consumers deduplicate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::vocab::{AttemptOutcome, JobStatus, TokenUsage};
use crate::vocab::{Strategy, TaskCategory};

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Generated text.
    pub content: String,
    /// Why generation stopped, normalised across providers: `stop`, `length`,
    /// `content_filter`, `tool_calls` or the provider's own word.
    pub finish_reason: String,
}

/// One call (or skipped call) on one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// Deployment name from the pipeline config.
    pub deployment: String,
    /// Provider name (`openai`, `anthropic`, …).
    pub provider: String,
    /// Catalog model name.
    pub model: String,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, when a response arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Wall time of the attempt, waiting for the rate limiter excluded.
    pub latency_ms: u64,
    /// Tokens this attempt billed.
    #[serde(default)]
    pub usage: TokenUsage,
    /// What this attempt cost.
    #[serde(default)]
    pub cost_usd: f64,
    /// Provider's error message, with secrets removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why routing chose what it chose, carried in every result and usage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSummary {
    /// Strategy in force.
    pub strategy: Strategy,
    /// Task category estimated from the request.
    pub category: TaskCategory,
    /// Estimated complexity, 0..1.
    pub complexity: f64,
    /// Quality the job needed for its category, 0..1.
    pub required_quality: f64,
    /// Model ranked first; empty when the job was not routed.
    pub chosen_model: String,
    /// One line a person can read.
    pub reason: String,
}

/// A job's error, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Stable machine-readable code (`all_attempts_failed`, `budget_exhausted`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Everything a consumer needs to know about a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    /// The job's idempotency key.
    pub job_id: String,
    /// The batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The job's org path.
    pub project: String,
    /// Final state.
    pub status: JobStatus,
    /// Provider of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Catalog model of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The answer, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Tokens billed over all attempts.
    pub usage: TokenUsage,
    /// Cost over all attempts.
    pub cost_usd: f64,
    /// Time from the worker taking the job to the result.
    pub latency_ms: u64,
    /// Every attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The routing decision. Every result a worker produces carries one: a job
    /// refused before or by routing (policy, budget, deadline, unknown model, no
    /// feasible model, canceled batch) has its strategy, category, complexity and
    /// need, an empty `chosen_model` and the reason it was not routed. Absent only
    /// in results written by workers older than that; decode failures produce
    /// dead letters, not results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSummary>,
    /// Why the job did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The job's metadata, passed through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When the result was produced.
    pub completed_at: DateTime<Utc>,
}

impl JobResult {
    /// Number of failovers: distinct deployments tried beyond the first.
    pub fn failovers(&self) -> usize {
        let mut seen: Vec<&str> = Vec::with_capacity(self.attempts.len());
        for a in &self.attempts {
            if a.outcome != AttemptOutcome::Skipped && !seen.contains(&a.deployment.as_str()) {
                seen.push(&a.deployment);
            }
        }
        seen.len().saturating_sub(1)
    }
}
